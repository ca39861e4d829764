//! genprior-inverse: forward operators (measurement models) with their noise models,
//! likelihoods and classical baselines, the task registry, and image metrics.
//!
//! - [`Operator`]: the seam between samplers and physics: a forward map A (with Aᵀ, or a
//!   vector–Jacobian product for nonlinear maps) plus a [`NoiseModel`]; simulation and the
//!   likelihood L(x; y) = noise.L(A(x); y), ∇ₓL = Jᵀ∇_z L are provided on top. One file per
//!   operator family under [`physics`], one per noise model under [`noise`].
//! - [`task`]: the registry. Each operator file declares its tasks ([`TaskEntry`]: names,
//!   typed options, default noise σ, build function); [`task::ENTRIES`] lists the files.
//!   [`TaskOptions`] + [`build_task`] map `--task NAME [options]` to an operator; the CLI
//!   generates its flags from [`option_union`]. Adding an operator is one new file under
//!   `physics/` plus one line in [`task::ENTRIES`] (and its `pub mod` line).
//! - [`svd`]: the SVD seam ([`OperatorSvd`], A = U S Vᵀ) of the operators that have one
//!   ([`Operator::svd`]), for the SVD-based samplers (DDRM, DDNM).
//! - [`metrics`]: PSNR and SSIM on [0, 1] images.
//!
//! All operator arithmetic runs on the host in `f64` for now (tensors on other devices are
//! copied); see README.md for the conventions. The PCS sampler of DPnP lives in
//! `genprior-posterior` with the other samplers.

pub mod device;
pub mod error;
pub mod fft;
pub mod fill;
pub mod host;
pub mod linalg;
pub mod metrics;
pub mod noise;
pub mod operator;
pub mod physics;
pub mod svd;
pub mod task;

pub use error::{InverseError, Result};
pub use metrics::{psnr, ssim, to_unit_range};
pub use noise::{Gaussian, LogisticSign, MeasurementGrad, NoiseModel, Poisson, Transmission};
pub use operator::{Operator, ReferenceTask};
pub use svd::OperatorSvd;
pub use task::{
    build_task, find_task, option_union, task_entries, task_names, OptionDefault, OptionSpec,
    OptionType, OptionValue, SharedOption, TaskEntry, TaskOptions,
};
