//! 3×3, stride-1, padding-1 convolution by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray 2016): each 2×2 output tile is `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` for the 4×4 input
//! tile `d`, so the channel mixing becomes 16 independent GEMMs `M_ξ = U_ξ · V_ξ` (Co × Ci
//! times Ci × tiles) with 2.25× fewer multiply-adds than direct convolution. The transforms
//! use only additions and halvings, so the result matches direct convolution to f32 rounding.
//!
//! Tiles are processed in chunks that bound the V/M buffers; chunks (over images and tile
//! rows) run in parallel with single-threaded GEMMs.

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv::{gemm_f32, with_col, ConvGeom, SendPtr};

/// Floats in one chunk's V and M buffers together.
const CHUNK_BUDGET: usize = 1 << 21;

/// Tiles per GEMM below which the GEMMs are too thin to beat im2col.
const MIN_TILES: usize = 64;

/// Tile rows per chunk for this geometry: within the buffer budget, and enough chunks to
/// keep the threads busy.
fn chunk_rows(g: &ConvGeom, threads: usize) -> usize {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let per_row = 16 * (g.cin + g.cout) * tw;
    let mut rows = (CHUNK_BUDGET / per_row).clamp(1, th);
    let want = threads.div_ceil(g.batch);
    if th.div_ceil(rows) < want {
        rows = th.div_ceil(want.min(th));
    }
    rows
}

/// Whether this kernel computes the geometry (3×3, stride 1, padding 1) and is worth it
/// (at least [`MIN_TILES`] tiles per GEMM).
pub fn applies(g: &ConvGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.padding == 1
        && chunk_rows(g, super::threads()) * g.w.div_ceil(2) >= MIN_TILES
}

/// `U_ξ[co][ci] = (G g Gᵀ)_ξ` for the kernel `w` (Co × Ci × 3 × 3): 16 × Co × Ci. Callers
/// with constant weights compute it once and pass it to [`conv3x3_accumulate`].
pub fn transform_kernel(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * co * ci];
    for o in 0..co {
        for i in 0..ci {
            let g = &w[(o * ci + i) * 9..(o * ci + i + 1) * 9];
            // t = G g (4 × 3), then t Gᵀ (4 × 4).
            let mut t = [[0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            for (r, tr) in t.iter().enumerate() {
                let v = [
                    tr[0],
                    0.5 * (tr[0] + tr[1] + tr[2]),
                    0.5 * (tr[0] - tr[1] + tr[2]),
                    tr[2],
                ];
                for (c, &val) in v.iter().enumerate() {
                    u[((r * 4 + c) * co + o) * ci + i] = val;
                }
            }
        }
    }
    u
}

/// `y += conv3x3(x, w)` (stride 1, padding 1) for NCHW `x`; `y` is B × Co × H × W. `u` is
/// the transformed kernel ([`transform_kernel`] of `w`), computed here when absent.
pub fn conv3x3_accumulate(g: &ConvGeom, x: &[f32], w: &[f32], u: Option<&[f32]>, y: &mut [f32]) {
    let (h, wd, ci, co) = (g.h, g.w, g.cin, g.cout);
    let (th, tw) = (h.div_ceil(2), wd.div_ceil(2));
    let owned;
    let u = match u {
        Some(u) => {
            assert_eq!(u.len(), 16 * co * ci, "transformed kernel size");
            u
        }
        None => {
            owned = transform_kernel(w, co, ci);
            &owned
        }
    };
    let rows = chunk_rows(g, super::threads());
    let nchunks = th.div_ceil(rows);
    let tasks: Vec<(usize, usize)> = (0..g.batch)
        .flat_map(|b| (0..nchunks).map(move |j| (b, j)))
        .collect();
    let yp = SendPtr(y.as_mut_ptr());
    let run = |&(b, j): &(usize, usize)| {
        let ty0 = j * rows;
        let ty1 = (ty0 + rows).min(th);
        let nt = (ty1 - ty0) * tw;
        let xb = &x[b * ci * h * wd..(b + 1) * ci * h * wd];
        with_col(16 * (ci + co) * nt, |buf| {
            let (v, m) = buf.split_at_mut(16 * ci * nt);
            input_transform(xb, h, wd, ci, ty0, ty1, tw, v);
            for xi in 0..16 {
                // M_ξ (Co × nt) = U_ξ (Co × Ci) · V_ξ (Ci × nt).
                // SAFETY: the slices hold exactly these matrices.
                unsafe {
                    gemm_f32(
                        co,
                        nt,
                        ci,
                        m.as_mut_ptr().add(xi * co * nt),
                        (nt, 1),
                        false,
                        u.as_ptr().add(xi * co * ci),
                        (ci, 1),
                        v.as_ptr().add(xi * ci * nt),
                        (nt, 1),
                        Parallelism::None,
                    );
                }
            }
            // Rebind so the closure captures the whole `SendPtr` (Send), not its raw-pointer field.
            #[allow(clippy::redundant_locals)]
            let yp = yp;
            // SAFETY: task (b, j) writes only output rows [2·ty0, 2·ty1) of image b.
            let yb =
                unsafe { std::slice::from_raw_parts_mut(yp.0.add(b * co * h * wd), co * h * wd) };
            output_transform(m, co, h, wd, ty0, ty1, tw, yb);
        });
    };
    tasks.par_iter().for_each(run);
}

multiversion! {
    /// The input transform `Bᵀ d B` of one channel's tile row, separably and vectorised:
    /// `p[a]` are the 4 zero-padded input rows (padded column k = input column k − 1, length
    /// 2·tw + 2). Vertically `R = Bᵀ·rows`, then horizontally per tile
    /// `(R[2t] − R[2t+2], R[2t+1] + R[2t+2], R[2t+2] − R[2t+1], R[2t+1] − R[2t+3])`, computed on
    /// the even/odd columns. Writes `V_ξ` of the `tw` tiles to `dst[ξ·stride ..][..tw]`.
    fn input_row(p: &[Vec<f32>; 4], r: &mut [Vec<f32>; 3], tw: usize, dst: &mut [f32], stride: usize) {
        let n = 2 * tw + 2;
        assert!(15 * stride + tw <= dst.len());
        let (p0, p1, p2, p3) = (&p[0][..n], &p[1][..n], &p[2][..n], &p[3][..n]);
        let [ra, ev, od] = r;
        for a in 0..4 {
            {
                let ra = &mut ra[..n];
                match a {
                    0 => ra.iter_mut().zip(p0.iter().zip(p2)).for_each(|(d, (&x, &y))| *d = x - y),
                    1 => ra.iter_mut().zip(p1.iter().zip(p2)).for_each(|(d, (&x, &y))| *d = x + y),
                    2 => ra.iter_mut().zip(p2.iter().zip(p1)).for_each(|(d, (&x, &y))| *d = x - y),
                    _ => ra.iter_mut().zip(p1.iter().zip(p3)).for_each(|(d, (&x, &y))| *d = x - y),
                }
            }
            let (ev, od) = (&mut ev[..tw + 1], &mut od[..tw + 1]);
            for ((pair, e), o) in ra[..n].chunks_exact(2).zip(ev.iter_mut()).zip(od.iter_mut()) {
                *e = pair[0];
                *o = pair[1];
            }
            let (e0, e1, o0, o1) = (&ev[..tw], &ev[1..], &od[..tw], &od[1..]);
            let row = |q: usize| (a * 4 + q) * stride;
            let d0 = &mut dst[row(0)..row(0) + tw];
            d0.iter_mut().zip(e0.iter().zip(e1)).for_each(|(d, (&x, &y))| *d = x - y);
            let d1 = &mut dst[row(1)..row(1) + tw];
            d1.iter_mut().zip(o0.iter().zip(e1)).for_each(|(d, (&x, &y))| *d = x + y);
            let d2 = &mut dst[row(2)..row(2) + tw];
            d2.iter_mut().zip(e1.iter().zip(o0)).for_each(|(d, (&x, &y))| *d = x - y);
            let d3 = &mut dst[row(3)..row(3) + tw];
            d3.iter_mut().zip(o0.iter().zip(o1)).for_each(|(d, (&x, &y))| *d = x - y);
        }
    }
}

/// `V_ξ[ci][t] = (Bᵀ d B)_ξ` for the tiles of tile rows `[ty0, ty1)`; V is 16 × Ci × nt.
#[allow(clippy::too_many_arguments)]
fn input_transform(
    x: &[f32],
    h: usize,
    w: usize,
    ci: usize,
    ty0: usize,
    ty1: usize,
    tw: usize,
    v: &mut [f32],
) {
    let nt = (ty1 - ty0) * tw;
    let n = 2 * tw + 2;
    let mut p: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; n]);
    let mut r: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0f32; n]);
    for c in 0..ci {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for ty in ty0..ty1 {
            for (a, pa) in p.iter_mut().enumerate() {
                let row = 2 * ty as isize - 1 + a as isize;
                if row >= 0 && (row as usize) < h {
                    let src = &plane[row as usize * w..(row as usize + 1) * w];
                    pa[0] = 0.0;
                    pa[1..=w].copy_from_slice(src);
                    pa[w + 1..].fill(0.0);
                } else {
                    pa.fill(0.0);
                }
            }
            let base = c * nt + (ty - ty0) * tw;
            input_row(&p, &mut r, tw, &mut v[base..], ci * nt);
        }
    }
}

multiversion! {
    /// One output channel and one tile row of the output transform, vectorised over the
    /// tiles: `m[ξ·stride + tx]` are the 16 M values of tile `tx`; the 2×2 tiles are added into
    /// the output rows `top` and `bottom` (absent at an odd last row) via `scratch`
    /// (4 × tw floats).
    fn output_row(
        m: &[f32],
        stride: usize,
        tw: usize,
        top: &mut [f32],
        bottom: Option<&mut [f32]>,
        scratch: &mut [f32],
    ) {
        assert!(15 * stride + tw <= m.len() && scratch.len() >= 4 * tw);
        let (y00, rest) = scratch.split_at_mut(tw);
        let (y01, rest) = rest.split_at_mut(tw);
        let (y10, y11) = rest.split_at_mut(tw);
        for tx in 0..tw {
            let mut s = [[0f32; 4]; 4];
            for (r, row) in s.iter_mut().enumerate() {
                for (q, e) in row.iter_mut().enumerate() {
                    // SAFETY: (r·4 + q)·stride + tx < 15·stride + tw ≤ m.len() (asserted).
                    *e = unsafe { *m.get_unchecked((r * 4 + q) * stride + tx) };
                }
            }
            let mut t = [[0f32; 4]; 2];
            for q in 0..4 {
                t[0][q] = s[0][q] + s[1][q] + s[2][q];
                t[1][q] = s[1][q] - s[2][q] - s[3][q];
            }
            y00[tx] = t[0][0] + t[0][1] + t[0][2];
            y01[tx] = t[0][1] - t[0][2] - t[0][3];
            y10[tx] = t[1][0] + t[1][1] + t[1][2];
            y11[tx] = t[1][1] - t[1][2] - t[1][3];
        }
        let w = top.len();
        let interleave = |dst: &mut [f32], ev: &[f32], od: &[f32]| {
            for (pair, (&a, &b)) in dst.chunks_exact_mut(2).zip(ev.iter().zip(od)) {
                pair[0] += a;
                pair[1] += b;
            }
            if w % 2 == 1 {
                dst[w - 1] += ev[w / 2];
            }
        };
        interleave(top, y00, y01);
        if let Some(b) = bottom {
            interleave(b, y10, y11);
        }
    }
}

/// `y += Aᵀ M A` per tile (clipped at odd edges) for tile rows `[ty0, ty1)`.
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    co: usize,
    h: usize,
    w: usize,
    ty0: usize,
    ty1: usize,
    tw: usize,
    y: &mut [f32],
) {
    let nt = (ty1 - ty0) * tw;
    let mut scratch = vec![0f32; 4 * tw];
    for o in 0..co {
        let plane = &mut y[o * h * w..(o + 1) * h * w];
        for ty in ty0..ty1 {
            let r = 2 * ty;
            let (top, rest) = plane[r * w..].split_at_mut(w);
            let bottom = (r + 1 < h).then(|| &mut rest[..w]);
            output_row(
                &m[o * nt + (ty - ty0) * tw..],
                co * nt,
                tw,
                top,
                bottom,
                &mut scratch,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (h, wd) = (g.h as isize, g.w as isize);
        let mut y = vec![0f64; g.batch * g.cout * g.h * g.w];
        for b in 0..g.batch {
            for o in 0..g.cout {
                for r in 0..h {
                    for c in 0..wd {
                        let mut acc = 0f64;
                        for i in 0..g.cin {
                            for a in 0..3isize {
                                for bb in 0..3isize {
                                    let (rr, cc) = (r + a - 1, c + bb - 1);
                                    if rr >= 0 && cc >= 0 && rr < h && cc < wd {
                                        let xv = x[((b * g.cin + i) * g.h + rr as usize) * g.w
                                            + cc as usize];
                                        let wv =
                                            w[((o * g.cin + i) * 3 + a as usize) * 3 + bb as usize];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        y[((b * g.cout + o) * g.h + r as usize) * g.w + c as usize] = acc;
                    }
                }
            }
        }
        y
    }

    /// F(2×2, 3×3) equals direct convolution (f64) on odd and even sizes, one-pixel maps,
    /// several images, with and without a precomputed kernel, accumulating onto `y`.
    #[test]
    fn matches_direct_convolution() {
        let mut seed = 12345u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
                })
                .collect()
        };
        for &(batch, cin, cout, h, w) in &[
            (1usize, 3usize, 4usize, 5usize, 7usize),
            (2, 5, 3, 9, 9),
            (3, 8, 16, 16, 15),
            (1, 4, 2, 1, 1),
            (2, 3, 3, 2, 3),
            (1, 16, 8, 33, 34),
        ] {
            let g = ConvGeom {
                batch,
                cin,
                h,
                w,
                cout,
                kh: 3,
                kw: 3,
                stride: 1,
                padding: 1,
            };
            let x = rnd(batch * cin * h * w);
            let wt = rnd(cout * cin * 9);
            let want = direct(&g, &x, &wt);
            let u = transform_kernel(&wt, cout, cin);
            for pre in [None, Some(u.as_slice())] {
                let init = rnd(want.len());
                let mut y = init.clone();
                conv3x3_accumulate(&g, &x, &wt, pre, &mut y);
                let err = y
                    .iter()
                    .zip(&init)
                    .zip(&want)
                    .map(|((&a, &i), &d)| ((a - i) as f64 - d).abs())
                    .fold(0f64, f64::max);
                assert!(err < 1e-5 * (cin * 9) as f64, "{g:?}: max error {err}");
            }
        }
    }
}
