//! The sampler seam: every registry method, on a Gaussian prior with an exact ε and small
//! tasks, runs through `build_sampler` + `PosteriorSampler::sample`, records its settings,
//! rejects bad options clearly, and gives the same chains whether a run is one call or split
//! into several (per-chain noise streams).

use candle_core::{DType, Device, Tensor};
use genprior_diffusion::analytic::GaussianPrior;
use genprior_diffusion::{Schedule, SchedulerConfig};
use genprior_inverse::{build_task, Operator, TaskOptions};
use genprior_posterior::{build_sampler, methods, Chains, MethodOptions, OptionDefault, Problem};

const SHAPE: [usize; 3] = [1, 4, 4];

fn schedule() -> Schedule {
    Schedule::new(SchedulerConfig {
        clip_sample: false,
        ..SchedulerConfig::default()
    })
    .unwrap()
}

fn prior(s: &Schedule) -> GaussianPrior {
    let n = SHAPE.iter().product::<usize>();
    let mean: Vec<f64> = (0..n).map(|i| 0.1 * (i as f64 % 3.0) - 0.1).collect();
    GaussianPrior::new(mean, vec![0.2; n], SHAPE, s, &Device::Cpu).unwrap()
}

fn op(task: &str) -> Box<dyn Operator> {
    let sigma = if task == "one-bit" { 0.0 } else { 0.1 };
    let mut opts = TaskOptions::new(task).unwrap();
    opts.set("noise-sigma", sigma).unwrap();
    if opts.spec("kernel-size").is_ok() {
        opts.set("kernel-size", 3u64).unwrap();
    }
    build_task(&opts, SHAPE).unwrap()
}

/// Cheap options for every method.
fn tiny() -> MethodOptions {
    MethodOptions::new()
        .with("outer-steps", 2usize)
        .with("k-start", 1usize)
        .with("pcs-steps", 5usize)
        .with("dds-steps", 3usize)
        .with("eta-max", 0.3)
        .with("eta-min", 0.2)
        .with("dps-steps", 4usize)
}

fn declared(method: &str, o: &MethodOptions) -> MethodOptions {
    o.declared_by(genprior_posterior::method(method).unwrap().options)
}

fn measurement(op: &dyn Operator, n: usize) -> Tensor {
    let x = Tensor::zeros((n, SHAPE[0], SHAPE[1], SHAPE[2]), DType::F32, &Device::Cpu)
        .unwrap()
        .affine(1.0, 0.2)
        .unwrap();
    use rand::SeedableRng;
    op.simulate(&x, &mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn every_method_runs_and_reports_its_settings() {
    let s = schedule();
    let model = prior(&s);
    for task in ["denoise", "sr2", "one-bit", "phase-retrieval"] {
        let op = op(task);
        let y = measurement(op.as_ref(), 3);
        for m in methods() {
            let sampler = match build_sampler(m.name, &declared(m.name, &tiny()), op.as_ref()) {
                Ok(s) => s,
                // A method that cannot take this task (e.g. one needing an SVD) says so, naming it.
                Err(e) if e.to_string().contains(&format!("task `{task}`")) => continue,
                Err(e) => panic!("{task}/{}: {e}", m.name),
            };
            assert_eq!(sampler.method(), m.name);
            let settings = sampler.settings();
            // Every declared option with a fixed default appears among the settings.
            for o in m.options {
                let key = o.name.replace('-', "_");
                if o.default != OptionDefault::Derived {
                    assert!(
                        !settings[&key].is_null(),
                        "{}: {key} missing in {settings}",
                        m.name
                    );
                }
            }
            let p = Problem {
                model: &model,
                schedule: &s,
                op: op.as_ref(),
                y: &y,
            };
            let mut steps = 0;
            let out = sampler
                .sample(&p, &Chains::new(3, 7), &mut |e| {
                    if let genprior_posterior::MethodProgress::Step { .. } = e {
                        steps += 1
                    }
                })
                .unwrap();
            assert_eq!(out.samples.dims(), &[3, SHAPE[0], SHAPE[1], SHAPE[2]]);
            assert!(
                flat(&out.samples).iter().all(|v| v.is_finite()),
                "{task}/{}",
                m.name
            );
            assert!(out.nfe > 0);
            assert_eq!(steps, sampler.total_steps(), "{task}/{}", m.name);
        }
    }
}

#[test]
fn a_split_run_gives_the_same_chains() {
    let s = schedule();
    let model = prior(&s);
    for task in ["denoise", "one-bit"] {
        let op = op(task);
        let y = measurement(op.as_ref(), 4);
        for m in methods() {
            let mut o = declared(m.name, &tiny());
            if m.options.iter().any(|s| s.name == "warm-start") {
                o.set("warm-start", "noise");
            }
            let sampler = match build_sampler(m.name, &o, op.as_ref()) {
                Ok(s) => s,
                Err(e) if e.to_string().contains(&format!("task `{task}`")) => continue,
                Err(e) => panic!("{task}/{}: {e}", m.name),
            };
            let run = |lo: usize, n: usize| -> Vec<f32> {
                let yb = y.narrow(0, lo, n).unwrap();
                let p = Problem {
                    model: &model,
                    schedule: &s,
                    op: op.as_ref(),
                    y: &yb,
                };
                let c = Chains {
                    count: n,
                    seed: 11,
                    first_index: lo as u64,
                };
                flat(&sampler.sample(&p, &c, &mut |_| {}).unwrap().samples)
            };
            let whole = run(0, 4);
            let mut parts = run(0, 1);
            parts.extend(run(1, 3));
            assert_eq!(whole, parts, "{task}/{}", m.name);
            // And the seed matters.
            let other = {
                let p = Problem {
                    model: &model,
                    schedule: &s,
                    op: op.as_ref(),
                    y: &y,
                };
                flat(
                    &sampler
                        .sample(&p, &Chains::new(4, 12), &mut |_| {})
                        .unwrap()
                        .samples,
                )
            };
            assert_ne!(whole, other, "{task}/{}", m.name);
        }
    }
}

#[test]
fn bad_options_are_clear_errors() {
    let op = op("denoise");
    let bad = |m: &str, o: MethodOptions, want: &[&str]| {
        let e = match build_sampler(m, &o, op.as_ref()) {
            Ok(_) => panic!("{m}: {o:?} was accepted"),
            Err(e) => e.to_string(),
        };
        for w in want {
            assert!(e.contains(w), "{m}: `{e}` lacks `{w}`");
        }
    };
    bad(
        "dpnp",
        MethodOptions::new(),
        &["unknown method", "dpnp-ddim"],
    );
    bad(
        "dps",
        MethodOptions::new().with("pcs-steps", 3usize),
        &["dps", "pcs-steps"],
    );
    bad(
        "dps",
        MethodOptions::new().with("dps-steps", 0usize),
        &["--dps-steps", "at least 1"],
    );
    bad("dps", MethodOptions::new().with("zeta", -1.0), &["--zeta"]);
    bad(
        "dpnp-ddim",
        MethodOptions::new()
            .with("eta-max", 0.1)
            .with("eta-min", 0.2),
        &["eta-max"],
    );
    bad(
        "dpnp-ddpm",
        MethodOptions::new().with("pcs-scale", 0.0),
        &["--pcs-scale"],
    );
    bad(
        "dpnp-ddpm",
        MethodOptions::new().with("pcs", "hmc"),
        &["pcs"],
    );
    bad(
        "dpnp-ddim",
        MethodOptions::new().with("outer-steps", 0usize),
        &["--outer-steps"],
    );
    // Exact PCS on an operator that cannot take it fails when sampling, naming the task.
    let s = schedule();
    let model = prior(&s);
    let ob = self::op("one-bit");
    let y = measurement(ob.as_ref(), 1);
    let sampler = build_sampler("dpnp-ddim", &tiny().with("pcs", "exact"), ob.as_ref()).unwrap();
    let p = Problem {
        model: &model,
        schedule: &s,
        op: ob.as_ref(),
        y: &y,
    };
    let e = match sampler.sample(&p, &Chains::new(1, 0), &mut |_| {}) {
        Ok(_) => panic!("exact PCS on one-bit was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("exact") && e.contains("one-bit"), "{e}");
}

#[test]
fn defaults_follow_the_operator() {
    let zeta = |task: &str| {
        build_sampler("dps", &MethodOptions::new(), op(task).as_ref())
            .unwrap()
            .settings()["zeta"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(zeta("sr2"), 0.3);
    assert_eq!(zeta("inpaint-box"), 0.5);
    assert_eq!(zeta("phase-retrieval"), 1.0);
    assert_eq!(zeta("one-bit"), 0.5);
    assert_eq!(zeta("cs"), 0.3);
    let pcs = |task: &str, warm: &str| {
        let o = MethodOptions::new().with("warm-start", warm);
        let s = build_sampler("dpnp-ddim", &o, op(task).as_ref())
            .unwrap()
            .settings();
        (
            s["pcs_scale"].as_f64().unwrap(),
            s["warm_start"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(pcs("sr2", "auto"), (0.6, "baseline".into()));
    assert_eq!(pcs("phase-retrieval", "auto"), (0.8, "dps".into()));
    assert_eq!(pcs("one-bit", "noise"), (0.2, "noise".into()));
    assert_eq!(pcs("deblur-gauss", "baseline"), (1.0, "baseline".into()));
}
