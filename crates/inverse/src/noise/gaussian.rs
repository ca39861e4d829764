//! Additive white Gaussian noise: y = z + σ n, n ~ N(0, I), with the likelihood
//! L(z; y) = −‖y − z‖²/(2σ_L²), ∇_z L = (y − z)/σ_L².
//!
//! The likelihood σ_L may differ from the simulation σ (the DPnP reference uses σ_L = 0.15 for
//! data simulated with σ = 0.2); it must be positive for L to exist, while σ = 0 (noise-free
//! simulation) is allowed.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::{MeasurementGrad, NoiseModel};
use crate::error::{InverseError, Result};
use crate::linalg::norm2;

/// Additive white Gaussian noise (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    sigma: f64,
    likelihood_sigma: f64,
}

fn check(what: &str, s: f64) -> Result<()> {
    if s.is_finite() && s >= 0.0 {
        Ok(())
    } else {
        Err(InverseError::InvalidArgument(format!(
            "{what} must be a finite number ≥ 0, got {s}"
        )))
    }
}

impl Gaussian {
    /// Simulation σ and likelihood σ_L, both finite and ≥ 0.
    pub fn new(sigma: f64, likelihood_sigma: f64) -> Result<Self> {
        check("noise sigma", sigma)?;
        check("likelihood sigma", likelihood_sigma)?;
        Ok(Self {
            sigma,
            likelihood_sigma,
        })
    }

    /// σ_L = σ.
    pub fn with_sigma(sigma: f64) -> Result<Self> {
        Self::new(sigma, sigma)
    }

    /// The simulation σ.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The likelihood σ_L.
    pub fn likelihood_sigma(&self) -> f64 {
        self.likelihood_sigma
    }

    /// σ_L, or the reason the likelihood does not exist (σ_L = 0).
    pub fn positive_likelihood_sigma(&self) -> std::result::Result<f64, String> {
        let s = self.likelihood_sigma;
        if s > 0.0 && s.is_finite() {
            Ok(s)
        } else {
            Err(format!(
                "the Gaussian likelihood needs a positive σ (got {s}); simulate with a positive noise sigma or set a positive likelihood sigma"
            ))
        }
    }
}

impl NoiseModel for Gaussian {
    fn name(&self) -> &'static str {
        "gaussian"
    }
    fn noise_sigma(&self) -> f64 {
        self.sigma
    }
    fn temperature(&self) -> f64 {
        self.likelihood_sigma
    }
    fn as_gaussian(&self) -> Option<&Gaussian> {
        Some(self)
    }
    fn simulate(&self, mut z: Vec<f64>, rng: &mut StdRng) -> Result<Vec<f64>> {
        let s = self.sigma;
        if s > 0.0 {
            for v in z.iter_mut() {
                let n: f64 = StandardNormal.sample(rng);
                *v += s * n;
            }
        }
        Ok(z)
    }
    fn check_likelihood(&self) -> std::result::Result<(), String> {
        self.positive_likelihood_sigma().map(|_| ())
    }
    fn log_likelihood_and_grad(&self, z: &[f64], y: &[f64]) -> Result<MeasurementGrad> {
        let s = self
            .positive_likelihood_sigma()
            .map_err(InverseError::InvalidArgument)?;
        let r: Vec<f64> = y.iter().zip(z).map(|(a, b)| a - b).collect();
        Ok(MeasurementGrad {
            value: -norm2(&r) / (2.0 * s * s),
            direction: r,
            divisor: s * s,
        })
    }
    fn has_device_likelihood(&self) -> bool {
        true
    }
    fn device_log_likelihood_and_grad(
        &self,
        z: &Tensor,
        y: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        let run = || -> Result<(Tensor, Tensor)> {
            let s = self
                .positive_likelihood_sigma()
                .map_err(InverseError::InvalidArgument)?;
            let r = y.broadcast_sub(z)?;
            let l = (crate::device::batch_sum(&r.sqr()?)? * (-1.0 / (2.0 * s * s)))?;
            Ok((l, (r / (s * s))?))
        };
        Some(run())
    }
}
