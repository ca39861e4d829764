//! DDRM — denoising diffusion restoration models (Kawar, Elad, Ermon & Song, NeurIPS 2022;
//! reference code `bahjat-kawar/ddrm`, `functions/denoising.py`
//! `efficient_generalized_steps`, and deepinv's `DDRM` in `deepinv/sampling/diffusion.py`).
//!
//! DDRM runs a DDIM-like chain in the spectral basis of A = U S Vᵀ ([`OperatorSvd`]):
//! x̄ = Vᵀx, ȳ_i = (Uᵀy)_i / s_i where s_i > 0, σ_0 the likelihood's noise σ, and the
//! variance-exploding noise level σ_t = sqrt(1 − ᾱ_t)/sqrt(ᾱ_t). Over timesteps
//! t_0 > t_1 > … > t_{N−1} (and t_N = "−1" with ᾱ = 1, σ = 0), one step from t to t' is
//! ```text
//! x̂₀ = x̂₀(x_t), ε̂ = ε̂(x_t)                (one network evaluation), x̄₀ = Vᵀx̂₀, ε̄ = Vᵀε̂
//! per spectral coordinate i, with c = sqrt(1 − η²) and z ~ N(0, 1):
//!   s_i = 0                 x̄'_i = x̄₀_i + c σ_t' ε̄_i + η σ_t' z_i
//!   s_i σ_t' < σ_0          x̄'_i = x̄₀_i + c σ_t' (Uᵀy − s x̄₀)_i / σ_0 + η σ_t' z_i
//!   s_i σ_t' > σ_0          x̄'_i = η_b ȳ_i + (1 − η_b) x̄₀_i + sqrt(σ_t'² − η_b² σ_0²/s_i²) z_i
//!   (s_i σ_t' = σ_0 falls through to the first case, as in the reference)
//! x_t' = sqrt(ᾱ_t') V x̄'
//! ```
//! and the start is x̄_{t_0,i} = ȳ_i + sqrt(σ_{t_0}² − σ_0²/s_i²) z_i where s_i σ_{t_0} > σ_0,
//! σ_{t_0} z_i elsewhere, x_{t_0} = sqrt(ᾱ_{t_0}) V x̄_{t_0}. At the last step σ_{t'} = 0, so
//! the result is x̂₀ at t_{N−1} = 0 (exactly the reference's output).
//!
//! **Timesteps.** The reference's `skip = T // N`, `seq = range(0, T, skip)` visited in
//! reverse: t_i = (N − 1 − i)·skip (950, 900, …, 0 for N = 20, T = 1000). When N does not
//! divide T the reference's `range` has more than N entries (31 for N = 30); genprior keeps
//! the N largest-to-smallest entries i·skip, i < N, so NFE = N always (identical whenever
//! N divides T). deepinv's `DDRM` instead takes a grid of denoiser σ's in its [0, 1] units
//! (default `linspace(1, 0, 100)`); genprior follows the reference's integer timesteps. The
//! step rule itself is the same in both (deepinv's cases `case2`/`case3` are the reference's
//! "after"/"before").
//!
//! **Defaults.** N = 20 (`--timesteps 20` in the reference's README), η = 0.85 (`--eta`),
//! η_b = 1 (`--etaB`); the reference uses η for both its `etaA` and `etaC`, as here.
//!
//! **Units.** genprior images are in [-1, 1], as the reference's (which doubles its
//! `--sigma_0` from [0, 1] units), so σ_0 is the operator's likelihood σ (the noise σ unless
//! `--likelihood-sigma` overrides it) as is. deepinv works in [0, 1] images x₀₁ = (x + 1)/2,
//! where every σ (σ_0 and its denoiser σ's) is half of genprior's.
//!
//! **Deviations.** (1) The start is scaled by sqrt(ᾱ_{t_0}) — the VP scaling the rest of the
//! chain uses; the reference divides by σ_{t_0} instead, a factor 1/sqrt(1 − ᾱ_{t_0}) larger
//! (1 + 4·10⁻⁵ at t_0 = 950 of the linear schedule). (2) deepinv treats singular values
//! s ≤ σ_0 as zero; genprior follows the reference (only exact zeros of the SVD are the null
//! space). (3) x̂₀ is clipped when the schedule clips (`clip_sample`), as for DPS and DiffPIR;
//! the reference never clips. (4) The reference draws separate normals for each of its three
//! cases; genprior draws one N(0, I) vector over the spectral space per step (as deepinv).
//!
//! Randomness: one [`BatchNoise`] stream per chain (index `first_index + i`) draws the start
//! and then one spectral vector per step but the last, so a run split over several calls
//! equals one call. [`ddrm_from_noise`] takes those vectors explicitly instead.

use candle_core::{DType, Tensor};
use genprior_diffusion::BatchNoise;
use genprior_inverse::host::{from_host, to_host};
use genprior_inverse::{Operator, OperatorSvd};
use serde_json::{json, Value};

use crate::denoiser::Denoiser;
use crate::error::{invalid, unsupported, Result};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{OptionDefault, OptionSpec, OptionType, Resolved};
use crate::seeds;

/// Sub-seed tag of DDRM's noise streams.
const SEED_TAG: u64 = 0x4444_524D; // "DDRM"

/// The SVD of `op` and its likelihood σ_0, or the error naming the task and what `method`
/// needs: a linear operator with a Gaussian likelihood and a known SVD.
pub fn require_svd<'a>(method: &str, op: &'a dyn Operator) -> Result<(&'a dyn OperatorSvd, f64)> {
    let needs = "a linear operator with a Gaussian likelihood and a known SVD \
                 (denoise, inpaint-*, deblur-*, sr*, small cs, single-coil mri)";
    if !op.is_linear_gaussian() {
        let why = if op.is_linear() {
            "its likelihood is not Gaussian"
        } else {
            "it is nonlinear"
        };
        return unsupported(method, op, format!("{needs}; {why}"));
    }
    let Some(svd) = op.svd() else {
        return unsupported(method, op, format!("{needs}; it has none"));
    };
    let sigma = op.temperature();
    if !(sigma.is_finite() && sigma >= 0.0) {
        return invalid(format!(
            "{method}: the likelihood σ of task `{}` must be finite and ≥ 0, got {sigma}",
            op.name()
        ));
    }
    Ok((svd, sigma))
}

/// The measurement batch of `p` in spectral form: Uᵀy per measurement, and the batch size
/// (1, shared by all chains, or the chain count `k`).
pub fn spectral_measurements(
    method: &str,
    p: &Problem,
    svd: &dyn OperatorSvd,
    k: usize,
) -> Result<(Vec<Vec<f64>>, usize)> {
    let (by, ys) = p.op.measurement_to_host(p.y)?;
    if by != 1 && by != k {
        return invalid(format!(
            "{method} takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    let m = p.op.measurement_len();
    let uty = ys
        .chunks_exact(m)
        .map(|y| svd.u_adjoint(y))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((uty, by))
}

/// DDRM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DdrmConfig {
    /// Sampling steps N (network evaluations), 1 ≤ N ≤ T.
    pub steps: usize,
    /// η ∈ [0, 1]: the share of fresh noise (the reference's `etaA` = `etaC`).
    pub eta: f64,
    /// η_b ∈ [0, 1]: the pull towards ȳ where the measurement is less noisy than x_t.
    pub eta_b: f64,
}

impl Default for DdrmConfig {
    /// The reference's 20 steps, η = 0.85, η_b = 1.
    fn default() -> Self {
        Self {
            steps: 20,
            eta: 0.85,
            eta_b: 1.0,
        }
    }
}

impl DdrmConfig {
    /// From the [`DDRM_OPTIONS`].
    pub fn from_options(opts: &Resolved) -> Result<Self> {
        let cfg = Self {
            steps: opts.usize("ddrm-steps")?,
            eta: opts.f64("ddrm-eta")?,
            eta_b: opts.f64("ddrm-eta-b")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return invalid("--ddrm-steps must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return invalid(format!("--ddrm-eta must lie in [0, 1], got {}", self.eta));
        }
        if !(0.0..=1.0).contains(&self.eta_b) {
            return invalid(format!(
                "--ddrm-eta-b must lie in [0, 1], got {}",
                self.eta_b
            ));
        }
        Ok(())
    }

    /// The settings as report fields.
    pub fn settings(&self) -> Value {
        json!({
            "ddrm_steps": self.steps,
            "ddrm_eta": self.eta,
            "ddrm_eta_b": self.eta_b,
            "ddrm_skip": "uniform",
        })
    }
}

pub const DDRM_STEPS: OptionSpec = OptionSpec {
    name: "ddrm-steps",
    help: "DDRM: sampling steps on the reference's uniform timestep grid (one network evaluation each)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(20),
};
pub const DDRM_ETA: OptionSpec = OptionSpec {
    name: "ddrm-eta",
    help: "DDRM: η in [0, 1], the share of fresh noise in each step",
    kind: OptionType::Float,
    default: OptionDefault::Float(0.85),
};
pub const DDRM_ETA_B: OptionSpec = OptionSpec {
    name: "ddrm-eta-b",
    help: "DDRM: η_b in [0, 1], the pull towards the measurement on components less noisy than x_t",
    kind: OptionType::Float,
    default: OptionDefault::Float(1.0),
};

/// Every option DDRM declares.
pub const DDRM_OPTIONS: &[OptionSpec] = &[DDRM_STEPS, DDRM_ETA, DDRM_ETA_B];

/// The registry entry.
pub const DDRM: MethodEntry = MethodEntry {
    name: "ddrm",
    summary: "DDRM (Kawar et al. 2022): variational diffusion sampling in the SVD basis of a linear-Gaussian operator",
    options: DDRM_OPTIONS,
    build: |opts, op| {
        require_svd("ddrm", op)?;
        Ok(Box::new(DdrmSampler {
            cfg: DdrmConfig::from_options(opts)?,
        }))
    },
};

/// DDRM behind the [`PosteriorSampler`] seam.
pub struct DdrmSampler {
    pub cfg: DdrmConfig,
}

impl PosteriorSampler for DdrmSampler {
    fn method(&self) -> &'static str {
        "ddrm"
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
        let (samples, nfe) = ddrm(p, chains, &self.cfg, progress)?;
        Ok(SamplerOutput::new(samples, nfe, false))
    }
}

/// The reference's timesteps t_i = (N − 1 − i)·⌊T/N⌋, i = 0..N−1 (see the module docs).
pub fn ddrm_timesteps(num_train_timesteps: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > num_train_timesteps {
        return invalid(format!(
            "--ddrm-steps ({steps}) must lie in [1, {num_train_timesteps}] (the schedule's training timesteps)"
        ));
    }
    let skip = num_train_timesteps / steps;
    Ok((0..steps).rev().map(|i| i * skip).collect())
}

/// Standard-normal draws a DDRM run of `steps` steps takes per chain: the start and one per
/// step but the last (each a `(chains, C, H, W)` spectral vector).
pub fn ddrm_noise_draws(steps: usize) -> usize {
    steps
}

/// Runs DDRM for `chains` on `p` (measurement batch 1, shared, or one per chain).
/// Returns the `(count, C, H, W)` samples and the network evaluations.
pub fn ddrm(
    p: &Problem,
    chains: &Chains,
    cfg: &DdrmConfig,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    let (k, mut draw) = stream_draws("DDRM", p, chains, SEED_TAG)?;
    ddrm_core(p, cfg, k, &mut draw, progress)
}

/// DDRM with its noise given: `z_init` the start's spectral normals and `z_steps[i]` those of
/// step i + 1 (there are `steps − 1`), each `(K, C, H, W)` for K chains, laid out as the SVD's
/// spectral coordinates ([`OperatorSvd::v_adjoint`] of an image). Deterministic: the entry point
/// for replaying recorded noise (e.g. deepinv's, whose spectral coordinates for masks and
/// denoising are the pixels). Returns the `(K, C, H, W)` samples.
///
/// η = η_b = 0 does not make DDRM deterministic: the components noisier than y still get
/// sqrt(σ_t'² − 0) fresh noise (in the reference and in deepinv alike), so a replay needs every
/// step's noise, not only the start's.
pub fn ddrm_from_noise(
    p: &Problem,
    cfg: &DdrmConfig,
    z_init: &Tensor,
    z_steps: &[Tensor],
) -> Result<Tensor> {
    let want = ddrm_noise_draws(cfg.steps).saturating_sub(1);
    let (k, mut draw) = replayed_draws("DDRM", p.op, z_init, z_steps, want)?;
    Ok(ddrm_core(p, cfg, k, &mut draw, &mut |_| {})?.0)
}

/// Per-chain standard-normal draws of the spectral methods (DDRM, DDNM) from the chains' own
/// streams (sub-seed `tag`): draw i is one `(K, C, H, W)` normal. Returns K and the draw.
pub(crate) fn stream_draws(
    method: &str,
    p: &Problem,
    chains: &Chains,
    tag: u64,
) -> Result<(usize, impl FnMut(usize) -> Result<Tensor>)> {
    let k = chains.count;
    if k == 0 {
        return invalid(format!("{method} needs at least one chain"));
    }
    let [c, h, w] = p.op.image_shape();
    let device = p.model.device().clone();
    let mut noise = BatchNoise::new(seeds::derive(chains.seed, tag), chains.first_index, k);
    Ok((k, move |_: usize| -> Result<Tensor> {
        Ok(noise.draw(&[c, h, w], &device)?)
    }))
}

/// Recorded draws of a spectral method, checked: `z_init` `(K, C, H, W)` for `op`'s images
/// and `want` step tensors shaped alike; draw 0 is `z_init`, draw i the step tensor i − 1.
/// Returns K and the draw.
pub(crate) fn replayed_draws<'a>(
    method: &str,
    op: &dyn Operator,
    z_init: &'a Tensor,
    z_steps: &'a [Tensor],
    want: usize,
) -> Result<(usize, impl FnMut(usize) -> Result<Tensor> + 'a)> {
    let [c, h, w] = op.image_shape();
    let k = match z_init.dims() {
        [k, cc, hh, ww] if *k > 0 && [*cc, *hh, *ww] == [c, h, w] => *k,
        d => {
            return invalid(format!(
                "{method}: the initial noise must be (K, {c}, {h}, {w}), got {d:?}"
            ))
        }
    };
    if z_steps.len() != want {
        return invalid(format!(
            "{method} with these settings takes {want} step noise tensors, got {}",
            z_steps.len()
        ));
    }
    if let Some(z) = z_steps.iter().find(|z| z.dims() != z_init.dims()) {
        return invalid(format!(
            "{method}: every step noise must be shaped like the initial noise {:?}, got {:?}",
            z_init.dims(),
            z.dims()
        ));
    }
    Ok((k, move |i: usize| -> Result<Tensor> {
        Ok(if i == 0 {
            z_init.clone()
        } else {
            z_steps[i - 1].clone()
        })
    }))
}

/// σ_t = sqrt(1 − ᾱ)/sqrt(ᾱ).
fn ve_sigma(alpha_bar: f64) -> f64 {
    ((1.0 - alpha_bar) / alpha_bar).sqrt()
}

fn ddrm_core(
    p: &Problem,
    cfg: &DdrmConfig,
    k: usize,
    draw: &mut dyn FnMut(usize) -> Result<Tensor>,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    cfg.validate()?;
    let op = p.op;
    let (svd, sigma0) = require_svd("ddrm", op)?;
    let (uty, by) = spectral_measurements("DDRM", p, svd, k)?;
    let s = svd.singular_values();
    let n = op.image_len();
    let [c, h, w] = op.image_shape();
    let mut den = Denoiser::new(p.model, p.schedule);
    den.check_channels(c)?;
    let device = p.model.device().clone();
    let ts = ddrm_timesteps(p.schedule.num_train_timesteps(), cfg.steps)?;
    let dims = [k, c, h, w];
    // ȳ = Uᵀy / s where s > 0.
    let ybar: Vec<Vec<f64>> = uty
        .iter()
        .map(|u| {
            u.iter()
                .zip(s)
                .map(|(v, &si)| if si > 0.0 { v / si } else { 0.0 })
                .collect()
        })
        .collect();
    let host_noise = |t: Tensor| -> Result<Vec<f64>> {
        let v = to_host(&t)?;
        if v.len() != k * n {
            return invalid(format!(
                "DDRM: a noise tensor has {} values, expected {}",
                v.len(),
                k * n
            ));
        }
        Ok(v)
    };

    // Start.
    let ab0 = p.schedule.alpha_bar(ts[0])?;
    let sig0 = ve_sigma(ab0);
    let z = host_noise(draw(0)?)?;
    let mut xs = Vec::with_capacity(k * n);
    for j in 0..k {
        let yb = &ybar[if by == 1 { 0 } else { j }];
        let zj = &z[j * n..(j + 1) * n];
        let xbar: Vec<f64> = (0..n)
            .map(|i| {
                if s[i] * sig0 > sigma0 {
                    let nsr = sigma0 / s[i];
                    yb[i] + (sig0 * sig0 - nsr * nsr).max(0.0).sqrt() * zj[i]
                } else {
                    sig0 * zj[i]
                }
            })
            .collect();
        xs.extend(svd.v(&xbar)?.into_iter().map(|v| ab0.sqrt() * v));
    }
    let mut x = from_host(xs, &dims, &device, DType::F32)?;

    let c_eta = (1.0 - cfg.eta * cfg.eta).sqrt();
    let total = ts.len();
    for (step, &t) in ts.iter().enumerate() {
        let ab = p.schedule.alpha_bar(t)?;
        let raw = den.raw(&x, t as f64)?;
        let (x0, eps) = den.interpret(&raw, &x, ab)?;
        let last = step + 1 == total;
        let ab_next = if last {
            1.0
        } else {
            p.schedule.alpha_bar(ts[step + 1])?
        };
        let sn = ve_sigma(ab_next);
        let z = if last {
            None
        } else {
            Some(host_noise(draw(step + 1)?)?)
        };
        let x0h = to_host(&x0)?;
        let epsh = to_host(&eps)?;
        let mut out = Vec::with_capacity(k * n);
        for j in 0..k {
            let jy = if by == 1 { 0 } else { j };
            let (yb, ut) = (&ybar[jy], &uty[jy]);
            let x0b = svd.v_adjoint(&x0h[j * n..(j + 1) * n])?;
            let eb = svd.v_adjoint(&epsh[j * n..(j + 1) * n])?;
            let zj = |i: usize| z.as_ref().map_or(0.0, |z| z[j * n + i]);
            let next: Vec<f64> = (0..n)
                .map(|i| {
                    let si = s[i];
                    if si > 0.0 && si * sn > sigma0 {
                        // Noisier than y: pull towards ȳ.
                        let nsr = cfg.eta_b * sigma0 / si;
                        cfg.eta_b * yb[i]
                            + (1.0 - cfg.eta_b) * x0b[i]
                            + (sn * sn - nsr * nsr).max(0.0).sqrt() * zj(i)
                    } else if si > 0.0 && si * sn < sigma0 {
                        // Less noisy than y: a step along the measurement residual.
                        x0b[i] + c_eta * sn * (ut[i] - si * x0b[i]) / sigma0 + cfg.eta * sn * zj(i)
                    } else {
                        // Null space (or the boundary): the DDIM prior update.
                        x0b[i] + c_eta * sn * eb[i] + cfg.eta * sn * zj(i)
                    }
                })
                .collect();
            out.extend(svd.v(&next)?.into_iter().map(|v| ab_next.sqrt() * v));
        }
        x = from_host(out, &dims, &device, DType::F32)?;
        progress(MethodProgress::Step {
            step: step + 1,
            total,
            status: format!("t = {t}"),
        });
    }
    Ok((x, den.nfe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_follow_the_reference_grid() {
        // range(0, 1000, 50) reversed.
        let ts = ddrm_timesteps(1000, 20).unwrap();
        assert_eq!(ts.len(), 20);
        assert_eq!(ts[0], 950);
        assert_eq!(ts[1], 900);
        assert_eq!(ts[19], 0);
        // N = 30: skip 33, the first 30 entries of range(0, 1000, 33).
        let ts = ddrm_timesteps(1000, 30).unwrap();
        assert_eq!((ts.len(), ts[0], ts[29]), (30, 957, 0));
        assert_eq!(ddrm_timesteps(1000, 1000).unwrap()[0], 999);
        assert!(ddrm_timesteps(1000, 0).is_err());
        assert!(ddrm_timesteps(1000, 1001).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let ok = DdrmConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            DdrmConfig {
                steps: 0,
                ..ok.clone()
            },
            DdrmConfig {
                eta: 1.5,
                ..ok.clone()
            },
            DdrmConfig {
                eta_b: -0.1,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
