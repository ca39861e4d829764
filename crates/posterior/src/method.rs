//! The posterior-sampler seam: one trait every method implements, and the registry the CLI,
//! the benchmark and the tests iterate.
//!
//! A method is one file under this crate that declares a [`MethodEntry`] (its name, a
//! one-line summary, its [`OptionSpec`]s and a builder) and implements [`PosteriorSampler`] for
//! its typed configuration. Adding a method = that file + one line in [`methods`].
//!
//! Defaults that depend on the problem are keyed on the operator's properties (linear,
//! Gaussian, sign-ambiguous, which reference-paper task it corresponds to), never on task-name
//! strings; the builder receives the operator for that.

use candle_core::Tensor;
use genprior_diffusion::{Schedule, ScoreModel};
use genprior_inverse::Operator;
use serde_json::Value;

use crate::error::{PosteriorError, Result};
use crate::options::{MethodOptions, OptionSpec, Resolved};

/// What a posterior sampler is asked to solve: the prior (network + schedule), the physics,
/// and the measurement `y` (batch 1, shared by every chain, or one per chain).
#[derive(Clone, Copy)]
pub struct Problem<'a> {
    pub model: &'a dyn ScoreModel,
    pub schedule: &'a Schedule,
    pub op: &'a dyn Operator,
    pub y: &'a Tensor,
}

/// The chains to run: `count` chains, all randomness from `seed`. Chain `i` of the call is
/// chain `first_index + i` of the run, and owns that index's noise streams, so a run split
/// into several calls gives the same chains as one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chains {
    pub count: usize,
    pub seed: u64,
    pub first_index: u64,
}

impl Chains {
    /// `count` chains of the run `seed`, starting at index 0.
    pub fn new(count: usize, seed: u64) -> Self {
        Self {
            count,
            seed,
            first_index: 0,
        }
    }
}

/// Progress of a sampler call, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodProgress {
    /// A top-level step finished (a DPnP outer step, a DPS step); `status` is a short line.
    Step {
        step: usize,
        total: usize,
        status: String,
    },
    /// An inner loop advanced (DDS steps, warm-start steps, PCS starting).
    Inner {
        step: usize,
        total: usize,
        label: String,
    },
}

/// What a sampler call returns.
#[derive(Debug, Clone)]
pub struct SamplerOutput {
    /// `(count, C, H, W)` samples.
    pub samples: Tensor,
    /// Batched network evaluations (warm start included).
    pub nfe: usize,
    /// Whether each network evaluation was followed by a backward pass through the network.
    pub backprop: bool,
    /// Mean acceptance rate of an inner MCMC, where the method has one.
    pub mean_acceptance: Option<f64>,
    /// Per-step record (JSON array), or null.
    pub trace: Value,
}

impl SamplerOutput {
    /// The output of a method without an inner MCMC or a per-step record (no acceptance rate,
    /// a null trace).
    pub fn new(samples: Tensor, nfe: usize, backprop: bool) -> Self {
        Self {
            samples,
            nfe,
            backprop,
            mean_acceptance: None,
            trace: Value::Null,
        }
    }
}

/// A posterior sampler with its resolved configuration.
pub trait PosteriorSampler {
    /// The registry name (`dpnp-ddim`, `dps`, ...).
    fn method(&self) -> &'static str;
    /// Every resolved hyperparameter, for reports (`report.json`, benchmark settings).
    fn settings(&self) -> Value;
    /// Top-level steps of one call (for progress bars).
    fn total_steps(&self) -> usize;
    /// Draws `chains.count` posterior samples of `problem`.
    fn sample(
        &self,
        problem: &Problem,
        chains: &Chains,
        progress: &mut dyn FnMut(MethodProgress),
    ) -> Result<SamplerOutput>;
}

/// A method in the registry.
pub struct MethodEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub options: &'static [OptionSpec],
    /// Builds the sampler from checked options, with defaults chosen for `op`.
    pub build: fn(&Resolved, &dyn Operator) -> Result<Box<dyn PosteriorSampler>>,
}

/// Every method, in table order.
pub fn methods() -> &'static [MethodEntry] {
    &[
        crate::dpnp::DPNP_DDIM,
        crate::dpnp::DPNP_DDPM,
        crate::dps::DPS,
        crate::diffpir::DIFFPIR,
        crate::pigdm::PIGDM,
        crate::reddiff::REDDIFF,
        crate::ddrm::DDRM,
        crate::ddnm::DDNM,
        crate::daps::DAPS,
        crate::lgd::LGD,
    ]
}

/// Registry names, in table order.
pub fn method_names() -> Vec<&'static str> {
    methods().iter().map(|m| m.name).collect()
}

/// The registry entry called `name`.
pub fn method(name: &str) -> Result<&'static MethodEntry> {
    methods().iter().find(|m| m.name == name).ok_or_else(|| {
        PosteriorError::Invalid(format!(
            "unknown method `{name}`; expected one of: {}",
            method_names().join(", ")
        ))
    })
}

/// Builds method `name` for `op` from the given options (unknown options are an error).
pub fn build_sampler(
    name: &str,
    options: &MethodOptions,
    op: &dyn Operator,
) -> Result<Box<dyn PosteriorSampler>> {
    let entry = method(name)?;
    let resolved = options.resolve(entry.name, entry.options)?;
    (entry.build)(&resolved, op)
}

/// Every option any method declares, once per name (the first declaration wins; the CLI makes
/// one flag of each).
pub fn all_options() -> Vec<&'static OptionSpec> {
    let mut out: Vec<&'static OptionSpec> = Vec::new();
    for m in methods() {
        for o in m.options {
            if !out.iter().any(|p| p.name == o.name) {
                out.push(o);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::OptionType;

    #[test]
    fn registry_is_consistent() {
        let names = method_names();
        // Unique names, the reference methods among them.
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for m in ["dpnp-ddim", "dpnp-ddpm", "dps"] {
            assert!(names.contains(&m), "{names:?}");
        }
        // Options shared between methods have one type.
        for m in methods() {
            for o in m.options {
                for n in methods() {
                    for p in n.options.iter().filter(|p| p.name == o.name) {
                        let same = matches!(
                            (o.kind, p.kind),
                            (OptionType::Float, OptionType::Float)
                                | (OptionType::Integer, OptionType::Integer)
                        ) || o.kind == p.kind;
                        assert!(same, "option {} of {} and {}", o.name, m.name, n.name);
                    }
                }
            }
        }
        assert!(method("dpnp").is_err());
    }
}
