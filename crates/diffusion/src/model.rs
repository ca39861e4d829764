//! The seam between samplers and score networks.
//!
//! This crate knows no network: genprior-prior implements the trait for the UNets of
//! genprior-nn, and the analytic priors in [`crate::analytic`] implement it for tests.

use candle_core::{Device, Result, Tensor};

/// Anything that can be asked for the raw diffusion-network output at `(x, t)`.
///
/// * `x`: `(B, C, H, W)` f32 tensor on [`ScoreModel::device`], in the model's
///   (VP-scaled) input space.
/// * `t`: `(B,)` f32 tensor of *training* timesteps in `[0, T)`. Each batch element may
///   have its own timestep, and timesteps may be fractional (the DDS-DDIM refined grid
///   evaluates the network between integer steps; positional/fourier time embeddings
///   accept any real t).
///
/// Returns the raw output, f32, `(B, C_out, H, W)`, where `C_out` is `C` or `2C` for
/// models with a learned variance. What the output *means* (ε, x₀, v) is a property
/// of the schedule (`prediction_type`), not of the network.
///
/// Implementations must be differentiable with respect to `x` through candle's
/// autograd when `x` is built from a `candle_core::Var` (DPS backpropagates).
pub trait ScoreModel {
    fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor>;
    /// Image channels the model consumes.
    fn in_channels(&self) -> usize;
    /// Output channels the model produces (`in_channels` or `2 * in_channels`).
    fn out_channels(&self) -> usize;
    /// Native square image size, if the model has one.
    fn sample_size(&self) -> Option<usize>;
    fn device(&self) -> &Device;
}
