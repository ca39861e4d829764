//! Training checkpoints and the exported model folder, all written atomically (temporary file,
//! fsync, rename), so an interrupted write never replaces a good file with a partial one.
//!
//! A checkpoint is one safetensors file: `param/NAME`, `ema/NAME`, `adam_m/NAME`,
//! `adam_v/NAME` for every parameter, and the run's description (step, options, architecture,
//! data fingerprint, random-stream layout) as JSON under the metadata key `genprior_train`.
//! Since every random draw is a function of (seed, step) (see [`crate::trainer`]), the step is
//! the whole random-number-generator state.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{io_err, Result, TrainError};
use crate::trainer::{Dataset, TrainOptions, Trainer};

/// The metadata key of a checkpoint.
pub const META_KEY: &str = "genprior_train";
/// File names inside a model folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
pub const SCHEDULER_FILE: &str = "scheduler_config.json";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    step: u64,
    options: TrainOptions,
    unet_config: serde_json::Value,
    data_dims: [usize; 4],
    data_fingerprint: String,
    rng: String,
}

/// Write `bytes` to `path` through `path.tmp` + fsync + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    meta: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let host: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    safetensors::tensor::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), meta)
        .map_err(|e| TrainError::Candle(candle_core::Error::msg(format!("safetensors: {e}"))))
}

impl Trainer {
    /// Write the full training state to `path` atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let meta = Meta {
            format: 1,
            step: self.step,
            options: self.opts.clone(),
            unet_config: self.config_json.clone(),
            data_dims: self.data.dims,
            data_fingerprint: self.data.fingerprint(),
            rng: "counter-based ChaCha8: step s uses stream s of seed; epoch e's permutation \
                  stream e of seed ^ PERM_KEY; the state is the step"
                .into(),
        };
        let mut tensors = Vec::with_capacity(4 * self.names.len());
        for (i, n) in self.names.iter().enumerate() {
            tensors.push((format!("param/{n}"), self.params[i].as_detached_tensor()));
            tensors.push((format!("ema/{n}"), self.ema[i].clone()));
            tensors.push((format!("adam_m/{n}"), self.m[i].clone()));
            tensors.push((format!("adam_v/{n}"), self.v[i].clone()));
        }
        let text = serde_json::to_string(&meta).expect("plain data serializes");
        let bytes = safetensors_bytes(&tensors, Some(HashMap::from([(META_KEY.into(), text)])))?;
        write_atomic(path, &bytes)
    }

    /// Continue the run saved at `path`. The architecture, the options (except the total
    /// step count, which may grow) and the data must be those of the saved run.
    pub fn resume(
        path: &Path,
        config_json: serde_json::Value,
        unet: genprior_nn::UNet2DConfig,
        opts: TrainOptions,
        data: Dataset,
        device: &Device,
        dtype: DType,
    ) -> Result<Trainer> {
        let bad = |msg: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad("not a genprior training checkpoint (no run description)".into()))?;
        let meta: Meta = serde_json::from_str(text)
            .map_err(|e| bad(format!("unreadable run description ({e})")))?;
        if meta.format != 1 {
            return Err(bad(format!("unknown checkpoint format {}", meta.format)));
        }
        if meta.unet_config != config_json {
            return Err(bad(
                "it was trained with another architecture (--arch / --size / --channels differ)"
                    .into(),
            ));
        }
        let mut same = opts.clone();
        same.steps = meta.options.steps;
        if same != meta.options {
            return Err(bad(format!(
                "it was trained with other options: saved {:?}, asked {:?} (only --steps may change)",
                meta.options, opts
            )));
        }
        if meta.data_dims != data.dims || meta.data_fingerprint != data.fingerprint() {
            return Err(bad(format!(
                "it was trained on other images ({:?}, fingerprint {}; now {:?}, {})",
                meta.data_dims,
                meta.data_fingerprint,
                data.dims,
                data.fingerprint()
            )));
        }
        if opts.steps < meta.step {
            return Err(bad(format!(
                "it has already done {} steps, more than --steps {}",
                meta.step, opts.steps
            )));
        }
        let mut tr = Trainer::new(config_json, unet, meta.options.clone(), data, device, dtype)?;
        tr.set_total_steps(opts.steps)?;
        let mut file = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| bad(format!("unreadable tensors ({e})")))?;
        let mut take = |kind: &str, name: &str, like: &Tensor| -> Result<Tensor> {
            let key = format!("{kind}/{name}");
            let t = file
                .remove(&key)
                .ok_or_else(|| bad(format!("tensor {key} is missing")))?;
            if t.dims() != like.dims() {
                return Err(bad(format!(
                    "tensor {key} has shape {:?}, expected {:?}",
                    t.dims(),
                    like.dims()
                )));
            }
            Ok(t.to_dtype(dtype)?)
        };
        for i in 0..tr.names.len() {
            let name = tr.names[i].clone();
            let like = tr.params[i].as_detached_tensor();
            tr.params[i] = Var::from_tensor(&take("param", &name, &like)?)?;
            tr.ema[i] = take("ema", &name, &like)?;
            tr.m[i] = take("adam_m", &name, &like)?;
            tr.v[i] = take("adam_v", &name, &like)?;
        }
        if let Some(extra) = file.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        tr.step = meta.step;
        Ok(tr)
    }

    /// Write the EMA model as a diffusers folder: `config.json`,
    /// `diffusion_pytorch_model.safetensors` (f32) and `scheduler_config.json`.
    pub fn export(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut cfg = self.config_json.clone();
        cfg["_class_name"] = json!("UNet2DModel");
        let cfg_text = serde_json::to_string_pretty(&cfg).expect("json") + "\n";
        let mut sched = serde_json::to_value(self.opts.scheduler_config()).expect("json");
        sched["_class_name"] = json!("DDPMScheduler");
        let sched_text = serde_json::to_string_pretty(&sched).expect("json") + "\n";
        let tensors: Vec<(String, Tensor)> = self
            .ema_tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()?;
        let weights = safetensors_bytes(
            &tensors,
            Some(HashMap::from([("format".into(), "pt".into())])),
        )?;
        write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_atomic(&dir.join(SCHEDULER_FILE), sched_text.as_bytes())?;
        write_atomic(&dir.join(CONFIG_FILE), cfg_text.as_bytes())?;
        Ok(())
    }
}
