//! The noise schedule that goes with a network: a diffusers `scheduler_config.json`,
//! diffusers' `DDPMScheduler` defaults when a diffusers model has none, or the one
//! guided-diffusion's diffusion arguments describe (ADM checkpoints).

use std::path::{Path, PathBuf};

use genprior_diffusion::{Schedule, SchedulerConfig};
use genprior_nn::AdmConfig;

use crate::error::{PriorError, Result};

/// Where a [`crate::Prior`]'s schedule came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSource {
    /// A diffusers `scheduler_config.json` (the model's, or one given in the spec).
    File(PathBuf),
    /// The diffusion arguments of the ADM config (`diffusion_steps`, `noise_schedule`,
    /// `learn_sigma`, `predict_xstart`), see [`adm_scheduler_config`].
    AdmConfig,
    /// diffusers' `DDPMScheduler` defaults, because the model has no scheduler config
    /// (callers may want to say so: a library does not print).
    DdpmDefaults,
}

/// guided-diffusion's diffusion settings as a diffusers scheduler config: linear β
/// scaled to `diffusion_steps` (β from 1e-4·1000/T to 0.02·1000/T), learned-range
/// variance with `learn_sigma` (else fixed-small), x₀ prediction with `predict_xstart`
/// (else ε), x₀ clipped to [−1, 1]; every other field takes diffusers' defaults.
pub fn adm_scheduler_config(cfg: &AdmConfig) -> Result<SchedulerConfig> {
    if cfg.noise_schedule != "linear" {
        return Err(PriorError::UnsupportedNoiseSchedule(
            cfg.noise_schedule.clone(),
        ));
    }
    let scale = 1000.0 / cfg.diffusion_steps as f64;
    Ok(SchedulerConfig {
        num_train_timesteps: cfg.diffusion_steps,
        beta_schedule: "linear".into(),
        beta_start: scale * 1e-4,
        beta_end: scale * 0.02,
        variance_type: if cfg.learn_sigma {
            "learned_range"
        } else {
            "fixed_small"
        }
        .into(),
        prediction_type: if cfg.predict_xstart {
            "sample"
        } else {
            "epsilon"
        }
        .into(),
        clip_sample: true,
        clip_sample_range: 1.0,
        ..SchedulerConfig::default()
    })
}

/// The schedule of an ADM model, built in memory from its config.
pub fn adm_schedule(cfg: &AdmConfig) -> Result<Schedule> {
    Ok(Schedule::new(adm_scheduler_config(cfg)?)?)
}

/// A schedule from a `scheduler_config.json`; errors name the file.
pub fn schedule_from_file(path: &Path) -> Result<Schedule> {
    Schedule::from_file(path).map_err(|source| PriorError::SchedulerConfig {
        path: path.to_path_buf(),
        source,
    })
}

/// The schedule of a diffusers model: its scheduler config file, or diffusers'
/// `DDPMScheduler` defaults when it has none.
pub fn diffusers_schedule(config: Option<&Path>) -> Result<(Schedule, ScheduleSource)> {
    match config {
        Some(p) => Ok((
            schedule_from_file(p)?,
            ScheduleSource::File(p.to_path_buf()),
        )),
        None => Ok((Schedule::ddpm_default(), ScheduleSource::DdpmDefaults)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON genprior used to write to a temporary file for ADM models and read back
    /// with `Schedule::from_file` (kept here to pin the in-memory schedule to it).
    fn legacy_json(cfg: &AdmConfig) -> String {
        let scale = 1000.0 / cfg.diffusion_steps as f64;
        let v = serde_json::json!({
            "num_train_timesteps": cfg.diffusion_steps,
            "beta_schedule": "linear",
            "beta_start": scale * 1e-4,
            "beta_end": scale * 0.02,
            "variance_type": if cfg.learn_sigma { "learned_range" } else { "fixed_small" },
            "prediction_type": if cfg.predict_xstart { "sample" } else { "epsilon" },
            "clip_sample": true,
            "clip_sample_range": 1.0,
        });
        serde_json::to_string_pretty(&v).unwrap()
    }

    #[test]
    fn adm_schedule_is_bit_identical_to_the_json_round_trip() {
        let mut checked = 0;
        for preset in genprior_nn::adm::PRESETS {
            for steps in [1000usize, 4000, 2000, 250, 100, 50, 30] {
                for (learn_sigma, predict_xstart) in [(true, false), (false, false), (false, true)]
                {
                    let mut cfg = AdmConfig::preset(preset).unwrap();
                    cfg.diffusion_steps = steps;
                    cfg.learn_sigma = learn_sigma;
                    cfg.predict_xstart = predict_xstart;
                    let mem = adm_schedule(&cfg).unwrap();
                    let old = Schedule::from_json_str(&legacy_json(&cfg)).unwrap();
                    assert_eq!(mem.config(), old.config(), "{preset} T={steps}");
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(mem.betas()), bits(old.betas()), "{preset} T={steps}");
                    assert_eq!(bits(mem.alphas_cumprod()), bits(old.alphas_cumprod()));
                    assert_eq!(mem.variance_type(), old.variance_type());
                    assert_eq!(mem.prediction_type(), old.prediction_type());
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * 7 * 3);
        // Too few steps for a linear schedule (β_T > 1): an error both ways.
        let mut cfg = AdmConfig::preset("adm-ffhq-256").unwrap();
        cfg.diffusion_steps = 7;
        assert!(adm_schedule(&cfg).is_err());
        assert!(Schedule::from_json_str(&legacy_json(&cfg)).is_err());
    }

    #[test]
    fn adm_schedule_rejects_other_noise_schedules() {
        let mut cfg = AdmConfig::preset("adm-ffhq-256").unwrap();
        cfg.noise_schedule = "cosine".into();
        let e = adm_schedule(&cfg).unwrap_err().to_string();
        assert!(e.contains("noise_schedule `cosine`"), "{e}");
    }
}
