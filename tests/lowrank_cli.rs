//! End-to-end tests of `genprior lowrank ...` (small problems: a few seconds in total).

use std::path::PathBuf;
use std::process::Command;

use candle_core::{DType, Device, Tensor};

/// `$GENPRIOR_TEST_BIN` when set (as in tests/common), else the binary cargo built.
fn bin() -> Command {
    match std::env::var_os("GENPRIOR_TEST_BIN") {
        Some(p) if !p.is_empty() => Command::new(p),
        _ => Command::new(env!("CARGO_BIN_EXE_genprior")),
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "genprior_lowrank_cli_{name}_{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_ok(args: &[&str]) -> (String, String) {
    let out = bin().args(args).output().expect("run genprior");
    let so = String::from_utf8_lossy(&out.stdout).to_string();
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "genprior {args:?} failed:\n{se}");
    (so, se)
}

fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run genprior");
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "genprior {args:?} should have failed"
    );
    se
}

/// Exactly rank-2 60×50 matrix X_ij = cos(i/7)·(1 + j/50) + sin(i/5)·cos(j/9), and a
/// deterministic 50% mask.
fn rank2_problem() -> (Tensor, Tensor) {
    let (n1, n2) = (60, 50);
    let mut x = vec![0f64; n1 * n2];
    let mut m = vec![0f64; n1 * n2];
    for i in 0..n1 {
        for j in 0..n2 {
            let (fi, fj) = (i as f64, j as f64);
            x[i * n2 + j] =
                (fi / 7.0).cos() * (1.0 + fj / 50.0) + (fi / 5.0).sin() * (fj / 9.0).cos();
            m[i * n2 + j] = if (i * 31 + j * 17) % 10 < 5 { 1.0 } else { 0.0 };
        }
    }
    (
        Tensor::from_vec(x, (n1, n2), &Device::Cpu).unwrap(),
        Tensor::from_vec(m, (n1, n2), &Device::Cpu).unwrap(),
    )
}

#[test]
fn complete_from_npy_recovers_the_unobserved_entries_and_writes_a_report() {
    let d = tmpdir("complete");
    let (x, m) = rank2_problem();
    let y = (&x * &m).unwrap();
    y.write_npy(d.join("y.npy")).unwrap();
    m.write_npy(d.join("m.npy")).unwrap();
    let out = d.join("x.npy");
    let rep = d.join("r.json");
    run_ok(&[
        "lowrank",
        "complete",
        "--input",
        d.join("y.npy").to_str().unwrap(),
        "--mask",
        d.join("m.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--tol",
        "1e-13",
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let est = Tensor::read_npy(&out)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let err = (&est - &x)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(err < 1e-8, "max abs error {err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let it = r["iterations"].as_u64().unwrap();
    assert!(it > 0);
    assert_eq!(r["rel_change"].as_array().unwrap().len() as u64, it);
    assert!(r["final_residual"].as_f64().unwrap() < 1e-10);
    assert!(r["time_s"].as_f64().unwrap() >= 0.0);
}

#[test]
fn complete_accepts_csv_and_rank_auto_picks_the_true_rank() {
    let d = tmpdir("csv");
    let (x, m) = rank2_problem();
    let write_csv = |t: &Tensor, p: &PathBuf| {
        let v: Vec<Vec<f64>> = t.to_vec2().unwrap();
        let s: Vec<String> = v
            .iter()
            .map(|r| {
                r.iter()
                    .map(|x| format!("{x:.17e}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        std::fs::write(p, s.join("\n")).unwrap();
    };
    write_csv(&(&x * &m).unwrap(), &d.join("y.csv"));
    write_csv(&m, &d.join("m.csv"));
    let rep = d.join("r.json");
    let (_, se) = run_ok(&[
        "lowrank",
        "complete",
        "--input",
        d.join("y.csv").to_str().unwrap(),
        "--mask",
        d.join("m.csv").to_str().unwrap(),
        "--rank",
        "auto",
        "--max-rank",
        "5",
        "--out",
        d.join("x.csv").to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--device",
        "cpu",
        "--damping",
        "rel:1e-3",
        "--backtrack",
    ]);
    assert!(se.contains("chosen rank 2"), "{se}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["rank"].as_u64(), Some(2));
    assert_eq!(r["rank_scan"]["scores"].as_array().unwrap().len(), 5);
    let text = std::fs::read_to_string(d.join("x.csv")).unwrap();
    assert_eq!(text.lines().count(), 60);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = tmpdir("bad");
    let (x, _) = rank2_problem();
    x.write_npy(d.join("y.npy")).unwrap();
    Tensor::ones((50, 60), DType::F64, &Device::Cpu)
        .unwrap()
        .write_npy(d.join("m.npy"))
        .unwrap();
    let y = d.join("y.npy");
    let y = y.to_str().unwrap();
    let se = run_err(&[
        "lowrank",
        "complete",
        "--input",
        y,
        "--mask",
        d.join("m.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("does not match"), "{se}");
    let se = run_err(&[
        "lowrank", "rpca", "--input", y, "--rank", "0", "--device", "cpu",
    ]);
    assert!(se.contains("rank must be at least 1"), "{se}");
    let se = run_err(&[
        "lowrank", "rpca", "--input", y, "--rank", "50", "--device", "cpu",
    ]);
    assert!(se.contains("smaller than the smallest dimension"), "{se}");
    let se = run_err(&[
        "lowrank",
        "complete",
        "--synthetic",
        "60,3,5,0.5",
        "--rank",
        "3",
        "--eta",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("diverged"), "{se}");
}

#[test]
fn synthetic_problems_of_every_kind_converge() {
    let d = tmpdir("synth");
    let cases: Vec<Vec<&str>> = vec![
        vec!["rpca", "--synthetic", "80,3,5,0.05", "--rank", "3"],
        vec!["sense", "--synthetic", "15,2,5,10", "--rank", "2"],
        vec![
            "sense",
            "--synthetic",
            "15,2,5,15",
            "--rank",
            "4",
            "--psd",
            "--init-scale",
            "1e-12",
        ],
        vec!["tucker", "--synthetic", "20,2,5,0.4", "--rank", "2"],
        vec!["tensor-rpca", "--synthetic", "20,2,3,0.05", "--rank", "2"],
        vec![
            "complete",
            "--synthetic",
            "80,3,10,0.4",
            "--rank",
            "3",
            "--method",
            "gd",
            "--max-iter",
            "3000",
        ],
    ];
    for (k, c) in cases.iter().enumerate() {
        let rep = d.join(format!("r{k}.json"));
        let mut args = vec!["lowrank"];
        args.extend(c.iter().copied());
        args.extend([
            "--tol",
            "1e-13",
            "--report",
            rep.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        run_ok(&args);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        let e = r["truth_rel_error"].as_f64().unwrap();
        assert!(e < 1e-6, "{c:?}: relative error to the truth {e}");
    }
}

#[test]
fn bench_prints_a_table() {
    let (so, _) = run_ok(&[
        "lowrank",
        "bench",
        "--problem",
        "completion",
        "--n",
        "60",
        "--r",
        "3",
        "--p",
        "0.5",
        "--kappas",
        "1,10",
        "--max-iter",
        "300",
        "--device",
        "cpu",
    ]);
    assert!(
        so.contains("| completion | 60 | 3 | 1 | ScaledGD |"),
        "{so}"
    );
    assert_eq!(
        so.lines().filter(|l| l.starts_with("| completion")).count(),
        4
    );
}

#[test]
fn complete_early_stop_returns_the_best_heldout_iterate() {
    let d = tmpdir("early");
    let (x, m) = rank2_problem();
    let (n1, n2) = x.dims2().unwrap();
    // Deterministic pseudo-noise, ~20% of the entries' size, and an over-specified rank:
    // the full run fits the noise.
    let noise: Vec<f64> = (0..n1 * n2)
        .map(|k| 0.2 * ((k as f64 * 12.9898).sin() * 43758.5453).fract())
        .collect();
    let noise = Tensor::from_vec(noise, (n1, n2), &Device::Cpu).unwrap();
    let y = ((&x + &noise).unwrap() * &m).unwrap();
    y.write_npy(d.join("y.npy")).unwrap();
    m.write_npy(d.join("m.npy")).unwrap();
    let rep = d.join("r.json");
    let (y_p, m_p, r_p) = (d.join("y.npy"), d.join("m.npy"), rep.clone());
    let (_, se) = run_ok(&[
        "lowrank",
        "complete",
        "--input",
        y_p.to_str().unwrap(),
        "--mask",
        m_p.to_str().unwrap(),
        "--rank",
        "8",
        "--early-stop",
        "--holdout",
        "0.15",
        "--patience",
        "5",
        "--max-iter",
        "400",
        "--out",
        d.join("x.npy").to_str().unwrap(),
        "--report",
        r_p.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(se.contains("early stopping: best held-out"), "{se}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(v["stop_reason"], "EarlyStop", "{v}");
    let it = v["iterations"].as_u64().unwrap();
    let best = v["best_iteration"].as_u64().unwrap();
    assert_eq!(it, best + 5);
    let he: Vec<f64> = v["heldout_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    assert_eq!(he.len() as u64, it + 1);
    assert_eq!(v["best_heldout_error"].as_f64().unwrap(), he[best as usize]);
    assert_eq!(v["holdout"].as_f64().unwrap(), 0.15);
    assert!(d.join("x.npy").exists());
}

#[test]
fn impossible_completion_inputs_are_clear_errors() {
    let d = tmpdir("impossible");
    let (x, m) = rank2_problem();
    x.write_npy(d.join("y.npy")).unwrap();
    let y = d.join("y.npy");
    let y = y.to_str().unwrap();
    // A mask with an empty row.
    let mut mv: Vec<Vec<f64>> = m.to_vec2().unwrap();
    for v in mv[7].iter_mut() {
        *v = 0.0;
    }
    let (n1, n2) = (mv.len(), mv[0].len());
    Tensor::from_vec(mv.concat(), (n1, n2), &Device::Cpu)
        .unwrap()
        .write_npy(d.join("m_row.npy"))
        .unwrap();
    m.write_npy(d.join("m.npy")).unwrap();
    let base = |mask: &str| -> Vec<String> {
        [
            "lowrank", "complete", "--input", y, "--mask", mask, "--device", "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mrow = d.join("m_row.npy");
    let mut a = base(mrow.to_str().unwrap());
    a.extend(["--rank".into(), "2".into()]);
    let se = run_err(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(
        se.contains("row 7") && se.contains("no observed entries"),
        "{se}"
    );
    let mp = d.join("m.npy");
    for frac in ["0", "1", "1.5"] {
        let mut a = base(mp.to_str().unwrap());
        a.extend(["--rank", "2", "--early-stop", "--holdout", frac].map(String::from));
        let se = run_err(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(se.contains("held-out fraction must be in (0, 1)"), "{se}");
    }
    let mut a = base(mp.to_str().unwrap());
    a.extend(["--rank", "2", "--early-stop", "--patience", "0"].map(String::from));
    let se = run_err(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(se.contains("patience"), "{se}");
    let mut a = base(mp.to_str().unwrap());
    a.extend(["--rank", "60"].map(String::from));
    let se = run_err(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(se.contains("smaller than the smallest dimension"), "{se}");
    // Non-finite observed data.
    let mut xv: Vec<Vec<f64>> = x.to_vec2().unwrap();
    xv[0][0] = f64::NAN;
    Tensor::from_vec(xv.concat(), (n1, n2), &Device::Cpu)
        .unwrap()
        .write_npy(d.join("y_nan.npy"))
        .unwrap();
    let ynan = d.join("y_nan.npy");
    let se = run_err(&[
        "lowrank",
        "complete",
        "--input",
        ynan.to_str().unwrap(),
        "--mask",
        mp.to_str().unwrap(),
        "--rank",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("NaN"), "{se}");
}

#[test]
fn l1_loss_recovers_with_outliers_from_files_and_synthetic() {
    let d = tmpdir("l1");
    // Synthetic: robust sensing (Polyak with the oracle f⋆) and RPCA (geometric steps).
    for (k, c) in [
        vec![
            "sense",
            "--loss",
            "l1",
            "--synthetic",
            "20,2,5,10",
            "--outliers",
            "0.1",
            "--step",
            "polyak",
            "--rank",
            "2",
        ],
        vec![
            "rpca",
            "--loss",
            "l1",
            "--synthetic",
            "60,2,5,0.1",
            "--rank",
            "2",
        ],
    ]
    .iter()
    .enumerate()
    {
        let rep = d.join(format!("s{k}.json"));
        let mut args = vec!["lowrank"];
        args.extend(c.iter().copied());
        args.extend([
            "--tol",
            "1e-14",
            "--max-iter",
            "400",
            "--report",
            rep.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        run_ok(&args);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        assert_eq!(r["loss"], "l1");
        let e = r["truth_rel_error"].as_f64().unwrap();
        assert!(e < 1e-9, "{c:?}: relative error to the truth {e}");
    }
    // From files: the rank-2 matrix with a few gross outliers on 70% of the entries;
    // ℓ1 with a mask recovers it.
    let (x, _) = rank2_problem();
    let (n1, n2) = x.dims2().unwrap();
    let mut y: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut m = vec![0f64; n1 * n2];
    for k in 0..n1 * n2 {
        let (i, j) = (k / n2, k % n2);
        m[k] = if (i * 31 + j * 17 + i * j) % 10 < 7 {
            1.0
        } else {
            0.0
        };
        if (i * 13 + j * 7 + i * j * 3) % 29 == 0 {
            y[k] += if k % 2 == 0 { 5.0 } else { -5.0 };
        }
        if m[k] == 0.0 {
            y[k] = f64::NAN; // unobserved entries may hold anything
        }
    }
    Tensor::from_vec(y, (n1, n2), &Device::Cpu)
        .unwrap()
        .write_npy(d.join("y.npy"))
        .unwrap();
    Tensor::from_vec(m, (n1, n2), &Device::Cpu)
        .unwrap()
        .write_npy(d.join("m.npy"))
        .unwrap();
    let out = d.join("x.npy");
    run_ok(&[
        "lowrank",
        "rpca",
        "--loss",
        "l1",
        "--input",
        d.join("y.npy").to_str().unwrap(),
        "--mask",
        d.join("m.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--alpha",
        "0.05",
        "--max-iter",
        "400",
        "--tol",
        "1e-14",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let xh = Tensor::read_npy(&out).unwrap();
    let e = ((&xh - &x)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        / x.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap())
    .sqrt();
    assert!(e < 1e-8, "ℓ1 robust completion error {e}");
}

#[test]
fn l1_bad_inputs_are_clear_errors() {
    let se = run_err(&[
        "lowrank",
        "rpca",
        "--synthetic",
        "40,2,5,0.1",
        "--rank",
        "2",
        "--mask",
        "m.npy",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("--mask needs --loss l1"), "{se}");
    let se = run_err(&[
        "lowrank",
        "sense",
        "--synthetic",
        "15,2,5,15",
        "--rank",
        "2",
        "--psd",
        "--loss",
        "l1",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("not available with --psd"), "{se}");
    let se = run_err(&[
        "lowrank",
        "rpca",
        "--loss",
        "l1",
        "--synthetic",
        "40,2,5,0.1",
        "--rank",
        "2",
        "--step-q",
        "1.5",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("decay q must be in (0, 1)"), "{se}");
    let se = run_err(&[
        "lowrank",
        "rpca",
        "--loss",
        "l1",
        "--synthetic",
        "40,2,5,0.1",
        "--rank",
        "40",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("smaller than the smallest dimension"), "{se}");
}

/// 1-D complex128 NPY written byte by byte (independent of the CLI's reader).
fn write_c16(path: &std::path::Path, v: &[(f64, f64)]) {
    let mut h = format!(
        "{{'descr': '<c16', 'fortran_order': False, 'shape': ({},), }}",
        v.len()
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    for (re, im) in v {
        b.extend_from_slice(&re.to_le_bytes());
        b.extend_from_slice(&im.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

fn read_c16(path: &std::path::Path) -> Vec<(f64, f64)> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(h.contains("'<c16'"), "{h}");
    b[10 + hl..]
        .chunks(16)
        .map(|c| {
            (
                f64::from_le_bytes(c[..8].try_into().unwrap()),
                f64::from_le_bytes(c[8..].try_into().unwrap()),
            )
        })
        .collect()
}

#[test]
fn hankel_recovers_complex_and_real_signals_with_their_frequencies() {
    let d = tmpdir("hankel");
    let n = 127;
    let tau = 2.0 * std::f64::consts::PI;
    // Complex: two damped exponentials, 40% of the samples observed (mask file).
    let comps = [(0.123, 0.01, 1.0), (-0.31, 0.0, 0.4)];
    let x: Vec<(f64, f64)> = (0..n)
        .map(|t| {
            comps.iter().fold((0.0, 0.0), |acc, &(f, dmp, a)| {
                let m = a * (-dmp * t as f64).exp();
                let ph = tau * f * t as f64;
                (acc.0 + m * ph.cos(), acc.1 + m * ph.sin())
            })
        })
        .collect();
    let mask: Vec<f64> = (0..n)
        .map(|t| {
            if (t * 37 + 11) % 10 < 4 || t == 0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    write_c16(&d.join("x.npy"), &x);
    Tensor::from_vec(mask, n, &Device::Cpu)
        .unwrap()
        .write_npy(d.join("m.npy"))
        .unwrap();
    let (out, rep) = (d.join("xh.npy"), d.join("r.json"));
    run_ok(&[
        "lowrank",
        "hankel",
        "--input",
        d.join("x.npy").to_str().unwrap(),
        "--mask",
        d.join("m.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--tol",
        "1e-14",
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    let xh = read_c16(&out);
    let err: f64 = xh
        .iter()
        .zip(&x)
        .map(|(a, b)| (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2))
        .sum::<f64>()
        .sqrt()
        / x.iter().map(|b| b.0 * b.0 + b.1 * b.1).sum::<f64>().sqrt();
    assert!(err < 1e-9, "complex signal error {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let est = v["components"].as_array().unwrap();
    for (e, &(f, dmp, a)) in est.iter().zip(&comps) {
        assert!((e["frequency"].as_f64().unwrap() - f).abs() < 1e-8, "{e}");
        assert!((e["damping"].as_f64().unwrap() - dmp).abs() < 1e-8, "{e}");
        assert!((e["amplitude"].as_f64().unwrap() - a).abs() < 1e-7, "{e}");
    }
    // Real: one real sinusoid = two conjugate exponentials (rank 2); NaN = unobserved.
    let xr: Vec<f64> = (0..n)
        .map(|t| {
            if (t * 53 + 5) % 10 < 5 || t < 2 {
                (tau * 0.2 * t as f64 + 0.5).cos() * (-0.005 * t as f64).exp()
            } else {
                f64::NAN
            }
        })
        .collect();
    let truth: Vec<f64> = (0..n)
        .map(|t| (tau * 0.2 * t as f64 + 0.5).cos() * (-0.005 * t as f64).exp())
        .collect();
    Tensor::from_vec(xr, n, &Device::Cpu)
        .unwrap()
        .write_npy(d.join("xr.npy"))
        .unwrap();
    run_ok(&[
        "lowrank",
        "hankel",
        "--input",
        d.join("xr.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--tol",
        "1e-14",
        "--out",
        d.join("xrh.npy").to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    let xrh: Vec<f64> = Tensor::read_npy(d.join("xrh.npy"))
        .unwrap()
        .to_vec1()
        .unwrap();
    let err = xrh
        .iter()
        .zip(&truth)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
        / truth.iter().map(|b| b * b).sum::<f64>().sqrt();
    assert!(err < 1e-9, "real signal error {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let mut fs: Vec<f64> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["frequency"].as_f64().unwrap())
        .collect();
    fs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(
        (fs[0] + 0.2).abs() < 1e-8 && (fs[1] - 0.2).abs() < 1e-8,
        "{fs:?}"
    );
    // Synthetic and bad input.
    run_ok(&[
        "lowrank",
        "hankel",
        "--synthetic",
        "64,3,10,0.4",
        "--rank",
        "3",
        "--report",
        rep.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert!(v["truth_signal_rel_error"].as_f64().unwrap() < 1e-8, "{v}");
    let se = run_err(&[
        "lowrank",
        "hankel",
        "--synthetic",
        "64,3,10,0.4",
        "--rank",
        "64",
    ]);
    assert!(se.contains("smaller than the smallest dimension"), "{se}");
    let se = run_err(&[
        "lowrank",
        "hankel",
        "--synthetic",
        "64,3,10,0.4",
        "--rank",
        "3",
        "--dtype",
        "f32",
    ]);
    assert!(se.contains("f32 is not supported"), "{se}");
    let se = run_err(&[
        "lowrank",
        "hankel",
        "--input",
        d.join("xr.npy").to_str().unwrap(),
        "--mask",
        d.join("m.npy").to_str().unwrap(),
        "--rank",
        "2",
    ]);
    assert!(se.contains("NaN"), "{se}");
}

#[test]
fn learned_rpca_trains_saves_compares_and_applies() {
    let d = tmpdir("learned");
    let stem = d.join("model");
    let rep = d.join("r.json");
    let (so, _) = run_ok(&[
        "lowrank",
        "learned-rpca",
        "train",
        "--model",
        stem.to_str().unwrap(),
        "--rank",
        "2",
        "--synthetic",
        "40,2,3,0.1",
        "--instances",
        "2",
        "--heldout",
        "1",
        "--unroll",
        "6",
        "--steps",
        "40",
        "--max-iter",
        "100",
        "--report",
        rep.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(so.contains("| held-out seed |"), "{so}");
    assert!(d.join("model.safetensors").exists() && d.join("model.json").exists());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let h = v["model"]["loss_history"].as_array().unwrap();
    assert_eq!(h.len(), 40);
    assert!(h[39].as_f64().unwrap() < 0.1 * h[0].as_f64().unwrap());
    assert!(v["heldout"][0]["learned"].as_u64().is_some(), "{v}");
    // Apply to a fresh instance written as .npy.
    let (x, _) = rank2_problem();
    let mut y: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    for k in (0..y.len()).step_by(17) {
        y[k] += 3.0;
    }
    Tensor::from_vec(y, (60, 50), &Device::Cpu)
        .unwrap()
        .write_npy(d.join("y.npy"))
        .unwrap();
    run_ok(&[
        "lowrank",
        "learned-rpca",
        "apply",
        "--model",
        stem.to_str().unwrap(),
        "--input",
        d.join("y.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--iters",
        "40",
        "--out",
        d.join("x.npy").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let xh = Tensor::read_npy(d.join("x.npy")).unwrap();
    assert_eq!(xh.dims(), &[60, 50]);
    let se = run_err(&[
        "lowrank",
        "learned-rpca",
        "train",
        "--model",
        stem.to_str().unwrap(),
        "--rank",
        "2",
        "--synthetic",
        "40,2,3,0.1",
        "--input",
        "y.npy",
    ]);
    assert!(se.contains("not both"), "{se}");
    let se = run_err(&[
        "lowrank",
        "learned-rpca",
        "apply",
        "--model",
        d.join("nope").to_str().unwrap(),
        "--input",
        d.join("y.npy").to_str().unwrap(),
        "--rank",
        "2",
        "--out",
        d.join("x2.npy").to_str().unwrap(),
    ]);
    assert!(se.contains("nope"), "{se}");
    let se = run_err(&[
        "lowrank",
        "learned-rpca",
        "train",
        "--model",
        stem.to_str().unwrap(),
        "--rank",
        "40",
        "--synthetic",
        "40,2,3,0.1",
        "--device",
        "cpu",
    ]);
    assert!(se.contains("smaller than the smallest dimension"), "{se}");
}
