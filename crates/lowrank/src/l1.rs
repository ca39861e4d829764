//! Scaled subgradient method (ScaledSM) for the ℓ1 loss — Tong, Ma & Chi, "Low-Rank
//! Matrix Recovery with Scaled Subgradient Methods: Fast and Robust Convergence Without
//! the Condition Number" (IEEE TSP 2021); public MATLAB code `Titan-Tong/ScaledGD`,
//! `matrix_l1/MS_l1*.m`.
//!
//! f(L, R) = ‖A(L Rᵀ) − y‖₁ with a subgradient Z = A*(sign(A(L Rᵀ) − y)):
//! ```text
//! L⁺ = L − η_t Z R (RᵀR)⁻¹,   R⁺ = R − η_t Zᵀ L (LᵀL)⁻¹
//! ```
//! Step sizes: Polyak's η_t = (f_t − f⋆) / ‖(∇_L, ∇_R)‖²_scaled, where the scaled norm is
//! ⟨Z R, Z R (RᵀR)⁻¹⟩ + ⟨Zᵀ L, Zᵀ L (LᵀL)⁻¹⟩, or geometrically decaying
//! η_t = λ qᵗ / ‖(∇_L, ∇_R)‖_scaled (a move of scaled length λ qᵗ). Vanilla SM
//! (`Method::Gd`) uses the same steps with the unscaled norm and directions.
//!
//! Two observation models: A = P_Ω (robust PCA / robust completion: Y = X⋆ + S⋆ on the
//! observed entries, all of them by default) and a Gaussian design (robust sensing:
//! y = A(X⋆) + s with a fraction of arbitrary outliers in y).

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::{invalid, LowRankError, Result};
use crate::linalg::{balanced_factors, gram, inner, right_solve_spd, truncated_svd};
use crate::matrix::{check_float, check_rank, sparsify, Design, Factors, MatrixSensing};
use crate::solver::{run, Iterable, Method, Options, Report, StepCtx};

/// Step-size rule of the scaled subgradient method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum L1Step {
    /// Polyak's step with the optimal loss value f⋆ = ‖outliers‖₁ (0 without outliers;
    /// known for synthetic problems, otherwise an estimate).
    Polyak { f_star: f64 },
    /// η_t = λ qᵗ / ‖∇‖_scaled with λ = `lambda_rel` · ‖X₀‖_F (scale-free) and 0 < q < 1.
    Geometric { lambda_rel: f64, q: f64 },
}

#[derive(Debug, Clone)]
enum Obs {
    /// Entries of Y (dense) on a 0/1 mask (`None` = every entry observed).
    Entries { y: Tensor, mask: Option<Tensor> },
    /// Linear measurements y = A(X) + s.
    Sensing { a: Design, y: Tensor },
}

/// An ℓ1-loss low-rank problem solved by ScaledSM.
#[derive(Debug, Clone)]
pub struct L1Problem {
    obs: Obs,
    n1: usize,
    n2: usize,
    /// ‖y‖₁ on the observations (normalises the reported residual).
    y_l1: f64,
}

fn l1(t: &Tensor) -> Result<f64> {
    crate::linalg::scalar(&t.abs()?.sum_all()?)
}

impl L1Problem {
    /// Robust PCA / robust completion with the ℓ1 loss: Y = X⋆ + S⋆ observed where
    /// `mask` ≠ 0 (every entry when `mask` is `None`).
    pub fn entries(y: &Tensor, mask: Option<&Tensor>) -> Result<Self> {
        let (n1, n2) = y.dims2().map_err(|_| {
            LowRankError::InvalidInput(format!("Y must be a matrix, got shape {:?}", y.dims()))
        })?;
        if n1 < 2 || n2 < 2 {
            return invalid(format!("Y shape {n1}×{n2} is too small"));
        }
        let (y, mask) = match mask {
            None => {
                check_float(y, "Y")?;
                (y.clone(), None)
            }
            Some(m) => {
                if m.dims() != y.dims() {
                    return invalid(format!(
                        "mask shape {:?} does not match Y shape {:?}",
                        m.dims(),
                        y.dims()
                    ));
                }
                let cond = m.ne(0.0)?;
                let m = cond.to_dtype(y.dtype())?;
                let rows: Vec<f64> = m.sum(1)?.to_dtype(DType::F64)?.to_vec1()?;
                let cols: Vec<f64> = m.sum(0)?.to_dtype(DType::F64)?.to_vec1()?;
                if let Some(i) = rows.iter().position(|&c| c == 0.0) {
                    return invalid(format!(
                        "row {i} of the {n1}×{n2} mask has no observed entries; it cannot be recovered"
                    ));
                }
                if let Some(j) = cols.iter().position(|&c| c == 0.0) {
                    return invalid(format!(
                        "column {j} of the {n1}×{n2} mask has no observed entries; it cannot be recovered"
                    ));
                }
                // Unobserved entries may hold NaN: zero them before checking.
                let y0 = cond.where_cond(y, &y.zeros_like()?)?;
                check_float(&y0, "Y on the observed entries")?;
                (y0, Some(m))
            }
        };
        let y_l1 = l1(&y)?;
        if y_l1 == 0.0 {
            return invalid("Y is identically zero on the observed entries");
        }
        Ok(L1Problem {
            obs: Obs::Entries { y, mask },
            n1,
            n2,
            y_l1,
        })
    }

    /// Robust matrix sensing y = A(X⋆) + s with the ℓ1 loss.
    pub fn sensing(a: Design, y: &Tensor) -> Result<Self> {
        crate::matrix::check_measurements(&a, y)?;
        let y = y.to_dtype(a.dtype())?;
        let y_l1 = l1(&y)?;
        if y_l1 == 0.0 {
            return invalid("all measurements are zero");
        }
        let (n1, n2) = a.shape();
        Ok(L1Problem {
            obs: Obs::Sensing { a, y },
            n1,
            n2,
            y_l1,
        })
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.n1, self.n2)
    }

    /// The same sensing data with the ℓ2 loss (ScaledGD's [`MatrixSensing`]), for
    /// comparisons; `None` for entry observations.
    pub fn l2_sensing(&self) -> Result<Option<MatrixSensing>> {
        match &self.obs {
            Obs::Sensing { a, y } => Ok(Some(MatrixSensing::new(a.clone(), y)?)),
            Obs::Entries { .. } => Ok(None),
        }
    }

    /// Spectral initialisation robust to an `outlier_fraction` of corrupted
    /// observations: for entries, the top-r SVD of (Y − T_α(Y))/p (the RPCA sparsifier
    /// with α = `outlier_fraction`, p the observed fraction); for sensing, of
    /// (m/|K|) A*_K(y_K) over the K = ⌈m(1 − α)⌉ measurements of smallest |y_k| (as the
    /// reference code). Returns the factors and σ₁..σ_r.
    pub fn spectral_init(
        &self,
        rank: usize,
        outlier_fraction: f64,
        seed: u64,
    ) -> Result<(Factors, Vec<f64>)> {
        check_rank(rank, &[self.n1, self.n2])?;
        if !(0.0..0.5).contains(&outlier_fraction) {
            return invalid(format!(
                "outlier fraction must be in [0, 0.5), got {outlier_fraction}"
            ));
        }
        let m0 = match &self.obs {
            Obs::Entries { y, mask } => {
                let p = match mask {
                    Some(m) => crate::linalg::scalar(&m.sum_all()?)? / (self.n1 * self.n2) as f64,
                    None => 1.0,
                };
                let clean = if outlier_fraction > 0.0 {
                    (y - sparsify(y, outlier_fraction)?)?
                } else {
                    y.clone()
                };
                (clean / p)?
            }
            Obs::Sensing { a, y } => {
                let m = a.m();
                let keep = ((m as f64) * (1.0 - outlier_fraction)).ceil() as usize;
                let keep = keep.clamp(1, m);
                let mut idx: Vec<(f64, usize)> = y
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| (v.abs(), k))
                    .collect();
                idx.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                let mut w = vec![0.0f64; m];
                for &(_, k) in &idx[..keep] {
                    w[k] = m as f64 / keep as f64;
                }
                let w = Tensor::from_vec(w, m, y.device())?.to_dtype(y.dtype())?;
                a.adjoint(&(y * w)?)?
            }
        };
        let (l, r, s) = balanced_factors(&m0, rank, seed)?;
        Ok((Factors { l, r }, s))
    }

    /// Robust spectral initialisation followed by ScaledSM (or vanilla SM).
    pub fn solve(
        &self,
        rank: usize,
        outlier_fraction: f64,
        step: L1Step,
        opts: &Options,
    ) -> Result<(Factors, Report)> {
        let (init, _) = self.spectral_init(rank, outlier_fraction, opts.seed)?;
        self.solve_from(init, step, opts)
    }

    /// ScaledSM (or vanilla SM with `Method::Gd`) from given factors.
    pub fn solve_from(
        &self,
        init: Factors,
        step: L1Step,
        opts: &Options,
    ) -> Result<(Factors, Report)> {
        if opts.backtrack {
            return invalid(
                "backtracking is not used with the ℓ1 loss (the step size is Polyak's or \
                 geometrically decaying)",
            );
        }
        let x0 = init.dense()?;
        let x0_norm = crate::linalg::fro(&x0)?;
        let step = match step {
            L1Step::Polyak { f_star } => {
                if !(f_star >= 0.0 && f_star.is_finite()) {
                    return invalid(format!("Polyak's f⋆ must be ≥ 0, got {f_star}"));
                }
                Step::Polyak(f_star)
            }
            L1Step::Geometric { lambda_rel, q } => {
                if !(lambda_rel > 0.0 && lambda_rel.is_finite()) {
                    return invalid(format!("geometric step λ must be > 0, got {lambda_rel}"));
                }
                if !(q > 0.0 && q < 1.0) {
                    return invalid(format!("geometric decay q must be in (0, 1), got {q}"));
                }
                Step::Geometric(lambda_rel * x0_norm, q)
            }
        };
        let (_, s, _) = truncated_svd(&x0, 1, opts.seed)?;
        let runner = Runner {
            p: self,
            step,
            etas: std::cell::RefCell::new(vec![]),
        };
        // η is not used by ScaledSM (the step rule sets it); 1.0 keeps the driver's checks.
        let mut o = opts.clone();
        o.eta = Some(1.0);
        let (f, mut rep) = run(&runner, init, &o, 1.0, s[0])?;
        // The step rule's η per iteration (the driver only knows the nominal 1.0).
        rep.step_sizes = runner.etas.into_inner();
        rep.step_sizes.truncate(rep.iterations);
        Ok((f, rep))
    }

    /// Residual A(X) − y on the observations.
    fn residual(&self, x: &Tensor) -> Result<Tensor> {
        match &self.obs {
            Obs::Entries { y, mask } => {
                let r = (x - y)?;
                match mask {
                    Some(m) => Ok((r * m)?),
                    None => Ok(r),
                }
            }
            Obs::Sensing { a, y } => Ok((a.apply(x)? - y)?),
        }
    }

    /// Subgradient A*(sign(residual)) as an n1×n2 matrix.
    fn subgradient(&self, res: &Tensor) -> Result<Tensor> {
        let s = res.sign()?;
        match &self.obs {
            // sign(0) = 0 already leaves unobserved entries out.
            Obs::Entries { .. } => Ok(s),
            Obs::Sensing { a, .. } => a.adjoint(&s),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Polyak(f64),
    Geometric(f64, f64),
}

struct Runner<'a> {
    p: &'a L1Problem,
    step: Step,
    etas: std::cell::RefCell<Vec<f64>>,
}

pub(crate) struct L1Aux {
    z: Tensor,
    loss: f64,
    t: usize,
}

impl Iterable for Runner<'_> {
    type State = Factors;
    type Aux = L1Aux;
    fn eval(&self, s: &Factors, t: usize) -> Result<(f64, L1Aux)> {
        let res = self.p.residual(&s.dense()?)?;
        let loss = l1(&res)?;
        let z = self.p.subgradient(&res)?;
        Ok((loss / self.p.y_l1, L1Aux { z, loss, t }))
    }
    fn step(&self, s: &Factors, a: &L1Aux, ctx: &StepCtx) -> Result<Factors> {
        let gl = a.z.matmul(&s.r)?; // ∂_L
        let gr = a.z.t()?.matmul(&s.l)?; // ∂_R
        let (dl, dr) = match ctx.method {
            Method::ScaledGd => (
                right_solve_spd(&gl, &gram(&s.r)?, ctx.lambda)?,
                right_solve_spd(&gr, &gram(&s.l)?, ctx.lambda)?,
            ),
            Method::Gd => (gl.clone(), gr.clone()),
        };
        let norm2 = inner(&gl, &dl)? + inner(&gr, &dr)?;
        if !(norm2 > 0.0) {
            // Zero subgradient: a stationary point, nothing to move.
            self.etas.borrow_mut().push(0.0);
            return Ok(s.clone());
        }
        let eta = match self.step {
            Step::Polyak(f_star) => ((a.loss - f_star) / norm2).max(0.0),
            Step::Geometric(lambda, q) => lambda * q.powi(a.t as i32) / norm2.sqrt(),
        };
        self.etas.borrow_mut().push(eta);
        Ok(Factors {
            l: (&s.l - (dl * eta)?)?,
            r: (&s.r - (dr * eta)?)?,
        })
    }
    fn change(&self, o: &Factors, n: &Factors) -> Result<(f64, f64)> {
        crate::matrix::factor_change(&o.l, &o.r, &n.l, &n.r)
    }
    fn dense(&self, s: &Factors) -> Result<Tensor> {
        s.dense()
    }
}
