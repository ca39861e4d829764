//! Things every subcommand shares: model and device flags (loading itself is
//! genprior-prior's), NPY IO (genprior-pipeline's), the progress-bar style.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};
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
    /// CUDA device to open (0 unless a batch shard runs one process per GPU).
    #[arg(skip)]
    pub cuda_ordinal: usize,
}

impl DeviceArgs {
    /// Open the device, printing the choice to stderr.
    pub fn open(&self) -> Result<(Device, DType)> {
        let choice: DeviceChoice = self.device.parse()?;
        let (device, desc) = genprior_nn::select_device_at(choice, self.cuda_ordinal)?;
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

pub use genprior_pipeline::files::{check_parent, read_npy, write_npy};

/// An indicatif style from a template (the default bar if the template does not parse).
pub fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// For long runs that stop cleanly (batch, train): SIGTERM and SIGINT set the returned flag; a second SIGINT exits at once.
pub fn stop_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, stop.clone())?;
    signal_hook::flag::register(SIGINT, stop.clone())?;
    signal_hook::flag::register(SIGTERM, stop.clone())?;
    Ok(stop)
}
