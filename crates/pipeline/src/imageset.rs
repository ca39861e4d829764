//! Image sets for the benchmark: `.npy` arrays or IDX files (MNIST's `*-images-idx3-ubyte`),
//! a Python-slice selection of indices, and centred zero-padding to the model's size.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Clean images `(N, C, size, size)` in [-1, 1], their indices in the file, and the file.
pub struct ImageSet {
    pub images: Tensor,
    pub indices: Vec<usize>,
    pub source: String,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The first `k` images (all if fewer).
    pub fn truncate(&mut self, k: usize) -> Result<()> {
        let k = k.min(self.len());
        self.images = self.images.narrow(0, 0, k)?;
        self.indices.truncate(k);
        Ok(())
    }
}

/// `START:END:STEP` (END exclusive, all parts optional as in Python) → indices below `n`.
pub fn parse_indices(spec: Option<&str>, n: usize) -> Result<Vec<usize>> {
    let Some(spec) = spec else {
        return Ok((0..n).collect());
    };
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.is_empty() || parts.len() > 3 {
        bail!("--indices {spec:?}: expected START:END:STEP");
    }
    let num = |s: &str, default: usize, what: &str| -> Result<usize> {
        if s.trim().is_empty() {
            Ok(default)
        } else {
            s.trim().parse::<usize>().with_context(|| {
                format!("--indices {spec:?}: {what} is not a non-negative integer")
            })
        }
    };
    let start = num(parts[0], 0, "START")?;
    let end = num(parts.get(1).copied().unwrap_or(""), n, "END")?;
    let step = num(parts.get(2).copied().unwrap_or(""), 1, "STEP")?;
    if step == 0 {
        bail!("--indices {spec:?}: STEP must be at least 1");
    }
    if end > n {
        bail!("--indices {spec:?}: END {end} is past the {n} images in the file");
    }
    let v: Vec<usize> = (start..end).step_by(step).collect();
    if v.is_empty() {
        bail!("--indices {spec:?} selects no image");
    }
    Ok(v)
}

/// Parses an IDX image file (magic 0x00000803, u8 pixels): the pixels and `[N, H, W]`. The
/// size the header claims is computed with overflow checks and must match the file's.
pub fn parse_idx_images(bytes: &[u8], what: &str) -> Result<(Vec<u8>, [usize; 3])> {
    if bytes.len() < 16 || bytes[0..4] != [0, 0, 8, 3] {
        bail!(
            "{what}: not an IDX image file (expected the magic number 0x00000803 of *-images-idx3-ubyte)"
        );
    }
    let dim = |i: usize| {
        u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize
    };
    let (n, h, w) = (dim(4), dim(8), dim(12));
    let expected = n
        .checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .and_then(|v| v.checked_add(16));
    if expected != Some(bytes.len()) {
        bail!(
            "{what}: truncated or corrupt IDX file ({} bytes for {n} images of {h}×{w})",
            bytes.len()
        );
    }
    Ok((bytes[16..].to_vec(), [n, h, w]))
}

fn read_npy_images(path: &Path) -> Result<Tensor> {
    let t = Tensor::read_npy(path)
        .with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    let t = match t.rank() {
        3 => t.unsqueeze(1)?,
        4 => t,
        r => bail!(
            "{}: expected images of shape (N, C, H, W) or (N, H, W), got rank {r}",
            path.display()
        ),
    };
    if t.dtype() == DType::U8 {
        return Ok(t.to_dtype(DType::F32)?.affine(1.0 / 127.5, -1.0)?);
    }
    let t = t.to_dtype(DType::F32)?;
    genprior_nn::check_finite(&t, &path.display().to_string())?;
    let (lo, hi) = (
        t.min_all()?.to_scalar::<f32>()?,
        t.max_all()?.to_scalar::<f32>()?,
    );
    if lo < -1.001 || hi > 1.001 {
        bail!(
            "{}: float images must lie in [-1, 1], found values in [{lo}, {hi}]",
            path.display()
        );
    }
    Ok(t)
}

/// Loads the images of `path` (`.npy` of shape (N, C, H, W) or (N, H, W), uint8 0–255 or
/// float in [-1, 1]; or an IDX file), selects `indices` (a Python slice, all by default) and
/// zero-pads them (black) centred to `size` when smaller by an even margin (MNIST 28 → 32).
pub fn load_image_set(
    path: &Path,
    indices: Option<&str>,
    channels: usize,
    size: usize,
) -> Result<ImageSet> {
    if !path.is_file() {
        bail!("{}: no such image file (--images)", path.display());
    }
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let all = if is_npy {
        read_npy_images(path)?
    } else {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let (px, [n, h, w]) = parse_idx_images(&bytes, &path.display().to_string())?;
        let t = Tensor::from_vec(px, (n, 1, h, w), &Device::Cpu)?;
        t.to_dtype(DType::F32)?.affine(1.0 / 127.5, -1.0)?
    };
    let (n, c, h, w) = all.dims4()?;
    if c != channels {
        bail!(
            "{}: the images have {c} channel(s) but the model takes {channels}",
            path.display()
        );
    }
    let all = if (h, w) == (size, size) {
        all
    } else if h <= size && w <= size && (size - h).is_multiple_of(2) && (size - w).is_multiple_of(2)
    {
        let (ph, pw) = ((size - h) / 2, (size - w) / 2);
        ((all + 1.0)?
            .pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            - 1.0)?
    } else {
        bail!(
            "{}: the images are {w}×{h} but the model works on {size}×{size} (only centred zero-padding by an even margin is done)",
            path.display()
        );
    };
    let idx = parse_indices(indices, n)?;
    let sel = Tensor::new(
        idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        &Device::Cpu,
    )?;
    Ok(ImageSet {
        images: all.index_select(&sel, 0)?.contiguous()?,
        indices: idx,
        source: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_python_slices() {
        assert_eq!(
            parse_indices(Some("0:10000:100"), 10000).unwrap().len(),
            100
        );
        assert_eq!(parse_indices(Some("5:8"), 10).unwrap(), vec![5, 6, 7]);
        assert_eq!(parse_indices(Some("::4"), 10).unwrap(), vec![0, 4, 8]);
        assert_eq!(parse_indices(None, 3).unwrap(), vec![0, 1, 2]);
        assert!(parse_indices(Some("0:20"), 10).is_err());
        assert!(parse_indices(Some("0:10:0"), 10).is_err());
        assert!(parse_indices(Some("4:2"), 10).is_err());
        assert!(parse_indices(Some("a:2"), 10).is_err());
    }

    #[test]
    fn idx_header_sizes_are_checked() {
        let header = |n: u32, h: u32, w: u32| {
            let mut b = vec![0, 0, 8, 3];
            for v in [n, h, w] {
                b.extend(v.to_be_bytes());
            }
            b
        };
        let mut ok = header(2, 2, 3);
        ok.extend([7u8; 12]);
        let (px, dims) = parse_idx_images(&ok, "t").unwrap();
        assert_eq!((px.len(), dims), (12, [2, 2, 3]));
        // A header whose n·h·w overflows (or claims more than the file holds) is an error,
        // not a panic or a wrapped size.
        let e = parse_idx_images(&header(u32::MAX, u32::MAX, u32::MAX), "t").unwrap_err();
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
        let e = parse_idx_images(&header(1 << 31, 1 << 31, 4), "t").unwrap_err();
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
        assert!(parse_idx_images(&ok[..20], "t").is_err());
        assert!(parse_idx_images(&[1, 2, 3], "t").is_err());
    }
}
