//! Errors of the networks crate: every message names the file, field or tensor at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid model config: {msg}")]
    ConfigParse { path: PathBuf, msg: String },
    #[error("unsupported config value: {field} = {value} ({reason})")]
    Unsupported {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("{file}: missing tensor `{name}` (the checkpoint does not match the config)")]
    MissingTensor { file: String, name: String },
    #[error("{file}: tensor `{name}` has shape {got:?}, but the config needs {expected:?}")]
    ShapeMismatch {
        file: String,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{file}: {count} tensor(s) not used by this architecture, e.g. `{example}` (the checkpoint belongs to a different architecture or config)")]
    UnusedTensors {
        file: String,
        count: usize,
        example: String,
    },
    #[error("{path}: cannot read weights: {msg}")]
    CorruptWeights { path: PathBuf, msg: String },
    #[error("{0}")]
    Device(String),
    #[error("input error: {0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, NnError>;
