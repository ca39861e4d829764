//! Compressed sensing: y = A vec(x) + σz with a dense m × n matrix, n = C·H·W.
//!
//! `cs` draws A with i.i.d. N(0, 1/m) entries from the operator seed, m = round(ratio·n).
//! The matrix is stored densely, so the product m·n is capped at [`MAX_ENTRIES`] (use small
//! images or ratios). Baseline: the least-norm solution Aᵀ(AAᵀ)⁻¹y by conjugate gradients (not
//! clipped, so that A x̂ = y can be checked).

use std::sync::{Arc, OnceLock};

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{InverseError, Result};
use crate::linalg::conjugate_gradient;
use crate::noise::NoiseModel;
use crate::operator::Operator;
use crate::svd::{DenseSvd, OperatorSvd};
use crate::task::{
    OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA,
};

/// `cs`.
pub const ENTRIES: &[TaskEntry] = &[TaskEntry {
    names: &["cs"],
    summary: "dense seeded Gaussian m × n matrix, entries N(0, 1/m), m = round(ratio·n)",
    own_options: &[OptionSpec {
        name: "cs-ratio",
        help: "measurement ratio m/n.",
        kind: OptionType::Float,
        default: OptionDefault::Float(0.25),
    }],
    default_noise_sigma: DEFAULT_NOISE_SIGMA,
    build: build_cs,
}];

fn build_cs(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    Ok(Box::new(CompressedSensing::gaussian(
        shape,
        o.float("cs-ratio")?,
        o.operator_seed()?,
        o.intensity_noise()?,
    )?))
}

/// Largest m·n accepted (64 Mi entries, 512 MiB of f64).
pub const MAX_ENTRIES: usize = 1 << 26;

/// Largest image length C·H·W whose `cs` matrix gets a dense SVD (an O(n³) computation on
/// first use: about a second at 32 × 32).
pub const MAX_SVD_LEN: usize = 1024;

/// Dense linear measurements (see the module docs).
#[derive(Debug, Clone)]
pub struct CompressedSensing {
    shape: [usize; 3],
    m: usize,
    a: Vec<f64>,
    noise: Arc<dyn NoiseModel>,
    svd: OnceLock<Option<DenseSvd>>,
}

impl CompressedSensing {
    /// `cs` at `ratio` ∈ (0, 1] with a Gaussian matrix drawn from `seed`.
    pub fn gaussian(
        shape: [usize; 3],
        ratio: f64,
        seed: u64,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        super::check_shape("cs", shape)?;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(InverseError::InvalidOption {
                task: "cs".into(),
                msg: format!("ratio must be in (0, 1], got {ratio}"),
            });
        }
        let n: usize = shape.iter().product();
        let m = ((ratio * n as f64).round() as usize).max(1);
        if m.saturating_mul(n) > MAX_ENTRIES {
            return Err(InverseError::InvalidOption {
                task: "cs".into(),
                msg: format!("a dense {m}×{n} matrix exceeds {MAX_ENTRIES} entries; use a smaller image or ratio"),
            });
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let s = 1.0 / (m as f64).sqrt();
        let a = (0..m * n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                s * z
            })
            .collect();
        Self::from_matrix(shape, m, a, noise)
    }

    /// From a given row-major m × (C·H·W) matrix.
    pub fn from_matrix(
        shape: [usize; 3],
        m: usize,
        a: Vec<f64>,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        super::check_shape("cs", shape)?;
        let n: usize = shape.iter().product();
        if m == 0 || a.len() != m * n {
            return Err(InverseError::InvalidOption {
                task: "cs".into(),
                msg: format!(
                    "matrix must have m ≥ 1 rows of {n} entries; got {} values for m = {m}",
                    a.len()
                ),
            });
        }
        if a.iter().any(|v| !v.is_finite()) {
            return Err(InverseError::InvalidOption {
                task: "cs".into(),
                msg: "matrix has non-finite entries".into(),
            });
        }
        Ok(Self {
            shape,
            m,
            a,
            noise,
            svd: OnceLock::new(),
        })
    }

    /// Number of measurements m.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// The row-major m × n matrix.
    pub fn matrix(&self) -> &[f64] {
        &self.a
    }
}

impl Operator for CompressedSensing {
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        let n = self.a.len() / self.m;
        Ok(Some(Box::new(DenseMap {
            dense: crate::device::Dense::new(&self.a, self.m, n, device, dtype)?,
            shape: self.shape,
        })))
    }
    fn name(&self) -> &str {
        "cs"
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        vec![self.m]
    }
    fn noise(&self) -> &dyn NoiseModel {
        self.noise.as_ref()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        let n = x.len();
        Ok(self
            .a
            .chunks_exact(n)
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect())
    }
    /// A dense SVD, computed on first use, for images of at most [`MAX_SVD_LEN`] values
    /// (`None` above that, or if the dense SVD fails).
    fn svd(&self) -> Option<&dyn OperatorSvd> {
        let n = self.a.len() / self.m;
        if n > MAX_SVD_LEN {
            return None;
        }
        self.svd
            .get_or_init(|| DenseSvd::new(&self.a, self.m, n).ok())
            .as_ref()
            .map(|s| s as &dyn OperatorSvd)
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let n = self.a.len() / self.m;
        let mut out = vec![0.0; n];
        for (row, &yi) in self.a.chunks_exact(n).zip(y) {
            for (o, a) in out.iter_mut().zip(row) {
                *o += a * yi;
            }
        }
        Ok(out)
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let v = conjugate_gradient(
            |p| self.forward_host(&self.adjoint_host(p)?),
            y,
            1e-10,
            2 * self.m + 100,
        )?;
        self.adjoint_host(&v)
    }
}

/// The Gaussian matrix on flattened images as a device map.
struct DenseMap {
    dense: crate::device::Dense,
    shape: [usize; 3],
}

impl crate::device::DeviceMap for DenseMap {
    fn forward(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        self.dense.apply(&x.flatten_from(1)?)
    }
    fn vjp(
        &self,
        _x: &candle_core::Tensor,
        v: &candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        let [c, h, w] = self.shape;
        let b = v.dim(0)?;
        Ok(self.dense.adjoint(v)?.reshape((b, c, h, w))?)
    }
}
