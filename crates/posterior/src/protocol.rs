//! Published protocols as presets (`--protocol`): every setting the reference configs of
//! Xu & Chi's DPnP code (`x1xu/diffusion-plug-and-play`, `configs/*_pnp.yaml`,
//! `configs/*_lgd.yaml`, `configs/*_dps.yaml`, `configs/diffusion_config_pnp.yaml`) set, as
//! task options and method options, chosen per task by the operator's
//! [`Operator::reference_task`] and likelihood (never by task name).
//!
//! - `dpnp-ffhq` / `dpnp-imagenet`: DPnP-DDIM on the reference grid (`dds-grid reference`),
//!   η from 0.4 (5 steps) down to 0.16 (16 outer steps), unadjusted Langevin PCS (the
//!   reference has its Metropolis step commented out), 1000 PCS steps, reg 50; Gaussian tasks
//!   at noise σ 0.2 with likelihood σ 0.15 (the configs' default `multiplier`); per task the
//!   PCS `scale` (super-resolution 0.6 / 1000, coded phase retrieval 0.8 / 1.2, one-bit 0.2 /
//!   0.32), one-bit at τ 0.4 with m = 0.36 / 0.38, i.e. likelihood temperature T = 2m² and
//!   `pcs-m` m; the 500-step warm start (`timestep_respacing: 500`): DPS with ζ 0.8 for
//!   coded phase retrieval on faces, LGD-MC elsewhere with the configs' ζ (`scale`) and λ
//!   (`lambda`; 1e-3 where a config omits it, the code's default), 5 draws of r = 0.05 drawn
//!   uniformly as the reference code draws them.
//! - `dps-ffhq`: DPS, 1000 steps, the DPnP paper's DPS configs: ζ 0.6 on super-resolution,
//!   0.8 on coded phase retrieval (norm misfit, σ 0.2), and on one-bit the mean softplus loss
//!   with ζ 100.
//!
//! Tasks without a reference config get the protocol's common settings only (and genprior's
//! per-operator defaults for the rest); [`Protocol::notes`] says which applied. The CLI applies
//! a protocol's values only where the user gave no flag of that name: explicit flags win.

use genprior_inverse::{Operator, ReferenceTask};
use serde_json::{json, Map, Value};

use crate::error::{invalid, Result};
use crate::options::{MethodOptions, OptionValue};

/// The protocol names, for `--protocol`.
pub const PROTOCOLS: &[&str] = &["dpnp-ffhq", "dpnp-imagenet", "dps-ffhq"];

/// A protocol resolved for one operator.
#[derive(Debug, Clone)]
pub struct Protocol {
    pub name: &'static str,
    /// The method the protocol runs.
    pub method: &'static str,
    /// Method options (flag name → value).
    pub method_options: MethodOptions,
    /// Task options (flag name → value), applied where the task declares them.
    pub task_options: Vec<(&'static str, f64)>,
    /// Which reference config the settings come from (or that none exists for this task).
    pub notes: String,
}

impl Protocol {
    /// Every value the protocol sets, for `report.json`.
    pub fn to_json(&self) -> Value {
        let mut task = Map::new();
        for (k, v) in &self.task_options {
            task.insert(k.to_string(), json!(v));
        }
        json!({
            "name": self.name,
            "method": self.method,
            "method_options": self.method_options.to_json(),
            "task_options": Value::Object(task),
            "notes": self.notes,
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dataset {
    Ffhq,
    Imagenet,
}

/// The protocol `name` for `op`.
pub fn protocol(name: &str, op: &dyn Operator) -> Result<Protocol> {
    match name {
        "dpnp-ffhq" => Ok(dpnp(op, Dataset::Ffhq)),
        "dpnp-imagenet" => Ok(dpnp(op, Dataset::Imagenet)),
        "dps-ffhq" => Ok(dps_ffhq(op)),
        o => invalid(format!(
            "unknown protocol `{o}`; expected one of: {}",
            PROTOCOLS.join(", ")
        )),
    }
}

fn set(o: &mut MethodOptions, name: &str, v: impl Into<OptionValue>) {
    o.set(name, v);
}

fn dpnp(op: &dyn Operator, d: Dataset) -> Protocol {
    let (name, file) = match d {
        Dataset::Ffhq => ("dpnp-ffhq", "ffhq"),
        Dataset::Imagenet => ("dpnp-imagenet", "imagenet"),
    };
    let mut o = MethodOptions::new();
    // configs/diffusion_config_pnp.yaml and the PCS code (condition_methods.py, `mala`).
    set(&mut o, "outer-steps", 16usize);
    set(&mut o, "k-start", 4usize);
    set(&mut o, "eta-max", 0.4);
    set(&mut o, "eta-min", 0.16);
    set(&mut o, "dds-grid", "reference");
    set(&mut o, "pcs", "ula");
    set(&mut o, "pcs-steps", 1000usize);
    set(&mut o, "pcs-reg", 50.0);
    // The warm start: a 500-step guided DDPM run (gaussian_diffusion.py, `std_config`).
    set(&mut o, "lgd-warm-steps", 500usize);
    set(&mut o, "dps-steps", 500usize);
    set(&mut o, "lgd-mc-samples", 5usize);
    set(&mut o, "lgd-r", 0.05);
    set(&mut o, "lgd-draws", "uniform");
    let mut task: Vec<(&'static str, f64)> = Vec::new();
    if op.noise().is_gaussian() {
        task.push(("noise-sigma", 0.2));
        task.push(("likelihood-sigma", 0.15));
    }
    let imagenet = d == Dataset::Imagenet;
    let pick = |ffhq: f64, inet: f64| if imagenet { inet } else { ffhq };
    let notes = match op.reference_task() {
        Some(ReferenceTask::SuperResolution) => {
            set(&mut o, "pcs-scale", pick(0.6, 1000.0));
            set(&mut o, "warm-start", "lgd");
            set(&mut o, "lgd-zeta", pick(30.0, 60.0));
            set(&mut o, "lgd-lambda", 1e-3);
            format!("configs/super_resolution_{file}_pnp.yaml")
        }
        Some(ReferenceTask::PhaseRetrieval) => {
            set(&mut o, "pcs-scale", pick(0.8, 1.2));
            if imagenet {
                set(&mut o, "warm-start", "lgd");
                set(&mut o, "lgd-zeta", 400.0);
                set(&mut o, "lgd-lambda", 1e-3);
            } else {
                set(&mut o, "warm-start", "dps");
                set(&mut o, "zeta", 0.8);
                set(&mut o, "dps-misfit", "norm");
            }
            format!("configs/coded_pr_{file}_pnp.yaml")
        }
        Some(ReferenceTask::OneBit) => {
            let m = pick(0.36, 0.38);
            set(&mut o, "pcs-scale", pick(0.2, 0.32));
            set(&mut o, "pcs-m", m);
            set(&mut o, "likelihood-temperature", 2.0 * m * m);
            set(&mut o, "warm-start", "lgd");
            set(&mut o, "lgd-zeta", 500.0);
            set(&mut o, "lgd-lambda", 2e-5);
            task.push(("tau", 0.4));
            format!("configs/quantization_{file}_pnp.yaml")
        }
        _ => {
            set(&mut o, "warm-start", "lgd");
            format!(
                "no reference config for task `{}`: the protocol's common settings only (schedule, grid, PCS, noise levels, an LGD-MC warm start with genprior's per-operator ζ and λ)",
                op.name()
            )
        }
    };
    Protocol {
        name,
        method: "dpnp-ddim",
        method_options: o,
        task_options: task,
        notes,
    }
}

fn dps_ffhq(op: &dyn Operator) -> Protocol {
    let mut o = MethodOptions::new();
    set(&mut o, "dps-steps", 1000usize);
    let mut task: Vec<(&'static str, f64)> = Vec::new();
    if op.noise().is_gaussian() {
        task.push(("noise-sigma", 0.2));
        set(&mut o, "dps-misfit", "norm");
    }
    let notes = match op.reference_task() {
        Some(ReferenceTask::SuperResolution) => {
            set(&mut o, "zeta", 0.6);
            "configs/super_resolution_ffhq_dps.yaml".to_string()
        }
        Some(ReferenceTask::PhaseRetrieval) => {
            set(&mut o, "zeta", 0.8);
            "configs/coded_pr_ffhq_dps.yaml".to_string()
        }
        Some(ReferenceTask::OneBit) => {
            set(&mut o, "zeta", 100.0);
            set(&mut o, "dps-misfit", "mean-neg-log-lik");
            task.push(("tau", 0.4));
            "configs/quantization_ffhq_dps.yaml".to_string()
        }
        _ => format!(
            "no reference config for task `{}`: 1000 steps and noise σ 0.2 only (ζ: genprior's per-operator default)",
            op.name()
        ),
    };
    Protocol {
        name: "dps-ffhq",
        method: "dps",
        method_options: o,
        task_options: task,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::{build_sampler, method};
    use genprior_inverse::{build_task, TaskOptions};

    fn op(task: &str) -> Box<dyn Operator> {
        build_task(&TaskOptions::new(task).unwrap(), [1, 16, 16]).unwrap()
    }

    #[test]
    fn every_protocol_builds_its_method_on_every_task() {
        for task in genprior_inverse::task_names() {
            let Ok(o) = TaskOptions::new(task) else {
                continue;
            };
            let Ok(op) = build_task(&o, [1, 16, 16]) else {
                continue;
            };
            for name in PROTOCOLS {
                let p = protocol(name, op.as_ref()).unwrap();
                // Every option is one the protocol's method declares, with a valid value.
                let entry = method(p.method).unwrap();
                p.method_options.resolve(entry.name, entry.options).unwrap();
                let s = build_sampler(p.method, &p.method_options, op.as_ref()).unwrap();
                let settings = s.settings();
                for (k, v) in p.method_options.iter() {
                    let key = k.replace('-', "_");
                    // Choices are reported as the variant names (`MeanNegLogLik`).
                    let norm = |j: &Value| match j {
                        Value::String(t) => json!(t.replace(['-', '_'], "").to_lowercase()),
                        other => other.clone(),
                    };
                    if let Some(got) = settings.get(&key) {
                        assert_eq!(norm(got), norm(&v.to_json()), "{name} on {task}: {k}");
                    }
                }
            }
        }
        assert!(protocol("dpnp", op("sr4").as_ref()).is_err());
    }

    #[test]
    fn the_reference_values_per_task() {
        let sr = protocol("dpnp-imagenet", op("sr4").as_ref()).unwrap();
        assert!(
            matches!(sr.method_options.get("pcs-scale"), Some(OptionValue::Float(v)) if *v == 1000.0)
        );
        assert!(
            matches!(sr.method_options.get("lgd-zeta"), Some(OptionValue::Float(v)) if *v == 60.0)
        );
        assert_eq!(
            sr.task_options,
            vec![("noise-sigma", 0.2), ("likelihood-sigma", 0.15)]
        );
        let ob = protocol("dpnp-ffhq", op("one-bit").as_ref()).unwrap();
        assert!(
            matches!(ob.method_options.get("likelihood-temperature"), Some(OptionValue::Float(v)) if (*v - 0.2592).abs() < 1e-12)
        );
        assert!(
            matches!(ob.method_options.get("pcs-m"), Some(OptionValue::Float(v)) if *v == 0.36)
        );
        assert_eq!(ob.task_options, vec![("tau", 0.4)]);
        let d = protocol("dps-ffhq", op("one-bit").as_ref()).unwrap();
        assert_eq!(d.method, "dps");
        assert!(
            matches!(d.method_options.get("dps-misfit"), Some(OptionValue::Choice(c)) if c == "mean-neg-log-lik")
        );
        let s = build_sampler("dps", &d.method_options, op("one-bit").as_ref()).unwrap();
        assert_eq!(s.settings()["dps_misfit"], "MeanNegLogLik");
        assert_eq!(s.settings()["zeta"], 100.0);
    }
}
