//! DPnP — diffusion plug-and-play posterior sampling (Xu & Chi 2024), the outer loop:
//! ```text
//! for k in 0..K:
//!     x_{k+1/2} ~ PCS:  ∝ exp( L(x; y) − ‖x − x_k‖² / (2 η_k²) )
//!     x_{k+1}   ~ DDS:  p(x | x + η_k w = x_{k+1/2})
//! ```
//! With a constant η the pair is a Gibbs sampler on p(x)·e^{L(z)}·N(z; x, η²I), whose
//! x-marginal π_η ∝ p(x)·(e^L * N(0, η²I))(x) is the stationary law; a decreasing schedule
//! drives it towards the posterior. PCS is [`crate::pcs`](mod@crate::pcs) (MALA by default,
//! ULA, or exact for linear-Gaussian tasks), DDS is [`crate::dds`] (DDIM on the refined grid by
//! default, or DDPM).
//!
//! **Likelihood temperature.** `likelihood-temperature` T makes the PCS target
//! exp(L(x; y)/T − ‖x − x_k‖²/(2η_k²)) (MALA, ULA and exact PCS alike; [`crate::pcs`](mod@crate::pcs)), so
//! the chain targets the tempered posterior ∝ p(x)·e^{L/T}; `pcs-m` sets the m of the step
//! rule. The reference one-bit configs use T = 2m² with m = 0.36 / 0.38 (`--protocol`). The
//! warm start is not tempered (nor is it in the reference).
//!
//! **Grids.** `dds-grid refined` (default) runs DDS-DDIM on genprior's exact refined grid and
//! DDS-DDPM from σ = η; `dds-grid reference` runs the reference code's grids
//! ([`crate::dds::DdimGrid::reference`]: 2,423 NFE per default run against 2,823), see
//! [`crate::dds`].
//!
//! **Warm starts.** Every shipped reference config (`configs/*_pnp.yaml`) starts the chains
//! from a 500-step guided DDPM run (`timestep_respacing: 500`): LGD-MC ([`crate::lgd`], with
//! the task's `lgd` ζ and λ) on every task but coded phase retrieval on FFHQ, which uses DPS
//! (`ps`, scale 0.8). genprior offers both ([`WarmStart::Lgd`], 500 steps by default, ζ and λ
//! from [`crate::lgd::default_zeta_lambda`]; [`WarmStart::Dps`]), plus the classical baseline
//! and pure noise; `warm-start auto` picks DPS for sign-ambiguous operators and the baseline
//! otherwise (genprior's default, not the reference's).
//!
//! The K posterior samples run as one batch of K chains. All randomness comes from one seed:
//! the warm start, PCS and DDS each use their own sub-seed of it, and within those each chain
//! has its own stream, keyed by its index in the run (`first_index + i`) — PCS reseeds chain
//! i at outer step k from (seed, i, k) — so a run split into several calls gives the same
//! chains as one call.

use candle_core::Tensor;
use genprior_diffusion::{BatchNoise, Schedule, ScoreModel};
use genprior_inverse::{Operator, ReferenceTask};
use serde_json::{json, Value};

use crate::dds::{dds_with_budget, DdsMethod};
use crate::denoiser::Denoiser;
use crate::dps::{dps_indexed, DpsConfig, DPS_MISFIT, DPS_STEPS, LIKELIHOOD_TEMPERATURE, ZETA};
use crate::energy::{default_energy_timesteps, lowest_energy, sign_patterns};
use crate::error::{invalid, Result};
use crate::lgd::{lgd_indexed, LgdConfig, LGD_SHARED_OPTIONS};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{at_least_one, OptionDefault, OptionSpec, OptionType, Resolved};
use crate::pcs::{pcs_seeded, step_scale, PcsConfig, PcsMethod};
use crate::seeds;

/// The annealing schedule η_0 ≥ η_1 ≥ … of the outer loop.
#[derive(Debug, Clone, PartialEq)]
pub enum EtaSchedule {
    /// The reference schedule: η_max repeated `k_start` times, then `k` values geometric from
    /// η_max to η_min inclusive (K = k_start + k outer steps; k = 1 gives just η_min, so the
    /// last η is always η_min).
    Annealed {
        eta_max: f64,
        eta_min: f64,
        k_start: usize,
        k: usize,
    },
    /// A constant η for `steps` outer steps (its stationary law is π_η).
    Constant { eta: f64, steps: usize },
    /// Explicit values.
    Custom(Vec<f64>),
}

impl Default for EtaSchedule {
    /// η_max = 0.4, η_min = 0.16, k_start = 4, k = 12 (16 outer steps).
    fn default() -> Self {
        Self::Annealed {
            eta_max: 0.4,
            eta_min: 0.16,
            k_start: 4,
            k: 12,
        }
    }
}

impl EtaSchedule {
    /// The reference shape with `outer_steps` steps in all, `k_start` of them (at most
    /// `outer_steps − 1`) held at η_max.
    pub fn annealed(outer_steps: usize, k_start: usize, eta_max: f64, eta_min: f64) -> Self {
        let k_start = k_start.min(outer_steps.saturating_sub(1));
        Self::Annealed {
            eta_max,
            eta_min,
            k_start,
            k: outer_steps - k_start,
        }
    }

    /// The η values, validated (each finite and > 0, at least one).
    pub fn etas(&self) -> Result<Vec<f64>> {
        let v = match self {
            Self::Annealed {
                eta_max,
                eta_min,
                k_start,
                k,
            } => {
                let (hi, lo, k) = (*eta_max, *eta_min, *k);
                if !(hi.is_finite() && lo.is_finite() && lo > 0.0 && hi >= lo) {
                    return invalid(format!(
                        "the η schedule needs η_max ≥ η_min > 0, got η_max {hi}, η_min {lo}"
                    ));
                }
                let mut v = vec![hi; *k_start];
                if k == 1 {
                    // A one-point "geometric" run ends at η_min (numpy's geomspace would give η_max).
                    v.push(lo);
                } else {
                    let r = (lo / hi).ln();
                    v.extend((0..k).map(|i| {
                        if i + 1 == k {
                            lo
                        } else {
                            hi * (r * i as f64 / (k - 1) as f64).exp()
                        }
                    }));
                }
                v
            }
            Self::Constant { eta, steps } => vec![*eta; *steps],
            Self::Custom(v) => v.clone(),
        };
        if v.is_empty() {
            return invalid("the η schedule has no outer steps");
        }
        if let Some(e) = v.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
            return invalid(format!("every η must be a finite number > 0, got {e}"));
        }
        Ok(v)
    }
}

/// Where the chains start.
#[derive(Debug, Clone)]
pub enum WarmStart {
    /// The operator's classical baseline reconstruction of y (every chain the same).
    Baseline,
    /// Pure noise x_0 ~ N(0, I), independent per chain.
    Noise,
    /// A DPS run (one per chain) with these settings.
    Dps(DpsConfig),
    /// An LGD-MC run (one per chain) with these settings (the reference's warm start).
    Lgd(LgdConfig),
    /// Per chain, the classical baseline with the per-channel sign pattern (of the 2^C, see
    /// [`crate::energy::sign_patterns`]) that has the lowest denoising energy under the prior,
    /// for measurements blind to each channel's sign (phase retrieval); 2^C·|T| extra network
    /// evaluations, T = [`default_energy_timesteps`].
    BaselineSign,
    /// Given start points: `(1, C, H, W)` (shared) or `(K, C, H, W)`.
    Given(Tensor),
}

/// DPnP settings.
#[derive(Debug, Clone)]
pub struct DpnpConfig {
    pub etas: EtaSchedule,
    pub dds: DdsMethod,
    /// At most this many network evaluations per DDS call (`None`: the full DDIM grid or all
    /// usable DDPM timesteps). See [`crate::dds::dds_with_budget`].
    pub dds_steps: Option<usize>,
    pub pcs: PcsConfig,
    pub warm_start: WarmStart,
    /// Posterior samples K (chains, run as one batch).
    pub samples: usize,
    pub seed: u64,
    /// Index of the first chain in the run: chain i uses the noise streams of chain
    /// `first_index + i`.
    pub first_index: u64,
}

impl Default for DpnpConfig {
    fn default() -> Self {
        Self {
            etas: EtaSchedule::default(),
            dds: DdsMethod::Ddim,
            dds_steps: None,
            pcs: PcsConfig::default(),
            warm_start: WarmStart::Baseline,
            samples: 1,
            seed: 0,
            first_index: 0,
        }
    }
}

/// What one outer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OuterStep {
    /// 1-based.
    pub step: usize,
    pub total: usize,
    pub eta: f64,
    /// Mean PCS acceptance rate over the chains (1 for ULA and exact PCS).
    pub acceptance: f64,
    /// Network evaluations so far (warm start included).
    pub nfe: usize,
}

/// Progress reports, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// A DPS warm-start step finished.
    WarmStart { step: usize, total: usize },
    /// PCS of outer step `step` is starting.
    Pcs { step: usize, total: usize, eta: f64 },
    /// An inner DDS step of outer step `step` finished.
    Dds {
        step: usize,
        inner: usize,
        inner_total: usize,
    },
    /// An outer step finished.
    Outer(OuterStep),
}

/// DPnP result.
#[derive(Debug, Clone)]
pub struct DpnpOutput {
    /// `(K, C, H, W)` posterior samples x_K.
    pub samples: Tensor,
    /// The start points x_0.
    pub init: Tensor,
    /// Network evaluations (batched calls), warm start included.
    pub nfe: usize,
    /// Per outer step: η, mean acceptance, cumulative NFE.
    pub steps: Vec<OuterStep>,
}

impl DpnpOutput {
    /// Mean PCS acceptance over all outer steps.
    pub fn mean_acceptance(&self) -> f64 {
        self.steps.iter().map(|s| s.acceptance).sum::<f64>() / self.steps.len().max(1) as f64
    }
}

fn start_points(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: &Tensor,
    cfg: &DpnpConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Tensor, usize)> {
    let k = cfg.samples;
    let [c, h, w] = op.image_shape();
    let device = model.device();
    Ok(match &cfg.warm_start {
        WarmStart::Baseline => {
            let b = op
                .baseline(y)?
                .to_dtype(candle_core::DType::F32)?
                .to_device(device)?;
            (b.broadcast_as((k, c, h, w))?.contiguous()?, 0)
        }
        WarmStart::Noise => {
            let mut noise = BatchNoise::new(
                seeds::derive(cfg.seed, seeds::WARM_START),
                cfg.first_index,
                k,
            );
            (noise.draw(&[c, h, w], device)?, 0)
        }
        WarmStart::Dps(dcfg) => {
            let out = dps_indexed(
                model,
                schedule,
                op,
                y,
                k,
                dcfg,
                seeds::derive(cfg.seed, seeds::WARM_START),
                cfg.first_index,
                &mut |s, t| progress(Progress::WarmStart { step: s, total: t }),
            )?;
            (out.samples, out.nfe)
        }
        WarmStart::Lgd(lcfg) => lgd_indexed(
            model,
            schedule,
            op,
            y,
            k,
            lcfg,
            seeds::derive(cfg.seed, seeds::WARM_START),
            cfg.first_index,
            &mut |s, t| progress(Progress::WarmStart { step: s, total: t }),
        )?,
        WarmStart::BaselineSign => {
            let b = op
                .baseline(y)?
                .to_dtype(candle_core::DType::F32)?
                .to_device(device)?;
            let b = b.broadcast_as((k, c, h, w))?.contiguous()?;
            let ts = default_energy_timesteps(schedule);
            let candidates = sign_patterns(&b)?;
            let (x0, _) = lowest_energy(
                model,
                schedule,
                &candidates,
                &ts,
                seeds::derive(cfg.seed, seeds::WARM_START),
                cfg.first_index,
            )?;
            (x0, candidates.len() * ts.len())
        }
        WarmStart::Given(x) => {
            let x = x.to_dtype(candle_core::DType::F32)?.to_device(device)?;
            match x.dims() {
                [1, cc, hh, ww] if (*cc, *hh, *ww) == (c, h, w) => (x.broadcast_as((k, c, h, w))?.contiguous()?, 0),
                [b, cc, hh, ww] if *b == k && (*cc, *hh, *ww) == (c, h, w) => (x, 0),
                d => {
                    return invalid(format!(
                        "DPnP start points must have shape (1, {c}, {h}, {w}) or ({k}, {c}, {h}, {w}), got {d:?}"
                    ))
                }
            }
        }
    })
}

/// Runs DPnP: K = `cfg.samples` chains against the measurement `y`, validated by the operator:
/// batch 1 (every chain samples the posterior of the same y) or batch K (chain k samples the
/// posterior of y_k, e.g. K different images reconstructed as one batch). `progress` gets every
/// [`Progress`] event.
pub fn dpnp(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: &Tensor,
    cfg: &DpnpConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<DpnpOutput> {
    let etas = cfg.etas.etas()?;
    let k = cfg.samples;
    if k == 0 {
        return invalid("DPnP needs at least one posterior sample (K ≥ 1)");
    }
    op.validate_measurement(y)?;
    let by = y.dim(0)?;
    if by != 1 && by != k {
        return invalid(format!(
            "DPnP takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    let [c, _, _] = op.image_shape();
    let mut den = Denoiser::new(model, schedule);
    den.check_channels(c)?;
    let (init, warm_nfe) = start_points(model, schedule, op, y, cfg, progress)?;
    // PCS seeds: per chain (by its index in the run) and per outer step.
    let pcs_seed = seeds::derive(cfg.seed, seeds::PCS);
    let chain_seeds = |step: usize| -> Vec<u64> {
        (0..k as u64)
            .map(|i| seeds::derive(seeds::derive(pcs_seed, cfg.first_index + i), step as u64))
            .collect()
    };
    let mut dds_noise = BatchNoise::new(seeds::derive(cfg.seed, seeds::DDS), cfg.first_index, k);
    let mut x = init.clone();
    let total = etas.len();
    let mut steps = Vec::with_capacity(total);
    for (i, &eta) in etas.iter().enumerate() {
        let step = i + 1;
        progress(Progress::Pcs { step, total, eta });
        let p = pcs_seeded(op, y, &x, eta, &cfg.pcs, &chain_seeds(step))?;
        let acceptance = p.acceptance.iter().sum::<f64>() / p.acceptance.len().max(1) as f64;
        let z = p
            .samples
            .to_dtype(candle_core::DType::F32)?
            .to_device(model.device())?;
        x = dds_with_budget(
            &mut den,
            cfg.dds,
            &z,
            eta,
            cfg.dds_steps,
            &mut dds_noise,
            &mut |inner, inner_total| {
                progress(Progress::Dds {
                    step,
                    inner,
                    inner_total,
                })
            },
        )?;
        let info = OuterStep {
            step,
            total,
            eta,
            acceptance,
            nfe: warm_nfe + den.nfe(),
        };
        progress(Progress::Outer(info));
        steps.push(info);
    }
    Ok(DpnpOutput {
        samples: x,
        init,
        nfe: warm_nfe + den.nfe(),
        steps,
    })
}

/// The PCS step-size scale for `op`: the reference's FFHQ values for its reference task
/// (phase retrieval 0.8, one-bit 0.2, super-resolution 0.6), else 1.0.
pub fn default_pcs_scale(op: &dyn Operator) -> f64 {
    match op.reference_task() {
        Some(ReferenceTask::PhaseRetrieval) => 0.8,
        Some(ReferenceTask::OneBit) => 0.2,
        Some(ReferenceTask::SuperResolution) => 0.6,
        _ => 1.0,
    }
}

/// The options of both DPnP variants.
pub const DPNP_OPTIONS: &[OptionSpec] = &[
    crate::pcs::PCS_BACKEND_OPTION,
    OptionSpec::new(
        "outer-steps",
        "DPnP: outer steps K (k_start at η_max, then geometric from η_max to η_min)",
        OptionType::Integer,
        OptionDefault::Integer(16),
    ),
    OptionSpec::new(
        "k-start",
        "DPnP: outer steps held at η_max before the geometric decrease",
        OptionType::Integer,
        OptionDefault::Integer(4),
    ),
    OptionSpec::new("eta-max", "DPnP: largest η", OptionType::Float, OptionDefault::Float(0.4)),
    OptionSpec::new(
        "eta-min",
        "DPnP: smallest (final) η",
        OptionType::Float,
        OptionDefault::Float(0.16),
    ),
    OptionSpec::new(
        "dds-steps",
        "DPnP: at most this many network evaluations per DDS call (default: the full DDIM grid or every usable DDPM timestep; fewer is faster and less accurate)",
        OptionType::Integer,
        OptionDefault::Derived,
    ),
    OptionSpec::new(
        "pcs",
        "DPnP: PCS sampler (mala: Metropolis-adjusted; ula: unadjusted, as the reference code; exact: linear-Gaussian operators only)",
        OptionType::Choice(&["mala", "ula", "exact"]),
        OptionDefault::Choice("mala"),
    ),
    OptionSpec::new(
        "pcs-steps",
        "DPnP: Langevin steps per PCS call",
        OptionType::Integer,
        OptionDefault::Integer(1000),
    ),
    OptionSpec::new(
        "pcs-scale",
        "DPnP: PCS step-size scale (default by operator: the reference's FFHQ values, phase retrieval 0.8, one-bit 0.2, super-resolution 0.6; 1.0 otherwise)",
        OptionType::Float,
        OptionDefault::Derived,
    ),
    OptionSpec::new(
        "pcs-reg",
        "DPnP: PCS step-size regulariser: h = scale·min(m², η²)/(reg + √f(x)) (reference: 50, tuned for 256×256×3 images; small images have a small √f, so a smaller reg moves faster)",
        OptionType::Float,
        OptionDefault::Float(50.0),
    ),
    LIKELIHOOD_TEMPERATURE,
    OptionSpec::new(
        "pcs-m",
        "DPnP: the m of the PCS step-size rule h = scale·min(m², η²)/(reg + √f), f = −2m²L/T (step size only; the reference one-bit configs' `multiplier`, 0.36 FFHQ / 0.38 ImageNet) [default: √T times the likelihood's σ, or τ for one-bit]",
        OptionType::Float,
        OptionDefault::Derived,
    ),
    OptionSpec::new(
        "dds-grid",
        "DPnP: DDS time grid: refined (DDIM: geometric points with each network evaluation at its exact fractional timestep; DDPM: a first fractional step from σ = η) or reference (the reference code's: DDIM skips integer steps above η = 0.3 and snaps inserted points to integer timesteps, 2,423 NFE per run with the default schedule against 2,823; DDPM starts at the first usable integer level)",
        OptionType::Choice(&["refined", "reference"]),
        OptionDefault::Choice("refined"),
    ),
    OptionSpec::new(
        "warm-start",
        "DPnP: start from the classical baseline, pure noise, a DPS run (--dps-steps, --zeta), an LGD-MC run (--lgd-warm-steps, --lgd-zeta, ...; the reference's warm start), the baseline with the per-channel signs the prior prefers (baseline-sign: 2^C candidates scored by denoising energy), or auto (a DPS run for sign-ambiguous operators such as phase retrieval, the baseline otherwise)",
        OptionType::Choice(&["baseline", "noise", "dps", "lgd", "baseline-sign", "auto"]),
        OptionDefault::Choice("baseline"),
    ),
    DPS_STEPS,
    ZETA,
    DPS_MISFIT,
    OptionSpec::new(
        "lgd-warm-steps",
        "DPnP: ancestral DDPM steps of the LGD-MC warm start (reference: 500)",
        OptionType::Integer,
        OptionDefault::Integer(500),
    ),
    LGD_SHARED_OPTIONS[0],
    LGD_SHARED_OPTIONS[1],
    LGD_SHARED_OPTIONS[2],
    LGD_SHARED_OPTIONS[3],
    LGD_SHARED_OPTIONS[4],
];

/// `dpnp-ddim`: DPnP with DDS-DDIM on the refined grid.
pub const DPNP_DDIM: MethodEntry = MethodEntry {
    name: "dpnp-ddim",
    summary: "Diffusion plug-and-play (Xu & Chi 2024) with the DDS-DDIM denoiser",
    options: DPNP_OPTIONS,
    build: |opts, op| {
        Ok(Box::new(DpnpSampler::from_options(
            "dpnp-ddim",
            DdsMethod::Ddim,
            opts,
            op,
        )?))
    },
};

/// `dpnp-ddpm`: DPnP with DDS-DDPM.
pub const DPNP_DDPM: MethodEntry = MethodEntry {
    name: "dpnp-ddpm",
    summary: "Diffusion plug-and-play (Xu & Chi 2024) with the DDS-DDPM denoiser",
    options: DPNP_OPTIONS,
    build: |opts, op| {
        Ok(Box::new(DpnpSampler::from_options(
            "dpnp-ddpm",
            DdsMethod::Ddpm,
            opts,
            op,
        )?))
    },
};

/// DPnP behind the [`PosteriorSampler`] seam (`samples`, `seed` and `first_index` of its
/// config are set per call from [`Chains`]).
pub struct DpnpSampler {
    pub method: &'static str,
    pub cfg: DpnpConfig,
    settings: Value,
}

impl DpnpSampler {
    /// From the [`DPNP_OPTIONS`], with defaults for `op`.
    pub fn from_options(
        method: &'static str,
        dds: DdsMethod,
        opts: &Resolved,
        op: &dyn Operator,
    ) -> Result<Self> {
        let outer_steps = at_least_one("outer-steps", opts.usize("outer-steps")?)?;
        let (eta_max, eta_min) = (opts.f64("eta-max")?, opts.f64("eta-min")?);
        if !(eta_min > 0.0 && eta_max >= eta_min) {
            return invalid(format!(
                "--eta-max and --eta-min must satisfy eta-max ≥ eta-min > 0, got {eta_max} and {eta_min}"
            ));
        }
        let etas = EtaSchedule::annealed(outer_steps, opts.usize("k-start")?, eta_max, eta_min);
        let dds_steps = opts.opt_usize("dds-steps")?;
        if let Some(n) = dds_steps {
            at_least_one("dds-steps", n)?;
        }
        let pcs_steps = at_least_one("pcs-steps", opts.usize("pcs-steps")?)?;
        let pcs_scale = opts
            .opt_f64("pcs-scale")?
            .unwrap_or_else(|| default_pcs_scale(op));
        if pcs_scale <= 0.0 {
            return invalid(format!(
                "--pcs-scale must be a positive number, got {pcs_scale}"
            ));
        }
        let pcs_reg = opts.f64("pcs-reg")?;
        if pcs_reg < 0.0 {
            return invalid(format!(
                "--pcs-reg must be a finite number ≥ 0, got {pcs_reg}"
            ));
        }
        let pcs_name = opts.choice("pcs")?;
        let pcs_method: PcsMethod = pcs_name.parse()?;
        let likelihood_temperature = opts.f64("likelihood-temperature")?;
        if !(likelihood_temperature.is_finite() && likelihood_temperature > 0.0) {
            return invalid(format!(
                "--likelihood-temperature must be a finite number > 0, got {likelihood_temperature}"
            ));
        }
        let pcs_m = opts.opt_f64("pcs-m")?;
        if let Some(m) = pcs_m {
            if !(m.is_finite() && m > 0.0) {
                return invalid(format!("--pcs-m must be a finite number > 0, got {m}"));
            }
        }
        let dds_grid = opts.choice("dds-grid")?;
        let dds = dds.with_reference_grid(dds_grid == "reference");
        // The warm start is not tempered (as the reference: its DPS / LGD-MC guidance knows
        // nothing of the PCS multiplier).
        let dps = DpsConfig {
            temperature: 1.0,
            ..DpsConfig::from_options(opts, op)?
        };
        let warm_name = opts.choice("warm-start")?;
        let warm_name = match warm_name.as_str() {
            "auto" if op.sign_ambiguous() => "dps".to_string(),
            "auto" => "baseline".to_string(),
            _ => warm_name,
        };
        let lgd_steps = at_least_one("lgd-warm-steps", opts.usize("lgd-warm-steps")?)?;
        let lgd = LgdConfig::from_options(opts, op, lgd_steps)?;
        let warm_start = match warm_name.as_str() {
            "noise" => WarmStart::Noise,
            "dps" => WarmStart::Dps(dps.clone()),
            "lgd" => WarmStart::Lgd(lgd.clone()),
            "baseline-sign" => WarmStart::BaselineSign,
            _ => WarmStart::Baseline,
        };
        let k_start = match etas {
            EtaSchedule::Annealed { k_start, .. } => k_start,
            _ => 0,
        };
        let pcs = PcsConfig {
            method: pcs_method,
            steps: pcs_steps,
            scale: pcs_scale,
            reg: pcs_reg,
            temperature: pcs_m,
            likelihood_temperature,
            backend: opts.choice("pcs-backend")?.parse()?,
            ..PcsConfig::default()
        };
        let mut settings = json!({
            "dds": format!("{dds:?}"),
            "dds_grid": dds_grid,
            "likelihood_temperature": likelihood_temperature,
            "pcs_m": step_scale(op, &pcs),
            "outer_steps": outer_steps,
            "k_start": k_start,
            "eta_max": eta_max,
            "eta_min": eta_min,
            "pcs": pcs_name,
            "pcs_steps": pcs_steps,
            "pcs_backend": opts.choice("pcs-backend")?,
            "dds_steps": dds_steps,
            "pcs_scale": pcs_scale,
            "pcs_reg": pcs_reg,
            "warm_start": warm_name,
        });
        if let (Some(s), Value::Object(d)) = (settings.as_object_mut(), dps.settings()) {
            s.extend(d);
        }
        if let (Some(s), Value::Object(d)) =
            (settings.as_object_mut(), lgd.settings("lgd_warm_steps"))
        {
            s.extend(d);
        }
        // The PCS target's T (the DPS warm start's guidance is untempered).
        settings["likelihood_temperature"] = json!(likelihood_temperature);
        Ok(Self {
            method,
            cfg: DpnpConfig {
                etas,
                dds,
                dds_steps,
                pcs,
                warm_start,
                ..DpnpConfig::default()
            },
            settings,
        })
    }
}

impl PosteriorSampler for DpnpSampler {
    fn method(&self) -> &'static str {
        self.method
    }
    fn settings(&self) -> Value {
        self.settings.clone()
    }
    fn total_steps(&self) -> usize {
        self.cfg.etas.etas().map(|v| v.len()).unwrap_or(0)
    }
    fn sample(
        &self,
        p: &Problem,
        chains: &Chains,
        progress: &mut dyn FnMut(MethodProgress),
    ) -> Result<SamplerOutput> {
        let cfg = DpnpConfig {
            samples: chains.count,
            seed: chains.seed,
            first_index: chains.first_index,
            ..self.cfg.clone()
        };
        let out = dpnp(p.model, p.schedule, p.op, p.y, &cfg, &mut |e| {
            progress(match e {
                Progress::WarmStart { step, total } => MethodProgress::Inner {
                    step,
                    total,
                    label: match self.cfg.warm_start {
                        WarmStart::Lgd(_) => "LGD-MC warm start".into(),
                        _ => "DPS warm start".into(),
                    },
                },
                Progress::Pcs { eta, .. } => MethodProgress::Inner {
                    step: 0,
                    total: 0,
                    label: format!("PCS (η = {eta:.3})"),
                },
                Progress::Dds {
                    inner, inner_total, ..
                } => MethodProgress::Inner {
                    step: inner,
                    total: inner_total,
                    label: "DDS".into(),
                },
                Progress::Outer(s) => MethodProgress::Step {
                    step: s.step,
                    total: s.total,
                    status: format!(
                        "η {:.3}  acceptance {:.3}  NFE {}",
                        s.eta, s.acceptance, s.nfe
                    ),
                },
            })
        })?;
        let trace: Vec<Value> = out
            .steps
            .iter()
            .map(
                |s| json!({"step": s.step, "eta": s.eta, "acceptance": s.acceptance, "nfe": s.nfe}),
            )
            .collect();
        Ok(SamplerOutput {
            mean_acceptance: Some(out.mean_acceptance()),
            samples: out.samples,
            nfe: out.nfe,
            backprop: matches!(self.cfg.warm_start, WarmStart::Dps(_) | WarmStart::Lgd(_)),
            trace: json!(trace),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schedule() {
        let v = EtaSchedule::default().etas().unwrap();
        assert_eq!(v.len(), 16);
        assert!(v[..5].iter().all(|&e| e == 0.4));
        assert_eq!(v[15], 0.16);
        // Geometric: constant ratio over the last 12 values.
        let r = (0.16f64 / 0.4).powf(1.0 / 11.0);
        for i in 5..16 {
            assert!((v[i] / v[i - 1] - r).abs() < 1e-12);
        }
        assert!(EtaSchedule::Constant { eta: 0.0, steps: 3 }.etas().is_err());
        assert!(EtaSchedule::Constant { eta: 0.3, steps: 0 }.etas().is_err());
        assert!(EtaSchedule::Annealed {
            eta_max: 0.1,
            eta_min: 0.2,
            k_start: 1,
            k: 3
        }
        .etas()
        .is_err());
        assert!(EtaSchedule::Custom(vec![0.3, f64::NAN]).etas().is_err());
        assert_eq!(
            EtaSchedule::Annealed {
                eta_max: 0.4,
                eta_min: 0.2,
                k_start: 1,
                k: 1
            }
            .etas()
            .unwrap(),
            vec![0.4, 0.2]
        );
    }

    #[test]
    fn reference_run_network_evaluations() {
        // The spec's estimate for the reference schedule on the linear-β, T = 1000 schedule is
        // ≈ 1,400 (DDS-DDPM) score evaluations per DPnP run. For DDS-DDIM it says ≈ 2,400 (the
        // reference code skips steps at large η); the refined grid used here (whose per-η sizes
        // match the spec's 123 / 203 / 291 at η = 0.1 / 0.4 / 0.8) makes 2,823.
        let s = Schedule::ddpm_default();
        let etas = EtaSchedule::default().etas().unwrap();
        let total = |m| {
            etas.iter()
                .map(|&e| crate::dds::dds_nfe(&s, m, e).unwrap())
                .sum::<usize>()
        };
        let (ddim, ddpm) = (total(DdsMethod::Ddim), total(DdsMethod::Ddpm));
        let (ddim_ref, ddpm_ref) = (
            total(DdsMethod::DdimReference),
            total(DdsMethod::DdpmReference),
        );
        eprintln!(
            "reference DPnP run: {ddim} NFE with DDS-DDIM ({ddim_ref} on the reference grid), \
             {ddpm} with DDS-DDPM ({ddpm_ref} from the first integer level)"
        );
        assert_eq!(ddim, 2823);
        // The reference code's grid, as the issue and `scripts/gen_dds_grid_fixture.py` count.
        assert_eq!(ddim_ref, 2423);
        // One fractional first step per outer step.
        assert_eq!(ddpm, ddpm_ref + etas.len());
        assert!((1300..1500).contains(&ddpm), "{ddpm}");
    }
}
