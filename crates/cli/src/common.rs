//! Things every subcommand shares: model and device flags (loading itself is
//! genprior-prior's), NPY IO, progress bars, sampler option checks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use genprior_nn::DeviceChoice;
use genprior_prior::{ModelSource, ModelSpec, Prior};

/// `--model`, `--revision`, `--device`, `--dtype`: how a subcommand picks its prior.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model to use: a local folder in diffusers layout (config.json +
    /// diffusion_pytorch_model.safetensors|.bin, optionally under unet/), a
    /// guided-diffusion ADM checkpoint (.pt or .safetensors; see --preset), or a Hugging
    /// Face Hub id `org/name` (downloaded into the standard HF cache; HF_ENDPOINT,
    /// HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE=1 are honoured). Defaults to the bundled
    /// MNIST prior (see `genprior inspect --help`).
    #[arg(long)]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) when --model is a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// guided-diffusion ADM checkpoints (.pt pickles carry no config): the architecture,
    /// `adm-ffhq-256` or `adm-imagenet-256-uncond`. With a Hub id such as
    /// deepinv/diffunet it also picks the file (diffusion_ffhq_10m.pt / diffusion_openai.pt).
    /// Detected automatically when the checkpoint's tensors match a preset exactly.
    #[arg(long)]
    pub preset: Option<String>,
    /// Weight file inside a Hub repo or folder, when it is not the default name.
    #[arg(long)]
    pub weights_file: Option<String>,
    /// Model config for a checkpoint, when it is not beside it: a guided-diffusion
    /// `model_config.yaml` (as in the DPS / DPnP repos) or a JSON with guided-diffusion's
    /// argument names (a config.json or model_config.yaml beside the checkpoint is found
    /// by itself), or a diffusers config.json for a local weight file.
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
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

impl ModelArgs {
    /// The library's description of the prior these flags pick (`random_weights`: an
    /// architecture preset with seeded random weights instead of `--model`;
    /// `scheduler_config`: a schedule replacing the model's).
    pub fn spec(&self, random_weights: Option<&str>, scheduler_config: Option<&Path>) -> ModelSpec {
        let source = match (random_weights, &self.model) {
            (Some(arch), _) => ModelSource::RandomWeights {
                arch: arch.to_string(),
                seed: 0,
            },
            (None, Some(m)) => ModelSource::from_arg(m, self.revision.as_deref()),
            (None, None) => ModelSource::Default,
        };
        ModelSpec {
            source,
            preset: self.preset.clone(),
            weights_file: self.weights_file.clone(),
            config: self.model_config.clone(),
            scheduler_config: scheduler_config.map(Path::to_path_buf),
        }
    }
}

/// The model named by `args` on the requested device and dtype (the device is said on
/// stderr): what `inspect` and `predict` load.
pub fn load_model(args: &ModelArgs) -> Result<Prior> {
    let (device, dtype) = args.device.open()?;
    load_model_on(args, &device, dtype)
}

/// The model named by `args` on `device`, in `dtype`.
pub fn load_model_on(args: &ModelArgs, device: &Device, dtype: DType) -> Result<Prior> {
    Ok(genprior_prior::load_prior(
        &args.spec(None, None),
        device,
        dtype,
    )?)
}

/// The prior for `--model` (or, with `--random-weights ARCH`, a preset architecture with
/// seeded random weights, for timing) and its schedule, on the requested device (said on
/// stderr, as is a missing scheduler config).
pub fn load_prior(args: &ModelArgs, random_weights: Option<&str>) -> Result<Prior> {
    load_prior_scheduled(args, random_weights, None)
}

/// As [`load_prior`], with `scheduler_config` (when given) replacing the model's schedule.
pub fn load_prior_scheduled(
    args: &ModelArgs,
    random_weights: Option<&str>,
    scheduler_config: Option<&Path>,
) -> Result<Prior> {
    let (device, dtype) = args.device.open()?;
    let prior =
        genprior_prior::load_prior(&args.spec(random_weights, scheduler_config), &device, dtype)?;
    if prior.uses_default_schedule() {
        eprintln!("no scheduler_config.json: using diffusers' DDPMScheduler defaults");
    }
    Ok(prior)
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
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
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

/// An indicatif style from a template (the default bar if the template does not parse).
pub fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// Checks the DPnP/DPS options `reconstruct` and `eval` share: η_max ≥ η_min > 0, ζ ≥ 0,
/// PCS scale > 0, PCS regulariser ≥ 0 (all finite).
pub fn check_sampler_options(
    eta_max: f64,
    eta_min: f64,
    zeta: Option<f64>,
    pcs_scale: Option<f64>,
    pcs_reg: f64,
) -> Result<()> {
    if !(eta_min.is_finite() && eta_max.is_finite() && eta_min > 0.0 && eta_max >= eta_min) {
        bail!(
            "--eta-max and --eta-min must satisfy eta-max ≥ eta-min > 0, got {eta_max} and {eta_min}"
        );
    }
    if let Some(z) = zeta {
        if !(z.is_finite() && z >= 0.0) {
            bail!("--zeta must be a finite number ≥ 0, got {z}");
        }
    }
    if let Some(s) = pcs_scale {
        if !(s.is_finite() && s > 0.0) {
            bail!("--pcs-scale must be a positive number, got {s}");
        }
    }
    if !(pcs_reg.is_finite() && pcs_reg >= 0.0) {
        bail!("--pcs-reg must be a finite number ≥ 0, got {pcs_reg}");
    }
    Ok(())
}
