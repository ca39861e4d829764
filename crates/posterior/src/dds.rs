//! DDS — the denoising diffusion sampler of DPnP (Xu & Chi 2024): samples
//! p(x₀ | x₀ + η w = y), w ~ N(0, I), with an unconditional VP diffusion prior, using only
//! ε̂ from the network (raw outputs are converted through the schedule's prediction type,
//! 2C learned-variance outputs are split, and x̂₀ is clipped with ε̂ recomputed when the
//! schedule clips). Batched: every chain has its own y.
//!
//! VE view: VP time t ↔ σ_t = sqrt(1/ᾱ_t − 1); a clean image plus N(0, σ²) noise is the VP
//! state sqrt(ᾱ_t)·x. Only times with σ_t < η are usable.
//!
//! **DDS-DDPM** (stochastic, integer timesteps). Usable t descending, σ_prev the next one's
//! level (0 after the last). Start at x = y:
//! ```text
//! ε̂ = ε_θ(sqrt(ᾱ_t) x, t);   x ← x + 2 (σ_prev − σ_t) ε̂ + sqrt(σ_t² − σ_prev²) z
//! ```
//! with no noise on the last step. (2(σ_prev − σ_t) is the first-order form of the reverse
//! VE-SDE drift −(σ_t² − σ_prev²)/σ_t · ε̂; kept exactly as the reference.)
//!
//! **DDS-DDIM** (deterministic given the start, on the residual r = x' of the conditional
//! diffusion of e = x₀ − y): conditional level ᾱ' with c = 1 + (η² − 1) ᾱ', the Gaussian
//! part of p(e | x') has variance v = η²(1 − ᾱ')/c and mean η² sqrt(ᾱ') x'/c, so the
//! conditional denoiser is the unconditional one at VP level ᾱ_t = 1/(1 + v) evaluated at
//! sqrt(ᾱ_t)(y + η² sqrt(ᾱ') r / c). Writing the probability-flow ODE in ρ = sqrt(1/ᾱ' − 1),
//! its linear part integrates exactly and, with ε̂ frozen over a step,
//! ```text
//! r ← sqrt(c_{j−1}/c_j) r − sqrt(c_{j−1}) (w(ᾱ'_j) − w(ᾱ'_{j−1})) ε̂,   w(a) = −arctan(η / sqrt(1/a − 1))
//! ```
//! ending at ᾱ' = 1 (c = η², w = −π/2), returning y + r. Start r ~ N(0, I).
//!
//! The **refined grid** ([`DdimGrid`]) is required for correctness (see the spec): the
//! integer timesteps' ᾱ'_t, the highest-noise end extended to ᾱ' = 1e-4 (points below are
//! dropped), and geometric points inserted wherever consecutive ᾱ' differ by a ratio ≥ 1.1
//! (so every ratio ends below 1.1). Each point's VP level is taken exactly from v, and the
//! network is evaluated at the *fractional* timestep whose log-interpolated ᾱ(t) matches
//! ([`Schedule::timestep_for_alpha_bar`]; positional/fourier time embeddings accept any real
//! t; the timestep is passed to the network as f32).

use candle_core::Tensor;
use genprior_diffusion::{BatchNoise, Schedule, ScoreModel};

use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};

/// Which DDS variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DdsMethod {
    /// Deterministic DDS-DDIM on the refined grid (default).
    #[default]
    Ddim,
    /// Stochastic DDS-DDPM on the integer timesteps.
    Ddpm,
}

impl std::str::FromStr for DdsMethod {
    type Err = crate::PosteriorError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ddim" => Ok(Self::Ddim),
            "ddpm" => Ok(Self::Ddpm),
            o => invalid(format!("unknown DDS method `{o}`; expected ddim or ddpm")),
        }
    }
}

/// Ratio between consecutive conditional levels above which points are inserted.
pub const GRID_RATIO: f64 = 1.1;
/// Smallest conditional level ᾱ' of the DDS-DDIM grid (where r ~ N(0, I) starts).
pub const GRID_MIN_ALPHA: f64 = 1e-4;

/// One point of the DDS-DDIM grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridPoint {
    /// Conditional level ᾱ'.
    pub alpha_cond: f64,
    /// VP level ᾱ_t = 1/(1 + v) the network is evaluated at.
    pub alpha_bar: f64,
    /// Fractional training timestep with ᾱ(t) = `alpha_bar`.
    pub t: f64,
}

/// The refined DDS-DDIM grid for one η, ordered from high noise (small ᾱ') to low noise;
/// the step after the last point goes to ᾱ' = 1.
#[derive(Debug, Clone)]
pub struct DdimGrid {
    pub eta: f64,
    pub points: Vec<GridPoint>,
}

fn check_eta(eta: f64) -> Result<()> {
    if !(eta.is_finite() && eta > 0.0) {
        return invalid(format!("DDS needs a noise level η > 0, got {eta}"));
    }
    Ok(())
}

/// 1 − ᾱ' at VP level ᾱ (requires σ < η): η²(1 − ᾱ)/(η² − (1 − ᾱ)), accurate near ᾱ' = 1.
fn one_minus_alpha_cond(alpha_bar: f64, eta: f64) -> f64 {
    let u = 1.0 - alpha_bar;
    eta * eta * u / (eta * eta - u)
}

/// VP level 1/(1 + v) of conditional level `a`, v = η²(1 − a)/c, c = 1 + (η² − 1) a.
fn vp_level(a: f64, eta: f64) -> f64 {
    let e2 = eta * eta;
    let c = 1.0 + (e2 - 1.0) * a;
    let v = e2 * (1.0 - a) / c;
    1.0 / (1.0 + v)
}

/// The usable integer timesteps (σ_t < η), descending.
pub fn usable_timesteps(schedule: &Schedule, eta: f64) -> Result<Vec<usize>> {
    check_eta(eta)?;
    let thr = 1.0 / (1.0 + eta * eta);
    let ab = schedule.alphas_cumprod();
    Ok((0..ab.len()).rev().filter(|&t| ab[t] > thr).collect())
}

impl DdimGrid {
    /// Builds the refined grid (see the module docs). Empty when no timestep is usable
    /// (η ≤ σ₀), in which case DDS returns y unchanged.
    pub fn new(schedule: &Schedule, eta: f64) -> Result<Self> {
        let ts = usable_timesteps(schedule, eta)?;
        let ab = schedule.alphas_cumprod();
        // Integer points, high noise first (ascending ᾱ').
        let mut base: Vec<GridPoint> = ts
            .iter()
            .map(|&t| GridPoint {
                alpha_cond: 1.0 - one_minus_alpha_cond(ab[t], eta),
                alpha_bar: ab[t],
                t: t as f64,
            })
            .filter(|p| p.alpha_cond >= GRID_MIN_ALPHA)
            .collect();
        if base.is_empty() && ts.is_empty() {
            return Ok(Self {
                eta,
                points: Vec::new(),
            });
        }
        let lowest_ab = ab[ab.len() - 1];
        let start_ab = vp_level(GRID_MIN_ALPHA, eta);
        if base.first().is_none_or(|p| p.alpha_cond > GRID_MIN_ALPHA) && start_ab >= lowest_ab {
            let t = schedule.timestep_for_alpha_bar(start_ab)?;
            base.insert(
                0,
                GridPoint {
                    alpha_cond: GRID_MIN_ALPHA,
                    alpha_bar: start_ab,
                    t,
                },
            );
        }
        let mut points = Vec::with_capacity(base.len() * 2);
        for (i, p) in base.iter().enumerate() {
            points.push(*p);
            if let Some(q) = base.get(i + 1) {
                let ratio = q.alpha_cond / p.alpha_cond;
                if ratio >= GRID_RATIO {
                    let n = (ratio.ln() / GRID_RATIO.ln()).floor() as usize + 1;
                    for k in 1..n {
                        let a = p.alpha_cond * ratio.powf(k as f64 / n as f64);
                        let abar = vp_level(a, eta);
                        // Between two integer points, so inside the schedule's range; clamp
                        // round-off at the ends.
                        let abar =
                            abar.clamp(q.alpha_bar.min(p.alpha_bar), q.alpha_bar.max(p.alpha_bar));
                        let t = schedule.timestep_for_alpha_bar(abar)?;
                        points.push(GridPoint {
                            alpha_cond: a,
                            alpha_bar: abar,
                            t,
                        });
                    }
                }
            }
        }
        Ok(Self { eta, points })
    }

    /// Network evaluations one DDS-DDIM call makes.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

fn w_of(a: f64, eta: f64) -> f64 {
    if a >= 1.0 {
        -std::f64::consts::FRAC_PI_2
    } else {
        -(eta / (1.0 / a - 1.0).sqrt()).atan()
    }
}

fn c_of(a: f64, eta: f64) -> f64 {
    1.0 + (eta * eta - 1.0) * a
}

/// Progress of one DDS call: (steps done, total steps).
pub type DdsProgress<'a> = &'a mut dyn FnMut(usize, usize);

fn check_inputs(den: &Denoiser, y: &Tensor, noise: &BatchNoise) -> Result<usize> {
    let dims = y.dims();
    let &[b, c, _, _] = dims else {
        return invalid(format!(
            "DDS expects an image batch (B, C, H, W), got shape {dims:?}"
        ));
    };
    if b == 0 {
        return invalid("DDS got an empty batch");
    }
    den.check_channels(c)?;
    if noise.batch() != b {
        return invalid(format!(
            "DDS noise source has {} streams for a batch of {b}",
            noise.batch()
        ));
    }
    Ok(b)
}

/// DDS-DDIM on the refined grid: one sample of p(x | x + ηw = y_b) per chain b of `y`
/// (`(B, C, H, W)`, on the model's device). Noise (the start r) from `noise` (B streams).
pub fn dds_ddim(
    den: &mut Denoiser,
    y: &Tensor,
    eta: f64,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    check_eta(eta)?;
    check_inputs(den, y, noise)?;
    let grid = DdimGrid::new(den.schedule(), eta)?;
    dds_ddim_on_grid(den, y, &grid, noise, progress)
}

/// DDS-DDIM on a given grid (see [`DdimGrid::new`]).
pub fn dds_ddim_on_grid(
    den: &mut Denoiser,
    y: &Tensor,
    grid: &DdimGrid,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    check_inputs(den, y, noise)?;
    let eta = grid.eta;
    let e2 = eta * eta;
    let pts = &grid.points;
    if pts.is_empty() {
        return Ok(y.clone());
    }
    let mut r = noise.draw_like(y)?.to_device(y.device())?;
    let n = pts.len();
    for (j, p) in pts.iter().enumerate() {
        let a = p.alpha_cond;
        let c = c_of(a, e2.sqrt());
        let mean = (y + r.affine(e2 * a.sqrt() / c, 0.0)?)?;
        let x_uncond = mean.affine(p.alpha_bar.sqrt(), 0.0)?;
        let eps = den.eps(&x_uncond, p.t, p.alpha_bar)?;
        let a_next = pts.get(j + 1).map_or(1.0, |q| q.alpha_cond);
        let c_next = c_of(a_next, eta);
        let dw = w_of(a, eta) - w_of(a_next, eta);
        r = (r.affine((c_next / c).sqrt(), 0.0)? - eps.affine(c_next.sqrt() * dw, 0.0)?)?;
        progress(j + 1, n);
    }
    Ok((y + r)?)
}

/// DDS-DDPM on the usable integer timesteps: one sample per chain of `y`; step noise from
/// `noise`.
pub fn dds_ddpm(
    den: &mut Denoiser,
    y: &Tensor,
    eta: f64,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    check_eta(eta)?;
    check_inputs(den, y, noise)?;
    let ts = usable_timesteps(den.schedule(), eta)?;
    if ts.is_empty() {
        return Ok(y.clone());
    }
    dds_ddpm_on_timesteps(den, y, &ts, noise, progress)
}

/// Either variant.
pub fn dds(
    den: &mut Denoiser,
    method: DdsMethod,
    y: &Tensor,
    eta: f64,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    match method {
        DdsMethod::Ddim => dds_ddim(den, y, eta, noise, progress),
        DdsMethod::Ddpm => dds_ddpm(den, y, eta, noise, progress),
    }
}

/// `n` elements of `v` at evenly spaced indices, always including the first and the last
/// (all of `v` when `n ≥ v.len()`; the first alone when `n == 1`).
pub fn thin<T: Copy>(v: &[T], n: usize) -> Vec<T> {
    let len = v.len();
    if n >= len || len == 0 {
        return v.to_vec();
    }
    if n <= 1 {
        return v[..1].to_vec();
    }
    (0..n)
        .map(|i| v[((i * (len - 1)) as f64 / (n - 1) as f64).round() as usize])
        .collect()
}

/// Checks a DDS step budget (`Some(0)` is an error).
fn check_max_steps(max_steps: Option<usize>) -> Result<()> {
    if max_steps == Some(0) {
        return invalid("DDS needs at least one step per call (got a step budget of 0)");
    }
    Ok(())
}

/// DDS-DDPM on a given descending subsequence of the usable integer timesteps (the update of
/// [`dds_ddpm`] holds for any subsequence, σ_prev being the next chosen level).
pub fn dds_ddpm_on_timesteps(
    den: &mut Denoiser,
    y: &Tensor,
    ts: &[usize],
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    check_inputs(den, y, noise)?;
    if ts.windows(2).any(|w| w[1] >= w[0]) {
        return invalid("DDS-DDPM timesteps must be strictly descending");
    }
    let ab = den.schedule().alphas_cumprod().to_vec();
    if let Some(&t) = ts.iter().find(|&&t| t >= ab.len()) {
        return invalid(format!(
            "DDS-DDPM timestep {t} is outside the schedule's {} steps",
            ab.len()
        ));
    }
    let sigma = |t: usize| (1.0 / ab[t] - 1.0).sqrt();
    let mut x = y.clone();
    let n = ts.len();
    for (i, &t) in ts.iter().enumerate() {
        let s_t = sigma(t);
        let s_prev = ts.get(i + 1).map_or(0.0, |&p| sigma(p));
        let eps = den.eps(&x.affine(ab[t].sqrt(), 0.0)?, t as f64, ab[t])?;
        x = (x + eps.affine(2.0 * (s_prev - s_t), 0.0)?)?;
        if i + 1 < n {
            let z = noise.draw_like(&x)?.to_device(x.device())?;
            x = (x + z.affine((s_t * s_t - s_prev * s_prev).sqrt(), 0.0)?)?;
        }
        progress(i + 1, n);
    }
    Ok(x)
}

/// Either variant with at most `max_steps` network evaluations per call (`None` = the full
/// step set): the DDIM grid or the DDPM timesteps thinned to evenly spaced indices with
/// [`thin`] (first and last point kept). Fewer steps are cheaper and less accurate.
#[allow(clippy::too_many_arguments)]
pub fn dds_with_budget(
    den: &mut Denoiser,
    method: DdsMethod,
    y: &Tensor,
    eta: f64,
    max_steps: Option<usize>,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    check_max_steps(max_steps)?;
    let Some(n) = max_steps else {
        return dds(den, method, y, eta, noise, progress);
    };
    check_eta(eta)?;
    match method {
        DdsMethod::Ddim => {
            let mut grid = DdimGrid::new(den.schedule(), eta)?;
            grid.points = thin(&grid.points, n);
            dds_ddim_on_grid(den, y, &grid, noise, progress)
        }
        DdsMethod::Ddpm => {
            let ts = thin(&usable_timesteps(den.schedule(), eta)?, n);
            if ts.is_empty() {
                check_inputs(den, y, noise)?;
                return Ok(y.clone());
            }
            dds_ddpm_on_timesteps(den, y, &ts, noise, progress)
        }
    }
}

/// Network evaluations of one DDS call at η.
pub fn dds_nfe(schedule: &Schedule, method: DdsMethod, eta: f64) -> Result<usize> {
    Ok(match method {
        DdsMethod::Ddim => DdimGrid::new(schedule, eta)?.len(),
        DdsMethod::Ddpm => usable_timesteps(schedule, eta)?.len(),
    })
}

/// Network evaluations of one [`dds_with_budget`] call at η.
pub fn dds_nfe_with_budget(
    schedule: &Schedule,
    method: DdsMethod,
    eta: f64,
    max_steps: Option<usize>,
) -> Result<usize> {
    check_max_steps(max_steps)?;
    let full = dds_nfe(schedule, method, eta)?;
    Ok(max_steps.map_or(full, |n| full.min(n)))
}

/// Convenience: DDS with a fresh [`Denoiser`] and noise streams `0..B` of `seed`. Returns the
/// samples and the network evaluations.
pub fn dds_sample(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    method: DdsMethod,
    y: &Tensor,
    eta: f64,
    seed: u64,
) -> Result<(Tensor, usize)> {
    let mut den = Denoiser::new(model, schedule);
    let y = y.to_device(model.device())?;
    let mut noise = BatchNoise::new(seed, 0, y.dim(0)?);
    let x = dds(&mut den, method, &y, eta, &mut noise, &mut |_, _| {})?;
    Ok((x, den.nfe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_refined_monotone_and_ends_at_t0() {
        let s = Schedule::ddpm_default();
        // Grid sizes of the spec's independent numerical check (ratio 1.1, linear β, T = 1000).
        for (eta, spec_len) in [(0.1, 123), (0.4, 203), (0.8, 291)] {
            let g = DdimGrid::new(&s, eta).unwrap();
            let p = &g.points;
            assert_eq!(p.len(), spec_len, "η = {eta}");
            assert!(p.len() > usable_timesteps(&s, eta).unwrap().len());
            assert_eq!(p.last().unwrap().t, 0.0);
            assert!((p[0].alpha_cond - GRID_MIN_ALPHA).abs() < 1e-15);
            for w in p.windows(2) {
                assert!(w[1].alpha_cond > w[0].alpha_cond);
                assert!(w[1].alpha_cond / w[0].alpha_cond < GRID_RATIO);
                assert!(w[1].t < w[0].t);
            }
            for q in p {
                // VP level matches v exactly and the timestep maps back to it.
                let back = s.alpha_bar_at(q.t).unwrap();
                assert!(
                    (back / q.alpha_bar - 1.0).abs() < 1e-9,
                    "eta {eta}: {q:?} {back}"
                );
                let sigma2 = 1.0 / q.alpha_bar - 1.0;
                assert!(sigma2 < eta * eta);
            }
            eprintln!(
                "eta {eta}: {} DDS-DDIM grid points, {} usable integer steps",
                p.len(),
                usable_timesteps(&s, eta).unwrap().len()
            );
        }
        // No usable step below σ₀ = 0.01: DDS is the identity.
        assert!(DdimGrid::new(&s, 0.005).unwrap().is_empty());
        assert!(DdimGrid::new(&s, 0.0).is_err());
        assert!(DdimGrid::new(&s, f64::NAN).is_err());
    }

    #[test]
    fn w_and_c_limits() {
        let eta = 0.3;
        assert_eq!(w_of(1.0, eta), -std::f64::consts::FRAC_PI_2);
        assert!((c_of(1.0, eta) - eta * eta).abs() < 1e-15);
        assert!(w_of(1e-12, eta).abs() < 1e-5);
        // ᾱ' at an integer level agrees with the closed form.
        let ab = 0.95;
        let a = 1.0 - one_minus_alpha_cond(ab, eta);
        let direct = ((1.0 + eta * eta) * ab - 1.0) / (eta * eta + ab - 1.0);
        assert!((a - direct).abs() < 1e-12);
        assert!((vp_level(a, eta) - ab).abs() < 1e-12);
    }
}
