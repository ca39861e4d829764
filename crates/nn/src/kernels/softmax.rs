//! Numerically stable softmax over the last dimension of f32 rows (max-subtracted, vectorised
//! `exp`, f64-folded row sums), rows in parallel. Its backward is `gx = y ⊙ (gy − Σ gy·y)`
//! per row.

use rayon::prelude::*;

use super::simd::{exp, sum2_f64, LANES};

multiversion! {
    fn softmax_row(x: &[f32], y: &mut [f32]) {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        let m = chunks
            .remainder()
            .iter()
            .chain(lanes.iter())
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        for (d, &v) in y.iter_mut().zip(x) {
            *d = exp(v - m);
        }
        let yr = &*y;
        let inv = (1.0 / sum2_f64(yr, yr, |a, _| a)) as f32;
        y.iter_mut().for_each(|d| *d *= inv);
    }
}

multiversion! {
    fn softmax_row_backward(y: &[f32], gy: &[f32], gx: &mut [f32]) {
        let dot = sum2_f64(y, gy, |a, b| a * b) as f32;
        for ((d, &a), &b) in gx.iter_mut().zip(y).zip(gy) {
            *d = a * (b - dot);
        }
    }
}

/// Rows of length `n` (the slice length must be a multiple of `n`).
pub fn softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    assert!(n > 0 && x.len().is_multiple_of(n), "softmax row length");
    let mut y = vec![0f32; x.len()];
    // Several rows per task keep the scheduling overhead small for short rows.
    let rows_per_task = (4096 / n).max(1);
    y.par_chunks_mut(n * rows_per_task)
        .zip(x.par_chunks(n * rows_per_task))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(n).zip(xc.chunks(n)) {
                softmax_row(xr, yr);
            }
        });
    y
}

/// `gx = y ⊙ (gy − Σ gy·y)` per row of length `n`.
pub fn softmax_rows_backward(y: &[f32], gy: &[f32], n: usize) -> Vec<f32> {
    assert!(
        n > 0 && y.len().is_multiple_of(n) && y.len() == gy.len(),
        "softmax gradient size"
    );
    let mut gx = vec![0f32; y.len()];
    let rows_per_task = (4096 / n).max(1);
    gx.par_chunks_mut(n * rows_per_task)
        .zip(
            y.par_chunks(n * rows_per_task)
                .zip(gy.par_chunks(n * rows_per_task)),
        )
        .for_each(|(gc, (yc, gyc))| {
            for ((gr, yr), gyr) in gc.chunks_mut(n).zip(yc.chunks(n)).zip(gyc.chunks(n)) {
                softmax_row_backward(yr, gyr, gr);
            }
        });
    gx
}
