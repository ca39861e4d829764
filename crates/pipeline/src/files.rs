//! `.npy` input/output and atomic writes: every result file is written to a temporary name
//! in its folder and renamed, so an interrupted run never leaves a half-written file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Read an `.npy` file as an f32 tensor on `device`, rejecting NaN/Inf; `what` names the
/// file's role in errors.
pub fn read_npy(path: &Path, what: &str, device: &Device) -> Result<Tensor> {
    if !path.is_file() {
        bail!("{}: no such file ({what})", path.display());
    }
    let t = Tensor::read_npy(path)
        .with_context(|| format!("{}: not a readable .npy file ({what})", path.display()))?;
    let t = t.to_dtype(DType::F32)?;
    genprior_nn::check_finite(&t, &format!("{} ({what})", path.display()))?;
    Ok(t.to_device(device)?)
}

/// Write a tensor as `.npy` (f32) atomically: to a temporary file, then renamed.
pub fn write_npy(t: &Tensor, path: &Path) -> Result<()> {
    check_parent(path)?;
    let tmp = tmp_path(path);
    t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .write_npy(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Write bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_parent(path)?;
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Write a JSON value atomically (pretty-printed).
pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(v)?.as_bytes())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Error unless the folder an output goes into exists.
pub fn check_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            bail!(
                "{}: the output folder {} does not exist",
                path.display(),
                parent.display()
            );
        }
    }
    Ok(())
}
