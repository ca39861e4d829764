//! genprior-inverse: forward operators (measurement models) with their likelihoods and
//! classical baselines, the PCS sampler of DPnP, and image metrics.
//!
//! - [`Operator`]: the seam between samplers and physics; one file per operator family under
//!   [`physics`]; [`build_operator`] maps a [`TaskSpec`] (CLI `--task NAME [options]`) to one.
//! - [`pcs`]: proximal consistency sampler (MALA, unadjusted Langevin, exact Gaussian).
//! - [`metrics`]: PSNR and SSIM on [0, 1] images.
//!
//! All operator and PCS arithmetic runs on the host in `f64` for now (tensors on other devices
//! are copied); see README.md for the conventions.

pub mod error;
pub mod fft;
pub mod fill;
pub mod host;
pub mod linalg;
pub mod metrics;
pub mod operator;
pub mod pcs;
pub mod physics;
pub mod task;

pub use error::{InverseError, Result};
pub use metrics::{psnr, ssim, to_unit_range};
pub use operator::Operator;
pub use pcs::{pcs, pcs_seeded, PcsConfig, PcsMethod, PcsOutput};
pub use task::{build_operator, TaskSpec, TASK_NAMES};
