//! Learned (unrolled) ScaledGD for robust PCA — the matrix case of Dong, Shah, Donegan &
//! Chi, "Deep Unfolded Tensor Robust PCA with Self-supervised Learning" (ICASSP 2023;
//! public PyTorch code `hdong920/Tensor_RPCA_ScaledGD`, `src/model.py`), in the spirit
//! of Cai, Liu & Yin, "Learned Robust PCA" (NeurIPS 2021).
//!
//! The iteration is ScaledGD-RPCA with a soft-thresholded sparse part:
//! ```text
//! S₀ = T_{ζ₀}(Y),  [U, Σ, V] = SVD_r(Y − S₀),  L₀ = U Σ^{1/2},  R₀ = V Σ^{1/2}
//! S_{t+1} = T_{ζ₁ ρᵗ}(Y − L_t R_tᵀ),  D = L_t R_tᵀ + S_{t+1} − Y
//! L_{t+1} = L_t − η D R_t (R_tᵀR_t)⁻¹,  R_{t+1} = R_t − η Dᵀ L_t (L_tᵀL_t)⁻¹
//! ```
//! Four scalars are learned, as the reference: ζ₀ = s·softplus(θ₀), ζ₁ = s·softplus(θ₁)
//! (s = 1.4826·median|Y|, so they are scale-free), η = softplus(θ₂), ρ = sigmoid(θ₃),
//! by Adam on candle autograd through T unrolled iterations: supervised on synthetic
//! instances (loss (‖X_T − X⋆‖_F/‖X⋆‖_F)²) or self-supervised on the data itself
//! (‖Y − X_T‖₁/‖Y‖²_F).
//!
//! Differentiating through the spectral start and the r×r inverses: the SVD is taken on
//! the host, and L₀ = (Y − S₀) V Σ^{-1/2}, R₀ = V Σ^{1/2} keeps the value U Σ^{1/2}
//! while passing the gradient through Y − T_{ζ₀}(Y) (V, Σ held fixed); each (FᵀF)⁻¹ is
//! a host inverse B refined by one Newton step B(2I − A B) on the tape, whose value is
//! the inverse (to second order) and whose derivative is exactly −B dA B.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, LowRankError, Result};
use crate::linalg::{fro, from_host, to_host, truncated_svd};

/// The four learned scalars (transformed values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LearnedParams {
    /// Initial threshold relative to s = 1.4826·median|Y|.
    pub zeta0_rel: f64,
    /// Threshold of the decaying schedule, relative to s.
    pub zeta1_rel: f64,
    pub eta: f64,
    pub rho: f64,
}

impl Default for LearnedParams {
    /// The hand-set start (the crate's tensor-RPCA defaults with the matrix step):
    /// ζ₀ = 4s, ζ₁ = 2s, η = 0.5, ρ = 0.9.
    fn default() -> Self {
        LearnedParams {
            zeta0_rel: 4.0,
            zeta1_rel: 2.0,
            eta: 0.5,
            rho: 0.9,
        }
    }
}

impl LearnedParams {
    fn check(&self) -> Result<()> {
        let ok = self.zeta0_rel > 0.0
            && self.zeta1_rel > 0.0
            && self.eta > 0.0
            && self.rho > 0.0
            && self.rho < 1.0
            && [self.zeta0_rel, self.zeta1_rel, self.eta]
                .iter()
                .all(|v| v.is_finite());
        if !ok {
            return invalid(format!(
                "learned parameters need ζ₀, ζ₁, η > 0 and 0 < ρ < 1, got {self:?}"
            ));
        }
        Ok(())
    }
    /// Raw (pre-transform) values θ.
    fn raw(&self) -> [f64; 4] {
        let inv_softplus = |y: f64| if y > 30.0 { y } else { y.exp_m1().ln() };
        [
            inv_softplus(self.zeta0_rel),
            inv_softplus(self.zeta1_rel),
            inv_softplus(self.eta),
            (self.rho / (1.0 - self.rho)).ln(),
        ]
    }
    fn from_raw(t: [f64; 4]) -> Self {
        let sp = |x: f64| if x > 30.0 { x } else { x.exp().ln_1p() };
        LearnedParams {
            zeta0_rel: sp(t[0]),
            zeta1_rel: sp(t[1]),
            eta: sp(t[2]),
            rho: 1.0 / (1.0 + (-t[3]).exp()),
        }
    }
}

/// Robust scale s = 1.4826·median|Y|.
pub fn robust_scale(y: &Tensor) -> Result<f64> {
    let mut a: Vec<f64> = y.abs()?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    if a.is_empty() {
        return invalid("Y is empty");
    }
    let mid = a.len() / 2;
    let (_, med, _) = a.select_nth_unstable_by(mid, |x, y| {
        x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)
    });
    let s = 1.4826 * *med;
    if !(s > 0.0 && s.is_finite()) {
        return invalid("the median |Y| is zero or not finite: no scale for the thresholds");
    }
    Ok(s)
}

/// Soft threshold sign(x)·max(|x| − ζ, 0) = relu(x − ζ) − relu(−x − ζ), differentiable
/// in x and in the (scalar tensor) ζ.
fn soft(x: &Tensor, zeta: &Tensor) -> Result<Tensor> {
    let a = x.broadcast_sub(zeta)?.relu()?;
    let b = x.neg()?.broadcast_sub(zeta)?.relu()?;
    Ok((a - b)?)
}

/// (FᵀF)⁻¹ on the tape: a host inverse B refined by one Newton step B(2I − A B).
fn gram_inv(f: &Tensor) -> Result<Tensor> {
    let a = f.t()?.matmul(f)?;
    let ah = to_host(&a.detach())?;
    let b = ah.clone().try_inverse().ok_or_else(|| {
        LowRankError::Numerical("a factor's Gram matrix is singular (a factor collapsed)".into())
    })?;
    let b = from_host(&b, f.dtype(), f.device())?;
    let r = ah.nrows();
    let two_i = (Tensor::eye(r, f.dtype(), f.device())? * 2.0)?;
    Ok(b.matmul(&(two_i - a.matmul(&b)?)?)?)
}

/// Transformed scalars as tensors: (ζ₀, ζ₁, η, ln ρ), thresholds in absolute units.
struct Scalars {
    zeta0: Tensor,
    zeta1: Tensor,
    eta: Tensor,
    ln_rho: Tensor,
}

fn scalars(theta: &Tensor, s: f64) -> Result<Scalars> {
    // softplus(x) = ln(1 + eˣ); sigmoid via ln ρ = −softplus(−x).
    let sp = |x: &Tensor| -> Result<Tensor> { Ok((x.exp()? + 1.0)?.log()?) };
    let get = |i: usize| theta.get(i);
    Ok(Scalars {
        zeta0: (sp(&get(0)?)? * s)?,
        zeta1: (sp(&get(1)?)? * s)?,
        eta: sp(&get(2)?)?,
        ln_rho: sp(&get(3)?.neg()?)?.neg()?,
    })
}

/// The unrolled iteration from the (detached-SVD) spectral start: returns X_T and, with
/// `truth`, the relative error of every iterate X_0..X_T (measured on the fly).
fn unrolled(
    y: &Tensor,
    rank: usize,
    sc: &Scalars,
    iters: usize,
    seed: u64,
    truth: Option<&Tensor>,
) -> Result<(Tensor, Vec<f64>)> {
    let m0 = (y - soft(y, &sc.zeta0)?)?;
    let (_, sv, v) = truncated_svd(&m0.detach(), rank, seed)?;
    if sv.iter().any(|&x| !(x > 0.0)) {
        return Err(LowRankError::Numerical(
            "the spectral start has a zero singular value".into(),
        ));
    }
    let dev = y.device();
    let dt = y.dtype();
    let sq: Vec<f64> = sv.iter().map(|x| x.sqrt()).collect();
    let isq: Vec<f64> = sv.iter().map(|x| 1.0 / x.sqrt()).collect();
    let sq = Tensor::from_vec(sq, (1, rank), dev)?.to_dtype(dt)?;
    let isq = Tensor::from_vec(isq, (1, rank), dev)?.to_dtype(dt)?;
    let mut l = m0.matmul(&v)?.broadcast_mul(&isq)?;
    let mut r = v.broadcast_mul(&sq)?;
    let tn = match truth {
        Some(t) => fro(t)?,
        None => 1.0,
    };
    let mut errs = vec![];
    let mut x = l.matmul(&r.t()?)?;
    if let Some(t) = truth {
        errs.push(fro(&(&x - t)?)? / tn);
    }
    for t in 0..iters {
        let zeta = sc.zeta1.broadcast_mul(&(&sc.ln_rho * t as f64)?.exp()?)?;
        let s = soft(&(y - &x)?, &zeta)?;
        let d = ((&x + s)? - y)?;
        let gl = d.matmul(&r)?.matmul(&gram_inv(&r)?)?;
        let gr = d.t()?.matmul(&l)?.matmul(&gram_inv(&l)?)?;
        l = (&l - gl.broadcast_mul(&sc.eta)?)?;
        r = (&r - gr.broadcast_mul(&sc.eta)?)?;
        x = l.matmul(&r.t()?)?;
        if let Some(t) = truth {
            errs.push(fro(&(&x.detach() - t)?)? / tn);
        }
    }
    Ok((x, errs))
}

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LearnLoss {
    /// (‖X_T − X⋆‖_F/‖X⋆‖_F)² on instances with known truth.
    Supervised,
    /// ‖Y − X_T‖₁/‖Y‖²_F on the data itself (no truth).
    SelfSupervised,
}

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub rank: usize,
    /// Unrolled iterations T.
    pub unroll: usize,
    /// Adam steps (each over every instance).
    pub steps: usize,
    pub lr: f64,
    pub loss: LearnLoss,
    pub seed: u64,
}

/// Trained parameters and the training record (saved as JSON next to the safetensors).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearnedModel {
    pub params: LearnedParams,
    pub init: LearnedParams,
    pub config: TrainConfig,
    /// Mean training loss per Adam step.
    pub loss_history: Vec<f64>,
}

struct Prepared {
    y: Tensor,
    s: f64,
    target: Option<(Tensor, f64)>,
    yn2: f64,
}

fn prepare(instances: &[(Tensor, Option<Tensor>)], cfg: &TrainConfig) -> Result<Vec<Prepared>> {
    let mut prepared = vec![];
    for (y, x) in instances {
        let (n1, n2) = y
            .dims2()
            .map_err(|_| LowRankError::InvalidInput("Y must be a matrix".into()))?;
        crate::matrix::check_rank(cfg.rank, &[n1, n2])?;
        crate::matrix::check_float(y, "Y")?;
        let s = robust_scale(y)?;
        let target = match (cfg.loss, x) {
            (LearnLoss::Supervised, Some(x)) => Some((x.clone(), fro(x)?)),
            (LearnLoss::Supervised, None) => {
                return invalid(
                    "supervised training needs the true low-rank matrix of every instance",
                )
            }
            (LearnLoss::SelfSupervised, _) => None,
        };
        let yn2 = fro(y)?.powi(2);
        prepared.push(Prepared {
            y: y.clone(),
            s,
            target,
            yn2,
        });
    }
    Ok(prepared)
}

/// Mean loss over the instances and its gradient in the raw θ (by backpropagation).
fn loss_grad(
    prepared: &[Prepared],
    theta: &Var,
    cfg: &TrainConfig,
    step: usize,
) -> Result<(f64, [f64; 4])> {
    let mut grad = [0.0f64; 4];
    let mut total = 0.0;
    for p in prepared {
        let sc = scalars(theta.as_tensor(), p.s)?;
        let (x, _) = unrolled(&p.y, cfg.rank, &sc, cfg.unroll, cfg.seed, None)?;
        let loss = match &p.target {
            Some((xs, xn)) => ((&x - xs)?.sqr()?.sum_all()? / (xn * xn))?,
            None => ((&p.y - &x)?.abs()?.sum_all()? / p.yn2)?,
        };
        let lv = crate::linalg::scalar(&loss)?;
        if !lv.is_finite() {
            return Err(LowRankError::Diverged {
                iteration: step,
                residual: lv,
                threshold: f64::INFINITY,
            });
        }
        total += lv / prepared.len() as f64;
        let g = loss.backward()?;
        let gt = g.get(theta.as_tensor()).ok_or_else(|| {
            LowRankError::Numerical("no gradient reached the learned parameters".into())
        })?;
        let gv: Vec<f64> = gt.to_dtype(DType::F64)?.to_vec1()?;
        for i in 0..4 {
            // A NaN gradient (e.g. a threshold at a kink) is skipped, as the reference.
            if gv[i].is_finite() {
                grad[i] += gv[i] / prepared.len() as f64;
            }
        }
    }
    Ok((total, grad))
}

/// Training loss and its gradient in the raw parameters θ (ζ₀, ζ₁ through softplus,
/// η through softplus, ρ through a sigmoid) at `params` — for checks against finite
/// differences.
pub fn loss_and_grad(
    instances: &[(Tensor, Option<Tensor>)],
    params: &LearnedParams,
    cfg: &TrainConfig,
) -> Result<(f64, [f64; 4])> {
    params.check()?;
    let prepared = prepare(instances, cfg)?;
    let theta = Var::from_tensor(
        &Tensor::new(&params.raw(), instances[0].0.device())?.to_dtype(instances[0].0.dtype())?,
    )?;
    loss_grad(&prepared, &theta, cfg, 0)
}

/// Parameters at raw values θ (for finite differences in θ).
pub fn params_from_raw(theta: [f64; 4]) -> LearnedParams {
    LearnedParams::from_raw(theta)
}

/// Raw values θ of parameters.
pub fn raw_of(p: &LearnedParams) -> [f64; 4] {
    p.raw()
}

/// Train the four scalars by Adam through `cfg.unroll` unrolled iterations on the
/// instances `(Y, X⋆)` (X⋆ ignored for the self-supervised loss), from `init`.
pub fn train(
    instances: &[(Tensor, Option<Tensor>)],
    init: LearnedParams,
    cfg: &TrainConfig,
) -> Result<LearnedModel> {
    init.check()?;
    if instances.is_empty() {
        return invalid("no training instances");
    }
    if cfg.unroll == 0 || cfg.steps == 0 {
        return invalid("unrolled iterations and training steps must be at least 1");
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return invalid(format!("learning rate must be > 0, got {}", cfg.lr));
    }
    let prepared = prepare(instances, cfg)?;
    let dev = instances[0].0.device();
    let dt = instances[0].0.dtype();
    let theta = Var::from_tensor(&Tensor::new(&init.raw(), dev)?.to_dtype(dt)?)?;
    // Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) on the four raw scalars, on the host.
    let (mut m, mut v) = ([0.0f64; 4], [0.0f64; 4]);
    let mut hist = vec![];
    for step in 0..cfg.steps {
        let (total, grad) = loss_grad(&prepared, &theta, cfg, step)?;
        hist.push(total);
        let mut th: Vec<f64> = theta.as_tensor().to_dtype(DType::F64)?.to_vec1()?;
        let t = (step + 1) as i32;
        for i in 0..4 {
            m[i] = 0.9 * m[i] + 0.1 * grad[i];
            v[i] = 0.999 * v[i] + 0.001 * grad[i] * grad[i];
            let mh = m[i] / (1.0 - 0.9f64.powi(t));
            let vh = v[i] / (1.0 - 0.999f64.powi(t));
            th[i] -= cfg.lr * mh / (vh.sqrt() + 1e-8);
        }
        theta.set(&Tensor::new(th.as_slice(), dev)?.to_dtype(dt)?)?;
    }
    let th: Vec<f64> = theta.as_tensor().to_dtype(DType::F64)?.to_vec1()?;
    Ok(LearnedModel {
        params: LearnedParams::from_raw([th[0], th[1], th[2], th[3]]),
        init,
        config: cfg.clone(),
        loss_history: hist,
    })
}

/// Run the learned (or any given) schedule for `iters` iterations; returns the final
/// estimate and, with `truth`, the relative error of every iterate (index 0 = start).
pub fn apply(
    y: &Tensor,
    rank: usize,
    params: &LearnedParams,
    iters: usize,
    truth: Option<&Tensor>,
    seed: u64,
) -> Result<(Tensor, Vec<f64>)> {
    params.check()?;
    let (n1, n2) = y
        .dims2()
        .map_err(|_| LowRankError::InvalidInput("Y must be a matrix".into()))?;
    crate::matrix::check_rank(rank, &[n1, n2])?;
    crate::matrix::check_float(y, "Y")?;
    let s = robust_scale(y)?;
    let raw = params.raw();
    let theta = Tensor::new(&raw, y.device())?.to_dtype(y.dtype())?;
    let sc = scalars(&theta, s)?;
    let (last, errs) = unrolled(y, rank, &sc, iters, seed, truth)?;
    if !crate::linalg::all_finite(&last)? {
        return Err(LowRankError::Diverged {
            iteration: iters,
            residual: f64::NAN,
            threshold: f64::INFINITY,
        });
    }
    Ok((last, errs))
}

impl LearnedModel {
    /// Save as `PATH.safetensors` (the raw θ, tensor "theta") and `PATH.json` (the
    /// transformed values, config and loss history), each written to a temporary file
    /// first and renamed.
    pub fn save(&self, stem: &Path) -> Result<()> {
        let io = |e: std::io::Error| {
            LowRankError::InvalidInput(format!("writing {}: {e}", stem.display()))
        };
        let st = stem.with_extension("safetensors");
        let tmp = stem.with_extension("safetensors.tmp");
        let theta = Tensor::new(&self.params.raw(), &candle_core::Device::Cpu)?;
        let mut map = HashMap::new();
        map.insert("theta".to_string(), theta);
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, &st).map_err(io)?;
        let js = stem.with_extension("json");
        let tmp = stem.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| LowRankError::InvalidInput(format!("serialising the model: {e}")))?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &js).map_err(io)?;
        Ok(())
    }

    /// Load the parameters from `PATH.safetensors` (the JSON is informational).
    pub fn load_params(stem: &Path) -> Result<LearnedParams> {
        let st = stem.with_extension("safetensors");
        let map = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).map_err(|e| {
            LowRankError::InvalidInput(format!("reading the model {}: {e}", st.display()))
        })?;
        let t = map.get("theta").ok_or_else(|| {
            LowRankError::InvalidInput(format!("{} has no tensor \"theta\"", st.display()))
        })?;
        let v: Vec<f64> = t.to_dtype(DType::F64)?.to_vec1()?;
        if v.len() != 4 {
            return invalid(format!(
                "{}: theta must have 4 entries, got {}",
                st.display(),
                v.len()
            ));
        }
        let p = LearnedParams::from_raw([v[0], v[1], v[2], v[3]]);
        p.check()?;
        Ok(p)
    }
}
