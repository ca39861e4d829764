//! DPS — diffusion posterior sampling (Chung et al., ICLR 2023), the baseline.
//!
//! Ancestral DDPM over `steps` inference steps (the schedule's `ddpm_plan`, the full chain at
//! 1000); after each step
//! ```text
//! x_{i−1} ← x'_{i−1} − ζ ∇_{x_i} misfit(x̂₀(x_i))
//! ```
//! where x'_{i−1} is the plain DDPM step and x̂₀ the network's (clipped when the schedule
//! clips) clean-image estimate. The gradient goes through the network by candle's autograd
//! as a vector–Jacobian product: the misfit's gradient g at x̂₀ is computed by the operator
//! on the host, then `(x̂₀ · g).sum()` is backpropagated to x_i (a `candle_core::Var`).
//!
//! Misfits ([`DpsMisfit`]), with f(x) = −2m²L(x; y) and m the operator's likelihood
//! temperature (so f = ‖y − A(x)‖² for Gaussian tasks):
//! - `Norm`: sqrt(f) = ‖y − A(x̂₀)‖, the reference's non-squared norm (Gaussian tasks);
//!   ∇ = −m² ∇L / sqrt(f).
//! - `NegLogLik`: the negative log-likelihood −L, for non-Gaussian tasks (`one-bit`), with
//!   its step scaled by m/sqrt(M) (M = measurement size): for a Gaussian likelihood at a
//!   typical residual ‖y − Ax‖ ≈ σ sqrt(M) the two forms then take the same step, so the
//!   per-task ζ values mean the same thing.
//! - `MeanNegLogLik`: −L/M, the mean loss the DPnP reference code's DPS uses on one-bit
//!   (`torch.mean(log(1 + exp(−y x̂₀/τ)))`, ζ = 100 in `configs/quantization_*_dps.yaml`).
//!
//! `--dps-misfit` picks one (`auto`: `Norm` for Gaussian likelihoods, `NegLogLik` otherwise).
//! A likelihood temperature T (`--likelihood-temperature`, default 1) divides the guidance
//! gradient (the misfit of L/T), i.e. ζ/T.
//!
//! Default ζ ([`default_zeta`]): the reference's SR 0.3, deblur 0.3, inpainting 0.5, phase
//! retrieval 1.0; genprior's choices for the others: cs 0.3 and denoise 0.3 (linear Gaussian
//! like SR/deblur), one-bit 0.5 (pixelwise like inpainting).

use candle_core::{Tensor, Var};
use genprior_diffusion::{BatchNoise, Schedule, ScoreModel};
use genprior_inverse::{Operator, ReferenceTask};

use serde_json::{json, Value};

use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{at_least_one, OptionDefault, OptionSpec, OptionType, Resolved};
use crate::pcs::{device_operator, PcsBackend};
use crate::seeds;
use genprior_inverse::device::DeviceOperator;

/// The data-misfit DPS descends (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpsMisfit {
    /// ‖y − A(x̂₀)‖ (generally sqrt(−2m²L)).
    Norm,
    /// −L, step scaled by m/sqrt(M).
    NegLogLik,
    /// −L/M (the reference code's one-bit DPS loss).
    MeanNegLogLik,
}

impl DpsMisfit {
    /// `Norm` for Gaussian likelihoods, `NegLogLik` otherwise (`one-bit`).
    pub fn for_operator(op: &dyn Operator) -> Self {
        if op.noise().is_gaussian() {
            Self::Norm
        } else {
            Self::NegLogLik
        }
    }

    /// From the `dps-misfit` option (`auto`: [`DpsMisfit::for_operator`]).
    pub fn from_choice(choice: &str, op: &dyn Operator) -> Result<Self> {
        Ok(match choice {
            "auto" => Self::for_operator(op),
            "norm" => Self::Norm,
            "neg-log-lik" => Self::NegLogLik,
            "mean-neg-log-lik" => Self::MeanNegLogLik,
            o => {
                return invalid(format!(
                "unknown DPS misfit `{o}`; expected auto, norm, neg-log-lik or mean-neg-log-lik"
            ))
            }
        })
    }
}

/// The default step size ζ for `op` (see the module docs): the reference's value for its
/// reference task, else 0.3 for Gaussian likelihoods and 0.5 otherwise.
pub fn default_zeta(op: &dyn Operator) -> f64 {
    match op.reference_task() {
        Some(ReferenceTask::SuperResolution | ReferenceTask::Deblur) => 0.3,
        Some(ReferenceTask::Inpainting | ReferenceTask::OneBit) => 0.5,
        Some(ReferenceTask::PhaseRetrieval) => 1.0,
        None if op.sign_ambiguous() => 1.0,
        None if op.noise().is_gaussian() => 0.3,
        None => 0.5,
    }
}

/// DPS settings.
#[derive(Debug, Clone)]
pub struct DpsConfig {
    /// Ancestral DDPM steps (reference: 1000).
    pub steps: usize,
    /// Step size ζ.
    pub zeta: f64,
    pub misfit: DpsMisfit,
    /// Likelihood temperature T: the guidance is the misfit gradient of L/T (1: untempered).
    pub temperature: f64,
    /// Where the likelihood gradient runs: on the model's device through the operator's
    /// device form (no host round trip per step), or on the host (see [`PcsBackend`]).
    pub backend: PcsBackend,
}

impl DpsConfig {
    /// The reference settings for `op`: 1000 steps, the default ζ and misfit.
    pub fn for_operator(op: &dyn Operator) -> Self {
        Self {
            steps: 1000,
            zeta: default_zeta(op),
            misfit: DpsMisfit::for_operator(op),
            temperature: 1.0,
            backend: PcsBackend::Auto,
        }
    }

    /// From the options `dps-steps` and `zeta` (ζ: `default_zeta` when absent).
    pub fn from_options(opts: &Resolved, op: &dyn Operator) -> Result<Self> {
        let zeta = opts.opt_f64("zeta")?.unwrap_or_else(|| default_zeta(op));
        if !(zeta.is_finite() && zeta >= 0.0) {
            return invalid(format!("--zeta must be a finite number ≥ 0, got {zeta}"));
        }
        let temperature = opts.f64("likelihood-temperature")?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return invalid(format!(
                "--likelihood-temperature must be a finite number > 0, got {temperature}"
            ));
        }
        Ok(Self {
            steps: at_least_one("dps-steps", opts.usize("dps-steps")?)?,
            zeta,
            misfit: DpsMisfit::from_choice(&opts.choice("dps-misfit")?, op)?,
            temperature,
            backend: opts.choice("pcs-backend")?.parse()?,
        })
    }

    /// The settings as report fields.
    pub fn settings(&self) -> Value {
        json!({
            "dps_steps": self.steps,
            "zeta": self.zeta,
            "dps_misfit": format!("{:?}", self.misfit),
            "likelihood_temperature": self.temperature,
            "pcs_backend": format!("{:?}", self.backend).to_lowercase(),
        })
    }
}

/// `dps-steps` and `zeta`, shared with DPnP's DPS warm start.
pub const DPS_STEPS: OptionSpec = OptionSpec {
    name: "dps-steps",
    help: "DPS (method or warm start): ancestral DDPM steps",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(1000),
};
pub const ZETA: OptionSpec = OptionSpec {
    name: "zeta",
    help: "DPS step size ζ (default by operator: the reference's SR/deblur 0.3, inpainting 0.5, phase retrieval 1.0, one-bit 0.5; otherwise 0.3 for Gaussian likelihoods, 0.5 for others)",
    kind: OptionType::Float,
    default: OptionDefault::Derived,
};

pub const DPS_MISFIT: OptionSpec = OptionSpec {
    name: "dps-misfit",
    help: "DPS (method or warm start): the misfit descended: norm ‖y − A(x̂₀)‖ (the DPS paper), neg-log-lik −L scaled by m/√M, mean-neg-log-lik −L/M (the DPnP reference code's one-bit DPS), or auto (norm for Gaussian likelihoods, neg-log-lik otherwise)",
    kind: OptionType::Choice(&["auto", "norm", "neg-log-lik", "mean-neg-log-lik"]),
    default: OptionDefault::Choice("auto"),
};
/// The likelihood temperature T, shared with DPnP (where it tempers the PCS target).
pub const LIKELIHOOD_TEMPERATURE: OptionSpec = OptionSpec {
    name: "likelihood-temperature",
    help: "Likelihood temperature T: the target uses L(x; y)/T (DPnP: the PCS target, MALA, ULA and exact; for a Gaussian likelihood the posterior at noise variance σ²·T; DPS: its guidance gradient, i.e. ζ/T; not the DPnP warm start, as the reference). 1 = untempered; the reference one-bit configs use 2m² = 0.2592 (FFHQ) / 0.2888 (ImageNet) with --pcs-m m",
    kind: OptionType::Float,
    default: OptionDefault::Float(1.0),
};

/// The registry entry.
pub const DPS: MethodEntry = MethodEntry {
    name: "dps",
    summary: "Diffusion Posterior Sampling (Chung et al. 2023): ancestral DDPM with a likelihood gradient through the network",
    options: &[
        DPS_STEPS,
        ZETA,
        DPS_MISFIT,
        LIKELIHOOD_TEMPERATURE,
        crate::pcs::PCS_BACKEND_OPTION,
    ],
    build: |opts, op| {
        Ok(Box::new(DpsSampler {
            cfg: DpsConfig::from_options(opts, op)?,
        }))
    },
};

/// DPS behind the [`PosteriorSampler`] seam.
pub struct DpsSampler {
    pub cfg: DpsConfig,
}

impl PosteriorSampler for DpsSampler {
    fn method(&self) -> &'static str {
        "dps"
    }
    fn settings(&self) -> Value {
        self.cfg.settings()
    }
    fn total_steps(&self) -> usize {
        self.cfg.steps
    }
    fn sample(
        &self,
        p: &Problem,
        chains: &Chains,
        progress: &mut dyn FnMut(MethodProgress),
    ) -> Result<SamplerOutput> {
        let out = dps_indexed(
            p.model,
            p.schedule,
            p.op,
            p.y,
            chains.count,
            &self.cfg,
            chains.seed,
            chains.first_index,
            &mut |step, total| {
                progress(MethodProgress::Step {
                    step,
                    total,
                    status: String::new(),
                })
            },
        )?;
        Ok(SamplerOutput::new(out.samples, out.nfe, true))
    }
}

/// DPS result.
#[derive(Debug, Clone)]
pub struct DpsOutput {
    /// `(K, C, H, W)` samples.
    pub samples: Tensor,
    /// Network evaluations (batched forward passes; each is followed by one backward pass).
    pub nfe: usize,
}

/// Per-chain misfit gradient at x̂₀ (shaped like `x0`) from the operator's ∇L.
fn misfit_grad(
    op: &dyn Operator,
    x0: &Tensor,
    y: &Tensor,
    misfit: DpsMisfit,
    temperature: f64,
) -> Result<Tensor> {
    let (ls, g) = op.log_likelihood_and_grad(x0, y)?;
    let m = op.temperature();
    let inv_t = 1.0 / temperature;
    let coef: Vec<f32> = match misfit {
        DpsMisfit::Norm => ls
            .iter()
            .map(|&l| {
                let f = -2.0 * m * m * l;
                if f > 0.0 && f.is_finite() {
                    (-m * m / f.sqrt() * inv_t) as f32
                } else {
                    0.0
                }
            })
            .collect(),
        DpsMisfit::NegLogLik => {
            let s = -(m / (op.measurement_len() as f64).sqrt()) * inv_t;
            vec![s as f32; ls.len()]
        }
        DpsMisfit::MeanNegLogLik => {
            let s = -1.0 / op.measurement_len() as f64 * inv_t;
            vec![s as f32; ls.len()]
        }
    };
    let b = coef.len();
    let coef = Tensor::from_vec(coef, (b, 1, 1, 1), x0.device())?;
    Ok(g.to_dtype(candle_core::DType::F32)?
        .to_device(x0.device())?
        .broadcast_mul(&coef)?)
}

/// [`misfit_grad`] through the operator's device form: the same coefficients as tensor ops
/// on the chains' device, so nothing comes back to the host.
fn misfit_grad_device(
    dop: &DeviceOperator<'_>,
    x0: &Tensor,
    misfit: DpsMisfit,
    temperature: f64,
) -> Result<Tensor> {
    let op = dop.operator();
    let (l, g) = dop.log_likelihood_and_grad(&x0.to_dtype(dop.dtype())?)?;
    let b = l.dim(0)?;
    let m = op.temperature();
    let inv_t = 1.0 / temperature;
    let coef = match misfit {
        DpsMisfit::Norm => {
            // −m²/√f with f = −2m²L where f > 0, else 0 (as the host path).
            let f = (&l * (-2.0 * m * m))?;
            let pos = f.gt(0.0)?;
            let root = pos.where_cond(&f, &f.ones_like()?)?.sqrt()?;
            let c = (root.recip()? * (-m * m * inv_t))?;
            pos.where_cond(&c, &c.zeros_like()?)?
        }
        DpsMisfit::NegLogLik => {
            let s = -(m / (op.measurement_len() as f64).sqrt()) * inv_t;
            (l.ones_like()? * s)?
        }
        DpsMisfit::MeanNegLogLik => {
            let s = -1.0 / op.measurement_len() as f64 * inv_t;
            (l.ones_like()? * s)?
        }
    };
    Ok(g.broadcast_mul(&coef.reshape((b, 1, 1, 1))?)?
        .to_dtype(candle_core::DType::F32)?)
}

/// Runs DPS for `k` chains against `y`: batch 1 (shared by all chains) or batch k (chain i
/// against y_i). All randomness (x_T and
/// the step noise) from `seed`. `progress(step, total)` after every step.
#[allow(clippy::too_many_arguments)]
pub fn dps(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: &Tensor,
    k: usize,
    cfg: &DpsConfig,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DpsOutput> {
    dps_indexed(model, schedule, op, y, k, cfg, seed, 0, progress)
}

/// [`dps`] for chains `first_index ..` of the run `seed` (chain i uses noise stream
/// `first_index + i`, so a run split over several calls gives the same chains).
#[allow(clippy::too_many_arguments)]
pub fn dps_indexed(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: &Tensor,
    k: usize,
    cfg: &DpsConfig,
    seed: u64,
    first_index: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DpsOutput> {
    if k == 0 {
        return invalid("DPS needs at least one sample");
    }
    if cfg.steps == 0 {
        return invalid("DPS needs at least one step");
    }
    if !(cfg.zeta.is_finite() && cfg.zeta >= 0.0) {
        return invalid(format!(
            "DPS step size ζ must be a finite number ≥ 0, got {}",
            cfg.zeta
        ));
    }
    let (by, ys) = op.measurement_to_host(y)?;
    if by != 1 && by != k {
        return invalid(format!(
            "DPS takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    if !(cfg.temperature.is_finite() && cfg.temperature > 0.0) {
        return invalid(format!(
            "DPS likelihood temperature must be a finite number > 0, got {}",
            cfg.temperature
        ));
    }
    let device_form = device_operator(op, &ys, by, model.device(), cfg.backend, None, true)?;
    let mut guidance = |_: usize, x0: &Tensor| match &device_form {
        Some(dop) => misfit_grad_device(dop, x0, cfg.misfit, cfg.temperature),
        None => misfit_grad(op, x0, y, cfg.misfit, cfg.temperature),
    };
    let (samples, nfe) = guided_ddpm(
        model,
        schedule,
        op.image_shape(),
        k,
        cfg.steps,
        cfg.zeta,
        (seed, first_index),
        &mut guidance,
        progress,
    )?;
    Ok(DpsOutput { samples, nfe })
}

/// The guided DDPM loop of the DPS-type methods (DPS, LGD-MC): x_T and the DDPM noise from
/// DPS's streams (chains `first_index ..` of the run `seed`), and at each step i the DDPM
/// update of x_t minus ζ·∇_{x_t}⟨x̂₀(x_t), g⟩ through the network, where
/// `guidance(i, x̂₀)` gives g (the gradient of the method's loss with respect to x̂₀, treated
/// as a constant). Returns the `(k, C, H, W)` samples and the network evaluations.
#[allow(clippy::too_many_arguments)]
pub(crate) fn guided_ddpm(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    [c, h, w]: [usize; 3],
    k: usize,
    steps: usize,
    zeta: f64,
    (seed, first_index): (u64, u64),
    guidance: &mut dyn FnMut(usize, &Tensor) -> Result<Tensor>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Tensor, usize)> {
    let mut den = Denoiser::new(model, schedule);
    den.check_channels(c)?;
    let device = model.device().clone();
    let plan = schedule.ddpm_plan(steps)?;
    let mut noise = BatchNoise::new(seeds::derive(seed, seeds::DPS), first_index, k);
    let mut x = noise.draw(&[c, h, w], &device)?;
    let n = plan.len();
    for (i, pair) in plan.iter().enumerate() {
        let ab = schedule.alpha_bar(pair.t)?;
        let xv = Var::from_tensor(&x)?;
        let raw = den.raw(xv.as_tensor(), pair.t as f64)?;
        let (x0, _) = den.interpret(&raw, xv.as_tensor(), ab)?;
        let z = if pair.t > 0 {
            Some(noise.draw_like(&x)?)
        } else {
            None
        };
        let x_prev = schedule
            .ddpm_step(&raw.detach(), pair.t, pair.prev, &x, z.as_ref())?
            .prev_sample;
        let g = guidance(i, &x0.detach())?;
        let loss = (x0 * g)?.sum_all()?;
        let grads = loss.backward()?;
        x = match grads.get(xv.as_tensor()) {
            Some(gx) => (x_prev - gx.affine(zeta, 0.0)?)?,
            None => x_prev,
        };
        progress(i + 1, n);
    }
    Ok((x, den.nfe()))
}
