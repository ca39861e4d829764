//! Deblurring: y = k ⊛ x + σz with **circular** convolution computed by FFT.
//!
//! Boundary: periodic (circular) convolution on the H × W grid, the kernel's centre element
//! (index ⌊kh/2⌋, ⌊kw/2⌋) at the origin, so A = F⁻¹ diag(k̂) F is FFT-diagonal, Aᵀ = F⁻¹ diag(conj k̂) F,
//! and (αAᵀA + βI)⁻¹ is applied exactly in the Fourier domain. Each channel is blurred by the
//! same kernel. Baseline: the Wiener filter x̂ = F⁻¹[conj(k̂) ŷ / (|k̂|² + λ)] with
//! λ = max(σ², 10⁻⁴)/0.25 (white signal prior of variance 0.25, i.e. std 0.5 on [-1, 1]),
//! clipped to [-1, 1].

use std::sync::{Arc, OnceLock};

use num_complex::Complex64;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::error::{InverseError, Result};
use crate::fft::Fft2;
use crate::host::to_host;
use crate::noise::NoiseModel;
use crate::operator::{clip_unit, Operator, ReferenceTask};
use crate::svd::{FourierSvd, OperatorSvd};
use crate::task::{
    OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions, DEFAULT_NOISE_SIGMA,
};

/// Default blur kernel side (DPS's 61), reduced to the largest odd size that fits smaller images.
pub const DEFAULT_BLUR_KERNEL_SIZE: usize = 61;

const KERNEL_SIZE: OptionSpec = OptionSpec {
    name: "kernel-size",
    help: "kernel side (default 61, or the largest odd size fitting the image).",
    kind: OptionType::Integer,
    default: OptionDefault::Derived,
};

const KERNEL_FILE: OptionSpec = OptionSpec {
    name: "kernel-file",
    help: "explicit kernel as a 2-D .npy (normalised to sum 1).",
    kind: OptionType::ArrayFile,
    default: OptionDefault::Derived,
};

/// `deblur-gauss`, `deblur-motion`.
pub const ENTRIES: &[TaskEntry] = &[
    TaskEntry {
        names: &["deblur-gauss"],
        summary: "circular FFT convolution with a Gaussian kernel (or a given kernel)",
        own_options: &[
            KERNEL_SIZE,
            OptionSpec {
                name: "kernel-std",
                help: "kernel standard deviation in pixels.",
                kind: OptionType::Float,
                default: OptionDefault::Float(3.0),
            },
            KERNEL_FILE,
        ],
        default_noise_sigma: DEFAULT_NOISE_SIGMA,
        build: build_gauss,
    },
    TaskEntry {
        names: &["deblur-motion"],
        summary:
            "circular FFT convolution with a seeded random-walk motion kernel (or a given kernel)",
        own_options: &[
            KERNEL_SIZE,
            OptionSpec {
                name: "motion-intensity",
                help: "trajectory intensity in [0, 1].",
                kind: OptionType::Float,
                default: OptionDefault::Float(0.5),
            },
            KERNEL_FILE,
        ],
        default_noise_sigma: DEFAULT_NOISE_SIGMA,
        build: build_motion,
    },
];

/// `kernel-size`, else [`DEFAULT_BLUR_KERNEL_SIZE`] or the largest odd side fitting the image.
fn blur_size(o: &TaskOptions, shape: [usize; 3]) -> Result<usize> {
    let [_, h, w] = shape;
    Ok(o.size_opt("kernel-size")?.unwrap_or_else(|| {
        let m = h.min(w);
        if m >= DEFAULT_BLUR_KERNEL_SIZE {
            DEFAULT_BLUR_KERNEL_SIZE
        } else if m % 2 == 1 {
            m
        } else {
            m.saturating_sub(1).max(1)
        }
    }))
}

/// The kernel of `kernel-file`, if given.
fn kernel_file(o: &TaskOptions) -> Result<Option<Kernel2d>> {
    let Some(t) = o.tensor_opt("kernel-file")? else {
        return Ok(None);
    };
    let (kh, kw) = match t.dims() {
        [kh, kw] | [1, kh, kw] | [1, 1, kh, kw] => (*kh, *kw),
        d => {
            return Err(InverseError::InvalidOption {
                task: o.task().to_string(),
                msg: format!("kernel must have shape (kh, kw), got {d:?}"),
            })
        }
    };
    Ok(Some(Kernel2d::new(kh, kw, to_host(t)?)?))
}

fn build_gauss(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let k = match kernel_file(o)? {
        Some(k) => k,
        None => gaussian_kernel(blur_size(o, shape)?, o.float("kernel-std")?)?,
    };
    Ok(Box::new(Blur::new(
        o.task(),
        shape,
        k,
        o.intensity_noise()?,
    )?))
}

fn build_motion(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let k = match kernel_file(o)? {
        Some(k) => k,
        None => motion_kernel(
            blur_size(o, shape)?,
            o.float("motion-intensity")?,
            o.operator_seed()?,
        )?,
    };
    Ok(Box::new(Blur::new(
        o.task(),
        shape,
        k,
        o.intensity_noise()?,
    )?))
}

/// Assumed per-pixel signal variance of the Wiener baseline.
const WIENER_SIGNAL_VAR: f64 = 0.25;
/// Floor on the noise variance of the Wiener baseline (so σ = 0 still regularises).
const WIENER_MIN_NOISE_VAR: f64 = 1e-4;

/// A 2-D convolution kernel, row-major `h × w`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel2d {
    pub h: usize,
    pub w: usize,
    pub data: Vec<f64>,
}

impl Kernel2d {
    /// A kernel from values; normalised to sum 1. Errors on an empty kernel, non-finite values
    /// or a non-positive sum.
    pub fn new(h: usize, w: usize, data: Vec<f64>) -> Result<Self> {
        let task = "deblur";
        if h == 0 || w == 0 || data.len() != h * w {
            return Err(InverseError::InvalidOption {
                task: task.into(),
                msg: format!("kernel {h}×{w} needs {} values, got {}", h * w, data.len()),
            });
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(InverseError::InvalidOption {
                task: task.into(),
                msg: "kernel has non-finite values".into(),
            });
        }
        let s: f64 = data.iter().sum();
        if s.is_nan() || s <= 0.0 {
            return Err(InverseError::InvalidOption {
                task: task.into(),
                msg: format!("kernel sum must be positive, got {s}"),
            });
        }
        Ok(Self {
            h,
            w,
            data: data.into_iter().map(|v| v / s).collect(),
        })
    }
}

/// Isotropic Gaussian kernel of side `size` and standard deviation `std` pixels, centred at
/// ((size−1)/2, (size−1)/2), normalised to sum 1.
pub fn gaussian_kernel(size: usize, std: f64) -> Result<Kernel2d> {
    if size == 0 || !(std > 0.0 && std.is_finite()) {
        return Err(InverseError::InvalidOption {
            task: "deblur-gauss".into(),
            msg: format!("kernel size must be ≥ 1 and std > 0, got size {size}, std {std}"),
        });
    }
    let c = (size as f64 - 1.0) / 2.0;
    let mut d = Vec::with_capacity(size * size);
    for i in 0..size {
        for j in 0..size {
            let (a, b) = (i as f64 - c, j as f64 - c);
            d.push((-(a * a + b * b) / (2.0 * std * std)).exp());
        }
    }
    Kernel2d::new(size, size, d)
}

/// A seeded random motion-blur kernel of side `size`: a random-walk camera trajectory
/// (4·size unit steps whose heading turns by `intensity`·N(0, 0.7²) radians per step), centred on
/// its mean position, shrunk to fit the `size × size` box if it is larger, and rasterised with
/// bilinear splatting; normalised to sum 1. `intensity` in [0, 1]: 0 gives a straight line.
pub fn motion_kernel(size: usize, intensity: f64, seed: u64) -> Result<Kernel2d> {
    if size < 3 || !(0.0..=1.0).contains(&intensity) {
        return Err(InverseError::InvalidOption {
            task: "deblur-motion".into(),
            msg: format!("kernel size must be ≥ 3 and intensity in [0, 1], got size {size}, intensity {intensity}"),
        });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let angle = Uniform::new(0.0, 2.0 * std::f64::consts::PI)
        .map_err(|e| InverseError::Numerical(e.to_string()))?;
    let mut theta: f64 = angle.sample(&mut rng);
    let n = 4 * size;
    let mut pts = Vec::with_capacity(n + 1);
    let (mut px, mut py) = (0.0f64, 0.0f64);
    pts.push((px, py));
    for _ in 0..n {
        let z: f64 = StandardNormal.sample(&mut rng);
        theta += intensity * 0.7 * z;
        px += theta.cos();
        py += theta.sin();
        pts.push((px, py));
    }
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / pts.len() as f64,
        pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64,
    );
    let ext = pts
        .iter()
        .map(|p| (p.0 - mx).abs().max((p.1 - my).abs()))
        .fold(0.0, f64::max);
    let half = (size as f64 - 1.0) / 2.0;
    let shrink = if ext > half { half / ext } else { 1.0 };
    let mut d = vec![0.0; size * size];
    for p in &pts {
        let (x, y) = (half + (p.0 - mx) * shrink, half + (p.1 - my) * shrink);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        for (dy, wy) in [(0usize, 1.0 - fy), (1, fy)] {
            for (dx, wx) in [(0usize, 1.0 - fx), (1, fx)] {
                let (r, c) = (y0 as usize + dy, x0 as usize + dx);
                if r < size && c < size {
                    d[r * size + c] += wy * wx;
                }
            }
        }
    }
    Kernel2d::new(size, size, d)
}

/// Circular FFT blur (see the module docs).
pub struct Blur {
    name: String,
    shape: [usize; 3],
    kernel: Kernel2d,
    /// Unnormalised DFT of the kernel laid on the H × W grid with its centre at the origin.
    khat: Vec<Complex64>,
    fft: Fft2,
    noise: Arc<dyn NoiseModel>,
    svd: OnceLock<Option<FourierSvd>>,
}

impl std::fmt::Debug for Blur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blur")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl Blur {
    pub fn new(
        name: &str,
        shape: [usize; 3],
        kernel: Kernel2d,
        noise: Arc<dyn NoiseModel>,
    ) -> Result<Self> {
        super::check_shape(name, shape)?;
        let [_, h, w] = shape;
        if kernel.h > h || kernel.w > w {
            return Err(InverseError::InvalidOption {
                task: name.into(),
                msg: format!(
                    "kernel {}×{} is larger than the {h}×{w} image; pass a smaller kernel size",
                    kernel.h, kernel.w
                ),
            });
        }
        let (ch, cw) = (kernel.h / 2, kernel.w / 2);
        let mut buf = vec![Complex64::new(0.0, 0.0); h * w];
        for i in 0..kernel.h {
            for j in 0..kernel.w {
                let r = (i + h - ch) % h;
                let c = (j + w - cw) % w;
                buf[r * w + c].re += kernel.data[i * kernel.w + j];
            }
        }
        let fft = Fft2::new(h, w);
        fft.forward(&mut buf);
        Ok(Self {
            name: name.into(),
            shape,
            kernel,
            khat: buf,
            fft,
            noise,
            svd: OnceLock::new(),
        })
    }

    pub fn kernel(&self) -> &Kernel2d {
        &self.kernel
    }

    /// Applies the per-frequency multiplier `mult` (length H·W) to each channel.
    fn filter(&self, x: &[f64], mult: impl Fn(usize) -> Complex64) -> Vec<f64> {
        let [c, h, w] = self.shape;
        let n = (h * w) as f64;
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            let mut buf: Vec<Complex64> = x[ch * h * w..(ch + 1) * h * w]
                .iter()
                .map(|&v| Complex64::new(v, 0.0))
                .collect();
            self.fft.forward(&mut buf);
            for (k, b) in buf.iter_mut().enumerate() {
                *b *= mult(k);
            }
            self.fft.inverse(&mut buf);
            out.extend(buf.iter().map(|b| b.re / n));
        }
        out
    }
}

impl Operator for Blur {
    /// Re F⁻¹(k̂ ⊙ F x) with F = F_H ⊗ F_W as two matrix products each way.
    /// The host FFT beats the DFT as matrix products on the CPU.
    fn host_faster_on_cpu(&self) -> bool {
        true
    }
    fn device_map(
        &self,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        Ok(Some(Box::new(FourierMultiplier::new(
            self.shape, &self.khat, device, dtype,
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
        Some(ReferenceTask::Deblur)
    }
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        Ok(self.filter(x, |k| self.khat[k]))
    }
    fn adjoint_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        Ok(self.filter(y, |k| self.khat[k].conj()))
    }
    /// Circular convolution: the real orthonormal Fourier basis, s = |k̂| (see
    /// [`FourierSvd`]).
    fn svd(&self) -> Option<&dyn OperatorSvd> {
        self.svd
            .get_or_init(|| {
                let [c, h, w] = self.shape;
                FourierSvd::new(c, h, w, &self.khat).ok()
            })
            .as_ref()
            .map(|s| s as &dyn OperatorSvd)
    }
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>> {
        let s = self.noise.noise_sigma();
        let lambda = (s * s).max(WIENER_MIN_NOISE_VAR) / WIENER_SIGNAL_VAR;
        let mut out = self.filter(y, |k| {
            let kk = self.khat[k];
            kk.conj() / (kk.norm_sqr() + lambda)
        });
        clip_unit(&mut out);
        Ok(out)
    }
    fn solve_shifted_gram_host(
        &self,
        rhs: &[f64],
        alpha: f64,
        beta: f64,
    ) -> Option<Result<Vec<f64>>> {
        Some(Ok(self.filter(rhs, |k| {
            Complex64::new(1.0 / (alpha * self.khat[k].norm_sqr() + beta), 0.0)
        })))
    }
}

/// x ↦ Re F⁻¹(k̂ ⊙ F x) per channel on a device, F the unnormalised 2-D DFT as matrix
/// products (see [`crate::device`]); the adjoint uses conj(k̂), the shifted-Gram solve the
/// multiplier 1/(α|k̂|² + β).
struct FourierMultiplier {
    fwd: crate::device::CxSeparable,
    inv: crate::device::CxSeparable,
    /// k̂ as `(1, 1, H, W)` real and imaginary parts.
    khat: crate::device::Cx,
    /// |k̂|², `(1, 1, H, W)`.
    power: candle_core::Tensor,
}

impl FourierMultiplier {
    fn new(
        shape: [usize; 3],
        khat: &[Complex64],
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> Result<Self> {
        use crate::device::{dft_matrix, upload, Cx, CxMat, CxSeparable, DftKind};
        let [_, h, w] = shape;
        let conj_scaled = |n: usize| -> Vec<(f64, f64)> {
            dft_matrix(DftKind::Plain, n, n, 0)
                .into_iter()
                .map(|(re, im)| (re / n as f64, -im / n as f64))
                .collect()
        };
        let fwd = CxSeparable {
            l: CxMat::new(&dft_matrix(DftKind::Plain, h, h, 0), h, h, device, dtype)?,
            r: CxMat::new(&dft_matrix(DftKind::Plain, w, w, 0), w, w, device, dtype)?,
        };
        let inv = CxSeparable {
            l: CxMat::new(&conj_scaled(h), h, h, device, dtype)?,
            r: CxMat::new(&conj_scaled(w), w, w, device, dtype)?,
        };
        let re: Vec<f64> = khat.iter().map(|k| k.re).collect();
        let im: Vec<f64> = khat.iter().map(|k| k.im).collect();
        let pw: Vec<f64> = khat.iter().map(|k| k.norm_sqr()).collect();
        Ok(Self {
            fwd,
            inv,
            khat: Cx {
                re: upload(&re, &[1, 1, h, w], device, dtype)?,
                im: upload(&im, &[1, 1, h, w], device, dtype)?,
            },
            power: upload(&pw, &[1, 1, h, w], device, dtype)?,
        })
    }

    fn filter(
        &self,
        x: &candle_core::Tensor,
        k: &crate::device::Cx,
    ) -> Result<candle_core::Tensor> {
        let z = self.fwd.apply_real(x)?.mul(k)?;
        Ok(self.inv.apply(&z)?.re)
    }
}

impl crate::device::DeviceMap for FourierMultiplier {
    fn forward(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        self.filter(x, &self.khat)
    }
    fn vjp(
        &self,
        _x: &candle_core::Tensor,
        v: &candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        self.filter(v, &self.khat.conj()?)
    }
    fn solve_shifted_gram(
        &self,
        rhs: &candle_core::Tensor,
        alpha: f64,
        beta: f64,
    ) -> Option<Result<candle_core::Tensor>> {
        let run = || -> Result<candle_core::Tensor> {
            let m = self.power.affine(alpha, beta)?.recip()?;
            let z = self.fwd.apply_real(rhs)?.scale(&m)?;
            Ok(self.inv.apply(&z)?.re)
        };
        Some(run())
    }
}
