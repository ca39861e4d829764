//! Inpainting: y = M ⊙ (x + σz) with a binary mask M (1 = observed).
//!
//! The measurement has the image's shape, with zeros at the holes; the likelihood only looks at
//! observed entries, L = −Σ M (y − x)²/(2σ²). Baseline: observed pixels kept, holes filled per
//! channel by push-pull interpolation (see `fill`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{InverseError, Result};
use crate::fill::fill_holes;
use crate::operator::{clip_unit, require_likelihood_sigma, Operator};

/// Inpainting with a per-pixel mask of length C·H·W (channel masks may differ).
#[derive(Debug, Clone)]
pub struct Inpainting {
    name: String,
    shape: [usize; 3],
    mask: Vec<f64>,
    noise_sigma: f64,
    likelihood_sigma: f64,
}

impl Inpainting {
    /// From a mask of `H·W` values (shared across channels) or `C·H·W` values; entries ≥ 0.5
    /// count as observed.
    pub fn from_mask(
        name: &str,
        shape: [usize; 3],
        mask: &[f64],
        noise_sigma: f64,
        likelihood_sigma: f64,
    ) -> Result<Self> {
        super::check_shape(name, shape)?;
        super::check_sigma(name, "noise sigma", noise_sigma)?;
        super::check_sigma(name, "likelihood sigma", likelihood_sigma)?;
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
            noise_sigma,
            likelihood_sigma,
        })
    }

    /// `inpaint-box`: a centred `box_h × box_w` hole.
    pub fn centred_box(
        shape: [usize; 3],
        box_h: usize,
        box_w: usize,
        noise_sigma: f64,
        likelihood_sigma: f64,
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
        Self::from_mask("inpaint-box", shape, &m, noise_sigma, likelihood_sigma)
    }

    /// `inpaint-random`: keeps exactly round(p·H·W) pixels (shared across channels), chosen by a
    /// shuffle seeded with `seed`.
    pub fn random(
        shape: [usize; 3],
        keep_fraction: f64,
        seed: u64,
        noise_sigma: f64,
        likelihood_sigma: f64,
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
        Self::from_mask("inpaint-random", shape, &m, noise_sigma, likelihood_sigma)
    }

    /// The binary mask, `C·H·W` values.
    pub fn mask(&self) -> &[f64] {
        &self.mask
    }
}

impl Operator for Inpainting {
    fn name(&self) -> &str {
        &self.name
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
        Ok(x.iter().zip(&self.mask).map(|(a, m)| a * m).collect())
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        self.forward_host(y)
    }
    fn simulate_host(&self, x: &[f64], rng: &mut StdRng) -> Result<Vec<f64>> {
        let s = self.noise_sigma;
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
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)> {
        let s = require_likelihood_sigma(&self.name, self.likelihood_sigma)?;
        let mut l = 0.0;
        let mut g = vec![0.0; x.len()];
        for i in 0..x.len() {
            let r = self.mask[i] * (y[i] - x[i]);
            l -= r * r;
            g[i] = r / (s * s);
        }
        Ok((l / (2.0 * s * s), g))
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
