//! The task registry: consistency, typed options (unknown names and wrong types are errors
//! naming the task and the option), defaults coming from each entry, and the operator
//! properties samplers key on.

use candle_core::{Device, Tensor};
use genprior_inverse::task::{COMMON_OPTIONS, DEFAULT_NOISE_SIGMA};
use genprior_inverse::{
    build_task, find_task, option_union, task_entries, task_names, InverseError, OptionDefault,
    OptionType, ReferenceTask, TaskOptions,
};

const SHAPE: [usize; 3] = [2, 16, 16];

/// A task's options with a value for every required option (a half-observed mask) and a
/// kernel side that fits 16×16 images.
fn ready(task: &str) -> TaskOptions {
    let mut o = TaskOptions::new(task).unwrap();
    for s in o.specs().to_vec() {
        if s.default == OptionDefault::Required {
            assert_eq!(
                s.kind,
                OptionType::ImageFile,
                "{task}: no test value for {}",
                s.name
            );
            let m: Vec<f32> = (0..SHAPE[1] * SHAPE[2])
                .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
                .collect();
            o.set(
                s.name,
                Tensor::from_vec(m, (SHAPE[1], SHAPE[2]), &Device::Cpu).unwrap(),
            )
            .unwrap();
        }
    }
    o
}

#[test]
fn registry_is_consistent() {
    let names = task_names();
    assert!(!names.is_empty());
    for (i, n) in names.iter().enumerate() {
        assert!(!names[..i].contains(n), "task {n} declared twice");
        assert!(find_task(n).unwrap().names.contains(n));
    }
    for e in task_entries() {
        let opts = e.options();
        for (i, o) in opts.iter().enumerate() {
            assert!(o.is_consistent(), "{:?}: {o:?}", e.names);
            assert!(!o.help.is_empty(), "{:?}: {} has no help", e.names, o.name);
            assert!(
                !opts[..i].iter().any(|p| p.name == o.name),
                "{:?}: option {} twice",
                e.names,
                o.name
            );
        }
        for c in COMMON_OPTIONS {
            assert!(
                opts.iter().any(|o| o.name == c.name),
                "{:?} lacks {}",
                e.names,
                c.name
            );
        }
        assert!(e.default_noise_sigma >= 0.0 && e.default_noise_sigma.is_finite());
    }
    // one flag per name, same type wherever it is declared
    let union = option_union().unwrap();
    let mut every: Vec<&str> = task_entries()
        .flat_map(|e| e.options())
        .map(|o| o.name)
        .collect();
    every.sort();
    every.dedup();
    assert_eq!(union.len(), every.len());
    for s in &union {
        for t in s.tasks() {
            assert_eq!(
                find_task(t).unwrap().option(s.spec.name).unwrap().kind,
                s.spec.kind
            );
        }
    }
    // today's CLI option names
    for n in [
        "noise-sigma",
        "likelihood-sigma",
        "operator-seed",
        "kernel",
        "box-size",
        "keep-fraction",
        "mask",
        "kernel-size",
        "kernel-std",
        "motion-intensity",
        "kernel-file",
        "oversample",
        "tau",
        "cs-ratio",
    ] {
        assert!(union.iter().any(|s| s.spec.name == n), "no option {n}");
    }
    let ks = union.iter().find(|s| s.spec.name == "kernel-size").unwrap();
    assert_eq!(ks.tasks(), vec!["deblur-gauss", "deblur-motion"]);
}

#[test]
fn every_task_builds_from_its_entry() {
    for t in task_names() {
        let op = build_task(&ready(t), SHAPE).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(op.name(), t);
        assert_eq!(op.image_shape(), SHAPE);
    }
}

#[test]
fn unknown_options_and_wrong_types_are_errors_naming_task_and_option() {
    let mut o = TaskOptions::new("sr4").unwrap();
    let e = o.set("tau", 0.3).err().unwrap();
    let m = e.to_string();
    assert!(matches!(e, InverseError::InvalidOption { .. }), "{m}");
    assert!(
        m.contains("sr4") && m.contains("tau") && m.contains("kernel"),
        "{m}"
    );

    let mut o = TaskOptions::new("inpaint-random").unwrap();
    let m = o.set("keep-fraction", 3usize).err().unwrap().to_string();
    assert!(
        m.contains("inpaint-random") && m.contains("keep-fraction") && m.contains("float"),
        "{m}"
    );
    let m = o.set("operator-seed", 0.5).err().unwrap().to_string();
    assert!(m.contains("operator-seed") && m.contains("integer"), "{m}");
    let m = o.integer("keep-fraction").err().unwrap().to_string();
    assert!(
        m.contains("keep-fraction") && m.contains("not an integer"),
        "{m}"
    );
    assert!(o.float("nope").is_err());

    let mut o = TaskOptions::new("sr2").unwrap();
    let m = o.set("kernel", "lanczos").err().unwrap().to_string();
    assert!(
        m.contains("kernel") && m.contains("bicubic, box") && m.contains("lanczos"),
        "{m}"
    );
    assert!(o.set("kernel", 1.0).is_err());
    o.set("kernel", "box").unwrap();
    assert_eq!(o.choice("kernel").unwrap(), "box");

    let mut o = TaskOptions::new("inpaint-mask").unwrap();
    let m = o.set("mask", 0.5).err().unwrap().to_string();
    assert!(m.contains("mask") && m.contains("image"), "{m}");
    let m = build_task(&o, SHAPE).err().unwrap().to_string();
    assert!(
        m.contains("inpaint-mask") && m.contains("`mask` is required"),
        "{m}"
    );

    let e = TaskOptions::new("sr3").err().unwrap();
    assert!(matches!(e, InverseError::UnknownTask { .. }));
    assert!(e.to_string().contains("sr3") && e.to_string().contains("denoise"));

    // range errors come from the build, naming the task
    let o = TaskOptions::new("inpaint-random")
        .unwrap()
        .with("keep-fraction", 1.5)
        .unwrap();
    let m = build_task(&o, SHAPE).err().unwrap().to_string();
    assert!(
        m.contains("inpaint-random") && m.contains("keep fraction"),
        "{m}"
    );
    let o = TaskOptions::new("cs")
        .unwrap()
        .with("likelihood-sigma", -1.0)
        .unwrap();
    let m = build_task(&o, SHAPE).err().unwrap().to_string();
    assert!(m.contains("`cs`") && m.contains("likelihood sigma"), "{m}");
}

#[test]
fn defaults_come_from_the_entry() {
    for t in task_names() {
        let e = find_task(t).unwrap();
        let o = ready(t);
        // noise σ: the entry's (0 for one-bit, 0.05 otherwise); likelihood σ: the noise σ
        assert_eq!(o.noise_sigma().unwrap(), e.default_noise_sigma);
        assert_eq!(o.likelihood_sigma().unwrap(), e.default_noise_sigma);
        assert_eq!(o.operator_seed().unwrap(), 0);
        for s in e.options() {
            match s.default {
                OptionDefault::Float(v) => {
                    assert_eq!(o.float(s.name).unwrap(), v, "{t} {}", s.name)
                }
                OptionDefault::Integer(v) => {
                    assert_eq!(o.integer(s.name).unwrap(), v, "{t} {}", s.name)
                }
                OptionDefault::Choice(v) => assert_eq!(o.choice(s.name).unwrap(), v),
                OptionDefault::Derived => match s.kind {
                    OptionType::Float => assert_eq!(o.float_opt(s.name).unwrap(), None),
                    OptionType::Integer => assert_eq!(o.integer_opt(s.name).unwrap(), None),
                    OptionType::ImageFile | OptionType::ArrayFile => {
                        assert!(o.tensor_opt(s.name).unwrap().is_none())
                    }
                    OptionType::Choice(_) => {}
                },
                OptionDefault::Required => {}
            }
        }
        // the operator uses them: built with every fixed default set explicitly, it is the same
        let mut explicit = ready(t);
        for s in e.options() {
            match s.default {
                OptionDefault::Float(v) => explicit.set(s.name, v),
                OptionDefault::Integer(v) => explicit.set(s.name, v),
                OptionDefault::Choice(v) => explicit.set(s.name, v),
                _ => continue,
            }
            .unwrap();
        }
        let (a, b) = (
            build_task(&o, SHAPE).unwrap(),
            build_task(&explicit, SHAPE).unwrap(),
        );
        let x: Vec<f64> = (0..a.image_len())
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        assert_eq!(
            a.forward_host(&x).unwrap(),
            b.forward_host(&x).unwrap(),
            "{t}"
        );
        assert_eq!(a.noise_sigma(), e.default_noise_sigma, "{t}");
        assert_eq!(a.noise_sigma(), b.noise_sigma(), "{t}");
        assert_eq!(a.temperature(), b.temperature(), "{t}");
    }
    assert_eq!(find_task("one-bit").unwrap().default_noise_sigma, 0.0);
    assert_eq!(
        find_task("sr4").unwrap().default_noise_sigma,
        DEFAULT_NOISE_SIGMA
    );
    // one-bit's temperature is τ (default 0.4); a Gaussian task's is the likelihood σ
    let ob = build_task(&ready("one-bit"), SHAPE).unwrap();
    assert_eq!(ob.temperature(), 0.4);
    assert!(!ob.is_linear_gaussian() && ob.is_linear());
    let o = TaskOptions::new("denoise")
        .unwrap()
        .with("noise-sigma", 0.2)
        .unwrap();
    assert_eq!(o.likelihood_sigma().unwrap(), 0.2);
    let d = build_task(&o.with("likelihood-sigma", 0.15).unwrap(), SHAPE).unwrap();
    assert_eq!((d.noise_sigma(), d.temperature()), (0.2, 0.15));
    // derived defaults: the centred hole is half the image side; the blur kernel the largest
    // odd side fitting the image
    let ib = build_task(&ready("inpaint-box"), SHAPE).unwrap();
    let holes = ib
        .forward_host(&vec![1.0; ib.image_len()])
        .unwrap()
        .iter()
        .filter(|v| **v == 0.0)
        .count();
    assert_eq!(holes, SHAPE[0] * 8 * 8);
}

#[test]
fn operators_report_their_reference_task_and_sign_ambiguity() {
    for t in task_names() {
        let op = build_task(&ready(t), SHAPE).unwrap();
        let expect = if t.starts_with("sr") {
            Some(ReferenceTask::SuperResolution)
        } else if t.starts_with("inpaint-") {
            Some(ReferenceTask::Inpainting)
        } else if t.starts_with("deblur-") {
            Some(ReferenceTask::Deblur)
        } else {
            match t {
                "phase-retrieval" => Some(ReferenceTask::PhaseRetrieval),
                "one-bit" => Some(ReferenceTask::OneBit),
                _ => None,
            }
        };
        assert_eq!(op.reference_task(), expect, "{t}");
        assert_eq!(op.sign_ambiguous(), t == "phase-retrieval", "{t}");
    }
}
