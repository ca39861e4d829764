//! Noise models y ~ p(y | z), z = A(x) the noise-free measurement (deepinv's `physics/noise`
//! split): an [`Operator`](crate::Operator) supplies A (and Aᵀ or a vector–Jacobian product), a
//! [`NoiseModel`] supplies the randomness and the likelihood in measurement space, and the
//! operator's likelihood gradient is Jᵀ∇_z L (see [`crate::operator::composed_log_likelihood_and_grad`]).
//!
//! One file per model: [`gaussian`] (additive white Gaussian noise, with a likelihood σ that may
//! differ from the simulation σ) and [`logistic_sign`] (one-bit quantisation with logistic
//! dither), [`poisson`] (photon counting: low-light Poisson and Poisson–Gaussian, and CT
//! transmission). A new model is one new file implementing [`NoiseModel`] plus its
//! `pub mod`/`pub use` lines here; no operator changes.

pub mod gaussian;
pub mod logistic_sign;
pub mod poisson;

pub use gaussian::Gaussian;
pub use logistic_sign::LogisticSign;
pub use poisson::{Poisson, Transmission};

use candle_core::Tensor;
use rand::rngs::StdRng;

use crate::error::Result;

/// L(z; y) and ∇_z L in factored form: ∇_z L = `direction / divisor`.
///
/// The factoring lets the operator apply its (linear) Jᵀ to `direction` first and divide
/// afterwards, which is the floating-point operation order of Aᵀ(y − Ax)/σ² (so results are
/// bit-identical to the fused likelihoods this split replaced). Models without a natural
/// common divisor use 1.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementGrad {
    /// L(z; y).
    pub value: f64,
    /// ∇_z L · divisor, one entry per measurement entry.
    pub direction: Vec<f64>,
    /// The common divisor (> 0) of the gradient.
    pub divisor: f64,
}

impl MeasurementGrad {
    /// ∇_z L itself (`direction / divisor`).
    pub fn gradient(&self) -> Vec<f64> {
        self.direction.iter().map(|v| v / self.divisor).collect()
    }
}

/// A measurement noise model p(y | z) on flat row-major `f64` buffers (one measurement).
pub trait NoiseModel: Send + Sync + std::fmt::Debug {
    /// Short name (`gaussian`, `logistic-sign`).
    fn name(&self) -> &'static str;
    /// σ of the additive Gaussian noise used by [`NoiseModel::simulate`]; 0 for models without
    /// additive noise (their randomness is elsewhere, e.g. the logistic dither).
    fn noise_sigma(&self) -> f64;
    /// The likelihood's temperature m, with L = −f/(2m²): the σ the Gaussian likelihood uses,
    /// τ for the logistic sign model. The PCS step-size rule and the DPS misfit use it.
    fn temperature(&self) -> f64;
    /// `Some` for white Gaussian noise (L = −‖y − z‖²/(2σ_L²), σ_L = [`NoiseModel::temperature`]):
    /// the PCS target of a linear operator is then Gaussian and can be sampled exactly.
    fn as_gaussian(&self) -> Option<&Gaussian> {
        None
    }
    /// Whether this is white Gaussian noise (see [`NoiseModel::as_gaussian`]).
    fn is_gaussian(&self) -> bool {
        self.as_gaussian().is_some()
    }
    /// A simulated measurement y ~ p(y | z), all randomness from `rng`.
    fn simulate(&self, z: Vec<f64>, rng: &mut StdRng) -> Result<Vec<f64>>;
    /// Why the likelihood cannot be evaluated, if it cannot (e.g. a Gaussian likelihood with
    /// σ_L = 0). Operators call it first and report the message with their task name.
    fn check_likelihood(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    /// L(z; y) and ∇_z L (see [`MeasurementGrad`]).
    fn log_likelihood_and_grad(&self, z: &[f64], y: &[f64]) -> Result<MeasurementGrad>;
    /// L(z; y).
    fn log_likelihood(&self, z: &[f64], y: &[f64]) -> Result<f64> {
        Ok(self.log_likelihood_and_grad(z, y)?.value)
    }
    /// Why `y` is not a possible measurement of this model, if it is not (e.g. the sign
    /// model's values must be ±1). Called after the shape and finiteness checks.
    fn check_measurement(&self, _y: &[f64]) -> std::result::Result<(), String> {
        Ok(())
    }
    /// An estimate of the noise-free z from a measurement y, in the units of z, for classical
    /// baselines that invert a linear A: y itself (the default) for models whose y is z plus
    /// zero-mean noise; the post-log sinogram for [`Transmission`] counts.
    fn linearized(&self, y: &[f64]) -> Vec<f64> {
        y.to_vec()
    }
    /// Whether [`NoiseModel::device_log_likelihood_and_grad`] is implemented.
    fn has_device_likelihood(&self) -> bool {
        false
    }
    /// L(z_b; y_b) as a `(B,)` tensor and ∇_z L shaped like `z`, in tensor ops on `z`'s device
    /// (see [`crate::device`]); `y` has batch 1 (shared) or B. `None`: no device form (the
    /// caller falls back to the host path).
    fn device_log_likelihood_and_grad(
        &self,
        _z: &Tensor,
        _y: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        None
    }
}
