//! One-bit quantisation with logistic dither: A = I, y ∈ {±1},
//! P(y = +1 | x) = sigmoid(x/τ) independently per entry (τ default 0.4), no additive noise.
//!
//! L(x; y) = −Σ log(1 + exp(−y x/τ)), ∇ₓL = (y/τ) sigmoid(−y x/τ). The temperature reported to
//! the PCS step-size rule is τ. Baseline: the per-pixel maximum-likelihood estimate clipped to
//! the image range, which for a single ±1 observation is y itself.

use rand::rngs::StdRng;
use rand::Rng;

use crate::error::{InverseError, Result};
use crate::operator::Operator;

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// log(1 + eᵗ), stable.
fn softplus(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// `one-bit` (see the module docs).
#[derive(Debug, Clone)]
pub struct OneBit {
    shape: [usize; 3],
    tau: f64,
}

impl OneBit {
    /// `noise_sigma` must be 0: the logistic dither is the only randomness of this model.
    pub fn new(shape: [usize; 3], tau: f64, noise_sigma: f64) -> Result<Self> {
        super::check_shape("one-bit", shape)?;
        super::check_sigma("one-bit", "noise sigma", noise_sigma)?;
        if noise_sigma != 0.0 {
            return Err(InverseError::InvalidOption {
                task: "one-bit".into(),
                msg: format!("one-bit has no additive noise (its randomness is the logistic dither, set by tau); noise sigma must be 0, got {noise_sigma}"),
            });
        }
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(InverseError::InvalidOption {
                task: "one-bit".into(),
                msg: format!("tau must be > 0, got {tau}"),
            });
        }
        Ok(Self { shape, tau })
    }

    pub fn tau(&self) -> f64 {
        self.tau
    }
}

impl Operator for OneBit {
    fn name(&self) -> &str {
        "one-bit"
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }
    fn noise_sigma(&self) -> f64 {
        0.0
    }
    fn temperature(&self) -> f64 {
        self.tau
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn is_linear_gaussian(&self) -> bool {
        false
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        Ok(x.to_vec())
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        Ok(y.to_vec())
    }
    fn simulate_host(&self, x: &[f64], rng: &mut StdRng) -> Result<Vec<f64>> {
        Ok(x.iter()
            .map(|&v| {
                let u: f64 = rng.random();
                if u < sigmoid(v / self.tau) {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect())
    }
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)> {
        let mut l = 0.0;
        let g = x
            .iter()
            .zip(y)
            .map(|(&xv, &yv)| {
                let t = yv * xv / self.tau;
                l -= softplus(-t);
                yv / self.tau * sigmoid(-t)
            })
            .collect();
        Ok((l, g))
    }
    fn check_measurement_values(&self, y: &[f64]) -> Result<()> {
        match y.iter().find(|&&v| v != 1.0 && v != -1.0) {
            Some(v) => Err(InverseError::Measurement {
                task: "one-bit".into(),
                msg: format!("values must be ±1, found {v}"),
            }),
            None => Ok(()),
        }
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        Ok(y.iter().map(|v| v.clamp(-1.0, 1.0)).collect())
    }
}
