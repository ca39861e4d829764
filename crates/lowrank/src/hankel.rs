//! Spectrally sparse signal recovery by low-rank Hankel completion, with ScaledGD on the
//! factors of the Hankel matrix (Cai, Wang & Wei, "Fast and provable algorithms for
//! spectrally sparse signal reconstruction via low-rank Hankel matrix completion",
//! 2019; ScaledGD form and step as the public MATLAB code `Titan-Tong/ScaledGD`,
//! `matrix/HankelMC.m`).
//!
//! A signal x ∈ ℂ^{nd}, nd = n1 + n2 − 1, that is a sum of r damped complex exponentials
//! has a rank-r Hankel matrix H[x] ∈ ℂ^{n1×n2}, H[x]_{ij} = x_{i+j}. With X = L Rᴴ,
//! the signal estimate is the antidiagonal average H*(L Rᴴ)/w (w_k = length of the k-th
//! antidiagonal) and each step is
//! ```text
//! x = H*(L Rᴴ)/w,   z = (P_Ω(x) − y)/p − x,
//! L⁺ = L − η (L + H[z] R (RᴴR)⁻¹),   R⁺ = R − η (R + H[z]ᴴ L (LᴴL)⁻¹)
//! ```
//! (the gradient of ‖P_Ω(H*(LRᴴ)/w) − y‖²/(2p) + ‖(I − H H*/w)(LRᴴ)‖²/2, preconditioned).
//! The Hankel matrix is never formed: H[z] R, H[z]ᴴ L and H*(L Rᴴ) are convolutions,
//! computed with FFTs of length ≥ nd (rustfft, on the host: candle has no FFT).
//! Frequencies and dampings of the recovered signal come from ESPRIT on the column space
//! of H[x] (the factor L), amplitudes from a least-squares fit of the Vandermonde model.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use nalgebra::{Complex, DMatrix, DVector};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rustfft::{Fft, FftPlanner};
use serde::Serialize;

use crate::error::{invalid, LowRankError, Result};
use crate::solver::{run, Iterable, Method, Options, Report, StepCtx};

/// Complex sample type of the Hankel solver.
pub type C64 = Complex<f64>;
type C = C64;
type CMat = DMatrix<C>;

/// Default step size (as the reference code).
pub const DEFAULT_ETA_HANKEL: f64 = 0.5;

/// Hankel factors X = L Rᴴ (complex, host).
#[derive(Debug, Clone)]
pub struct HankelFactors {
    pub l: CMat,
    pub r: CMat,
}

/// One estimated component x_t = a·e^{iφ}·exp((−d + 2πi f) t).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Component {
    /// Frequency in cycles per sample, in [−0.5, 0.5).
    pub frequency: f64,
    /// Damping d ≥ 0 for a decaying component (per sample).
    pub damping: f64,
    pub amplitude: f64,
    /// Phase in radians.
    pub phase: f64,
}

/// Hankel-structured FFT helper for signals of length nd = n1 + n2 − 1.
struct HankelOps {
    n1: usize,
    n2: usize,
    nd: usize,
    nfft: usize,
    fwd: Arc<dyn Fft<f64>>,
    inv: Arc<dyn Fft<f64>>,
    /// Antidiagonal lengths w_k.
    w: Vec<f64>,
}

impl std::fmt::Debug for HankelOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HankelOps({}×{}, nfft {})", self.n1, self.n2, self.nfft)
    }
}

impl HankelOps {
    fn new(n1: usize, n2: usize) -> Self {
        let nd = n1 + n2 - 1;
        let nfft = nd.next_power_of_two();
        let mut planner = FftPlanner::new();
        let w = (0..nd)
            .map(|k| (k + 1).min(nd - k).min(n1).min(n2) as f64)
            .collect();
        HankelOps {
            n1,
            n2,
            nd,
            nfft,
            fwd: planner.plan_fft_forward(nfft),
            inv: planner.plan_fft_inverse(nfft),
            w,
        }
    }

    fn fft(&self, v: &[C]) -> Vec<C> {
        let mut buf = vec![C::new(0.0, 0.0); self.nfft];
        buf[..v.len()].copy_from_slice(v);
        self.fwd.process(&mut buf);
        buf
    }

    fn ifft(&self, mut buf: Vec<C>) -> Vec<C> {
        self.inv.process(&mut buf);
        let s = 1.0 / self.nfft as f64;
        buf.iter_mut().for_each(|v| *v *= s);
        buf
    }

    /// Columns c of the result: k-th entry (offset..offset+rows) of conv(x, flip(B_c)).
    fn conv_flip(&self, fx: &[C], b: &CMat, offset: usize, rows: usize) -> CMat {
        let k = b.ncols();
        let nb = b.nrows();
        let mut out = CMat::zeros(rows, k);
        for c in 0..k {
            let flipped: Vec<C> = (0..nb).map(|m| b[(nb - 1 - m, c)]).collect();
            let fb = self.fft(&flipped);
            let prod: Vec<C> = fb.iter().zip(fx).map(|(a, b)| a * b).collect();
            let v = self.ifft(prod);
            for i in 0..rows {
                out[(i, c)] = v[offset + i];
            }
        }
        out
    }

    /// H[x] B for B ∈ ℂ^{n2×k}.
    fn mul(&self, x: &[C], b: &CMat) -> CMat {
        let fx = self.fft(x);
        self.conv_flip(&fx, b, self.n2 - 1, self.n1)
    }

    /// H[x]ᴴ B for B ∈ ℂ^{n1×k}: (H[x]ᴴ B)_{j,c} = Σ_i conj(x_{i+j}) B_{i,c}, i.e.
    /// entries n1 − 1 .. of conj(x) ∗ flip(B_c).
    fn adj_mul(&self, x: &[C], b: &CMat) -> CMat {
        let xc: Vec<C> = x.iter().map(|v| v.conj()).collect();
        let fx = self.fft(&xc);
        self.conv_flip(&fx, b, self.n1 - 1, self.n2)
    }

    /// Antidiagonal average H*(L Rᴴ)/w.
    fn proj(&self, l: &CMat, r: &CMat) -> Vec<C> {
        let mut acc = vec![C::new(0.0, 0.0); self.nfft];
        for c in 0..l.ncols() {
            let a: Vec<C> = l.column(c).iter().copied().collect();
            let b: Vec<C> = r.column(c).iter().map(|v| v.conj()).collect();
            let fa = self.fft(&a);
            let fb = self.fft(&b);
            for (s, (u, v)) in acc.iter_mut().zip(fa.iter().zip(&fb)) {
                *s += u * v;
            }
        }
        let v = self.ifft(acc);
        (0..self.nd).map(|k| v[k] / self.w[k]).collect()
    }
}

/// Hankel completion problem: observed samples y_t, t ∈ Ω, of a length-nd signal.
#[derive(Debug)]
pub struct HankelCompletion {
    ops: HankelOps,
    mask: Vec<bool>,
    /// Observed samples, zero off Ω.
    y: Vec<C>,
    p: f64,
    ynorm: f64,
}

fn norm(v: &[C]) -> f64 {
    v.iter().map(|c| c.norm_sqr()).sum::<f64>().sqrt()
}

impl HankelCompletion {
    /// `signal`: length nd (only entries with `mask[t]` are used; the others may be NaN);
    /// `n1`: rows of the Hankel matrix (default (nd + 1)/2, square or nearly).
    pub fn new(signal: &[C], mask: &[bool], n1: Option<usize>) -> Result<Self> {
        let nd = signal.len();
        if nd < 3 {
            return invalid(format!("signal of length {nd} is too short"));
        }
        if mask.len() != nd {
            return invalid(format!(
                "mask length {} does not match the signal length {nd}",
                mask.len()
            ));
        }
        let n1 = n1.unwrap_or(nd.div_ceil(2));
        if n1 < 2 || n1 >= nd {
            return invalid(format!(
                "Hankel rows n1 = {n1} must be in [2, {}] for a signal of length {nd}",
                nd - 1
            ));
        }
        let n2 = nd + 1 - n1;
        let nobs = mask.iter().filter(|&&m| m).count();
        if nobs == 0 {
            return invalid("the observation mask is empty (no observed samples)");
        }
        let mut y = vec![C::new(0.0, 0.0); nd];
        for t in 0..nd {
            if mask[t] {
                if !(signal[t].re.is_finite() && signal[t].im.is_finite()) {
                    return invalid(format!(
                        "the signal has a NaN/infinite value at observed sample {t}"
                    ));
                }
                y[t] = signal[t];
            }
        }
        let ynorm = norm(&y);
        if ynorm == 0.0 {
            return invalid("all observed samples are zero");
        }
        Ok(HankelCompletion {
            ops: HankelOps::new(n1, n2),
            mask: mask.to_vec(),
            y,
            p: nobs as f64 / nd as f64,
            ynorm,
        })
    }

    /// (n1, n2) of the Hankel matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.ops.n1, self.ops.n2)
    }
    pub fn len(&self) -> usize {
        self.ops.nd
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Spectral initialisation: top-r SVD of H[y/p] by randomized subspace iteration
    /// with FFT Hankel products (oversampling 10, 4 power iterations).
    pub fn spectral_init(&self, rank: usize, seed: u64) -> Result<(HankelFactors, Vec<f64>)> {
        let (n1, n2) = self.shape();
        crate::matrix::check_rank(rank, &[n1, n2])?;
        let y: Vec<C> = self.y.iter().map(|v| v / self.p).collect();
        let k = (rank + 10).min(n1.min(n2));
        let mut rng = StdRng::seed_from_u64(seed);
        let g = CMat::from_fn(n2, k, |_, _| {
            C::new(
                StandardNormal.sample(&mut rng),
                StandardNormal.sample(&mut rng),
            )
        });
        let orth = |m: CMat| m.qr().q();
        let mut q = orth(self.ops.mul(&y, &g));
        for _ in 0..4 {
            let w = orth(self.ops.adj_mul(&y, &q));
            q = orth(self.ops.mul(&y, &w));
        }
        let b = self.ops.adj_mul(&y, &q).adjoint(); // k × n2 = Qᴴ H
        let svd = b.svd(true, true);
        let (ub, s, vt) = match (svd.u, svd.v_t) {
            (Some(u), Some(vt)) => (u, svd.singular_values, vt),
            _ => return Err(LowRankError::Numerical("SVD did not return vectors".into())),
        };
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
        let idx = &idx[..rank];
        let u = &q * CMat::from_fn(ub.nrows(), rank, |i, j| ub[(i, idx[j])]);
        let v = CMat::from_fn(n2, rank, |i, j| vt[(idx[j], i)].conj());
        let sv: Vec<f64> = idx.iter().map(|&i| s[i]).collect();
        let l = CMat::from_fn(n1, rank, |i, j| u[(i, j)] * sv[j].sqrt());
        let r = CMat::from_fn(n2, rank, |i, j| v[(i, j)] * sv[j].sqrt());
        Ok((HankelFactors { l, r }, sv))
    }

    /// Spectral initialisation followed by ScaledGD (or GD).
    pub fn solve(&self, rank: usize, opts: &Options) -> Result<(HankelFactors, Report)> {
        if opts.backtrack {
            return invalid("backtracking is not available for Hankel completion");
        }
        let (init, s) = self.spectral_init(rank, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_HANKEL, s[0])
    }

    /// The signal estimate H*(L Rᴴ)/w of given factors.
    pub fn signal(&self, f: &HankelFactors) -> Vec<C> {
        self.ops.proj(&f.l, &f.r)
    }

    /// Weighted signal [Re, Im]·√w as an nd×2 f64 tensor: its Frobenius distance is the
    /// Frobenius distance of the Hankel matrices (the reference code's error measure).
    pub fn weighted(&self, x: &[C]) -> Result<Tensor> {
        let mut v = Vec::with_capacity(2 * x.len());
        for (t, c) in x.iter().enumerate() {
            let s = self.ops.w[t].sqrt();
            v.push(c.re * s);
            v.push(c.im * s);
        }
        Ok(Tensor::from_vec(v, (x.len(), 2), &Device::Cpu)?)
    }

    /// Frequencies, dampings, amplitudes and phases of the r components of the signal
    /// with factors `f` (ESPRIT on the column space of L, then least squares for the
    /// amplitudes), largest amplitude first.
    pub fn components(&self, f: &HankelFactors) -> Result<Vec<Component>> {
        let x = self.signal(f);
        esprit(&f.l, &x)
    }
}

/// ESPRIT: poles z_k = eigenvalues of Φ with L_↑ Φ = L_↓ (least squares), then the
/// Vandermonde amplitudes c = argmin ‖V c − x‖.
pub fn esprit(l: &CMat, x: &[C]) -> Result<Vec<Component>> {
    let (n1, r) = l.shape();
    if n1 < r + 1 {
        return invalid("ESPRIT needs more Hankel rows than components");
    }
    let up = l.rows(0, n1 - 1).into_owned();
    let down = l.rows(1, n1 - 1).into_owned();
    let svd = up.svd(true, true);
    let phi = svd
        .solve(&down, 1e-12)
        .map_err(|e| LowRankError::Numerical(format!("ESPRIT least squares: {e}")))?;
    let schur = nalgebra::linalg::Schur::new(phi);
    let z = schur
        .eigenvalues()
        .ok_or_else(|| LowRankError::Numerical("ESPRIT eigenvalues failed".into()))?;
    let nd = x.len();
    let v = CMat::from_fn(nd, r, |t, k| z[k].powi(t as i32));
    let xs = DVector::from_vec(x.to_vec());
    let c = v
        .svd(true, true)
        .solve(&xs, 1e-12)
        .map_err(|e| LowRankError::Numerical(format!("amplitude least squares: {e}")))?;
    let mut out: Vec<Component> = (0..r)
        .map(|k| {
            let mut f = z[k].arg() / (2.0 * std::f64::consts::PI);
            if f >= 0.5 {
                f -= 1.0;
            }
            Component {
                frequency: f,
                damping: -z[k].norm().ln(),
                amplitude: c[k].norm(),
                phase: c[k].arg(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.amplitude
            .partial_cmp(&a.amplitude)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(out)
}

/// Aux of one Hankel iterate: z and the current signal estimate.
pub(crate) struct HankelAux {
    z: Vec<C>,
}

impl Iterable for HankelCompletion {
    type State = HankelFactors;
    type Aux = HankelAux;
    fn eval(&self, s: &HankelFactors, _t: usize) -> Result<(f64, HankelAux)> {
        let x = self.ops.proj(&s.l, &s.r);
        let mut res2 = 0.0;
        let z: Vec<C> = (0..self.ops.nd)
            .map(|t| {
                let o = if self.mask[t] {
                    x[t] - self.y[t]
                } else {
                    C::new(0.0, 0.0)
                };
                res2 += o.norm_sqr();
                o / self.p - x[t]
            })
            .collect();
        Ok((res2.sqrt() / self.ynorm, HankelAux { z }))
    }
    fn step(&self, s: &HankelFactors, a: &HankelAux, ctx: &StepCtx) -> Result<HankelFactors> {
        let lz = self.ops.mul(&a.z, &s.r); // H[z] R
        let rz = self.ops.adj_mul(&a.z, &s.l); // H[z]ᴴ L
        match ctx.method {
            Method::ScaledGd => {
                let solve = |g: &CMat, f: &CMat| -> Result<CMat> {
                    // G (FᴴF + λI)⁻¹ by Cholesky (Hermitian positive definite).
                    let mut p = f.adjoint() * f;
                    for i in 0..p.nrows() {
                        p[(i, i)] += C::new(ctx.lambda, 0.0);
                    }
                    let p = (&p + p.adjoint()) * C::new(0.5, 0.0);
                    let ch = nalgebra::Cholesky::new(p).ok_or_else(|| {
                        LowRankError::Numerical(
                            "the r×r Gram matrix of a Hankel factor is not positive definite \
                             (a factor collapsed; use a smaller rank or --damping)"
                                .into(),
                        )
                    })?;
                    Ok(ch.solve(&g.adjoint()).adjoint())
                };
                let dl = solve(&lz, &s.r)?;
                let dr = solve(&rz, &s.l)?;
                let e = C::new(ctx.eta, 0.0);
                Ok(HankelFactors {
                    l: &s.l - (&s.l + dl) * e,
                    r: &s.r - (&s.r + dr) * e,
                })
            }
            Method::Gd => {
                let e = C::new(ctx.eta / ctx.gd_scale, 0.0);
                let rr = s.r.adjoint() * &s.r;
                let ll = s.l.adjoint() * &s.l;
                Ok(HankelFactors {
                    l: &s.l - (&s.l * rr + lz) * e,
                    r: &s.r - (&s.r * ll + rz) * e,
                })
            }
        }
    }
    fn change(&self, o: &HankelFactors, n: &HankelFactors) -> Result<(f64, f64)> {
        // ‖A Bᴴ‖²_F = tr(AᴴA · BᴴB) with L'R'ᴴ − LRᴴ = [ΔL, L][R', ΔR]ᴴ.
        let dl = &n.l - &o.l;
        let dr = &n.r - &o.r;
        let (n1, r) = o.l.shape();
        let n2 = o.r.nrows();
        let mut a = CMat::zeros(n1, 2 * r);
        a.columns_mut(0, r).copy_from(&dl);
        a.columns_mut(r, r).copy_from(&o.l);
        let mut b = CMat::zeros(n2, 2 * r);
        b.columns_mut(0, r).copy_from(&n.r);
        b.columns_mut(r, r).copy_from(&dr);
        let d2 = ((a.adjoint() * &a) * (b.adjoint() * &b)).trace().re;
        let n2v = ((o.l.adjoint() * &o.l) * (o.r.adjoint() * &o.r)).trace().re;
        Ok((d2.max(0.0).sqrt(), n2v.max(0.0).sqrt()))
    }
    fn dense(&self, s: &HankelFactors) -> Result<Tensor> {
        self.weighted(&self.ops.proj(&s.l, &s.r))
    }
}

/// A synthetic spectrally sparse signal as the reference HankelMC.m: r distinct
/// frequencies on the grid k/n1, amplitudes σ = linspace(1, 1/κ, r)/√(n1 n2), optional
/// common damping `damping` per sample, Bernoulli(p) sampling.
pub struct SyntheticHankel {
    pub problem: HankelCompletion,
    pub truth: Vec<C>,
    pub frequencies: Vec<f64>,
    pub amplitudes: Vec<f64>,
}

pub fn synthetic(
    n1: usize,
    n2: usize,
    r: usize,
    kappa: f64,
    p: f64,
    damping: f64,
    seed: u64,
) -> Result<SyntheticHankel> {
    if r == 0 || r >= n1.min(n2) {
        return invalid(format!(
            "synthetic Hankel problem needs 1 ≤ r < min(n1, n2), got r={r}"
        ));
    }
    if !(kappa >= 1.0 && kappa.is_finite()) {
        return invalid(format!("condition number κ must be ≥ 1, got {kappa}"));
    }
    if !(p > 0.0 && p <= 1.0) {
        return invalid(format!("sampling rate must be in (0, 1], got {p}"));
    }
    let nd = n1 + n2 - 1;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut grid: Vec<usize> = (0..n1).collect();
    for i in 0..r {
        let j = rng.random_range(i..n1);
        grid.swap(i, j);
    }
    let freqs: Vec<f64> = grid[..r].iter().map(|&k| k as f64 / n1 as f64).collect();
    let sig = crate::synthetic::linspace_spectrum(r, kappa);
    let scale = 1.0 / ((n1 * n2) as f64).sqrt();
    let truth: Vec<C> = (0..nd)
        .map(|t| {
            freqs
                .iter()
                .zip(&sig)
                .map(|(&f, &s)| {
                    C::from_polar(
                        s * scale * (-damping * t as f64).exp(),
                        2.0 * std::f64::consts::PI * f * t as f64,
                    )
                })
                .sum()
        })
        .collect();
    let mask: Vec<bool> = (0..nd).map(|_| rng.random::<f64>() < p).collect();
    let problem = HankelCompletion::new(&truth, &mask, Some(n1))?;
    let freqs = freqs
        .iter()
        .map(|&f| if f >= 0.5 { f - 1.0 } else { f })
        .collect();
    Ok(SyntheticHankel {
        problem,
        truth,
        frequencies: freqs,
        amplitudes: sig.iter().map(|s| s * scale).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_c(n: usize, rng: &mut StdRng) -> Vec<C> {
        (0..n)
            .map(|_| C::new(StandardNormal.sample(rng), StandardNormal.sample(rng)))
            .collect()
    }

    /// The FFT products against the explicitly formed Hankel matrix (odd and even
    /// sizes, non-power-of-two lengths).
    #[test]
    fn fft_hankel_products_match_the_dense_hankel_matrix() {
        let mut rng = StdRng::seed_from_u64(1);
        for (n1, n2) in [(5, 4), (7, 7), (16, 9), (3, 30)] {
            let ops = HankelOps::new(n1, n2);
            let x = rand_c(ops.nd, &mut rng);
            let h = CMat::from_fn(n1, n2, |i, j| x[i + j]);
            let b = CMat::from_vec(n2, 3, rand_c(3 * n2, &mut rng));
            let a = CMat::from_vec(n1, 3, rand_c(3 * n1, &mut rng));
            assert!((ops.mul(&x, &b) - &h * &b).norm() < 1e-12 * h.norm() * b.norm());
            assert!((ops.adj_mul(&x, &a) - h.adjoint() * &a).norm() < 1e-12 * h.norm() * a.norm());
            // Antidiagonal average of L Rᴴ.
            let x2 = ops.proj(&a, &b);
            let m = &a * b.adjoint();
            for k in 0..ops.nd {
                let mut s = C::new(0.0, 0.0);
                let mut c = 0;
                for i in 0..n1 {
                    if k >= i && k - i < n2 {
                        s += m[(i, k - i)];
                        c += 1;
                    }
                }
                assert_eq!(c as f64, ops.w[k]);
                assert!((x2[k] - s / c as f64).norm() < 1e-12 * m.norm());
            }
        }
    }

    /// ESPRIT on the exact Hankel column space returns the true poles and amplitudes.
    #[test]
    fn esprit_recovers_poles_of_an_exact_signal() {
        let (n1, n2) = (20, 21);
        let nd = n1 + n2 - 1;
        let comps = [
            (0.11, 0.01, 1.0, 0.3),
            (-0.27, 0.0, 0.5, -1.0),
            (0.4, 0.05, 0.25, 2.0),
        ];
        let x: Vec<C> = (0..nd)
            .map(|t| {
                comps
                    .iter()
                    .map(|&(f, d, a, ph): &(f64, f64, f64, f64)| {
                        C::from_polar(
                            a * (-d * t as f64).exp(),
                            ph + 2.0 * std::f64::consts::PI * f * t as f64,
                        )
                    })
                    .sum()
            })
            .collect();
        let h = CMat::from_fn(n1, n2, |i, j| x[i + j]);
        let svd = h.svd(true, false);
        let mut idx: Vec<usize> = (0..svd.singular_values.len()).collect();
        idx.sort_by(|&a, &b| {
            svd.singular_values[b]
                .partial_cmp(&svd.singular_values[a])
                .unwrap()
        });
        let u = svd.u.unwrap();
        let l = CMat::from_fn(n1, 3, |i, j| u[(i, idx[j])]);
        let est = esprit(&l, &x).unwrap();
        for (e, &(f, d, a, ph)) in est.iter().zip(&comps) {
            assert!((e.frequency - f).abs() < 1e-10, "{e:?}");
            assert!((e.damping - d).abs() < 1e-10, "{e:?}");
            assert!((e.amplitude - a).abs() < 1e-9, "{e:?}");
            assert!((e.phase - ph).abs() < 1e-9, "{e:?}");
        }
    }
}
