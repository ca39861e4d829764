//! Score models with a closed form, for exactness tests that need no trained weights.

use candle_core::{Device, Tensor};

use crate::error::{invalid, Result};
use crate::model::ScoreModel;
use crate::schedule::{PredictionType, Schedule};

/// Data distribution x₀ ~ N(μ, diag(s²)) over `(C, H, W)` images, with per-element mean
/// and (possibly unequal) variance. Under the VP forward process
/// x_t = sqrt(ᾱ) x₀ + sqrt(1−ᾱ) ε, x_t ~ N(sqrt(ᾱ) μ, ᾱ s² + 1 − ᾱ) elementwise and
///
/// * E[ε | x_t]  = sqrt(1−ᾱ) (x_t − sqrt(ᾱ) μ) / (ᾱ s² + 1 − ᾱ)
/// * E[x₀ | x_t] = μ + sqrt(ᾱ) s² (x_t − sqrt(ᾱ) μ) / (ᾱ s² + 1 − ᾱ)
///
/// `forward` returns the exact (MMSE) prediction in the schedule's `prediction_type`,
/// with ᾱ(t) from [`Schedule::alpha_bar_at`] (fractional and per-sample t allowed).
/// Differentiable in x.
#[derive(Clone, Debug)]
pub struct GaussianPrior {
    mean: Vec<f64>,
    var: Vec<f64>,
    shape: [usize; 3],
    mean_t: Tensor,
    var_t: Tensor,
    schedule: Schedule,
    device: Device,
}

impl GaussianPrior {
    /// `mean` and `var` hold C·H·W values in row-major `(C, H, W)` order; variances must
    /// be positive.
    pub fn new(
        mean: Vec<f64>,
        var: Vec<f64>,
        shape: [usize; 3],
        schedule: &Schedule,
        device: &Device,
    ) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return invalid(format!("Gaussian prior shape {shape:?} is empty"));
        }
        if mean.len() != n || var.len() != n {
            return invalid(format!(
                "Gaussian prior of shape {shape:?} needs {n} means and variances, got {} and {}",
                mean.len(),
                var.len()
            ));
        }
        if let Some(v) = var.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return invalid(format!(
                "Gaussian prior variances must be positive, got {v}"
            ));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return invalid("Gaussian prior means must be finite");
        }
        let dims = [1, shape[0], shape[1], shape[2]];
        let to_t = |v: &[f64]| -> Result<Tensor> {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Ok(Tensor::from_vec(f, dims.as_slice(), device)?)
        };
        Ok(Self {
            mean_t: to_t(&mean)?,
            var_t: to_t(&var)?,
            mean,
            var,
            shape,
            schedule: schedule.clone(),
            device: device.clone(),
        })
    }

    /// N(μ, s² I).
    pub fn isotropic(
        mean: f64,
        var: f64,
        shape: [usize; 3],
        schedule: &Schedule,
        device: &Device,
    ) -> Result<Self> {
        let n = shape.iter().product();
        Self::new(vec![mean; n], vec![var; n], shape, schedule, device)
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean
    }
    pub fn var(&self) -> &[f64] {
        &self.var
    }
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Per-batch coefficient tensor `(B, 1, 1, 1)`.
    fn per_batch(&self, vals: Vec<f32>) -> Result<Tensor> {
        let b = vals.len();
        Ok(Tensor::from_vec(vals, (b, 1, 1, 1), &self.device)?)
    }

    /// (E[x₀ | x_t], E[ε | x_t]) for a batch `x` at per-sample noise levels `alpha_bar`.
    pub fn posterior_means(&self, x: &Tensor, alpha_bar: &[f64]) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        if alpha_bar.len() != b {
            return invalid(format!(
                "{} noise levels for a batch of {b}",
                alpha_bar.len()
            ));
        }
        if x.dims()[1..] != self.shape[..] {
            return invalid(format!(
                "Gaussian prior of shape {:?} got input {:?}",
                self.shape,
                x.dims()
            ));
        }
        if let Some(a) = alpha_bar.iter().find(|a| !(**a > 0.0 && **a <= 1.0)) {
            return invalid(format!("alpha_bar must lie in (0, 1], got {a}"));
        }
        let sa = self.per_batch(alpha_bar.iter().map(|a| a.sqrt() as f32).collect())?;
        let ab = self.per_batch(alpha_bar.iter().map(|&a| a as f32).collect())?;
        let s1 = self.per_batch(alpha_bar.iter().map(|a| (1.0 - a).sqrt() as f32).collect())?;
        let one_minus = self.per_batch(alpha_bar.iter().map(|a| (1.0 - a) as f32).collect())?;
        // r = x − sqrt(ᾱ) μ ; d = ᾱ s² + 1 − ᾱ
        let r = x.broadcast_sub(&self.mean_t.broadcast_mul(&sa)?)?;
        let d = self.var_t.broadcast_mul(&ab)?.broadcast_add(&one_minus)?;
        let rd = r.broadcast_div(&d)?;
        let eps = rd.broadcast_mul(&s1)?;
        let x0 = rd
            .broadcast_mul(&self.var_t)?
            .broadcast_mul(&sa)?
            .broadcast_add(&self.mean_t)?;
        Ok((x0, eps))
    }

    fn forward_impl(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let ts = t
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let ab = ts
            .iter()
            .map(|&t| self.schedule.alpha_bar_at(t))
            .collect::<Result<Vec<f64>>>()?;
        let (x0, eps) = self.posterior_means(x, &ab)?;
        Ok(match self.schedule.prediction_type() {
            PredictionType::Epsilon => eps,
            PredictionType::Sample => x0,
            PredictionType::VPrediction => {
                let sa = self.per_batch(ab.iter().map(|a| a.sqrt() as f32).collect())?;
                let s1 = self.per_batch(ab.iter().map(|a| (1.0 - a).sqrt() as f32).collect())?;
                (eps.broadcast_mul(&sa)? - x0.broadcast_mul(&s1)?)?
            }
        })
    }
}

impl ScoreModel for GaussianPrior {
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_impl(x, t).map_err(|e| match e {
            crate::Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
    fn in_channels(&self) -> usize {
        self.shape[0]
    }
    fn out_channels(&self) -> usize {
        self.shape[0]
    }
    fn sample_size(&self) -> Option<usize> {
        (self.shape[1] == self.shape[2]).then_some(self.shape[1])
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::score_from_eps;

    #[test]
    fn score_matches_finite_differences_of_the_marginal_density() {
        // log p_t(x) = Σ −(x − √ᾱ μ)² / (2 d) + const, d = ᾱ s² + 1 − ᾱ, evaluated in f64
        // and differentiated by central differences; compared with −ε̂/√(1−ᾱ).
        let schedule = Schedule::ddpm_default();
        let mean = vec![0.4, -1.0, 0.0, 0.25];
        let var = vec![0.09, 1.0, 2.0, 0.5];
        let dev = Device::Cpu;
        let prior =
            GaussianPrior::new(mean.clone(), var.clone(), [1, 2, 2], &schedule, &dev).unwrap();
        let x = [0.3f64, -0.5, 1.1, -0.8];
        for t in [3.0f64, 250.5, 700.25] {
            let a = schedule.alpha_bar_at(t).unwrap();
            let logp = |x: &[f64]| -> f64 {
                (0..4)
                    .map(|i| {
                        let d = a * var[i] + 1.0 - a;
                        -(x[i] - a.sqrt() * mean[i]).powi(2) / (2.0 * d)
                    })
                    .sum()
            };
            let xt = Tensor::from_vec(
                x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                (1, 1, 2, 2),
                &dev,
            )
            .unwrap();
            let tt = Tensor::new(&[t as f32], &dev).unwrap();
            let eps = prior.forward(&xt, &tt).unwrap();
            let score: Vec<f32> = score_from_eps(&eps, a)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let h = 1e-5;
            for i in 0..4 {
                let (mut xp, mut xm) = (x, x);
                xp[i] += h;
                xm[i] -= h;
                let fd = (logp(&xp) - logp(&xm)) / (2.0 * h);
                assert!(
                    (score[i] as f64 - fd).abs() < 1e-4 * (1.0 + fd.abs()),
                    "t {t} i {i}: {} vs {fd}",
                    score[i]
                );
            }
        }
    }

    #[test]
    fn other_prediction_types_are_consistent() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[[0.3f32, -0.5], [1.1, -0.8]]]], &dev).unwrap();
        let t = Tensor::new(&[420.0f32], &dev).unwrap();
        let mk = |pt: &str| {
            let s = Schedule::from_json_str(&format!(r#"{{"prediction_type": "{pt}"}}"#)).unwrap();
            GaussianPrior::isotropic(0.2, 0.3, [1, 2, 2], &s, &dev).unwrap()
        };
        let s = Schedule::ddpm_default();
        let a = s.alpha_bar(420).unwrap();
        let eps = mk("epsilon").forward(&x, &t).unwrap();
        let x0 = mk("sample").forward(&x, &t).unwrap();
        let v = mk("v_prediction").forward(&x, &t).unwrap();
        for (name, out) in [("sample", &x0), ("v_prediction", &v)] {
            let p = mk(name);
            let pr = p.schedule().predict(out, &x, a).unwrap();
            let d = (pr.eps - &eps)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{name}: {d}");
        }
        assert!(GaussianPrior::new(vec![0.0], vec![-1.0], [1, 1, 1], &s, &dev).is_err());
        assert!(GaussianPrior::new(vec![0.0; 2], vec![1.0], [1, 1, 2], &s, &dev).is_err());
    }
}
