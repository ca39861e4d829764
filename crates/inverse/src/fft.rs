//! 2-D FFTs on host buffers (rustfft), row-major `h × w` complex arrays.

use std::sync::Arc;

use num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

/// Planned forward and inverse 2-D FFTs of one size. Both are unnormalised (rustfft's
/// convention); [`Fft2::forward_ortho`] / [`Fft2::inverse_ortho`] apply the 1/√(hw) factor that
/// makes the transform unitary.
pub struct Fft2 {
    h: usize,
    w: usize,
    row_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
}

impl Fft2 {
    pub fn new(h: usize, w: usize) -> Self {
        let mut planner = FftPlanner::<f64>::new();
        Self {
            h,
            w,
            row_fwd: planner.plan_fft_forward(w),
            row_inv: planner.plan_fft_inverse(w),
            col_fwd: planner.plan_fft_forward(h),
            col_inv: planner.plan_fft_inverse(h),
        }
    }

    pub fn len(&self) -> usize {
        self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn apply(&self, buf: &mut [Complex64], row: &Arc<dyn Fft<f64>>, col: &Arc<dyn Fft<f64>>) {
        let (h, w) = (self.h, self.w);
        debug_assert_eq!(buf.len(), h * w);
        for r in buf.chunks_exact_mut(w) {
            row.process(r);
        }
        let mut t = vec![Complex64::new(0.0, 0.0); h * w];
        for i in 0..h {
            for j in 0..w {
                t[j * h + i] = buf[i * w + j];
            }
        }
        for c in t.chunks_exact_mut(h) {
            col.process(c);
        }
        for i in 0..h {
            for j in 0..w {
                buf[i * w + j] = t[j * h + i];
            }
        }
    }

    /// Unnormalised forward DFT: X[k] = Σ x[n] e^{-2πi k·n/N}.
    pub fn forward(&self, buf: &mut [Complex64]) {
        self.apply(buf, &self.row_fwd, &self.col_fwd);
    }

    /// Unnormalised inverse DFT: x[n] = Σ X[k] e^{+2πi k·n/N} (no 1/N).
    pub fn inverse(&self, buf: &mut [Complex64]) {
        self.apply(buf, &self.row_inv, &self.col_inv);
    }

    /// Unitary forward DFT (1/√(hw)).
    pub fn forward_ortho(&self, buf: &mut [Complex64]) {
        self.forward(buf);
        let s = 1.0 / (self.len() as f64).sqrt();
        buf.iter_mut().for_each(|v| *v *= s);
    }

    /// Unitary inverse DFT (1/√(hw)); the adjoint of [`Fft2::forward_ortho`].
    pub fn inverse_ortho(&self, buf: &mut [Complex64]) {
        self.inverse(buf);
        let s = 1.0 / (self.len() as f64).sqrt();
        buf.iter_mut().for_each(|v| *v *= s);
    }
}

/// Circular shift of a row-major `h × w` array: `out[(i+sh)%h][(j+sw)%w] = x[i][j]`.
pub fn roll2<T: Copy>(x: &[T], h: usize, w: usize, sh: usize, sw: usize) -> Vec<T> {
    let mut out = x.to_vec();
    for i in 0..h {
        for j in 0..w {
            out[((i + sh) % h) * w + (j + sw) % w] = x[i * w + j];
        }
    }
    out
}

/// numpy's `fftshift` (zero frequency moved to index ⌊n/2⌋ along each axis).
pub fn fftshift2<T: Copy>(x: &[T], h: usize, w: usize) -> Vec<T> {
    roll2(x, h, w, h / 2, w / 2)
}

/// numpy's `ifftshift`, the inverse of [`fftshift2`].
pub fn ifftshift2<T: Copy>(x: &[T], h: usize, w: usize) -> Vec<T> {
    roll2(x, h, w, h - h / 2, w - w / 2)
}
