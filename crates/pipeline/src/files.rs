//! `.npy` input/output and atomic writes: every result file is written to a temporary name
//! in its folder and renamed, so an interrupted run never leaves a half-written file.
//!
//! Complex arrays (numpy's `complex64` / `complex128`, MRI k-space and coil maps) are read as
//! real tensors in the planar layout genprior's operators use: a complex array of shape S
//! becomes `(2, ...S)`, axis 0 = (real part, imaginary part); [`write_npy_complex`] writes
//! that layout back as `complex64`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Read an `.npy` file as an f32 tensor on `device`, rejecting NaN/Inf; `what` names the
/// file's role in errors.
pub fn read_npy(path: &Path, what: &str, device: &Device) -> Result<Tensor> {
    if !path.is_file() {
        bail!("{}: no such file ({what})", path.display());
    }
    let t = match read_complex_npy(path)
        .with_context(|| format!("{}: not a readable .npy file ({what})", path.display()))?
    {
        Some(t) => t,
        None => Tensor::read_npy(path)
            .with_context(|| format!("{}: not a readable .npy file ({what})", path.display()))?,
    };
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

/// The header of an `.npy` file: (descr, fortran_order, shape, offset of the data).
fn npy_header(bytes: &[u8]) -> Result<(String, bool, Vec<usize>, usize)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not an .npy file (no \\x93NUMPY magic)");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("unsupported .npy format version {v}"),
    };
    let header = bytes
        .get(start..start + len)
        .context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let field = |key: &str| -> Result<&str> {
        let i = header
            .find(&format!("'{key}'"))
            .with_context(|| format!(".npy header has no '{key}': {header}"))?;
        let rest = &header[i + key.len() + 2..];
        let rest = rest
            .trim_start()
            .strip_prefix(':')
            .context("bad .npy header")?;
        Ok(rest.trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .context("bad .npy descr")?
        .to_string();
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .context("bad .npy shape")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().context("bad .npy shape"))
        .collect::<Result<Vec<_>>>()?;
    Ok((descr, fortran, shape, start + len))
}

/// A complex `.npy` (`<c8` / `<c16`) as a planar f64 tensor `(2, ...shape)` (axis 0 = real,
/// imaginary part); `None` when the file is not complex.
pub fn read_complex_npy(path: &Path) -> Result<Option<Tensor>> {
    let bytes = std::fs::read(path)?;
    let (descr, fortran, shape, offset) = npy_header(&bytes)?;
    let width = match descr.as_str() {
        "<c8" => 4,
        "<c16" => 8,
        d if d.contains('c') => {
            bail!("complex dtype {d} is not supported (use little-endian complex64 or complex128)")
        }
        _ => return Ok(None),
    };
    if fortran && shape.len() > 1 {
        bail!("Fortran-ordered arrays are not supported; save np.ascontiguousarray(a)");
    }
    let n: usize = shape.iter().product();
    let data = &bytes[offset..];
    if data.len() < 2 * width * n {
        bail!(
            "truncated data: {} bytes for {n} complex values",
            data.len()
        );
    }
    let value = |i: usize| -> f64 {
        let b = &data[i * width..(i + 1) * width];
        if width == 4 {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
        } else {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        }
    };
    let mut planar = Vec::with_capacity(2 * n);
    planar.extend((0..n).map(|i| value(2 * i)));
    planar.extend((0..n).map(|i| value(2 * i + 1)));
    let mut dims = vec![2];
    dims.extend(&shape);
    Ok(Some(Tensor::from_vec(planar, dims, &Device::Cpu)?))
}

/// Write a planar complex tensor `(2, ...S)` (axis 0 = real, imaginary) as a `complex64`
/// `.npy` of shape S, atomically.
pub fn write_npy_complex(t: &Tensor, path: &Path) -> Result<()> {
    write_complex(t, path, false)
}

/// [`write_npy_complex`] as `complex128` (full f64 precision).
pub fn write_npy_complex128(t: &Tensor, path: &Path) -> Result<()> {
    write_complex(t, path, true)
}

fn write_complex(t: &Tensor, path: &Path, f64_parts: bool) -> Result<()> {
    let dims = t.dims();
    if dims.first() != Some(&2) {
        bail!("a planar complex tensor has axis 0 of length 2, got shape {dims:?}");
    }
    let shape = &dims[1..];
    let v = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let n = v.len() / 2;
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let descr = if f64_parts { "<c16" } else { "<c8" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts at a multiple of 64 bytes, ending with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 8 * n);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for i in 0..n {
        for part in [v[i], v[n + i]] {
            if f64_parts {
                bytes.extend_from_slice(&part.to_le_bytes());
            } else {
                bytes.extend_from_slice(&(part as f32).to_le_bytes());
            }
        }
    }
    write_atomic(path, &bytes)
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
