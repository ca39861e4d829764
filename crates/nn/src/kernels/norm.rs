//! Group normalisation over NC* f32 data, optionally fused with SiLU, and its backward.
//!
//! For each (image, group) the `cg·S` values are contiguous (channels `g·cg..(g+1)·cg`, `S`
//! spatial positions). Statistics are accumulated in f64 in two passes (mean, then centred
//! sum of squares, f32 lanes folded into f64), as accurate as torch's Welford. Groups run in
//! parallel; the loops are compiled for AVX-512/AVX2 and picked at run time.

use rayon::prelude::*;

use super::simd::{sigmoid, sum2_f64, sums_f64};

/// Shape of a group norm: `batch × channels × spatial`, `groups` dividing `channels`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnGeom {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
    pub groups: usize,
    pub eps: f64,
    /// Apply SiLU after the affine transform.
    pub silu: bool,
}

impl GnGeom {
    fn group_len(&self) -> usize {
        self.channels / self.groups * self.spatial
    }
}

multiversion! {
    /// Mean and 1/sqrt(var + eps) of one group of `x + offset` (channel `c` of the group is
    /// `x[c·s..(c+1)·s]` with offset `offs[c]`), in one pass: sums of x + o − K and their
    /// squares with the shift K the mean of the first 256 values, so a large common offset
    /// does not cancel catastrophically (the error grows with (mean − K)²/var, O(1) here).
    fn stats(x: &[f32], s: usize, offs: &[f32], eps: f64) -> (f32, f32) {
        let n = x.len();
        let head = &x[..s.min(256)];
        let shift = (head.iter().map(|&a| a as f64).sum::<f64>() / head.len() as f64) as f32 + offs[0];
        let (mut s1, mut s2) = (0f64, 0f64);
        for (xc, &o) in x.chunks(s).zip(offs) {
            let d = o - shift;
            let (a, b) = sums_f64(xc, |v| v + d, |v| (v + d) * (v + d));
            s1 += a;
            s2 += b;
        }
        let m = s1 / n as f64;
        let var = (s2 / n as f64 - m * m).max(0.0);
        ((shift as f64 + m) as f32, (1.0 / (var + eps).sqrt()) as f32)
    }
}

multiversion! {
    /// `dst = src·a + b`, then SiLU when asked.
    fn affine(src: &[f32], dst: &mut [f32], a: f32, b: f32, silu: bool) {
        if silu {
            for (d, &v) in dst.iter_mut().zip(src) {
                let t = v * a + b;
                *d = t * sigmoid(t);
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * a + b;
            }
        }
    }
}

multiversion! {
    /// One channel of the backward: writes `gy` (the gradient at the affine output) into
    /// `gy_out` and returns `(Σ gy·x̂, Σ gy)`.
    fn channel_gy(
        x: &[f32],
        gz: &[f32],
        gy_out: &mut [f32],
        mean: f32,
        rstd: f32,
        gamma: f32,
        beta: f32,
        silu: bool,
    ) -> (f64, f64) {
        if silu {
            for ((g, &v), &z) in gy_out.iter_mut().zip(x).zip(gz) {
                let t = (v - mean) * rstd * gamma + beta;
                let s = sigmoid(t);
                *g = z * (s * (1.0 + t * (1.0 - s)));
            }
        } else {
            gy_out.copy_from_slice(gz);
        }
        let gy = &*gy_out;
        let dg = sum2_f64(gy, x, |g, v| g * ((v - mean) * rstd));
        let db = sum2_f64(gy, gy, |g, _| g);
        (dg, db)
    }
}

multiversion! {
    /// `gx = rstd·(gy·γ − m1 − x̂·m2)` in place over `gy`.
    fn channel_gx(x: &[f32], gy: &mut [f32], mean: f32, rstd: f32, gamma: f32, m1: f32, m2: f32) {
        for (g, &v) in gy.iter_mut().zip(x) {
            let xh = (v - mean) * rstd;
            *g = rstd * (*g * gamma - m1 - xh * m2);
        }
    }
}

/// Per-(image, channel) modulation around the norm: `offset` is added to the input before
/// normalising, and the affine output is `(x̂·γ + β)·(1 + scale) + shift` — the time-embedding
/// injections of the UNet resnet blocks. Each slice holds `batch × channels` values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Modulation<'a> {
    pub offset: Option<&'a [f32]>,
    pub scale: Option<&'a [f32]>,
    pub shift: Option<&'a [f32]>,
}

impl Modulation<'_> {
    fn check(&self, n: usize) {
        for v in [self.offset, self.scale, self.shift].into_iter().flatten() {
            assert_eq!(v.len(), n, "group norm modulation size");
        }
    }

    /// `(offsets, γ', β')` of the `cg` channels of group `g` of image `b`.
    fn group(
        &self,
        geom: &GnGeom,
        b: usize,
        g: usize,
        gamma: &[f32],
        beta: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let cg = geom.channels / geom.groups;
        let idx = |c: usize| b * geom.channels + g * cg + c;
        let offs = (0..cg)
            .map(|c| self.offset.map_or(0.0, |o| o[idx(c)]))
            .collect();
        let (mut ga, mut be) = (Vec::with_capacity(cg), Vec::with_capacity(cg));
        for c in 0..cg {
            let ch = g * cg + c;
            let k = self.scale.map_or(1.0, |sc| 1.0 + sc[idx(c)]);
            ga.push(gamma[ch] * k);
            be.push(beta[ch] * k + self.shift.map_or(0.0, |sh| sh[idx(c)]));
        }
        (offs, ga, be)
    }
}

/// `y = GN(x)·γ + β` (then SiLU when `geom.silu`).
pub fn group_norm_forward(geom: &GnGeom, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    group_norm_forward_mod(geom, x, gamma, beta, &Modulation::default())
}

/// `y = act((GN(x + offset)·γ + β)·(1 + scale) + shift)`, act = SiLU when `geom.silu`.
pub fn group_norm_forward_mod(
    geom: &GnGeom,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    m: &Modulation,
) -> Vec<f32> {
    let gl = geom.group_len();
    let s = geom.spatial;
    assert_eq!(
        x.len(),
        geom.batch * geom.channels * s,
        "group norm input size"
    );
    m.check(geom.batch * geom.channels);
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(gl)
        .zip(x.par_chunks(gl))
        .enumerate()
        .for_each(|(bg, (yg, xg))| {
            let (b, g) = (bg / geom.groups, bg % geom.groups);
            let (offs, ga, be) = m.group(geom, b, g, gamma, beta);
            let (mean, rstd) = stats(xg, s, &offs, geom.eps);
            for (c, ((&o, &gc), &bc)) in offs.iter().zip(&ga).zip(&be).enumerate() {
                let a = rstd * gc;
                let bb = bc - (mean - o) * a;
                affine(
                    &xg[c * s..(c + 1) * s],
                    &mut yg[c * s..(c + 1) * s],
                    a,
                    bb,
                    geom.silu,
                );
            }
        });
    y
}

/// Gradients of [`group_norm_forward`] given `gz = ∂L/∂output`: returns `(gx, gγ, gβ)`.
///
/// With x̂ the normalised input and `gy` the gradient at the affine output (times SiLU′ when
/// fused): `gγ = Σ gy·x̂`, `gβ = Σ gy`, and per group
/// `gx = rstd · (gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂))` with `gx̂ = gy·γ`, whose group sums are
/// `Σ γ_c·gβ_c` and `Σ γ_c·gγ_c` over the group's channels.
pub fn group_norm_backward(
    geom: &GnGeom,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    gz: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    group_norm_backward_mod(geom, x, gamma, beta, gz, &Modulation::default())
}

/// [`group_norm_backward`] of [`group_norm_forward_mod`]. `gx` is exact for any modulation
/// (∂(x + offset)/∂x = 1, and γ, β become γ(1 + scale), β(1 + scale) + shift); the returned
/// `gγ, gβ` are those of the modulated γ', β' and equal ∂L/∂γ, ∂L/∂β only without `scale`.
pub fn group_norm_backward_mod(
    geom: &GnGeom,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    gz: &[f32],
    m: &Modulation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let gl = geom.group_len();
    let cg = geom.channels / geom.groups;
    let s = geom.spatial;
    assert_eq!(x.len(), gz.len(), "group norm gradient size");
    m.check(geom.batch * geom.channels);
    let mut gx = vec![0f32; x.len()];
    // Per (image, group): gx, and this group's contributions to gγ, gβ (cg each).
    let partial: Vec<Vec<(f64, f64)>> = gx
        .par_chunks_mut(gl)
        .zip(x.par_chunks(gl).zip(gz.par_chunks(gl)))
        .enumerate()
        .map(|(bg, (gxg, (xg, gzg)))| {
            let (b, g) = (bg / geom.groups, bg % geom.groups);
            let (offs, ga, be) = m.group(geom, b, g, gamma, beta);
            let (mean, rstd) = stats(xg, s, &offs, geom.eps);
            let sums: Vec<(f64, f64)> = (0..cg)
                .map(|c| {
                    let r = c * s..(c + 1) * s;
                    channel_gy(
                        &xg[r.clone()],
                        &gzg[r.clone()],
                        &mut gxg[r],
                        mean - offs[c],
                        rstd,
                        ga[c],
                        be[c],
                        geom.silu,
                    )
                })
                .collect();
            let n = gl as f64;
            let (mut s1, mut s2) = (0f64, 0f64);
            for (c, &(dg, db)) in sums.iter().enumerate() {
                s1 += ga[c] as f64 * db;
                s2 += ga[c] as f64 * dg;
            }
            let (m1, m2) = ((s1 / n) as f32, (s2 / n) as f32);
            for c in 0..cg {
                let r = c * s..(c + 1) * s;
                channel_gx(
                    &xg[r.clone()],
                    &mut gxg[r],
                    mean - offs[c],
                    rstd,
                    ga[c],
                    m1,
                    m2,
                );
            }
            sums
        })
        .collect();
    let mut dgamma = vec![0f64; geom.channels];
    let mut dbeta = vec![0f64; geom.channels];
    for (bg, sums) in partial.iter().enumerate() {
        let g = bg % geom.groups;
        for (c, &(dg, db)) in sums.iter().enumerate() {
            dgamma[g * cg + c] += dg;
            dbeta[g * cg + c] += db;
        }
    }
    let to32 = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
    (gx, to32(dgamma), to32(dbeta))
}
