//! `genprior reconstruct` / `genprior degrade` end to end on the tiny fixture UNet (3×16×16,
//! random weights: the pipeline is checked, not the image quality), with tiny step counts,
//! for every task and both methods; and the clear errors bad inputs must give.

mod common;

use std::path::{Path, PathBuf};

use common::*;

use genprior_inverse::{find_task, option_union, task_names, OptionDefault, OptionType};

fn model() -> PathBuf {
    fixtures().join("unet2d/positional_null_heads/model")
}

/// A smooth 16×16 RGB test image and a half-observed mask, written as PNGs.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let img = image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 15) as u8, (y * 15) as u8, ((x + y) * 7) as u8])
    });
    let clean = dir.join("clean.png");
    img.save(&clean).unwrap();
    let mask = image::GrayImage::from_fn(16, 16, |x, _| image::Luma([if x < 8 { 255 } else { 0 }]));
    let mask_path = dir.join("mask.png");
    mask.save(&mask_path).unwrap();
    (clean, mask_path)
}

/// Tiny-step options for a task, keyed by the options its registry entry declares: the test
/// mask for a required image option, a 5×5 blur kernel where the task takes `kernel-size`.
fn task_args(task: &str, mask: &Path) -> Vec<String> {
    let mut a = vec!["--task".to_string(), task.to_string()];
    for o in find_task(task).unwrap().options() {
        let flag = format!("--{}", o.name);
        match (o.name, o.kind, o.default) {
            (_, OptionType::ImageFile, OptionDefault::Required) => {
                a.extend([flag, mask.display().to_string()])
            }
            ("kernel-size", ..) => a.extend([flag, "5".into()]),
            (_, _, OptionDefault::Required) => panic!("{task}: no test value for --{}", o.name),
            _ => {}
        }
    }
    a
}

fn run_reconstruct(extra: &[String], out: &Path) -> std::process::Output {
    bin()
        .args([
            "reconstruct",
            "--device",
            "cpu",
            "--samples",
            "2",
            "--seed",
            "3",
            "--model",
        ])
        .arg(model())
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn check_outputs(out: &Path, task: &str, method: &str, with_truth: bool) {
    for f in [
        "reconstruction.png",
        "samples/000.png",
        "samples/001.png",
        "std.png",
        "baseline.png",
        "measurement.npy",
        "report.json",
    ] {
        assert!(out.join(f).is_file(), "{task}/{method}: missing {f}");
    }
    let image_like = !matches!(task, "cs");
    assert_eq!(
        out.join("measurement.png").is_file(),
        image_like,
        "{task}: measurement.png"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["task"], task);
    assert_eq!(r["method"], method);
    assert_eq!(r["seed"], 3);
    assert_eq!(r["samples"], 2);
    assert!(r["nfe"].as_u64().is_some(), "{r}");
    assert!(r["seconds"].as_f64().unwrap() >= 0.0);
    assert!(r["std_scale"].as_f64().unwrap() > 0.0);
    assert!(r["parameters"]["task"]["task"] == task);
    // The budgets of tiny_budgets(): DPS 3 steps; DiffPIR 3 steps on its quadratic grid, the last of
    // which evaluates nothing. A method not named here only needs to evaluate the network.
    let nfe = r["nfe"].as_u64().unwrap();
    match method {
        "dps" => assert_eq!(nfe, 3),
        "diffpir" => assert_eq!(nfe, 2),
        _ => assert!(nfe >= 1, "{r}"),
    }
    // Methods with an inner MCMC (DPnP's PCS, DAPS's Langevin) report its acceptance and a
    // trace, one entry per outer step (DPnP: 2) or level (DAPS: 3); the others report null.
    match r["mean_pcs_acceptance"].as_f64() {
        Some(a) => {
            assert!((0.0..=1.0).contains(&a), "{a}");
            let steps = r["outer_steps"].as_array().unwrap().len();
            assert_eq!(steps, if method == "daps" { 3 } else { 2 }, "{method}");
        }
        None => assert!(
            !method.starts_with("dpnp"),
            "{method} reports no PCS acceptance"
        ),
    }
    if with_truth {
        for k in ["reconstruction", "baseline"] {
            assert!(r[k]["psnr"].as_f64().is_some(), "{k} psnr: {r}");
            assert!(r[k]["ssim"].as_f64().is_some(), "{k} ssim: {r}");
        }
    } else {
        assert!(r["reconstruction"].is_null());
    }
}

#[test]
fn every_task_and_method_end_to_end() {
    let tmp = temp_dir("reconstruct");
    let (clean, mask) = inputs(&tmp);
    for task in task_names() {
        for method in genprior_posterior::method_names() {
            // DPnP runs on every task with DDS-DDPM (3 network evaluations per DDS call at these
            // η); DDS-DDIM, whose refined grid has ~100 points even at small η, on a few tasks
            // (it shares everything else with DDS-DDPM).
            if method == "dpnp-ddim" && !matches!(task, "sr4" | "phase-retrieval" | "one-bit") {
                continue;
            }
            let out = tmp.join(format!("{task}-{method}"));
            let mut extra = task_args(task, &mask);
            extra.extend([
                "--input".to_string(),
                clean.display().to_string(),
                "--method".into(),
                method.into(),
            ]);
            extra.extend(tiny_budgets());
            let o = run_reconstruct(&extra, &out);
            if stderr(&o).contains("MRI images have 1 channel") {
                // The RGB fixture model cannot be an MRI prior (tests/mri.rs runs them all).
                assert_clean_error(&o, &["2 (real and imaginary parts)"]);
                continue;
            }
            if stderr(&o).contains("cannot run task") {
                // A method limited to some operators refuses the others clearly.
                assert_clean_error(&o, &[method, &format!("`{task}`"), "it needs"]);
                continue;
            }
            assert_success(&o);
            check_outputs(&out, task, method, true);
        }
    }
    std::fs::remove_dir_all(tmp).ok();
}

/// The help text of a flag: from its `--flag` line to the next flag.
fn flag_help<'a>(help: &'a str, flag: &str) -> Option<&'a str> {
    let head = format!("\n      --{flag} ");
    let start = help.find(&head)?;
    let rest = &help[start + head.len()..];
    let end = ["\n  -", "\n      --"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn task_flags_are_generated_from_the_registry() {
    for cmd in ["reconstruct", "degrade"] {
        let o = bin().args([cmd, "--help"]).output().unwrap();
        assert_success(&o);
        let help = String::from_utf8_lossy(&o.stdout).to_string();
        let task = flag_help(&help, "task").expect("--task in the help");
        for t in task_names() {
            assert!(task.contains(t), "{cmd} --task help lacks {t}: {task}");
        }
        for s in option_union().unwrap() {
            let value_name = s.spec.name.replace('-', "_").to_uppercase();
            let h = flag_help(&help, s.spec.name)
                .unwrap_or_else(|| panic!("{cmd} --help lacks --{}:\n{help}", s.spec.name));
            assert!(
                h.starts_with(&format!("<{value_name}>")),
                "--{}: {h}",
                s.spec.name
            );
            let words: String = s
                .spec
                .help
                .trim_end_matches('.')
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let flat: String = h.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains(&words),
                "--{}: `{flat}` lacks `{words}`",
                s.spec.name
            );
            if !s.common {
                for t in s.tasks() {
                    let family = t
                        .split(|c: char| c == '-' || c.is_ascii_digit())
                        .next()
                        .unwrap();
                    assert!(
                        flat.contains(family),
                        "--{}: `{flat}` does not name {t}",
                        s.spec.name
                    );
                }
            }
            match s.fixed_default().and_then(|d| d.text()) {
                Some(d) => assert!(
                    flat.contains(&format!("[default: {d}]")),
                    "--{}: `{flat}` lacks its default {d}",
                    s.spec.name
                ),
                None => assert!(!flat.contains("[default:"), "--{}: {flat}", s.spec.name),
            }
            if let OptionType::Choice(values) = s.spec.kind {
                let pv = format!("[possible values: {}]", values.join(", "));
                assert!(flat.contains(&pv), "--{}: `{flat}` lacks {pv}", s.spec.name);
            }
        }
    }
}

#[test]
fn degrade_then_reconstruct_from_measurement() {
    let tmp = temp_dir("degrade");
    let (clean, mask) = inputs(&tmp);
    let y = tmp.join("y.npy");
    let o = bin()
        .args(["degrade", "--task", "sr4", "--seed", "5", "--input"])
        .arg(&clean)
        .arg("--out")
        .arg(&y)
        .output()
        .unwrap();
    assert_success(&o);
    let t = candle_core::Tensor::read_npy(&y).unwrap();
    assert_eq!(t.dims(), &[1, 3, 4, 4]);
    // Same seed, same measurement; another seed, another one.
    let y2 = tmp.join("y2.npy");
    let y3 = tmp.join("y3.npy");
    for (seed, path) in [("5", &y2), ("6", &y3)] {
        let o = bin()
            .args(["degrade", "--task", "sr4", "--seed", seed, "--input"])
            .arg(&clean)
            .arg("--out")
            .arg(path)
            .output()
            .unwrap();
        assert_success(&o);
    }
    let v = |p: &Path| {
        candle_core::Tensor::read_npy(p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(v(&y), v(&y2));
    assert_ne!(v(&y), v(&y3));
    // reconstruct --input --seed 5 sees the same y as degrade --seed 5.
    let out = tmp.join("from-input");
    let mut extra = task_args("sr4", &mask);
    extra.extend([
        "--input".to_string(),
        clean.display().to_string(),
        "--seed".into(),
        "5".into(),
    ]);
    extra.extend(tiny_budgets());
    let o = bin()
        .args([
            "reconstruct",
            "--device",
            "cpu",
            "--samples",
            "1",
            "--model",
        ])
        .arg(model())
        .args(&extra)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&o);
    assert_eq!(v(&out.join("measurement.npy")), v(&y));

    let out = tmp.join("from-measurement");
    let mut extra = task_args("sr4", &mask);
    extra.extend(["--measurement".to_string(), y.display().to_string()]);
    extra.extend(tiny_budgets());
    let o = run_reconstruct(&extra, &out);
    assert_success(&o);
    check_outputs(&out, "sr4", "dpnp-ddim", false);
    std::fs::remove_dir_all(tmp).ok();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = temp_dir("reconstruct-bad");
    let (clean, _) = inputs(&tmp);
    let out = tmp.join("out");
    let with = |args: &[&str]| -> std::process::Output {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(tiny_budgets());
        run_reconstruct(&v, &out)
    };
    let c = clean.display().to_string();

    assert_clean_error(
        &with(&["--task", "sr3", "--input", &c]),
        &["unknown task", "sr3"],
    );
    assert_clean_error(
        &with(&["--task", "sr4", "--noise-sigma", "-0.1", "--input", &c]),
        &["noise-sigma", "-0.1"],
    );
    // An option the task does not take, and a missing required one.
    assert_clean_error(
        &with(&["--task", "sr4", "--tau", "0.3", "--input", &c]),
        &["--tau", "sr4"],
    );
    assert_clean_error(
        &with(&["--task", "inpaint-mask", "--input", &c]),
        &["inpaint-mask", "--mask"],
    );
    let o = bin()
        .args([
            "reconstruct",
            "--device",
            "cpu",
            "--samples",
            "0",
            "--task",
            "denoise",
            "--model",
        ])
        .arg(model())
        .args(["--input", &c, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_clean_error(&o, &["--samples"]);

    // NaN in y.npy.
    let nan = tmp.join("nan.npy");
    let mut vals = vec![0.1f32; 3 * 4 * 4];
    vals[5] = f32::NAN;
    candle_core::Tensor::from_vec(vals, (1, 3, 4, 4), &candle_core::Device::Cpu)
        .unwrap()
        .write_npy(&nan)
        .unwrap();
    let o = with(&["--task", "sr4", "--measurement", nan.to_str().unwrap()]);
    assert_clean_error(&o, &["nan.npy"]);
    assert!(
        stderr(&o).to_lowercase().contains("nan") || stderr(&o).contains("finite"),
        "{}",
        stderr(&o)
    );

    // Inf in y.npy.
    let inf = tmp.join("inf.npy");
    let mut vals = vec![0.1f32; 3 * 4 * 4];
    vals[0] = f32::INFINITY;
    candle_core::Tensor::from_vec(vals, (1, 3, 4, 4), &candle_core::Device::Cpu)
        .unwrap()
        .write_npy(&inf)
        .unwrap();
    assert_clean_error(
        &with(&["--task", "sr4", "--measurement", inf.to_str().unwrap()]),
        &["inf.npy"],
    );

    // A measurement whose shape does not fit the task (sr2 expects 3×8×8).
    let wrong = tmp.join("wrong.npy");
    candle_core::Tensor::zeros(
        (1, 3, 4, 4),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .write_npy(&wrong)
    .unwrap();
    assert_clean_error(
        &with(&["--task", "sr2", "--measurement", wrong.to_str().unwrap()]),
        &["does not fit", "sr2"],
    );

    // One-bit measurements must be ±1.
    let ob = tmp.join("ob.npy");
    candle_core::Tensor::full(0.5f32, (1, 3, 16, 16), &candle_core::Device::Cpu)
        .unwrap()
        .write_npy(&ob)
        .unwrap();
    assert_clean_error(
        &with(&["--task", "one-bit", "--measurement", ob.to_str().unwrap()]),
        &["one-bit"],
    );

    // Wrong image size and channel count.
    let big = tmp.join("big.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([10, 20, 30]))
        .save(&big)
        .unwrap();
    assert_clean_error(
        &with(&["--task", "denoise", "--input", big.to_str().unwrap()]),
        &["32×32", "16×16"],
    );
    let gray = tmp.join("gray.png");
    image::GrayImage::from_pixel(16, 16, image::Luma([10]))
        .save(&gray)
        .unwrap();
    assert_clean_error(
        &with(&["--task", "denoise", "--input", gray.to_str().unwrap()]),
        &["channel"],
    );

    // Exact PCS on a nonlinear task.
    let o = with(&["--task", "phase-retrieval", "--pcs", "exact", "--input", &c]);
    assert_clean_error(&o, &["exact"]);

    // Missing measurement file; degrade with a bad task.
    assert_clean_error(
        &with(&["--task", "sr4", "--measurement", "/nonexistent/y.npy"]),
        &["no such file"],
    );
    let o = bin()
        .args(["degrade", "--task", "nope", "--input"])
        .arg(&clean)
        .arg("--out")
        .arg(tmp.join("y.npy"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["unknown task"]);
    std::fs::remove_dir_all(tmp).ok();
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn protocols_set_the_reference_values_and_explicit_flags_win() {
    let tmp = temp_dir("reconstruct-protocol");
    let (clean, mask) = inputs(&tmp);
    let input = ["--input".to_string(), clean.display().to_string()];
    // DPnP on one-bit, FFHQ: the reference's tempered target, step rule, grid and warm start;
    // tiny_budgets()'s explicit budgets and η win over the protocol's.
    let out = tmp.join("dpnp-one-bit");
    let mut extra = task_args("one-bit", &mask);
    extra.extend(input.clone());
    extra.extend(["--protocol".into(), "dpnp-ffhq".into()]);
    extra.extend(tiny_budgets());
    let o = run_reconstruct(&extra, &out);
    assert_success(&o);
    check_outputs(&out, "one-bit", "dpnp-ddim", true);
    let r = report(&out);
    let p = &r["parameters"];
    assert_eq!(r["protocol"]["name"], "dpnp-ffhq");
    assert!((p["likelihood_temperature"].as_f64().unwrap() - 2.0 * 0.36 * 0.36).abs() < 1e-12);
    assert_eq!(p["pcs_m"], 0.36);
    assert_eq!(p["pcs"], "ula");
    assert_eq!(p["pcs_scale"], 0.2);
    assert_eq!(p["pcs_reg"], 50.0);
    assert_eq!(p["dds_grid"], "reference");
    assert_eq!(p["warm_start"], "lgd");
    assert_eq!(p["lgd_zeta"], 500.0);
    assert_eq!(p["lgd_lambda"], 2e-5);
    assert_eq!(p["lgd_draws"], "uniform");
    assert_eq!(p["task"]["tau"], 0.4);
    // Explicit flags win, and the report says which.
    assert_eq!(p["eta_max"], 0.03);
    assert_eq!(p["outer_steps"], 2);
    let over: Vec<&str> = r["protocol"]["overridden_by_flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for k in [
        "eta-max",
        "eta-min",
        "k-start",
        "outer-steps",
        "pcs-steps",
        "lgd-warm-steps",
    ] {
        assert!(
            over.contains(&k),
            "{k} not reported as overridden: {over:?}"
        );
    }
    assert!(!over.contains(&"pcs-m"));

    // DPS on sr4: the protocol's method and ζ, its noise σ 0.2 unless --noise-sigma is given.
    let out = tmp.join("dps-sr4");
    let mut extra = task_args("sr4", &mask);
    extra.extend(input.clone());
    extra.extend(["--protocol".into(), "dps-ffhq".into()]);
    extra.extend(tiny_budgets());
    assert_success(&run_reconstruct(&extra, &out));
    check_outputs(&out, "sr4", "dps", true);
    let r = report(&out);
    assert_eq!(r["parameters"]["zeta"], 0.6);
    assert_eq!(r["parameters"]["noise_sigma"], 0.2);
    assert_eq!(r["parameters"]["task"]["noise_sigma"], 0.2);
    extra.extend([
        "--noise-sigma".into(),
        "0.1".into(),
        "--zeta".into(),
        "2".into(),
    ]);
    let out = tmp.join("dps-sr4-flags");
    assert_success(&run_reconstruct(&extra, &out));
    let r = report(&out);
    assert_eq!(r["parameters"]["zeta"], 2.0);
    assert_eq!(r["parameters"]["noise_sigma"], 0.1);
    let over = r["protocol"]["overridden_by_flags"].to_string();
    assert!(
        over.contains("noise-sigma") && over.contains("zeta"),
        "{over}"
    );

    // --method wins over the protocol's method; the protocol's DPnP options still apply.
    let out = tmp.join("dpnp-ddpm-sr4");
    let mut extra = task_args("sr4", &mask);
    extra.extend(input);
    extra.extend([
        "--protocol".into(),
        "dpnp-imagenet".into(),
        "--method".into(),
        "dpnp-ddpm".into(),
    ]);
    extra.extend(tiny_budgets());
    assert_success(&run_reconstruct(&extra, &out));
    check_outputs(&out, "sr4", "dpnp-ddpm", true);
    let r = report(&out);
    assert_eq!(r["parameters"]["pcs_scale"], 1000.0);
    assert_eq!(r["parameters"]["dds"], "DdpmReference");
    assert_eq!(r["parameters"]["task"]["likelihood_sigma"], 0.15);
    assert_eq!(r["protocol"]["method_overridden_by_flag"], "dpnp-ddpm");

    // The help says which wins.
    let help = stdout(&bin().args(["reconstruct", "--help"]).output().unwrap());
    let h = flag_help(&help, "protocol").expect("--protocol in the help");
    assert!(h.contains("flags given explicitly win"), "{h}");
    std::fs::remove_dir_all(tmp).ok();
}
