//! Error type of the inverse-problems crate.

/// Everything that can go wrong when building an operator, validating data or sampling.
#[derive(Debug, thiserror::Error)]
pub enum InverseError {
    /// A task name that no operator answers to.
    #[error("unknown task `{name}`; expected one of: {known}")]
    UnknownTask { name: String, known: String },
    /// A task option out of its range (σ < 0, a ratio outside (0, 1], a kernel larger than the image, ...).
    #[error("invalid option for task `{task}`: {msg}")]
    InvalidOption { task: String, msg: String },
    /// An image whose shape does not fit the operator.
    #[error("image does not fit task `{task}`: {msg}")]
    ImageShape { task: String, msg: String },
    /// A measurement whose shape or values do not fit the operator.
    #[error("measurement does not fit task `{task}`: {msg}")]
    Measurement { task: String, msg: String },
    /// An operation the operator does not support (adjoint of a nonlinear map, exact PCS on a
    /// non-Gaussian likelihood, ...).
    #[error("{0}")]
    Unsupported(String),
    /// A numerical routine that failed (e.g. conjugate gradients not converging).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// An invalid argument to a sampler or a metric.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, InverseError>;
