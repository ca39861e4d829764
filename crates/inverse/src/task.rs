//! Task names and options → operators: the seam the CLI's `--task NAME [options]` maps onto.

use candle_core::Tensor;

use crate::error::{InverseError, Result};
use crate::host::to_host;
use crate::operator::Operator;
use crate::physics::{
    gaussian_kernel, motion_kernel, Blur, CompressedSensing, Denoise, Inpainting, Kernel2d, OneBit,
    PhaseRetrieval, SrKernel, SuperResolution,
};

/// Every task name [`build_operator`] accepts.
pub const TASK_NAMES: &[&str] = &[
    "sr2",
    "sr4",
    "sr8",
    "inpaint-box",
    "inpaint-random",
    "inpaint-mask",
    "deblur-gauss",
    "deblur-motion",
    "phase-retrieval",
    "one-bit",
    "cs",
    "denoise",
];

/// Default blur kernel side (DPS's 61), reduced to the largest odd size that fits smaller images.
pub const DEFAULT_BLUR_KERNEL_SIZE: usize = 61;

/// A task name plus every task option (each task reads the ones it needs).
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// One of [`TASK_NAMES`].
    pub task: String,
    /// σ of the additive Gaussian measurement noise (must be 0 for `one-bit`).
    pub noise_sigma: f64,
    /// σ the Gaussian likelihood uses; `None` = `noise_sigma`. (The DPnP reference uses a
    /// likelihood temperature m = 0.15 for data simulated with σ = 0.2.)
    pub likelihood_sigma: Option<f64>,
    /// Seed of every random part of the operator (inpainting mask, motion kernel, phase-retrieval
    /// mask, CS matrix); the measurement noise has its own RNG, passed to `simulate`.
    pub operator_seed: u64,
    /// `sr*`: downsampling kernel (bicubic default, or box).
    pub sr_kernel: SrKernel,
    /// `inpaint-box`: side of the centred square hole; `None` = half the smaller image side.
    pub box_size: Option<usize>,
    /// `inpaint-random`: fraction p of pixels kept (default 0.3).
    pub keep_fraction: f64,
    /// `inpaint-mask`: the mask, shape (H, W), (1, H, W), (C, H, W) or those with a leading batch
    /// of 1; values ≥ 0.5 are observed.
    pub mask: Option<Tensor>,
    /// `deblur-*`: kernel side; `None` = [`DEFAULT_BLUR_KERNEL_SIZE`] or the largest odd size
    /// fitting the image.
    pub kernel_size: Option<usize>,
    /// `deblur-gauss`: kernel std in pixels (default 3.0).
    pub kernel_std: f64,
    /// `deblur-motion`: trajectory turning intensity in [0, 1] (default 0.5).
    pub motion_intensity: f64,
    /// `deblur-motion` (or `deblur-gauss`): an explicit kernel, shape (kh, kw); normalised to sum 1.
    pub kernel: Option<Tensor>,
    /// `phase-retrieval`: oversampling factor in pixels (default 4 = 2× per side).
    pub oversample: f64,
    /// `one-bit`: dither temperature τ (default 0.4).
    pub tau: f64,
    /// `cs`: measurement ratio m/n (default 0.25).
    pub cs_ratio: f64,
}

impl TaskSpec {
    /// A spec with every option at its default.
    pub fn new(task: &str, noise_sigma: f64) -> Self {
        Self {
            task: task.to_string(),
            noise_sigma,
            likelihood_sigma: None,
            operator_seed: 0,
            sr_kernel: SrKernel::Bicubic,
            box_size: None,
            keep_fraction: 0.3,
            mask: None,
            kernel_size: None,
            kernel_std: 3.0,
            motion_intensity: 0.5,
            kernel: None,
            oversample: 4.0,
            tau: 0.4,
            cs_ratio: 0.25,
        }
    }
}

fn invalid(task: &str, msg: String) -> InverseError {
    InverseError::InvalidOption {
        task: task.to_string(),
        msg,
    }
}

fn kernel_from_tensor(task: &str, t: &Tensor) -> Result<Kernel2d> {
    let (kh, kw) = match t.dims() {
        [kh, kw] => (*kh, *kw),
        [1, kh, kw] | [1, 1, kh, kw] => (*kh, *kw),
        d => {
            return Err(invalid(
                task,
                format!("kernel must have shape (kh, kw), got {d:?}"),
            ))
        }
    };
    Kernel2d::new(kh, kw, to_host(t)?)
}

/// Builds the operator for `spec` on images of shape `[C, H, W]`. Errors name the problem:
/// unknown task, negative σ, an option out of range, an image the task cannot handle.
pub fn build_operator(spec: &TaskSpec, image_shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    let task = spec.task.as_str();
    if !TASK_NAMES.contains(&task) {
        return Err(InverseError::UnknownTask {
            name: task.to_string(),
            known: TASK_NAMES.join(", "),
        });
    }
    let sigma = spec.noise_sigma;
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(invalid(
            task,
            format!("noise sigma must be a finite number ≥ 0, got {sigma}"),
        ));
    }
    let lik = spec.likelihood_sigma.unwrap_or(sigma);
    if !(lik.is_finite() && lik >= 0.0) {
        return Err(invalid(
            task,
            format!("likelihood sigma must be a finite number ≥ 0, got {lik}"),
        ));
    }
    let [_, h, w] = image_shape;
    let blur_size = || -> usize {
        spec.kernel_size.unwrap_or_else(|| {
            let m = h.min(w);
            if m >= DEFAULT_BLUR_KERNEL_SIZE {
                DEFAULT_BLUR_KERNEL_SIZE
            } else if m % 2 == 1 {
                m
            } else {
                m.saturating_sub(1).max(1)
            }
        })
    };
    let op: Box<dyn Operator> = match task {
        "sr2" | "sr4" | "sr8" => {
            let factor = match task {
                "sr2" => 2,
                "sr4" => 4,
                _ => 8,
            };
            Box::new(SuperResolution::new(
                image_shape,
                factor,
                spec.sr_kernel,
                sigma,
                lik,
            )?)
        }
        "inpaint-box" => {
            let b = spec.box_size.unwrap_or(h.min(w) / 2);
            Box::new(Inpainting::centred_box(image_shape, b, b, sigma, lik)?)
        }
        "inpaint-random" => Box::new(Inpainting::random(
            image_shape,
            spec.keep_fraction,
            spec.operator_seed,
            sigma,
            lik,
        )?),
        "inpaint-mask" => {
            let m = spec
                .mask
                .as_ref()
                .ok_or_else(|| invalid(task, "a mask is required".into()))?;
            let d = m.dims();
            let spatial_ok = d.len() >= 2 && d[d.len() - 2] == h && d[d.len() - 1] == w;
            let lead: usize = d[..d.len().saturating_sub(2)].iter().product();
            if !spatial_ok || !(lead == 1 || lead == image_shape[0]) || d.len() > 4 {
                return Err(invalid(
                    task,
                    format!("mask shape {d:?} does not fit images of shape {image_shape:?}; expected (H, W), (1, H, W) or (C, H, W)"),
                ));
            }
            Box::new(Inpainting::from_mask(
                task,
                image_shape,
                &to_host(m)?,
                sigma,
                lik,
            )?)
        }
        "deblur-gauss" => {
            let k = match &spec.kernel {
                Some(t) => kernel_from_tensor(task, t)?,
                None => gaussian_kernel(blur_size(), spec.kernel_std)?,
            };
            Box::new(Blur::new(task, image_shape, k, sigma, lik)?)
        }
        "deblur-motion" => {
            let k = match &spec.kernel {
                Some(t) => kernel_from_tensor(task, t)?,
                None => motion_kernel(blur_size(), spec.motion_intensity, spec.operator_seed)?,
            };
            Box::new(Blur::new(task, image_shape, k, sigma, lik)?)
        }
        "phase-retrieval" => Box::new(PhaseRetrieval::new(
            image_shape,
            spec.oversample,
            spec.operator_seed,
            sigma,
            lik,
        )?),
        "one-bit" => Box::new(OneBit::new(image_shape, spec.tau, sigma)?),
        "cs" => Box::new(CompressedSensing::gaussian(
            image_shape,
            spec.cs_ratio,
            spec.operator_seed,
            sigma,
            lik,
        )?),
        "denoise" => Box::new(Denoise::new(image_shape, sigma, lik)?),
        _ => {
            return Err(InverseError::UnknownTask {
                name: task.to_string(),
                known: TASK_NAMES.join(", "),
            })
        }
    };
    Ok(op)
}
