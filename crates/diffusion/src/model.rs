//! The seam between samplers and score networks.

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

impl ScoreModel for genprior_nn::UNet2DModel {
    fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        genprior_nn::UNet2DModel::forward(self, x, t).map_err(into_candle)
    }
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }
    fn out_channels(&self) -> usize {
        self.config().out_channels
    }
    fn sample_size(&self) -> Option<usize> {
        match self.config().image_size() {
            Some((h, w)) if h == w => Some(h),
            _ => None,
        }
    }
    fn device(&self) -> &Device {
        genprior_nn::UNet2DModel::device(self)
    }
}

/// Keep candle errors as they are; wrap the others with their message.
fn into_candle(e: genprior_nn::NnError) -> candle_core::Error {
    match e {
        genprior_nn::NnError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

impl ScoreModel for genprior_nn::AdmUNet {
    fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        genprior_nn::AdmUNet::forward(self, x, t).map_err(into_candle)
    }
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }
    fn out_channels(&self) -> usize {
        self.config().out_channels()
    }
    fn sample_size(&self) -> Option<usize> {
        Some(self.config().image_size)
    }
    fn device(&self) -> &Device {
        genprior_nn::AdmUNet::device(self)
    }
}
