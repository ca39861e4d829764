//! [`load_prior`]: build the network and its schedule from located files.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use candle_core::{DType, Device};
use genprior_hub::ModelFiles;
use genprior_nn::{AdmConfig, UNet2DConfig, WeightStore};

use crate::error::{PriorError, Result};
use crate::locate::{explicit_config, locate_hub, locate_path, Located};
use crate::model_config::ConfigFile;
use crate::schedule::{adm_schedule, diffusers_schedule, schedule_from_file, ScheduleSource};
use crate::score::{AdmScore, UNet2DScore};
use crate::{default_model_dir, ModelInfo, ModelSource, ModelSpec, Prior};

/// Load the prior `spec` names, its network on `device` running in `dtype`.
///
/// The schedule is `spec.scheduler_config` when given (the model's own is then not
/// read); else a diffusers model's `scheduler_config.json`, or diffusers'
/// `DDPMScheduler` defaults when it has none ([`Prior::uses_default_schedule`]); else,
/// for ADM checkpoints, the schedule of the config's diffusion arguments.
pub fn load_prior(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Prior> {
    let (located, source) = match &spec.source {
        ModelSource::RandomWeights { arch, seed } => {
            return random_prior(spec, arch, *seed, device, dtype)
        }
        ModelSource::Default => {
            let dir = default_model_dir()?;
            locate_path(spec, &dir, explicit_config(spec)?)?
        }
        ModelSource::Local(p) => locate_path(spec, p, explicit_config(spec)?)?,
        ModelSource::Hub { repo, revision } => {
            locate_hub(spec, repo, revision.as_deref(), explicit_config(spec)?)?
        }
    };
    match located {
        Located::Diffusers(files) => load_diffusers(spec, files, source, device, dtype),
        Located::Adm { weights, config } => load_adm(spec, &weights, config, source, device, dtype),
    }
}

/// The schedule when the spec overrides the model's.
fn override_schedule(
    spec: &ModelSpec,
) -> Result<Option<(genprior_diffusion::Schedule, ScheduleSource)>> {
    spec.scheduler_config
        .as_deref()
        .map(|p| {
            Ok((
                schedule_from_file(p)?,
                ScheduleSource::File(p.to_path_buf()),
            ))
        })
        .transpose()
}

fn weights_format(path: &Path) -> &'static str {
    if path.extension().is_some_and(|e| e == "safetensors") {
        "safetensors"
    } else {
        "pytorch pickle"
    }
}

fn file_dtype(store: &WeightStore) -> String {
    store
        .file_dtype()
        .map(|d| format!("{d:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

fn load_adm(
    spec: &ModelSpec,
    weights: &Path,
    config: Option<PathBuf>,
    source: String,
    device: &Device,
    dtype: DType,
) -> Result<Prior> {
    let store = WeightStore::open(weights)?;
    if !genprior_nn::adm::looks_like_adm(&store) {
        return Err(PriorError::NotAdmCheckpoint(weights.to_path_buf()));
    }
    let (cfg, cfg_path) = match (&spec.preset, config) {
        (Some(p), _) => (
            AdmConfig::preset(p)?,
            PathBuf::from(format!("<preset {p}>")),
        ),
        (None, Some(c)) => (ConfigFile::read(&c)?.to_adm_config()?, c),
        (None, None) => match genprior_nn::adm::matching_preset(&store) {
            Some(p) => (
                AdmConfig::preset(p)?,
                PathBuf::from(format!("<preset {p}, detected>")),
            ),
            None => {
                return Err(PriorError::AdmWithoutConfig {
                    weights: weights.to_path_buf(),
                    presets: genprior_nn::adm::PRESETS.join(", "),
                })
            }
        },
    };
    let file_dtype = file_dtype(&store);
    let store = Rc::new(store);
    let net = genprior_nn::AdmUNet::new(cfg.clone(), &store.root(dtype, device))?;
    let config_json =
        serde_json::from_str(&cfg.to_json_string()?).map_err(|source| PriorError::Json {
            path: cfg_path.clone(),
            source,
        })?;
    let info = ModelInfo {
        source,
        architecture: "guided-diffusion ADM UNet".into(),
        config_path: cfg_path,
        weights_path: weights.to_path_buf(),
        format: weights_format(weights).into(),
        file_dtype,
        num_parameters: net.num_parameters(),
        config: config_json,
    };
    let (schedule, schedule_source) = match override_schedule(spec)? {
        Some(s) => s,
        None => (adm_schedule(&cfg)?, ScheduleSource::AdmConfig),
    };
    Ok(Prior {
        net: Box::new(AdmScore(net)),
        schedule,
        schedule_source,
        info,
        device: device.clone(),
        dtype,
    })
}

fn load_diffusers(
    spec: &ModelSpec,
    files: ModelFiles,
    source: String,
    device: &Device,
    dtype: DType,
) -> Result<Prior> {
    let cfg_text = std::fs::read_to_string(&files.config).map_err(|source| PriorError::Io {
        path: files.config.clone(),
        source,
    })?;
    let config_json: serde_json::Value =
        serde_json::from_str(&cfg_text).map_err(|source| PriorError::Json {
            path: files.config.clone(),
            source,
        })?;
    let cfg = UNet2DConfig::from_json_str(&cfg_text, &files.config)?;
    let mut store = WeightStore::open(&files.weights)?;
    if genprior_nn::adm::looks_like_adm(&store) {
        return Err(PriorError::AdmWeightsWithDiffusersConfig {
            weights: files.weights.clone(),
            config: files.config.clone(),
        });
    }
    let file_dtype = file_dtype(&store);
    genprior_nn::unet2d::alias_deprecated_attention(&mut store);
    let store = Rc::new(store);
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
    let (schedule, schedule_source) = match override_schedule(spec)? {
        Some(s) => s,
        None => diffusers_schedule(files.scheduler_config.as_deref())?,
    };
    Ok(Prior {
        net: Box::new(UNet2DScore(net)),
        schedule,
        schedule_source,
        info,
        device: device.clone(),
        dtype,
    })
}

fn random_prior(
    spec: &ModelSpec,
    arch: &str,
    seed: u64,
    device: &Device,
    dtype: DType,
) -> Result<Prior> {
    let cfg =
        genprior_nn::preset_config(arch).ok_or_else(|| PriorError::UnknownRandomArchitecture {
            arch: arch.to_string(),
            known: genprior_nn::PRESETS.to_vec(),
        })?;
    let net = genprior_nn::random_unet2d(cfg, seed, dtype, device)?;
    let info = ModelInfo {
        source: format!("{arch} with random weights"),
        architecture: "diffusers UNet2DModel".into(),
        config_path: PathBuf::from(format!("<preset {arch}>")),
        weights_path: PathBuf::from(format!("<random weights, seed {seed}>")),
        format: "random weights".into(),
        file_dtype: "none".into(),
        num_parameters: net.num_parameters(),
        config: serde_json::json!({ "random_weights": arch, "seed": seed }),
    };
    let (schedule, schedule_source) = match override_schedule(spec)? {
        Some(s) => s,
        None => diffusers_schedule(None)?,
    };
    Ok(Prior {
        net: Box::new(UNet2DScore(net)),
        schedule,
        schedule_source,
        info,
        device: device.clone(),
        dtype,
    })
}
