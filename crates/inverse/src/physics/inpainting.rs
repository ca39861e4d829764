//! Inpainting: A = M ⊙ · with a binary mask M (1 = observed); with Gaussian noise
//! y = M ⊙ (x + σz).
//!
//! The measurement has the image's shape, with zeros at the holes; the noise model only sees the
//! observed entries (the likelihood ignores whatever a measurement holds at the holes), so with
//! Gaussian noise L = −Σ M (y − x)²/(2σ²). Baseline: observed pixels kept, holes filled per
//! channel by push-pull interpolation (see `fill`).

use std::sync::{Arc, OnceLock};

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{InverseError, Result};
use crate::fill::fill_holes;
use crate::host::to_host;
use crate::noise::NoiseModel;
use crate::operator::{clip_unit, require_likelihood_sigma, Operator, ReferenceTask};
use crate::svd::{DiagonalSvd, OperatorSvd};
use crate::task::{
    OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA,
};

/// `inpaint-box`, `inpaint-random`, `inpaint-mask`.
pub const ENTRIES: &[TaskEntry] = &[
    TaskEntry {
        names: &["inpaint-box"],
        summary: "centred square hole",
        own_options: &[OptionSpec {
            name: "box-size",
            help: "side of the centred square hole (default: half the image side).",
            kind: OptionType::Integer,
            default: OptionDefault::Derived,
        }],
        default_noise_sigma: DEFAULT_NOISE_SIGMA,
        build: build_box,
    },
    TaskEntry {
        names: &["inpaint-random"],
        summary: "keeps round(p·H·W) random pixels, shared across channels, seeded",
        own_options: &[OptionSpec {
            name: "keep-fraction",
            help: "fraction of pixels kept.",
            kind: OptionType::Float,
            default: OptionDefault::Float(0.3),
        }],
        default_noise_sigma: DEFAULT_NOISE_SIGMA,
        build: build_random,
    },
    TaskEntry {
        names: &["inpaint-mask"],
        summary: "a given mask (≥ 0.5 = observed)",
        own_options: &[OptionSpec {
            name: "mask",
            help: "mask image (PNG, same size as the images; white = observed).",
            kind: OptionType::ImageFile,
            default: OptionDefault::Required,
        }],
        default_noise_sigma: DEFAULT_NOISE_SIGMA,
        build: build_mask,
    },
];

fn build_box(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let [_, h, w] = shape;
    let b = o.size_opt("box-size")?.unwrap_or(h.min(w) / 2);
    Ok(Box::new(Inpainting::centred_box(
        shape,
        b,
        b,
        o.intensity_noise()?,
    )?))
}

fn build_random(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    Ok(Box::new(Inpainting::random(
        shape,
        o.float("keep-fraction")?,
        o.operator_seed()?,
        o.intensity_noise()?,
    )?))
}

fn build_mask(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let task = o.task();
    let m: &Tensor = o.tensor("mask")?;
    let [_, h, w] = shape;
    let d = m.dims();
    let spatial_ok = d.len() >= 2 && d[d.len() - 2] == h && d[d.len() - 1] == w;
    let lead: usize = d[..d.len().saturating_sub(2)].iter().product();
    if !spatial_ok || !(lead == 1 || lead == shape[0]) || d.len() > 4 {
        return Err(InverseError::InvalidOption {
            task: task.into(),
            msg: format!("mask shape {d:?} does not fit images of shape {shape:?}; expected (H, W), (1, H, W) or (C, H, W)"),
        });
    }
    Ok(Box::new(Inpainting::from_mask(
        task,
        shape,
        &to_host(m)?,
        o.intensity_noise()?,
    )?))
}

/// Inpainting with a per-pixel mask of length C·H·W (channel masks may differ).
#[derive(Debug, Clone)]
pub struct Inpainting {
    name: String,
    shape: [usize; 3],
    mask: Vec<f64>,
    noise: Arc<dyn NoiseModel>,
    svd: OnceLock<DiagonalSvd>,
}

impl Inpainting {
    /// From a mask of `H·W` values (shared across channels) or `C·H·W` values; entries ≥ 0.5
    /// count as observed.
    pub fn from_mask(
        name: &str,
        shape: [usize; 3],
        mask: &[f64],
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        super::check_shape(name, shape)?;
        let [c, h, w] = shape;
        if let Some(v) = mask.iter().find(|v| !v.is_finite()) {
            return Err(InverseError::InvalidOption {
                task: name.into(),
                msg: format!("mask has a non-finite value {v}"),
            });
        }
        let bin: Vec<f64> = mask
            .iter()
            .map(|&v| if v >= 0.5 { 1.0 } else { 0.0 })
            .collect();
        let full = if bin.len() == h * w {
            let mut f = Vec::with_capacity(c * h * w);
            for _ in 0..c {
                f.extend_from_slice(&bin);
            }
            f
        } else if bin.len() == c * h * w {
            bin
        } else {
            return Err(InverseError::InvalidOption {
                task: name.into(),
                msg: format!(
                    "mask has {} values; expected H·W = {} or C·H·W = {}",
                    mask.len(),
                    h * w,
                    c * h * w
                ),
            });
        };
        Ok(Self {
            name: name.into(),
            shape,
            mask: full,
            noise,
            svd: OnceLock::new(),
        })
    }

    /// `inpaint-box`: a centred `box_h × box_w` hole.
    pub fn centred_box(
        shape: [usize; 3],
        box_h: usize,
        box_w: usize,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        let [_, h, w] = shape;
        if box_h == 0 || box_w == 0 || box_h > h || box_w > w {
            return Err(InverseError::InvalidOption {
                task: "inpaint-box".into(),
                msg: format!("box {box_h}×{box_w} must be non-empty and fit the {h}×{w} image"),
            });
        }
        let (t, l) = ((h - box_h) / 2, (w - box_w) / 2);
        let mut m = vec![1.0; h * w];
        for i in t..t + box_h {
            for j in l..l + box_w {
                m[i * w + j] = 0.0;
            }
        }
        Self::from_mask("inpaint-box", shape, &m, noise)
    }

    /// `inpaint-random`: keeps exactly round(p·H·W) pixels (shared across channels), chosen by a
    /// shuffle seeded with `seed`.
    pub fn random(
        shape: [usize; 3],
        keep_fraction: f64,
        seed: u64,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        if !(keep_fraction > 0.0 && keep_fraction <= 1.0) {
            return Err(InverseError::InvalidOption {
                task: "inpaint-random".into(),
                msg: format!("keep fraction must be in (0, 1], got {keep_fraction}"),
            });
        }
        let [_, h, w] = shape;
        let n = h * w;
        let keep = ((keep_fraction * n as f64).round() as usize).min(n);
        let mut idx: Vec<usize> = (0..n).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        idx.shuffle(&mut rng);
        let mut m = vec![0.0; n];
        for &i in &idx[..keep] {
            m[i] = 1.0;
        }
        Self::from_mask("inpaint-random", shape, &m, noise)
    }

    /// The binary mask, `C·H·W` values.
    pub fn mask(&self) -> &[f64] {
        &self.mask
    }

    fn observed(&self, v: &[f64]) -> Vec<f64> {
        v.iter()
            .zip(&self.mask)
            .filter(|(_, m)| **m > 0.5)
            .map(|(a, _)| *a)
            .collect()
    }

    /// `v` (one value per observed entry) laid out on the image grid, zeros at the holes.
    fn scatter(&self, v: &[f64]) -> Vec<f64> {
        let mut it = v.iter();
        self.mask
            .iter()
            .map(|m| {
                if *m > 0.5 {
                    *it.next().unwrap_or(&0.0)
                } else {
                    0.0
                }
            })
            .collect()
    }
}

impl Operator for Inpainting {
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        Ok(Some(Box::new(crate::device::Diagonal::new(
            Some(&self.mask),
            self.shape,
            device,
            dtype,
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
        Some(ReferenceTask::Inpainting)
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        Ok(x.iter().zip(&self.mask).map(|(a, m)| a * m).collect())
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        self.forward_host(y)
    }
    /// A = diag(mask): V = U = I, s = the 0/1 mask.
    fn svd(&self) -> Option<&dyn OperatorSvd> {
        Some(self.svd.get_or_init(|| DiagonalSvd::new(&self.mask)))
    }
    /// The noise model applied to the observed entries, zeros at the holes. Gaussian noise keeps
    /// the pre-split computation m·(x + σz) with a normal drawn for every pixel, holes included,
    /// so that simulated measurements stay bit-identical (same RNG stream, same signed zeros).
    fn simulate_host(&self, x: &[f64], rng: &mut StdRng) -> Result<Vec<f64>> {
        let Some(g) = self.noise.as_gaussian() else {
            let z = self.noise.simulate(self.observed(x), rng)?;
            return Ok(self.scatter(&z));
        };
        let s = g.sigma();
        Ok(x.iter()
            .zip(&self.mask)
            .map(|(a, m)| {
                let z: f64 = if s > 0.0 {
                    StandardNormal.sample(rng)
                } else {
                    0.0
                };
                m * (a + s * z)
            })
            .collect())
    }
    /// The noise model's likelihood of the observed entries. Gaussian noise keeps the pre-split
    /// loop r = m·(y − x), L = −Σr²/(2σ²), ∇L = r/σ² (bit-identical results; a generic
    /// residual y − m·x would differ where y is nonzero at holes).
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)> {
        let Some(gauss) = self.noise.as_gaussian() else {
            self.noise
                .check_likelihood()
                .map_err(|msg| InverseError::InvalidOption {
                    task: self.name.clone(),
                    msg,
                })?;
            let lg = self
                .noise
                .log_likelihood_and_grad(&self.observed(x), &self.observed(y))?;
            let mut g = self.scatter(&lg.direction);
            if lg.divisor != 1.0 {
                g.iter_mut().for_each(|v| *v /= lg.divisor);
            }
            return Ok((lg.value, g));
        };
        let s = require_likelihood_sigma(&self.name, gauss)?;
        let mut l = 0.0;
        let mut g = vec![0.0; x.len()];
        for i in 0..x.len() {
            let r = self.mask[i] * (y[i] - x[i]);
            l -= r * r;
            g[i] = r / (s * s);
        }
        Ok((l / (2.0 * s * s), g))
    }
    /// The noise model checks the observed entries only (holes hold zeros).
    fn check_measurement_values(&self, y: &[f64]) -> Result<()> {
        self.noise
            .check_measurement(&self.observed(y))
            .map_err(|msg| InverseError::Measurement {
                task: self.name.clone(),
                msg,
            })
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = self.shape;
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            let r = ch * h * w..(ch + 1) * h * w;
            let known: Vec<bool> = self.mask[r.clone()].iter().map(|&m| m > 0.5).collect();
            out.extend(fill_holes(&y[r], &known, h, w));
        }
        clip_unit(&mut out);
        Ok(out)
    }
    fn solve_shifted_gram_host(
        &self,
        rhs: &[f64],
        alpha: f64,
        beta: f64,
    ) -> Option<Result<Vec<f64>>> {
        Some(Ok(rhs
            .iter()
            .zip(&self.mask)
            .map(|(r, m)| r / (alpha * m + beta))
            .collect()))
    }
}
