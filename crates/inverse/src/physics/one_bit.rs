//! `one-bit`: one-bit quantisation with logistic dither, the identity operator
//! ([`Identity`]) with the [`LogisticSign`] noise model: y ∈ {±1}, P(y = +1 | x) = sigmoid(x/τ)
//! independently per entry (τ default 0.4), no additive noise (σ must be 0).
//!
//! L(x; y) = −Σ log(1 + exp(−y x/τ)); the scale m reported to the PCS step-size rule is τ.
//! The reference code's one-bit target is this L raised to 1/(2m²), m = 0.36 (FFHQ) / 0.38
//! (ImageNet): in genprior `--likelihood-temperature 2m² --pcs-m m`, which `--protocol dpnp-*`
//! sets.
//! Baseline: y itself (the per-pixel maximum-likelihood estimate clipped to the image range).

use std::sync::Arc;

use super::denoise::Identity;
use crate::error::{InverseError, Result};
use crate::noise::LogisticSign;
use crate::operator::{Operator, ReferenceTask};
use crate::task::{inner_message, OptionDefault, OptionSpec, OptionType, TaskEntry, TaskOptions};

/// `one-bit`.
pub const ENTRIES: &[TaskEntry] = &[TaskEntry {
    names: &["one-bit"],
    summary: "A = I, y = ±1 with P(+1) = sigmoid(x/τ)",
    own_options: &[OptionSpec {
        name: "tau",
        help: "logistic dither temperature τ.",
        kind: OptionType::Float,
        default: OptionDefault::Float(0.4),
    }],
    default_noise_sigma: 0.0,
    build: build_one_bit,
}];

fn build_one_bit(o: &TaskOptions, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    if o.choice("noise")? != "gaussian" {
        return Err(InverseError::InvalidOption {
            task: "one-bit".into(),
            msg: "one-bit's noise is its logistic dither (set by --tau); --noise does not apply"
                .into(),
        });
    }
    Ok(Box::new(one_bit(shape, o.float("tau")?, o.noise_sigma()?)?))
}

/// The `one-bit` operator: the identity with logistic-sign noise of temperature `tau`.
/// `noise_sigma` must be 0: the logistic dither is the only randomness of this model.
pub fn one_bit(shape: [usize; 3], tau: f64, noise_sigma: f64) -> Result<Identity> {
    let task = "one-bit";
    super::check_shape(task, shape)?;
    super::check_sigma(task, "noise sigma", noise_sigma)?;
    if noise_sigma != 0.0 {
        return Err(InverseError::InvalidOption {
            task: task.into(),
            msg: format!("one-bit has no additive noise (its randomness is the logistic dither, set by tau); noise sigma must be 0, got {noise_sigma}"),
        });
    }
    let noise = LogisticSign::new(tau).map_err(|e| InverseError::InvalidOption {
        task: task.into(),
        msg: inner_message(e),
    })?;
    Identity::new(task, shape, Arc::new(noise), Some(ReferenceTask::OneBit))
}
