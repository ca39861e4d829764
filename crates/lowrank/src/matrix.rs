//! Matrix problems with X = L Rᵀ: completion, robust PCA, sensing; and
//! overparameterised PSD sensing with ScaledGD(λ).

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};
use nalgebra::DMatrix;
use rand::{rngs::StdRng, SeedableRng};
use serde::Serialize;

use crate::error::{invalid, LowRankError, Result};
use crate::linalg::{
    all_finite, balanced_factors, fro, from_host, gram, randn_host, right_solve_spd, truncated_svd,
};
use crate::solver::{run, run_validated, Iterable, Method, Options, Report, StepCtx, Validation};

/// Default step size for matrix problems.
pub const DEFAULT_ETA_MATRIX: f64 = 0.5;

/// Low-rank factors X = L Rᵀ.
#[derive(Debug, Clone)]
pub struct Factors {
    pub l: Tensor,
    pub r: Tensor,
}

impl Factors {
    /// The dense estimate L Rᵀ.
    pub fn dense(&self) -> Result<Tensor> {
        Ok(self.l.matmul(&self.r.t()?)?)
    }
}

pub(crate) fn check_rank(rank: usize, dims: &[usize]) -> Result<()> {
    let m = dims.iter().copied().min().unwrap_or(0);
    if rank == 0 {
        return invalid("rank must be at least 1");
    }
    if rank >= m {
        return invalid(format!(
            "rank {rank} must be smaller than the smallest dimension {m} (dims {dims:?})"
        ));
    }
    Ok(())
}

pub(crate) fn check_float(t: &Tensor, what: &str) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => {}
        d => return invalid(format!("{what} must be f32 or f64, got {d:?}")),
    }
    if !all_finite(t)? {
        return invalid(format!("{what} contains NaN or infinite values"));
    }
    Ok(())
}

/// ‖L'R'ᵀ − LRᵀ‖_F and ‖LRᵀ‖_F through r-sized Gram matrices, written so that no
/// large terms cancel: L'R'ᵀ − LRᵀ = [ΔL, L] [R', ΔR]ᵀ.
pub(crate) fn factor_change(
    l0: &Tensor,
    r0: &Tensor,
    l1: &Tensor,
    r1: &Tensor,
) -> Result<(f64, f64)> {
    let dl = (l1 - l0)?;
    let dr = (r1 - r0)?;
    let a = Tensor::cat(&[&dl, l0], 1)?;
    let b = Tensor::cat(&[r1, &dr], 1)?;
    let ga = a.t()?.matmul(&a)?;
    let gb = b.t()?.matmul(&b)?;
    let d2 = crate::linalg::scalar(&(ga * gb)?.sum_all()?)?;
    let n2 = crate::linalg::scalar(&(l0.t()?.matmul(l0)? * r0.t()?.matmul(r0)?)?.sum_all()?)?;
    Ok((d2.max(0.0).sqrt(), n2.max(0.0).sqrt()))
}

/// The factor step shared by every L Rᵀ problem: gradient blocks `gl = ∇_L`, `gr = ∇_R`
/// (already scaled by 1/p where relevant).
fn factor_step(f: &Factors, gl: &Tensor, gr: &Tensor, ctx: &StepCtx) -> Result<Factors> {
    match ctx.method {
        Method::ScaledGd => {
            let pl = right_solve_spd(gl, &gram(&f.r)?, ctx.lambda)?;
            let pr = right_solve_spd(gr, &gram(&f.l)?, ctx.lambda)?;
            Ok(Factors {
                l: (&f.l - (pl * ctx.eta)?)?,
                r: (&f.r - (pr * ctx.eta)?)?,
            })
        }
        Method::Gd => {
            let c = ctx.eta / ctx.gd_scale;
            Ok(Factors {
                l: (&f.l - (gl * c)?)?,
                r: (&f.r - (gr * c)?)?,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Matrix completion
// ---------------------------------------------------------------------------------------

/// Matrix completion: observed entries Y_ij, (i, j) ∈ Ω, stored sparsely
/// (row indices, column indices, values). The residual is only ever formed on Ω.
#[derive(Debug, Clone)]
pub struct MatrixCompletion {
    n1: usize,
    n2: usize,
    rows: Tensor,
    cols: Tensor,
    flat: Tensor,
    values: Tensor,
    p: f64,
    ynorm: f64,
}

impl MatrixCompletion {
    /// Build from index lists and a 1-D value tensor (its dtype/device is the problem's).
    pub fn new(
        n1: usize,
        n2: usize,
        rows: &[usize],
        cols: &[usize],
        values: &Tensor,
    ) -> Result<Self> {
        if n1 == 0 || n2 == 0 {
            return invalid(format!("matrix shape {n1}×{n2} is empty"));
        }
        if (n1 as u64) * (n2 as u64) > u32::MAX as u64 {
            return invalid(format!("matrix {n1}×{n2} too large for 32-bit indices"));
        }
        let nnz = values.dims1().map_err(|_| {
            LowRankError::InvalidInput(format!(
                "observed values must be 1-D, got shape {:?}",
                values.dims()
            ))
        })?;
        if rows.len() != nnz || cols.len() != nnz {
            return invalid(format!(
                "index lists ({} rows, {} cols) do not match {nnz} values",
                rows.len(),
                cols.len()
            ));
        }
        if nnz == 0 {
            return invalid("the observation mask is empty (no observed entries)");
        }
        check_float(values, "observed values")?;
        let mut seen = HashSet::with_capacity(nnz);
        let mut flat = Vec::with_capacity(nnz);
        for (&i, &j) in rows.iter().zip(cols) {
            if i >= n1 || j >= n2 {
                return invalid(format!(
                    "observed index ({i}, {j}) outside the {n1}×{n2} matrix"
                ));
            }
            let f = (i * n2 + j) as u32;
            if !seen.insert(f) {
                return invalid(format!("observed index ({i}, {j}) appears twice"));
            }
            flat.push(f);
        }
        // A row or column without observations cannot be recovered (its factor row
        // never receives a gradient).
        let mut row_seen = vec![false; n1];
        let mut col_seen = vec![false; n2];
        for (&i, &j) in rows.iter().zip(cols) {
            row_seen[i] = true;
            col_seen[j] = true;
        }
        if let Some(i) = row_seen.iter().position(|&b| !b) {
            let k = row_seen.iter().filter(|&&b| !b).count();
            return invalid(format!(
                "row {i} of the {n1}×{n2} matrix has no observed entries ({k} empty rows); \
                 it cannot be completed"
            ));
        }
        if let Some(j) = col_seen.iter().position(|&b| !b) {
            let k = col_seen.iter().filter(|&&b| !b).count();
            return invalid(format!(
                "column {j} of the {n1}×{n2} matrix has no observed entries ({k} empty \
                 columns); it cannot be completed"
            ));
        }
        let dev = values.device();
        let ynorm = fro(values)?;
        if ynorm == 0.0 {
            return invalid("all observed values are zero");
        }
        Ok(MatrixCompletion {
            n1,
            n2,
            rows: Tensor::from_vec(rows.iter().map(|&i| i as u32).collect::<Vec<_>>(), nnz, dev)?,
            cols: Tensor::from_vec(cols.iter().map(|&j| j as u32).collect::<Vec<_>>(), nnz, dev)?,
            flat: Tensor::from_vec(flat, nnz, dev)?,
            values: values.clone(),
            p: nnz as f64 / (n1 as f64 * n2 as f64),
            ynorm,
        })
    }

    /// Build from a dense observed matrix and a mask of the same shape (non-zero =
    /// observed). Entries of `y` outside the mask are ignored (they may be NaN).
    pub fn from_dense(y: &Tensor, mask: &Tensor) -> Result<Self> {
        let (n1, n2) = y.dims2().map_err(|_| {
            LowRankError::InvalidInput(format!("Y must be a matrix, got shape {:?}", y.dims()))
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
        let (mut rows, mut cols, mut vals) = (vec![], vec![], vec![]);
        for (k, (&mk, &yk)) in m.iter().zip(&yv).enumerate() {
            if mk != 0.0 {
                if !yk.is_finite() {
                    return invalid(format!(
                        "Y has a NaN/infinite value at observed entry ({}, {})",
                        k / n2,
                        k % n2
                    ));
                }
                rows.push(k / n2);
                cols.push(k % n2);
                vals.push(yk);
            }
        }
        if vals.is_empty() {
            return invalid("the observation mask is empty (no observed entries)");
        }
        let n = vals.len();
        let v = Tensor::from_vec(vals, n, y.device())?.to_dtype(y.dtype())?;
        Self::new(n1, n2, &rows, &cols, &v)
    }

    /// Override the sampling rate p used in the 1/p scaling (default |Ω|/(n1 n2)).
    pub fn with_p(mut self, p: f64) -> Result<Self> {
        if !(p > 0.0 && p <= 1.0) {
            return invalid(format!("sampling rate must be in (0, 1], got {p}"));
        }
        self.p = p;
        Ok(self)
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.n1, self.n2)
    }
    pub fn nnz(&self) -> usize {
        self.values.dims()[0]
    }
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Zero-filled dense observed matrix P_Ω(Y).
    pub fn observed_dense(&self) -> Result<Tensor> {
        let z = Tensor::zeros(self.n1 * self.n2, self.values.dtype(), self.values.device())?;
        Ok(z.index_add(&self.flat, &self.values, 0)?
            .reshape((self.n1, self.n2))?)
    }

    /// Spectral initialisation: top-r SVD of Y/p. Returns the factors and σ₁..σ_r of Y/p.
    pub fn spectral_init(&self, rank: usize, seed: u64) -> Result<(Factors, Vec<f64>)> {
        check_rank(rank, &[self.n1, self.n2])?;
        let m0 = (self.observed_dense()? / self.p)?;
        let (l, r, s) = balanced_factors(&m0, rank, seed)?;
        Ok((Factors { l, r }, s))
    }

    /// Spectral initialisation followed by ScaledGD or GD.
    pub fn solve(&self, rank: usize, opts: &Options) -> Result<(Factors, Report)> {
        let (init, s) = self.spectral_init(rank, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_MATRIX, s[0])
    }

    /// Iterate from given factors (σ₁ for GD / damping taken from them).
    pub fn solve_from(&self, init: Factors, opts: &Options) -> Result<(Factors, Report)> {
        let (_, s, _) = truncated_svd(&init.dense()?, 1, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_MATRIX, s[0])
    }

    /// Early stopping: hold out `frac` of the observed entries (seeded by `opts.seed`,
    /// the same split as [`crate::select::completion_rank_scan`]), run ScaledGD/GD on
    /// the rest, and stop once the held-out relative error has not improved for
    /// `patience` iterations; the best iterate is returned and the report holds the
    /// held-out error curve, `best_iteration` and `best_heldout_error`.
    pub fn solve_early_stopping(
        &self,
        rank: usize,
        frac: f64,
        patience: usize,
        opts: &Options,
    ) -> Result<(Factors, Report)> {
        let (train, hold) = self.split_holdout(frac, opts.seed.wrapping_add(17))?;
        train.solve_validated(rank, &hold, patience, opts)
    }

    /// Spectral initialisation and ScaledGD/GD with early stopping on a given held-out
    /// set (entries not in this problem).
    pub fn solve_validated(
        &self,
        rank: usize,
        hold: &Holdout,
        patience: usize,
        opts: &Options,
    ) -> Result<(Factors, Report)> {
        if patience == 0 {
            return invalid("early-stopping patience must be at least 1");
        }
        if hold.is_empty() {
            return invalid("the held-out set is empty");
        }
        let (init, s) = self.spectral_init(rank, opts.seed)?;
        let eval = |f: &Factors| hold.rel_error(f);
        let val = Validation {
            eval: &eval,
            patience,
        };
        run_validated(self, init, opts, DEFAULT_ETA_MATRIX, s[0], Some(val))
    }

    /// Split the observed entries into a training problem and a held-out set holding a
    /// `frac` fraction of them (chosen with `seed`), for validation.
    pub fn split_holdout(&self, frac: f64, seed: u64) -> Result<(MatrixCompletion, Holdout)> {
        if !(frac > 0.0 && frac < 1.0) {
            return invalid(format!("held-out fraction must be in (0, 1), got {frac}"));
        }
        let rows: Vec<u32> = self.rows.to_vec1()?;
        let cols: Vec<u32> = self.cols.to_vec1()?;
        let vals: Vec<f64> = self.values.to_dtype(DType::F64)?.to_vec1()?;
        let mut rng = StdRng::seed_from_u64(seed);
        use rand::Rng;
        let (mut tr, mut tc, mut tv, mut hr, mut hc, mut hv) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for k in 0..vals.len() {
            if rng.random::<f64>() < frac {
                hr.push(rows[k]);
                hc.push(cols[k]);
                hv.push(vals[k]);
            } else {
                tr.push(rows[k] as usize);
                tc.push(cols[k] as usize);
                tv.push(vals[k]);
            }
        }
        if hv.is_empty() || tv.is_empty() {
            return invalid("too few observed entries to hold some out for validation");
        }
        let dev = self.values.device();
        let dt = self.values.dtype();
        let n = tv.len();
        let train = MatrixCompletion::new(
            self.n1,
            self.n2,
            &tr,
            &tc,
            &Tensor::from_vec(tv, n, dev)?.to_dtype(dt)?,
        )?;
        let n = hv.len();
        let hold = Holdout {
            rows: Tensor::from_vec(hr, n, dev)?,
            cols: Tensor::from_vec(hc, n, dev)?,
            values: Tensor::from_vec(hv, n, dev)?.to_dtype(dt)?,
        };
        Ok((train, hold))
    }

    /// Values of L Rᵀ at the given entries.
    pub fn predict(f: &Factors, rows: &Tensor, cols: &Tensor) -> Result<Tensor> {
        let lg = f.l.index_select(rows, 0)?;
        let rg = f.r.index_select(cols, 0)?;
        Ok((lg * rg)?.sum(1)?)
    }
}

/// Held-out observed entries for validation.
#[derive(Debug, Clone)]
pub struct Holdout {
    pub rows: Tensor,
    pub cols: Tensor,
    pub values: Tensor,
}

impl Holdout {
    /// ‖P_H(L Rᵀ) − Y_H‖ / ‖Y_H‖ on the held-out entries.
    pub fn rel_error(&self, f: &Factors) -> Result<f64> {
        let pred = MatrixCompletion::predict(f, &self.rows, &self.cols)?;
        Ok(fro(&(pred - &self.values)?)? / fro(&self.values)?)
    }
    pub fn len(&self) -> usize {
        self.values.dims()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) struct McAux {
    z: Tensor,
    lg: Tensor,
    rg: Tensor,
}

impl Iterable for MatrixCompletion {
    type State = Factors;
    type Aux = McAux;
    fn eval(&self, s: &Factors, _t: usize) -> Result<(f64, McAux)> {
        let lg = s.l.index_select(&self.rows, 0)?;
        let rg = s.r.index_select(&self.cols, 0)?;
        let z = ((&lg * &rg)?.sum(1)? - &self.values)?;
        Ok((fro(&z)? / self.ynorm, McAux { z, lg, rg }))
    }
    fn step(&self, s: &Factors, a: &McAux, ctx: &StepCtx) -> Result<Factors> {
        let r = s.l.dims()[1];
        let z = (a.z.unsqueeze(1)? / self.p)?;
        let dt = s.l.dtype();
        let dev = s.l.device();
        let gl = Tensor::zeros((self.n1, r), dt, dev)?.index_add(
            &self.rows,
            &a.rg.broadcast_mul(&z)?,
            0,
        )?;
        let gr = Tensor::zeros((self.n2, r), dt, dev)?.index_add(
            &self.cols,
            &a.lg.broadcast_mul(&z)?,
            0,
        )?;
        factor_step(s, &gl, &gr, ctx)
    }
    fn change(&self, o: &Factors, n: &Factors) -> Result<(f64, f64)> {
        factor_change(&o.l, &o.r, &n.l, &n.r)
    }
    fn dense(&self, s: &Factors) -> Result<Tensor> {
        s.dense()
    }
}

// ---------------------------------------------------------------------------------------
// Robust PCA
// ---------------------------------------------------------------------------------------

/// Robust PCA: Y = X⋆ + S⋆ with at most an α-fraction of corrupted entries per row and
/// per column.
#[derive(Debug, Clone)]
pub struct RobustPca {
    y: Tensor,
    alpha: f64,
    ynorm: f64,
}

/// T_α(Z): keep an entry iff it is among the ⌊α n1⌋ largest |·| of its column and
/// among the ⌊α n2⌋ largest of its row; zero elsewhere. Thresholds are found on the
/// host (selection per row/column), the masking runs on Z's device.
pub fn sparsify(z: &Tensor, alpha: f64) -> Result<Tensor> {
    let (n1, n2) = z.dims2()?;
    let kc = (alpha * n1 as f64).floor() as usize; // per column
    let kr = (alpha * n2 as f64).floor() as usize; // per row
    if kc == 0 || kr == 0 {
        return Ok(z.zeros_like()?);
    }
    let az = z.abs()?;
    let a: Vec<f64> = az.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let desc = |x: &f64, y: &f64| y.partial_cmp(x).unwrap_or(std::cmp::Ordering::Equal);
    let mut row_thr = Vec::with_capacity(n1);
    let mut buf = vec![0.0; n1.max(n2)];
    for i in 0..n1 {
        let b = &mut buf[..n2];
        b.copy_from_slice(&a[i * n2..(i + 1) * n2]);
        let (_, v, _) = b.select_nth_unstable_by(kr - 1, desc);
        row_thr.push(*v);
    }
    let mut col_thr = Vec::with_capacity(n2);
    for j in 0..n2 {
        let b = &mut buf[..n1];
        for i in 0..n1 {
            b[i] = a[i * n2 + j];
        }
        let (_, v, _) = b.select_nth_unstable_by(kc - 1, desc);
        col_thr.push(*v);
    }
    let dev = z.device();
    let rt = Tensor::from_vec(row_thr, (n1, 1), dev)?.to_dtype(z.dtype())?;
    let ct = Tensor::from_vec(col_thr, (1, n2), dev)?.to_dtype(z.dtype())?;
    let keep = az.broadcast_ge(&rt)?.mul(&az.broadcast_ge(&ct)?)?;
    Ok(keep.where_cond(z, &z.zeros_like()?)?)
}

impl RobustPca {
    /// `y`: the corrupted matrix; `alpha`: the fraction of outliers per row/column, in
    /// (0, 0.5).
    pub fn new(y: &Tensor, alpha: f64) -> Result<Self> {
        let (n1, n2) = y.dims2().map_err(|_| {
            LowRankError::InvalidInput(format!("Y must be a matrix, got shape {:?}", y.dims()))
        })?;
        if n1 < 2 || n2 < 2 {
            return invalid(format!("Y shape {n1}×{n2} is too small"));
        }
        if !(alpha > 0.0 && alpha < 0.5) {
            return invalid(format!(
                "outlier fraction alpha must be in (0, 0.5), got {alpha}"
            ));
        }
        check_float(y, "Y")?;
        let ynorm = fro(y)?;
        if ynorm == 0.0 {
            return invalid("Y is identically zero");
        }
        Ok(RobustPca {
            y: y.clone(),
            alpha,
            ynorm,
        })
    }

    /// Spectral initialisation on Y − T_α(Y).
    pub fn spectral_init(&self, rank: usize, seed: u64) -> Result<(Factors, Vec<f64>)> {
        let (n1, n2) = self.y.dims2()?;
        check_rank(rank, &[n1, n2])?;
        let m0 = (&self.y - sparsify(&self.y, self.alpha)?)?;
        let (l, r, s) = balanced_factors(&m0, rank, seed)?;
        Ok((Factors { l, r }, s))
    }

    pub fn solve(&self, rank: usize, opts: &Options) -> Result<(Factors, Report)> {
        let (init, s) = self.spectral_init(rank, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_MATRIX, s[0])
    }

    /// Iterate from given factors.
    pub fn solve_from(&self, init: Factors, opts: &Options) -> Result<(Factors, Report)> {
        let (_, s, _) = truncated_svd(&init.dense()?, 1, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_MATRIX, s[0])
    }

    /// The outlier estimate T_{2α}(Y − L Rᵀ) for given factors.
    pub fn outliers(&self, f: &Factors) -> Result<Tensor> {
        sparsify(&(&self.y - f.dense()?)?, 2.0 * self.alpha)
    }
}

impl Iterable for RobustPca {
    type State = Factors;
    type Aux = Tensor;
    fn eval(&self, s: &Factors, _t: usize) -> Result<(f64, Tensor)> {
        let e = (&self.y - s.dense()?)?;
        let sp = sparsify(&e, 2.0 * self.alpha)?;
        let g = (sp - e)?; // X + S − Y
        Ok((fro(&g)? / self.ynorm, g))
    }
    fn step(&self, s: &Factors, g: &Tensor, ctx: &StepCtx) -> Result<Factors> {
        let gl = g.matmul(&s.r)?;
        let gr = g.t()?.matmul(&s.l)?;
        factor_step(s, &gl, &gr, ctx)
    }
    fn change(&self, o: &Factors, n: &Factors) -> Result<(f64, f64)> {
        factor_change(&o.l, &o.r, &n.l, &n.r)
    }
    fn dense(&self, s: &Factors) -> Result<Tensor> {
        s.dense()
    }
}

// ---------------------------------------------------------------------------------------
// Matrix sensing
// ---------------------------------------------------------------------------------------

/// A linear measurement operator given as an m × (n1·n2) design matrix: row k is
/// vec(A_k) (row-major). A(X) = D vec(X), A*(z) = mat(Dᵀ z).
#[derive(Debug, Clone)]
pub struct Design {
    d: Tensor,
    n1: usize,
    n2: usize,
}

impl Design {
    pub fn new(d: &Tensor, n1: usize, n2: usize) -> Result<Self> {
        let (m, nn) = d.dims2().map_err(|_| {
            LowRankError::InvalidInput(format!("design must be m × (n1·n2), got {:?}", d.dims()))
        })?;
        if nn != n1 * n2 || m == 0 {
            return invalid(format!(
                "design shape {m}×{nn} does not match n1·n2 = {n1}·{n2}"
            ));
        }
        check_float(d, "design matrix")?;
        Ok(Design {
            d: d.clone(),
            n1,
            n2,
        })
    }

    /// Gaussian design with i.i.d. N(0, 1/m) entries (generated on the host from `seed`).
    pub fn gaussian(
        m: usize,
        n1: usize,
        n2: usize,
        seed: u64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let bytes = m as u128 * (n1 * n2) as u128 * 8;
        if bytes > 16u128 << 30 {
            return invalid(format!(
                "a {m} × {} Gaussian design would need {} GiB",
                n1 * n2,
                bytes >> 30
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let scale = 1.0 / (m as f64).sqrt();
        let mut v = Vec::with_capacity(m * n1 * n2);
        use rand_distr::{Distribution, StandardNormal};
        for _ in 0..m * n1 * n2 {
            let x: f64 = StandardNormal.sample(&mut rng);
            v.push(x * scale);
        }
        let d = Tensor::from_vec(v, (m, n1 * n2), dev)?.to_dtype(dtype)?;
        Ok(Design { d, n1, n2 })
    }

    pub fn m(&self) -> usize {
        self.d.dims()[0]
    }

    /// Shape (n1, n2) of the sensed matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.n1, self.n2)
    }

    /// Element type of the design.
    pub fn dtype(&self) -> DType {
        self.d.dtype()
    }

    /// A(X): (m,) measurements of an n1×n2 matrix.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .d
            .matmul(&x.reshape((self.n1 * self.n2, 1))?)?
            .squeeze(1)?)
    }

    /// A*(z) = Σ_k z_k A_k, an n1×n2 matrix.
    pub fn adjoint(&self, z: &Tensor) -> Result<Tensor> {
        let m = self.m();
        Ok(z.reshape((1, m))?
            .matmul(&self.d)?
            .reshape((self.n1, self.n2))?)
    }
}

/// Checks sensing measurements against their design: 1-D, one per design row, floating point.
pub(crate) fn check_measurements(a: &Design, y: &Tensor) -> Result<()> {
    let m = y
        .dims1()
        .map_err(|_| LowRankError::InvalidInput("measurements y must be 1-D".into()))?;
    if m != a.m() {
        return invalid(format!(
            "{m} measurements but the design has {} rows",
            a.m()
        ));
    }
    check_float(y, "measurements y")
}

/// Matrix sensing y = A(X⋆).
#[derive(Debug, Clone)]
pub struct MatrixSensing {
    a: Design,
    y: Tensor,
    ynorm: f64,
}

impl MatrixSensing {
    pub fn new(a: Design, y: &Tensor) -> Result<Self> {
        check_measurements(&a, y)?;
        let ynorm = fro(y)?;
        if ynorm == 0.0 {
            return invalid("all measurements are zero");
        }
        Ok(MatrixSensing {
            y: y.to_dtype(a.d.dtype())?,
            a,
            ynorm,
        })
    }

    pub fn design(&self) -> &Design {
        &self.a
    }

    /// Spectral initialisation: top-r SVD of A*(y).
    pub fn spectral_init(&self, rank: usize, seed: u64) -> Result<(Factors, Vec<f64>)> {
        check_rank(rank, &[self.a.n1, self.a.n2])?;
        let m0 = self.a.adjoint(&self.y)?;
        let (l, r, s) = balanced_factors(&m0, rank, seed)?;
        Ok((Factors { l, r }, s))
    }

    pub fn solve(&self, rank: usize, opts: &Options) -> Result<(Factors, Report)> {
        let (init, s) = self.spectral_init(rank, opts.seed)?;
        run(self, init, opts, DEFAULT_ETA_MATRIX, s[0])
    }
}

impl Iterable for MatrixSensing {
    type State = Factors;
    type Aux = Tensor;
    fn eval(&self, s: &Factors, _t: usize) -> Result<(f64, Tensor)> {
        let res = (self.a.apply(&s.dense()?)? - &self.y)?;
        Ok((fro(&res)? / self.ynorm, res))
    }
    fn step(&self, s: &Factors, res: &Tensor, ctx: &StepCtx) -> Result<Factors> {
        let z = self.a.adjoint(res)?;
        let gl = z.matmul(&s.r)?;
        let gr = z.t()?.matmul(&s.l)?;
        factor_step(s, &gl, &gr, ctx)
    }
    fn change(&self, o: &Factors, n: &Factors) -> Result<(f64, f64)> {
        factor_change(&o.l, &o.r, &n.l, &n.r)
    }
    fn dense(&self, s: &Factors) -> Result<Tensor> {
        s.dense()
    }
}

// ---------------------------------------------------------------------------------------
// Overparameterised PSD sensing, ScaledGD(λ)
// ---------------------------------------------------------------------------------------

/// PSD matrix sensing y = A(M⋆), M⋆ = X⋆X⋆ᵀ ⪰ 0, fitted with X ∈ ℝ^{n×r'}, r' ≥ rank(M⋆)
/// (rank unknown), f(X) = ¼‖A(XXᵀ) − y‖², by ScaledGD(λ):
/// X⁺ = X − η ∇f(X) (XᵀX + λI)⁻¹ from a small random initialisation X₀ = α G/√n.
#[derive(Debug, Clone)]
pub struct PsdSensing {
    a: Design,
    y: Tensor,
    ynorm: f64,
}

/// Options specific to [`PsdSensing`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PsdInit {
    /// Search rank r' (≥ the true rank).
    pub rank: usize,
    /// Initial scale α of X₀ = α G/√n.
    pub alpha: f64,
}

impl PsdSensing {
    pub fn new(a: Design, y: &Tensor) -> Result<Self> {
        if a.n1 != a.n2 {
            return invalid(format!(
                "PSD sensing needs a square design, got {}×{}",
                a.n1, a.n2
            ));
        }
        let m = y
            .dims1()
            .map_err(|_| LowRankError::InvalidInput("measurements y must be 1-D".into()))?;
        if m != a.m() {
            return invalid(format!(
                "{m} measurements but the design has {} rows",
                a.m()
            ));
        }
        check_float(y, "measurements y")?;
        let ynorm = fro(y)?;
        if ynorm == 0.0 {
            return invalid("all measurements are zero");
        }
        Ok(PsdSensing {
            y: y.to_dtype(a.d.dtype())?,
            a,
            ynorm,
        })
    }

    /// σ₁ of the symmetrised spectral estimate A*(y) (scale for λ and GD).
    pub fn sigma1(&self, seed: u64) -> Result<f64> {
        let m0 = self.a.adjoint(&self.y)?;
        let m0 = ((&m0 + m0.t()?)? * 0.5)?;
        Ok(truncated_svd(&m0, 1, seed)?.1[0])
    }

    /// ScaledGD(λ) (or GD with `Method::Gd`) from X₀ = α G/√n. `opts.damping` gives λ;
    /// with `Damping::None` the default λ = 0.1 σ₁(A*(y)) is used (λ ≍ σ_min(M⋆) in the
    /// theory; σ_min is unknown, so a fraction of the top of the spectrum stands in).
    pub fn solve(&self, init: PsdInit, opts: &Options) -> Result<(Tensor, Report)> {
        let n = self.a.n1;
        check_rank(init.rank, &[n])?;
        if !(init.alpha > 0.0 && init.alpha.is_finite()) {
            return invalid(format!(
                "initial scale alpha must be > 0, got {}",
                init.alpha
            ));
        }
        let s1 = self.sigma1(opts.seed)?;
        let mut o = opts.clone();
        if o.damping == crate::solver::Damping::None && o.method == Method::ScaledGd {
            o.damping = crate::solver::Damping::Relative(0.1);
        }
        let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_add(0x9e37));
        let g: DMatrix<f64> = randn_host(n, init.rank, &mut rng) * (init.alpha / (n as f64).sqrt());
        let x0 = from_host(&g, self.y.dtype(), self.y.device())?;
        run(self, x0, &o, DEFAULT_ETA_MATRIX, s1)
    }
}

impl Iterable for PsdSensing {
    type State = Tensor;
    type Aux = Tensor;
    fn eval(&self, x: &Tensor, _t: usize) -> Result<(f64, Tensor)> {
        let res = (self.a.apply(&x.matmul(&x.t()?)?)? - &self.y)?;
        Ok((fro(&res)? / self.ynorm, res))
    }
    fn step(&self, x: &Tensor, res: &Tensor, ctx: &StepCtx) -> Result<Tensor> {
        let z = self.a.adjoint(res)?;
        let zs = ((&z + z.t()?)? * 0.5)?;
        let g = zs.matmul(x)?;
        let upd = match ctx.method {
            Method::ScaledGd => (right_solve_spd(&g, &gram(x)?, ctx.lambda)? * ctx.eta)?,
            Method::Gd => (g * (ctx.eta / ctx.gd_scale))?,
        };
        Ok((x - upd)?)
    }
    fn change(&self, o: &Tensor, n: &Tensor) -> Result<(f64, f64)> {
        factor_change(o, o, n, n)
    }
    fn dense(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&x.t()?)?)
    }
}
