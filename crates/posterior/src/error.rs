//! Error type of the posterior-sampling crate.

/// Everything that can go wrong in DDS, DPnP and DPS: a bad argument (named), or an error
/// from the schedule, an operator or candle.
#[derive(Debug, thiserror::Error)]
pub enum PosteriorError {
    /// A caller-supplied argument out of range (η, step counts, shapes, seeds of data, ...).
    #[error("{0}")]
    Invalid(String),
    /// The method cannot run this kind of operator (the caller may skip the pair).
    #[error("{method} cannot run task `{task}`: it needs {needs}")]
    Unsupported {
        method: String,
        task: String,
        needs: String,
    },
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

/// The error for a method that cannot take operator `op`: `needs` says what it requires
/// ("a linear operator with a Gaussian likelihood").
pub(crate) fn unsupported<T>(
    method: &str,
    op: &dyn genprior_inverse::Operator,
    needs: impl Into<String>,
) -> Result<T> {
    Err(PosteriorError::Unsupported {
        method: method.to_string(),
        task: op.name().to_string(),
        needs: needs.into(),
    })
}
