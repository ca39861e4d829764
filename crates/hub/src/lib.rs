//! Where a model comes from: a local folder, or a Hugging Face Hub repo downloaded into
//! the standard Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), shared with Python's `huggingface_hub`.
//!
//! Client choice: `hf-hub` 0.4's synchronous `api::sync` (ureq). genprior only needs
//! blocking, single-file downloads into the standard cache layout; the 1.0 client is
//! async (tokio + reqwest + Xet transfer code), a much larger build on 2 cores for no
//! gain here. Both honour `HF_ENDPOINT` (a custom endpoint: the tests use a local
//! server) and `HF_HOME`. Offline mode (`HF_HUB_OFFLINE=1`) is implemented here on top
//! of the cache API: cache only, and a clear error naming any missing file.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{0}` is neither an existing folder nor a Hub id of the form org/name")]
    NotAModel(String),
    #[error("{repo}: `{file}` is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set; run once online to download it")]
    OfflineMissing {
        repo: String,
        file: String,
        cache: String,
    },
    #[error("{repo}: none of {tried:?} exists in the repo")]
    NoneFound { repo: String, tried: Vec<String> },
    #[error("{repo}: downloading `{file}` from {endpoint} failed: {msg}")]
    Download {
        repo: String,
        file: String,
        endpoint: String,
        msg: String,
    },
}

/// Is `s` shaped like a Hub repo id (`org/name`, no path traversal)?
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only operation.
pub fn offline_from_env() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE")
            .ok()
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

/// The cache directory, following huggingface_hub's precedence.
pub fn cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    Cache::from_env().path().clone()
}

/// The endpoint used for downloads.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// One Hub repo at one revision.
pub struct HubRepo {
    id: String,
    revision: String,
    offline: bool,
    progress: bool,
}

impl HubRepo {
    pub fn new(id: &str, revision: Option<&str>) -> Self {
        Self {
            id: id.to_string(),
            revision: revision.unwrap_or("main").to_string(),
            offline: offline_from_env(),
            progress: true,
        }
    }

    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.id.clone(), RepoType::Model, self.revision.clone())
    }

    /// Path of `file` in the cache, downloading it first unless offline. `Ok(None)`
    /// means the repo does not have the file (HTTP 404), which lets callers try
    /// alternatives (`.safetensors` then `.bin`; `config.json` then `unet/config.json`).
    pub fn try_get(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
        let cache = Cache::new(cache_dir());
        if let Some(p) = cache.repo(self.repo()).get(file) {
            return Ok(Some(p));
        }
        if self.offline {
            return Ok(None);
        }
        let api = ApiBuilder::from_cache(cache)
            .with_endpoint(endpoint())
            .with_progress(self.progress)
            .build()
            .map_err(|e| self.download_err(file, e.to_string()))?;
        match api.repo(self.repo()).download(file) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e))
                if matches!(*e, ureq::Error::Status(404, _)) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.download_err(file, e.to_string())),
        }
    }

    fn download_err(&self, file: &str, msg: String) -> HubError {
        HubError::Download {
            repo: self.id.clone(),
            file: file.into(),
            endpoint: endpoint(),
            msg,
        }
    }

    /// The first of `candidates` the repo has.
    pub fn first_of(&self, candidates: &[&str]) -> Result<(String, PathBuf), HubError> {
        for c in candidates {
            if let Some(p) = self.try_get(c)? {
                return Ok((c.to_string(), p));
            }
        }
        if self.offline {
            return Err(HubError::OfflineMissing {
                repo: self.id.clone(),
                file: candidates.join(" or "),
                cache: cache_dir().display().to_string(),
            });
        }
        Err(HubError::NoneFound {
            repo: self.id.clone(),
            tried: candidates.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Files of a diffusers model, all inside one folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub scheduler_config: Option<PathBuf>,
}

const WEIGHT_NAMES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
];

/// Fetch a diffusers model from the Hub: a `UNet2DModel` repo (files at the root) or a
/// pipeline repo (files under `unet/` and `scheduler/`).
pub fn fetch_diffusers(repo: &HubRepo) -> Result<ModelFiles, HubError> {
    let (cfg_name, config) = repo.first_of(&["config.json", "unet/config.json"])?;
    let sub = if cfg_name.starts_with("unet/") {
        "unet/"
    } else {
        ""
    };
    let weights_cands: Vec<String> = WEIGHT_NAMES.iter().map(|w| format!("{sub}{w}")).collect();
    let cands: Vec<&str> = weights_cands.iter().map(String::as_str).collect();
    let (_, weights) = repo.first_of(&cands)?;
    let sched_cands = if sub.is_empty() {
        vec!["scheduler_config.json", "scheduler/scheduler_config.json"]
    } else {
        vec!["scheduler/scheduler_config.json"]
    };
    let mut scheduler_config = None;
    for c in sched_cands {
        if let Some(p) = repo.try_get(c)? {
            scheduler_config = Some(p);
            break;
        }
    }
    Ok(ModelFiles {
        config,
        weights,
        scheduler_config,
    })
}

/// Files of a diffusers model in a local folder (`dir/` or `dir/unet/`).
pub fn local_diffusers(dir: &Path) -> Option<ModelFiles> {
    let base = if dir.join("config.json").is_file() {
        dir.to_path_buf()
    } else if dir.join("unet").join("config.json").is_file() {
        dir.join("unet")
    } else {
        return None;
    };
    let weights = WEIGHT_NAMES
        .iter()
        .map(|w| base.join(w))
        .find(|p| p.is_file())?;
    let scheduler_config = [
        base.join("scheduler_config.json"),
        dir.join("scheduler").join("scheduler_config.json"),
        dir.join("scheduler_config.json"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    Some(ModelFiles {
        config: base.join("config.json"),
        weights,
        scheduler_config,
    })
}
