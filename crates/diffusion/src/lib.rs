//! Diffusion machinery shared by every sampler in genprior: the [`ScoreModel`] seam
//! between samplers and networks, diffusers-compatible noise schedules, and the
//! DDPM / DDIM samplers.
//!
//! Samplers never see a network type: they see a [`ScoreModel`], so the analytic
//! priors used by the exactness tests plug in exactly where a UNet does.
//!
//! * [`schedule`]: [`Schedule`] from `scheduler_config.json` (β schedules, prediction and
//!   variance types, clipping/thresholding, timestep spacing), ᾱ(t) at fractional t.
//! * [`convert`]: ε ↔ x̂₀ ↔ v ↔ score.
//! * [`step`]: `Schedule::ddpm_step` / `Schedule::ddim_step`, matching diffusers.
//! * [`sampler`]: batched samplers with seeded host-side noise ([`noise::BatchNoise`]).
//! * [`analytic`]: [`analytic::GaussianPrior`], an exact ε-model for tests.

pub mod analytic;
pub mod convert;
pub mod error;
pub mod model;
pub mod noise;
pub mod sampler;
pub mod schedule;
pub mod step;

pub use error::{Error, Result};
pub use model::ScoreModel;
pub use noise::BatchNoise;
pub use sampler::{
    sample, sample_ddim, sample_ddpm, CountingModel, SampleOutput, SamplerKind, StepEvent,
};
pub use schedule::{
    BetaSchedule, PredictionType, Schedule, SchedulerConfig, StepPair, TimestepSpacing,
    VarianceType,
};
pub use step::StepOutput;
