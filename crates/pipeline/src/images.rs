//! PNG input/output for image tensors in [-1, 1].
//!
//! Tensor → 8-bit follows diffusers' `numpy_to_pil`: v = round(clamp(x/2 + 0.5, 0, 1) · 255)
//! with round-half-to-even; 8-bit → tensor is x = v/127.5 − 1. One channel is written
//! as grayscale, three as RGB.
//! PNG files are written in place; use them for viewing, and the `.npy` outputs (written
//! atomically, see [`crate::files`]) for data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

/// Padding (pixels) between and around grid tiles.
pub const GRID_PADDING: usize = 2;

/// Map one value in [-1, 1] to 8 bits (clamped, rounded half to even).
pub fn to_u8(x: f32) -> u8 {
    let v = ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even();
    v as u8
}

/// Map 8 bits back to [-1, 1].
pub fn from_u8(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// Host copy of a `(B, C, H, W)` tensor as 8-bit values, checking for NaN.
fn batch_to_u8(batch: &Tensor) -> Result<(Vec<u8>, [usize; 4])> {
    let dims = batch.dims();
    let &[b, c, h, w] = dims else {
        bail!("expected an image batch (B, C, H, W), got shape {dims:?}");
    };
    if c != 1 && c != 3 {
        bail!("images must have 1 (grayscale) or 3 (RGB) channels, got {c}");
    }
    if b == 0 || h == 0 || w == 0 {
        bail!("empty image batch {dims:?}");
    }
    let data = batch
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if data.iter().any(|v| v.is_nan()) {
        bail!("the images contain NaN values (the sampler diverged)");
    }
    Ok((data.into_iter().map(to_u8).collect(), [b, c, h, w]))
}

/// Interleave planar CHW bytes of image `i` into HWC order.
fn hwc(bytes: &[u8], dims: [usize; 4], i: usize) -> Vec<u8> {
    let [_, c, h, w] = dims;
    let base = i * c * h * w;
    let mut out = vec![0u8; c * h * w];
    for ch in 0..c {
        for p in 0..h * w {
            out[p * c + ch] = bytes[base + ch * h * w + p];
        }
    }
    out
}

fn make_image(pixels: Vec<u8>, c: usize, w: usize, h: usize) -> Result<DynamicImage> {
    let (w32, h32) = (u32::try_from(w)?, u32::try_from(h)?);
    Ok(match c {
        1 => DynamicImage::ImageLuma8(
            GrayImage::from_raw(w32, h32, pixels).context("grayscale buffer size")?,
        ),
        3 => DynamicImage::ImageRgb8(
            RgbImage::from_raw(w32, h32, pixels).context("RGB buffer size")?,
        ),
        _ => bail!("images must have 1 or 3 channels, got {c}"),
    })
}

/// Fail early, with a clear message, when the folder `path` should be written into
/// does not exist.
pub fn check_parent_exists(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            bail!(
                "cannot write {}: the folder {} does not exist",
                path.display(),
                parent.display()
            );
        }
    }
    Ok(())
}

fn write_png(img: &DynamicImage, path: &Path) -> Result<()> {
    check_parent_exists(path)?;
    img.save_with_format(path, ImageFormat::Png)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Save one image, `(C, H, W)` or `(1, C, H, W)`, as a PNG.
pub fn save_image(image: &Tensor, path: impl AsRef<Path>) -> Result<()> {
    let image = if image.rank() == 3 {
        image.unsqueeze(0)?
    } else {
        image.clone()
    };
    if image.dim(0)? != 1 {
        bail!(
            "save_image takes one image, got a batch of shape {:?}",
            image.dims()
        );
    }
    let (bytes, dims) = batch_to_u8(&image)?;
    let img = make_image(hwc(&bytes, dims, 0), dims[1], dims[3], dims[2])?;
    write_png(&img, path.as_ref())
}

/// Save every image of a `(B, C, H, W)` batch as `dir/{prefix}{index:05}.png`, with
/// indices starting at `first_index`. Returns the paths written.
pub fn save_images(
    batch: &Tensor,
    dir: impl AsRef<Path>,
    prefix: &str,
    first_index: usize,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        bail!("output folder {} does not exist", dir.display());
    }
    let (bytes, dims) = batch_to_u8(batch)?;
    let mut paths = Vec::with_capacity(dims[0]);
    for i in 0..dims[0] {
        let img = make_image(hwc(&bytes, dims, i), dims[1], dims[3], dims[2])?;
        let path = dir.join(format!("{prefix}{:05}.png", first_index + i));
        write_png(&img, &path)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Grid layout for `n` tiles: ⌈√n⌉ columns, as many rows as needed.
pub fn grid_shape(n: usize) -> (usize, usize) {
    let mut cols = (n as f64).sqrt().ceil() as usize;
    while cols * cols < n {
        cols += 1;
    }
    let cols = cols.max(1);
    (n.div_ceil(cols), cols)
}

/// Save a `(B, C, H, W)` batch as one PNG grid: near-square (⌈√B⌉ columns), tiles
/// separated and surrounded by [`GRID_PADDING`] black pixels.
pub fn save_grid(batch: &Tensor, path: impl AsRef<Path>) -> Result<()> {
    let (_, cols) = grid_shape(batch.dim(0)?);
    save_grid_cols(batch, cols, path)
}

/// Save a `(B, C, H, W)` batch as one PNG grid with `cols` columns (row-major), tiles
/// separated and surrounded by [`GRID_PADDING`] black pixels.
pub fn save_grid_cols(batch: &Tensor, cols: usize, path: impl AsRef<Path>) -> Result<()> {
    let (bytes, dims) = batch_to_u8(batch)?;
    let [b, c, h, w] = dims;
    let cols = cols.max(1);
    let rows = b.div_ceil(cols);
    let p = GRID_PADDING;
    let gw = cols * (w + p) + p;
    let gh = rows * (h + p) + p;
    let mut canvas = vec![0u8; gw * gh * c];
    for i in 0..b {
        let tile = hwc(&bytes, dims, i);
        let (r, col) = (i / cols, i % cols);
        let (y0, x0) = (p + r * (h + p), p + col * (w + p));
        for y in 0..h {
            let src = &tile[y * w * c..(y + 1) * w * c];
            let dst = ((y0 + y) * gw + x0) * c;
            canvas[dst..dst + w * c].copy_from_slice(src);
        }
    }
    let img = make_image(canvas, c, gw, gh)?;
    write_png(&img, path.as_ref())
}

/// Load a PNG (or any format the `image` crate decodes) as a `(1, C, H, W)` f32 tensor
/// in [-1, 1]. `channels`: the channel count required (1 or 3); `None` keeps the file's
/// own (grayscale → 1, colour → 3). A fully opaque alpha channel is dropped; a
/// translucent one, or a channel-count mismatch, is an error.
pub fn load_image(
    path: impl AsRef<Path>,
    channels: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let path = path.as_ref();
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let color = img.color();
    if color.has_alpha() {
        let opaque = img.to_rgba8().pixels().all(|px| px.0[3] == 255);
        if !opaque {
            bail!(
                "{} has a transparent alpha channel; flatten it to {} first",
                path.display(),
                if color.has_color() {
                    "RGB"
                } else {
                    "grayscale"
                }
            );
        }
    }
    let file_channels = if color.has_color() { 3 } else { 1 };
    let c = channels.unwrap_or(file_channels);
    if c != file_channels {
        bail!(
            "{} is {} but {c} channel(s) are expected ({})",
            path.display(),
            if file_channels == 3 {
                "an RGB image"
            } else {
                "a grayscale image"
            },
            if c == 3 {
                "the model is RGB"
            } else {
                "the model is grayscale"
            }
        );
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hwc_bytes: Vec<u8> = if c == 1 {
        img.to_luma8().into_raw()
    } else {
        img.to_rgb8().into_raw()
    };
    let mut planar = vec![0f32; c * h * w];
    for p in 0..h * w {
        for ch in 0..c {
            planar[ch * h * w + p] = from_u8(hwc_bytes[p * c + ch]);
        }
    }
    Ok(Tensor::from_vec(planar, (1, c, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("genprior-images-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn value_mapping_matches_diffusers() {
        // diffusers: round(clip(x/2+0.5, 0, 1)·255), numpy rounding (half to even).
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(-3.0), 0);
        assert_eq!(to_u8(7.0), 255);
        assert_eq!(to_u8(0.0), 128); // 127.5 → 128 (even)
        assert_eq!(to_u8(f32::INFINITY), 255);
        // x = 2·(k + 0.5)/255 − 1 lands halfway between k and k+1.
        for k in [10u8, 11, 200] {
            let x = 2.0 * (k as f32 + 0.5) / 255.0 - 1.0;
            let v = to_u8(x);
            assert!(v == k || v == k + 1);
        }
        for v in 0..=255u8 {
            assert_eq!(to_u8(from_u8(v)), v);
        }
    }

    #[test]
    fn roundtrip_gray_and_rgb() {
        let dir = tmpdir("rt");
        let dev = Device::Cpu;
        for c in [1usize, 3] {
            let vals: Vec<f32> = (0..c * 5 * 7)
                .map(|i| from_u8((i * 37 % 256) as u8))
                .collect();
            let t = Tensor::from_vec(vals.clone(), (1, c, 5, 7), &dev).unwrap();
            let path = dir.join(format!("img{c}.png"));
            save_image(&t, &path).unwrap();
            let back = load_image(&path, Some(c), &dev).unwrap();
            assert_eq!(back.dims(), &[1, c, 5, 7]);
            let got = back.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, vals);
            let decoded = image::open(&path).unwrap();
            assert_eq!(decoded.color().has_color(), c == 3);
            // Channel mismatch is a clear error.
            let other = if c == 1 { 3 } else { 1 };
            let err = load_image(&path, Some(other), &dev)
                .unwrap_err()
                .to_string();
            assert!(err.contains("channel"), "{err}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn grid_layout_and_padding() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(4), (2, 2));
        assert_eq!(grid_shape(5), (2, 3));
        assert_eq!(grid_shape(10), (3, 4));
        let dir = tmpdir("grid");
        let dev = Device::Cpu;
        // 5 white 3x4 RGB tiles: 3 columns, 2 rows.
        let t = Tensor::ones((5, 3, 3, 4), DType::F32, &dev).unwrap();
        let path = dir.join("grid.png");
        save_grid(&t, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (3 * 6 + 2, 2 * 5 + 2));
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(6, 2).0, [0, 0, 0]); // padding between tiles
        assert_eq!(img.get_pixel(8, 2).0, [255, 255, 255]);
        // 6th slot (row 1, col 2) is empty.
        assert_eq!(img.get_pixel(14, 9).0, [0, 0, 0]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dev = Device::Cpu;
        let t = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).unwrap();
        assert!(save_grid(&t, "/tmp/x.png")
            .unwrap_err()
            .to_string()
            .contains("channels"));
        let t = Tensor::zeros((1, 1, 4, 4), DType::F32, &dev).unwrap();
        let err = save_grid(&t, "/nonexistent-genprior-dir/x.png")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let nan = Tensor::from_vec(vec![f32::NAN; 4], (1, 1, 2, 2), &dev).unwrap();
        assert!(save_image(&nan, "/tmp/nan.png")
            .unwrap_err()
            .to_string()
            .contains("NaN"));
        assert!(load_image("/nonexistent-genprior.png", None, &dev).is_err());
    }
}
