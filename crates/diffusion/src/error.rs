//! Error type of the diffusion crate.

use std::path::PathBuf;

/// Everything that can go wrong in schedules and samplers. Configuration problems name
/// the offending field and value; tensor problems carry candle's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scheduler configuration value is invalid or unsupported.
    #[error("scheduler config: {0}")]
    Config(String),
    /// A caller-supplied argument is out of range (steps, η, shapes, timesteps, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}

pub(crate) fn config<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Config(msg.into()))
}
