//! Error type of the training crate.

use std::path::PathBuf;

/// Everything that can go wrong while setting up, running, checkpointing or exporting a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A training option or architecture is invalid (names the option).
    #[error("{0}")]
    Config(String),
    /// The training images do not fit the run (shape, range, count).
    #[error("{0}")]
    Data(String),
    /// A checkpoint is unreadable or belongs to another run.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// The loss or the gradients stopped being finite; nothing of this step is kept.
    #[error("{0}")]
    Diverged(String),
    #[error("cannot write or read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nn(#[from] genprior_nn::NnError),
    #[error(transparent)]
    Diffusion(#[from] genprior_diffusion::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn config<T>(msg: impl Into<String>) -> Result<T> {
    Err(TrainError::Config(msg.into()))
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
