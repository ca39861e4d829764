//! Tucker (3-way) problems: X = S ×₁ U₁ ×₂ U₂ ×₃ U₃, tensor completion and tensor
//! robust PCA with ScaledGD.

use std::collections::HashSet;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::{invalid, LowRankError, Result};
use crate::linalg::{fro, gram, right_solve_spd, to_host, truncated_svd};
use crate::matrix::check_float;
use crate::solver::{run, Iterable, Method, Options, Report, StepCtx};

/// Default step size for Tucker problems.
pub const DEFAULT_ETA_TUCKER: f64 = 0.3;

/// A Tucker decomposition: core (r1, r2, r3) and factors U_k (n_k × r_k).
#[derive(Debug, Clone)]
pub struct Tucker {
    pub core: Tensor,
    pub factors: [Tensor; 3],
}

impl Tucker {
    /// The dense tensor S ×₁ U₁ ×₂ U₂ ×₃ U₃.
    pub fn dense(&self) -> Result<Tensor> {
        let mut t = self.core.clone();
        for k in 0..3 {
            t = mode_mul(&t, &self.factors[k], k)?;
        }
        Ok(t)
    }
}

/// Mode-k product T ×_k M for a 3-way T and M of shape (a, d_k).
pub fn mode_mul(t: &Tensor, m: &Tensor, k: usize) -> Result<Tensor> {
    let (d0, d1, d2) = t.dims3()?;
    let a = m.dims2()?.0;
    Ok(match k {
        0 => m.matmul(&t.reshape((d0, d1 * d2))?)?.reshape((a, d1, d2))?,
        1 => m.broadcast_matmul(&t.contiguous()?)?,
        2 => t
            .reshape((d0 * d1, d2))?
            .matmul(&m.t()?)?
            .reshape((d0, d1, a))?,
        _ => return invalid(format!("mode {k} out of range for a 3-way tensor")),
    })
}

/// Mode-k unfolding (n_k × product of the other two), with a fixed ordering of the
/// other two modes (only used in products of two unfoldings of the same mode).
pub fn unfold(t: &Tensor, k: usize) -> Result<Tensor> {
    let (d0, d1, d2) = t.dims3()?;
    Ok(match k {
        0 => t.reshape((d0, d1 * d2))?,
        1 => t.permute((1, 0, 2))?.contiguous()?.reshape((d1, d0 * d2))?,
        2 => t.permute((2, 0, 1))?.contiguous()?.reshape((d2, d0 * d1))?,
        _ => return invalid(format!("mode {k} out of range for a 3-way tensor")),
    })
}

fn check_ranks(ranks: [usize; 3], dims: [usize; 3]) -> Result<()> {
    for k in 0..3 {
        if ranks[k] == 0 {
            return invalid(format!("Tucker rank of mode {k} must be at least 1"));
        }
        if ranks[k] >= dims[k] {
            return invalid(format!(
                "Tucker rank {} of mode {k} must be smaller than the dimension {}",
                ranks[k], dims[k]
            ));
        }
        let other = ranks[(k + 1) % 3] * ranks[(k + 2) % 3];
        if ranks[k] > other {
            return invalid(format!(
                "Tucker ranks {ranks:?} are infeasible (r_k > r_i r_j)"
            ));
        }
    }
    Ok(())
}

/// σ₁ over the three unfoldings of the core (for GD's step and relative damping).
fn core_sigma1(t: &Tucker, seed: u64) -> Result<f64> {
    let mut s1: f64 = 0.0;
    for k in 0..3 {
        // With orthonormal factors, σ(X_(k)) = σ(S_(k)); in general use U-weighted core.
        let mut c = t.core.clone();
        for j in 0..3 {
            if j != k {
                let q = crate::linalg::orth(&t.factors[j])?;
                let rj = q.t()?.matmul(&t.factors[j])?;
                c = mode_mul(&c, &rj, j)?;
            }
        }
        let q = crate::linalg::orth(&t.factors[k])?;
        let rk = q.t()?.matmul(&t.factors[k])?;
        let c = mode_mul(&c, &rk, k)?;
        let u = unfold(&c, k)?;
        s1 = s1.max(truncated_svd(&u, 1, seed)?.1[0]);
    }
    Ok(s1)
}

/// One ScaledGD / GD Tucker step on a dense gradient tensor `d` (= ∂f/∂X) with scale c.
fn tucker_step(s: &Tucker, d: &Tensor, c: f64, ctx: &StepCtx) -> Result<Tucker> {
    let u = &s.factors;
    let grams: Vec<Tensor> = u
        .iter()
        .map(|x| x.t()?.matmul(x))
        .collect::<candle_core::Result<_>>()?;
    let mut new_u: Vec<Tensor> = Vec::with_capacity(3);
    for k in 0..3 {
        let mut w = d.clone();
        for j in 0..3 {
            if j != k {
                w = mode_mul(&w, &u[j].t()?, j)?;
            }
        }
        let sk = unfold(&s.core, k)?;
        let ak = unfold(&w, k)?.matmul(&sk.t()?)?; // Z_(k) Ŭ_k
        let upd = match ctx.method {
            Method::ScaledGd => {
                let mut t = s.core.clone();
                for j in 0..3 {
                    if j != k {
                        t = mode_mul(&t, &grams[j], j)?;
                    }
                }
                let gk = to_host(&unfold(&t, k)?.matmul(&sk.t()?)?)?; // Ŭ_kᵀŬ_k
                (right_solve_spd(&ak, &gk, ctx.lambda)? * c)?
            }
            Method::Gd => (ak * (c / (ctx.gd_scale * ctx.gd_scale)))?,
        };
        new_u.push((&u[k] - upd)?);
    }
    let mut g = d.clone();
    for k in 0..3 {
        let b = match ctx.method {
            Method::ScaledGd => right_solve_spd(&u[k], &gram(&u[k])?, ctx.lambda)?,
            Method::Gd => u[k].clone(),
        };
        g = mode_mul(&g, &b.t()?, k)?;
    }
    let core = (&s.core - (g * c)?)?;
    let [a, b, cc]: [Tensor; 3] = new_u
        .try_into()
        .map_err(|_| LowRankError::Numerical("factor count".into()))?;
    Ok(Tucker {
        core,
        factors: [a, b, cc],
    })
}

fn tucker_change(o: &Tucker, n: &Tucker) -> Result<(f64, f64)> {
    let xo = o.dense()?;
    let xn = n.dense()?;
    Ok((fro(&(xn - &xo)?)?, fro(&xo)?))
}

// ---------------------------------------------------------------------------------------
// Tensor completion
// ---------------------------------------------------------------------------------------

/// Tucker tensor completion from observed entries (stored as flat row-major indices and
/// values).
#[derive(Debug, Clone)]
pub struct TensorCompletion {
    dims: [usize; 3],
    flat: Tensor,
    values: Tensor,
    p: f64,
    ynorm: f64,
}

impl TensorCompletion {
    /// `indices`: flat row-major indices i·n2·n3 + j·n3 + k of the observed entries.
    pub fn new(dims: [usize; 3], indices: &[usize], values: &Tensor) -> Result<Self> {
        let total: usize = dims.iter().product();
        if total == 0 {
            return invalid(format!("tensor shape {dims:?} is empty"));
        }
        if total as u64 > u32::MAX as u64 {
            return invalid(format!("tensor {dims:?} too large for 32-bit indices"));
        }
        let nnz = values
            .dims1()
            .map_err(|_| LowRankError::InvalidInput("observed values must be 1-D".into()))?;
        if nnz != indices.len() {
            return invalid(format!("{} indices for {nnz} values", indices.len()));
        }
        if nnz == 0 {
            return invalid("the observation mask is empty (no observed entries)");
        }
        check_float(values, "observed values")?;
        let mut seen = HashSet::with_capacity(nnz);
        for &i in indices {
            if i >= total {
                return invalid(format!(
                    "flat index {i} outside a tensor of {total} entries"
                ));
            }
            if !seen.insert(i) {
                return invalid(format!("flat index {i} observed twice"));
            }
        }
        let ynorm = fro(values)?;
        if ynorm == 0.0 {
            return invalid("all observed values are zero");
        }
        let flat = Tensor::from_vec(
            indices.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            nnz,
            values.device(),
        )?;
        Ok(TensorCompletion {
            dims,
            flat,
            values: values.clone(),
            p: nnz as f64 / total as f64,
            ynorm,
        })
    }

    /// From a dense 3-way tensor and a same-shaped mask (non-zero = observed).
    pub fn from_dense(y: &Tensor, mask: &Tensor) -> Result<Self> {
        let (a, b, c) = y.dims3().map_err(|_| {
            LowRankError::InvalidInput(format!(
                "Y must be a 3-way tensor, got shape {:?}",
                y.dims()
            ))
        })?;
        if mask.dims() != y.dims() {
            return invalid(format!(
                "mask shape {:?} does not match Y shape {:?}",
                mask.dims(),
                y.dims()
            ));
        }
        let m: Vec<f64> = mask.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let yv: Vec<f64> = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let (mut idx, mut vals) = (vec![], vec![]);
        for (k, (&mk, &yk)) in m.iter().zip(&yv).enumerate() {
            if mk != 0.0 {
                if !yk.is_finite() {
                    return invalid(format!(
                        "Y has a NaN/infinite value at observed flat index {k}"
                    ));
                }
                idx.push(k);
                vals.push(yk);
            }
        }
        if vals.is_empty() {
            return invalid("the observation mask is empty (no observed entries)");
        }
        let n = vals.len();
        let v = Tensor::from_vec(vals, n, y.device())?.to_dtype(y.dtype())?;
        Self::new([a, b, c], &idx, &v)
    }

    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }
    pub fn p(&self) -> f64 {
        self.p
    }

    pub fn observed_dense(&self) -> Result<Tensor> {
        let n: usize = self.dims.iter().product();
        let z = Tensor::zeros(n, self.values.dtype(), self.values.device())?;
        Ok(z.index_add(&self.flat, &self.values, 0)?.reshape((
            self.dims[0],
            self.dims[1],
            self.dims[2],
        ))?)
    }

    /// Spectral initialisation: U_k = top-r_k eigenvectors of
    /// G + (p − 1)·diag(diag(G)), G = Y_(k) Y_(k)ᵀ; S₀ = (Y/p) ×_k U_kᵀ.
    pub fn spectral_init(&self, ranks: [usize; 3], seed: u64) -> Result<Tucker> {
        check_ranks(ranks, self.dims)?;
        let y = self.observed_dense()?;
        let mut us = Vec::with_capacity(3);
        for k in 0..3 {
            let yk = unfold(&y, k)?;
            let g = yk.matmul(&yk.t()?)?;
            let n = self.dims[k];
            let eye = Tensor::eye(n, g.dtype(), g.device())?;
            let g = (&g + ((&g * &eye)? * (self.p - 1.0))?)?;
            let (u, _, _) = truncated_svd(&g, ranks[k], seed.wrapping_add(k as u64))?;
            us.push(u);
        }
        let mut core = (y / self.p)?;
        for k in 0..3 {
            core = mode_mul(&core, &us[k].t()?, k)?;
        }
        let [a, b, c]: [Tensor; 3] = us
            .try_into()
            .map_err(|_| LowRankError::Numerical("factor count".into()))?;
        Ok(Tucker {
            core,
            factors: [a, b, c],
        })
    }

    pub fn solve(&self, ranks: [usize; 3], opts: &Options) -> Result<(Tucker, Report)> {
        let init = self.spectral_init(ranks, opts.seed)?;
        let s1 = core_sigma1(&init, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_TUCKER, s1)
    }

    pub fn solve_from(&self, init: Tucker, opts: &Options) -> Result<(Tucker, Report)> {
        let s1 = core_sigma1(&init, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_TUCKER, s1)
    }
}

impl Iterable for TensorCompletion {
    type State = Tucker;
    type Aux = Tensor;
    fn eval(&self, s: &Tucker, _t: usize) -> Result<(f64, Tensor)> {
        let x = s.dense()?;
        let z = (x.flatten_all()?.index_select(&self.flat, 0)? - &self.values)?;
        let loss = fro(&z)? / self.ynorm;
        let n: usize = self.dims.iter().product();
        let d = Tensor::zeros(n, z.dtype(), z.device())?
            .index_add(&self.flat, &z, 0)?
            .reshape((self.dims[0], self.dims[1], self.dims[2]))?;
        Ok((loss, d))
    }
    fn step(&self, s: &Tucker, d: &Tensor, ctx: &StepCtx) -> Result<Tucker> {
        tucker_step(s, d, ctx.eta / self.p, ctx)
    }
    fn change(&self, o: &Tucker, n: &Tucker) -> Result<(f64, f64)> {
        tucker_change(o, n)
    }
    fn dense(&self, s: &Tucker) -> Result<Tensor> {
        s.dense()
    }
}

// ---------------------------------------------------------------------------------------
// Tensor robust PCA
// ---------------------------------------------------------------------------------------

/// Soft-thresholding T_ζ(x) = sign(x)·max(|x| − ζ, 0).
pub fn soft_threshold(x: &Tensor, zeta: f64) -> Result<Tensor> {
    Ok((x - x.clamp(-zeta, zeta)?)?)
}

/// Thresholds of tensor RPCA: S₀ = T_{ζ₀}(Y), then S_t = T_{ζ₁ ρᵗ}(Y − X_t).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrpcaParams {
    /// `None`: 4 × a robust scale of Y (1.4826 · median |Y|).
    pub zeta0: Option<f64>,
    /// `None`: 2 × the robust scale of Y.
    pub zeta1: Option<f64>,
    /// Geometric decay of the threshold, in (0, 1).
    pub rho: f64,
}

impl Default for TrpcaParams {
    fn default() -> Self {
        TrpcaParams {
            zeta0: None,
            zeta1: None,
            rho: 0.9,
        }
    }
}

/// Tensor robust PCA: Y = X⋆ + S⋆ with X⋆ of low Tucker rank and S⋆ sparse.
#[derive(Debug, Clone)]
pub struct TensorRpca {
    y: Tensor,
    ynorm: f64,
    zeta0: f64,
    zeta1: f64,
    rho: f64,
}

impl TensorRpca {
    pub fn new(y: &Tensor, params: TrpcaParams) -> Result<Self> {
        y.dims3().map_err(|_| {
            LowRankError::InvalidInput(format!(
                "Y must be a 3-way tensor, got shape {:?}",
                y.dims()
            ))
        })?;
        check_float(y, "Y")?;
        let ynorm = fro(y)?;
        if ynorm == 0.0 {
            return invalid("Y is identically zero");
        }
        if !(params.rho > 0.0 && params.rho < 1.0) {
            return invalid(format!(
                "threshold decay rho must be in (0, 1), got {}",
                params.rho
            ));
        }
        let mut a: Vec<f64> = y.abs()?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let mid = a.len() / 2;
        let (_, med, _) = a.select_nth_unstable_by(mid, |x, y| {
            x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)
        });
        let scale = 1.4826 * *med;
        let zeta0 = params.zeta0.unwrap_or(4.0 * scale);
        let zeta1 = params.zeta1.unwrap_or(2.0 * scale);
        if !(zeta0 >= 0.0 && zeta1 >= 0.0 && zeta0.is_finite() && zeta1.is_finite()) {
            return invalid(format!(
                "thresholds must be finite and ≥ 0, got ζ₀={zeta0}, ζ₁={zeta1}"
            ));
        }
        Ok(TensorRpca {
            y: y.clone(),
            ynorm,
            zeta0,
            zeta1,
            rho: params.rho,
        })
    }

    /// (ζ₀, ζ₁, ρ) actually used.
    pub fn params(&self) -> (f64, f64, f64) {
        (self.zeta0, self.zeta1, self.rho)
    }

    /// HOSVD of Y − T_{ζ₀}(Y).
    pub fn spectral_init(&self, ranks: [usize; 3], seed: u64) -> Result<Tucker> {
        let (a, b, c) = self.y.dims3()?;
        check_ranks(ranks, [a, b, c])?;
        let m = (&self.y - soft_threshold(&self.y, self.zeta0)?)?;
        let mut us = Vec::with_capacity(3);
        for k in 0..3 {
            let (u, _, _) = truncated_svd(&unfold(&m, k)?, ranks[k], seed.wrapping_add(k as u64))?;
            us.push(u);
        }
        let mut core = m;
        for k in 0..3 {
            core = mode_mul(&core, &us[k].t()?, k)?;
        }
        let [a, b, c]: [Tensor; 3] = us
            .try_into()
            .map_err(|_| LowRankError::Numerical("factor count".into()))?;
        Ok(Tucker {
            core,
            factors: [a, b, c],
        })
    }

    pub fn solve(&self, ranks: [usize; 3], opts: &Options) -> Result<(Tucker, Report)> {
        let init = self.spectral_init(ranks, opts.seed)?;
        let s1 = core_sigma1(&init, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_TUCKER, s1)
    }

    /// Sparse estimate at iteration t for a given Tucker estimate.
    pub fn outliers(&self, x: &Tucker, t: usize) -> Result<Tensor> {
        soft_threshold(
            &(&self.y - x.dense()?)?,
            self.zeta1 * self.rho.powi(t as i32),
        )
    }
}

impl Iterable for TensorRpca {
    type State = Tucker;
    type Aux = Tensor;
    fn eval(&self, s: &Tucker, t: usize) -> Result<(f64, Tensor)> {
        let e = (&self.y - s.dense()?)?;
        let sp = soft_threshold(&e, self.zeta1 * self.rho.powi(t as i32))?;
        let d = (sp - e)?;
        Ok((fro(&d)? / self.ynorm, d))
    }
    fn step(&self, s: &Tucker, d: &Tensor, ctx: &StepCtx) -> Result<Tucker> {
        tucker_step(s, d, ctx.eta, ctx)
    }
    fn change(&self, o: &Tucker, n: &Tucker) -> Result<(f64, f64)> {
        tucker_change(o, n)
    }
    fn dense(&self, s: &Tucker) -> Result<Tensor> {
        s.dense()
    }
}
