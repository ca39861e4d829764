//! Photon-counting noise: [`Poisson`] for low-light imaging (optionally plus Gaussian read
//! noise, Poisson–Gaussian) and [`Transmission`] for X-ray CT, each with its log-likelihood
//! and gradient in z = A(x).
//!
//! **Scales.** Images live in [-1, 1] (black = −1), so the light intensity of a noise-free
//! measurement z (in image units) is u = (z + 1)/2 ∈ [0, 1], and γ (`photons`) is the expected
//! photon count of a white pixel (u = 1).
//!
//! - [`Poisson`] (`--noise poisson --photons γ`): n ~ Poisson(γu) per entry, reported in image
//!   units, y = 2n/γ − 1 (so E[y] = z, and y ≥ −1; n = γ(y + 1)/2 need not be an integer in a
//!   file: the likelihood is the continuous extension). The log-likelihood is written in its
//!   deviance form, L(z; y) = −Σ [λ − n − n ln(λ/n)] with λ = γu (the exact Poisson
//!   log-likelihood up to a term in y alone, 0 at the maximum-likelihood λ = n). Where λ falls
//!   below λ₀ = ½ photon (dark pixels, and A(x) < −1 during sampling, where the true
//!   likelihood is −∞ or undefined) the term λ − n ln λ is continued by its second-order
//!   Taylor expansion at λ₀ with curvature max(n, 1)/λ₀², so L is smooth, concave and finite
//!   everywhere; for n = 0 this moves the minimiser from λ = 0 to λ = ¼ photon, a bias of
//!   1/(2γ) in z.
//! - Poisson–Gaussian (`--noise poisson-gaussian --photons γ --noise-sigma σ`): y = 2n/γ − 1 +
//!   σε. Its exact likelihood is an infinite sum over n; like most of the literature (Foi et al.
//!   2008) this model uses the Gaussian approximation with the signal-dependent variance
//!   v(z) = 4·max(u, u₀)/γ + σ² (u₀ = λ₀/γ): L = −Σ [(y − z)²/(2v) + ½ ln v].
//! - [`Transmission`] (`--task ct --noise transmission --photons I₀ --attenuation μ`): the
//!   object's attenuation per pixel is a = μ(x + 1)/2 (black = none, white = μ per pixel
//!   length); the line integral of a along a ray is ℓ = μ(z + o)/2, o = A(1) the ray's chord
//!   length through the image; counts n ~ Poisson(λ), λ = I₀ e^{−ℓ}. The measurement is the raw
//!   counts y = n. L(z; y) = −Σ [λ − n − n ln(λ/n)], and since ∂λ/∂z = −μλ/2,
//!   ∇_z L = μ(λ − n)/2 per entry (no singularity: λ > 0). The classical baseline (FBP) sees the
//!   post-log sinogram ẑ = 2 ln(I₀/max(n, ½))/μ − o.
//!
//! Each model's [`NoiseModel::temperature`] is the σ of a Gaussian with the same variance at a
//! typical intensity (u = ½ for Poisson, λ = I₀ for transmission), which the PCS step-size rule
//! and DPS's misfit scale use; none of them is Gaussian, so PCS samples them by Langevin
//! (never exactly) and the SVD-based methods decline them.

use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::{MeasurementGrad, NoiseModel};
use crate::error::{InverseError, Result};

/// Below this rate (in photons) the Poisson term is continued quadratically.
pub const RATE_FLOOR: f64 = 0.5;

fn check_positive(what: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(InverseError::InvalidArgument(format!(
            "{what} must be a finite number > 0, got {v}"
        )))
    }
}

/// A Poisson draw of mean `lambda` ≥ 0 (rand_distr's Poisson; 0 for a zero mean).
fn poisson_draw(lambda: f64, rng: &mut StdRng) -> Result<f64> {
    if lambda == 0.0 {
        return Ok(0.0);
    }
    let d = rand_distr::Poisson::new(lambda)
        .map_err(|e| InverseError::Numerical(format!("Poisson mean {lambda}: {e}")))?;
    Ok(d.sample(rng))
}

/// f(λ) = λ − n ln λ − (n − n ln n) (0 at λ = n), continued below [`RATE_FLOOR`] by its
/// second-order expansion with curvature max(n, 1)/λ₀²; returns (f, f′).
fn poisson_term(lambda: f64, n: f64) -> (f64, f64) {
    let base = if n > 0.0 { n - n * n.ln() } else { 0.0 };
    if lambda >= RATE_FLOOR {
        let f = lambda - if n > 0.0 { n * lambda.ln() } else { 0.0 } - base;
        return (f, 1.0 - n / lambda);
    }
    let l0 = RATE_FLOOR;
    let f0 = l0 - if n > 0.0 { n * l0.ln() } else { 0.0 } - base;
    let d0 = 1.0 - n / l0;
    let c = n.max(1.0) / (l0 * l0);
    let d = lambda - l0;
    (f0 + d0 * d + 0.5 * c * d * d, d0 + c * d)
}

/// Photon-counting noise for low-light imaging, optionally with Gaussian read noise (see the
/// module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Poisson {
    photons: f64,
    read_sigma: f64,
}

impl Poisson {
    /// Pure Poisson noise with γ = `photons` expected counts at white.
    pub fn new(photons: f64) -> Result<Self> {
        Self::with_read_noise(photons, 0.0)
    }

    /// Poisson–Gaussian noise: γ = `photons`, read-noise σ = `read_sigma` (image units) ≥ 0.
    pub fn with_read_noise(photons: f64, read_sigma: f64) -> Result<Self> {
        check_positive("the photon count", photons)?;
        if !(read_sigma.is_finite() && read_sigma >= 0.0) {
            return Err(InverseError::InvalidArgument(format!(
                "the read-noise sigma must be a finite number ≥ 0, got {read_sigma}"
            )));
        }
        Ok(Self {
            photons,
            read_sigma,
        })
    }

    /// γ.
    pub fn photons(&self) -> f64 {
        self.photons
    }

    /// The Gaussian read-noise σ (0 for pure Poisson).
    pub fn read_sigma(&self) -> f64 {
        self.read_sigma
    }

    fn variance(&self, z: f64) -> (f64, f64) {
        let g = self.photons;
        let u = (z + 1.0) / 2.0;
        let u0 = RATE_FLOOR / g;
        if u > u0 {
            (4.0 * u / g + self.read_sigma.powi(2), 2.0 / g)
        } else {
            (4.0 * u0 / g + self.read_sigma.powi(2), 0.0)
        }
    }
}

impl NoiseModel for Poisson {
    fn name(&self) -> &'static str {
        if self.read_sigma > 0.0 {
            "poisson-gaussian"
        } else {
            "poisson"
        }
    }
    fn noise_sigma(&self) -> f64 {
        self.read_sigma
    }
    fn temperature(&self) -> f64 {
        (2.0 / self.photons + self.read_sigma.powi(2)).sqrt()
    }
    fn simulate(&self, z: Vec<f64>, rng: &mut StdRng) -> Result<Vec<f64>> {
        let g = self.photons;
        z.into_iter()
            .enumerate()
            .map(|(i, zi)| {
                let u = (zi + 1.0) / 2.0;
                if u < -1e-9 {
                    return Err(InverseError::InvalidArgument(format!(
                        "Poisson noise needs a non-negative intensity (A(x) ≥ −1 in image units); entry {i} of A(x) is {zi}"
                    )));
                }
                let n = poisson_draw(g * u.max(0.0), rng)?;
                let mut y = 2.0 * n / g - 1.0;
                if self.read_sigma > 0.0 {
                    let e: f64 = StandardNormal.sample(rng);
                    y += self.read_sigma * e;
                }
                Ok(y)
            })
            .collect()
    }
    fn log_likelihood_and_grad(&self, z: &[f64], y: &[f64]) -> Result<MeasurementGrad> {
        let g = self.photons;
        let mut value = 0.0;
        let mut direction = Vec::with_capacity(z.len());
        if self.read_sigma > 0.0 {
            for (&zi, &yi) in z.iter().zip(y) {
                let (v, dv) = self.variance(zi);
                let r = yi - zi;
                value -= r * r / (2.0 * v) + 0.5 * v.ln();
                direction.push(r / v + (r * r / (2.0 * v * v) - 0.5 / v) * dv);
            }
        } else {
            for (&zi, &yi) in z.iter().zip(y) {
                let n = (g * (yi + 1.0) / 2.0).max(0.0);
                let (f, df) = poisson_term(g * (zi + 1.0) / 2.0, n);
                value -= f;
                direction.push(-df * g / 2.0);
            }
        }
        Ok(MeasurementGrad {
            value,
            direction,
            divisor: 1.0,
        })
    }
    fn check_measurement(&self, y: &[f64]) -> std::result::Result<(), String> {
        if self.read_sigma > 0.0 {
            return Ok(());
        }
        // y = 2n/γ − 1 with n ≥ 0 (f32 files: allow round-off).
        let tol = 1e-5 + 1e-6 * 2.0 / self.photons;
        match y.iter().position(|&v| v < -1.0 - tol) {
            Some(i) => Err(format!(
                "a Poisson measurement is 2n/γ − 1 ≥ −1 (n photons, γ = {}), but entry {i} is {}",
                self.photons, y[i]
            )),
            None => Ok(()),
        }
    }
}

/// Transmission (X-ray) photon counting for CT (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Transmission {
    photons: f64,
    attenuation: f64,
    /// o = A(1) per measurement entry (the chord lengths).
    offset: Vec<f64>,
}

impl Transmission {
    /// I₀ = `photons` counts per ray without an object, μ = `attenuation` per pixel length of a
    /// white pixel, and the chord lengths `offset` = A(1) of the operator.
    pub fn new(photons: f64, attenuation: f64, offset: Vec<f64>) -> Result<Self> {
        check_positive("the photon count", photons)?;
        check_positive("the attenuation", attenuation)?;
        if let Some(v) = offset.iter().find(|v| !v.is_finite()) {
            return Err(InverseError::InvalidArgument(format!(
                "transmission noise: non-finite chord length {v}"
            )));
        }
        Ok(Self {
            photons,
            attenuation,
            offset,
        })
    }

    /// I₀.
    pub fn photons(&self) -> f64 {
        self.photons
    }

    /// μ.
    pub fn attenuation(&self) -> f64 {
        self.attenuation
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n == self.offset.len() {
            Ok(())
        } else {
            Err(InverseError::InvalidArgument(format!(
                "transmission noise was built for {} measurement entries, got {n}",
                self.offset.len()
            )))
        }
    }

    /// λ = I₀ exp(−μ(z + o)/2) per entry.
    fn rates(&self, z: &[f64]) -> Vec<f64> {
        let (i0, mu) = (self.photons, self.attenuation);
        z.iter()
            .zip(&self.offset)
            .map(|(zi, o)| i0 * (-mu * (zi + o) / 2.0).exp())
            .collect()
    }
}

impl NoiseModel for Transmission {
    fn name(&self) -> &'static str {
        "transmission"
    }
    fn noise_sigma(&self) -> f64 {
        0.0
    }
    fn temperature(&self) -> f64 {
        2.0 / (self.attenuation * self.photons.sqrt())
    }
    fn simulate(&self, z: Vec<f64>, rng: &mut StdRng) -> Result<Vec<f64>> {
        self.check_len(z.len())?;
        self.rates(&z)
            .into_iter()
            .map(|l| poisson_draw(l, rng))
            .collect()
    }
    fn log_likelihood_and_grad(&self, z: &[f64], y: &[f64]) -> Result<MeasurementGrad> {
        self.check_len(z.len())?;
        let mu = self.attenuation;
        let mut value = 0.0;
        let mut direction = Vec::with_capacity(z.len());
        for (l, &n) in self.rates(z).into_iter().zip(y) {
            // f(λ) = λ − n − n ln(λ/n); ∂λ/∂z = −μλ/2, so ∂L/∂z = −f′(λ)·∂λ/∂z = μ(λ − n)/2.
            let f = l - n - if n > 0.0 { n * (l / n).ln() } else { 0.0 };
            value -= f;
            direction.push(mu * (l - n) / 2.0);
        }
        Ok(MeasurementGrad {
            value,
            direction,
            divisor: 1.0,
        })
    }
    fn check_measurement(&self, y: &[f64]) -> std::result::Result<(), String> {
        match y.iter().position(|&v| v < 0.0) {
            Some(i) => Err(format!(
                "transmission measurements are photon counts ≥ 0, but entry {i} is {}",
                y[i]
            )),
            None => Ok(()),
        }
    }
    fn linearized(&self, y: &[f64]) -> Vec<f64> {
        let (i0, mu) = (self.photons, self.attenuation);
        y.iter()
            .zip(&self.offset)
            .map(|(&n, o)| 2.0 * (i0 / n.max(0.5)).ln() / mu - o)
            .collect()
    }
}
