//! DiffPIR — denoising diffusion models for plug-and-play image restoration (Zhu et al.,
//! CVPR workshops (NTIRE) 2023; reference code `yuanzhi-zhu/DiffPIR`, `main_ddpir_sisr.py` /
//! `main_ddpir_deblur.py` / `main_ddpir_inpainting.py`, and deepinv's `DiffPIR` in
//! `deepinv/sampling/diffusion.py`).
//!
//! Over a decreasing sequence of training timesteps t_0 = T−1 > … > t_{N−1} = 0, one step is
//! ```text
//! x₀    = x̂₀(x_t)                                     (the network's clean estimate)
//! x̂₀   = argmin_x  −L(x; y) + (μ_t/2)‖x − x₀‖²         (data step, μ_t = λ/(4σ̄_t²))
//! ε̂    = (x_t − sqrt(ᾱ_t) x̂₀) / sqrt(1 − ᾱ_t)
//! x_{t'} = sqrt(ᾱ_{t'}) x̂₀ + sqrt(1 − ᾱ_{t'}) (sqrt(1 − ζ) ε̂ + sqrt(ζ) z),   z ~ N(0, I)
//! ```
//! with t' the next timestep and σ̄_t = sqrt((1 − ᾱ_t)/ᾱ_t). The last step (t = 0) only
//! ends the loop: the result is x at t_{N−1} = 0.
//!
//! **Data step.** The reference solves x̂₀ = argmin ‖y − Ax‖² + ρ_t‖x − x₀‖² with
//! ρ_t = λσ_n²/σ̄_t², σ_n the noise level in its [0, 1] image units, i.e. σ_n = σ_y/2 for the
//! [-1, 1] units of genprior. Divided by 2σ_y² that is −L(x; y) + (μ_t/2)‖x − x₀‖² with
//! μ_t = ρ_t/σ_y² = λ/(4σ̄_t²), which is how it is solved here for every likelihood:
//! - linear operator, Gaussian likelihood: (AᵀA/σ² + μ_t I) x = Aᵀy/σ² + μ_t x₀, exactly —
//!   by the operator's direct solver (`solve_shifted_gram_host`: masks, FFT blur, denoising)
//!   where it has one, else by conjugate gradients (relative residual 1e-10);
//! - otherwise (phase retrieval, one-bit, …): `diffpir-grad-steps` gradient steps on that
//!   objective, each starting at the step 1/μ_t (the reference's first-order solver takes one
//!   such step, `x0 − ∇½‖y − A(x0)‖²/ρ_t`) and halved until the objective decreases by the
//!   Armijo condition (the unsafeguarded 1/μ_t step diverges at large t, where μ_t is tiny).
//!
//! **Schedule.** The reference's `skip_type = 'quad'`: seq_i = ⌊sqrt(i·T²/(N−1))⌋ for
//! i = 0..N−1, the last one reduced by 1, and t_i = T−1−seq_i (so the steps crowd near t = 0).
//! Repeated timesteps (N close to T) are kept, as in the reference.
//!
//! **Defaults.** N = 100 steps (`iter_num`, both references); ζ = 0.1 (`configs/sisr.yaml`,
//! `configs/deblur.yaml`, deepinv's default) except on inpainting operators, 1.0
//! (`configs/inpaint.yaml`); λ = 7 (deepinv's default and the paper's recommended value; the
//! reference scripts sweep λ). deepinv's prox call
//! `prox(x0, gamma = 1/(2ρ_t))` with its L2 fidelity solves (AᵀA + 2ρ_t) x = Aᵀy + 2ρ_t x₀, so
//! deepinv's λ is the reference's (and genprior's) 2λ.
//!
//! **Deviations.** (1) The start is x_{t_0} = sqrt(1 − ᾱ_{t_0}) z: the reference adds
//! sqrt(ᾱ_{t_0})·(an upsampled measurement), a term of weight 0.006 at T = 1000 that would tie the
//! start to a task-specific baseline. (2) The reference evaluates the network once more at the
//! last step and discards the result; genprior skips that evaluation (NFE = N − 1 for
//! distinct timesteps; the output is the same). (3) x̂₀ is clipped when the schedule clips
//! (`clip_sample`), as for DPS, rather than always. (4) The reference's optional DDIM η
//! (default 0) and guidance scale (default 1) are not exposed.
//!
//! Randomness: one [`BatchNoise`] stream per chain (index `first_index + i`) draws x_{t_0} and
//! then one z per non-final step, so a run split over several calls equals one call.
//! [`diffpir_from`] takes the start and the draws explicitly instead (and reports each step's
//! state): [`diffpir`] is it with the start above and the chains' streams.
//!
//! **deepinv parity.** deepinv 0.5.0's `DiffPIR` with `DiffusersDenoiserWrapper` follows the
//! same step rule on the same quadratic grid, in [0, 1] image units, and differs only by
//! conventions: its λ is half genprior's (above); it starts from x_{t_0} = sqrt(ᾱ_{t_0})
//! (2Aᵀy₀₁ − 1 + sqrt(σ̄²_{t_0} − 4σ_n²) z) with y₀₁, σ_n the [0, 1]-unit measurement and noise
//! σ (pass that start to [`diffpir_from`]); it always clips x̂₀ (genprior: when the schedule
//! clips, which diffusers' DDPM configs do); it evaluates the network at the last step and
//! discards the result; and its ᾱ table is always the linear-β DDPM one (1e-4..0.02,
//! T = 1000) whatever the model's schedule (genprior uses the model's). With those matched,
//! `tests/deepinv_parity.rs` reproduces deepinv's recorded trajectories (denoise, inpainting,
//! circular blur, box SR; ζ = 0 and ζ = 0.5 with its recorded draws) to 1e-4, from fixtures
//! of `scripts/gen_deepinv_fixtures.py`.

use candle_core::{DType, Tensor};
use genprior_diffusion::BatchNoise;
use genprior_inverse::host::{from_host, to_host};
use genprior_inverse::linalg::{norm2, shifted_gram_cg};
use genprior_inverse::{Operator, ReferenceTask};
use serde_json::{json, Value};

use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{at_least_one, OptionDefault, OptionSpec, OptionType, Resolved};
use crate::seeds;

/// Sub-seed tag of DiffPIR's noise streams (distinct from the tags in `seeds`).
const SEED_TAG: u64 = 0x4449_4650_4952; // "DIFPIR"

/// Relative residual of the conjugate-gradient data step.
const CG_TOL: f64 = 1e-10;

/// How the data step is solved (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStep {
    /// Linear-Gaussian with the operator's direct solver of (αAᵀA + βI)x = b.
    Direct,
    /// Linear-Gaussian by conjugate gradients.
    ConjugateGradient,
    /// Armijo gradient steps on −L + (μ/2)‖x − x₀‖².
    Gradient,
}

impl DataStep {
    /// `Direct` when `op` is linear-Gaussian and has a direct solver, `ConjugateGradient` when
    /// it is linear-Gaussian without one, `Gradient` otherwise.
    pub fn for_operator(op: &dyn Operator) -> Self {
        if !op.is_linear_gaussian() {
            return Self::Gradient;
        }
        let probe = vec![0.0; op.image_len()];
        match op.solve_shifted_gram_host(&probe, 1.0, 1.0) {
            Some(_) => Self::Direct,
            None => Self::ConjugateGradient,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::ConjugateGradient => "conjugate-gradient",
            Self::Gradient => "gradient",
        }
    }
}

/// The default ζ for `op`: the reference's inpainting value 1.0 (`configs/inpaint.yaml`) on
/// inpainting operators, its SR/deblur value 0.1 otherwise.
pub fn default_zeta(op: &dyn Operator) -> f64 {
    match op.reference_task() {
        Some(ReferenceTask::Inpainting) => 1.0,
        _ => 0.1,
    }
}

/// DiffPIR settings.
#[derive(Debug, Clone)]
pub struct DiffpirConfig {
    /// Sampling steps N (≥ 2; reference 100).
    pub steps: usize,
    /// λ of ρ_t = λσ_n²/σ̄_t² (reference units; μ_t = λ/(4σ̄_t²)).
    pub lambda: f64,
    /// ζ ∈ [0, 1]: the share of fresh noise in the re-noising step.
    pub zeta: f64,
    /// Gradient steps of the data step where it has no closed form.
    pub grad_steps: usize,
    pub data_step: DataStep,
}

impl DiffpirConfig {
    /// The reference settings for `op`: 100 steps, λ = 7, ζ = [`default_zeta`], 5 gradient
    /// steps.
    pub fn for_operator(op: &dyn Operator) -> Self {
        Self {
            steps: 100,
            lambda: 7.0,
            zeta: default_zeta(op),
            grad_steps: 5,
            data_step: DataStep::for_operator(op),
        }
    }

    /// From the [`DIFFPIR_OPTIONS`].
    pub fn from_options(opts: &Resolved, op: &dyn Operator) -> Result<Self> {
        let cfg = Self {
            steps: opts.usize("diffpir-steps")?,
            lambda: opts.f64("diffpir-lambda")?,
            zeta: opts
                .opt_f64("diffpir-zeta")?
                .unwrap_or_else(|| default_zeta(op)),
            grad_steps: at_least_one("diffpir-grad-steps", opts.usize("diffpir-grad-steps")?)?,
            data_step: DataStep::for_operator(op),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.steps < 2 {
            return invalid(format!(
                "--diffpir-steps must be at least 2 (the last step only ends the loop), got {}",
                self.steps
            ));
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return invalid(format!(
                "--diffpir-lambda must be a finite number > 0, got {}",
                self.lambda
            ));
        }
        if !(0.0..=1.0).contains(&self.zeta) {
            return invalid(format!(
                "--diffpir-zeta must lie in [0, 1], got {}",
                self.zeta
            ));
        }
        if self.grad_steps == 0 {
            return invalid("--diffpir-grad-steps must be at least 1");
        }
        Ok(())
    }

    /// The settings as report fields.
    pub fn settings(&self) -> Value {
        json!({
            "diffpir_steps": self.steps,
            "diffpir_lambda": self.lambda,
            "diffpir_zeta": self.zeta,
            "diffpir_grad_steps": self.grad_steps,
            "diffpir_data_step": self.data_step.label(),
            "diffpir_skip": "quad",
        })
    }
}

pub const DIFFPIR_STEPS: OptionSpec = OptionSpec {
    name: "diffpir-steps",
    help: "DiffPIR: sampling steps on the reference's quadratic timestep grid (one network evaluation each but the last)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(100),
};
pub const DIFFPIR_LAMBDA: OptionSpec = OptionSpec {
    name: "diffpir-lambda",
    help: "DiffPIR: λ of the data-step weight ρ_t = λσ_n²/σ̄_t² (reference units; deepinv's λ is half of it)",
    kind: OptionType::Float,
    default: OptionDefault::Float(7.0),
};
pub const DIFFPIR_ZETA: OptionSpec = OptionSpec {
    name: "diffpir-zeta",
    help: "DiffPIR: ζ in [0, 1], the share of fresh noise when re-noising (0: deterministic; default by operator: the reference's inpainting 1.0, otherwise its SR/deblur 0.1)",
    kind: OptionType::Float,
    default: OptionDefault::Derived,
};
pub const DIFFPIR_GRAD_STEPS: OptionSpec = OptionSpec {
    name: "diffpir-grad-steps",
    help: "DiffPIR: gradient steps of the data step on tasks without a closed form (nonlinear or non-Gaussian)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(5),
};

/// Every option DiffPIR declares.
pub const DIFFPIR_OPTIONS: &[OptionSpec] = &[
    DIFFPIR_STEPS,
    DIFFPIR_LAMBDA,
    DIFFPIR_ZETA,
    DIFFPIR_GRAD_STEPS,
];

/// The registry entry.
pub const DIFFPIR: MethodEntry = MethodEntry {
    name: "diffpir",
    summary: "DiffPIR (Zhu et al. 2023): diffusion sampling with a proximal data step on x̂₀ and partial re-noising",
    options: DIFFPIR_OPTIONS,
    build: |opts, op| {
        Ok(Box::new(DiffpirSampler {
            cfg: DiffpirConfig::from_options(opts, op)?,
        }))
    },
};

/// DiffPIR behind the [`PosteriorSampler`] seam.
pub struct DiffpirSampler {
    pub cfg: DiffpirConfig,
}

impl PosteriorSampler for DiffpirSampler {
    fn method(&self) -> &'static str {
        "diffpir"
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
        let (samples, nfe) = diffpir(p, chains, &self.cfg, progress)?;
        Ok(SamplerOutput::new(samples, nfe, false))
    }
}

/// The reference's quadratic timestep sequence t_0 = T−1 > … > t_{N−1} = 0 (see the module
/// docs); `steps ≥ 2`.
pub fn diffpir_timesteps(num_train_timesteps: usize, steps: usize) -> Result<Vec<usize>> {
    let t = num_train_timesteps;
    if steps < 2 || t < 2 {
        return invalid(format!(
            "DiffPIR needs at least 2 steps and 2 training timesteps, got {steps} and {t}"
        ));
    }
    // np.sqrt(np.linspace(0, T**2, N)), truncated, last entry − 1.
    let step = (t * t) as f64 / (steps - 1) as f64;
    let mut seq: Vec<usize> = (0..steps)
        .map(|i| {
            let v = if i == steps - 1 {
                (t * t) as f64
            } else {
                i as f64 * step
            };
            v.sqrt() as usize
        })
        .collect();
    seq[steps - 1] -= 1;
    Ok(seq.into_iter().map(|s| t - 1 - s.min(t - 1)).collect())
}

/// μ_t = λ/(4σ̄_t²) = λᾱ_t/(4(1 − ᾱ_t)), the precision of the data step's proximal term.
pub fn data_step_precision(lambda: f64, alpha_bar: f64) -> f64 {
    lambda * alpha_bar / (4.0 * (1.0 - alpha_bar))
}

/// The data step for one image: argmin_x −L(x; y) + (μ/2)‖x − x0‖², solved as `step` says
/// (`grad_steps` is used by [`DataStep::Gradient`] only). `aty` is Aᵀy (linear operators;
/// computed when `None`).
pub fn proximal_step(
    op: &dyn Operator,
    step: DataStep,
    y: &[f64],
    aty: Option<&[f64]>,
    x0: &[f64],
    mu: f64,
    grad_steps: usize,
) -> Result<Vec<f64>> {
    if !(mu.is_finite() && mu > 0.0) {
        return invalid(format!(
            "DiffPIR data step: the proximal weight must be positive, got {mu}"
        ));
    }
    match step {
        DataStep::Direct | DataStep::ConjugateGradient => {
            let s = op.temperature();
            if !(s.is_finite() && s > 0.0) {
                return invalid(format!(
                    "DiffPIR needs a positive likelihood σ on task `{}`, got {s}",
                    op.name()
                ));
            }
            let a = 1.0 / (s * s);
            let owned;
            let aty = match aty {
                Some(v) => v,
                None => {
                    owned = op.adjoint_host(y)?;
                    &owned
                }
            };
            let rhs: Vec<f64> = aty.iter().zip(x0).map(|(g, z)| a * g + mu * z).collect();
            let direct = if step == DataStep::Direct {
                op.solve_shifted_gram_host(&rhs, a, mu)
            } else {
                None
            };
            let x = match direct {
                Some(r) => r?,
                None => {
                    shifted_gram_cg(op, &rhs, |g, v| a * g + mu * v, CG_TOL, 4 * rhs.len() + 100)?
                }
            };
            Ok(x)
        }
        DataStep::Gradient => gradient_prox(op, y, x0, mu, grad_steps),
    }
}

/// `steps` Armijo-backtracked gradient steps on G(x) = −L(x; y) + (μ/2)‖x − x0‖² from x0,
/// each trying 1/μ first (the reference's step) and halving until
/// G(x − h∇G) ≤ G(x) − (h/2)‖∇G‖².
fn gradient_prox(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    mu: f64,
    steps: usize,
) -> Result<Vec<f64>> {
    let objective = |x: &[f64], l: f64| -> f64 {
        let d: f64 = x.iter().zip(x0).map(|(a, b)| (a - b) * (a - b)).sum();
        -l + 0.5 * mu * d
    };
    let mut x = x0.to_vec();
    let (mut l, mut g) = op.log_likelihood_and_grad_host(&x, y)?;
    for _ in 0..steps {
        // ∇G = −∇L + μ(x − x0)
        let grad: Vec<f64> = g
            .iter()
            .zip(&x)
            .zip(x0)
            .map(|((gi, xi), zi)| -gi + mu * (xi - zi))
            .collect();
        let gn = norm2(&grad);
        if gn == 0.0 || !gn.is_finite() {
            break;
        }
        let g_now = objective(&x, l);
        let mut h = 1.0 / mu;
        let mut accepted = None;
        for _ in 0..80 {
            let cand: Vec<f64> = x.iter().zip(&grad).map(|(xi, gi)| xi - h * gi).collect();
            let (lc, gc) = op.log_likelihood_and_grad_host(&cand, y)?;
            let gc_obj = objective(&cand, lc);
            if gc_obj.is_finite() && gc_obj <= g_now - 0.5 * h * gn {
                accepted = Some((cand, lc, gc));
                break;
            }
            h *= 0.5;
        }
        match accepted {
            Some((cand, lc, gc)) => {
                x = cand;
                l = lc;
                g = gc;
            }
            None => break,
        }
    }
    Ok(x)
}

/// Runs DiffPIR for `chains` on `p` (measurement batch 1, shared, or one per chain).
/// Returns the `(count, C, H, W)` samples and the network evaluations.
pub fn diffpir(
    p: &Problem,
    chains: &Chains,
    cfg: &DiffpirConfig,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    cfg.validate()?;
    let k = chains.count;
    if k == 0 {
        return invalid("DiffPIR needs at least one chain");
    }
    let t_train = p.schedule.num_train_timesteps();
    if cfg.steps > t_train {
        return invalid(format!(
            "--diffpir-steps ({}) cannot exceed the schedule's {t_train} training timesteps",
            cfg.steps
        ));
    }
    let [c, h, w] = p.op.image_shape();
    let device = p.model.device().clone();
    let ts = diffpir_timesteps(t_train, cfg.steps)?;
    let mut noise = BatchNoise::new(seeds::derive(chains.seed, SEED_TAG), chains.first_index, k);
    let ab0 = p.schedule.alpha_bar(ts[0])?;
    let start = noise
        .draw(&[c, h, w], &device)?
        .affine((1.0 - ab0).sqrt(), 0.0)?;
    diffpir_from(
        p,
        cfg,
        start,
        &mut |_, x| Ok(noise.draw_like(x)?),
        &mut |_, _| {},
        progress,
    )
}

/// DiffPIR from an explicit start x_{t_0} (`(K, C, H, W)`, VP-scaled, [-1, 1] image units)
/// with the re-noising draws taken from `noise(i, x)` (a standard normal tensor shaped like
/// `x`, called once per non-final step `i`, after its data step, even when ζ = 0), and
/// `observe(i, x_{t_i})` called with the state each step starts from (`i = 0, …, N − 1`, the last
/// one being the result). [`diffpir`] is this function with x_{t_0} = sqrt(1 − ᾱ_{t_0}) z and the
/// draws of the chains' noise streams; other starts (deepinv's, the reference's) and recorded
/// noise come in here (see the module docs).
pub fn diffpir_from(
    p: &Problem,
    cfg: &DiffpirConfig,
    start: Tensor,
    noise: &mut dyn FnMut(usize, &Tensor) -> Result<Tensor>,
    observe: &mut dyn FnMut(usize, &Tensor),
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    cfg.validate()?;
    let op = p.op;
    let [c, h, w] = op.image_shape();
    let k = start.dim(0)?;
    if k == 0 || start.dims() != [k, c, h, w] {
        return invalid(format!(
            "DiffPIR's start must have shape (K ≥ 1, {c}, {h}, {w}), got {:?}",
            start.dims()
        ));
    }
    let (by, ys) = op.measurement_to_host(p.y)?;
    if by != 1 && by != k {
        return invalid(format!(
            "DiffPIR takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    let t_train = p.schedule.num_train_timesteps();
    if cfg.steps > t_train {
        return invalid(format!(
            "--diffpir-steps ({}) cannot exceed the schedule's {t_train} training timesteps",
            cfg.steps
        ));
    }
    let (n, m) = (op.image_len(), op.measurement_len());
    let mut den = Denoiser::new(p.model, p.schedule);
    den.check_channels(c)?;
    let ts = diffpir_timesteps(t_train, cfg.steps)?;
    let last_t = ts[ts.len() - 1];
    // Aᵀy once per measurement (linear-Gaussian data steps).
    let atys: Vec<Vec<f64>> = match cfg.data_step {
        DataStep::Gradient => Vec::new(),
        _ => ys
            .chunks_exact(m)
            .map(|yj| op.adjoint_host(yj))
            .collect::<std::result::Result<_, _>>()?,
    };
    let mut x = start.to_dtype(DType::F32)?;
    let total = ts.len();
    for (i, &t) in ts.iter().enumerate() {
        observe(i, &x);
        if t == last_t {
            // The reference's last iteration: no data step and no re-noising; x is the result.
            progress(MethodProgress::Step {
                step: i + 1,
                total,
                status: format!("t = {t}"),
            });
            continue;
        }
        let ab = p.schedule.alpha_bar(t)?;
        let raw = den.raw(&x, t as f64)?;
        let (x0, _) = den.interpret(&raw, &x, ab)?;
        let mu = data_step_precision(cfg.lambda, ab);
        let x0h = to_host(&x0)?;
        let mut out = Vec::with_capacity(k * n);
        for (j, zj) in x0h.chunks_exact(n).enumerate() {
            let yi = if by == 1 { 0 } else { j };
            let yj = &ys[yi * m..(yi + 1) * m];
            let aty = atys.get(yi).map(|v| v.as_slice());
            out.extend(proximal_step(
                op,
                cfg.data_step,
                yj,
                aty,
                zj,
                mu,
                cfg.grad_steps,
            )?);
        }
        let x0 = from_host(out, x.dims(), x.device(), DType::F32)?;
        let ab_next = p.schedule.alpha_bar(ts[i + 1])?;
        let eps = ((&x - x0.affine(ab.sqrt(), 0.0)?)? / (1.0 - ab).sqrt())?;
        let z = noise(i, &x)?;
        if z.dims() != x.dims() {
            return invalid(format!(
                "DiffPIR's noise for step {i} has shape {:?}, expected {:?}",
                z.dims(),
                x.dims()
            ));
        }
        let z = z.to_dtype(DType::F32)?;
        let s_next = (1.0 - ab_next).sqrt();
        x = (x0.affine(ab_next.sqrt(), 0.0)?
            + eps.affine(s_next * (1.0 - cfg.zeta).sqrt(), 0.0)?
            + z.affine(s_next * cfg.zeta.sqrt(), 0.0)?)?;
        progress(MethodProgress::Step {
            step: i + 1,
            total,
            status: format!("t = {t}, μ = {mu:.3e}"),
        });
    }
    Ok((x, den.nfe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadratic_timesteps_match_the_reference_grid() {
        // np.sqrt(np.linspace(0, 1000**2, 100)).astype(int), last − 1, then 999 − seq.
        let ts = diffpir_timesteps(1000, 100).unwrap();
        assert_eq!(ts.len(), 100);
        assert_eq!(ts[0], 999);
        // seq_1 = int(sqrt(1e6/99)) = int(100.503...) = 100.
        assert_eq!(ts[1], 899);
        // seq_50 = int(sqrt(50e6/99)) = int(710.669...) = 710.
        assert_eq!(ts[50], 289);
        // seq_98 = int(sqrt(98e6/99)) = int(994.937...) = 994.
        assert_eq!(ts[98], 5);
        assert_eq!(ts[99], 0);
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(diffpir_timesteps(1000, 2).unwrap(), vec![999, 0]);
        assert!(diffpir_timesteps(1000, 1).is_err());
        // Close to T the grid repeats timesteps, as the reference's does.
        let dense = diffpir_timesteps(10, 10).unwrap();
        assert_eq!(dense.first(), Some(&9));
        assert_eq!(dense.last(), Some(&0));
        assert!(dense.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn precision_is_lambda_over_four_sigma_bar_squared() {
        let ab: f64 = 0.36;
        let sbar2 = (1.0 - ab) / ab;
        assert!((data_step_precision(7.0, ab) - 7.0 / (4.0 * sbar2)).abs() < 1e-12);
    }
}
