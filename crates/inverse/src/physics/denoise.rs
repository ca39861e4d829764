//! The identity forward map A = I: `denoise` (with Gaussian noise, y = x + σz) and, with the
//! logistic sign noise model, `one-bit` (see `one_bit.rs`).
//!
//! Baseline: y clipped to [-1, 1] (for `one-bit` the per-pixel maximum-likelihood estimate
//! clipped to the image range, which for a single ±1 observation is y itself).

use std::sync::{Arc, OnceLock};

use crate::error::Result;
use crate::noise::NoiseModel;
use crate::operator::{clip_unit, Operator, ReferenceTask};
use crate::svd::{DiagonalSvd, OperatorSvd};
use crate::task::{TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA};

/// `denoise`.
pub const ENTRIES: &[TaskEntry] = &[TaskEntry {
    names: &["denoise"],
    summary: "identity",
    own_options: &[],
    default_noise_sigma: DEFAULT_NOISE_SIGMA,
    build: build_denoise,
}];

fn build_denoise(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    Ok(Box::new(Identity::new(
        o.task(),
        shape,
        o.intensity_noise()?,
        None,
    )?))
}

/// A = I with any noise model (see the module docs).
#[derive(Debug, Clone)]
pub struct Identity {
    name: String,
    shape: [usize; 3],
    noise: Arc<dyn NoiseModel>,
    reference: Option<ReferenceTask>,
    svd: OnceLock<DiagonalSvd>,
}

impl Identity {
    /// The identity on images of `shape` under the task name `name`, with the reference task
    /// it stands for (if any).
    pub fn new(
        name: &str,
        shape: [usize; 3],
        noise: Arc<dyn NoiseModel>,
        reference: Option<ReferenceTask>,
    ) -> Result<Self> {
        super::check_shape(name, shape)?;
        Ok(Self {
            name: name.to_string(),
            shape,
            noise,
            reference,
            svd: OnceLock::new(),
        })
    }

    /// `denoise` on images of `shape`.
    pub fn denoise(shape: [usize; 3], noise: Arc<dyn NoiseModel>) -> Result<Self> {
        Self::new("denoise", shape, noise, None)
    }
}

impl Operator for Identity {
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        Ok(Some(Box::new(crate::device::Diagonal::new(
            None, self.shape, device, dtype,
        )?)))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }
    fn noise(&self) -> &dyn NoiseModel {
        self.noise.as_ref()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn reference_task(&self) -> Option<ReferenceTask> {
        self.reference
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        Ok(x.to_vec())
    }
    /// U = S = V = I.
    fn svd(&self) -> Option<&dyn OperatorSvd> {
        Some(
            self.svd
                .get_or_init(|| DiagonalSvd::new(&vec![1.0; self.image_len()])),
        )
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        Ok(y.to_vec())
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
