//! Diffusion priors as a library: one call, [`load_prior`], turns a [`ModelSpec`] (a
//! local diffusers folder, a guided-diffusion checkpoint, a Hugging Face Hub repo, the
//! bundled model, or random weights of an architecture preset) into a [`Prior`]: the
//! network behind the samplers' [`ScoreModel`] seam, its noise [`Schedule`], and a
//! description of what was loaded ([`ModelInfo`]).
//!
//! Dependencies point one way: this crate joins the networks (genprior-nn), the model
//! sources (genprior-hub) and the samplers (genprior-diffusion), which do not know each
//! other. Nothing here prints; what a command-line tool may want to say (the device, a
//! missing scheduler config) is in the returned values.
//!
//! * [`score`]: the networks as [`ScoreModel`]s ([`UNet2DScore`], [`AdmScore`]).
//! * [`model_config`]: which kind a config file is, and guided-diffusion's
//!   `model_config.yaml` / argument JSON read into an [`genprior_nn::AdmConfig`].
//! * [`schedule`]: the schedule of each kind of model.

pub mod error;
mod load;
mod locate;
pub mod model_config;
pub mod schedule;
pub mod score;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
pub use genprior_diffusion::{Schedule, ScoreModel};

pub use error::{PriorError, Result};
pub use load::load_prior;
pub use model_config::{load_adm_config, ConfigKind};
pub use schedule::{adm_schedule, ScheduleSource};
pub use score::{AdmScore, UNet2DScore};

/// Folder name of the bundled prior under `models/`.
pub const DEFAULT_MODEL_NAME: &str = "mnist-ddpm-32";

/// Where the weights of a prior come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelSource {
    /// The bundled model, see [`default_model_dir`].
    #[default]
    Default,
    /// A local folder (diffusers layout: `config.json` +
    /// `diffusion_pytorch_model.safetensors|.bin`, at the top or under `unet/`; or an
    /// ADM folder: a guided-diffusion config + `model.safetensors` / `model.pt`) or a
    /// single ADM checkpoint file (`.pt` / `.safetensors`).
    Local(PathBuf),
    /// A Hugging Face Hub repo `org/name` at a revision (`main` when `None`),
    /// downloaded into the standard cache (offline mode honoured).
    Hub {
        repo: String,
        revision: Option<String>,
    },
    /// An architecture preset of [`genprior_nn::preset_config`] with seeded random
    /// weights (timing without a checkpoint), with diffusers' default DDPM schedule.
    RandomWeights { arch: String, seed: u64 },
}

impl ModelSource {
    /// What a `--model` argument names: an existing local path, else a Hub id when it
    /// has the form `org/name`, else a local path (which then fails to load with a
    /// clear error).
    pub fn from_arg(model: &str, revision: Option<&str>) -> Self {
        let path = Path::new(model);
        if !path.exists() && genprior_hub::looks_like_repo_id(model) {
            ModelSource::Hub {
                repo: model.to_string(),
                revision: revision.map(String::from),
            }
        } else {
            ModelSource::Local(path.to_path_buf())
        }
    }
}

/// Everything that picks a prior.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSpec {
    pub source: ModelSource,
    /// guided-diffusion architecture preset (`adm-ffhq-256`, `adm-imagenet-256-uncond`)
    /// for an ADM checkpoint without a config; with a Hub repo it also picks the file
    /// (deepinv/diffunet's `diffusion_ffhq_10m.pt` / `diffusion_openai.pt`). Without it
    /// the config is taken from [`ModelSpec::config`], from a config beside the
    /// checkpoint, or from the preset whose tensors the checkpoint matches exactly.
    pub preset: Option<String>,
    /// The weight file inside a Hub repo or ADM folder, when it is not the default name.
    pub weights_file: Option<String>,
    /// The model config, given explicitly instead of found beside the weights: a
    /// guided-diffusion `model_config.yaml` (DPS / DPnP) or argument JSON, genprior's
    /// ADM `config.json`, or (with a local weight file or folder) a diffusers
    /// `config.json`. Its kind is told by its content.
    pub config: Option<PathBuf>,
    /// A `scheduler_config.json` to use instead of the model's schedule.
    pub scheduler_config: Option<PathBuf>,
}

impl ModelSpec {
    /// A spec with only a source.
    pub fn new(source: ModelSource) -> Self {
        Self {
            source,
            ..Self::default()
        }
    }
}

/// What was loaded (what `genprior inspect` prints).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// `local folder PATH`, `file PATH`, `hub ORG/NAME@REV`, or `ARCH with random weights`.
    pub source: String,
    /// `diffusers UNet2DModel` or `guided-diffusion ADM UNet`.
    pub architecture: String,
    /// The config file, or `<preset NAME>` / `<preset NAME, detected>`.
    pub config_path: PathBuf,
    pub weights_path: PathBuf,
    /// `safetensors` or `pytorch pickle` (`random weights` for random weights).
    pub format: String,
    /// dtype of the stored tensors (`f32`, `f16`, ...; `unknown` or `none`).
    pub file_dtype: String,
    pub num_parameters: usize,
    /// The model config as JSON (diffusers: the file; ADM: the resolved config with
    /// guided-diffusion's names).
    pub config: serde_json::Value,
}

/// A loaded prior: the network behind the [`ScoreModel`] seam and its schedule.
pub struct Prior {
    pub net: Box<dyn ScoreModel>,
    pub schedule: Schedule,
    /// Where [`Prior::schedule`] came from; [`ScheduleSource::DdpmDefaults`] when the
    /// model has no scheduler config.
    pub schedule_source: ScheduleSource,
    pub info: ModelInfo,
    pub device: Device,
    /// The dtype the network runs in.
    pub dtype: DType,
}

impl Prior {
    /// Whether the schedule is diffusers' `DDPMScheduler` defaults because the model has
    /// no scheduler config.
    pub fn uses_default_schedule(&self) -> bool {
        self.schedule_source == ScheduleSource::DdpmDefaults
    }

    /// The model's scheduler config file, when the schedule came from one.
    pub fn scheduler_config(&self) -> Option<&Path> {
        match &self.schedule_source {
            ScheduleSource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// The bundled model folder: `$GENPRIOR_DEFAULT_MODEL`, else `models/mnist-ddpm-32` in
/// one of the four folders above the running binary (`target/*/genprior` →
/// `../../models`), else the path compiled in from the source tree.
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
    // This crate lives in crates/prior, two levels below the repository root.
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
    Err(PriorError::NoDefaultModel {
        name: DEFAULT_MODEL_NAME,
        looked: cands
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}
