//! Conversions between the quantities a VP diffusion network can predict, at a noise
//! level ᾱ (scalar, shared by the batch). With x = sqrt(ᾱ) x₀ + sqrt(1−ᾱ) ε:
//!
//! * x₀ = (x − sqrt(1−ᾱ) ε) / sqrt(ᾱ),   ε = (x − sqrt(ᾱ) x₀) / sqrt(1−ᾱ)
//! * v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x₀;  x₀ = sqrt(ᾱ) x − sqrt(1−ᾱ) v,  ε = sqrt(ᾱ) v + sqrt(1−ᾱ) x
//! * score ∇ log p_t(x) = −ε / sqrt(1−ᾱ)
//!
//! All functions work on f32 tensors of any shape and device and are differentiable.

use candle_core::Tensor;

use crate::error::{invalid, Result};
use crate::schedule::{PredictionType, Schedule};

fn check_ab(alpha_bar: f64) -> Result<()> {
    if !(alpha_bar > 0.0 && alpha_bar <= 1.0) {
        return invalid(format!("alpha_bar must lie in (0, 1], got {alpha_bar}"));
    }
    Ok(())
}

/// v-parameterisation is defined up to ᾱ = 0 (zero terminal SNR).
fn check_ab_closed(alpha_bar: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&alpha_bar) {
        return invalid(format!("alpha_bar must lie in [0, 1], got {alpha_bar}"));
    }
    Ok(())
}

fn check_ab_noisy(alpha_bar: f64) -> Result<()> {
    if !(alpha_bar > 0.0 && alpha_bar < 1.0) {
        return invalid(format!(
            "alpha_bar must lie in (0, 1) here, got {alpha_bar}"
        ));
    }
    Ok(())
}

/// x̂₀ from ε.
pub fn x0_from_eps(x: &Tensor, eps: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    check_ab(alpha_bar)?;
    let r = (x - eps.affine((1.0 - alpha_bar).sqrt(), 0.0)?)?;
    Ok((r / alpha_bar.sqrt())?)
}

/// ε from x̂₀ (needs ᾱ < 1).
pub fn eps_from_x0(x: &Tensor, x0: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    check_ab_noisy(alpha_bar)?;
    let r = (x - x0.affine(alpha_bar.sqrt(), 0.0)?)?;
    Ok((r / (1.0 - alpha_bar).sqrt())?)
}

/// (x̂₀, ε) from a v-prediction.
pub fn x0_eps_from_v(x: &Tensor, v: &Tensor, alpha_bar: f64) -> Result<(Tensor, Tensor)> {
    check_ab_closed(alpha_bar)?;
    let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    let x0 = (x.affine(a, 0.0)? - v.affine(s, 0.0)?)?;
    let eps = (v.affine(a, 0.0)? + x.affine(s, 0.0)?)?;
    Ok((x0, eps))
}

/// v from (x̂₀, ε).
pub fn v_from_x0_eps(x0: &Tensor, eps: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    check_ab_closed(alpha_bar)?;
    Ok((eps.affine(alpha_bar.sqrt(), 0.0)? - x0.affine((1.0 - alpha_bar).sqrt(), 0.0)?)?)
}

/// Score ∇ₓ log p_t(x) = −ε / sqrt(1−ᾱ).
pub fn score_from_eps(eps: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    check_ab_noisy(alpha_bar)?;
    Ok(eps.affine(-1.0 / (1.0 - alpha_bar).sqrt(), 0.0)?)
}

/// ε = −sqrt(1−ᾱ) · score.
pub fn eps_from_score(score: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    check_ab(alpha_bar)?;
    Ok(score.affine(-(1.0 - alpha_bar).sqrt(), 0.0)?)
}

/// x̂₀ and ε implied by a network output (mean part, C channels).
#[derive(Clone, Debug)]
pub struct Prediction {
    pub x0: Tensor,
    pub eps: Tensor,
}

/// Interpret a C-channel network output according to `prediction`, exactly as
/// diffusers' DDIMScheduler does (raw, before any clipping).
pub fn predict(
    prediction: PredictionType,
    model_output: &Tensor,
    x: &Tensor,
    alpha_bar: f64,
) -> Result<Prediction> {
    Ok(match prediction {
        PredictionType::Epsilon => Prediction {
            x0: x0_from_eps(x, model_output, alpha_bar)?,
            eps: model_output.clone(),
        },
        PredictionType::Sample => {
            check_ab_noisy(alpha_bar)?;
            Prediction {
                x0: model_output.clone(),
                eps: eps_from_x0(x, model_output, alpha_bar)?,
            }
        }
        PredictionType::VPrediction => {
            let (x0, eps) = x0_eps_from_v(x, model_output, alpha_bar)?;
            Prediction { x0, eps }
        }
    })
}

impl Schedule {
    /// [`predict`] with this schedule's prediction type.
    pub fn predict(&self, model_output: &Tensor, x: &Tensor, alpha_bar: f64) -> Result<Prediction> {
        predict(self.prediction_type(), model_output, x, alpha_bar)
    }

    /// x̂₀ and ε̂ at noise level `alpha_bar` from a raw network output (C or 2C
    /// channels; variance channels are dropped), without clipping.
    pub fn predict_from_output(
        &self,
        raw: &Tensor,
        x: &Tensor,
        alpha_bar: f64,
    ) -> Result<Prediction> {
        let (mean, _) = self.split_model_output(raw, x.dim(1)?)?;
        self.predict(&mean, x, alpha_bar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn vals(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &Tensor, b: &Tensor) {
        for (x, y) in vals(a).iter().zip(vals(b)) {
            assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn conversions_are_mutually_consistent() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[0.3f32, -0.7, 1.2], [0.0, 0.5, -1.5]], &dev).unwrap();
        let eps = Tensor::new(&[[1.1f32, -0.2, 0.4], [-0.9, 0.05, 2.0]], &dev).unwrap();
        for a in [0.999, 0.6, 0.05, 1e-4] {
            let x = (x0.affine(f64::sqrt(a), 0.0).unwrap()
                + eps.affine((1.0 - a).sqrt(), 0.0).unwrap())
            .unwrap();
            close(&x0_from_eps(&x, &eps, a).unwrap(), &x0);
            close(&eps_from_x0(&x, &x0, a).unwrap(), &eps);
            let v = v_from_x0_eps(&x0, &eps, a).unwrap();
            let (x0b, epsb) = x0_eps_from_v(&x, &v, a).unwrap();
            close(&x0b, &x0);
            close(&epsb, &eps);
            let s = score_from_eps(&eps, a).unwrap();
            close(&eps_from_score(&s, a).unwrap(), &eps);
            for (p, out) in [
                (PredictionType::Epsilon, eps.clone()),
                (PredictionType::Sample, x0.clone()),
                (PredictionType::VPrediction, v.clone()),
            ] {
                let pr = predict(p, &out, &x, a).unwrap();
                close(&pr.x0, &x0);
                close(&pr.eps, &eps);
            }
        }
        assert!(score_from_eps(&eps, 1.0).is_err());
        assert!(x0_from_eps(&x0, &eps, 0.0).is_err());
        assert!(x0_eps_from_v(&x0, &eps, 1.5).is_err());
    }
}
