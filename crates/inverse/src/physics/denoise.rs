//! `denoise`: A = I, y = x + σz.

use crate::error::Result;
use crate::operator::{clip_unit, gaussian_linear_ll_grad, Operator};

/// Identity forward map with Gaussian noise. Baseline: y clipped to [-1, 1].
#[derive(Debug, Clone)]
pub struct Denoise {
    shape: [usize; 3],
    noise_sigma: f64,
    likelihood_sigma: f64,
}

impl Denoise {
    /// `likelihood_sigma` is the σ of L (usually `noise_sigma`).
    pub fn new(shape: [usize; 3], noise_sigma: f64, likelihood_sigma: f64) -> Result<Self> {
        super::check_shape("denoise", shape)?;
        super::check_sigma("denoise", "noise sigma", noise_sigma)?;
        super::check_sigma("denoise", "likelihood sigma", likelihood_sigma)?;
        Ok(Self {
            shape,
            noise_sigma,
            likelihood_sigma,
        })
    }
}

impl Operator for Denoise {
    fn name(&self) -> &str {
        "denoise"
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }
    fn noise_sigma(&self) -> f64 {
        self.noise_sigma
    }
    fn temperature(&self) -> f64 {
        self.likelihood_sigma
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn is_linear_gaussian(&self) -> bool {
        true
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        Ok(x.to_vec())
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        Ok(y.to_vec())
    }
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)> {
        gaussian_linear_ll_grad(self, self.likelihood_sigma, x, y)
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let mut v = y.to_vec();
        clip_unit(&mut v);
        Ok(v)
    }
    fn solve_shifted_gram_host(
        &self,
        rhs: &[f64],
        alpha: f64,
        beta: f64,
    ) -> Option<Result<Vec<f64>>> {
        Some(Ok(rhs.iter().map(|r| r / (alpha + beta)).collect()))
    }
}
