//! openai guided-diffusion's ADM UNet (`unet.py` `UNetModel`) on candle: the FFHQ-256
//! and ImageNet-256 priors of DPS and DPnP. Checkpoints load from the original PyTorch
//! pickles (read without executing code) or from safetensors, by guided-diffusion's
//! tensor names (`input_blocks.{k}.{m}...`).
//!
//! The network maps `(x, t[, y])` to its raw output: `in_channels` channels of ε, plus
//! `in_channels` channels of the variance interpolation v with `learn_sigma`.

mod blocks;
pub mod config;
pub mod flops;
pub mod plan;

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear};

pub use config::{AdmConfig, NumList, CLASS_NAME, PRESETS};

use crate::error::{NnError, Result};
use crate::layers;
use crate::weights::{WeightStore, Weights};
use blocks::{GroupNorm32, Layer, Sequential};

/// guided-diffusion's `UNetModel`.
pub struct AdmUNet {
    config: AdmConfig,
    freqs: Tensor,
    time_embed_0: Linear,
    time_embed_2: Linear,
    label_emb: Option<Embedding>,
    input_blocks: Vec<Sequential>,
    middle_block: Sequential,
    output_blocks: Vec<Sequential>,
    out_norm: GroupNorm32,
    out_conv: crate::conv::Conv2d,
    dtype: DType,
    device: Device,
    num_parameters: usize,
}

impl AdmUNet {
    /// Build from a config and a weight path; every tensor is checked for presence and
    /// shape, and tensors the architecture does not use are an error.
    /// The time embedding, class embedding and group norms stay in f32 (as in
    /// guided-diffusion's fp16 mode); the rest runs in the dtype of `w`.
    pub fn new(config: AdmConfig, w: &Weights) -> Result<Self> {
        let plan = plan::plan(&config)?;
        let c = &config;
        let mc = c.num_channels;
        let temb = c.time_embed_dim();
        let w32 = w.store().root(DType::F32, w.device());
        let time_embed_0 = layers::linear(&w32.pp("time_embed").pp(0), mc, temb)?;
        let time_embed_2 = layers::linear(&w32.pp("time_embed").pp(2), temb, temb)?;
        let label_emb = if c.class_cond {
            let table = w32.pp("label_emb").get(&[c.num_classes, temb], "weight")?;
            Some(Embedding::new(table, temb))
        } else {
            None
        };
        let ss = c.use_scale_shift_norm;
        let new_order = c.use_new_attention_order;
        let build = |prefix: Weights, spec: &plan::BlockSpec| -> Result<Sequential> {
            let mut v = Vec::with_capacity(spec.layers.len());
            for (m, l) in spec.layers.iter().enumerate() {
                v.push(Layer::new(&prefix.pp(m), l, temb, ss, new_order)?);
            }
            Ok(Sequential(v))
        };
        let mut input_blocks = Vec::with_capacity(plan.input_blocks.len());
        for (k, b) in plan.input_blocks.iter().enumerate() {
            input_blocks.push(build(w.pp("input_blocks").pp(k), b)?);
        }
        let middle_block = build(w.pp("middle_block"), &plan.middle_block)?;
        let mut output_blocks = Vec::with_capacity(plan.output_blocks.len());
        for (k, b) in plan.output_blocks.iter().enumerate() {
            output_blocks.push(build(w.pp("output_blocks").pp(k), b)?);
        }
        let out_norm = GroupNorm32::new(&w.pp("out").pp(0), plan.out_in)?;
        let ch0 = c.level_channels()?[0];
        let out_conv = layers::conv2d(&w.pp("out").pp(2), ch0, c.out_channels(), 3, 1, 1)?;
        w.store().check_all_used()?;
        let num_parameters = w.store().num_parameters()?;

        // timestep_embedding: freqs = exp(-ln(10000) * i / half), in f32 like torch.
        let half = mc / 2;
        let ln = -(10000f64.ln() as f32);
        let freqs: Vec<f32> = (0..half)
            .map(|i| ((ln * i as f32) / half as f32).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), w.device())?;
        Ok(Self {
            config,
            freqs,
            time_embed_0,
            time_embed_2,
            label_emb,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm,
            out_conv,
            dtype: w.dtype(),
            device: w.device().clone(),
            num_parameters,
        })
    }

    pub fn config(&self) -> &AdmConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Raw output `(B, out_channels, H, W)` of an unconditional model for `x`
    /// `(B, C, H, W)` at timesteps `t` (`(B,)`, `(1,)` or scalar; fractional allowed).
    /// Input and output are f32; the network runs in the model dtype.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.forward_with_labels(x, t, None)
    }

    /// As [`AdmUNet::forward`], with class labels `y` `(B,)` (integers in
    /// `[0, num_classes)`) for class-conditional models; they must be given exactly
    /// when the model is class-conditional.
    pub fn forward_with_labels(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, h, wd) = x.dims4().map_err(|_| {
            NnError::Input(format!(
                "expected a (batch, channels, height, width) input, got shape {:?}",
                x.dims()
            ))
        })?;
        if ch != c.in_channels {
            return Err(NnError::Input(format!(
                "the model takes {} channel(s), the input has {ch}",
                c.in_channels
            )));
        }
        let factor = c.size_factor()?;
        if h == 0 || wd == 0 || h % factor != 0 || wd % factor != 0 {
            return Err(NnError::Input(format!(
                "image size {h}x{wd} must be a positive multiple of {factor} for this architecture"
            )));
        }
        let t = t
            .to_dtype(DType::F32)?
            .to_device(&self.device)?
            .flatten_all()?;
        let t = match t.dim(0)? {
            1 => t.broadcast_as(b)?.contiguous()?,
            n if n == b => t,
            n => {
                return Err(NnError::Input(format!(
                    "{n} timesteps for a batch of {b} (give one, or one per image)"
                )))
            }
        };
        let arg = t.unsqueeze(1)?.broadcast_mul(&self.freqs)?;
        let mut temb = Tensor::cat(&[arg.cos()?, arg.sin()?], 1)?;
        if c.num_channels % 2 == 1 {
            temb = temb.pad_with_zeros(1, 0, 1)?;
        }
        let mut emb = self
            .time_embed_2
            .forward(&candle_nn::ops::silu(&self.time_embed_0.forward(&temb)?)?)?;
        match (&self.label_emb, y) {
            (Some(table), Some(y)) => {
                let ids = self.labels(y, b)?;
                emb = (emb + table.forward(&ids)?)?;
            }
            (Some(_), None) => {
                return Err(NnError::Input(
                    "this ADM model is class-conditional: give one class label per image".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(NnError::Input(
                    "this ADM model is unconditional: class labels are not accepted".into(),
                ))
            }
            (None, None) => {}
        }
        let emb_act = candle_nn::ops::silu(&emb)?.to_dtype(self.dtype)?;

        let mut h = x.to_dtype(self.dtype)?.to_device(&self.device)?;
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        for blk in &self.input_blocks {
            h = blk.forward(&h, &emb_act)?;
            skips.push(h.clone());
        }
        h = self.middle_block.forward(&h, &emb_act)?;
        for blk in &self.output_blocks {
            let skip = skips.pop().ok_or_else(|| {
                NnError::InvalidConfig("output blocks ran out of skip connections".into())
            })?;
            h = Tensor::cat(&[&h, &skip], 1)?;
            h = blk.forward(&h, &emb_act)?;
        }
        let h = self.out_norm.forward_silu(&h)?;
        Ok(self.out_conv.forward(&h)?.to_dtype(DType::F32)?)
    }

    fn labels(&self, y: &Tensor, b: usize) -> Result<Tensor> {
        let vals = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        if vals.len() != b {
            return Err(NnError::Input(format!(
                "{} class label(s) for a batch of {b}",
                vals.len()
            )));
        }
        let n = self.config.num_classes;
        let mut ids = Vec::with_capacity(b);
        for v in vals {
            if v.fract() != 0.0 || v < 0.0 || v >= n as f64 {
                return Err(NnError::Input(format!(
                    "class label {v} is not an integer in [0, {n})"
                )));
            }
            ids.push(v as u32);
        }
        Ok(Tensor::from_vec(ids, b, &self.device)?)
    }
}

/// Whether a checkpoint uses guided-diffusion's UNet names (as opposed to diffusers').
pub fn looks_like_adm(store: &WeightStore) -> bool {
    [
        "input_blocks.0.0.weight",
        "time_embed.0.weight",
        "out.2.weight",
    ]
    .iter()
    .all(|n| store.names().contains(*n))
}

/// The built-in preset whose tensor names are exactly those of the checkpoint, if any
/// (shapes are then checked when the model is built).
pub fn matching_preset(store: &WeightStore) -> Option<&'static str> {
    PRESETS.into_iter().find(|name| {
        AdmConfig::preset(name)
            .and_then(|cfg| plan::expected_tensors(&cfg))
            .map(|v| {
                v.len() == store.names().len() && v.iter().all(|(n, _)| store.names().contains(n))
            })
            .unwrap_or(false)
    })
}

/// Load an ADM UNet from its config and a weight file (`.safetensors`, or a PyTorch
/// `.pt` zip pickle holding the state dict).
pub fn load_adm(
    config: AdmConfig,
    weights: &Path,
    dtype: DType,
    device: &Device,
) -> Result<AdmUNet> {
    let store = Rc::new(WeightStore::open(weights)?);
    AdmUNet::new(config, &store.root(dtype, device))
}

/// An ADM UNet of the given architecture with seeded random weights (benchmarks,
/// parameter counts).
pub fn random_adm(config: AdmConfig, seed: u64, dtype: DType, device: &Device) -> Result<AdmUNet> {
    let store = Rc::new(WeightStore::random(seed));
    AdmUNet::new(config, &store.root(dtype, device))
}

/// `genprior convert` for ADM: check that `weights` (a guided-diffusion `.pt` or a
/// safetensors file) is a complete checkpoint of `config` (every tensor present with
/// its shape, nothing extra), then write `out_dir/model.safetensors` (same names;
/// every tensor in the dtype of the file's first tensor) and `out_dir/config.json`. Returns the two paths.
pub fn convert_checkpoint(
    weights: &Path,
    config: &AdmConfig,
    out_dir: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let store = Rc::new(WeightStore::open(weights)?);
    let file_dtype = store.file_dtype().unwrap_or(DType::F32);
    // Validates names, shapes and completeness against the config.
    AdmUNet::new(config.clone(), &store.root(file_dtype, &Device::Cpu))?;
    let expected = plan::expected_tensors(config)?;
    let root = store.root(file_dtype, &Device::Cpu);
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(expected.len());
    for (name, shape) in &expected {
        let t = root.get(shape, name)?;
        tensors.insert(name.clone(), t);
    }
    std::fs::create_dir_all(out_dir).map_err(|e| NnError::Io {
        path: out_dir.to_path_buf(),
        source: e,
    })?;
    let st = out_dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &st).map_err(|e| NnError::CorruptWeights {
        path: st.clone(),
        msg: format!("cannot write: {e}"),
    })?;
    let cfg_path = out_dir.join("config.json");
    config.save(&cfg_path)?;
    Ok((st, cfg_path))
}
