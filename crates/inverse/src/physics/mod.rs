//! Forward operators, one file per family (as deepinv's `physics/`). Each file also declares
//! the registry entries (`ENTRIES`) of its tasks; see [`crate::task`].

pub mod blur;
pub mod compressed_sensing;
pub mod denoise;
pub mod inpainting;
pub mod mri;
pub mod one_bit;
pub mod phase_retrieval;
pub mod super_resolution;
pub mod tomography;

pub use blur::{gaussian_kernel, motion_kernel, Blur, Kernel2d, DEFAULT_BLUR_KERNEL_SIZE};
pub use compressed_sensing::CompressedSensing;
pub use denoise::Identity;
pub use inpainting::Inpainting;
pub use mri::{MaskPattern, Mri, MriBaseline};
pub use one_bit::one_bit;
pub use phase_retrieval::PhaseRetrieval;
pub use super_resolution::{imresize_matrix, SrKernel, SuperResolution};
pub use tomography::{FbpFilter, Tomography};

use crate::error::{InverseError, Result};

/// Checks a noise σ: finite and ≥ 0.
pub(crate) fn check_sigma(task: &str, what: &str, s: f64) -> Result<()> {
    if s.is_finite() && s >= 0.0 {
        Ok(())
    } else {
        Err(InverseError::InvalidOption {
            task: task.to_string(),
            msg: format!("{what} must be a finite number ≥ 0, got {s}"),
        })
    }
}

/// Checks an image shape: all dimensions positive.
pub(crate) fn check_shape(task: &str, shape: [usize; 3]) -> Result<()> {
    if shape.iter().all(|&d| d > 0) {
        Ok(())
    } else {
        Err(InverseError::ImageShape {
            task: task.to_string(),
            msg: format!("image shape {shape:?} has a zero dimension"),
        })
    }
}
