//! Error type of the low-rank crate.

/// Everything that can go wrong while setting up or solving a low-rank problem.
#[derive(Debug, thiserror::Error)]
pub enum LowRankError {
    /// A caller-supplied argument is invalid (rank, shapes, sampling rate, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The iteration blew up: residual above the divergence threshold or non-finite.
    #[error(
        "diverged at iteration {iteration}: relative residual {residual:e} \
         (threshold {threshold:e}); try a smaller --eta, a damped preconditioner \
         (--damping) or a smaller rank"
    )]
    Diverged {
        iteration: usize,
        residual: f64,
        threshold: f64,
    },
    /// A small Gram matrix that must be positive definite was not (collapsed factor).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// Error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, LowRankError>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(LowRankError::InvalidInput(msg.into()))
}
