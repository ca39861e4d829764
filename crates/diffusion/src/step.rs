//! Single reverse steps that match diffusers' `DDPMScheduler.step` and
//! `DDIMScheduler.step`, with the noise passed in explicitly. Tensors are f32
//! `(B, C, ...)` on any device; the schedule coefficients are computed in f64 from
//! the f32-rounded ᾱ values diffusers uses.

use candle_core::{DType, Tensor};

use crate::convert::predict;
use crate::error::{invalid, Result};
use crate::schedule::{Schedule, VarianceType};

/// Result of one reverse step.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// x_{t_prev}.
    pub prev_sample: Tensor,
    /// x̂₀ after clipping / thresholding.
    pub pred_original_sample: Tensor,
}

fn check_same_shape(what: &str, a: &Tensor, sample: &Tensor) -> Result<()> {
    if a.dims() != sample.dims() {
        return invalid(format!(
            "{what} has shape {:?} but the sample has shape {:?}",
            a.dims(),
            sample.dims()
        ));
    }
    Ok(())
}

impl Schedule {
    /// Split a raw network output into its mean part (C channels) and, for 2C-channel
    /// outputs (learned variance), its variance part. `channels` is C. Outputs with
    /// 2C channels are split whatever the configured `variance_type` (a fixed-variance
    /// sampler simply ignores the second half).
    pub fn split_model_output(
        &self,
        raw: &Tensor,
        channels: usize,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let c_out = raw.dim(1)?;
        if c_out == channels {
            Ok((raw.clone(), None))
        } else if c_out == 2 * channels {
            Ok((
                raw.narrow(1, 0, channels)?,
                Some(raw.narrow(1, channels, channels)?),
            ))
        } else {
            invalid(format!(
                "the network output has {c_out} channels; expected {channels} or {} \
                 (learned variance)",
                2 * channels
            ))
        }
    }

    /// Clip (`clip_sample`, to ±`clip_sample_range`) or dynamically threshold
    /// (`thresholding`, which takes precedence) a predicted x̂₀, as diffusers does.
    pub fn process_x0(&self, x0: &Tensor) -> Result<Tensor> {
        let cfg = self.config();
        if cfg.thresholding {
            self.threshold_sample(x0)
        } else if cfg.clip_sample {
            let r = cfg.clip_sample_range;
            Ok(x0.clamp(-r, r)?)
        } else {
            Ok(x0.clone())
        }
    }

    /// Dynamic thresholding (Imagen): per sample, s = clamp(quantile(|x̂₀|, ratio), 1,
    /// sample_max_value); x̂₀ ← clamp(x̂₀, −s, s) / s. The quantile is torch.quantile's
    /// linear interpolation, computed on the host.
    pub fn threshold_sample(&self, x0: &Tensor) -> Result<Tensor> {
        let cfg = self.config();
        let b = x0.dim(0)?;
        let flat = x0
            .flatten_from(1)?
            .abs()?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let q = cfg.dynamic_thresholding_ratio as f32;
        let mut s = Vec::with_capacity(b);
        for mut row in flat {
            if row.iter().any(|v| v.is_nan()) {
                return invalid("dynamic thresholding: x̂₀ contains NaN");
            }
            row.sort_by(|a, b| a.total_cmp(b));
            let n = row.len();
            let rank = q * (n - 1) as f32;
            let lo = rank.floor() as usize;
            let hi = (rank.ceil() as usize).min(n - 1);
            let w = rank - lo as f32;
            let (a, c) = (row[lo], row[hi]);
            // torch.lerp's formulation.
            let v = if w < 0.5 {
                a + w * (c - a)
            } else {
                c - (c - a) * (1.0 - w)
            };
            s.push(v.clamp(1.0, cfg.sample_max_value as f32));
        }
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, x0.rank() - 1));
        let s = Tensor::from_vec(s, shape, x0.device())?.to_dtype(x0.dtype())?;
        let clipped = x0.broadcast_minimum(&s)?.broadcast_maximum(&s.neg()?)?;
        Ok(clipped.broadcast_div(&s)?)
    }

    /// One ancestral DDPM step from timestep `t` to `prev` (`None`: past the end),
    /// matching `DDPMScheduler.step` after `set_timesteps` (or with `prev = t − 1` for
    /// the full chain).
    ///
    /// `model_output` is the raw network output (C or 2C channels); `noise` is the
    /// standard normal z (same shape as `sample`) that diffusers draws internally. The
    /// noise term is added only when `t > 0` and `noise` is given (without it the step
    /// returns the posterior mean).
    ///
    /// Noise standard deviation by `variance_type` (β̃ = (1−ᾱ_prev)/(1−ᾱ_t)·β_t clamped
    /// at 1e-20, β_t = 1 − ᾱ_t/ᾱ_prev): fixed_small / fixed_small_log sqrt(β̃);
    /// fixed_large sqrt(β_t); fixed_large_log sqrt(β_t) (diffusers takes the square root
    /// of log β_t there and returns NaN — a diffusers bug this deliberately does not
    /// reproduce); learned sqrt(v) with v the network's variance channels (diffusers
    /// treats them as the variance itself); learned_range exp(½(f log β_t + (1−f)
    /// log β̃)), f = (v+1)/2.
    pub fn ddpm_step(
        &self,
        model_output: &Tensor,
        t: usize,
        prev: Option<usize>,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let channels = sample.dim(1)?;
        let (out, var_out) = self.split_model_output(model_output, channels)?;
        check_same_shape("the network output's mean part", &out, sample)?;
        if self.variance_type().is_learned() && var_out.is_none() {
            return invalid(format!(
                "variance_type {:?} needs a network with {} output channels (mean and \
                 variance), this one has {}",
                self.variance_type(),
                2 * channels,
                model_output.dim(1)?
            ));
        }
        if let Some(p) = prev {
            if p >= t {
                return invalid(format!("previous timestep {p} is not below {t}"));
            }
        }
        let ab_t = self.alpha_bar(t)?;
        let ab_prev = self.alpha_bar_prev(prev)?;
        let beta_prod_t = 1.0 - ab_t;
        let beta_prod_prev = 1.0 - ab_prev;
        let current_alpha = ab_t / ab_prev;
        let current_beta = 1.0 - current_alpha;

        let x0 = predict(self.prediction_type(), &out, sample, ab_t)?.x0;
        let x0 = self.process_x0(&x0)?;

        let c0 = ab_prev.sqrt() * current_beta / beta_prod_t;
        let c1 = current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
        let mut prev_sample = (x0.affine(c0, 0.0)? + sample.affine(c1, 0.0)?)?;

        if let (true, Some(z)) = (t > 0, noise) {
            check_same_shape("noise", z, sample)?;
            let small = (beta_prod_prev / beta_prod_t * current_beta).max(1e-20);
            let term = match self.variance_type() {
                VarianceType::FixedSmall | VarianceType::FixedSmallLog => {
                    z.affine(small.sqrt(), 0.0)?
                }
                VarianceType::FixedLarge | VarianceType::FixedLargeLog => {
                    z.affine(current_beta.sqrt(), 0.0)?
                }
                VarianceType::Learned => {
                    let v = var_out.as_ref().map(|v| v.sqrt()).transpose()?;
                    match v {
                        Some(std) => (std * z)?,
                        None => unreachable!("checked above"),
                    }
                }
                VarianceType::LearnedRange => {
                    let (min_log, max_log) = (small.ln(), current_beta.ln());
                    let v = match var_out.as_ref() {
                        Some(v) => v,
                        None => unreachable!("checked above"),
                    };
                    // frac = (v+1)/2; log var = frac·max_log + (1−frac)·min_log.
                    let frac = v.affine(0.5, 0.5)?;
                    let log_var = frac.affine(max_log - min_log, min_log)?;
                    (log_var.affine(0.5, 0.0)?.exp()? * z)?
                }
            };
            prev_sample = (prev_sample + term)?;
        }
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }

    /// One DDIM step from `t` to `prev` (`None`: past the end, ᾱ_prev =
    /// [`Schedule::final_alpha_cumprod`]), matching `DDIMScheduler.step` with
    /// `variance_noise = noise`. η ∈ [0, 1]; the noise term σ_t·z is added only when
    /// η > 0 and `noise` is given. A 2C-channel output has its variance half dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn ddim_step(
        &self,
        model_output: &Tensor,
        t: usize,
        prev: Option<usize>,
        sample: &Tensor,
        eta: f64,
        use_clipped_model_output: bool,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_eta(eta)?;
        let channels = sample.dim(1)?;
        let (out, _) = self.split_model_output(model_output, channels)?;
        check_same_shape("the network output's mean part", &out, sample)?;
        if let Some(p) = prev {
            if p >= t {
                return invalid(format!("previous timestep {p} is not below {t}"));
            }
        }
        let ab_t = self.alpha_bar(t)?;
        let ab_prev = match prev {
            Some(p) => self.alpha_bar(p)?,
            None => self.final_alpha_cumprod(),
        };
        let beta_prod_t = 1.0 - ab_t;
        let pred = predict(self.prediction_type(), &out, sample, ab_t)?;
        let x0 = self.process_x0(&pred.x0)?;
        // σ_t in f32 like diffusers: 1 − ᾱ_t/ᾱ_prev cancels badly near t = 0, and f32
        // evaluation there differs from f64 by up to ~1e-3 relative; matching the
        // reference's rounding keeps the step within 1e-6 of it.
        let (a32, ap32) = (ab_t as f32, ab_prev as f32);
        let variance32 = ((1.0f32 - ap32) / (1.0f32 - a32)) * (1.0f32 - a32 / ap32);
        let std = (eta as f32 * variance32.sqrt()) as f64;
        let eps = if use_clipped_model_output {
            (sample - x0.affine(ab_t.sqrt(), 0.0)?)?.affine(1.0 / beta_prod_t.sqrt(), 0.0)?
        } else {
            pred.eps
        };
        let std32 = std as f32;
        let dir_coef = (1.0f32 - ap32 - std32 * std32).max(0.0).sqrt() as f64;
        let mut prev_sample = (x0.affine(ab_prev.sqrt(), 0.0)? + eps.affine(dir_coef, 0.0)?)?;
        if let (true, Some(z)) = (eta > 0.0, noise) {
            check_same_shape("noise", z, sample)?;
            prev_sample = (prev_sample + z.affine(std, 0.0)?)?;
        }
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }
}

/// η must lie in [0, 1].
pub fn check_eta(eta: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&eta) {
        return invalid(format!("DDIM eta must lie in [0, 1], got {eta}"));
    }
    Ok(())
}
