//! ε̂ from any [`ScoreModel`] through its schedule: the only thing DDS, DPnP and DPS ask of a
//! network.

use candle_core::{DType, Tensor};
use genprior_diffusion::convert::eps_from_x0;
use genprior_diffusion::{Schedule, ScoreModel};

use crate::error::{invalid, Result};

/// A score model plus its schedule, counting network evaluations (one per batched call).
pub struct Denoiser<'a> {
    model: &'a dyn ScoreModel,
    schedule: &'a Schedule,
    nfe: usize,
}

impl<'a> Denoiser<'a> {
    pub fn new(model: &'a dyn ScoreModel, schedule: &'a Schedule) -> Self {
        Self { model, schedule, nfe: 0 }
    }

    pub fn model(&self) -> &'a dyn ScoreModel {
        self.model
    }

    pub fn schedule(&self) -> &'a Schedule {
        self.schedule
    }

    /// Batched network evaluations so far.
    pub fn nfe(&self) -> usize {
        self.nfe
    }

    /// Checks that the model consumes `channels`-channel images and outputs C or 2C.
    pub fn check_channels(&self, channels: usize) -> Result<()> {
        if self.model.in_channels() != channels {
            return invalid(format!(
                "the model takes {}-channel images but the problem has {channels} channel(s)",
                self.model.in_channels()
            ));
        }
        let oc = self.model.out_channels();
        if oc != channels && oc != 2 * channels {
            return invalid(format!("the model outputs {oc} channels; expected {channels} or {}", 2 * channels));
        }
        Ok(())
    }

    /// Raw network output (f32) at VP-scaled input `x` and (possibly fractional) training
    /// timestep `t`, shared by the batch.
    pub fn raw(&mut self, x: &Tensor, t: f64) -> Result<Tensor> {
        let b = x.dim(0)?;
        let tt = Tensor::full(t as f32, b, x.device())?;
        let raw = self.model.forward(x, &tt)?.to_dtype(DType::F32)?;
        self.nfe += 1;
        Ok(raw)
    }

    /// The x̂₀ and ε̂ implied by a raw output at noise level `alpha_bar`. When the schedule
    /// clips (`clip_sample`) or thresholds x̂₀, x̂₀ is processed and ε̂ recomputed from it, so the
    /// pair stays consistent with x = sqrt(ᾱ) x̂₀ + sqrt(1−ᾱ) ε̂. 2C outputs (learned variance)
    /// have their variance half dropped.
    pub fn interpret(&self, raw: &Tensor, x: &Tensor, alpha_bar: f64) -> Result<(Tensor, Tensor)> {
        let pred = self.schedule.predict_from_output(raw, x, alpha_bar)?;
        let s = self.schedule;
        if s.clip_sample() || s.thresholding() {
            let x0 = s.process_x0(&pred.x0)?;
            let eps = eps_from_x0(x, &x0, alpha_bar)?;
            Ok((x0, eps))
        } else {
            Ok((pred.x0, pred.eps))
        }
    }

    /// ε̂ at VP-scaled `x`, timestep `t` whose noise level is `alpha_bar` (see
    /// [`Denoiser::interpret`]).
    pub fn eps(&mut self, x: &Tensor, t: f64, alpha_bar: f64) -> Result<Tensor> {
        let raw = self.raw(x, t)?;
        Ok(self.interpret(&raw, x, alpha_bar)?.1)
    }
}
