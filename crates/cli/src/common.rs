//! Things every subcommand shares: model selection, device selection, loading, NPY IO.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
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
    /// guided-diffusion ADM checkpoints (.pt pickles carry no config): the architecture,
    /// `adm-ffhq-256` or `adm-imagenet-256-uncond`. With a Hub id such as
    /// deepinv/diffunet it also picks the file (diffusion_ffhq_10m.pt / diffusion_openai.pt).
    /// Detected automatically when the checkpoint's tensors match a preset exactly.
    #[arg(long)]
    pub preset: Option<String>,
    /// Weight file inside a Hub repo or folder, when it is not the default name.
    #[arg(long)]
    pub weights_file: Option<String>,
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

/// Hub file of a guided-diffusion preset in the deepinv/diffunet repo.
fn preset_hub_file(preset: &str) -> Option<&'static str> {
    match preset {
        "adm-ffhq-256" => Some("diffusion_ffhq_10m.pt"),
        "adm-imagenet-256-uncond" => Some("diffusion_openai.pt"),
        _ => None,
    }
}

/// Where a model's files are: a diffusers layout, or an ADM checkpoint (a weight file
/// plus, optionally, a JSON config with guided-diffusion's argument names).
enum Located {
    Diffusers(ModelFiles),
    Adm {
        weights: PathBuf,
        config: Option<PathBuf>,
    },
}

fn is_adm_config(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .is_some_and(|v| {
            v.get("_class_name").and_then(|c| c.as_str()) == Some(genprior_nn::adm::CLASS_NAME)
        })
}

/// Resolve `--model` to files on disk (downloading from the Hub if needed).
fn locate(args: &ModelArgs) -> Result<(Located, String)> {
    let spec = match &args.model {
        Some(m) => m.clone(),
        None => default_model_dir()?.display().to_string(),
    };
    let path = Path::new(&spec);
    if path.is_file() {
        // A single checkpoint file: an ADM .pt/.safetensors (config from --preset or
        // a config.json beside it).
        let cfg = path.with_file_name("config.json");
        let config = if cfg.is_file() && is_adm_config(&cfg) {
            Some(cfg)
        } else {
            None
        };
        return Ok((
            Located::Adm {
                weights: path.to_path_buf(),
                config,
            },
            format!("file {spec}"),
        ));
    }
    if path.is_dir() {
        if path.join("config.json").is_file() && is_adm_config(&path.join("config.json")) {
            let name = args.weights_file.as_deref().unwrap_or("model.safetensors");
            let weights = [path.join(name), path.join("model.pt")]
                .into_iter()
                .find(|p| p.is_file())
                .with_context(|| format!("{spec}: ADM folder without {name} or model.pt"))?;
            return Ok((
                Located::Adm {
                    weights,
                    config: Some(path.join("config.json")),
                },
                format!("local folder {spec}"),
            ));
        }
        let files = genprior_hub::local_diffusers(path).with_context(|| {
            format!(
                "{spec}: not a model folder (expected config.json and diffusion_pytorch_model.safetensors or .bin, at the top or under unet/, or an ADM config.json with model.safetensors)"
            )
        })?;
        return Ok((Located::Diffusers(files), format!("local folder {spec}")));
    }
    if genprior_hub::looks_like_repo_id(&spec) {
        let repo = HubRepo::new(&spec, args.revision.as_deref());
        let rev = args.revision.as_deref().unwrap_or("main");
        let source = format!("hub {spec}@{rev}");
        let adm_file = args.weights_file.clone().or_else(|| {
            args.preset
                .as_deref()
                .and_then(preset_hub_file)
                .map(String::from)
        });
        if let Some(file) = adm_file {
            let (_, weights) = repo.first_of(&[file.as_str()])?;
            return Ok((
                Located::Adm {
                    weights,
                    config: None,
                },
                source,
            ));
        }
        let files = genprior_hub::fetch_diffusers(&repo)?;
        return Ok((Located::Diffusers(files), source));
    }
    bail!("{spec}: no such folder or file, and not a Hub id of the form org/name")
}

/// guided-diffusion's diffusion settings as a diffusers scheduler config (written to a
/// temporary file so every sampler reads schedules the same way).
fn adm_scheduler_config(cfg: &genprior_nn::AdmConfig) -> Result<PathBuf> {
    if cfg.noise_schedule != "linear" {
        bail!(
            "ADM noise_schedule `{}` is not supported yet (linear is)",
            cfg.noise_schedule
        );
    }
    let scale = 1000.0 / cfg.diffusion_steps as f64;
    let v = serde_json::json!({
        "num_train_timesteps": cfg.diffusion_steps,
        "beta_schedule": "linear",
        "beta_start": scale * 1e-4,
        "beta_end": scale * 0.02,
        "variance_type": if cfg.learn_sigma { "learned_range" } else { "fixed_small" },
        "prediction_type": if cfg.predict_xstart { "sample" } else { "epsilon" },
        "clip_sample": true,
        "clip_sample_range": 1.0,
    });
    let p = std::env::temp_dir().join(format!(
        "genprior-adm-scheduler-{}.json",
        std::process::id()
    ));
    std::fs::write(&p, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// Load the model named by `args` on the requested device and dtype.
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    let (device, dtype) = args.device.open()?;
    load_model_on(args, &device, dtype)
}

pub fn load_model_on(args: &ModelArgs, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let (located, source) = locate(args)?;
    match located {
        Located::Diffusers(files) => load_diffusers(files, source, device, dtype),
        Located::Adm { weights, config } => load_adm(args, &weights, config, source, device, dtype),
    }
}

fn weights_format(path: &Path) -> &'static str {
    if path.extension().is_some_and(|e| e == "safetensors") {
        "safetensors"
    } else {
        "pytorch pickle"
    }
}

fn load_adm(
    args: &ModelArgs,
    weights: &Path,
    config: Option<PathBuf>,
    source: String,
    device: &Device,
    dtype: DType,
) -> Result<LoadedModel> {
    let store = genprior_nn::WeightStore::open(weights)?;
    if !genprior_nn::adm::looks_like_adm(&store) {
        bail!(
            "{}: not a guided-diffusion ADM checkpoint (no input_blocks/time_embed/out tensors); diffusers models are loaded from a folder",
            weights.display()
        );
    }
    let (cfg, cfg_path) = match (&args.preset, config) {
        (Some(p), _) => (genprior_nn::AdmConfig::preset(p)?, PathBuf::from(format!("<preset {p}>"))),
        (None, Some(c)) => (genprior_nn::AdmConfig::from_file(&c)?, c),
        (None, None) => match genprior_nn::adm::matching_preset(&store) {
            Some(p) => (genprior_nn::AdmConfig::preset(p)?, PathBuf::from(format!("<preset {p}, detected>"))),
            None => bail!(
                "{}: ADM checkpoint without a config: pass --preset ({}) or put an ADM config.json beside it",
                weights.display(),
                genprior_nn::adm::PRESETS.join(", ")
            ),
        },
    };
    let file_dtype = store
        .file_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into());
    let store = std::rc::Rc::new(store);
    let net = genprior_nn::AdmUNet::new(cfg.clone(), &store.root(dtype, device))?;
    let info = ModelInfo {
        source,
        architecture: "guided-diffusion ADM UNet".into(),
        config_path: cfg_path,
        weights_path: weights.to_path_buf(),
        format: weights_format(weights).into(),
        file_dtype,
        num_parameters: net.num_parameters(),
        config: serde_json::from_str(&cfg.to_json_string()?)?,
    };
    Ok(LoadedModel {
        net: Box::new(net),
        scheduler_config: Some(adm_scheduler_config(&cfg)?),
        info,
        device: device.clone(),
        dtype,
    })
}

fn load_diffusers(
    files: ModelFiles,
    source: String,
    device: &Device,
    dtype: DType,
) -> Result<LoadedModel> {
    let cfg_text = std::fs::read_to_string(&files.config)
        .with_context(|| format!("reading {}", files.config.display()))?;
    let config_json: serde_json::Value = serde_json::from_str(&cfg_text)
        .with_context(|| format!("{}: not valid JSON", files.config.display()))?;
    let cfg = UNet2DConfig::from_json_str(&cfg_text, &files.config)?;
    let mut store = genprior_nn::WeightStore::open(&files.weights)?;
    if genprior_nn::adm::looks_like_adm(&store) {
        bail!(
            "{}: this is a guided-diffusion ADM checkpoint, but {} is a diffusers config; pass the .pt file with --preset",
            files.weights.display(),
            files.config.display()
        );
    }
    let file_dtype = store
        .file_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into());
    genprior_nn::unet2d::alias_deprecated_attention(&mut store);
    let store = std::rc::Rc::new(store);
    let net = genprior_nn::UNet2DModel::new(cfg, &store.root(dtype, device))?;
    let info = ModelInfo {
        source,
        architecture: "diffusers UNet2DModel".into(),
        config_path: files.config.clone(),
        weights_path: files.weights.clone(),
        format: weights_format(&files.weights).into(),
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

/// The network for `--model`, or with `--random-weights ARCH` a preset architecture
/// with seeded random weights (timing only). Returns the network, the model's scheduler
/// config if it has one, and a description of the source.
pub fn load_net_or_random(
    args: &ModelArgs,
    random_weights: Option<&str>,
) -> Result<(Box<dyn ScoreModel>, Option<PathBuf>, String)> {
    match random_weights {
        Some(arch) => {
            let cfg = genprior_nn::preset_config(arch).with_context(|| {
                format!(
                    "unknown --random-weights architecture {arch:?} (expected one of {:?})",
                    genprior_nn::PRESETS
                )
            })?;
            let (device, dtype) = args.device.open()?;
            let net = genprior_nn::random_unet2d(cfg, 0, dtype, &device)?;
            Ok((Box::new(net), None, format!("{arch} with random weights")))
        }
        None => {
            let loaded = load_model(args)?;
            Ok((loaded.net, loaded.scheduler_config, loaded.info.source))
        }
    }
}

pub use genprior_pipeline::files::{check_parent, read_npy, write_npy};

/// The schedule of a model: its scheduler config file, or diffusers' DDPMScheduler defaults
/// (said on stderr) when it has none.
pub fn load_schedule(config: Option<&Path>) -> Result<genprior_diffusion::Schedule> {
    match config {
        Some(p) => genprior_diffusion::Schedule::from_file(p)
            .with_context(|| format!("scheduler config {}", p.display())),
        None => {
            eprintln!("no scheduler_config.json: using diffusers' DDPMScheduler defaults");
            Ok(genprior_diffusion::Schedule::ddpm_default())
        }
    }
}

/// An indicatif style from a template (the default bar if the template does not parse).
pub fn bar_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}
