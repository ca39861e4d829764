//! Score networks for genprior on candle: the diffusers `UNet2DModel` (google/ddpm-*
//! and community checkpoints) and checkpoint loading from safetensors (memory-mapped)
//! or PyTorch pickles (read without executing code), plus device selection.
//!
//! This crate knows nothing about sampling: a network maps `(x, t)` to its raw output.

pub mod adm;
pub mod conv;
pub mod device;
pub mod error;
pub mod kernels;
pub mod layers;
pub mod norm;
pub mod opbench;
pub mod profile;
#[cfg(test)]
mod test_util;
pub mod unet2d;
pub mod weights;

use std::path::Path;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

pub use adm::{AdmConfig, AdmUNet};
pub use device::{parse_dtype, select_device, select_device_at, DeviceChoice};
pub use error::{NnError, Result};
pub use unet2d::{UNet2DConfig, UNet2DModel};
pub use weights::{WeightStore, Weights};

/// Load a `UNet2DModel` from its `config.json` and a weight file
/// (`.safetensors`, or a PyTorch `.bin`/`.pt` pickle).
pub fn load_unet2d(
    config: &Path,
    weights: &Path,
    dtype: DType,
    device: &Device,
) -> Result<UNet2DModel> {
    let cfg = UNet2DConfig::from_file(config)?;
    let mut store = WeightStore::open(weights)?;
    unet2d::alias_deprecated_attention(&mut store);
    let store = Rc::new(store);
    UNet2DModel::new(cfg, &store.root(dtype, device))
}

/// A `UNet2DModel` of the given architecture with seeded random weights.
pub fn random_unet2d(
    cfg: UNet2DConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<UNet2DModel> {
    let store = Rc::new(WeightStore::random(seed));
    UNet2DModel::new(cfg, &store.root(dtype, device))
}

/// The f32 data of a contiguous CPU storage, as the custom ops in [`conv`] and [`norm`] read
/// their arguments; `what` names the argument in the error.
pub(crate) fn cpu_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(v) = s else {
        candle_core::bail!("genprior {what} must be f32");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("genprior {what} must be contiguous"),
    }
}

/// Reject NaN/Inf in a user-supplied tensor, naming what it is.
pub fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    let bad = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .filter(|v| !v.is_finite())
        .count();
    if bad > 0 {
        return Err(NnError::Input(format!(
            "{what} contains {bad} NaN/Inf value(s)"
        )));
    }
    Ok(())
}

/// Configs of well-known full-size architectures (random-weight benchmarks):
/// `ddpm-cifar10-32` (google/ddpm-cifar10-32) and `ddpm-256` (the google 256-px models).
pub fn preset_config(name: &str) -> Option<UNet2DConfig> {
    let text = match name {
        "ddpm-cifar10-32" => include_str!("presets/ddpm-cifar10-32.json"),
        "ddpm-256" => include_str!("presets/ddpm-256.json"),
        _ => return None,
    };
    UNet2DConfig::from_json_str(text, Path::new(name)).ok()
}

/// Names accepted by [`preset_config`].
pub const PRESETS: [&str; 2] = ["ddpm-cifar10-32", "ddpm-256"];
