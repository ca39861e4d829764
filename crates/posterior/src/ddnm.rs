//! DDNM and DDNM⁺ — zero-shot restoration with the denoising diffusion null-space model
//! (Wang, Yu & Zhang, ICLR 2023; reference code `wyhuai/DDNM`, `functions/svd_ddnm.py`
//! `ddnm_diffusion` / `ddnm_plus_diffusion` with the `Lambda` / `Lambda_noise` of
//! `functions/svd_operators.py`, called by `guided_diffusion/diffusion.py`
//! `svd_based_ddnm_plus`).
//!
//! A DDIM loop whose clean estimate is made consistent with y through the pseudo-inverse
//! A⁺ = V S⁺ Uᵀ of the operator's SVD ([`genprior_inverse::OperatorSvd`]). From timestep t to
//! t' (ᾱ' its noise level, a = sqrt(ᾱ'), σ = sqrt(1 − ᾱ'), and η the DDIM noise share):
//! ```text
//! x̂₀ = x̂₀(x_t), ε̂ = ε̂(x_t)                                  (one network evaluation)
//! x̂₀ ← x̂₀ − V Λ Vᵀ A⁺(A x̂₀ − y)                             (range-space correction)
//! x_t' = a x̂₀ + V (D₁ Vᵀz + D₂ Vᵀε̂),  z ~ N(0, I)
//! ```
//! with, per spectral coordinate i:
//! - σ_y = 0 (DDNM), and wherever s_i = 0: λ_i = 1, d₁ = σ η, d₂ = σ sqrt(1 − η²) — plain
//!   DDIM with the exact null-space/range-space split x̂₀ ← x̂₀ − A⁺(A x̂₀ − y);
//! - σ_y > 0 (DDNM⁺), s_i > 0, σ < a σ_y/s_i (the measurement is noisier than x_t'):
//!   λ_i = s_i σ sqrt(1 − η²)/(a σ_y) < 1, d₁ = σ η, d₂ = 0;
//! - σ_y > 0, s_i > 0, σ > a σ_y/s_i: λ_i = 1, d₁ = sqrt(σ² − a²σ_y²/s_i²), d₂ = 0 (the
//!   fresh noise tops the measurement's noise up to σ);
//! - σ = a σ_y/s_i exactly: λ_i = 1 and the DDIM d₁, d₂ (the reference's fall-through).
//!
//! The last step goes to t' = "−1" (ᾱ' = 1, σ = 0): its result is the corrected x̂₀ —
//! corrected fully for DDNM, not at all for DDNM⁺ (λ = 0 there), as in the reference. DDNM is
//! selected by σ_y = 0, DDNM⁺ otherwise, as the reference does; σ_y is the operator's
//! likelihood σ in genprior's [-1, 1] units (the reference doubles its `--sigma_y` from [0, 1]).
//!
//! **Timesteps and time travel.** The reference's `skip = T // N` and RePaint's
//! `get_schedule_jump(N, L, r)`: the indices N−1, …, 0, −1 scaled by `skip`, where every L-th
//! index j < N − L (j = 0, L, 2L, …) is revisited r − 1 times by going back up L indices. A
//! step up from index i to j > i is the reference's "time-travel back":
//! x_j = sqrt(ᾱ_j) x̂₀ + sqrt(1 − ᾱ_j) z with x̂₀ the *uncorrected* estimate of the last
//! network evaluation (the reference's `x0_preds[-1]`), no network evaluation. Defaults: N = 100,
//! L = 1, r = 1 (no time travel; `configs/*.yml` `time_travel`), η = 0.85 (`--eta`).
//! NFE = the number of downward steps (N when r = 1).
//!
//! **Deviations.** (1) The reference draws z in pixel space and applies Vᵀ; genprior draws
//! Vᵀz directly in the spectral space (the same law, since V is orthogonal). (2) x̂₀ is
//! clipped when the schedule clips (`clip_sample`), as for DPS and DiffPIR; the reference does
//! not clip. (3) The reference's "simplified" DDNM (`simplified_ddnm_plus`, an A⁺ without an
//! SVD and a scalar λ) is not implemented: genprior's operators expose the SVD instead.
//!
//! Randomness: one [`BatchNoise`] stream per chain (index `first_index + i`) draws x_T (pixel
//! space) and then one spectral vector per step but the last, so a run split over several calls
//! equals one call. [`ddnm_from_noise`] takes them explicitly.

use candle_core::{DType, Tensor};
use genprior_inverse::host::{from_host, to_host};
use serde_json::{json, Value};

use crate::ddrm::{replayed_draws, require_svd, spectral_measurements, stream_draws};
use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};
use crate::method::{
    Chains, MethodEntry, MethodProgress, PosteriorSampler, Problem, SamplerOutput,
};
use crate::options::{at_least_one, OptionDefault, OptionSpec, OptionType, Resolved};

/// Sub-seed tag of DDNM's noise streams.
const SEED_TAG: u64 = 0x4444_4E4D; // "DDNM"

/// DDNM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DdnmConfig {
    /// Sampling steps N (`T_sampling`), 1 ≤ N ≤ T.
    pub steps: usize,
    /// η ∈ [0, 1], the DDIM noise share.
    pub eta: f64,
    /// Time-travel length L ≥ 1 (indices gone back up per jump).
    pub travel_length: usize,
    /// Time-travel repeat r ≥ 1 (1: no time travel).
    pub travel_repeat: usize,
}

impl Default for DdnmConfig {
    /// The reference's 100 steps, η = 0.85, no time travel.
    fn default() -> Self {
        Self {
            steps: 100,
            eta: 0.85,
            travel_length: 1,
            travel_repeat: 1,
        }
    }
}

impl DdnmConfig {
    /// From the [`DDNM_OPTIONS`].
    pub fn from_options(opts: &Resolved) -> Result<Self> {
        let cfg = Self {
            steps: opts.usize("ddnm-steps")?,
            eta: opts.f64("ddnm-eta")?,
            travel_length: at_least_one("ddnm-travel-length", opts.usize("ddnm-travel-length")?)?,
            travel_repeat: at_least_one("ddnm-travel-repeat", opts.usize("ddnm-travel-repeat")?)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return invalid("--ddnm-steps must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return invalid(format!("--ddnm-eta must lie in [0, 1], got {}", self.eta));
        }
        if self.travel_length == 0 {
            return invalid("--ddnm-travel-length must be at least 1");
        }
        if self.travel_repeat == 0 {
            return invalid("--ddnm-travel-repeat must be at least 1");
        }
        Ok(())
    }

    /// Network evaluations of one run: the downward steps of the schedule.
    pub fn nfe(&self) -> usize {
        schedule_jump(self.steps, self.travel_length, self.travel_repeat)
            .windows(2)
            .filter(|w| w[1] < w[0])
            .count()
    }

    /// The settings as report fields.
    pub fn settings(&self) -> Value {
        json!({
            "ddnm_steps": self.steps,
            "ddnm_eta": self.eta,
            "ddnm_travel_length": self.travel_length,
            "ddnm_travel_repeat": self.travel_repeat,
        })
    }
}

pub const DDNM_STEPS: OptionSpec = OptionSpec {
    name: "ddnm-steps",
    help: "DDNM: sampling steps N on the reference's uniform grid (one network evaluation each, time travel adding more)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(100),
};
pub const DDNM_ETA: OptionSpec = OptionSpec {
    name: "ddnm-eta",
    help: "DDNM: η in [0, 1], the DDIM noise share",
    kind: OptionType::Float,
    default: OptionDefault::Float(0.85),
};
pub const DDNM_TRAVEL_LENGTH: OptionSpec = OptionSpec {
    name: "ddnm-travel-length",
    help: "DDNM: time-travel length L (steps gone back up per jump)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(1),
};
pub const DDNM_TRAVEL_REPEAT: OptionSpec = OptionSpec {
    name: "ddnm-travel-repeat",
    help:
        "DDNM: time-travel repeat r (1: no time travel; each jump point is revisited r − 1 times)",
    kind: OptionType::Integer,
    default: OptionDefault::Integer(1),
};

/// Every option DDNM declares.
pub const DDNM_OPTIONS: &[OptionSpec] =
    &[DDNM_STEPS, DDNM_ETA, DDNM_TRAVEL_LENGTH, DDNM_TRAVEL_REPEAT];

/// The registry entry.
pub const DDNM: MethodEntry = MethodEntry {
    name: "ddnm",
    summary: "DDNM / DDNM⁺ (Wang et al. 2023): DDIM with a null-space (pseudo-inverse) correction of x̂₀, scaled for noisy y",
    options: DDNM_OPTIONS,
    build: |opts, op| {
        require_svd("ddnm", op)?;
        Ok(Box::new(DdnmSampler {
            cfg: DdnmConfig::from_options(opts)?,
        }))
    },
};

/// DDNM behind the [`PosteriorSampler`] seam.
pub struct DdnmSampler {
    pub cfg: DdnmConfig,
}

impl PosteriorSampler for DdnmSampler {
    fn method(&self) -> &'static str {
        "ddnm"
    }
    fn settings(&self) -> Value {
        self.cfg.settings()
    }
    fn total_steps(&self) -> usize {
        self.cfg.nfe()
    }
    fn sample(
        &self,
        p: &Problem,
        chains: &Chains,
        progress: &mut dyn FnMut(MethodProgress),
    ) -> Result<SamplerOutput> {
        let (samples, nfe) = ddnm(p, chains, &self.cfg, progress)?;
        Ok(SamplerOutput::new(samples, nfe, false))
    }
}

/// RePaint's `get_schedule_jump(N, L, r)` as the DDNM reference uses it: step indices from
/// N − 1 down to −1, going back up L indices r − 1 times at each of 0, L, 2L, … < N − L.
pub fn schedule_jump(steps: usize, travel_length: usize, travel_repeat: usize) -> Vec<i64> {
    let (n, l) = (steps as i64, travel_length.max(1) as i64);
    let mut jumps = std::collections::BTreeMap::new();
    let mut j = 0;
    while j < n - l {
        jumps.insert(j, travel_repeat.saturating_sub(1));
        j += l;
    }
    let mut t = n;
    let mut ts = Vec::new();
    while t >= 1 {
        t -= 1;
        ts.push(t);
        if let Some(left) = jumps.get_mut(&t) {
            if *left > 0 {
                *left -= 1;
                for _ in 0..l {
                    t += 1;
                    ts.push(t);
                }
            }
        }
    }
    ts.push(-1);
    ts
}

/// The (from, to) timestep pairs of a run on `num_train_timesteps`: index i ↦ i·⌊T/N⌋,
/// −1 ↦ −1.
pub fn ddnm_time_pairs(num_train_timesteps: usize, cfg: &DdnmConfig) -> Result<Vec<(i64, i64)>> {
    if cfg.steps == 0 || cfg.steps > num_train_timesteps {
        return invalid(format!(
            "--ddnm-steps ({}) must lie in [1, {num_train_timesteps}] (the schedule's training timesteps)",
            cfg.steps
        ));
    }
    let skip = (num_train_timesteps / cfg.steps) as i64;
    let scale = |i: i64| if i < 0 { -1 } else { i * skip };
    let ts = schedule_jump(cfg.steps, cfg.travel_length, cfg.travel_repeat);
    Ok(ts.windows(2).map(|w| (scale(w[0]), scale(w[1]))).collect())
}

/// Standard-normal draws a run takes per chain: x_T and one per step but the last.
pub fn ddnm_noise_draws(cfg: &DdnmConfig) -> usize {
    schedule_jump(cfg.steps, cfg.travel_length, cfg.travel_repeat).len() - 1
}

/// Runs DDNM (σ_y = 0) or DDNM⁺ (σ_y > 0) for `chains` on `p`. Returns the `(count, C, H, W)`
/// samples and the network evaluations.
pub fn ddnm(
    p: &Problem,
    chains: &Chains,
    cfg: &DdnmConfig,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    let (k, mut draw) = stream_draws("DDNM", p, chains, SEED_TAG)?;
    ddnm_core(p, cfg, k, &mut draw, progress)
}

/// DDNM with its noise given: `z_init` = x_T (pixel space) and `z_steps[i]` the spectral
/// normals of step i + 1 (there are [`ddnm_noise_draws`] − 1), each `(K, C, H, W)`.
/// Deterministic. Returns the `(K, C, H, W)` samples.
pub fn ddnm_from_noise(
    p: &Problem,
    cfg: &DdnmConfig,
    z_init: &Tensor,
    z_steps: &[Tensor],
) -> Result<Tensor> {
    let want = ddnm_noise_draws(cfg).saturating_sub(1);
    let (k, mut draw) = replayed_draws("DDNM", p.op, z_init, z_steps, want)?;
    Ok(ddnm_core(p, cfg, k, &mut draw, &mut |_| {})?.0)
}

fn ddnm_core(
    p: &Problem,
    cfg: &DdnmConfig,
    k: usize,
    draw: &mut dyn FnMut(usize) -> Result<Tensor>,
    progress: &mut dyn FnMut(MethodProgress),
) -> Result<(Tensor, usize)> {
    cfg.validate()?;
    let op = p.op;
    let (svd, sigma_y) = require_svd("ddnm", op)?;
    let (uty, by) = spectral_measurements("DDNM", p, svd, k)?;
    let s = svd.singular_values();
    let n = op.image_len();
    let [c, h, w] = op.image_shape();
    let mut den = Denoiser::new(p.model, p.schedule);
    den.check_channels(c)?;
    let device = p.model.device().clone();
    let pairs = ddnm_time_pairs(p.schedule.num_train_timesteps(), cfg)?;
    let alpha = |t: i64| -> Result<f64> {
        Ok(if t < 0 {
            1.0
        } else {
            p.schedule.alpha_bar(t as usize)?
        })
    };
    let dims = [k, c, h, w];
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
                "DDNM: a noise tensor has {} values, expected {}",
                v.len(),
                k * n
            ));
        }
        Ok(v)
    };
    let mut x = from_host(host_noise(draw(0)?)?, &dims, &device, DType::F32)?;
    let mut last_x0: Option<Tensor> = None;
    let c_eta = (1.0 - cfg.eta * cfg.eta).sqrt();
    let total = cfg.nfe();
    let mut done = 0;
    for (pi, &(t, tn)) in pairs.iter().enumerate() {
        let last = pi + 1 == pairs.len();
        let abn = alpha(tn)?;
        let (a, sig) = (abn.sqrt(), (1.0 - abn).sqrt());
        let z = if last {
            None
        } else {
            Some(host_noise(draw(pi + 1)?)?)
        };
        if tn > t {
            // Time travel back: re-noise the last (uncorrected) x̂₀ to level t'.
            let Some(x0) = &last_x0 else {
                return invalid("DDNM: a time-travel step before any denoising step");
            };
            let zt = from_host(
                z.unwrap_or_else(|| vec![0.0; k * n]),
                &dims,
                &device,
                DType::F32,
            )?;
            x = (x0.affine(a, 0.0)? + zt.affine(sig, 0.0)?)?;
            continue;
        }
        let ab = alpha(t)?;
        let raw = den.raw(&x, t as f64)?;
        let (x0, eps) = den.interpret(&raw, &x, ab)?;
        let x0h = to_host(&x0)?;
        let epsh = to_host(&eps)?;
        let mut out = Vec::with_capacity(k * n);
        for j in 0..k {
            let yb = &ybar[if by == 1 { 0 } else { j }];
            let x0b = svd.v_adjoint(&x0h[j * n..(j + 1) * n])?;
            let eb = svd.v_adjoint(&epsh[j * n..(j + 1) * n])?;
            let zj = |i: usize| z.as_ref().map_or(0.0, |z| z[j * n + i]);
            let next: Vec<f64> = (0..n)
                .map(|i| {
                    let si = s[i];
                    // (λ, d₁, d₂) of the module docs.
                    let (lambda, d1, d2) = if si == 0.0 || sigma_y == 0.0 || a == 0.0 {
                        (1.0, sig * cfg.eta, sig * c_eta)
                    } else {
                        let nsr = a * sigma_y / si;
                        if sig < nsr {
                            (si * sig * c_eta / (a * sigma_y), sig * cfg.eta, 0.0)
                        } else if sig > nsr {
                            (1.0, (sig * sig - nsr * nsr).sqrt(), 0.0)
                        } else {
                            (1.0, sig * cfg.eta, sig * c_eta)
                        }
                    };
                    // Corrected x̂₀: x̄₀ − λ (x̄₀ − ȳ) on the range, x̄₀ on the null space.
                    let x0c = if si > 0.0 {
                        x0b[i] - lambda * (x0b[i] - yb[i])
                    } else {
                        x0b[i]
                    };
                    a * x0c + d1 * zj(i) + d2 * eb[i]
                })
                .collect();
            out.extend(svd.v(&next)?);
        }
        x = from_host(out, &dims, &device, DType::F32)?;
        last_x0 = Some(x0);
        done += 1;
        progress(MethodProgress::Step {
            step: done,
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
    fn schedule_jump_matches_repaint() {
        // No time travel: N−1 … 0, −1.
        assert_eq!(schedule_jump(4, 1, 1), vec![3, 2, 1, 0, -1]);
        // L = 1, r = 2 on N = 4: jumps at 0, 1, 2 (< N − L = 3), each revisited once.
        assert_eq!(
            schedule_jump(4, 1, 2),
            vec![3, 2, 3, 2, 1, 2, 1, 0, 1, 0, -1]
        );
        // L = 2, r = 2 on N = 6: jumps at 0, 2 (< 4).
        assert_eq!(
            schedule_jump(6, 2, 2),
            vec![5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
        );
        let pairs = ddnm_time_pairs(1000, &DdnmConfig::default()).unwrap();
        assert_eq!(pairs.len(), 100);
        assert_eq!(pairs[0], (990, 980));
        assert_eq!(pairs[99], (0, -1));
        assert_eq!(DdnmConfig::default().nfe(), 100);
        let tt = DdnmConfig {
            steps: 4,
            travel_repeat: 2,
            ..DdnmConfig::default()
        };
        assert_eq!(tt.nfe(), 7);
        assert_eq!(ddnm_noise_draws(&tt), 10);
    }

    #[test]
    fn ranges_are_checked() {
        let ok = DdnmConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            DdnmConfig {
                steps: 0,
                ..ok.clone()
            },
            DdnmConfig {
                eta: 2.0,
                ..ok.clone()
            },
            DdnmConfig {
                travel_length: 0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
