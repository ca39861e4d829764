//! The SVD seam: what a linear operator with a known singular value decomposition
//! A = U S Vᵀ exposes to the SVD-based samplers (DDRM, DDNM).
//!
//! The model is deepinv's `DecomposablePhysics` (`V`, `V_adjoint`, `U`, `U_adjoint`, `mask`),
//! in genprior's host-`f64` single-image form. Everything lives on a *spectral space* of the
//! image's size n = C·H·W:
//! - V is an orthogonal n × n matrix: [`OperatorSvd::v_adjoint`] maps an image to its
//!   spectral coordinates Vᵀx, [`OperatorSvd::v`] maps coordinates back, V x̄;
//! - S = diag(s) with s ≥ 0 of length n ([`OperatorSvd::singular_values`]); s_k = 0 marks the
//!   null space of A;
//! - U maps spectral coordinates to the measurement space (length m): [`OperatorSvd::u`] is
//!   U x̄, which ignores the coordinates where s_k = 0, and [`OperatorSvd::u_adjoint`] is Uᵀy,
//!   zero where s_k = 0. So Uᵀ U = I on the coordinates with s_k > 0 and U Uᵀ is the projection
//!   onto the range of A.
//!
//! Then A x = U S Vᵀ x and A⁺ y = V S⁺ Uᵀ y ([`OperatorSvd::forward`], [`OperatorSvd::pinv`]).
//! The implementations here:
//! - [`DiagonalSvd`]: A = diag(d) (inpainting masks, the identity of `denoise`): V = I,
//!   s = |d|, U = diag(sign d);
//! - [`DenseSvd`]: any dense m × n matrix, by a dense SVD (nalgebra) — `cs` when small, and the
//!   1-D factors of separable operators;
//! - [`SeparableSvd`]: per channel A_c X = M_h X M_wᵀ (super-resolution, box or bicubic): the
//!   Kronecker product of the 1-D SVDs, s_(p,q) = s_h[p]·s_w[q];
//! - [`FourierSvd`]: circular convolution y = F⁻¹(k̂ · F x) (FFT blur), in a *real* orthonormal
//!   Fourier basis: for a conjugate pair of frequencies (k, −k) the two real coordinates
//!   √2 Re X_k, −√2 Im X_k (X the unitary DFT), for a self-conjugate frequency (0, Nyquist) X_k
//!   itself; s = |k̂| and U is V rotated by the phase of k̂ in each pair's plane, so the
//!   decomposition is exact and real.

use nalgebra::DMatrix;
use num_complex::Complex64;

use crate::error::{InverseError, Result};
use crate::fft::Fft2;

/// Singular values at or below this fraction of the largest are set to exactly 0 (null space).
pub const RELATIVE_ZERO: f64 = 1e-13;

/// A singular value decomposition A = U S Vᵀ of a linear operator; see the module docs.
pub trait OperatorSvd: Send + Sync {
    /// n, the image (and spectral) length.
    fn image_len(&self) -> usize;
    /// m, the measurement length.
    fn measurement_len(&self) -> usize;
    /// s, length n, all ≥ 0; zeros on the null space.
    fn singular_values(&self) -> &[f64];
    /// Vᵀx: image (n) → spectral coordinates (n).
    fn v_adjoint(&self, x: &[f64]) -> Result<Vec<f64>>;
    /// V x̄: spectral coordinates (n) → image (n).
    fn v(&self, xbar: &[f64]) -> Result<Vec<f64>>;
    /// Uᵀy: measurement (m) → spectral coordinates (n), zero where s = 0.
    fn u_adjoint(&self, y: &[f64]) -> Result<Vec<f64>>;
    /// U ȳ: spectral coordinates (n) → measurement (m); coordinates where s = 0 are ignored.
    fn u(&self, ybar: &[f64]) -> Result<Vec<f64>>;

    /// A x = U S Vᵀ x.
    fn forward(&self, x: &[f64]) -> Result<Vec<f64>> {
        let mut z = self.v_adjoint(x)?;
        z.iter_mut()
            .zip(self.singular_values())
            .for_each(|(v, s)| *v *= s);
        self.u(&z)
    }
    /// A⁺ y = V S⁺ Uᵀ y (S⁺ inverts the nonzero singular values).
    fn pinv(&self, y: &[f64]) -> Result<Vec<f64>> {
        let mut z = self.u_adjoint(y)?;
        z.iter_mut()
            .zip(self.singular_values())
            .for_each(|(v, &s)| *v = if s > 0.0 { *v / s } else { 0.0 });
        self.v(&z)
    }
}

pub(crate) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(InverseError::Unsupported(format!(
            "SVD: {what} has {got} values, expected {want}"
        )))
    }
}

/// Zeros the singular values at or below [`RELATIVE_ZERO`] × the largest.
fn clean_singulars(s: &mut [f64]) {
    let max = s.iter().cloned().fold(0.0, f64::max);
    for v in s.iter_mut() {
        if *v <= RELATIVE_ZERO * max {
            *v = 0.0;
        }
    }
}

// ------------------------------------------------------------------------------ diagonal

/// A = diag(d): V = I, s = |d|, U = diag(sign d) on the coordinates with d ≠ 0.
#[derive(Debug, Clone)]
pub struct DiagonalSvd {
    sign: Vec<f64>,
    s: Vec<f64>,
}

impl DiagonalSvd {
    pub fn new(d: &[f64]) -> Self {
        let mut s: Vec<f64> = d.iter().map(|v| v.abs()).collect();
        clean_singulars(&mut s);
        let sign = d
            .iter()
            .zip(&s)
            .map(|(&v, &s)| if s == 0.0 { 0.0 } else { v.signum() })
            .collect();
        Self { sign, s }
    }
}

impl OperatorSvd for DiagonalSvd {
    fn image_len(&self) -> usize {
        self.s.len()
    }
    fn measurement_len(&self) -> usize {
        self.s.len()
    }
    fn singular_values(&self) -> &[f64] {
        &self.s
    }
    fn v_adjoint(&self, x: &[f64]) -> Result<Vec<f64>> {
        check_len("Vᵀ input", x.len(), self.s.len())?;
        Ok(x.to_vec())
    }
    fn v(&self, xbar: &[f64]) -> Result<Vec<f64>> {
        check_len("V input", xbar.len(), self.s.len())?;
        Ok(xbar.to_vec())
    }
    fn u_adjoint(&self, y: &[f64]) -> Result<Vec<f64>> {
        check_len("Uᵀ input", y.len(), self.s.len())?;
        Ok(y.iter().zip(&self.sign).map(|(a, b)| a * b).collect())
    }
    fn u(&self, ybar: &[f64]) -> Result<Vec<f64>> {
        check_len("U input", ybar.len(), self.s.len())?;
        Ok(ybar.iter().zip(&self.sign).map(|(a, b)| a * b).collect())
    }
}

// --------------------------------------------------------------------------------- dense

/// The SVD of a dense m × n matrix: V (n × n, columns = right singular vectors, s descending),
/// U (m × n, column k the left singular vector of s_k, zero where s_k = 0).
#[derive(Debug, Clone)]
pub struct DenseSvd {
    m: usize,
    n: usize,
    v: DMatrix<f64>,
    u: DMatrix<f64>,
    s: Vec<f64>,
}

impl DenseSvd {
    /// From a row-major m × n matrix. Fails when the dense SVD does not converge.
    pub fn new(a: &[f64], m: usize, n: usize) -> Result<Self> {
        check_len("dense matrix", a.len(), m * n)?;
        if m == 0 || n == 0 {
            return Err(InverseError::Unsupported(
                "SVD of an empty matrix".to_string(),
            ));
        }
        // Zero-pad to at least n rows so that the SVD returns a full n × n V.
        let rows = m.max(n);
        let mut padded = DMatrix::<f64>::zeros(rows, n);
        for i in 0..m {
            for j in 0..n {
                padded[(i, j)] = a[i * n + j];
            }
        }
        let svd = nalgebra::linalg::SVD::try_new(padded, true, true, f64::EPSILON, 0)
            .ok_or_else(|| InverseError::Unsupported("dense SVD did not converge".into()))?;
        let (uu, vt) = match (svd.u, svd.v_t) {
            (Some(u), Some(v)) => (u, v),
            _ => {
                return Err(InverseError::Unsupported(
                    "dense SVD without factors".into(),
                ))
            }
        };
        let sv = svd.singular_values;
        // Thin SVD of a rows × n matrix (rows ≥ n): uu rows × n, sv n, vt n × n.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| sv[j].total_cmp(&sv[i]));
        let mut s: Vec<f64> = order.iter().map(|&k| sv[k].max(0.0)).collect();
        clean_singulars(&mut s);
        let mut v = DMatrix::<f64>::zeros(n, n);
        let mut u = DMatrix::<f64>::zeros(m, n);
        for (col, &k) in order.iter().enumerate() {
            for r in 0..n {
                v[(r, col)] = vt[(k, r)];
            }
            if s[col] > 0.0 {
                for r in 0..m {
                    u[(r, col)] = uu[(r, k)];
                }
            }
        }
        Ok(Self { m, n, v, u, s })
    }

    /// Vᵀ (n × n) applied to each of `cols` columns of a row-major n × cols block, etc. are
    /// expressed through these two products.
    fn mul(a: &DMatrix<f64>, transpose: bool, x: &[f64]) -> Vec<f64> {
        let (r, c) = a.shape();
        if transpose {
            (0..c)
                .map(|j| (0..r).map(|i| a[(i, j)] * x[i]).sum())
                .collect()
        } else {
            (0..r)
                .map(|i| (0..c).map(|j| a[(i, j)] * x[j]).sum())
                .collect()
        }
    }
}

impl OperatorSvd for DenseSvd {
    fn image_len(&self) -> usize {
        self.n
    }
    fn measurement_len(&self) -> usize {
        self.m
    }
    fn singular_values(&self) -> &[f64] {
        &self.s
    }
    fn v_adjoint(&self, x: &[f64]) -> Result<Vec<f64>> {
        check_len("Vᵀ input", x.len(), self.n)?;
        Ok(Self::mul(&self.v, true, x))
    }
    fn v(&self, xbar: &[f64]) -> Result<Vec<f64>> {
        check_len("V input", xbar.len(), self.n)?;
        Ok(Self::mul(&self.v, false, xbar))
    }
    fn u_adjoint(&self, y: &[f64]) -> Result<Vec<f64>> {
        check_len("Uᵀ input", y.len(), self.m)?;
        Ok(Self::mul(&self.u, true, y))
    }
    fn u(&self, ybar: &[f64]) -> Result<Vec<f64>> {
        check_len("U input", ybar.len(), self.n)?;
        Ok(Self::mul(&self.u, false, ybar))
    }
}

// ----------------------------------------------------------------------------- separable

/// Per channel A_c X = M_h X M_wᵀ (`c × h × w` images, `c × oh × ow` measurements), from the
/// 1-D SVDs M_h = U_h S_h V_hᵀ and M_w = U_w S_w V_wᵀ: V = V_h ⊗ V_w, U = U_h ⊗ U_w,
/// s_(p,q) = s_h[p]·s_w[q], channel by channel.
#[derive(Debug, Clone)]
pub struct SeparableSvd {
    c: usize,
    fh: DenseSvd,
    fw: DenseSvd,
    s: Vec<f64>,
}

impl SeparableSvd {
    /// From the dense row-major 1-D matrices M_h (oh × h) and M_w (ow × w).
    pub fn new(
        c: usize,
        mh: &[f64],
        (oh, h): (usize, usize),
        mw: &[f64],
        (ow, w): (usize, usize),
    ) -> Result<Self> {
        let fh = DenseSvd::new(mh, oh, h)?;
        let fw = DenseSvd::new(mw, ow, w)?;
        let mut plane = Vec::with_capacity(h * w);
        for p in 0..h {
            for q in 0..w {
                plane.push(fh.s[p] * fw.s[q]);
            }
        }
        clean_singulars(&mut plane);
        let mut s = Vec::with_capacity(c * h * w);
        for _ in 0..c {
            s.extend_from_slice(&plane);
        }
        Ok(Self { c, fh, fw, s })
    }

    /// out = L X Rᵀ per channel, for `L` (a × b) and `R` (d × e) given with transposition flags,
    /// X of shape b × e.
    fn sandwich(
        &self,
        l: &DMatrix<f64>,
        lt: bool,
        r: &DMatrix<f64>,
        rt: bool,
        x: &[f64],
    ) -> Vec<f64> {
        let dims = |a: &DMatrix<f64>, t: bool| {
            let (r, c) = a.shape();
            if t {
                (c, r)
            } else {
                (r, c)
            }
        };
        let at = |a: &DMatrix<f64>, t: bool, i: usize, j: usize| {
            if t {
                a[(j, i)]
            } else {
                a[(i, j)]
            }
        };
        let (la, lb) = dims(l, lt);
        let (rd, re) = dims(r, rt);
        let mut out = Vec::with_capacity(self.c * la * rd);
        let mut tmp = vec![0.0; lb * rd];
        for xc in x.chunks_exact(lb * re) {
            // tmp = X Rᵀ  (lb × rd)
            for i in 0..lb {
                for q in 0..rd {
                    tmp[i * rd + q] = (0..re).map(|j| xc[i * re + j] * at(r, rt, q, j)).sum();
                }
            }
            // out = L tmp  (la × rd)
            for p in 0..la {
                for q in 0..rd {
                    out.push((0..lb).map(|i| at(l, lt, p, i) * tmp[i * rd + q]).sum());
                }
            }
        }
        out
    }
}

impl OperatorSvd for SeparableSvd {
    fn image_len(&self) -> usize {
        self.c * self.fh.n * self.fw.n
    }
    fn measurement_len(&self) -> usize {
        self.c * self.fh.m * self.fw.m
    }
    fn singular_values(&self) -> &[f64] {
        &self.s
    }
    fn v_adjoint(&self, x: &[f64]) -> Result<Vec<f64>> {
        check_len("Vᵀ input", x.len(), self.image_len())?;
        // V_hᵀ X V_w
        Ok(self.sandwich(&self.fh.v, true, &self.fw.v, true, x))
    }
    fn v(&self, xbar: &[f64]) -> Result<Vec<f64>> {
        check_len("V input", xbar.len(), self.image_len())?;
        Ok(self.sandwich(&self.fh.v, false, &self.fw.v, false, xbar))
    }
    fn u_adjoint(&self, y: &[f64]) -> Result<Vec<f64>> {
        check_len("Uᵀ input", y.len(), self.measurement_len())?;
        let mut z = self.sandwich(&self.fh.u, true, &self.fw.u, true, y);
        z.iter_mut().zip(&self.s).for_each(|(v, &s)| {
            if s == 0.0 {
                *v = 0.0
            }
        });
        Ok(z)
    }
    fn u(&self, ybar: &[f64]) -> Result<Vec<f64>> {
        check_len("U input", ybar.len(), self.image_len())?;
        let masked: Vec<f64> = ybar
            .iter()
            .zip(&self.s)
            .map(|(&v, &s)| if s == 0.0 { 0.0 } else { v })
            .collect();
        Ok(self.sandwich(&self.fh.u, false, &self.fw.u, false, &masked))
    }
}

// ------------------------------------------------------------------------------- Fourier

/// Circular convolution per channel, y_c = F⁻¹(k̂ · F x_c) on an h × w grid, in the real
/// orthonormal Fourier basis of the module docs.
pub struct FourierSvd {
    c: usize,
    h: usize,
    w: usize,
    fft: Fft2,
    /// k̂/|k̂| per frequency (1 where k̂ = 0).
    phase: Vec<Complex64>,
    /// For each frequency: its conjugate partner's flat index.
    partner: Vec<usize>,
    s: Vec<f64>,
}

impl std::fmt::Debug for FourierSvd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FourierSvd")
            .field("shape", &[self.c, self.h, self.w])
            .finish()
    }
}

impl FourierSvd {
    /// From the kernel's DFT multiplier `khat` (length h·w, Hermitian as the DFT of a real
    /// kernel) such that y_c = F⁻¹(khat · F x_c).
    pub fn new(c: usize, h: usize, w: usize, khat: &[Complex64]) -> Result<Self> {
        check_len("kernel spectrum", khat.len(), h * w)?;
        let partner: Vec<usize> = (0..h * w)
            .map(|k| {
                let (i, j) = (k / w, k % w);
                ((h - i) % h) * w + (w - j) % w
            })
            .collect();
        // |k̂| symmetrised over each pair so that both coordinates of a pair share it exactly.
        let mut plane: Vec<f64> = (0..h * w)
            .map(|k| 0.5 * (khat[k].norm() + khat[partner[k]].norm()))
            .collect();
        clean_singulars(&mut plane);
        let phase = (0..h * w)
            .map(|k| {
                if plane[k] == 0.0 {
                    Complex64::new(1.0, 0.0)
                } else if partner[k] == k {
                    Complex64::new(khat[k].re.signum(), 0.0)
                } else {
                    khat[k] / khat[k].norm()
                }
            })
            .collect();
        let mut s = Vec::with_capacity(c * h * w);
        for _ in 0..c {
            s.extend_from_slice(&plane);
        }
        Ok(Self {
            c,
            h,
            w,
            fft: Fft2::new(h, w),
            phase,
            partner,
            s,
        })
    }

    fn n(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Real coordinates of a Hermitian spectrum `x` (one channel), appended to `out`.
    fn coords_of(&self, x: &[Complex64], out: &mut Vec<f64>) {
        let r2 = std::f64::consts::SQRT_2;
        for (k, &p) in self.partner.iter().enumerate() {
            out.push(if p == k {
                x[k].re
            } else if k < p {
                r2 * x[k].re
            } else {
                -r2 * x[p].im
            });
        }
    }

    /// The Hermitian spectrum of real coordinates `z` (one channel).
    fn spectrum_of(&self, z: &[f64]) -> Vec<Complex64> {
        let r2 = std::f64::consts::SQRT_2;
        let mut x = vec![Complex64::new(0.0, 0.0); z.len()];
        for (k, &p) in self.partner.iter().enumerate() {
            x[k] = if p == k {
                Complex64::new(z[k], 0.0)
            } else if k < p {
                Complex64::new(z[k], -z[p]) / r2
            } else {
                Complex64::new(z[p], z[k]) / r2
            };
        }
        x
    }

    /// Per channel: coords(F x · mult).
    fn analyse(&self, x: &[f64], conj_phase: bool) -> Vec<f64> {
        let hw = self.h * self.w;
        let mut out = Vec::with_capacity(x.len());
        for xc in x.chunks_exact(hw) {
            let mut buf: Vec<Complex64> = xc.iter().map(|&v| Complex64::new(v, 0.0)).collect();
            self.fft.forward_ortho(&mut buf);
            if conj_phase {
                buf.iter_mut()
                    .zip(&self.phase)
                    .for_each(|(b, p)| *b *= p.conj());
            }
            self.coords_of(&buf, &mut out);
        }
        out
    }

    /// Per channel: Re F⁻¹(spectrum(z) · mult).
    fn synthesise(&self, z: &[f64], with_phase: bool) -> Vec<f64> {
        let hw = self.h * self.w;
        let mut out = Vec::with_capacity(z.len());
        for zc in z.chunks_exact(hw) {
            let mut buf = self.spectrum_of(zc);
            if with_phase {
                buf.iter_mut().zip(&self.phase).for_each(|(b, p)| *b *= p);
            }
            self.fft.inverse_ortho(&mut buf);
            out.extend(buf.iter().map(|b| b.re));
        }
        out
    }
}

impl OperatorSvd for FourierSvd {
    fn image_len(&self) -> usize {
        self.n()
    }
    fn measurement_len(&self) -> usize {
        self.n()
    }
    fn singular_values(&self) -> &[f64] {
        &self.s
    }
    fn v_adjoint(&self, x: &[f64]) -> Result<Vec<f64>> {
        check_len("Vᵀ input", x.len(), self.n())?;
        Ok(self.analyse(x, false))
    }
    fn v(&self, xbar: &[f64]) -> Result<Vec<f64>> {
        check_len("V input", xbar.len(), self.n())?;
        Ok(self.synthesise(xbar, false))
    }
    fn u_adjoint(&self, y: &[f64]) -> Result<Vec<f64>> {
        check_len("Uᵀ input", y.len(), self.n())?;
        let mut z = self.analyse(y, true);
        z.iter_mut().zip(&self.s).for_each(|(v, &s)| {
            if s == 0.0 {
                *v = 0.0
            }
        });
        Ok(z)
    }
    fn u(&self, ybar: &[f64]) -> Result<Vec<f64>> {
        check_len("U input", ybar.len(), self.n())?;
        let masked: Vec<f64> = ybar
            .iter()
            .zip(&self.s)
            .map(|(&v, &s)| if s == 0.0 { 0.0 } else { v })
            .collect();
        Ok(self.synthesise(&masked, true))
    }
}
