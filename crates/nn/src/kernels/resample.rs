//! Nearest-neighbour ×2 upsampling of NCHW f32 planes and its adjoint, the sum over 2×2
//! blocks. Planes run in parallel.

use rayon::prelude::*;

/// `y[p, 2i + a, 2j + b] = x[p, i, j]` for `planes` planes of `h × w`.
pub fn upsample2x(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(x.len(), planes * h * w, "upsample input size");
    let mut y = vec![0f32; planes * 4 * h * w];
    y.par_chunks_mut(4 * h * w)
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for i in 0..h {
                let src = &xp[i * w..(i + 1) * w];
                let (top, bottom) = yp[2 * i * 2 * w..(2 * i + 2) * 2 * w].split_at_mut(2 * w);
                for (d, &v) in top.chunks_exact_mut(2).zip(src) {
                    d[0] = v;
                    d[1] = v;
                }
                bottom.copy_from_slice(top);
            }
        });
    y
}

/// `g[p, i, j] = Σ_{a,b ∈ {0,1}} gy[p, 2i + a, 2j + b]`: the adjoint of [`upsample2x`]
/// (`h × w` is the small size).
pub fn sum_pool2x(gy: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(gy.len(), planes * 4 * h * w, "upsample gradient size");
    let mut g = vec![0f32; planes * h * w];
    g.par_chunks_mut(h * w)
        .zip(gy.par_chunks(4 * h * w))
        .for_each(|(gp, yp)| {
            for i in 0..h {
                let top = &yp[2 * i * 2 * w..(2 * i + 1) * 2 * w];
                let bottom = &yp[(2 * i + 1) * 2 * w..(2 * i + 2) * 2 * w];
                for (j, d) in gp[i * w..(i + 1) * w].iter_mut().enumerate() {
                    *d = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
                }
            }
        });
    g
}
