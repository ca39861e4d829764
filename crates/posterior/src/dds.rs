//! DDS — the denoising diffusion sampler of DPnP (Xu & Chi 2024): samples
//! p(x₀ | x₀ + η w = y), w ~ N(0, I), with an unconditional VP diffusion prior, using only
//! ε̂ from the network (raw outputs are converted through the schedule's prediction type,
//! 2C learned-variance outputs are split, and x̂₀ is clipped with ε̂ recomputed when the
//! schedule clips). Batched: every chain has its own y.
//!
//! VE view: VP time t ↔ σ_t = sqrt(1/ᾱ_t − 1); a clean image plus N(0, σ²) noise is the VP
//! state sqrt(ᾱ_t)·x. Only times with σ_t < η are usable.
//!
//! **DDS-DDPM** (stochastic). Levels descending, σ_prev the next one's level (0 after the
//! last). Start at x = y:
//! ```text
//! ε̂ = ε_θ(sqrt(ᾱ_t) x, t);   x ← x + 2 (σ_prev − σ_t) ε̂ + sqrt(σ_t² − σ_prev²) z
//! ```
//! with no noise on the last step. (2(σ_prev − σ_t) is the first-order form of the reverse
//! VE-SDE drift −(σ_t² − σ_prev²)/σ_t · ε̂; kept exactly as the reference.) The levels
//! ([`ddpm_levels`]) are the usable integer timesteps preceded by one fractional timestep at
//! σ = η exactly, where y is ([`DdsMethod::Ddpm`]); the reference code, and
//! [`DdsMethod::DdpmReference`], start at the first usable integer level σ_{t_max} < η
//! instead, treating y as less noisy than it is (a variance deficit of up to ~4 % of the
//! posterior's where the integer levels are coarse; `tests/dds_grid.rs` measures it).
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
//! The **refined grid** ([`DdimGrid::new`]) is required for correctness (see the spec): the
//! integer timesteps' ᾱ'_t, the highest-noise end extended to ᾱ' = 1e-4 (points below are
//! dropped), and geometric points inserted wherever consecutive ᾱ' differ by a ratio ≥ 1.1
//! (so every ratio ends below 1.1). Each point's VP level is taken exactly from v, and the
//! network is evaluated at the *fractional* timestep whose log-interpolated ᾱ(t) matches
//! ([`Schedule::timestep_for_alpha_bar`]; positional/fourier time embeddings accept any real
//! t; the timestep is passed to the network as f32). The reference code's own grid
//! ([`DdimGrid::reference`], [`DdsMethod::DdimReference`]) skips integer steps at large η and
//! snaps inserted points to integer timesteps: 2,423 network evaluations per DPnP run with the
//! default schedule, against 2,823 on the refined grid.

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
    /// DDS-DDIM on the reference code's grid ([`DdimGrid::reference`]).
    DdimReference,
    /// Stochastic DDS-DDPM: one fractional-timestep step from σ = η to the first usable
    /// integer level, then the usable integer timesteps.
    Ddpm,
    /// DDS-DDPM as the reference code: the usable integer timesteps only, the input treated
    /// as if it were at the first usable level σ_{t_max} < η.
    DdpmReference,
}

impl DdsMethod {
    /// This variant on the reference code's grid (`true`) or genprior's (`false`).
    pub fn with_reference_grid(self, reference: bool) -> Self {
        match (self, reference) {
            (Self::Ddim | Self::DdimReference, true) => Self::DdimReference,
            (Self::Ddim | Self::DdimReference, false) => Self::Ddim,
            (Self::Ddpm | Self::DdpmReference, true) => Self::DdpmReference,
            (Self::Ddpm | Self::DdpmReference, false) => Self::Ddpm,
        }
    }

    /// Whether this is a DDS-DDIM variant.
    pub fn is_ddim(self) -> bool {
        matches!(self, Self::Ddim | Self::DdimReference)
    }
}

impl std::str::FromStr for DdsMethod {
    type Err = crate::PosteriorError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ddim" => Ok(Self::Ddim),
            "ddim-reference" => Ok(Self::DdimReference),
            "ddpm" => Ok(Self::Ddpm),
            "ddpm-reference" => Ok(Self::DdpmReference),
            o => invalid(format!(
                "unknown DDS method `{o}`; expected ddim, ddim-reference, ddpm or ddpm-reference"
            )),
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

    /// The reference code's DDS-DDIM grid (`x1xu/diffusion-plug-and-play`,
    /// `DDIMDenoiser.gen_schedule`), transcribed: the candidate levels ᾱ'_t of the usable
    /// integer timesteps walked from t = 0 upwards; after each kept step the next `skip`
    /// candidates are dropped (skip = 7 above η = 0.75, 1 above 0.3, else 0) except among the
    /// last 15; a gap ᾱ'_t ≥ 1.1 ᾱ'_{t+1} gets n = ⌊ln(ᾱ'_t/ᾱ'_{t+1})/ln 1.1⌋ + 1 geometric
    /// points (ᾱ'_t included, ᾱ'_{t+1} not), the first n/2 evaluated at timestep t and the rest
    /// at t + 1 (integer timesteps: the network sees ᾱ_t, not the exact level v); the last
    /// candidate is extended geometrically to ᾱ' = 1e-4. A candidate already below 1e-4 ends
    /// the grid, and the reference then prepends its timestep to the list of timesteps,
    /// shifting every other point's timestep by one position (a quirk, reproduced; it fires
    /// for a few η only, e.g. 0.31835, none of the default schedule's).
    ///
    /// ᾱ_t is the reference's float64 linear schedule (np.linspace of the betas, then the
    /// cumulative product) when the schedule is linear, else the schedule's table: the grid's
    /// decisions are sensitive to that precision (on the float32 table one flips at η ≈ 0.2427
    /// and the default run takes 2,424 NFE instead of 2,423). Checked point by point against a
    /// transcription in `scripts/gen_dds_grid_fixture.py`.
    pub fn reference(schedule: &Schedule, eta: f64) -> Result<Self> {
        check_eta(eta)?;
        let ab = reference_alphas_cumprod(schedule);
        let e2 = eta * eta;
        let thr = 1.0 / (1.0 + e2);
        let cand: Vec<f64> = ab
            .iter()
            .take_while(|&&a| a > thr)
            .map(|&a| ((1.0 + e2) * a - 1.0) / (e2 + a - 1.0))
            .collect();
        // The mask `alphas_cumprod > thr` keeps a prefix of a decreasing table. The reference's
        // tolerance: `tol_exp = 4 ln 10`, ᾱ' < exp(−tol_exp) = 1e-4.
        let tol_exp = 4.0 * 10f64.ln();
        let (tol, min_alpha) = (-tol_exp, (-tol_exp).exp());
        let skip = if eta > 0.75 {
            7
        } else if eta > 0.3 {
            1
        } else {
            0
        };
        let ln_sep = GRID_RATIO.ln();
        let mut acs: Vec<f64> = Vec::new();
        let mut ts: Vec<usize> = Vec::new();
        let mut cnt_skip = skip;
        let len = cand.len();
        for idx in 0..len {
            if cnt_skip < skip {
                cnt_skip += 1;
                continue;
            }
            let this = cand[idx];
            if this < min_alpha {
                acs.push(this);
                ts.insert(0, idx); // sic (see above)
                break;
            }
            if idx == len - 1 {
                let n = ((this.ln() + tol_exp) / ln_sep) as usize + 1;
                acs.extend(linspace(this.ln(), tol, n).into_iter().map(f64::exp));
                ts.extend(std::iter::repeat_n(idx, n));
                break;
            }
            let next = cand[idx + 1];
            if this >= GRID_RATIO * next {
                let n = ((this / next).ln() / ln_sep) as usize + 1;
                let pts = linspace(this.ln(), next.ln(), n + 1);
                acs.extend(pts[..n].iter().map(|v| v.exp()));
                ts.extend(std::iter::repeat_n(idx, n / 2));
                ts.extend(std::iter::repeat_n(idx + 1, n - n / 2));
            } else {
                acs.push(this);
                ts.push(idx);
            }
            if len - idx > 15 {
                cnt_skip = 0;
            }
        }
        // High noise first, as the refined grid.
        let points = acs
            .iter()
            .zip(&ts)
            .rev()
            .map(|(&a, &t)| GridPoint {
                alpha_cond: a,
                alpha_bar: ab[t],
                t: t as f64,
            })
            .collect();
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

/// numpy's `linspace(a, b, n)`: a + i·(b − a)/(n − 1), the last point exactly b.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
            v[n - 1] = b;
            v
        }
    }
}

/// ᾱ_t as the reference (guided-diffusion) computes it for a linear schedule: betas
/// `np.linspace(β_start, β_end, T)` in float64, then `np.cumprod(1 − β)`; the schedule's own
/// table for other schedules.
fn reference_alphas_cumprod(schedule: &Schedule) -> Vec<f64> {
    let cfg = schedule.config();
    if cfg.beta_schedule == "linear" && cfg.trained_betas.is_none() && !cfg.rescale_betas_zero_snr {
        let betas = linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps);
        let mut acc = 1.0;
        betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    } else {
        schedule.alphas_cumprod().to_vec()
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

/// One level of the DDS-DDPM chain: the (possibly fractional) timestep the network is
/// evaluated at and its VP level ᾱ (σ² = 1/ᾱ − 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpmLevel {
    pub t: f64,
    pub alpha_bar: f64,
}

/// The DDS-DDPM levels at η, descending in noise: the usable integer timesteps, preceded (when
/// `from_eta`) by the fractional timestep t* with ᾱ(t*) = 1/(1 + η²), i.e. σ = η, the level
/// the input y is actually at. Without it (the reference code) the first step treats y as if
/// it were at σ_{t_max} < η, a bias of up to a few % of η² where the integer levels are
/// coarse. t* is skipped when η is beyond the schedule's largest σ. Empty when no timestep is
/// usable.
pub fn ddpm_levels(schedule: &Schedule, eta: f64, from_eta: bool) -> Result<Vec<DdpmLevel>> {
    let ts = usable_timesteps(schedule, eta)?;
    let ab = schedule.alphas_cumprod();
    let mut v = Vec::with_capacity(ts.len() + 1);
    if from_eta && !ts.is_empty() {
        let start = 1.0 / (1.0 + eta * eta);
        if start >= ab[ab.len() - 1] && start < ab[ts[0]] {
            v.push(DdpmLevel {
                t: schedule.timestep_for_alpha_bar(start)?,
                alpha_bar: start,
            });
        }
    }
    v.extend(ts.iter().map(|&t| DdpmLevel {
        t: t as f64,
        alpha_bar: ab[t],
    }));
    Ok(v)
}

/// DDS-DDPM ([`DdsMethod::Ddpm`]: from σ = η): one sample per chain of `y`; step noise from
/// `noise`.
pub fn dds_ddpm(
    den: &mut Denoiser,
    y: &Tensor,
    eta: f64,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    dds(den, DdsMethod::Ddpm, y, eta, noise, progress)
}

/// Any variant.
pub fn dds(
    den: &mut Denoiser,
    method: DdsMethod,
    y: &Tensor,
    eta: f64,
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    dds_with_budget(den, method, y, eta, None, noise, progress)
}

/// The steps of one DDS call.
enum Plan {
    Ddim(DdimGrid),
    Ddpm(Vec<DdpmLevel>),
}

impl Plan {
    fn new(schedule: &Schedule, method: DdsMethod, eta: f64) -> Result<Self> {
        check_eta(eta)?;
        Ok(match method {
            DdsMethod::Ddim => Self::Ddim(DdimGrid::new(schedule, eta)?),
            DdsMethod::DdimReference => Self::Ddim(DdimGrid::reference(schedule, eta)?),
            DdsMethod::Ddpm => Self::Ddpm(ddpm_levels(schedule, eta, true)?),
            DdsMethod::DdpmReference => Self::Ddpm(ddpm_levels(schedule, eta, false)?),
        })
    }

    fn thin(self, max_steps: Option<usize>) -> Self {
        let Some(n) = max_steps else { return self };
        match self {
            Self::Ddim(mut g) => {
                g.points = thin(&g.points, n);
                Self::Ddim(g)
            }
            Self::Ddpm(l) => Self::Ddpm(thin(&l, n)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Ddim(g) => g.len(),
            Self::Ddpm(l) => l.len(),
        }
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
/// [`dds_ddpm`] holds for any subsequence, σ_prev being the next chosen level), starting from
/// the first as the reference does.
pub fn dds_ddpm_on_timesteps(
    den: &mut Denoiser,
    y: &Tensor,
    ts: &[usize],
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    let ab = den.schedule().alphas_cumprod().to_vec();
    if let Some(&t) = ts.iter().find(|&&t| t >= ab.len()) {
        return invalid(format!(
            "DDS-DDPM timestep {t} is outside the schedule's {} steps",
            ab.len()
        ));
    }
    let levels: Vec<DdpmLevel> = ts
        .iter()
        .map(|&t| DdpmLevel {
            t: t as f64,
            alpha_bar: ab[t],
        })
        .collect();
    dds_ddpm_on_levels(den, y, &levels, noise, progress)
}

/// DDS-DDPM on given levels, strictly descending in noise (see [`ddpm_levels`]): start at
/// x = y and for each level, with σ² = 1/ᾱ − 1 and σ_prev the next level's (0 after the last),
/// x ← x + 2 (σ_prev − σ) ε̂(sqrt(ᾱ) x, t) + sqrt(σ² − σ_prev²) z (no noise on the last).
pub fn dds_ddpm_on_levels(
    den: &mut Denoiser,
    y: &Tensor,
    levels: &[DdpmLevel],
    noise: &mut BatchNoise,
    progress: DdsProgress,
) -> Result<Tensor> {
    check_inputs(den, y, noise)?;
    if levels.windows(2).any(|w| w[1].alpha_bar <= w[0].alpha_bar) {
        return invalid("DDS-DDPM levels must be strictly descending in noise");
    }
    if let Some(l) = levels
        .iter()
        .find(|l| !(l.alpha_bar > 0.0 && l.alpha_bar <= 1.0 && l.t.is_finite() && l.t >= 0.0))
    {
        return invalid(format!("DDS-DDPM got an invalid level {l:?}"));
    }
    let sigma = |l: &DdpmLevel| (1.0 / l.alpha_bar - 1.0).max(0.0).sqrt();
    let mut x = y.clone();
    let n = levels.len();
    for (i, l) in levels.iter().enumerate() {
        let s_t = sigma(l);
        let s_prev = levels.get(i + 1).map_or(0.0, sigma);
        let eps = den.eps(&x.affine(l.alpha_bar.sqrt(), 0.0)?, l.t, l.alpha_bar)?;
        x = (x + eps.affine(2.0 * (s_prev - s_t), 0.0)?)?;
        if i + 1 < n {
            let z = noise.draw_like(&x)?.to_device(x.device())?;
            x = (x + z.affine((s_t * s_t - s_prev * s_prev).sqrt(), 0.0)?)?;
        }
        progress(i + 1, n);
    }
    Ok(x)
}

/// Any variant with at most `max_steps` network evaluations per call (`None` = the full
/// step set): the DDIM grid or the DDPM levels thinned to evenly spaced indices with
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
    check_inputs(den, y, noise)?;
    match Plan::new(den.schedule(), method, eta)?.thin(max_steps) {
        Plan::Ddim(grid) => dds_ddim_on_grid(den, y, &grid, noise, progress),
        Plan::Ddpm(levels) if levels.is_empty() => Ok(y.clone()),
        Plan::Ddpm(levels) => dds_ddpm_on_levels(den, y, &levels, noise, progress),
    }
}

/// Network evaluations of one DDS call at η.
pub fn dds_nfe(schedule: &Schedule, method: DdsMethod, eta: f64) -> Result<usize> {
    Ok(Plan::new(schedule, method, eta)?.len())
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
