//! Things every subcommand shares: model selection, device selection, loading, NPY IO.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use genprior_diffusion::ScoreModel;
use genprior_hub::{HubRepo, ModelFiles};
use genprior_nn::{DeviceChoice, UNet2DConfig};

/// Folder name of the bundled prior under `models/`.
pub const DEFAULT_MODEL_NAME: &str = "mnist-ddpm-32";

/// `--model`, `--revision`, `--device`, `--dtype`: how a subcommand picks its prior.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model to use: a local folder in diffusers layout (config.json +
    /// diffusion_pytorch_model.safetensors|.bin, optionally under unet/), or a Hugging
    /// Face Hub id `org/name` (downloaded into the standard HF cache; HF_ENDPOINT,
    /// HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE=1 are honoured). Defaults to the bundled
    /// MNIST prior (see `genprior inspect --help`).
    #[arg(long)]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `--device` and `--dtype`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where to run: auto picks CUDA, then Metal, then CPU, and says which.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda", "metal"])]
    pub device: String,
    /// Precision of the network evaluation (sampler and likelihood math stay f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub dtype: String,
}

impl DeviceArgs {
    /// Open the device, printing the choice to stderr.
    pub fn open(&self) -> Result<(Device, DType)> {
        let choice: DeviceChoice = self.device.parse()?;
        let (device, desc) = genprior_nn::select_device(choice)?;
        eprintln!("device: {desc}");
        let dtype = genprior_nn::parse_dtype(&self.dtype)?;
        Ok((device, dtype))
    }
}

/// What `inspect` reports about a loaded model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub source: String,
    pub architecture: String,
    pub config_path: PathBuf,
    pub weights_path: PathBuf,
    pub format: String,
    pub file_dtype: String,
    pub num_parameters: usize,
    pub config: serde_json::Value,
}

/// A loaded prior: the network behind the [`ScoreModel`] seam plus its scheduler
/// configuration when the model folder has one.
pub struct LoadedModel {
    pub net: Box<dyn ScoreModel>,
    /// Path of `scheduler_config.json` (model folder, or its `scheduler/` subfolder).
    pub scheduler_config: Option<PathBuf>,
    pub info: ModelInfo,
    pub device: Device,
    pub dtype: DType,
}

/// The bundled model folder: `$GENPRIOR_DEFAULT_MODEL`, else `models/<name>` next to
/// the repo the binary was built in (found relative to the binary, `target/*/genprior`
/// → `../../models`), else the path compiled in from the source tree.
pub fn default_model_dir() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("GENPRIOR_DEFAULT_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let mut cands = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1).take(4) {
            cands.push(anc.join("models").join(DEFAULT_MODEL_NAME));
        }
    }
    cands.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(DEFAULT_MODEL_NAME),
    );
    for c in &cands {
        if c.join("config.json").is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no --model given and the bundled model `{DEFAULT_MODEL_NAME}` was not found (looked in {}); pass --model or set GENPRIOR_DEFAULT_MODEL",
        cands
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Resolve `--model` to files on disk (downloading from the Hub if needed).
pub fn resolve_model(args: &ModelArgs) -> Result<(ModelFiles, String)> {
    let spec = match &args.model {
        Some(m) => m.clone(),
        None => default_model_dir()?.display().to_string(),
    };
    let path = Path::new(&spec);
    if path.is_dir() {
        let files = genprior_hub::local_diffusers(path).with_context(|| {
            format!(
                "{spec}: not a diffusers model folder (expected config.json and diffusion_pytorch_model.safetensors or .bin, at the top or under unet/)"
            )
        })?;
        return Ok((files, format!("local folder {spec}")));
    }
    if path.exists() {
        bail!("{spec}: expected a model folder, not a file");
    }
    if genprior_hub::looks_like_repo_id(&spec) {
        let repo = HubRepo::new(&spec, args.revision.as_deref());
        let files = genprior_hub::fetch_diffusers(&repo)?;
        let rev = args.revision.as_deref().unwrap_or("main");
        return Ok((files, format!("hub {spec}@{rev}")));
    }
    bail!("{spec}: no such folder, and not a Hub id of the form org/name")
}

/// Load the model named by `args` on the requested device and dtype.
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    let (device, dtype) = args.device.open()?;
    load_model_on(args, &device, dtype)
}

pub fn load_model_on(args: &ModelArgs, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let (files, source) = resolve_model(args)?;
    let cfg_text = std::fs::read_to_string(&files.config)
        .with_context(|| format!("reading {}", files.config.display()))?;
    let config_json: serde_json::Value = serde_json::from_str(&cfg_text)
        .with_context(|| format!("{}: not valid JSON", files.config.display()))?;
    let cfg = UNet2DConfig::from_json_str(&cfg_text, &files.config)?;
    let mut store = genprior_nn::WeightStore::open(&files.weights)?;
    let file_dtype = store
        .file_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into());
    genprior_nn::unet2d::alias_deprecated_attention(&mut store);
    let format = if files
        .weights
        .extension()
        .is_some_and(|e| e == "safetensors")
    {
        "safetensors"
    } else {
        "pytorch pickle"
    };
    let store = std::rc::Rc::new(store);
    let net = genprior_nn::UNet2DModel::new(cfg, &store.root(dtype, device))?;
    let info = ModelInfo {
        source,
        architecture: "diffusers UNet2DModel".into(),
        config_path: files.config.clone(),
        weights_path: files.weights.clone(),
        format: format.into(),
        file_dtype,
        num_parameters: net.num_parameters(),
        config: config_json,
    };
    Ok(LoadedModel {
        net: Box::new(net),
        scheduler_config: files.scheduler_config,
        info,
        device: device.clone(),
        dtype,
    })
}

/// Read an `.npy` file as an f32 tensor on `device`, rejecting NaN/Inf.
pub fn read_npy(path: &Path, what: &str, device: &Device) -> Result<Tensor> {
    if !path.is_file() {
        bail!("{}: no such file ({what})", path.display());
    }
    let t = Tensor::read_npy(path)
        .with_context(|| format!("{}: not a readable .npy file ({what})", path.display()))?;
    let t = t.to_dtype(DType::F32)?;
    genprior_nn::check_finite(&t, &format!("{} ({what})", path.display()))?;
    Ok(t.to_device(device)?)
}

/// Write a tensor as `.npy` (f32) atomically: to a temporary file, then renamed.
pub fn write_npy(t: &Tensor, path: &Path) -> Result<()> {
    check_parent(path)?;
    let tmp = tmp_path(path);
    t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .write_npy(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Write bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_parent(path)?;
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Error unless the folder an output goes into exists.
pub fn check_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            bail!(
                "{}: the output folder {} does not exist",
                path.display(),
                parent.display()
            );
        }
    }
    Ok(())
}
