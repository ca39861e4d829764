//! 2-D convolution (groups 1, dilation 1, any stride/padding) as im2col + GEMM, and its input
//! gradient as GEMM + col2im (the exact adjoint), both on NCHW f32 slices.
//!
//! Per image the output is `Y (Co × P) = W (Co × K) · col (K × P)` with `K = Ci·kh·kw` and
//! `P = Ho·Wo`, so the torch weight layout is used as is and the result lands in NCHW without
//! a transpose. `col` is built a band of output rows at a time (at most [`COL_BUDGET`] floats),
//! so memory stays bounded at 256 px. 1×1 stride-1 convolutions skip im2col. Work is split
//! over (image, band) pairs across threads with single-threaded GEMMs; when there are fewer
//! pairs than threads, the GEMM itself runs multi-threaded.

use gemm::Parallelism;
use rayon::prelude::*;

/// Floats in one im2col band (4 MiB).
pub const COL_BUDGET: usize = 1 << 20;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        let ho = (self.h + 2 * self.padding - self.kh) / self.stride + 1;
        let wo = (self.w + 2 * self.padding - self.kw) / self.stride + 1;
        (ho, wo)
    }

    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// The output columns `[lo, hi)` whose kernel column `kj` reads inside the input:
    /// `0 ≤ ox·s + kj − p < W`.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let (_, wo) = self.out_hw();
        let (s, p) = (self.stride, self.padding);
        let lo = p.saturating_sub(kj).div_ceil(s).min(wo);
        let hi = if self.w + p > kj {
            ((self.w + p - kj - 1) / s + 1).min(wo)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// `(rows per band, bands per image)`: bands fit in [`COL_BUDGET`], are as even as
    /// possible, and there are enough (image, band) tasks to keep `threads` busy.
    fn bands(&self, threads: usize) -> (usize, usize) {
        let (ho, wo) = self.out_hw();
        let max_rows = (COL_BUDGET / (self.k() * wo).max(1)).clamp(1, ho);
        let want = threads.div_ceil(self.batch).min(ho);
        let nb = ho.div_ceil(max_rows).max(want);
        let band = ho.div_ceil(nb);
        (band, ho.div_ceil(band))
    }

    /// Whether the geometry is valid (kernel fits in the padded input, nothing is zero).
    pub fn check(&self) -> Result<(), String> {
        if self.stride == 0 {
            return Err("conv2d: stride must be at least 1".into());
        }
        if [
            self.batch, self.cin, self.h, self.w, self.cout, self.kh, self.kw,
        ]
        .contains(&0)
        {
            return Err(format!("conv2d: empty dimension in {self:?}"));
        }
        if self.h + 2 * self.padding < self.kh || self.w + 2 * self.padding < self.kw {
            return Err(format!(
                "conv2d: kernel {}×{} larger than the padded input {}×{}",
                self.kh,
                self.kw,
                self.h + 2 * self.padding,
                self.w + 2 * self.padding
            ));
        }
        Ok(())
    }
}

/// Writes the im2col band for output rows `[oy0, oy1)` of one image `x` (Ci × H × W) into
/// `col` (K × (oy1 − oy0)·Wo, row-major).
fn im2col(g: &ConvGeom, x: &[f32], oy0: usize, oy1: usize, col: &mut [f32]) {
    let (_, wo) = g.out_hw();
    let np = (oy1 - oy0) * wo;
    let (s, p) = (g.stride, g.padding);
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (ci * g.kh + ki) * g.kw + kj;
                let row = &mut col[r * np..(r + 1) * np];
                let (lo, hi) = g.valid_cols(kj);
                for oy in oy0..oy1 {
                    let dst = &mut row[(oy - oy0) * wo..(oy - oy0 + 1) * wo];
                    let iy = (oy * s + ki) as isize - p as isize;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if s == 1 {
                        let ix0 = lo + kj - p;
                        dst[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
                    } else {
                        for (ox, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[(ox + lo) * s + kj - p];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the im2col band `col` for output rows `[oy0, oy1)` back into the image gradient
/// gradient planes `gx_planes` (a run of input channels, H × W each): the adjoint of
/// [`im2col`]. `col` holds the rows of those channels only.
fn col2im(g: &ConvGeom, col: &[f32], oy0: usize, oy1: usize, gx_planes: &mut [f32]) {
    let (_, wo) = g.out_hw();
    let np = (oy1 - oy0) * wo;
    let (s, p) = (g.stride, g.padding);
    let nplanes = gx_planes.len() / (g.h * g.w);
    for dc in 0..nplanes {
        let plane = &mut gx_planes[dc * g.h * g.w..(dc + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (dc * g.kh + ki) * g.kw + kj;
                let row = &col[r * np..(r + 1) * np];
                let (lo, hi) = g.valid_cols(kj);
                for oy in oy0..oy1 {
                    let iy = (oy * s + ki) as isize - p as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &row[(oy - oy0) * wo..(oy - oy0 + 1) * wo];
                    let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if s == 1 {
                        let ix0 = lo + kj - p;
                        for (d, v) in dst[ix0..ix0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    } else {
                        for ox in lo..hi {
                            dst[ox * s + kj - p] += src[ox];
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m × n) = [dst +] a (m × k) · b (k × n)` on raw strided f32 data.
/// Strides are (row stride, column stride) in elements.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    (b_rs, b_cs): (usize, usize),
    par: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        par,
    )
}

pub(super) fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

thread_local! {
    /// Each thread's im2col band, kept between calls (a fresh multi-MiB buffer per call would
    /// page-fault on every use).
    static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's band buffer, grown to at least `len` floats.
pub(super) fn with_col<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COL.with(|c| match c.try_borrow_mut() {
        Ok(mut col) => {
            if col.len() < len {
                col.resize(len, 0.0);
            }
            f(&mut col[..len])
        }
        // Re-entered on this thread (a rayon worker that stole another convolution while
        // waiting): use a private buffer.
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// A raw pointer that may cross threads; each task writes a disjoint region.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `y = conv2d(x, w) + bias [+ residual]` for NCHW `x` (B × Ci × H × W), `w` (Co × Ci × kh ×
/// kw), `bias` (Co), `residual` (B × Co × Ho × Wo, added for free: the GEMM accumulates onto
/// it); returns `y` (B × Co × Ho × Wo).
///
/// 3×3 stride-1 padding-1 convolutions on large enough maps run as Winograd F(2×2, 3×3)
/// ([`super::winograd`]); `wino` is the transformed kernel when the caller caches it.
pub fn conv2d_forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    wino: Option<&[f32]>,
) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (k, pout) = (g.k(), ho * wo);
    let img = g.cin * g.h * g.w;
    assert_eq!(x.len(), g.batch * img, "conv2d input size");
    assert_eq!(w.len(), g.cout * k, "conv2d kernel size");
    let mut y = vec![0f32; g.batch * g.cout * pout];
    // Start from the bias (and residual) so the GEMM accumulates onto it.
    let accumulate = bias.is_some() || residual.is_some();
    if let Some(b) = bias {
        assert_eq!(b.len(), g.cout, "conv2d bias size");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), y.len(), "conv2d residual size");
    }
    if accumulate {
        y.par_chunks_mut(pout).enumerate().for_each(|(i, row)| {
            let b = bias.map_or(0.0, |b| b[i % g.cout]);
            match residual {
                Some(r) => {
                    for (d, &v) in row.iter_mut().zip(&r[i * pout..(i + 1) * pout]) {
                        *d = v + b;
                    }
                }
                None => row.fill(b),
            }
        });
    }
    if super::winograd::applies(g) {
        super::winograd::conv3x3_accumulate(g, x, w, wino, &mut y);
        return y;
    }
    let threads = super::threads();
    let pointwise = g.is_pointwise();
    let yp = SendPtr(y.as_mut_ptr());
    let (band, nbands) = g.bands(threads);
    let tasks: Vec<(usize, usize)> = (0..g.batch)
        .flat_map(|b| (0..nbands).map(move |j| (b, j)))
        .collect();
    let inner = if tasks.len() >= threads { 1 } else { threads };
    let run = |&(b, j): &(usize, usize)| {
        let oy0 = j * band;
        let oy1 = (oy0 + band).min(ho);
        let np = (oy1 - oy0) * wo;
        let xb = &x[b * img..(b + 1) * img];
        // Rebind so the closure captures the whole `SendPtr` (Send), not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let yp = yp;
        // SAFETY: task (b, j) writes only columns [oy0·Wo, oy1·Wo) of image b.
        let mm = |rhs: *const f32, rhs_rs: usize| unsafe {
            gemm_f32(
                g.cout,
                np,
                k,
                yp.0.add(b * g.cout * pout + oy0 * wo),
                (pout, 1),
                accumulate,
                w.as_ptr(),
                (k, 1),
                rhs,
                (rhs_rs, 1),
                parallelism(inner),
            );
        };
        if pointwise {
            // The input itself is the K × P matrix; the band is a column range of it.
            mm(xb[oy0 * wo..].as_ptr(), pout);
        } else {
            with_col(k * np, |col| {
                im2col(g, xb, oy0, oy1, col);
                mm(col.as_ptr(), np);
            });
        }
    };
    if inner == 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
    y
}

/// `∂L/∂w` (Co × Ci × kh × kw) of `y = conv2d(x, w)` from `x` and `∂L/∂y`:
/// `Σ_b gy_b (Co × P) · col_bᵀ (P × K)`, a band of output rows at a time. The images and bands
/// are summed in a fixed order with a multi-threaded GEMM, so the result is deterministic.
pub fn conv2d_kernel_grad(g: &ConvGeom, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (k, pout, pin) = (g.k(), ho * wo, g.h * g.w);
    assert_eq!(x.len(), g.batch * g.cin * pin, "conv2d input size");
    assert_eq!(
        gy.len(),
        g.batch * g.cout * pout,
        "conv2d output-gradient size"
    );
    let mut dw = vec![0f32; g.cout * k];
    let par = parallelism(super::threads());
    let pointwise = g.is_pointwise();
    let max_rows = (COL_BUDGET / (k * wo).max(1)).clamp(1, ho);
    let band = if pointwise {
        ho
    } else {
        ho.div_ceil(ho.div_ceil(max_rows))
    };
    let mut col = if pointwise {
        Vec::new()
    } else {
        vec![0f32; k * band * wo]
    };
    let mut first = true;
    for b in 0..g.batch {
        let xb = &x[b * g.cin * pin..(b + 1) * g.cin * pin];
        let gyb = &gy[b * g.cout * pout..(b + 1) * g.cout * pout];
        let mut oy0 = 0;
        while oy0 < ho {
            let oy1 = (oy0 + band).min(ho);
            let np = (oy1 - oy0) * wo;
            let colp: &[f32] = if pointwise {
                xb
            } else {
                im2col(g, xb, oy0, oy1, &mut col[..k * np]);
                &col[..k * np]
            };
            // dw (Co × K) += gy[:, band] (Co × np) · colᵀ (np × K).
            // SAFETY: dw holds Co × K floats; gy's band and col hold Co × np and K × np.
            unsafe {
                gemm_f32(
                    g.cout,
                    k,
                    np,
                    dw.as_mut_ptr(),
                    (k, 1),
                    !first,
                    gyb.as_ptr().add(oy0 * wo),
                    (pout, 1),
                    colp.as_ptr(),
                    (1, np),
                    par,
                );
            }
            first = false;
            oy0 = oy1;
        }
    }
    dw
}

/// `∂L/∂x` of `y = conv2d(x, w)` given `gy = ∂L/∂y` (B × Co × Ho × Wo): per image and band
/// `col = Wᵀ · gy[:, band]`, then col2im. Returns `gx` (B × Ci × H × W).
///
/// Work is split over (image, input-channel range) tasks: each computes its own rows of
/// `col` and adds them into its own gradient planes, so tasks never write the same memory.
pub fn conv2d_input_grad(g: &ConvGeom, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    let (k, pout, pin) = (g.k(), ho * wo, g.h * g.w);
    let khw = g.kh * g.kw;
    assert_eq!(
        gy.len(),
        g.batch * g.cout * pout,
        "conv2d output-gradient size"
    );
    assert_eq!(w.len(), g.cout * k, "conv2d kernel size");
    let mut gx = vec![0f32; g.batch * g.cin * pin];
    let threads = super::threads();
    let pointwise = g.is_pointwise();
    // Bands bounded by the buffer only; parallelism comes from the channel split.
    let max_rows = (COL_BUDGET / (k * wo).max(1)).clamp(1, ho);
    let band = if pointwise {
        ho
    } else {
        ho.div_ceil(ho.div_ceil(max_rows))
    };
    let nbands = ho.div_ceil(band);
    let splits = threads.div_ceil(g.batch).min(g.cin);
    let per = g.cin.div_ceil(splits);
    let tasks: Vec<(usize, usize, usize)> = (0..g.batch)
        .flat_map(|b| {
            (0..g.cin)
                .step_by(per)
                .map(move |c0| (b, c0, (c0 + per).min(g.cin)))
        })
        .collect();
    let gxp = SendPtr(gx.as_mut_ptr());
    let run = |&(b, c0, c1): &(usize, usize, usize)| {
        // Rebind so the closure captures the whole `SendPtr` (Send), not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let gxp = gxp;
        // SAFETY: task (b, c0, c1) writes only planes c0..c1 of image b.
        let planes = unsafe {
            std::slice::from_raw_parts_mut(gxp.0.add((b * g.cin + c0) * pin), (c1 - c0) * pin)
        };
        let gyb = &gy[b * g.cout * pout..(b + 1) * g.cout * pout];
        let m = (c1 - c0) * khw;
        for j in 0..nbands {
            let oy0 = j * band;
            let oy1 = (oy0 + band).min(ho);
            let np = (oy1 - oy0) * wo;
            // col (m × np) = Wᵀ[rows of channels c0..c1] (m × Co) · gy[:, band] (Co × np).
            // SAFETY: dst holds m × np floats.
            let mm = |dst: &mut [f32]| unsafe {
                gemm_f32(
                    m,
                    np,
                    g.cout,
                    dst.as_mut_ptr(),
                    (np, 1),
                    false,
                    w.as_ptr().add(c0 * khw),
                    (1, k),
                    gyb.as_ptr().add(oy0 * wo),
                    (pout, 1),
                    Parallelism::None,
                );
            };
            if pointwise {
                mm(planes);
            } else {
                with_col(m * np, |col| {
                    mm(col);
                    col2im(g, col, oy0, oy1, planes);
                });
            }
        }
    };
    tasks.par_iter().for_each(run);
    gx
}
