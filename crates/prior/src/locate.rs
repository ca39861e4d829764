//! From a [`ModelSpec`] to files on disk (downloading from the Hub if needed).

use std::path::{Path, PathBuf};

use genprior_hub::{HubRepo, ModelFiles};

use crate::error::{PriorError, Result};
use crate::model_config::{sniff, ConfigFile, ConfigKind};
use crate::ModelSpec;

/// Where a model's files are.
pub(crate) enum Located {
    /// A diffusers layout.
    Diffusers(ModelFiles),
    /// A guided-diffusion ADM checkpoint and its config, when one was given or found
    /// (else `--preset` or the tensor-based preset detection decide).
    Adm {
        weights: PathBuf,
        config: Option<PathBuf>,
    },
}

/// Config files beside a checkpoint, tried in this order; the first that describes an
/// ADM model by its content is used.
const BESIDE: [&str; 3] = ["config.json", "model_config.yaml", "model_config.yml"];

/// Hub file of a guided-diffusion preset in the deepinv/diffunet repo.
fn preset_hub_file(preset: &str) -> Option<&'static str> {
    match preset {
        "adm-ffhq-256" => Some("diffusion_ffhq_10m.pt"),
        "adm-imagenet-256-uncond" => Some("diffusion_openai.pt"),
        _ => None,
    }
}

/// The kind of the spec's explicit config, if it has one. Reading it first reports a
/// missing or malformed config before any weights are opened.
pub(crate) fn explicit_config(spec: &ModelSpec) -> Result<Option<(PathBuf, ConfigKind)>> {
    let Some(c) = &spec.config else {
        return Ok(None);
    };
    let kind = ConfigFile::read(c)?
        .kind()
        .ok_or_else(|| PriorError::UnknownConfigKind(c.clone()))?;
    if let (Some(p), ConfigKind::Adm) = (&spec.preset, kind) {
        return Err(PriorError::PresetAndConfig {
            preset: p.clone(),
            config: c.clone(),
        });
    }
    Ok(Some((c.clone(), kind)))
}

/// A local folder or file to files, with a description of the source for
/// [`crate::ModelInfo::source`].
pub(crate) fn locate_path(
    spec: &ModelSpec,
    path: &Path,
    explicit: Option<(PathBuf, ConfigKind)>,
) -> Result<(Located, String)> {
    let shown = path.display().to_string();
    if path.is_file() {
        let source = format!("file {shown}");
        return Ok(match explicit {
            Some((config, ConfigKind::Diffusers)) => {
                let scheduler_config = [config.parent(), path.parent()]
                    .into_iter()
                    .flatten()
                    .map(|d| d.join("scheduler_config.json"))
                    .find(|p| p.is_file());
                (
                    Located::Diffusers(ModelFiles {
                        config,
                        weights: path.to_path_buf(),
                        scheduler_config,
                    }),
                    source,
                )
            }
            Some((config, ConfigKind::Adm)) => (
                Located::Adm {
                    weights: path.to_path_buf(),
                    config: Some(config),
                },
                source,
            ),
            None => (
                Located::Adm {
                    weights: path.to_path_buf(),
                    config: adm_config_beside(path),
                },
                source,
            ),
        });
    }
    if path.is_dir() {
        let source = format!("local folder {shown}");
        let adm_config = match explicit {
            Some((config, ConfigKind::Adm)) => Some(config),
            Some((config, ConfigKind::Diffusers)) => {
                let files = genprior_hub::local_diffusers(path)
                    .ok_or_else(|| PriorError::NotAModelFolder(shown.clone()))?;
                return Ok((Located::Diffusers(ModelFiles { config, ..files }), source));
            }
            None => adm_config_in_folder(path),
        };
        if let Some(config) = adm_config {
            let weights = adm_folder_weights(spec, path, &shown, &config)?;
            return Ok((
                Located::Adm {
                    weights,
                    config: Some(config),
                },
                source,
            ));
        }
        let files = genprior_hub::local_diffusers(path)
            .ok_or_else(|| PriorError::NotAModelFolder(shown.clone()))?;
        return Ok((Located::Diffusers(files), source));
    }
    Err(PriorError::NotFound(shown))
}

/// The first config beside a checkpoint file that describes an ADM model.
fn adm_config_beside(weights: &Path) -> Option<PathBuf> {
    BESIDE
        .iter()
        .map(|name| weights.with_file_name(name))
        .find(|p| p.is_file() && sniff(p) == Some(ConfigKind::Adm))
}

/// The ADM config of a folder: its `config.json` when that is an ADM config; else, for
/// a folder that is not a diffusers model, a guided-diffusion `model_config.yaml`.
fn adm_config_in_folder(dir: &Path) -> Option<PathBuf> {
    let cfg = dir.join("config.json");
    if cfg.is_file() && sniff(&cfg) == Some(ConfigKind::Adm) {
        return Some(cfg);
    }
    if genprior_hub::local_diffusers(dir).is_some() {
        return None;
    }
    BESIDE[1..]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file() && sniff(p) == Some(ConfigKind::Adm))
}

/// The checkpoint of an ADM folder: `--weights-file` (default `model.safetensors`),
/// then `model.pt`, then the file named by the config's `model_path` (DPS / DPnP
/// configs name their checkpoint there, relative to their repo: only the file name is
/// looked for in the folder).
fn adm_folder_weights(spec: &ModelSpec, dir: &Path, shown: &str, config: &Path) -> Result<PathBuf> {
    let name = spec.weights_file.as_deref().unwrap_or("model.safetensors");
    let mut cands = vec![dir.join(name), dir.join("model.pt")];
    if let Some(file) = ConfigFile::read(config).ok().and_then(|c| {
        c.model_path()
            .and_then(|p| Path::new(p).file_name().map(PathBuf::from))
    }) {
        cands.push(dir.join(file));
    }
    cands
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| PriorError::AdmFolderWithoutWeights {
            folder: shown.to_string(),
            name: name.to_string(),
        })
}

/// A Hub repo to files in the local cache (downloading them unless offline).
pub(crate) fn locate_hub(
    spec: &ModelSpec,
    repo_id: &str,
    revision: Option<&str>,
    explicit: Option<(PathBuf, ConfigKind)>,
) -> Result<(Located, String)> {
    let repo = HubRepo::new(repo_id, revision);
    let source = format!("hub {repo_id}@{}", revision.unwrap_or("main"));
    let config = match explicit {
        Some((c, ConfigKind::Diffusers)) => return Err(PriorError::DiffusersConfigWithoutFile(c)),
        Some((c, ConfigKind::Adm)) => Some(c),
        None => None,
    };
    let adm_file = spec.weights_file.clone().or_else(|| {
        spec.preset
            .as_deref()
            .and_then(preset_hub_file)
            .map(String::from)
    });
    if let Some(file) = adm_file {
        let (_, weights) = repo.first_of(&[file.as_str()])?;
        return Ok((Located::Adm { weights, config }, source));
    }
    if config.is_some() {
        return Err(PriorError::HubAdmWithoutFile {
            repo: repo_id.to_string(),
        });
    }
    let files = genprior_hub::fetch_diffusers(&repo)?;
    Ok((Located::Diffusers(files), source))
}
