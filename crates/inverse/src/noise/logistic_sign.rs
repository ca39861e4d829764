//! One-bit quantisation with logistic dither: y ∈ {±1} with P(y = +1 | z) = sigmoid(z/τ)
//! independently per entry, no additive noise.
//!
//! L(z; y) = −Σ log(1 + exp(−y z/τ)), ∇_z L = (y/τ) sigmoid(−y z/τ); the temperature reported
//! to the PCS step-size rule is τ. With the identity operator this is the `one-bit` task.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::Rng;

use super::{MeasurementGrad, NoiseModel};
use crate::error::{InverseError, Result};

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

/// The logistic-dither sign model (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticSign {
    tau: f64,
}

impl LogisticSign {
    /// Dither temperature τ > 0.
    pub fn new(tau: f64) -> Result<Self> {
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(InverseError::InvalidArgument(format!(
                "tau must be > 0, got {tau}"
            )));
        }
        Ok(Self { tau })
    }

    pub fn tau(&self) -> f64 {
        self.tau
    }
}

impl NoiseModel for LogisticSign {
    fn name(&self) -> &'static str {
        "logistic-sign"
    }
    fn noise_sigma(&self) -> f64 {
        0.0
    }
    fn temperature(&self) -> f64 {
        self.tau
    }
    fn simulate(&self, z: Vec<f64>, rng: &mut StdRng) -> Result<Vec<f64>> {
        Ok(z.iter()
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
    fn log_likelihood_and_grad(&self, z: &[f64], y: &[f64]) -> Result<MeasurementGrad> {
        let mut l = 0.0;
        let direction = z
            .iter()
            .zip(y)
            .map(|(&zv, &yv)| {
                let t = yv * zv / self.tau;
                l -= softplus(-t);
                yv / self.tau * sigmoid(-t)
            })
            .collect();
        Ok(MeasurementGrad {
            value: l,
            direction,
            divisor: 1.0,
        })
    }
    fn has_device_likelihood(&self) -> bool {
        true
    }
    /// softplus(u) = max(u, 0) + ln(1 + e^{−|u|}) and sigmoid(−t) = e^{−softplus(t)}, both
    /// stable in f32.
    fn device_log_likelihood_and_grad(
        &self,
        z: &Tensor,
        y: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        let run = || -> Result<(Tensor, Tensor)> {
            let softplus = |u: &Tensor| -> Result<Tensor> {
                Ok((u.relu()? + (u.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
            };
            let yb = y.broadcast_as(z.shape())?;
            let t = ((&yb * z)? / self.tau)?;
            let l = crate::device::batch_sum(&softplus(&t.neg()?)?)?.neg()?;
            let g = ((yb / self.tau)? * softplus(&t)?.neg()?.exp()?)?;
            Ok((l, g))
        };
        Some(run())
    }
    fn check_measurement(&self, y: &[f64]) -> std::result::Result<(), String> {
        match y.iter().find(|&&v| v != 1.0 && v != -1.0) {
            Some(v) => Err(format!("values must be ±1, found {v}")),
            None => Ok(()),
        }
    }
}
