//! DAPS — decoupled annealing posterior sampling (Zhang et al., "Improving Diffusion Inverse
//! Problem Solving with Decoupled Noise Annealing", CVPR 2025; reference code
//! `zhangbingliang2019/DAPS` (`sampler.py`, `cores/scheduler.py`, `cores/mcmc.py`,
//! `configs/`) and InverseBench's `algo/daps.py`, whose schedule this file follows).
//!
//! In the VE view (x_σ = x₀ + σ w), over annealing levels σ_0 > σ_1 > … > σ_{K−1}, σ_K = 0:
//! ```text
//! x ~ σ_0 · N(0, I)
//! for k in 0..K:
//!     x̂₀  = probability-flow ODE from x at σ_k down to 0 (Euler, `ode_steps` steps)
//!     x₀ʸ ~ Langevin on exp(β L(x₀; y) − ‖x₀ − x̂₀‖²/(2 r_k²)),  r_k = σ_k, started at x̂₀
//!     x   = x₀ʸ + σ_{k+1} z                                   (x = x₀ʸ after the last level)
//! ```
//! The paper's argument: if x ~ p(x_σk | y) and x₀ʸ is an exact draw of p(x₀ | x_σk, y), then
//! x₀ʸ ~ p(x₀ | y) and x₀ʸ + σ_{k+1} z ~ p(x_σ{k+1} | y), so every level's marginal is the
//! posterior's. DAPS replaces p(x₀ | x_σ) by N(x̂₀(x_σ), r_k² I); on a Gaussian prior with
//! x̂₀ = E[x₀ | x_σ] (one ODE step) and r_k² = Var(x₀ | x_σ) that is exact, and the chain then
//! samples the posterior at any number of levels (asserted in `tests/daps.rs`). With the
//! reference's choices (5 ODE steps, r_k = σ_k) it is an approximation; the test records its
//! bias.
//!
//! **Schedules (reference, DAPS-1K).** Annealing: K = 200 levels on the EDM "poly-7" grid
//! σ_i = (σ_max^{1/7} + i/(K−1)·(σ_min^{1/7} − σ_max^{1/7}))⁷ from σ_max = 100 to σ_min = 0.1,
//! then σ_K = 0. ODE: for level σ, 5 points on the poly-7 grid from σ down to 0.01, then 0;
//! one Euler step per interval, x ← x + (σ_{i+1} − σ_i)/σ_i · (x − D(x; σ_i)), so the last
//! step (to 0) returns D(x; 0.01) and the NFE is K × `ode_steps` = 1000 (one ODE step is the
//! Tweedie estimate D(x; σ) itself). Langevin: 100 steps with step size
//! lr_k = lr·(1 + (k/K)(lr_min_ratio − 1)), lr_min_ratio = 0.01, lr per task from the pixel
//! configs (`configs/task/*.yaml`): down-sampling 1e-4, Gaussian blur 1e-4, phase retrieval
//! 5e-5, box inpainting 5e-5 (random inpainting 1e-4, motion blur 5e-5). The cheaper budget of
//! the reference's latent configs is 50 levels × 2 ODE steps (100 NFE).
//!
//! **The network at σ between training timesteps.** genprior's priors are VP networks:
//! x_VE = x_VP/sqrt(ᾱ), σ = sqrt(1/ᾱ − 1). D(x; σ) evaluates the network at the fractional
//! timestep t whose log-interpolated ᾱ(t) equals 1/(1 + σ²)
//! ([`genprior_diffusion::Schedule::timestep_for_sigma`], as DDS does for its refined grid), on
//! the input sqrt(ᾱ(t))·x, and returns its x̂₀ ([`Denoiser::interpret`]: clipped when the
//! schedule clips, as for DPS and DDS). σ is clamped to the schedule's range
//! [σ(0), σ(T−1)]: for linear β, T = 1000 that is [0.0100005, 157], so the ODE's last point
//! 0.01 is evaluated at t = 0. (The reference evaluates its VP network at the continuous VP-SDE
//! time (M − 1)·t(σ) of β_min = 0.1, β_d = 19.9, a continuous fit of the same linear schedule,
//! and does not clip.)
//!
//! **Langevin = PCS.** Step (2) is [`crate::pcs`]'s Langevin move with a fixed step
//! ([`pcs_seeded_tempered`]): x' = x + a(x̂₀ − x) + r²a β∇L + r sqrt(1 − e^{−2h/r²}) z,
//! a = 1 − e^{−h/r²}, h = lr_k. To first order in h/r² (at most 2.3e-4 at the reference's
//! settings) this is the reference's Euler–Maruyama step x + h(∇log π) + sqrt(2h) z; the
//! exponential integrator is exact for the Gaussian part. `daps-langevin` picks `ula` (the
//! reference), `mala` (the same move Metropolis-adjusted) or `exact` (linear-Gaussian tasks:
//! an exact draw of the Gaussian target, no step size).
//!
//! **Data weight.** The reference's Langevin data term is ‖y − A(x)‖²/(2τ²) with τ = 0.01 while
//! its noise σ_y = 0.05, i.e. the likelihood sharpened by β = (σ_y/τ)² = 25, and its lr were
//! tuned with it. genprior uses β = (m/τ)² with m the operator's likelihood temperature (σ_y for
//! Gaussian tasks), τ = `daps-tau`: default 0.01 on Gaussian-likelihood tasks (the reference),
//! and β = 1 (the task's own likelihood) on others (one-bit; no reference). `--daps-tau` equal to
//! σ_y gives the untempered posterior. (The current `zhangbingliang2019/DAPS` `cores/mcmc.py`
//! divides by τ² instead of 2τ²; InverseBench's 2τ² is followed.)
//!
//! **Deviations.** The exponential-integrator form of the Langevin step (above); the network
//! evaluated on the discrete schedule's own ᾱ(t) with clamping (above); a diverged Langevin
//! (non-finite values) is an error naming the level instead of the reference's silent zeros.
//! Only the operator's log-likelihood gradient is used: no backprop through the network.
//!
//! Randomness: x_0 and the re-noising come from one [`BatchNoise`] stream per chain (index
//! `first_index + i`), the Langevin of chain i at level k from a seed derived from (seed, i, k),
//! so a run split over several calls equals one call.

use candle_core::{DType, Tensor};
use genprior_diffusion::{BatchNoise, Schedule};
use genprior_inverse::{Operator, ReferenceTask};
use serde_json::{json, Value};

use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{at_least_one, OptionDefault, OptionSpec, OptionType, Resolved};
use crate::pcs::{pcs_seeded_tempered, PcsConfig, PcsMethod};
use crate::seeds;

/// Sub-seed tags of DAPS's noise streams (distinct from the tags in `seeds`).
const SEED_NOISE: u64 = 0x0044_4150_534e; // "DAPSN"
const SEED_LANGEVIN: u64 = 0x0044_4150_534c; // "DAPSL"

/// The last point of every ODE grid before 0 (reference `sigma_min` of the diffusion scheduler).
pub const ODE_SIGMA_MIN: f64 = 0.01;

/// Exponent of the EDM "poly-7" grids.
const POLY: f64 = 7.0;

/// `n` points of the EDM poly-7 grid from `hi` to `lo` (both included; `n = 1` gives `hi`).
pub fn poly7_grid(hi: f64, lo: f64, n: usize) -> Vec<f64> {
    let (a, b) = (hi.powf(1.0 / POLY), lo.powf(1.0 / POLY));
    (0..n)
        .map(|i| {
            if i == 0 {
                hi
            } else if i + 1 == n {
                lo
            } else {
                (a + i as f64 / (n - 1) as f64 * (b - a)).powf(POLY)
            }
        })
        .collect()
}

/// The ODE grid of a level σ: `steps` poly-7 points from σ to [`ODE_SIGMA_MIN`], then 0 (just
/// [σ, 0] for one step, or when σ ≤ [`ODE_SIGMA_MIN`]).
pub fn ode_grid(sigma: f64, steps: usize) -> Vec<f64> {
    let mut g = if steps <= 1 || sigma <= ODE_SIGMA_MIN {
        vec![sigma]
    } else {
        poly7_grid(sigma, ODE_SIGMA_MIN, steps)
    };
    g.push(0.0);
    g
}

/// The Langevin step size of level `k` of `levels`: lr·(1 + (k/K)(lr_min_ratio − 1)).
pub fn langevin_lr(lr: f64, lr_min_ratio: f64, k: usize, levels: usize) -> f64 {
    lr * (1.0 + (k as f64 / levels as f64) * (lr_min_ratio - 1.0))
}

/// The reference's Langevin lr for `op` (see the module docs): 1e-4 for super-resolution and
/// deblurring, 5e-5 for phase retrieval and (box) inpainting; genprior's choices elsewhere:
/// 1e-4 for other linear-Gaussian tasks, 5e-5 otherwise (one-bit, nonlinear).
pub fn default_lr(op: &dyn Operator) -> f64 {
    match op.reference_task() {
        Some(ReferenceTask::SuperResolution | ReferenceTask::Deblur) => 1e-4,
        Some(ReferenceTask::PhaseRetrieval | ReferenceTask::Inpainting) => 5e-5,
        Some(ReferenceTask::OneBit) => 5e-5,
        None if op.is_linear_gaussian() => 1e-4,
        None => 5e-5,
    }
}

/// The reference's data-term τ for `op`: 0.01 on Gaussian-likelihood tasks, none (β = 1)
/// otherwise.
pub fn default_tau(op: &dyn Operator) -> Option<f64> {
    if op.noise().is_gaussian() {
        Some(0.01)
    } else {
        None
    }
}

/// The Langevin prior width r_k of each level.
#[derive(Debug, Clone, PartialEq)]
pub enum DapsR {
    /// r_k = σ_k (the reference).
    Sigma,
    /// Given per level (K values).
    Levels(Vec<f64>),
}

/// DAPS settings.
#[derive(Debug, Clone)]
pub struct DapsConfig {
    /// Annealing levels K.
    pub levels: usize,
    /// Euler steps of each level's probability-flow ODE.
    pub ode_steps: usize,
    pub sigma_max: f64,
    pub sigma_min: f64,
    /// Explicit annealing levels (overrides `levels`, `sigma_max`, `sigma_min`).
    pub sigmas: Option<Vec<f64>>,
    pub r: DapsR,
    /// `Ula` (reference), `Mala` or `Exact`.
    pub langevin: PcsMethod,
    pub langevin_steps: usize,
    /// Where the Langevin chains run (see [`crate::pcs::PcsBackend`]).
    pub backend: crate::pcs::PcsBackend,
    pub lr: f64,
    pub lr_min_ratio: f64,
    /// τ of the data weight β = (m/τ)²; `None`: β = 1.
    pub tau: Option<f64>,
}

impl DapsConfig {
    /// The reference (DAPS-1K) settings for `op`.
    pub fn for_operator(op: &dyn Operator) -> Self {
        Self {
            levels: 200,
            ode_steps: 5,
            sigma_max: 100.0,
            sigma_min: 0.1,
            sigmas: None,
            r: DapsR::Sigma,
            langevin: PcsMethod::Ula,
            langevin_steps: 100,
            backend: crate::pcs::PcsBackend::Auto,
            lr: default_lr(op),
            lr_min_ratio: 0.01,
            tau: default_tau(op),
        }
    }

    /// From the [`DAPS_OPTIONS`].
    pub fn from_options(opts: &Resolved, op: &dyn Operator) -> Result<Self> {
        let tau = match opts.opt_f64("daps-tau")? {
            Some(t) => Some(t),
            None => default_tau(op),
        };
        let cfg = Self {
            levels: at_least_one("daps-steps", opts.usize("daps-steps")?)?,
            ode_steps: at_least_one("daps-ode-steps", opts.usize("daps-ode-steps")?)?,
            sigma_max: opts.f64("daps-sigma-max")?,
            sigma_min: opts.f64("daps-sigma-min")?,
            sigmas: None,
            r: DapsR::Sigma,
            langevin: opts.choice("daps-langevin")?.parse()?,
            langevin_steps: at_least_one(
                "daps-langevin-steps",
                opts.usize("daps-langevin-steps")?,
            )?,
            backend: opts.choice("pcs-backend")?.parse()?,
            lr: opts.opt_f64("daps-lr")?.unwrap_or_else(|| default_lr(op)),
            lr_min_ratio: opts.f64("daps-lr-min-ratio")?,
            tau,
        };
        cfg.validate()?;
        if cfg.langevin == PcsMethod::Exact && !op.is_linear_gaussian() {
            return invalid(format!(
                "--daps-langevin exact needs a linear operator with a Gaussian likelihood; task `{}` is not (use ula or mala)",
                op.name()
            ));
        }
        Ok(cfg)
    }

    /// Checks the ranges, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.sigmas.is_none()
            && !(self.sigma_min > 0.0
                && self.sigma_min.is_finite()
                && self.sigma_max.is_finite()
                && self.sigma_max >= self.sigma_min)
        {
            return invalid(format!(
                "--daps-sigma-max and --daps-sigma-min must satisfy sigma-max ≥ sigma-min > 0, got {} and {}",
                self.sigma_max, self.sigma_min
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid(format!(
                "--daps-lr must be a finite number > 0, got {}",
                self.lr
            ));
        }
        if !(self.lr_min_ratio.is_finite() && self.lr_min_ratio > 0.0 && self.lr_min_ratio <= 1.0) {
            return invalid(format!(
                "--daps-lr-min-ratio must lie in (0, 1], got {}",
                self.lr_min_ratio
            ));
        }
        if let Some(t) = self.tau {
            if !(t.is_finite() && t > 0.0) {
                return invalid(format!("--daps-tau must be a finite number > 0, got {t}"));
            }
        }
        if self.levels == 0 || self.ode_steps == 0 || self.langevin_steps == 0 {
            return invalid(
                "--daps-steps, --daps-ode-steps and --daps-langevin-steps must be at least 1",
            );
        }
        Ok(())
    }

    /// The annealing levels σ_0 > … > σ_{K−1} (σ_K = 0 is implicit).
    pub fn sigmas(&self) -> Result<Vec<f64>> {
        let v = match &self.sigmas {
            Some(v) => v.clone(),
            None => poly7_grid(self.sigma_max, self.sigma_min, self.levels),
        };
        if v.is_empty() || v.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return invalid(format!("DAPS levels must be finite and > 0, got {v:?}"));
        }
        Ok(v)
    }

    /// Network evaluations per chain batch: Σ_k |ODE grid of σ_k| − 1.
    pub fn nfe(&self) -> Result<usize> {
        Ok(self
            .sigmas()?
            .iter()
            .map(|&s| ode_grid(s, self.ode_steps).len() - 1)
            .sum())
    }

    /// The settings as report fields.
    pub fn settings(&self, op: &dyn Operator) -> Value {
        let label = match self.langevin {
            PcsMethod::Ula => "ula",
            PcsMethod::Mala => "mala",
            PcsMethod::Exact => "exact",
        };
        json!({
            "daps_steps": self.levels,
            "daps_ode_steps": self.ode_steps,
            "daps_sigma_max": self.sigma_max,
            "daps_sigma_min": self.sigma_min,
            "daps_ode_sigma_min": ODE_SIGMA_MIN,
            "daps_r": match &self.r { DapsR::Sigma => json!("sigma"), DapsR::Levels(v) => json!(v) },
            "daps_langevin": label,
            "daps_langevin_steps": self.langevin_steps,
            "pcs_backend": format!("{:?}", self.backend).to_lowercase(),
            "daps_lr": self.lr,
            "daps_lr_min_ratio": self.lr_min_ratio,
            "daps_tau": self.tau,
            "daps_likelihood_weight": self.weight(op),
            "daps_grid": "poly-7",
        })
    }

    /// β = (m/τ)², or 1 without τ.
    pub fn weight(&self, op: &dyn Operator) -> f64 {
        match self.tau {
            Some(t) => (op.temperature() / t).powi(2),
            None => 1.0,
        }
    }
}

/// Every option DAPS declares.
pub const DAPS_OPTIONS: &[OptionSpec] = &[
    crate::pcs::PCS_BACKEND_OPTION,
    OptionSpec::new(
        "daps-steps",
        "DAPS: annealing levels on the poly-7 grid from --daps-sigma-max to --daps-sigma-min (reference DAPS-1K: 200; a cheaper budget: 50 with --daps-ode-steps 2)",
        OptionType::Integer,
        OptionDefault::Integer(200),
    ),
    OptionSpec::new(
        "daps-ode-steps",
        "DAPS: Euler steps of each level's probability-flow ODE, one network evaluation each (NFE = levels × ODE steps)",
        OptionType::Integer,
        OptionDefault::Integer(5),
    ),
    OptionSpec::new(
        "daps-sigma-max",
        "DAPS: largest annealing level σ (VE units)",
        OptionType::Float,
        OptionDefault::Float(100.0),
    ),
    OptionSpec::new(
        "daps-sigma-min",
        "DAPS: smallest annealing level σ (VE units)",
        OptionType::Float,
        OptionDefault::Float(0.1),
    ),
    OptionSpec::new(
        "daps-langevin",
        "DAPS: the x₀ sampler (ula: unadjusted Langevin, the reference; mala: Metropolis-adjusted; exact: linear-Gaussian tasks only)",
        OptionType::Choice(&["ula", "mala", "exact"]),
        OptionDefault::Choice("ula"),
    ),
    OptionSpec::new(
        "daps-langevin-steps",
        "DAPS: Langevin steps per level",
        OptionType::Integer,
        OptionDefault::Integer(100),
    ),
    OptionSpec::new(
        "daps-lr",
        "DAPS: Langevin step size at the first level, decaying linearly to lr·lr-min-ratio (default by operator, the reference's: SR and deblur 1e-4, phase retrieval and inpainting 5e-5; otherwise 1e-4 for linear-Gaussian tasks, 5e-5 for others)",
        OptionType::Float,
        OptionDefault::Derived,
    ),
    OptionSpec::new(
        "daps-lr-min-ratio",
        "DAPS: the last level's Langevin step as a fraction of --daps-lr",
        OptionType::Float,
        OptionDefault::Float(0.01),
    ),
    OptionSpec::new(
        "daps-tau",
        "DAPS: the Langevin data term is (m/τ)²·L, i.e. ‖y − A(x)‖²/(2τ²) on Gaussian tasks (default: the reference's 0.01 on Gaussian-likelihood tasks, the task's own likelihood otherwise; τ = σ_y gives the untempered posterior)",
        OptionType::Float,
        OptionDefault::Derived,
    ),
];

/// The registry entry.
pub const DAPS: MethodEntry = MethodEntry {
    name: "daps",
    summary: "DAPS (Zhang et al. 2025): decoupled noise annealing, a probability-flow ODE to x̂₀ then Langevin on x₀ given y, re-noised per level",
    options: DAPS_OPTIONS,
    build: |opts, op| {
        let cfg = DapsConfig::from_options(opts, op)?;
        let settings = cfg.settings(op);
        Ok(Box::new(DapsSampler { cfg, settings }))
    },
};

/// DAPS behind the [`PosteriorSampler`] seam.
pub struct DapsSampler {
    pub cfg: DapsConfig,
    settings: Value,
}

impl PosteriorSampler for DapsSampler {
    fn method(&self) -> &'static str {
        "daps"
    }
    fn settings(&self) -> Value {
        self.settings.clone()
    }
    fn total_steps(&self) -> usize {
        self.cfg.sigmas().map(|v| v.len()).unwrap_or(0)
    }
    fn sample(
        &self,
        p: &Problem,
        chains: &Chains,
        progress: &mut dyn FnMut(MethodProgress),
    ) -> Result<SamplerOutput> {
        let out = daps(p, chains, &self.cfg, progress)?;
        Ok(SamplerOutput {
            samples: out.samples,
            nfe: out.nfe,
            backprop: false,
            mean_acceptance: Some(out.mean_acceptance),
            trace: json!(out.trace),
        })
    }
}

/// DAPS result.
#[derive(Debug, Clone)]
pub struct DapsOutput {
    /// `(count, C, H, W)` samples.
    pub samples: Tensor,
    /// Batched network evaluations.
    pub nfe: usize,
    /// Mean Langevin acceptance (1 for ULA and exact).
    pub mean_acceptance: f64,
    /// Per level: `{step, sigma, r, lr, acceptance, nfe}`.
    pub trace: Vec<Value>,
}

/// D(x; σ) for VE-scaled `x`: the network's x̂₀ at the fractional timestep of σ (clamped to
/// the schedule's range), see the module docs.
pub fn ve_denoise(den: &mut Denoiser, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let s: &Schedule = den.schedule();
    let ab = s.alphas_cumprod();
    let lo = (1.0 / ab[0] - 1.0).sqrt();
    let hi = (1.0 / ab[ab.len() - 1] - 1.0).sqrt();
    let t = s.timestep_for_sigma(sigma.clamp(lo, hi))?;
    let abar = s.alpha_bar_at(t)?;
    let xv = x.affine(abar.sqrt(), 0.0)?;
    let raw = den.raw(&xv, t)?;
    Ok(den.interpret(&raw, &xv, abar)?.0)
}

/// The Euler probability-flow ODE of one level: from `x` at σ = grid[0] along `grid` (ending
/// at 0), one network evaluation per interval.
pub fn pf_ode(den: &mut Denoiser, x: &Tensor, grid: &[f64]) -> Result<Tensor> {
    let mut x = x.clone();
    for w in grid.windows(2) {
        let (s, s_next) = (w[0], w[1]);
        let d = ve_denoise(den, &x, s)?;
        // x ← x + (σ' − σ)/σ · (x − D) = (σ'/σ) x + (1 − σ'/σ) D
        let c = s_next / s;
        x = (x.affine(c, 0.0)? + d.affine(1.0 - c, 0.0)?)?;
    }
    Ok(x)
}

/// Runs DAPS for `chains` on `p` (measurement batch 1, shared, or one per chain).
pub fn daps(
    p: &Problem,
    chains: &Chains,
    cfg: &DapsConfig,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<DapsOutput> {
    cfg.validate()?;
    let k = chains.count;
    if k == 0 {
        return invalid("DAPS needs at least one chain");
    }
    let op = p.op;
    op.validate_measurement(p.y)?;
    let by = p.y.dim(0)?;
    if by != 1 && by != k {
        return invalid(format!(
            "DAPS takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    if cfg.langevin == PcsMethod::Exact && !op.is_linear_gaussian() {
        return invalid(format!(
            "DAPS with exact Langevin needs a linear operator with a Gaussian likelihood; task `{}` is not",
            op.name()
        ));
    }
    let sigmas = cfg.sigmas()?;
    let rs: Vec<f64> = match &cfg.r {
        DapsR::Sigma => sigmas.clone(),
        DapsR::Levels(v) => {
            if v.len() != sigmas.len() || v.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
                return invalid(format!(
                    "DAPS needs one r > 0 per level ({}), got {v:?}",
                    sigmas.len()
                ));
            }
            v.clone()
        }
    };
    let weight = cfg.weight(op);
    let [c, h, w] = op.image_shape();
    let mut den = Denoiser::new(p.model, p.schedule);
    den.check_channels(c)?;
    let device = p.model.device().clone();
    let mut noise = BatchNoise::new(
        seeds::derive(chains.seed, SEED_NOISE),
        chains.first_index,
        k,
    );
    let lseed = seeds::derive(chains.seed, SEED_LANGEVIN);
    let pcs_cfg = PcsConfig {
        method: cfg.langevin,
        steps: cfg.langevin_steps,
        backend: cfg.backend,
        ..PcsConfig::default()
    };
    let mut x = noise.draw(&[c, h, w], &device)?.affine(sigmas[0], 0.0)?;
    let total = sigmas.len();
    let mut acc_sum = 0.0;
    let mut trace = Vec::with_capacity(total);
    for (level, &sigma) in sigmas.iter().enumerate() {
        let x0hat = pf_ode(&mut den, &x, &ode_grid(sigma, cfg.ode_steps))?;
        let lr = langevin_lr(cfg.lr, cfg.lr_min_ratio, level, total);
        let chain_seeds: Vec<u64> = (0..k as u64)
            .map(|i| seeds::derive(seeds::derive(lseed, chains.first_index + i), level as u64))
            .collect();
        let out = pcs_seeded_tempered(
            op,
            p.y,
            &x0hat,
            rs[level],
            &pcs_cfg,
            Some(lr),
            weight,
            &chain_seeds,
        )?;
        let acc = out.acceptance.iter().sum::<f64>() / out.acceptance.len().max(1) as f64;
        acc_sum += acc;
        let x0y = out.samples.to_dtype(DType::F32)?.to_device(&device)?;
        let finite = x0y
            .abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            .is_finite();
        if !finite {
            return invalid(format!(
                "DAPS: the Langevin step diverged at level {} of {total} (σ = {sigma:.4}, lr = {lr:.3e}); lower --daps-lr or use --daps-langevin mala",
                level + 1
            ));
        }
        x = match sigmas.get(level + 1) {
            Some(&next) => (&x0y + noise.draw_like(&x0y)?.affine(next, 0.0)?)?,
            None => x0y,
        };
        trace.push(json!({
            "step": level + 1,
            "sigma": sigma,
            "r": rs[level],
            "lr": lr,
            "acceptance": acc,
            "nfe": den.nfe(),
        }));
        progress(MethodProgress::Step {
            step: level + 1,
            total,
            status: format!("σ = {sigma:.3}, lr = {lr:.2e}, acceptance {acc:.3}"),
        });
    }
    Ok(DapsOutput {
        samples: x,
        nfe: den.nfe(),
        mean_acceptance: acc_sum / total as f64,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_match_the_reference() {
        // InverseBench Scheduler(num_steps=200, sigma_max=100, sigma_min=0.1, 'poly-7').
        let g = poly7_grid(100.0, 0.1, 200);
        assert_eq!(g.len(), 200);
        assert_eq!(g[0], 100.0);
        assert_eq!(g[199], 0.1);
        let a = 100f64.powf(1.0 / 7.0);
        let b = 0.1f64.powf(1.0 / 7.0);
        let want = (a + 100.0 / 199.0 * (b - a)).powi(7);
        assert!((g[100] - want).abs() < 1e-12 * want);
        assert!(g.windows(2).all(|w| w[0] > w[1]));
        // ODE grid: 5 points from σ to 0.01, then 0.
        let o = ode_grid(3.0, 5);
        assert_eq!(o.len(), 6);
        assert_eq!((o[0], o[4], o[5]), (3.0, 0.01, 0.0));
        assert_eq!(ode_grid(3.0, 1), vec![3.0, 0.0]);
        assert_eq!(ode_grid(0.005, 5), vec![0.005, 0.0]);
        // lr: linear from lr to about lr·lr_min_ratio.
        assert_eq!(langevin_lr(1e-4, 0.01, 0, 200), 1e-4);
        assert!((langevin_lr(1e-4, 0.01, 100, 200) - 1e-4 * 0.505).abs() < 1e-16);
    }
}
