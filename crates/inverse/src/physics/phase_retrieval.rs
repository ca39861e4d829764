//! Coded-diffraction phase retrieval: y = |F(pad(M ⊙ x))| + σz.
//!
//! - M: a fixed random per-pixel mask, 0 with probability 3/4, +1 and −1 with probability 1/8
//!   each, drawn from the operator seed and shared across channels.
//! - pad: zero padding of each H × W channel to a P × Q grid with P = round(H·√o),
//!   Q = round(W·√o) for the oversampling factor o in pixels (default 4, i.e. 2× per side:
//!   256 → 512), the image placed at offset (⌊(P−H)/2⌋, ⌊(Q−W)/2⌋).
//! - F: the centred orthonormal 2-D DFT, fftshift(fft2(·))/√(PQ). (An `ifftshift` of the input
//!   only changes phases, so it does not affect |F·|.) The measurement is the magnitude, not
//!   squared, laid out with the zero frequency at index (⌊P/2⌋, ⌊Q/2⌋), shape (C, P, Q).
//! - The vector–Jacobian product of A at x for a measurement-space v is
//!   Jᵀv = M ⊙ crop(Re F^H[ifftshift(v) z/|z|]) with z = F pad(M ⊙ x), using z/|z| := 0 where
//!   z = 0; so with Gaussian noise L(x; y) = −‖y − |F pad(M ⊙ x)|‖²/(2σ²) and
//!   ∇ₓL = M ⊙ crop(Re F^H[(y − |z|) z/|z|])/σ².
//!
//! Baseline: Fienup's HIO (β = 0.9, 200 iterations) then 50 error-reduction iterations per
//! channel, with the support and sign pattern of the mask and the box constraint x ∈ [-1, 1]; the
//! masked-out pixels (3/4 of them) are then filled by interpolation. The sign of each channel
//! is not identifiable from |F·| (x_c → −x_c leaves |F(M x_c)| unchanged) and is left as HIO
//! finds it; DPnP's `baseline-sign` start picks among the 2^C patterns with the prior.

use std::sync::Arc;

use num_complex::Complex64;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{InverseError, Result};
use crate::fft::{fftshift2, ifftshift2, Fft2};
use crate::fill::fill_holes;
use crate::noise::NoiseModel;
use crate::operator::{
    clip_unit, composed_log_likelihood_and_grad, noise_check_measurement, require_likelihood_sigma,
    Operator, ReferenceTask,
};
use crate::task::{
    OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA,
};

/// `phase-retrieval`.
pub const ENTRIES: &[TaskEntry] = &[TaskEntry {
    names: &["phase-retrieval"],
    summary: "|F pad(M ⊙ x)| with a coded mask M ∈ {0 (3/4), ±1 (1/8 each)}",
    own_options: &[OptionSpec {
        name: "oversample",
        help: "oversampling factor in pixels (4 = 2× zero padding per side).",
        kind: OptionType::Float,
        default: OptionDefault::Float(4.0),
    }],
    default_noise_sigma: DEFAULT_NOISE_SIGMA,
    build: build_pr,
}];

fn build_pr(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    Ok(Box::new(PhaseRetrieval::new(
        shape,
        o.float("oversample")?,
        o.operator_seed()?,
        o.gaussian_noise()?,
    )?))
}

const HIO_BETA: f64 = 0.9;
const HIO_ITERS: usize = 200;
const ER_ITERS: usize = 50;

/// Coded phase retrieval (see the module docs).
pub struct PhaseRetrieval {
    shape: [usize; 3],
    mask: Vec<f64>,
    ph: usize,
    pw: usize,
    top: usize,
    left: usize,
    fft: Fft2,
    seed: u64,
    noise: Arc<dyn NoiseModel>,
}

impl std::fmt::Debug for PhaseRetrieval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseRetrieval")
            .field("shape", &self.shape)
            .field("padded", &(self.ph, self.pw))
            .finish()
    }
}

impl PhaseRetrieval {
    pub fn new(
        shape: [usize; 3],
        oversample: f64,
        seed: u64,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        let task = "phase-retrieval";
        super::check_shape(task, shape)?;
        if !(oversample >= 1.0 && oversample.is_finite()) {
            return Err(InverseError::InvalidOption {
                task: task.into(),
                msg: format!("oversampling factor (in pixels) must be ≥ 1, got {oversample}"),
            });
        }
        let [_, h, w] = shape;
        let ph = ((h as f64 * oversample.sqrt()).round() as usize).max(h);
        let pw = ((w as f64 * oversample.sqrt()).round() as usize).max(w);
        let mut rng = StdRng::seed_from_u64(seed);
        let mask = (0..h * w)
            .map(|_| {
                let u: f64 = rng.random();
                if u < 0.75 {
                    0.0
                } else if u < 0.875 {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect();
        Ok(Self {
            shape,
            mask,
            ph,
            pw,
            top: (ph - h) / 2,
            left: (pw - w) / 2,
            fft: Fft2::new(ph, pw),
            seed,
            noise,
        })
    }

    /// The coded mask, H·W values in {−1, 0, +1}.
    pub fn mask(&self) -> &[f64] {
        &self.mask
    }

    /// The padded grid (P, Q).
    pub fn padded_shape(&self) -> (usize, usize) {
        (self.ph, self.pw)
    }

    /// z = F pad(M ⊙ x_c) for one channel, natural (unshifted) frequency layout.
    fn spectrum(&self, xc: &[f64]) -> Vec<Complex64> {
        let [_, h, w] = self.shape;
        let mut buf = vec![Complex64::new(0.0, 0.0); self.ph * self.pw];
        for i in 0..h {
            for j in 0..w {
                buf[(self.top + i) * self.pw + self.left + j].re =
                    self.mask[i * w + j] * xc[i * w + j];
            }
        }
        self.fft.forward_ortho(&mut buf);
        buf
    }

    fn hio_channel(&self, ymag: &[f64], rng: &mut StdRng) -> Vec<f64> {
        let [_, h, w] = self.shape;
        let (ph, pw) = (self.ph, self.pw);
        let mut coef = vec![0.0; ph * pw]; // mask value at each padded position (0 off support)
        for i in 0..h {
            for j in 0..w {
                coef[(self.top + i) * pw + self.left + j] = self.mask[i * w + j];
            }
        }
        let mut u: Vec<f64> = coef
            .iter()
            .map(|&m| m * rng.random_range(-1.0..1.0))
            .collect();
        for it in 0..HIO_ITERS + ER_ITERS {
            let mut buf: Vec<Complex64> = u.iter().map(|&v| Complex64::new(v, 0.0)).collect();
            self.fft.forward_ortho(&mut buf);
            for (b, &m) in buf.iter_mut().zip(ymag) {
                let a = b.norm();
                *b = if a > 0.0 {
                    *b * (m / a)
                } else {
                    Complex64::new(m, 0.0)
                };
            }
            self.fft.inverse_ortho(&mut buf);
            for k in 0..ph * pw {
                let up = buf[k].re;
                let m = coef[k];
                let feasible = m != 0.0 && (up / m).abs() <= 1.0;
                u[k] = if it < HIO_ITERS {
                    if feasible {
                        up
                    } else if m != 0.0 {
                        // on the support but outside the box: project onto the box
                        let proj = m * (up / m).clamp(-1.0, 1.0);
                        u[k] - HIO_BETA * (up - proj)
                    } else {
                        u[k] - HIO_BETA * up
                    }
                } else if m != 0.0 {
                    m * (up / m).clamp(-1.0, 1.0)
                } else {
                    0.0
                };
            }
        }
        let mut x = vec![0.0; h * w];
        let mut known = vec![false; h * w];
        for i in 0..h {
            for j in 0..w {
                let m = self.mask[i * w + j];
                if m != 0.0 {
                    x[i * w + j] = (u[(self.top + i) * pw + self.left + j] / m).clamp(-1.0, 1.0);
                    known[i * w + j] = true;
                }
            }
        }
        fill_holes(&x, &known, h, w)
    }
}

impl Operator for PhaseRetrieval {
    /// z = L (M ⊙ x) Rᵀ with L, R the fftshifted orthonormal DFTs of the padded grid restricted
    /// to the image's rows and columns; A(x) = |z|, Jᵀv = M ⊙ Re(Lᴴ (v z/|z|) R̄).
    /// The host FFT beats the DFT as matrix products on the CPU.
    fn host_faster_on_cpu(&self) -> bool {
        true
    }
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        use crate::device::{dft_matrix, upload, CxMat, CxSeparable, DftKind};
        let [_, h, w] = self.shape;
        Ok(Some(Box::new(CodedDiffraction {
            dft: CxSeparable {
                l: CxMat::new(
                    &dft_matrix(DftKind::ShiftedOrtho, self.ph, h, self.top),
                    self.ph,
                    h,
                    device,
                    dtype,
                )?,
                r: CxMat::new(
                    &dft_matrix(DftKind::ShiftedOrtho, self.pw, w, self.left),
                    self.pw,
                    w,
                    device,
                    dtype,
                )?,
            },
            mask: upload(&self.mask, &[1, 1, h, w], device, dtype)?,
        })))
    }
    fn name(&self) -> &str {
        "phase-retrieval"
    }
    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }
    fn measurement_shape(&self) -> Vec<usize> {
        vec![self.shape[0], self.ph, self.pw]
    }
    fn noise(&self) -> &dyn NoiseModel {
        self.noise.as_ref()
    }
    fn is_linear(&self) -> bool {
        false
    }
    fn sign_ambiguous(&self) -> bool {
        true
    }
    fn reference_task(&self) -> Option<ReferenceTask> {
        Some(ReferenceTask::PhaseRetrieval)
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = self.shape;
        let mut out = Vec::with_capacity(c * self.ph * self.pw);
        for ch in 0..c {
            let z = self.spectrum(&x[ch * h * w..(ch + 1) * h * w]);
            let mag: Vec<f64> = z.iter().map(|v| v.norm()).collect();
            out.extend(fftshift2(&mag, self.ph, self.pw));
        }
        Ok(out)
    }
    fn vjp_host(&self, x: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = self.shape;
        let (ph, pw) = (self.ph, self.pw);
        let mut g = vec![0.0; c * h * w];
        for ch in 0..c {
            let mut z = self.spectrum(&x[ch * h * w..(ch + 1) * h * w]);
            let vn = ifftshift2(&v[ch * ph * pw..(ch + 1) * ph * pw], ph, pw);
            for (zk, &vk) in z.iter_mut().zip(&vn) {
                let a = zk.norm();
                *zk = if a > 0.0 {
                    *zk * (vk / a)
                } else {
                    Complex64::new(0.0, 0.0)
                };
            }
            self.fft.inverse_ortho(&mut z);
            for i in 0..h {
                for j in 0..w {
                    g[ch * h * w + i * w + j] =
                        self.mask[i * w + j] * z[(self.top + i) * pw + self.left + j].re;
                }
            }
        }
        Ok(g)
    }
    /// Gaussian noise keeps the pre-split fused loop, which accumulates L over the frequencies
    /// in their natural (unshifted) order: the composed path sums the same terms in the stored
    /// (fftshifted) order, whose rounding differs, and L must stay bit-identical. The gradient
    /// is the same as the composed one (Jᵀ(y − A(x))/σ², see [`Operator::vjp_host`]).
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)> {
        let Some(gauss) = self.noise.as_gaussian() else {
            return composed_log_likelihood_and_grad(self, x, y);
        };
        let s = require_likelihood_sigma("phase-retrieval", gauss)?;
        let [c, h, w] = self.shape;
        let (ph, pw) = (self.ph, self.pw);
        let mut l = 0.0;
        let mut g = vec![0.0; c * h * w];
        for ch in 0..c {
            let mut z = self.spectrum(&x[ch * h * w..(ch + 1) * h * w]);
            let yn = ifftshift2(&y[ch * ph * pw..(ch + 1) * ph * pw], ph, pw);
            for (zk, &yk) in z.iter_mut().zip(&yn) {
                let a = zk.norm();
                let r = yk - a;
                l -= r * r;
                *zk = if a > 0.0 {
                    *zk * (r / a)
                } else {
                    Complex64::new(0.0, 0.0)
                };
            }
            self.fft.inverse_ortho(&mut z);
            for i in 0..h {
                for j in 0..w {
                    g[ch * h * w + i * w + j] =
                        self.mask[i * w + j] * z[(self.top + i) * pw + self.left + j].re / (s * s);
                }
            }
        }
        Ok((l / (2.0 * s * s), g))
    }
    fn check_measurement_values(&self, y: &[f64]) -> Result<()> {
        if let Some(v) = y.iter().find(|v| **v < 0.0) {
            // noisy magnitudes can dip below zero; only reject clearly impossible data
            if *v < -10.0 * self.noise.noise_sigma().max(1e-6) - 1e-6 {
                return Err(InverseError::Measurement {
                    task: "phase-retrieval".into(),
                    msg: format!("magnitudes must be ≥ 0 up to noise, found {v}"),
                });
            }
        }
        noise_check_measurement(self, y)
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = self.shape;
        let (ph, pw) = (self.ph, self.pw);
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            let ymag: Vec<f64> = ifftshift2(&y[ch * ph * pw..(ch + 1) * ph * pw], ph, pw)
                .iter()
                .map(|v| v.max(0.0))
                .collect();
            out.extend(self.hio_channel(&ymag, &mut rng));
        }
        clip_unit(&mut out);
        Ok(out)
    }
}

/// Coded diffraction on a device (see [`PhaseRetrieval::device_map`]).
struct CodedDiffraction {
    dft: crate::device::CxSeparable,
    /// M, `(1, 1, H, W)`.
    mask: candle_core::Tensor,
}

impl CodedDiffraction {
    fn spectrum(&self, x: &candle_core::Tensor) -> Result<crate::device::Cx> {
        self.dft.apply_real(&x.broadcast_mul(&self.mask)?)
    }
}

impl crate::device::DeviceMap for CodedDiffraction {
    fn forward(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        self.spectrum(x)?.abs()
    }
    fn vjp(&self, x: &candle_core::Tensor, v: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        let z = self.spectrum(x)?;
        let a = z.abs()?;
        // v/|z| where z ≠ 0, 0 where z = 0.
        let nonzero = a.gt(0.0)?.to_dtype(a.dtype())?;
        let safe = (&a + (1.0 - &nonzero)?)?;
        let ratio = ((v / safe)? * nonzero)?;
        let g = self.dft.adjoint(&z.scale(&ratio)?)?.re;
        Ok(g.broadcast_mul(&self.mask)?)
    }
}
