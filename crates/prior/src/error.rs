//! Error type of the prior crate.
//!
//! Messages name the file, folder, key or flag at fault. Where an error wraps a cause
//! (an I/O or parse error), the cause is its [`std::error::Error::source`], not part of
//! its message: print the chain (`anyhow`'s `{:#}`, or walk `source()`) to see both.

use std::path::PathBuf;

/// Everything that can go wrong turning a [`crate::ModelSpec`] into a [`crate::Prior`].
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    /// No model was named and the bundled one is not installed.
    #[error("no --model given and the bundled model `{name}` was not found (looked in {looked}); pass --model or set GENPRIOR_DEFAULT_MODEL")]
    NoDefaultModel { name: &'static str, looked: String },

    /// A local path that does not exist.
    #[error("{}", not_found(.0))]
    NotFound(String),

    /// A folder that holds neither a diffusers model nor an ADM checkpoint with its config.
    #[error("{0}: not a model folder (expected config.json and diffusion_pytorch_model.safetensors or .bin, at the top or under unet/, or an ADM config.json with model.safetensors)")]
    NotAModelFolder(String),

    /// An ADM folder (ADM config found) without its weight file.
    #[error("{folder}: ADM folder without {name} or model.pt")]
    AdmFolderWithoutWeights { folder: String, name: String },

    /// A single checkpoint file whose tensors are not guided-diffusion's.
    #[error("{}: not a guided-diffusion ADM checkpoint (no input_blocks/time_embed/out tensors); diffusers models are loaded from a folder", .0.display())]
    NotAdmCheckpoint(PathBuf),

    /// An ADM checkpoint with no config beside it, none given and no preset matching.
    #[error("{}: ADM checkpoint without a config: pass --preset ({presets}) or --model-config FILE, or put an ADM config.json or a guided-diffusion model_config.yaml beside it", .weights.display())]
    AdmWithoutConfig { weights: PathBuf, presets: String },

    /// guided-diffusion ADM weights next to (or given with) a diffusers config.
    #[error("{}: this is a guided-diffusion ADM checkpoint, but {} is a diffusers config; pass the .pt file with --preset", .weights.display(), .config.display())]
    AdmWeightsWithDiffusersConfig { weights: PathBuf, config: PathBuf },

    /// A config file given explicitly that is neither a diffusers nor a guided-diffusion model config.
    #[error("{}: not a model config genprior knows (a diffusers UNet2DModel config has `_class_name: UNet2DModel` or `block_out_channels`; a guided-diffusion one has `num_channels` / `num_res_blocks`)", .0.display())]
    UnknownConfigKind(PathBuf),

    /// A model config and an architecture preset given together.
    #[error("--preset {preset} and the model config {} both describe the architecture; give one of them", .config.display())]
    PresetAndConfig { preset: String, config: PathBuf },

    /// A diffusers config given for a model that is not a local file.
    #[error("{}: a diffusers config can only be given with a local folder or weight file (a Hub repo brings its own config.json)", .0.display())]
    DiffusersConfigWithoutFile(PathBuf),

    /// A Hub repo given with an ADM config but no weight file to take from it.
    #[error("{repo}: with an ADM model config, name the checkpoint in the repo with --weights-file (or pick it with --preset)")]
    HubAdmWithoutFile { repo: String },

    /// `--random-weights` with an architecture genprior has no preset for.
    #[error("unknown --random-weights architecture {arch:?} (expected one of {known:?})")]
    UnknownRandomArchitecture {
        arch: String,
        known: Vec<&'static str>,
    },

    /// guided-diffusion diffusion settings genprior cannot express as a schedule.
    #[error("ADM noise_schedule `{0}` is not supported yet (linear is)")]
    UnsupportedNoiseSchedule(String),

    /// A file that cannot be read.
    #[error("reading {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file that does not parse.
    #[error("{}: not valid JSON", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A scheduler config file that does not describe a valid schedule.
    #[error("scheduler config {}", .path.display())]
    SchedulerConfig {
        path: PathBuf,
        #[source]
        source: genprior_diffusion::Error,
    },

    /// A model config file (YAML or JSON) that genprior cannot read, with the line when known.
    #[error("{}{}: {msg}", .path.display(), .line.map(|l| format!(" line {l}")).unwrap_or_default())]
    ModelConfig {
        path: PathBuf,
        line: Option<usize>,
        msg: String,
    },

    /// A key of a guided-diffusion model config with a value genprior does not accept.
    #[error("{}: `{key}` = {value}: {reason}", .path.display())]
    ConfigValue {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },

    #[error(transparent)]
    Nn(#[from] genprior_nn::NnError),

    #[error(transparent)]
    Hub(#[from] genprior_hub::HubError),

    #[error(transparent)]
    Diffusion(#[from] genprior_diffusion::Error),
}

fn not_found(path: &str) -> String {
    if genprior_hub::looks_like_repo_id(path) {
        format!("{path}: no such folder or file")
    } else {
        format!("{path}: no such folder or file, and not a Hub id of the form org/name")
    }
}

pub type Result<T> = std::result::Result<T, PriorError>;
