//! The common iteration driver: step-size, damping, backtracking, stopping rule,
//! divergence detection and per-iteration history.

use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use crate::error::{LowRankError, Result};
use crate::linalg::fro;

/// Which update rule to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Scaled gradient descent: gradients right-multiplied by (FᵀF + λI)⁻¹.
    ScaledGd,
    /// Vanilla gradient descent with step η/σ₁ (σ₁ of the initial estimate unless given).
    Gd,
}

impl std::str::FromStr for Method {
    type Err = LowRankError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "scaledgd" | "scaled-gd" | "scaled_gd" => Ok(Method::ScaledGd),
            "gd" => Ok(Method::Gd),
            _ => Err(LowRankError::InvalidInput(format!(
                "unknown method {s:?} (expected scaledgd or gd)"
            ))),
        }
    }
}

/// Damping λ of the preconditioner (FᵀF + λI)⁻¹ (ScaledGD(λ)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Damping {
    /// λ = 0: the textbook ScaledGD preconditioner.
    None,
    /// λ = c · σ₁(X₀): tied to the spectrum of the initial estimate.
    Relative(f64),
    /// A fixed absolute λ.
    Absolute(f64),
}

/// Solver options shared by every problem.
#[derive(Debug, Clone)]
pub struct Options {
    pub method: Method,
    /// Step size; `None` picks the problem's default (0.5 matrix, 0.3 Tucker).
    pub eta: Option<f64>,
    pub max_iter: usize,
    /// Stop when the relative change ‖X_{t+1} − X_t‖/‖X_t‖ or the relative residual
    /// falls below `tol`.
    pub tol: f64,
    pub damping: Damping,
    /// Halve η (up to 30 times) when a step increases the observed-data residual;
    /// let it grow back ×1.5 per accepted step, up to the nominal η.
    pub backtrack: bool,
    /// Divergence: relative residual above `divergence × max(1, initial)` or non-finite
    /// (default 1e3, as the reference code; ScaledGD can transiently raise the residual
    /// while it finds components the initialisation missed).
    pub divergence: f64,
    /// σ₁ used by vanilla GD's step η/σ₁ (defaults to σ₁ of the initial estimate).
    pub gd_scale: Option<f64>,
    /// Ground truth (dense) to record the relative error per iteration (benchmarks).
    pub truth: Option<Tensor>,
    /// With `truth`: stop as soon as the relative error reaches this value.
    pub stop_error: Option<f64>,
    /// Seed of the randomized SVD / random initialisation.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: Method::ScaledGd,
            eta: None,
            max_iter: 1000,
            tol: 1e-12,
            damping: Damping::None,
            backtrack: false,
            divergence: 1e3,
            gd_scale: None,
            truth: None,
            stop_error: None,
            seed: 0,
        }
    }
}

/// Why the iteration stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// Relative change below tolerance.
    RelativeChange,
    /// Relative residual below tolerance.
    Residual,
    /// Relative error to the supplied truth reached `stop_error`.
    TargetError,
    /// Ran `max_iter` iterations.
    MaxIter,
    /// Early stopping: the held-out error did not improve for `patience` iterations
    /// (the best iterate is returned).
    EarlyStop,
    /// Early stopping: the iteration diverged (see `diverged_at`); the best held-out
    /// iterate before it is returned instead of an error.
    DivergedKeptBest,
}

/// What happened during a solve.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub method: Method,
    pub iterations: usize,
    pub stop_reason: StopReason,
    /// Final relative residual on the data (observed entries / measurements).
    pub final_residual: f64,
    /// Relative residual after each iteration (index 0 = initialisation).
    pub residuals: Vec<f64>,
    /// Relative change ‖X_{t+1} − X_t‖_F / ‖X_t‖_F per iteration.
    pub rel_change: Vec<f64>,
    /// Relative error to the truth per iteration (index 0 = initialisation), if given.
    pub errors: Vec<f64>,
    /// Step size actually used per iteration (differs from η only with backtracking).
    pub step_sizes: Vec<f64>,
    /// Damping λ used (absolute).
    pub lambda: f64,
    /// σ₁ of the initial estimate.
    pub sigma1_init: f64,
    /// Wall time of the iterations (excluding the truth-error monitoring), seconds.
    pub time_s: f64,
    pub time_per_iter_s: f64,
    /// Early stopping only: held-out relative error per iteration (index 0 =
    /// initialisation), the iteration of the returned (best) iterate and its error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heldout_errors: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_iteration: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_heldout_error: Option<f64>,
    /// Early stopping only: the iteration at which the run diverged, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<usize>,
}

impl Report {
    /// First iteration at which the recorded error is ≤ `eps`.
    pub fn iterations_to(&self, eps: f64) -> Option<usize> {
        self.errors.iter().position(|&e| e <= eps)
    }
}

/// Context handed to a problem's step.
pub(crate) struct StepCtx {
    pub eta: f64,
    pub method: Method,
    pub lambda: f64,
    pub gd_scale: f64,
}

/// A problem the driver can iterate.
pub(crate) trait Iterable {
    type State: Clone;
    type Aux;
    /// Relative residual of the data fit at `s` (iteration index `t`), plus whatever the
    /// step needs (residual tensors, gathered factors).
    fn eval(&self, s: &Self::State, t: usize) -> Result<(f64, Self::Aux)>;
    fn step(&self, s: &Self::State, aux: &Self::Aux, ctx: &StepCtx) -> Result<Self::State>;
    /// (‖X_new − X_old‖_F, ‖X_old‖_F).
    fn change(&self, old: &Self::State, new: &Self::State) -> Result<(f64, f64)>;
    fn dense(&self, s: &Self::State) -> Result<Tensor>;
}

/// Early stopping on a validation error: `eval` gives the held-out relative error of an
/// iterate; the run stops once it has not improved for `patience` iterations and the
/// best iterate is returned.
pub(crate) struct Validation<'a, S> {
    pub eval: &'a dyn Fn(&S) -> Result<f64>,
    pub patience: usize,
}

pub(crate) fn run<P: Iterable>(
    p: &P,
    init: P::State,
    opts: &Options,
    default_eta: f64,
    sigma1: f64,
) -> Result<(P::State, Report)> {
    run_validated(p, init, opts, default_eta, sigma1, None)
}

pub(crate) fn run_validated<P: Iterable>(
    p: &P,
    init: P::State,
    opts: &Options,
    default_eta: f64,
    sigma1: f64,
    val: Option<Validation<'_, P::State>>,
) -> Result<(P::State, Report)> {
    let start = Instant::now();
    let eta0 = opts.eta.unwrap_or(default_eta);
    if !(eta0 > 0.0 && eta0.is_finite()) {
        return Err(LowRankError::InvalidInput(format!(
            "step size must be > 0, got {eta0}"
        )));
    }
    if !(opts.tol >= 0.0) {
        return Err(LowRankError::InvalidInput(format!(
            "tolerance must be ≥ 0, got {}",
            opts.tol
        )));
    }
    let lambda = match opts.damping {
        Damping::None => 0.0,
        Damping::Relative(c) => c * sigma1,
        Damping::Absolute(l) => l,
    };
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(LowRankError::InvalidInput(format!(
            "damping λ must be ≥ 0, got {lambda}"
        )));
    }
    let gd_scale = opts.gd_scale.unwrap_or(sigma1);
    if opts.method == Method::Gd && !(gd_scale > 0.0 && gd_scale.is_finite()) {
        return Err(LowRankError::InvalidInput(format!(
            "vanilla GD needs σ₁ > 0, got {gd_scale}"
        )));
    }
    let truth_norm = match &opts.truth {
        Some(t) => Some(fro(t)?),
        None => None,
    };
    // Time spent measuring the error to the truth is excluded from the timings.
    let monitor_time = std::cell::Cell::new(0.0f64);
    let rel_err = |s: &P::State| -> Result<Option<f64>> {
        match (&opts.truth, truth_norm) {
            (Some(t), Some(tn)) => {
                let t0 = Instant::now();
                let d = p.dense(s)?;
                let e = fro(&(d - t)?)? / tn;
                monitor_time.set(monitor_time.get() + t0.elapsed().as_secs_f64());
                Ok(Some(e))
            }
            _ => Ok(None),
        }
    };

    let mut s = init;
    let (mut loss, mut aux) = p.eval(&s, 0)?;
    if !loss.is_finite() {
        return Err(LowRankError::Diverged {
            iteration: 0,
            residual: loss,
            threshold: opts.divergence,
        });
    }
    let threshold = opts.divergence * loss.max(1.0);
    let mut report = Report {
        method: opts.method,
        iterations: 0,
        stop_reason: StopReason::MaxIter,
        final_residual: loss,
        residuals: vec![loss],
        rel_change: vec![],
        errors: vec![],
        step_sizes: vec![],
        lambda,
        sigma1_init: sigma1,
        time_s: 0.0,
        time_per_iter_s: 0.0,
        heldout_errors: vec![],
        best_iteration: None,
        best_heldout_error: None,
        diverged_at: None,
    };
    if let Some(e) = rel_err(&s)? {
        report.errors.push(e);
    }
    // Early stopping: the best iterate so far, its iteration and held-out error.
    let mut best: Option<(P::State, usize, f64)> = None;
    if let Some(v) = &val {
        let e = (v.eval)(&s)?;
        report.heldout_errors.push(e);
        best = Some((s.clone(), 0, e));
    }
    let mut eta = eta0;
    for t in 0..opts.max_iter {
        let mut tries = 0;
        let (s_new, loss_new, aux_new, eta_used) = loop {
            let ctx = StepCtx {
                eta,
                method: opts.method,
                lambda,
                gd_scale,
            };
            let cand = p.step(&s, &aux, &ctx)?;
            let (l, a) = p.eval(&cand, t + 1)?;
            let worse = !l.is_finite() || l > loss * (1.0 + 1e-10) + 1e-300;
            if opts.backtrack && worse && tries < 30 {
                eta *= 0.5;
                tries += 1;
                continue;
            }
            break (cand, l, a, eta);
        };
        if !loss_new.is_finite() || loss_new > threshold {
            if best.is_some() {
                // Early stopping keeps its best iterate: the divergence ends the run.
                report.stop_reason = StopReason::DivergedKeptBest;
                report.diverged_at = Some(t + 1);
                break;
            }
            return Err(LowRankError::Diverged {
                iteration: t + 1,
                residual: loss_new,
                threshold,
            });
        }
        let (dn, on) = p.change(&s, &s_new)?;
        let rc = if on > 0.0 { dn / on } else { dn };
        if !rc.is_finite() {
            return Err(LowRankError::Diverged {
                iteration: t + 1,
                residual: f64::NAN,
                threshold,
            });
        }
        report.rel_change.push(rc);
        report.residuals.push(loss_new);
        report.step_sizes.push(eta_used);
        report.iterations = t + 1;
        report.final_residual = loss_new;
        s = s_new;
        loss = loss_new;
        aux = aux_new;
        if opts.backtrack && tries == 0 {
            eta = (eta * 1.5).min(eta0);
        }
        let err = rel_err(&s)?;
        if let Some(e) = err {
            report.errors.push(e);
        }
        if let (Some(e), Some(target)) = (err, opts.stop_error) {
            if e <= target {
                report.stop_reason = StopReason::TargetError;
                break;
            }
        }
        if let (Some(v), Some(b)) = (&val, best.as_mut()) {
            let e = (v.eval)(&s)?;
            report.heldout_errors.push(e);
            if e < b.2 {
                *b = (s.clone(), t + 1, e);
            } else if t + 1 - b.1 >= v.patience {
                report.stop_reason = StopReason::EarlyStop;
                break;
            }
        }
        if rc < opts.tol {
            report.stop_reason = StopReason::RelativeChange;
            break;
        }
        if loss < opts.tol {
            report.stop_reason = StopReason::Residual;
            break;
        }
    }
    report.time_s = start.elapsed().as_secs_f64() - monitor_time.get();
    report.time_per_iter_s = report.time_s / report.iterations.max(1) as f64;
    if let Some((b, it, e)) = best {
        report.best_iteration = Some(it);
        report.best_heldout_error = Some(e);
        // The returned iterate is the best one: its data residual is the final one.
        report.final_residual = report.residuals[it];
        return Ok((b, report));
    }
    Ok((s, report))
}
