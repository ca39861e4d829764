//! The networks of genprior-nn behind the sampler's [`ScoreModel`] seam.
//!
//! Newtypes, because neither the trait (genprior-diffusion) nor the networks
//! (genprior-nn) belong to this crate; the two crates do not know each other.

use candle_core::{Device, Result, Tensor};
use genprior_diffusion::ScoreModel;
use genprior_nn::{AdmUNet, NnError, UNet2DModel};

/// A diffusers `UNet2DModel` as a [`ScoreModel`].
pub struct UNet2DScore(pub UNet2DModel);

/// A guided-diffusion ADM UNet as a [`ScoreModel`] (unconditional: class-conditional
/// models need labels, which the seam does not carry, and report that as an error).
pub struct AdmScore(pub AdmUNet);

impl From<UNet2DModel> for UNet2DScore {
    fn from(net: UNet2DModel) -> Self {
        Self(net)
    }
}

impl From<AdmUNet> for AdmScore {
    fn from(net: AdmUNet) -> Self {
        Self(net)
    }
}

/// Keep candle errors as they are; wrap the others with their message.
fn into_candle(e: NnError) -> candle_core::Error {
    match e {
        NnError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

impl ScoreModel for UNet2DScore {
    fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.0.forward(x, t).map_err(into_candle)
    }
    fn in_channels(&self) -> usize {
        self.0.config().in_channels
    }
    fn out_channels(&self) -> usize {
        self.0.config().out_channels
    }
    fn sample_size(&self) -> Option<usize> {
        match self.0.config().image_size() {
            Some((h, w)) if h == w => Some(h),
            _ => None,
        }
    }
    fn device(&self) -> &Device {
        self.0.device()
    }
}

impl ScoreModel for AdmScore {
    fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.0.forward(x, t).map_err(into_candle)
    }
    fn in_channels(&self) -> usize {
        self.0.config().in_channels
    }
    fn out_channels(&self) -> usize {
        self.0.config().out_channels()
    }
    fn sample_size(&self) -> Option<usize> {
        Some(self.0.config().image_size)
    }
    fn device(&self) -> &Device {
        self.0.device()
    }
}
