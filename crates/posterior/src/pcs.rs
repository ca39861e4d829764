//! PCS — the proximal consistency sampler of DPnP (Xu & Chi 2024).
//!
//! Target: π(x) ∝ exp(L(x; y)/T − ‖x − x₀‖²/(2γ²)), γ = η_k of the outer loop, L the
//! operator's log-likelihood and T the likelihood temperature ([`PcsConfig::likelihood_temperature`],
//! 1 = the untempered likelihood). T is part of the target: for a Gaussian likelihood
//! L = −‖y − Ax‖²/(2σ²) the tempered target is the posterior at noise variance σ²T. The
//! reference code writes its target as exp(−f(x)/(2m²) − ‖x − x₀‖²/(2γ²)) with its own f per
//! task: f = ‖y − A(x)‖² with m = 0.15 on Gaussian tasks (genprior: `likelihood-sigma 0.15`,
//! T = 1), f = Σ softplus(−y x/τ) with m = 0.36 / 0.38 (FFHQ / ImageNet) on one-bit, i.e.
//! L/T with T = 2m² (0.2592 / 0.2888) and the step rule's m set to the same 0.36 / 0.38.
//!
//! Langevin move (the reference exponential integrator: the quadratic part integrated exactly,
//! ∇L frozen over a step), with L_T = L/T the tempered log-likelihood, f(x) = −2m²L_T(x) ≥ 0
//! and m the step rule's scale ([`PcsConfig::temperature`]; default √T times the operator's
//! σ or τ, [`Operator::temperature`], which leaves f = −2(σ or τ)²L unchanged by T):
//! ```text
//! h(x) = scale · min(m², γ²) / (reg + √f(x))
//! a    = 1 − exp(−h/γ²),   s² = γ² (1 − exp(−2h/γ²))
//! x'   = x + a (x₀ − x) + γ² a ∇L_T(x) + s z,   z ~ N(0, I)
//! ```
//! (γ² a ∇L_T = −γ² a ∇f/(2m²), the spec's form.)
//! - [`PcsMethod::Ula`]: the move alone, unadjusted (the reference code's behaviour). Biased: its
//!   stationary law is not π (for a Gaussian target with a constant step its covariance solves
//!   Σ = BΣBᵀ + s²I with B = (1 − a)I + γ²a∇²L; its mean is exact).
//! - [`PcsMethod::Mala`]: the move as a proposal q(x' | x) = N(x'; μ(x), s(x)² I) with a
//!   Metropolis–Hastings accept/reject. Because h depends on x through f, the reverse density
//!   q(x | x') uses h(x'), μ(x') and s(x'), normalising constants included; the chain is exact.
//! - [`PcsMethod::Exact`]: for linear-Gaussian operators π is Gaussian with precision
//!   AᵀA/σ² + I/γ² and mean P⁻¹(Aᵀy/σ² + x₀/γ²), σ² the likelihood's variance times T;
//!   sampled by perturb-and-solve: draw
//!   ỹ = y + σz₁ and x̃₀ = x₀ + γz₂, then solve P x = Aᵀỹ/σ² + x̃₀/γ² directly (diagonal or
//!   FFT-diagonal AᵀA) or by conjugate gradients (relative residual 1e-10).
//!
//! PCS sees the physics only through [`Operator`] (its likelihood, gradient and temperature;
//! the exact sampler also Aᵀ and the shifted-Gram solver) and reports errors as
//! [`genprior_inverse::InverseError`], the operator's error type.
//!
//! Chains are the batch of `x0`. Each chain gets its own RNG, seeded by the caller
//! ([`pcs_seeded`]) or from a u64 drawn from the caller's RNG in chain order ([`pcs`]); chains
//! run on host threads (results do not depend on the thread count).

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use genprior_inverse::device::DeviceOperator;
use genprior_inverse::host::{from_host, to_host};
use genprior_inverse::linalg::shifted_gram_cg;
use genprior_inverse::{InverseError, Operator, Result};

/// Which PCS sampler to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PcsMethod {
    /// Metropolis-adjusted Langevin (default).
    #[default]
    Mala,
    /// Unadjusted Langevin (the reference code).
    Ula,
    /// Exact Gaussian sampling for linear-Gaussian operators.
    Exact,
}

impl std::str::FromStr for PcsMethod {
    type Err = InverseError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mala" => Ok(Self::Mala),
            "ula" => Ok(Self::Ula),
            "exact" => Ok(Self::Exact),
            o => Err(InverseError::InvalidArgument(format!(
                "unknown PCS method `{o}`; expected mala, ula or exact"
            ))),
        }
    }
}

/// Where PCS runs (see [`crate::pcs_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PcsBackend {
    /// On the chains' device when it is not the CPU and the task has a device form
    /// ([`genprior_inverse::Operator::device_map`] and a device likelihood), else on the host.
    #[default]
    Auto,
    /// On the host in f64 (threads over chains).
    Host,
    /// On the chains' device (an error if the task has no device form).
    Device,
}

impl std::str::FromStr for PcsBackend {
    type Err = InverseError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "host" => Ok(Self::Host),
            "device" => Ok(Self::Device),
            o => Err(InverseError::InvalidArgument(format!(
                "unknown PCS backend `{o}`; expected auto, host or device"
            ))),
        }
    }
}

/// The `pcs-backend` option of the samplers that run PCS (DPnP, DAPS).
pub const PCS_BACKEND_OPTION: crate::options::OptionSpec = crate::options::OptionSpec::new(
    "pcs-backend",
    "Where the likelihood math runs (PCS / Langevin steps of DPnP and DAPS, DPS's likelihood gradient): auto (on the GPU when the model is on one and the task has a device form, else on the host), host (f64 on CPU threads), device (tensor ops on the model's device: f32 on GPUs, f64 on the CPU; an error if the task has no device form, e.g. photon noise)",
    crate::options::OptionType::Choice(&["auto", "host", "device"]),
    crate::options::OptionDefault::Choice("auto"),
);

/// PCS settings. Reference values (Xu & Chi, FFHQ / ImageNet): `scale` 0.8 / 1.2 for phase
/// retrieval, 0.2 / 0.32 for one-bit, 0.6 / 1000 for SR×4; `steps` 1000; `reg` 50.
#[derive(Debug, Clone)]
pub struct PcsConfig {
    pub method: PcsMethod,
    /// Langevin steps per call (ignored by `Exact`).
    pub steps: usize,
    /// Step-size scale.
    pub scale: f64,
    /// Step-size regulariser added to √f(x).
    pub reg: f64,
    /// The scale m of the step-size rule h = scale·min(m², γ²)/(reg + √f), f = −2m²L/T;
    /// `None` = √T times the operator's [`Operator::temperature`] (σ or τ). Changes the step
    /// size only; the target is set by [`PcsConfig::likelihood_temperature`].
    pub temperature: Option<f64>,
    /// The likelihood temperature T: the target uses L(x; y)/T (1 = untempered; the reference
    /// one-bit configs use 2m², see the module docs).
    pub likelihood_temperature: f64,
    /// Conjugate-gradient iteration cap of `Exact`.
    pub cg_max_iter: usize,
    /// Host or device loop.
    pub backend: PcsBackend,
    /// The device loop's dtype; `None`: f64 on the CPU, f32 on GPUs.
    pub device_dtype: Option<candle_core::DType>,
    /// The device loop on the CPU evaluates FFT-based tasks with their host FFT (faster there
    /// than a DFT as matrix products); `false` forces the tensor form (parity tests).
    pub host_fft_on_cpu: bool,
}

impl Default for PcsConfig {
    fn default() -> Self {
        Self {
            method: PcsMethod::Mala,
            steps: 1000,
            scale: 1.0,
            reg: 50.0,
            temperature: None,
            likelihood_temperature: 1.0,
            cg_max_iter: 5000,
            backend: PcsBackend::Auto,
            device_dtype: None,
            host_fft_on_cpu: true,
        }
    }
}

/// PCS result: one sample per chain and each chain's Metropolis acceptance rate (1 for ULA and
/// the exact sampler).
#[derive(Debug, Clone)]
pub struct PcsOutput {
    pub samples: Tensor,
    pub acceptance: Vec<f64>,
}

/// The device form of `op` against the host measurements `ys` (batch `by`) for a loop on
/// `device` under `backend` (see [`PcsBackend`]), in `dtype` (`None`: f64 on the CPU, f32 on
/// GPUs): `None` means the host loop (`Host`; `Auto` on the CPU or for a task without a
/// device form); an error when `Device` is asked for and the task has none. Shared by PCS and
/// DPS. `host_fft_on_cpu`: see [`PcsConfig::host_fft_on_cpu`].
#[allow(clippy::too_many_arguments)]
pub fn device_operator<'a>(
    op: &'a dyn Operator,
    ys: &[f64],
    by: usize,
    device: &candle_core::Device,
    backend: PcsBackend,
    dtype: Option<candle_core::DType>,
    host_fft_on_cpu: bool,
) -> Result<Option<DeviceOperator<'a>>> {
    use candle_core::DType;
    if backend == PcsBackend::Host || (backend == PcsBackend::Auto && device.is_cpu()) {
        return Ok(None);
    }
    let dtype = dtype.unwrap_or(if device.is_cpu() {
        DType::F64
    } else {
        DType::F32
    });
    match DeviceOperator::new(op, ys, by, device, dtype, host_fft_on_cpu)? {
        Some(d) => Ok(Some(d)),
        None if backend == PcsBackend::Device => Err(InverseError::Unsupported(format!(
            "task `{}` with {} noise has no device form; use --pcs-backend host (or auto)",
            op.name(),
            op.noise().name()
        ))),
        None => Ok(None),
    }
}

/// One chain's (sample, acceptance rate).
type ChainResult = (Vec<f64>, f64);

fn check_config(op: &dyn Operator, gamma: f64, cfg: &PcsConfig) -> Result<f64> {
    if !(gamma > 0.0 && gamma.is_finite()) {
        return Err(InverseError::InvalidArgument(format!(
            "PCS needs γ > 0, got {gamma}"
        )));
    }
    let t = cfg.likelihood_temperature;
    if !(t > 0.0 && t.is_finite()) {
        return Err(InverseError::InvalidArgument(format!(
            "PCS needs a likelihood temperature T > 0, got {t}"
        )));
    }
    let m = step_scale(op, cfg);
    if cfg.method != PcsMethod::Exact {
        if cfg.steps == 0 {
            return Err(InverseError::InvalidArgument(
                "PCS needs at least one Langevin step".into(),
            ));
        }
        if !(cfg.scale > 0.0 && cfg.scale.is_finite() && cfg.reg >= 0.0 && cfg.reg.is_finite()) {
            return Err(InverseError::InvalidArgument(format!(
                "PCS needs scale > 0 and reg ≥ 0, got scale {}, reg {}",
                cfg.scale, cfg.reg
            )));
        }
        if !(m > 0.0 && m.is_finite()) {
            return Err(InverseError::InvalidArgument(format!(
                "PCS needs a positive likelihood temperature m, got {m} (task `{}`)",
                op.name()
            )));
        }
    } else if !op.is_linear_gaussian() {
        return Err(InverseError::Unsupported(format!(
            "exact PCS needs a linear operator with a Gaussian likelihood; task `{}` is not (use mala or ula)",
            op.name()
        )));
    }
    Ok(m)
}

/// The m of the step-size rule for `op` under `cfg` (see [`PcsConfig::temperature`]).
pub fn step_scale(op: &dyn Operator, cfg: &PcsConfig) -> f64 {
    cfg.temperature
        .unwrap_or_else(|| op.temperature() * cfg.likelihood_temperature.sqrt())
}

/// Runs PCS for every chain of `x0` (`(B, C, H, W)`) against `y` (batch 1 or B), started at
/// x₀ (Langevin) — see the module docs.
pub fn pcs(
    op: &dyn Operator,
    y: &Tensor,
    x0: &Tensor,
    gamma: f64,
    cfg: &PcsConfig,
    rng: &mut StdRng,
) -> Result<PcsOutput> {
    let b = op.check_image(x0)?;
    // One seed per chain drawn from `rng` in chain order, so results do not depend on how the
    // chains are spread over threads.
    let seeds: Vec<u64> = (0..b).map(|_| rng.random()).collect();
    pcs_seeded(op, y, x0, gamma, cfg, &seeds)
}

/// [`pcs`] with chain i's RNG seeded by `chain_seeds[i]` (one seed per chain of `x0`), so a
/// caller that owns per-chain streams gets the same chain whatever the other chains are.
pub fn pcs_seeded(
    op: &dyn Operator,
    y: &Tensor,
    x0: &Tensor,
    gamma: f64,
    cfg: &PcsConfig,
    chain_seeds: &[u64],
) -> Result<PcsOutput> {
    pcs_seeded_tempered(op, y, x0, gamma, cfg, None, 1.0, chain_seeds)
}

/// [`pcs_seeded`] for the target exp(β L(x; y)/T − ‖x − x₀‖²/(2γ²)), β = `weight`
/// (1: the plain PCS target) and T = `cfg.likelihood_temperature`, with an optional fixed Langevin step `h` in place of the
/// adaptive rule h(x) = scale·min(m², γ²)/(reg + √f(x)) (`scale` and `reg` are then unused).
/// The move, the Metropolis correction and the exact sampler (at likelihood σ/√β) are
/// otherwise unchanged (the exact sampler at likelihood σ·sqrt(T/β)). DAPS uses it for its
/// reference step-size schedule and data weight.
#[allow(clippy::too_many_arguments)]
pub fn pcs_seeded_tempered(
    op: &dyn Operator,
    y: &Tensor,
    x0: &Tensor,
    gamma: f64,
    cfg: &PcsConfig,
    step: Option<f64>,
    weight: f64,
    chain_seeds: &[u64],
) -> Result<PcsOutput> {
    if let Some(h) = step {
        if !(h > 0.0 && h.is_finite()) {
            return Err(InverseError::InvalidArgument(format!(
                "PCS needs a fixed step h > 0, got {h}"
            )));
        }
    }
    if !(weight > 0.0 && weight.is_finite()) {
        return Err(InverseError::InvalidArgument(format!(
            "PCS needs a likelihood weight β > 0, got {weight}"
        )));
    }
    let m = check_config(op, gamma, cfg)?;
    let b = op.check_image(x0)?;
    if chain_seeds.len() != b {
        return Err(InverseError::InvalidArgument(format!(
            "PCS got {} chain seeds for {b} chains",
            chain_seeds.len()
        )));
    }
    let (by, ys) = op.measurement_to_host(y)?;
    if by != 1 && by != b {
        return Err(InverseError::Measurement {
            task: op.name().to_string(),
            msg: format!("measurement batch {by} must be 1 or the chain count {b}"),
        });
    }
    if let Some(dop) = device_operator(
        op,
        &ys,
        by,
        x0.device(),
        cfg.backend,
        cfg.device_dtype,
        cfg.host_fft_on_cpu,
    )? {
        let w = weight / cfg.likelihood_temperature;
        let out = crate::pcs_device::pcs_device(
            &dop,
            &x0.to_dtype(dop.dtype())?,
            gamma,
            m,
            cfg,
            step,
            w,
            chain_seeds,
        )?;
        return Ok(PcsOutput {
            samples: out.samples.to_dtype(x0.dtype())?,
            acceptance: out.acceptance,
        });
    }
    let xs = to_host(x0)?;
    let (n, ml) = (op.image_len(), op.measurement_len());
    let seeds = chain_seeds;
    let threads = std::thread::available_parallelism()
        .map(|v| v.get())
        .unwrap_or(1)
        .min(b)
        .max(1);
    let per = b.div_ceil(threads);
    let run_range = |lo: usize, hi: usize| -> Result<Vec<ChainResult>> {
        (lo..hi)
            .map(|i| {
                let j = if by == 1 { 0 } else { i };
                let mut r = StdRng::seed_from_u64(seeds[i]);
                pcs_host_step(
                    op,
                    &ys[j * ml..(j + 1) * ml],
                    &xs[i * n..(i + 1) * n],
                    gamma,
                    m,
                    cfg,
                    (step, weight),
                    &mut r,
                )
            })
            .collect()
    };
    let parts: Vec<Result<Vec<ChainResult>>> = if threads == 1 {
        vec![run_range(0, b)]
    } else {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (lo, hi) = (t * per, ((t + 1) * per).min(b));
                    let f = &run_range;
                    sc.spawn(move || f(lo, hi))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(InverseError::Numerical(
                            "a PCS worker thread panicked".into(),
                        ))
                    })
                })
                .collect()
        })
    };
    let mut out = Vec::with_capacity(xs.len());
    let mut acc = Vec::with_capacity(b);
    for part in parts {
        for (x, a) in part? {
            out.extend(x);
            acc.push(a);
        }
    }
    Ok(PcsOutput {
        samples: from_host(out, x0.dims(), x0.device(), x0.dtype())?,
        acceptance: acc,
    })
}

/// One PCS chain on host buffers: returns (sample, acceptance rate). `m` is the step rule's
/// scale (see [`PcsConfig::temperature`], [`step_scale`]); the target is tempered by
/// `cfg.likelihood_temperature`.
pub fn pcs_host(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    m: f64,
    cfg: &PcsConfig,
    rng: &mut StdRng,
) -> Result<(Vec<f64>, f64)> {
    pcs_host_step(op, y, x0, gamma, m, cfg, (None, 1.0), rng)
}

/// [`pcs_host`] with an optional fixed step (see [`pcs_seeded_tempered`]).
#[allow(clippy::too_many_arguments)]
fn pcs_host_step(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    m: f64,
    cfg: &PcsConfig,
    (step, weight): (Option<f64>, f64),
    rng: &mut StdRng,
) -> Result<(Vec<f64>, f64)> {
    // The likelihood temperature T enters the target as the weight 1/T.
    let weight = weight / cfg.likelihood_temperature;
    if !(weight > 0.0 && weight.is_finite()) {
        return Err(InverseError::InvalidArgument(format!(
            "PCS needs a positive likelihood weight β/T, got {weight} (T = {})",
            cfg.likelihood_temperature
        )));
    }
    let tempered = Tempered { step, weight };
    match cfg.method {
        PcsMethod::Exact => Ok((
            exact_gaussian_sigma(
                op,
                y,
                x0,
                gamma,
                op.temperature() / weight.sqrt(),
                cfg.cg_max_iter,
                rng,
            )?,
            1.0,
        )),
        PcsMethod::Ula => langevin_host(op, y, x0, gamma, m, cfg, tempered, false, rng),
        PcsMethod::Mala => langevin_host(op, y, x0, gamma, m, cfg, tempered, true, rng),
    }
}

/// A fixed step and a likelihood weight β (see [`pcs_seeded_tempered`]).
#[derive(Clone, Copy)]
struct Tempered {
    step: Option<f64>,
    weight: f64,
}

/// The move's parameters at a point with log-likelihood `l`: (a, s).
fn move_params(l: f64, gamma: f64, m: f64, cfg: &PcsConfig, step: Option<f64>) -> (f64, f64) {
    let g2 = gamma * gamma;
    let f = (-2.0 * m * m * l).max(0.0);
    let h = step.unwrap_or_else(|| cfg.scale * (m * m).min(g2) / (cfg.reg + f.sqrt()));
    let a = -(-h / g2).exp_m1();
    let s = gamma * (-(-2.0 * h / g2).exp_m1()).sqrt();
    (a, s)
}

#[allow(clippy::too_many_arguments)]
fn langevin_host(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    m: f64,
    cfg: &PcsConfig,
    tempered: Tempered,
    adjust: bool,
    rng: &mut StdRng,
) -> Result<(Vec<f64>, f64)> {
    let Tempered { step, weight } = tempered;
    let lik = |v: &[f64]| -> Result<(f64, Vec<f64>)> {
        let (l, mut g) = op.log_likelihood_and_grad_host(v, y)?;
        if weight != 1.0 {
            g.iter_mut().for_each(|gi| *gi *= weight);
            return Ok((weight * l, g));
        }
        Ok((l, g))
    };
    let n = x0.len();
    let g2 = gamma * gamma;
    let mut x = x0.to_vec();
    let (mut lx, mut gx) = lik(&x)?;
    let log_target = |l: f64, v: &[f64]| -> f64 {
        l - v
            .iter()
            .zip(x0)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            / (2.0 * g2)
    };
    let mut accepted = 0usize;
    let mut prop = vec![0.0; n];
    let mut zsq;
    for _ in 0..cfg.steps {
        let (a, s) = move_params(lx, gamma, m, cfg, step);
        zsq = 0.0;
        for i in 0..n {
            let z: f64 = StandardNormal.sample(rng);
            zsq += z * z;
            prop[i] = x[i] + a * (x0[i] - x[i]) + g2 * a * gx[i] + s * z;
        }
        let (lp, gp) = lik(&prop)?;
        if !adjust {
            std::mem::swap(&mut x, &mut prop);
            lx = lp;
            gx = gp;
            accepted += 1;
            continue;
        }
        // The uniform is drawn before the finiteness check, so every step draws the same
        // values whatever happens (the device loop relies on it).
        let u: f64 = rng.random();
        if !lp.is_finite() || gp.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let (ap, sp) = move_params(lp, gamma, m, cfg, step);
        // log q(x' | x) = −‖x' − μ(x)‖²/(2s²) − n ln s, with x' − μ(x) = s z
        let log_q_fwd = -0.5 * zsq - n as f64 * s.ln();
        let mut rev = 0.0;
        for i in 0..n {
            let mu = prop[i] + ap * (x0[i] - prop[i]) + g2 * ap * gp[i];
            rev += (x[i] - mu) * (x[i] - mu);
        }
        let log_q_rev = -rev / (2.0 * sp * sp) - n as f64 * sp.ln();
        let log_alpha = log_target(lp, &prop) + log_q_rev - log_target(lx, &x) - log_q_fwd;
        if log_alpha >= 0.0 || u.ln() < log_alpha {
            std::mem::swap(&mut x, &mut prop);
            lx = lp;
            gx = gp;
            accepted += 1;
        }
    }
    Ok((x, accepted as f64 / cfg.steps as f64))
}

/// One exact sample of N(P⁻¹(Aᵀy/σ² + x₀/γ²), P⁻¹), P = AᵀA/σ² + I/γ², by perturb-and-solve.
pub fn exact_gaussian_host(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    cg_max_iter: usize,
    rng: &mut StdRng,
) -> Result<Vec<f64>> {
    exact_gaussian_sigma(op, y, x0, gamma, op.temperature(), cg_max_iter, rng)
}

/// [`exact_gaussian_host`] with the likelihood σ given (σ/√β for a tempered target).
fn exact_gaussian_sigma(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    sigma: f64,
    cg_max_iter: usize,
    rng: &mut StdRng,
) -> Result<Vec<f64>> {
    if !op.is_linear_gaussian() {
        return Err(InverseError::Unsupported(format!(
            "exact PCS needs a linear operator with a Gaussian likelihood; task `{}` is not",
            op.name()
        )));
    }
    check_exact_sigma(op, sigma)?;
    let (s2, g2) = (sigma * sigma, gamma * gamma);
    let ytil: Vec<f64> = y
        .iter()
        .map(|&v| {
            let z: f64 = StandardNormal.sample(rng);
            v + sigma * z
        })
        .collect();
    let aty = op.adjoint_host(&ytil)?;
    let rhs: Vec<f64> = aty
        .iter()
        .zip(x0)
        .map(|(&a, &x)| {
            let z: f64 = StandardNormal.sample(rng);
            a / s2 + (x + gamma * z) / g2
        })
        .collect();
    match op.solve_shifted_gram_host(&rhs, 1.0 / s2, 1.0 / g2) {
        Some(r) => r,
        None => shifted_gram_cg(op, &rhs, |g, v| g / s2 + v / g2, 1e-10, cg_max_iter),
    }
}

/// The exact sampler's likelihood σ must be positive and finite (host and device loops).
pub(crate) fn check_exact_sigma(op: &dyn Operator, sigma: f64) -> Result<()> {
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(InverseError::InvalidArgument(format!(
            "exact PCS needs a positive likelihood σ, got {sigma} (task `{}`)",
            op.name()
        )));
    }
    Ok(())
}

/// f(x) = −2m²L(x) for reporting (pass L/T for a tempered target) (e.g. the data misfit ‖y − A(x)‖² of Gaussian tasks when m = σ).
pub fn misfit(l: f64, m: f64) -> f64 {
    -2.0 * m * m * l
}
