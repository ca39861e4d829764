//! Variance-preserving noise schedules, read from diffusers' `scheduler_config.json`
//! (`DDPMScheduler` / `DDIMScheduler`) or built in code.
//!
//! Numerics follow diffusers/PyTorch on the CPU so that the step functions match
//! diffusers to ~1e-6: betas are rounded to f32 the way `torch.linspace` / `torch.tensor`
//! produce them, `alphas = 1 - betas` is taken in f32, and the cumulative product is
//! accumulated in f64 and rounded to f32 at every index (PyTorch's CPU `cumprod`
//! accumulates in double). All values are then stored as `f64`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{config, invalid, Error, Result};

/// The raw, diffusers-named scheduler configuration. Missing keys take diffusers'
/// defaults (those of `DDPMScheduler` / `DDIMScheduler`, which agree on every shared
/// key); unknown keys (`_class_name`, `_diffusers_version`, ...) are ignored. String
/// fields are validated by [`Schedule::new`], which names the field in its error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// `linear` | `scaled_linear` | `squaredcos_cap_v2` | `sigmoid` (ignored when
    /// `trained_betas` is given).
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    /// `fixed_small` | `fixed_small_log` | `fixed_large` | `fixed_large_log` | `learned`
    /// | `learned_range` (DDPM only).
    pub variance_type: String,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// `epsilon` | `v_prediction` | `sample`.
    pub prediction_type: String,
    /// Deprecated diffusers key (old configs): `false` means `prediction_type = sample`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predict_epsilon: Option<bool>,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    /// `leading` | `linspace` | `trailing`.
    pub timestep_spacing: String,
    pub steps_offset: usize,
    /// DDIM only: ᾱ used after the last step (1 if true, else ᾱ₀).
    pub set_alpha_to_one: bool,
    pub rescale_betas_zero_snr: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            variance_type: "fixed_small".into(),
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: "epsilon".into(),
            predict_epsilon: None,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: "leading".into(),
            steps_offset: 0,
            set_alpha_to_one: true,
            rescale_betas_zero_snr: false,
        }
    }
}

impl SchedulerConfig {
    /// Parse a `scheduler_config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|source| Error::Json {
                what: "scheduler config".into(),
                source,
            })?;
        let has_prediction_type = value.get("prediction_type").is_some();
        let mut cfg: Self = serde_json::from_value(value).map_err(|source| Error::Json {
            what: "scheduler config".into(),
            source,
        })?;
        if !has_prediction_type && cfg.predict_epsilon == Some(false) {
            cfg.prediction_type = "sample".into();
        }
        Ok(cfg)
    }

    /// Read a `scheduler_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::Json { source, .. } => Error::Json {
                what: path.display().to_string(),
                source,
            },
            other => other,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    /// The Glide/improved-DDPM cosine schedule, β capped at 0.999.
    SquaredCosCapV2,
    Sigmoid,
    /// Betas given explicitly (`trained_betas`).
    Trained,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    /// The network predicts the noise ε.
    Epsilon,
    /// The network predicts v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x₀.
    VPrediction,
    /// The network predicts x₀.
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
    FixedLargeLog,
    Learned,
    LearnedRange,
}

impl VarianceType {
    /// Whether the network outputs 2C channels (mean part, variance part).
    pub fn is_learned(self) -> bool {
        matches!(self, VarianceType::Learned | VarianceType::LearnedRange)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Linspace,
    Trailing,
}

fn parse_enum<T: Copy>(field: &str, value: &str, options: &[(&str, T)]) -> Result<T> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            Error::Config(format!(
                "unknown {field} {value:?} (supported: {})",
                names.join(", ")
            ))
        })
}

/// One step of an inference plan: the current timestep and the one the step moves
/// to (`None` = past the end of the chain, i.e. ᾱ_prev = 1, or ᾱ₀ for DDIM with
/// `set_alpha_to_one = false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPair {
    pub t: usize,
    pub prev: Option<usize>,
}

/// A validated noise schedule: β_t, α_t = 1 − β_t, ᾱ_t = Π α_s for t = 0..T−1, plus
/// the prediction/variance/clipping settings the step functions use.
#[derive(Clone, Debug)]
pub struct Schedule {
    config: SchedulerConfig,
    beta_schedule: BetaSchedule,
    prediction_type: PredictionType,
    variance_type: VarianceType,
    timestep_spacing: TimestepSpacing,
    betas: Vec<f64>,
    alphas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    log_alphas_cumprod: Vec<f64>,
}

impl Schedule {
    /// Validate a configuration and compute the schedule.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let n = config.num_train_timesteps;
        if n == 0 {
            return config_err("num_train_timesteps must be at least 1");
        }
        let beta_schedule = if config.trained_betas.is_some() {
            BetaSchedule::Trained
        } else {
            parse_enum(
                "beta_schedule",
                &config.beta_schedule,
                &[
                    ("linear", BetaSchedule::Linear),
                    ("scaled_linear", BetaSchedule::ScaledLinear),
                    ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
                    ("sigmoid", BetaSchedule::Sigmoid),
                ],
            )?
        };
        let prediction_type = parse_enum(
            "prediction_type",
            &config.prediction_type,
            &[
                ("epsilon", PredictionType::Epsilon),
                ("v_prediction", PredictionType::VPrediction),
                ("sample", PredictionType::Sample),
            ],
        )?;
        let variance_type = parse_enum(
            "variance_type",
            &config.variance_type,
            &[
                ("fixed_small", VarianceType::FixedSmall),
                ("fixed_small_log", VarianceType::FixedSmallLog),
                ("fixed_large", VarianceType::FixedLarge),
                ("fixed_large_log", VarianceType::FixedLargeLog),
                ("learned", VarianceType::Learned),
                ("learned_range", VarianceType::LearnedRange),
            ],
        )?;
        let timestep_spacing = parse_enum(
            "timestep_spacing",
            &config.timestep_spacing,
            &[
                ("leading", TimestepSpacing::Leading),
                ("linspace", TimestepSpacing::Linspace),
                ("trailing", TimestepSpacing::Trailing),
            ],
        )?;
        if !(config.clip_sample_range.is_finite() && config.clip_sample_range > 0.0) {
            return config_err(format!(
                "clip_sample_range must be a positive number, got {}",
                config.clip_sample_range
            ));
        }
        if config.thresholding {
            let r = config.dynamic_thresholding_ratio;
            if !(r > 0.0 && r <= 1.0) {
                return config_err(format!(
                    "dynamic_thresholding_ratio must be in (0, 1], got {r}"
                ));
            }
            if !(config.sample_max_value.is_finite() && config.sample_max_value >= 1.0) {
                return config_err(format!(
                    "sample_max_value must be a finite number >= 1, got {}",
                    config.sample_max_value
                ));
            }
        }

        let betas_f32: Vec<f32> = match beta_schedule {
            BetaSchedule::Trained => {
                let tb = config.trained_betas.as_deref().unwrap_or(&[]);
                if tb.len() != n {
                    return config_err(format!(
                        "trained_betas has {} values but num_train_timesteps is {n}",
                        tb.len()
                    ));
                }
                tb.iter().map(|&b| b as f32).collect()
            }
            BetaSchedule::Linear => {
                check_beta_range(&config)?;
                torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, n)
            }
            BetaSchedule::ScaledLinear => {
                check_beta_range(&config)?;
                torch_linspace_f32(
                    config.beta_start.sqrt() as f32,
                    config.beta_end.sqrt() as f32,
                    n,
                )
                .into_iter()
                .map(|b| b * b)
                .collect()
            }
            BetaSchedule::SquaredCosCapV2 => cosine_betas(n, 0.999)
                .into_iter()
                .map(|b| b as f32)
                .collect(),
            BetaSchedule::Sigmoid => {
                check_beta_range(&config)?;
                let scale = (config.beta_end - config.beta_start) as f32;
                let start = config.beta_start as f32;
                torch_linspace_f32(-6.0, 6.0, n)
                    .into_iter()
                    .map(|x| {
                        let s = (1.0 / (1.0 + (-(x as f64)).exp())) as f32;
                        s * scale + start
                    })
                    .collect()
            }
        };
        let betas_f32 = if config.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas_f32)
        } else {
            betas_f32
        };
        for (i, &b) in betas_f32.iter().enumerate() {
            // β = 1 is allowed at the very end (zero terminal SNR); anything else
            // outside (0, 1] makes the process ill-defined.
            if !(b.is_finite() && b > 0.0 && b <= 1.0) {
                return config_err(format!("beta[{i}] = {b} is outside (0, 1]"));
            }
        }
        let alphas_f32: Vec<f32> = betas_f32.iter().map(|&b| 1.0f32 - b).collect();
        let mut acc = 1.0f64;
        let alphas_cumprod: Vec<f64> = alphas_f32
            .iter()
            .map(|&a| {
                acc *= a as f64;
                acc as f32 as f64
            })
            .collect();
        let log_alphas_cumprod = alphas_cumprod.iter().map(|a| a.ln()).collect();
        Ok(Self {
            config,
            beta_schedule,
            prediction_type,
            variance_type,
            timestep_spacing,
            betas: betas_f32.iter().map(|&b| b as f64).collect(),
            alphas: alphas_f32.iter().map(|&a| a as f64).collect(),
            alphas_cumprod,
            log_alphas_cumprod,
        })
    }

    /// Parse and validate a `scheduler_config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::new(SchedulerConfig::from_json_str(text)?)
    }

    /// Read and validate a `scheduler_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(SchedulerConfig::from_file(path)?)
    }

    /// diffusers' `DDPMScheduler()` defaults: T = 1000, linear β from 1e-4 to 0.02,
    /// ε prediction, fixed_small variance, clip_sample with range 1.
    pub fn ddpm_default() -> Self {
        // The default configuration is valid by construction.
        match Self::new(SchedulerConfig::default()) {
            Ok(s) => s,
            Err(e) => unreachable!("default scheduler config rejected: {e}"),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }
    pub fn num_train_timesteps(&self) -> usize {
        self.config.num_train_timesteps
    }
    pub fn beta_schedule(&self) -> BetaSchedule {
        self.beta_schedule
    }
    pub fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
    pub fn variance_type(&self) -> VarianceType {
        self.variance_type
    }
    pub fn timestep_spacing(&self) -> TimestepSpacing {
        self.timestep_spacing
    }
    pub fn clip_sample(&self) -> bool {
        self.config.clip_sample
    }
    pub fn thresholding(&self) -> bool {
        self.config.thresholding
    }
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }
    /// ᾱ_t for t = 0..T−1.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// ᾱ_t at an integer training timestep.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        self.alphas_cumprod.get(t).copied().ok_or_else(|| {
            Error::Invalid(format!(
                "timestep {t} is outside [0, {})",
                self.num_train_timesteps()
            ))
        })
    }

    /// ᾱ after step `prev` (`None` = past the end: 1).
    pub fn alpha_bar_prev(&self, prev: Option<usize>) -> Result<f64> {
        match prev {
            Some(p) => self.alpha_bar(p),
            None => Ok(1.0),
        }
    }

    /// ᾱ at a fractional training timestep t ∈ [0, T−1]: log ᾱ is interpolated linearly
    /// between the neighbouring integer steps (exact at integers). This is the
    /// continuous-time extension the DDS-DDIM refined grid evaluates the network at
    /// (positional/fourier time embeddings accept any real t).
    pub fn alpha_bar_at(&self, t: f64) -> Result<f64> {
        let la = self.log_alpha_bar_at(t)?;
        if t.fract() == 0.0 {
            // Exactly the table value at integer steps (no exp/ln round trip).
            return Ok(self.alphas_cumprod[t as usize]);
        }
        Ok(la.exp())
    }

    /// log ᾱ(t) for fractional t (see [`Schedule::alpha_bar_at`]).
    pub fn log_alpha_bar_at(&self, t: f64) -> Result<f64> {
        let last = (self.num_train_timesteps() - 1) as f64;
        if !(t.is_finite() && t >= 0.0 && t <= last) {
            return invalid(format!("timestep {t} is outside [0, {last}]"));
        }
        let i = t.floor() as usize;
        let f = t - i as f64;
        let la = &self.log_alphas_cumprod;
        if f == 0.0 || i + 1 >= la.len() {
            return Ok(la[i.min(la.len() - 1)]);
        }
        Ok((1.0 - f) * la[i] + f * la[i + 1])
    }

    /// Inverse of [`Schedule::alpha_bar_at`]: the fractional t ∈ [0, T−1] whose
    /// log-interpolated ᾱ(t) equals `alpha_bar`. Errors when `alpha_bar` lies outside
    /// [ᾱ_{T−1}, ᾱ_0] (callers wanting a clamp compare against
    /// `alphas_cumprod()` first).
    pub fn timestep_for_alpha_bar(&self, alpha_bar: f64) -> Result<f64> {
        let la = &self.log_alphas_cumprod;
        let (first, last) = (la[0], la[la.len() - 1]);
        if !(alpha_bar > 0.0 && alpha_bar.is_finite()) {
            return invalid(format!("alpha_bar must be positive, got {alpha_bar}"));
        }
        let target = alpha_bar.ln();
        // Small slack for round-off at the ends.
        let slack = 1e-12 * (1.0 + target.abs());
        if target > first + slack || target < last - slack {
            return invalid(format!(
                "alpha_bar {alpha_bar} is outside the schedule's range [{}, {}]",
                last.exp(),
                first.exp()
            ));
        }
        if target >= first {
            return Ok(0.0);
        }
        if target <= last {
            return Ok((la.len() - 1) as f64);
        }
        // log ᾱ is strictly decreasing (β > 0): binary search the bracketing interval.
        let (mut lo, mut hi) = (0usize, la.len() - 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if la[mid] >= target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let f = (la[lo] - target) / (la[lo] - la[hi]);
        Ok(lo as f64 + f)
    }

    /// VE noise level σ(t) = sqrt(1/ᾱ(t) − 1) at a fractional timestep.
    pub fn sigma_at(&self, t: f64) -> Result<f64> {
        let ab = self.alpha_bar_at(t)?;
        Ok((1.0 / ab - 1.0).sqrt())
    }

    /// The fractional timestep whose VE noise level is σ (ᾱ = 1/(1+σ²)).
    pub fn timestep_for_sigma(&self, sigma: f64) -> Result<f64> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return invalid(format!(
                "sigma must be a finite non-negative number, got {sigma}"
            ));
        }
        self.timestep_for_alpha_bar(1.0 / (1.0 + sigma * sigma))
    }

    fn check_steps(&self, num_inference_steps: usize) -> Result<()> {
        let n = self.num_train_timesteps();
        if num_inference_steps == 0 {
            return invalid("the number of sampling steps must be at least 1");
        }
        if num_inference_steps > n {
            return invalid(format!(
                "{num_inference_steps} sampling steps requested but the schedule has only \
                 {n} training timesteps"
            ));
        }
        Ok(())
    }

    /// The descending timestep list diffusers' `set_timesteps(num_inference_steps)`
    /// produces (identical for DDPMScheduler and DDIMScheduler), honouring
    /// `timestep_spacing` and `steps_offset`.
    ///
    /// Deviation: for some step counts diffusers' `trailing` spacing appends a spurious
    /// final timestep −1 (numpy `arange` round-off; diffusers would then index ᾱ[−1],
    /// the *last* entry); it is dropped here.
    pub fn timesteps(&self, num_inference_steps: usize) -> Result<Vec<usize>> {
        self.check_steps(num_inference_steps)?;
        let n_train = self.num_train_timesteps();
        let k = num_inference_steps;
        let ts: Vec<i64> = match self.timestep_spacing {
            TimestepSpacing::Linspace => {
                // np.linspace(0, T-1, k).round()[::-1]
                let stop = (n_train - 1) as f64;
                let mut v: Vec<f64> = if k == 1 {
                    vec![0.0]
                } else {
                    let step = stop / (k - 1) as f64;
                    let mut v: Vec<f64> = (0..k).map(|i| i as f64 * step).collect();
                    v[k - 1] = stop;
                    v
                };
                v.reverse();
                v.into_iter().map(|x| x.round_ties_even() as i64).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = n_train / k;
                (0..k)
                    .rev()
                    .map(|i| (i * ratio + self.config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                // np.round(np.arange(T, 0, -T/k)) - 1, with numpy's arange semantics.
                let start = n_train as f64;
                let step = -(n_train as f64) / k as f64;
                let len = ((0.0 - start) / step).ceil().max(0.0) as usize;
                let delta = (start + step) - start;
                (0..len)
                    .map(|i| (start + i as f64 * delta).round_ties_even() as i64 - 1)
                    .filter(|&t| t >= 0)
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(ts.len());
        for t in ts {
            if t < 0 || t as usize >= n_train {
                return invalid(format!(
                    "timestep {t} from {k} steps with {:?} spacing and steps_offset {} is outside \
                     [0, {n_train})",
                    self.timestep_spacing, self.config.steps_offset
                ));
            }
            out.push(t as usize);
        }
        Ok(out)
    }

    /// DDPM inference plan: each timestep of [`Schedule::timesteps`] steps to the next
    /// one in the list (diffusers' `previous_timestep`), the last to "before 0".
    pub fn ddpm_plan(&self, num_inference_steps: usize) -> Result<Vec<StepPair>> {
        let ts = self.timesteps(num_inference_steps)?;
        Ok(ts
            .iter()
            .enumerate()
            .map(|(i, &t)| StepPair {
                t,
                prev: ts.get(i + 1).copied(),
            })
            .collect())
    }

    /// DDIM inference plan: as diffusers' `DDIMScheduler.step`, the previous timestep is
    /// always `t − T // num_inference_steps` (whatever the spacing), `None` below 0.
    pub fn ddim_plan(&self, num_inference_steps: usize) -> Result<Vec<StepPair>> {
        let ts = self.timesteps(num_inference_steps)?;
        let ratio = self.num_train_timesteps() / num_inference_steps;
        Ok(ts
            .into_iter()
            .map(|t| StepPair {
                t,
                prev: t.checked_sub(ratio),
            })
            .collect())
    }

    /// ᾱ DDIM uses after the last step: 1 with `set_alpha_to_one`, else ᾱ₀.
    pub fn final_alpha_cumprod(&self) -> f64 {
        if self.config.set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }
}

fn config_err<T>(msg: impl Into<String>) -> Result<T> {
    config(msg)
}

fn check_beta_range(cfg: &SchedulerConfig) -> Result<()> {
    let (a, b) = (cfg.beta_start, cfg.beta_end);
    if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0 && a < 1.0 && b < 1.0) {
        return config_err(format!(
            "beta_start ({a}) and beta_end ({b}) must lie in (0, 1)"
        ));
    }
    Ok(())
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU (scalar path): the first
/// half counts up from `start`, the second half down from `end`.
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
}

/// The cosine schedule of Nichol & Dhariwal (diffusers `squaredcos_cap_v2`):
/// ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta),
/// computed in f64 with real (not integer) division.
pub fn cosine_betas(n: usize, max_beta: f64) -> Vec<f64> {
    let alpha_bar = |s: f64| {
        ((s + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), in f32 like
/// PyTorch.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    let mut sqrt_ab: Vec<f32> = betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b) as f64;
            (acc as f32).sqrt()
        })
        .collect();
    let a0 = sqrt_ab[0];
    let at = sqrt_ab[sqrt_ab.len() - 1];
    for v in sqrt_ab.iter_mut() {
        *v -= at;
    }
    let scale = a0 / (a0 - at);
    for v in sqrt_ab.iter_mut() {
        *v *= scale;
    }
    let ab: Vec<f32> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for i in 1..ab.len() {
        out.push(1.0 - ab[i] / ab[i - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_clear_errors() {
        for (field, json) in [
            ("beta_schedule", r#"{"beta_schedule": "cosine"}"#),
            ("prediction_type", r#"{"prediction_type": "eps"}"#),
            ("variance_type", r#"{"variance_type": "small"}"#),
            ("timestep_spacing", r#"{"timestep_spacing": "uniform"}"#),
        ] {
            let err = Schedule::from_json_str(json).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(err.contains("supported"), "{err}");
        }
        let err = Schedule::from_json_str(r#"{"trained_betas": [0.1, 0.2]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trained_betas"), "{err}");
        assert!(Schedule::from_json_str("{not json").is_err());
    }

    #[test]
    fn predict_epsilon_false_means_sample() {
        let s = Schedule::from_json_str(r#"{"predict_epsilon": false}"#).unwrap();
        assert_eq!(s.prediction_type(), PredictionType::Sample);
        let s = Schedule::from_json_str(
            r#"{"predict_epsilon": false, "prediction_type": "v_prediction"}"#,
        )
        .unwrap();
        assert_eq!(s.prediction_type(), PredictionType::VPrediction);
    }

    #[test]
    fn steps_validation() {
        let s = Schedule::ddpm_default();
        assert!(s
            .timesteps(0)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(s.timesteps(1001).unwrap_err().to_string().contains("1000"));
        let cfg = SchedulerConfig {
            steps_offset: 1,
            ..Default::default()
        };
        let s = Schedule::new(cfg).unwrap();
        assert!(s.timesteps(1000).is_err());
        assert_eq!(s.timesteps(10).unwrap()[0], 901);
    }

    #[test]
    fn alpha_bar_interpolation_and_inverse() {
        let s = Schedule::ddpm_default();
        let ab = s.alphas_cumprod();
        // Exact at integers.
        for t in [0usize, 1, 500, 999] {
            assert_eq!(s.alpha_bar_at(t as f64).unwrap(), ab[t]);
        }
        // Log-linear in between: geometric mean at the midpoint.
        let mid = s.alpha_bar_at(10.5).unwrap();
        assert!((mid - (ab[10] * ab[11]).sqrt()).abs() < 1e-15);
        // Monotone and inverted exactly.
        let mut prev = f64::INFINITY;
        for k in 0..=400 {
            let t = k as f64 * 999.0 / 400.0;
            let a = s.alpha_bar_at(t).unwrap();
            assert!(a < prev);
            prev = a;
            let back = s.timestep_for_alpha_bar(a).unwrap();
            assert!((back - t).abs() < 1e-7, "t {t} back {back}");
        }
        let sigma = s.sigma_at(123.25).unwrap();
        assert!((s.timestep_for_sigma(sigma).unwrap() - 123.25).abs() < 1e-7);
        assert!(s.alpha_bar_at(-0.5).is_err());
        assert!(s.alpha_bar_at(999.5).is_err());
        assert!(s.alpha_bar_at(f64::NAN).is_err());
        assert!(s.timestep_for_alpha_bar(0.99999).is_err());
        assert!(s.timestep_for_alpha_bar(1e-9).is_err());
    }

    #[test]
    fn cosine_schedule_matches_closed_form() {
        // ᾱ_t of the uncapped steps equals f(t+1)/f(0), f(s) = cos²((s/T+0.008)/1.008·π/2).
        let n = 1000;
        let b = cosine_betas(n, 0.999);
        let f = |s: f64| {
            ((s / n as f64 + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                .cos()
                .powi(2)
        };
        let mut acc = 1.0;
        for (t, &beta) in b.iter().enumerate().take(990) {
            acc *= 1.0 - beta;
            let expect = f((t + 1) as f64) / f(0.0);
            assert!((acc - expect).abs() < 1e-12 * (1.0 + expect), "t {t}");
        }
        assert_eq!(b[n - 1], 0.999);
        assert!(b.iter().all(|&x| x > 0.0 && x <= 0.999));
    }
}
