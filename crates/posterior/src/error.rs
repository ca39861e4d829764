//! Error type of the posterior-sampling crate.

/// Everything that can go wrong in DDS, DPnP and DPS: a bad argument (named), or an error
/// from the schedule, an operator or candle.
#[derive(Debug, thiserror::Error)]
pub enum PosteriorError {
    /// A caller-supplied argument out of range (η, step counts, shapes, seeds of data, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Diffusion(#[from] genprior_diffusion::Error),
    #[error(transparent)]
    Inverse(#[from] genprior_inverse::InverseError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, PosteriorError>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(PosteriorError::Invalid(msg.into()))
}
