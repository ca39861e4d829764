//! RED-diff — regularisation by denoising with a diffusion prior, the variational method of
//! Mardani, Song, Kautz & Vahdat, "A Variational Perspective on Solving Inverse Problems with
//! Diffusion Models", ICLR 2024; reference code `NVlabs/RED-diff` (`algos/reddiff.py`,
//! `_configs/algo/reddiff.yaml`) and InverseBench (`devzhk/InverseBench`, `algo/reddiff.py`,
//! `configs/algorithm/reddiff.yaml`), whose image defaults genprior follows.
//!
//! A point μ (one per chain) is optimised by Adam over a sweep of timesteps t from T−1 down
//! to 0; at each t, with a fresh ε ~ N(0, I),
//! ```text
//! x_t  = sqrt(ᾱ_t) μ + sqrt(1 − ᾱ_t) ε
//! ∇    = w_obs ∇_μ f(μ) + λ_t (sg[ε̂(x_t, t)] − ε)
//! μ    ← Adam(μ, ∇)      (β = (0.9, 0.99), ε_Adam = 1e-8, learning rate `reddiff-lr`)
//! ```
//! i.e. one Adam step on f(μ) + λ_t (sg[ε̂ − ε])ᵀ μ: no backpropagation through the network
//! (the bracket is a constant). The data term is f(μ) = −2m² L(μ; y), m the operator's
//! likelihood temperature: for a Gaussian likelihood exactly the reference's
//! ‖A(μ) − y‖² (summed over the measurement, as InverseBench's `forward_op.loss`), and for the
//! others (one-bit) the scaled negative log-likelihood, so it runs on every differentiable
//! task (phase retrieval included). Its gradient is the operator's
//! `log_likelihood_and_grad_host`.
//!
//! λ_t = λ · ω(σ_t), σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) (the reference's inverse square-root SNR):
//! ω = 1 (`constant`, InverseBench's image default), σ_t (`linear`, NVlabs' default) or
//! sqrt(σ_t) (`sqrt`).
//!
//! **Output.** RED-diff returns the optimised μ, a point estimate (a regularised
//! maximum-a-posteriori-like reconstruction), not a posterior sample: different chains differ
//! only through their ε draws (and, with `reddiff-init baseline`, not through their start),
//! so their spread is not a posterior uncertainty.
//!
//! **Defaults** (InverseBench `configs/algorithm/reddiff.yaml`, images): 1000 steps,
//! learning rate 0.02, λ = 0.25 with constant weighting, observation weight 1, μ initialised
//! at 0 (InverseBench; NVlabs starts from the pseudo-inverse H⁺y: `reddiff-init baseline`
//! starts from the task's classical baseline instead).
//!
//! **Deviations.** (1) The time sweep: InverseBench sweeps its continuous VP time uniformly
//! from 1 to 10⁻³ (its β_min = 0.1, β_d = 19.9, the continuous form of the DDPM linear
//! schedule); genprior sweeps the model schedule's own training timesteps uniformly from T−1
//! to 0 (fractional where N ≠ T; every integer timestep at N = T = 1000), so ᾱ_t always comes
//! from the model's schedule. (2) ε̂ is recomputed from a clipped x̂₀ when the schedule clips
//! (`clip_sample`), as elsewhere in genprior. (3) NVlabs' extra knobs (`sigma_x0`, `cond_awd`,
//! η) are at their defaults (0, off, unused by the update) and not exposed.
//!
//! Randomness: one [`BatchNoise`] stream per chain (index `first_index + i`) draws one ε per
//! step, so a run split over several calls equals one call.

use candle_core::{DType, Tensor};
use genprior_diffusion::BatchNoise;
use genprior_inverse::host::{from_host, to_host};
use serde_json::{json, Value};

use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{at_least_one, OptionDefault, OptionSpec, OptionType, Resolved};
use crate::seeds;

/// Sub-seed tag of RED-diff's noise streams (distinct from the tags in `seeds`).
const SEED_TAG: u64 = 0x5245_4444_4946; // "REDDIF"

/// Adam's moment decay rates (the references' `betas=(0.9, 0.99)`) and ε.
pub const ADAM_BETAS: (f64, f64) = (0.9, 0.99);
pub const ADAM_EPS: f64 = 1e-8;

/// The weighting ω(σ_t) of λ_t = λ ω(σ_t).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    Constant,
    Linear,
    Sqrt,
}

impl Weighting {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "sqrt" => Ok(Self::Sqrt),
            _ => invalid(format!(
                "--reddiff-weighting must be constant, linear or sqrt, got `{s}`"
            )),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Linear => "linear",
            Self::Sqrt => "sqrt",
        }
    }
    /// ω(σ).
    pub fn weight(self, sigma: f64) -> f64 {
        match self {
            Self::Constant => 1.0,
            Self::Linear => sigma,
            Self::Sqrt => sigma.sqrt(),
        }
    }
}

/// Where μ starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// μ = 0 (InverseBench).
    Zeros,
    /// μ = the task's classical baseline reconstruction (NVlabs uses the pseudo-inverse).
    Baseline,
}

impl Init {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "zeros" => Ok(Self::Zeros),
            "baseline" => Ok(Self::Baseline),
            _ => invalid(format!(
                "--reddiff-init must be zeros or baseline, got `{s}`"
            )),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::Zeros => "zeros",
            Self::Baseline => "baseline",
        }
    }
}

/// RED-diff settings.
#[derive(Debug, Clone)]
pub struct ReddiffConfig {
    /// Adam steps, one network evaluation each (reference 1000).
    pub steps: usize,
    /// Adam learning rate (reference 0.02).
    pub lr: f64,
    /// λ of λ_t = λ ω(σ_t) (reference 0.25).
    pub lambda: f64,
    pub weighting: Weighting,
    /// Weight of the data term (reference 1).
    pub obs_weight: f64,
    pub init: Init,
}

impl Default for ReddiffConfig {
    /// The reference settings.
    fn default() -> Self {
        Self {
            steps: 1000,
            lr: 0.02,
            lambda: 0.25,
            weighting: Weighting::Constant,
            obs_weight: 1.0,
            init: Init::Zeros,
        }
    }
}

impl ReddiffConfig {
    /// From the [`REDDIFF_OPTIONS`].
    pub fn from_options(opts: &Resolved) -> Result<Self> {
        let cfg = Self {
            steps: at_least_one("reddiff-steps", opts.usize("reddiff-steps")?)?,
            lr: opts.f64("reddiff-lr")?,
            lambda: opts.f64("reddiff-lambda")?,
            weighting: Weighting::parse(&opts.choice("reddiff-weighting")?)?,
            obs_weight: opts.f64("reddiff-obs-weight")?,
            init: Init::parse(&opts.choice("reddiff-init")?)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return invalid("--reddiff-steps must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid(format!(
                "--reddiff-lr must be a finite number > 0, got {}",
                self.lr
            ));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return invalid(format!(
                "--reddiff-lambda must be a finite number ≥ 0, got {}",
                self.lambda
            ));
        }
        if !(self.obs_weight.is_finite() && self.obs_weight >= 0.0) {
            return invalid(format!(
                "--reddiff-obs-weight must be a finite number ≥ 0, got {}",
                self.obs_weight
            ));
        }
        Ok(())
    }

    /// The settings as report fields.
    pub fn settings(&self) -> Value {
        json!({
            "reddiff_steps": self.steps,
            "reddiff_lr": self.lr,
            "reddiff_lambda": self.lambda,
            "reddiff_weighting": self.weighting.label(),
            "reddiff_obs_weight": self.obs_weight,
            "reddiff_init": self.init.label(),
            "reddiff_adam_betas": [ADAM_BETAS.0, ADAM_BETAS.1],
            "reddiff_adam_eps": ADAM_EPS,
            "reddiff_data_term": "-2 m^2 L(mu; y) (= ||y - A(mu)||^2 for Gaussian likelihoods)",
            "reddiff_time_sweep": "uniform in training timesteps, T-1 to 0",
            "reddiff_output": "the optimised point mu (not a posterior sample)",
        })
    }
}

pub const REDDIFF_STEPS: OptionSpec = OptionSpec {
    name: "reddiff-steps",
    help: "RED-diff: Adam steps over the timestep sweep T−1 → 0 (one network evaluation each, no backward pass)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(1000),
};
pub const REDDIFF_LR: OptionSpec = OptionSpec {
    name: "reddiff-lr",
    help: "RED-diff: Adam learning rate",
    kind: OptionType::Float,
    default: OptionDefault::Float(0.02),
};
pub const REDDIFF_LAMBDA: OptionSpec = OptionSpec {
    name: "reddiff-lambda",
    help: "RED-diff: λ, the weight of the denoising regulariser λ_t = λ·ω(σ_t)",
    kind: OptionType::Float,
    default: OptionDefault::Float(0.25),
};
pub const REDDIFF_WEIGHTING: OptionSpec = OptionSpec {
    name: "reddiff-weighting",
    help: "RED-diff: ω(σ_t) of λ_t: constant (InverseBench), linear σ_t (NVlabs) or sqrt(σ_t)",
    kind: OptionType::Choice(&["constant", "linear", "sqrt"]),
    default: OptionDefault::Choice("constant"),
};
pub const REDDIFF_OBS_WEIGHT: OptionSpec = OptionSpec {
    name: "reddiff-obs-weight",
    help: "RED-diff: weight of the data term −2m²L(μ; y) (‖y − A(μ)‖² for Gaussian likelihoods)",
    kind: OptionType::Float,
    default: OptionDefault::Float(1.0),
};
pub const REDDIFF_INIT: OptionSpec = OptionSpec {
    name: "reddiff-init",
    help: "RED-diff: the start of μ: zeros (InverseBench) or the task's classical baseline",
    kind: OptionType::Choice(&["zeros", "baseline"]),
    default: OptionDefault::Choice("zeros"),
};

/// Every option RED-diff declares.
pub const REDDIFF_OPTIONS: &[OptionSpec] = &[
    REDDIFF_STEPS,
    REDDIFF_LR,
    REDDIFF_LAMBDA,
    REDDIFF_WEIGHTING,
    REDDIFF_OBS_WEIGHT,
    REDDIFF_INIT,
];

/// The registry entry.
pub const REDDIFF: MethodEntry = MethodEntry {
    name: "reddiff",
    summary: "RED-diff (Mardani et al. 2024): Adam on the data misfit plus a diffusion denoising regulariser; returns a point estimate",
    options: REDDIFF_OPTIONS,
    build: |opts, _op| {
        Ok(Box::new(ReddiffSampler {
            cfg: ReddiffConfig::from_options(opts)?,
        }))
    },
};

/// RED-diff behind the [`PosteriorSampler`] seam.
pub struct ReddiffSampler {
    pub cfg: ReddiffConfig,
}

impl PosteriorSampler for ReddiffSampler {
    fn method(&self) -> &'static str {
        "reddiff"
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
        let (samples, nfe) = reddiff(p, chains, &self.cfg, progress)?;
        Ok(SamplerOutput::new(samples, nfe, false))
    }
}

/// The sweep t_0 = T−1 > … > t_{N−1} = 0, uniform in training time (t_0 = T−1 when N = 1).
pub fn reddiff_timesteps(num_train_timesteps: usize, steps: usize) -> Result<Vec<f64>> {
    if steps == 0 || num_train_timesteps == 0 {
        return invalid("RED-diff needs at least one step and one training timestep");
    }
    let last = (num_train_timesteps - 1) as f64;
    Ok((0..steps)
        .map(|i| {
            if steps == 1 {
                return last;
            }
            let v = last * (steps - 1 - i) as f64 / (steps - 1) as f64;
            // Exactly integer when steps − 1 divides T − 1 (e.g. N = T), despite round-off.
            let r = v.round();
            if (v - r).abs() < 1e-9 {
                r
            } else {
                v
            }
        })
        .collect())
}

/// Adam state of one parameter vector (torch's `Adam`, no weight decay).
#[derive(Debug, Clone)]
pub struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    k: i32,
    lr: f64,
}

impl Adam {
    pub fn new(len: usize, lr: f64) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
            k: 0,
            lr,
        }
    }

    /// One step x ← x − lr m̂/(sqrt(v̂) + ε) for gradient `g`.
    pub fn step(&mut self, x: &mut [f64], g: &[f64]) {
        let (b1, b2) = ADAM_BETAS;
        self.k += 1;
        let c1 = 1.0 - b1.powi(self.k);
        let c2 = 1.0 - b2.powi(self.k);
        for i in 0..x.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            let denom = (self.v[i] / c2).sqrt() + ADAM_EPS;
            x[i] -= self.lr * (self.m[i] / c1) / denom;
        }
    }
}

/// Runs RED-diff for `chains` on `p` (measurement batch 1, shared, or one per chain). Returns
/// the `(count, C, H, W)` optimised points μ and the network evaluations.
pub fn reddiff(
    p: &Problem,
    chains: &Chains,
    cfg: &ReddiffConfig,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    cfg.validate()?;
    let k = chains.count;
    if k == 0 {
        return invalid("RED-diff needs at least one chain");
    }
    let op = p.op;
    let (by, ys) = op.measurement_to_host(p.y)?;
    if by != 1 && by != k {
        return invalid(format!(
            "RED-diff takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    let temp = op.temperature();
    if !(temp.is_finite() && temp > 0.0) {
        return invalid(format!(
            "RED-diff needs a positive likelihood temperature on task `{}`, got {temp}",
            op.name()
        ));
    }
    let data_scale = -2.0 * temp * temp * cfg.obs_weight;
    let [c, h, w] = op.image_shape();
    let (n, m) = (op.image_len(), op.measurement_len());
    let mut den = Denoiser::new(p.model, p.schedule);
    den.check_channels(c)?;
    let device = p.model.device().clone();
    let ts = reddiff_timesteps(p.schedule.num_train_timesteps(), cfg.steps)?;
    let y_of = |j: usize| {
        let yi = if by == 1 { 0 } else { j };
        &ys[yi * m..(yi + 1) * m]
    };
    let mut mu: Vec<f64> = match cfg.init {
        Init::Zeros => vec![0.0; k * n],
        Init::Baseline => {
            let mut v = Vec::with_capacity(k * n);
            for j in 0..k {
                v.extend(op.baseline_host(y_of(j))?);
            }
            v
        }
    };
    let mut adams: Vec<Adam> = (0..k).map(|_| Adam::new(n, cfg.lr)).collect();
    let mut noise = BatchNoise::new(seeds::derive(chains.seed, SEED_TAG), chains.first_index, k);
    let dims = [k, c, h, w];
    let total = ts.len();
    for (i, &t) in ts.iter().enumerate() {
        let ab = p.schedule.alpha_bar_at(t)?;
        let sigma = ((1.0 - ab) / ab).sqrt();
        let lam = cfg.lambda * cfg.weighting.weight(sigma);
        let eps = noise.draw(&[c, h, w], &device)?;
        let mu_t = from_host(mu.clone(), &dims, &device, DType::F32)?;
        let xt = (mu_t.affine(ab.sqrt(), 0.0)? + eps.affine((1.0 - ab).sqrt(), 0.0)?)?;
        let eps_hat = den.eps(&xt, t, ab)?;
        let reg = to_host(&(eps_hat - &eps)?)?;
        let mut misfit = 0.0;
        for j in 0..k {
            let mj = &mut mu[j * n..(j + 1) * n];
            let (l, gl) = op.log_likelihood_and_grad_host(mj, y_of(j))?;
            misfit += -2.0 * temp * temp * l;
            let g: Vec<f64> = gl
                .iter()
                .zip(&reg[j * n..(j + 1) * n])
                .map(|(a, r)| data_scale * a + lam * r)
                .collect();
            adams[j].step(mj, &g);
        }
        progress(MethodProgress::Step {
            step: i + 1,
            total,
            status: format!(
                "t = {t:.1}, λ_t = {lam:.3e}, misfit = {:.3e}",
                misfit / k as f64
            ),
        });
    }
    let out = from_host(mu, &dims, &device, DType::F32)?;
    Ok((out, den.nfe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_is_uniform_from_the_last_timestep_to_zero() {
        let ts = reddiff_timesteps(1000, 1000).unwrap();
        assert_eq!(ts.len(), 1000);
        assert!(ts.iter().enumerate().all(|(i, &t)| t == (999 - i) as f64));
        let ts = reddiff_timesteps(1000, 4).unwrap();
        assert_eq!(ts, vec![999.0, 666.0, 333.0, 0.0]);
        let ts = reddiff_timesteps(1000, 7).unwrap();
        assert!((ts[1] - 832.5).abs() < 1e-12 && ts[6] == 0.0);
        assert_eq!(reddiff_timesteps(1000, 1).unwrap(), vec![999.0]);
        assert!(reddiff_timesteps(1000, 0).is_err());
    }

    #[test]
    fn adam_matches_a_hand_computed_step() {
        // First step: m̂ = g, v̂ = g², so x moves by lr·g/(|g| + ε) = lr·sign(g).
        let mut a = Adam::new(2, 0.1);
        let mut x = [1.0, -2.0];
        a.step(&mut x, &[3.0, -0.5]);
        assert!((x[0] - 0.9).abs() < 1e-7 && (x[1] + 1.9).abs() < 1e-7);
        // Second step with g = (1, 1): m = 0.9·0.1·g1 + 0.1·g2 etc.
        let x1 = x[0];
        a.step(&mut x, &[1.0, 1.0]);
        let m0 = 0.9 * 0.3 + 0.1;
        let v0 = 0.99 * 0.01 * 9.0 + 0.01;
        let want0 = x1 - 0.1 * (m0 / 0.19) / ((v0 / (1.0 - 0.99f64.powi(2))).sqrt() + 1e-8);
        assert!((x[0] - want0).abs() < 1e-12, "{} vs {want0}", x[0]);
    }
}
