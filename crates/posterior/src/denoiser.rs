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
        Self {
            model,
            schedule,
            nfe: 0,
        }
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
            return invalid(format!(
                "the model outputs {oc} channels; expected {channels} or {}",
                2 * channels
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use genprior_diffusion::analytic::GaussianPrior;
    use genprior_diffusion::SchedulerConfig;

    fn sched(prediction: &str, clip: bool) -> Schedule {
        Schedule::new(SchedulerConfig {
            prediction_type: prediction.into(),
            clip_sample: clip,
            ..SchedulerConfig::default()
        })
        .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A model that returns its input concatenated with junk "variance" channels.
    struct TwoC<'a>(&'a GaussianPrior);
    impl ScoreModel for TwoC<'_> {
        fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
            let e = self.0.forward(x, t)?;
            Tensor::cat(&[&e, &(e.ones_like()? * 7.0)?], 1)
        }
        fn in_channels(&self) -> usize {
            1
        }
        fn out_channels(&self) -> usize {
            2
        }
        fn sample_size(&self) -> Option<usize> {
            Some(2)
        }
        fn device(&self) -> &candle_core::Device {
            self.0.device()
        }
    }

    #[test]
    fn eps_is_the_same_whatever_the_parameterisation() {
        let dev = Device::Cpu;
        let x = Tensor::new(
            &[[[[0.3f32, -1.2], [2.0, 0.1]]], [[[-0.5, 0.7], [0.0, 1.5]]]],
            &dev,
        )
        .unwrap();
        let (mean, var) = (vec![0.1, -0.2, 0.3, 0.0], vec![0.3, 0.6, 1.0, 1.5]);
        let t = 123.4;
        let reference = {
            let s = sched("epsilon", false);
            let m = GaussianPrior::new(mean.clone(), var.clone(), [1, 2, 2], &s, &dev).unwrap();
            let ab = s.alpha_bar_at(t).unwrap();
            let e = Denoiser::new(&m, &s).eps(&x, t, ab).unwrap();
            // Against the closed form E[ε | x_t].
            let (_, want) = m.posterior_means(&x, &[ab, ab]).unwrap();
            assert!(max_diff(&e, &want) < 1e-6);
            e
        };
        for p in ["v_prediction", "sample"] {
            let s = sched(p, false);
            let m = GaussianPrior::new(mean.clone(), var.clone(), [1, 2, 2], &s, &dev).unwrap();
            let ab = s.alpha_bar_at(t).unwrap();
            let mut d = Denoiser::new(&m, &s);
            let e = d.eps(&x, t, ab).unwrap();
            assert!(max_diff(&e, &reference) < 1e-4, "{p}");
            assert_eq!(d.nfe(), 1);
        }
        // 2C outputs: the variance half is dropped.
        let s = sched("epsilon", false);
        let m = GaussianPrior::new(mean.clone(), var.clone(), [1, 2, 2], &s, &dev).unwrap();
        let two = TwoC(&m);
        let e = Denoiser::new(&two, &s)
            .eps(&x, t, s.alpha_bar_at(t).unwrap())
            .unwrap();
        assert!(max_diff(&e, &reference) < 1e-6);
        // Clipping: x̂₀ clipped to [-1, 1] and ε recomputed so that x = sqrt(ᾱ) x̂₀ + sqrt(1−ᾱ) ε.
        let s = sched("epsilon", true);
        let m = GaussianPrior::new(mean, var, [1, 2, 2], &s, &dev).unwrap();
        let ab = s.alpha_bar_at(900.0).unwrap();
        let xb = (x * 5.0).unwrap();
        let mut d = Denoiser::new(&m, &s);
        let raw = d.raw(&xb, 900.0).unwrap();
        let (x0, e) = d.interpret(&raw, &xb, ab).unwrap();
        assert!(
            x0.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                <= 1.0
        );
        let back = (x0.affine(ab.sqrt(), 0.0).unwrap() + e.affine((1.0 - ab).sqrt(), 0.0).unwrap())
            .unwrap();
        assert!(max_diff(&back, &xb) < 1e-4);
        assert!(Denoiser::new(&m, &s).check_channels(3).is_err());
    }
}
