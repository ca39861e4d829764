//! Training diffusers `UNet2DModel` priors on candle (`genprior train`): the DDPM ε-objective
//! with a linear or cosine β schedule (T = 1000), AdamW with warm-up, gradient clipping and an
//! EMA of the weights; checkpoints that resume bit-identically; export to a diffusers folder
//! that genprior and diffusers' `UNet2DModel.from_pretrained` load.
//!
//! Gradients come from candle's autograd through genprior-nn's layers; on CPU f32 the
//! convolutions and group norms run on genprior's kernels, whose backward passes also give the
//! weight gradients.

pub mod arch;
pub mod checkpoint;
pub mod error;
pub mod log;
pub mod trainer;

pub use arch::{arch_config, ARCHS};
pub use error::{Result, TrainError};
pub use trainer::{Batch, BetaKind, Dataset, LrSchedule, StepStats, TrainOptions, Trainer};
