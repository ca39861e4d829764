//! Image quality metrics on images in [0, 1] (convert from [-1, 1] with [`to_unit_range`]).
//!
//! - PSNR = 10 log₁₀(1 / MSE) with data range 1, per image over all C·H·W values.
//! - SSIM (Wang et al. 2004) with an 11 × 11 Gaussian window, σ = 1.5 (radius 5), K1 = 0.01,
//!   K2 = 0.03, data range 1, population (not sample) covariances, the local statistics computed
//!   with half-sample-symmetric ("reflect") borders and the SSIM map averaged over the pixels at
//!   least 5 from the border, then over channels. This is scikit-image's
//!   `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//!   data_range=1)`.

use candle_core::Tensor;

use crate::error::{InverseError, Result};
use crate::host::to_host;

/// Maps a [-1, 1] image tensor to [0, 1] ((x + 1)/2, clamped).
pub fn to_unit_range(x: &Tensor) -> Result<Tensor> {
    Ok(((x + 1.0)? * 0.5)?.clamp(0.0f64, 1.0f64)?)
}

fn pair_dims(a: &Tensor, b: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match (a.dims(), b.dims()) {
        ([b0, c, h, w], d2) if a.dims() == d2 && *b0 > 0 => Ok((*b0, *c, *h, *w)),
        (d1, d2) => Err(InverseError::InvalidArgument(format!(
            "metrics need two (B, C, H, W) tensors of equal shape, got {d1:?} and {d2:?}"
        ))),
    }
}

/// PSNR of two equal-length buffers of values in [0, 1] (∞ when identical).
pub fn psnr_host(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

/// PSNR per batch element of two `(B, C, H, W)` tensors in [0, 1].
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let (bs, c, h, w) = pair_dims(a, b)?;
    let (va, vb) = (to_host(a)?, to_host(b)?);
    let n = c * h * w;
    Ok((0..bs)
        .map(|i| psnr_host(&va[i * n..(i + 1) * n], &vb[i * n..(i + 1) * n]))
        .collect())
}

const SSIM_SIGMA: f64 = 1.5;
const SSIM_RADIUS: usize = 5;
const SSIM_K1: f64 = 0.01;
const SSIM_K2: f64 = 0.03;

fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - i - 1;
        } else {
            return i as usize;
        }
    }
}

/// Separable Gaussian filter with reflect borders.
fn gauss_filter(x: &[f64], h: usize, w: usize, g: &[f64]) -> Vec<f64> {
    let r = SSIM_RADIUS as isize;
    let mut t = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            let mut s = 0.0;
            for k in -r..=r {
                s += g[(k + r) as usize] * x[i * w + reflect(j as isize + k, w)];
            }
            t[i * w + j] = s;
        }
    }
    let mut out = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            let mut s = 0.0;
            for k in -r..=r {
                s += g[(k + r) as usize] * t[reflect(i as isize + k, h) * w + j];
            }
            out[i * w + j] = s;
        }
    }
    out
}

/// Mean SSIM of two single-channel `h × w` images in [0, 1]; `h, w ≥ 11`.
pub fn ssim_channel(x: &[f64], y: &[f64], h: usize, w: usize) -> Result<f64> {
    let win = 2 * SSIM_RADIUS + 1;
    if h < win || w < win || x.len() != h * w || y.len() != h * w {
        return Err(InverseError::InvalidArgument(format!(
            "SSIM needs images of at least {win}×{win} with h·w values, got {h}×{w}"
        )));
    }
    let mut g: Vec<f64> = (0..win)
        .map(|k| {
            let d = k as f64 - SSIM_RADIUS as f64;
            (-0.5 * d * d / (SSIM_SIGMA * SSIM_SIGMA)).exp()
        })
        .collect();
    let gs: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= gs);
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(y).map(|(a, b)| a * b).collect();
    let (ux, uy) = (gauss_filter(x, h, w, &g), gauss_filter(y, h, w, &g));
    let (uxx, uyy, uxy) = (
        gauss_filter(&xx, h, w, &g),
        gauss_filter(&yy, h, w, &g),
        gauss_filter(&xy, h, w, &g),
    );
    let (c1, c2) = (SSIM_K1 * SSIM_K1, SSIM_K2 * SSIM_K2);
    let mut sum = 0.0;
    let mut cnt = 0usize;
    for i in SSIM_RADIUS..h - SSIM_RADIUS {
        for j in SSIM_RADIUS..w - SSIM_RADIUS {
            let k = i * w + j;
            let (mx, my) = (ux[k], uy[k]);
            let vx = uxx[k] - mx * mx;
            let vy = uyy[k] - my * my;
            let vxy = uxy[k] - mx * my;
            sum += ((2.0 * mx * my + c1) * (2.0 * vxy + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
            cnt += 1;
        }
    }
    Ok(sum / cnt as f64)
}

/// SSIM per batch element of two `(B, C, H, W)` tensors in [0, 1] (mean over channels).
pub fn ssim(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let (bs, c, h, w) = pair_dims(a, b)?;
    let (va, vb) = (to_host(a)?, to_host(b)?);
    let n = h * w;
    (0..bs)
        .map(|i| {
            let mut s = 0.0;
            for ch in 0..c {
                let o = (i * c + ch) * n;
                s += ssim_channel(&va[o..o + n], &vb[o..o + n], h, w)?;
            }
            Ok(s / c as f64)
        })
        .collect()
}
