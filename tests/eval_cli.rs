//! `genprior eval`: the quick (CI-sized) quality benchmark runs every task × method on the
//! bundled prior and image set, writes a complete summary, resumes, and rejects bad input.
//! It checks the pipeline, not the numbers (a handful of images, tiny step counts).

mod common;

use common::{assert_clean_error, assert_success, bin, stderr, temp_dir};
use serde_json::Value;

#[test]
fn quick_benchmark_covers_every_task_and_method_and_resumes() {
    let out = temp_dir("eval-quick");
    let o = bin()
        .args(["eval", "--quick", "--device", "cpu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&o);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let rows = summary["rows"].as_array().unwrap();
    let tasks = genprior_inverse::task_names();
    let methods = genprior_pipeline::eval::eval_methods();
    assert_eq!(rows.len(), tasks.len() * methods.len(), "{summary:#}");
    assert_eq!(summary["run"]["n_images"], 4);
    let mut unsupported = Vec::new();
    for r in rows {
        // A method that cannot take a task's operator is listed, not run.
        if let Some(why) = r["unsupported"].as_str() {
            assert!(
                why.contains("cannot run task") && why.contains("it needs"),
                "{r}"
            );
            unsupported.push((r["task"].clone(), r["method"].clone()));
            continue;
        }
        for k in ["psnr_mean", "ssim_mean", "seconds_per_image"] {
            let v = r[k].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "{k} of {r}");
        }
        let nfe = r["nfe_per_image"].as_u64().unwrap();
        match r["method"].as_str().unwrap() {
            "baseline" => assert_eq!(nfe, 0),
            // 2 outer steps × at most 2 DDS evaluations (quick settings), plus the 4 DPS
            // steps DPnP starts from on phase retrieval.
            "dpnp-ddim" | "dpnp-ddpm" if r["task"] == "phase-retrieval" => {
                assert!((5..=8).contains(&nfe), "{r}")
            }
            "dpnp-ddim" | "dpnp-ddpm" => assert!((1..=4).contains(&nfe), "{r}"),
            "dps" => assert_eq!(nfe, 4),
            // 4 DiffPIR steps: the last evaluates nothing.
            "diffpir" => assert_eq!(nfe, 3),
            m => assert!(methods.contains(&m) && nfe >= 1, "{r}"),
        }
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| one-bit | dpnp-ddim |"), "{md}");
    for t in tasks {
        assert!(
            out.join("grids").join(format!("{t}.png")).is_file(),
            "grid of {t}"
        );
    }
    // Per-image values are recorded with the indices they belong to.
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results/sr4__dpnp-ddim.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["psnr"].as_array().unwrap().len(), 4);
    assert_eq!(r["indices"], serde_json::json!([0, 1, 2, 3]));

    // A rerun with the same settings reuses every finished result.
    let o = bin()
        .args([
            "eval", "--quick", "--device", "cpu", "--tasks", "sr4,cs", "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&o);
    let skipped = unsupported
        .iter()
        .filter(|(t, _)| *t == "sr4" || *t == "cs")
        .count();
    assert_eq!(
        stderr(&o).matches("reusing").count(),
        2 * methods.len() - skipped,
        "{}",
        stderr(&o)
    );
    // Changed settings recompute.
    let o = bin()
        .args([
            "eval",
            "--quick",
            "--device",
            "cpu",
            "--tasks",
            "sr4",
            "--methods",
            "baseline",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&o);
    assert!(!stderr(&o).contains("reusing"), "{}", stderr(&o));
}

#[test]
fn results_do_not_depend_on_the_batch_size() {
    // Per-image noise streams: 4 images in one batch or in batches of 3 and 1 give the same
    // reconstructions for every sampler (DPnP's PCS and DDS, DPS). Images in batches the
    // CPU kernels block the same way agree bit for bit; the others (a batch of 1 here: its
    // convolutions take another blocking, or im2col instead of Winograd) to f32 rounding of
    // the network (measured: at most 4.3e-6).
    let out = temp_dir("eval-batch");
    let run = |batch: &str, dir: &str| {
        let o = bin()
            .args([
                "eval",
                "--quick",
                "--device",
                "cpu",
                "--tasks",
                "sr4,one-bit",
                "--batch",
                batch,
                "--out",
            ])
            .arg(out.join(dir))
            .output()
            .unwrap();
        assert_success(&o);
    };
    run("100", "one");
    run("3", "split");
    let mut compared = 0;
    for entry in std::fs::read_dir(out.join("one/reconstructions")).unwrap() {
        let name = entry.unwrap().file_name();
        let read = |dir: &str| {
            candle_core::Tensor::read_npy(out.join(dir).join("reconstructions").join(&name))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (a, b) = (read("one"), read("split"));
        assert_eq!(a.len(), b.len());
        let per = a.len() / 4;
        // The first three images ran in batches of 3 and 4: the same blocking, the same bits.
        assert_eq!(a[..3 * per], b[..3 * per], "{name:?}: images 0-2");
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{name:?} differs by {worst} between --batch 100 and --batch 3"
        );
        compared += 1;
    }
    // Every pair but those a method cannot take (listed as unsupported in the summary).
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("one/summary.json")).unwrap())
            .unwrap();
    let supported = summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["unsupported"].is_null())
        .count();
    assert_eq!(compared, supported);
    assert!(supported > genprior_pipeline::eval::eval_methods().len());
}

#[test]
fn bad_benchmark_arguments_fail_cleanly() {
    let out = temp_dir("eval-bad");
    let run = |extra: &[&str]| {
        bin()
            .args(["eval", "--quick", "--device", "cpu", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_clean_error(&run(&["--tasks", "sr3"]), &["unknown task", "sr3"]);
    assert_clean_error(&run(&["--methods", "ddpm"]), &["unknown method", "ddpm"]);
    assert_clean_error(&run(&["--indices", "0:500:1"]), &["END 500", "100 images"]);
    assert_clean_error(&run(&["--indices", "0:10:0"]), &["STEP"]);
    assert_clean_error(&run(&["--dds-steps", "0"]), &["at least 1"]);
    assert_clean_error(
        &run(&["--images", "/nonexistent/x.npy"]),
        &["no such image file"],
    );
    // A file that is neither .npy nor IDX.
    let junk = out.join("junk.idx");
    std::fs::write(&junk, b"not an idx file at all").unwrap();
    assert_clean_error(
        &run(&["--images", junk.to_str().unwrap()]),
        &["not an IDX image file"],
    );
    // Images of the wrong channel count.
    let rgb = candle_core::Tensor::zeros(
        (2, 3, 32, 32),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let p = out.join("rgb.npy");
    rgb.write_npy(&p).unwrap();
    assert_clean_error(
        &run(&["--images", p.to_str().unwrap()]),
        &["3 channel(s)", "takes 1"],
    );
    // Float images outside [-1, 1].
    let big = (candle_core::Tensor::ones(
        (2, 1, 32, 32),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap()
        * 3.0)
        .unwrap();
    let p = out.join("big.npy");
    big.write_npy(&p).unwrap();
    assert_clean_error(&run(&["--images", p.to_str().unwrap()]), &["[-1, 1]"]);
}

#[test]
fn idx_files_are_read_and_padded() {
    // A 3-image 28×28 IDX file: the digits are zero-padded to 32×32 like the training data.
    let out = temp_dir("eval-idx");
    let mut bytes = vec![0u8, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    for i in 0..3 * 28 * 28 {
        bytes.push((i % 251) as u8);
    }
    let p = out.join("images-idx3-ubyte");
    std::fs::write(&p, &bytes).unwrap();
    let o = bin()
        .args([
            "eval",
            "--quick",
            "--device",
            "cpu",
            "--tasks",
            "denoise",
            "--methods",
            "baseline",
            "--indices",
            "1:3",
            "--images",
        ])
        .arg(&p)
        .arg("--out")
        .arg(out.join("run"))
        .output()
        .unwrap();
    assert_success(&o);
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("run/results/denoise__baseline.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["indices"], serde_json::json!([1, 2]));
    // Truncated IDX file.
    std::fs::write(&p, &bytes[..1000]).unwrap();
    let o = bin()
        .args(["eval", "--quick", "--device", "cpu", "--images"])
        .arg(&p)
        .arg("--out")
        .arg(out.join("run2"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["truncated or corrupt IDX"]);
}

#[test]
fn several_samples_per_image_report_the_mean_the_single_sample_and_calibration() {
    let out = temp_dir("eval-samples");
    let run = |samples: &str, dir: &str| {
        let o = bin()
            .args([
                "eval",
                "--quick",
                "--device",
                "cpu",
                "--tasks",
                "denoise,sr4",
                "--methods",
                "baseline,dpnp-ddpm,dps",
                "--samples",
                samples,
                "--out",
            ])
            .arg(out.join(dir))
            .output()
            .unwrap();
        assert_success(&o);
        o
    };
    let o = run("3", "three");
    assert!(stderr(&o).contains("90 % coverage"), "{}", stderr(&o));
    run("1", "one");
    let read = |dir: &str, pair: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(out.join(dir).join("results").join(format!("{pair}.json")))
                .unwrap(),
        )
        .unwrap()
    };
    let nums = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    for pair in ["denoise__dpnp-ddpm", "denoise__dps", "sr4__dpnp-ddpm"] {
        let r = read("three", pair);
        assert_eq!(r["samples_per_image"], 3, "{pair}");
        let (psnr, single) = (nums(&r["psnr"]), nums(&r["single_sample_psnr"]));
        assert_eq!(single.len(), 4);
        // The posterior mean and one sample are different images.
        assert!(
            psnr.iter().zip(&single).any(|(a, b)| (a - b).abs() > 1e-6),
            "{pair}"
        );
        let cov = nums(&r["interval_90_coverage"]);
        assert_eq!(cov.len(), 4);
        assert!(
            cov.iter().all(|c| (0.0..=1.0).contains(c)),
            "{pair}: {cov:?}"
        );
        let cor = nums(&r["error_std_correlation"]);
        assert!(
            cor.iter().all(|c| c.is_nan() || (-1.0..=1.0).contains(c)),
            "{cor:?}"
        );
        let m = r["interval_90_coverage_mean"].as_f64().unwrap();
        assert!((m - cov.iter().sum::<f64>() / 4.0).abs() < 1e-12);
        // Image 0's first sample is chain 0 of the run, as with one sample per image.
        let r1 = read("one", pair);
        assert_eq!(r1["samples_per_image"], 1);
        let p1 = nums(&r1["psnr"]);
        assert_eq!(p1, nums(&r1["single_sample_psnr"]));
        assert!(r1["interval_90_coverage"].is_null());
        assert!(
            (p1[0] - single[0]).abs() < 1e-3,
            "{pair}: {} vs {}",
            p1[0],
            single[0]
        );
        // The reconstructions file holds the posterior means the scores are of.
        let x = candle_core::Tensor::read_npy(
            out.join("three/reconstructions")
                .join(format!("{pair}.npy")),
        )
        .unwrap();
        assert_eq!(x.dims()[0], 4);
    }
    // The baseline is one image per measurement: no calibration.
    let b = read("three", "sr4__baseline");
    assert_eq!(b["samples_per_image"], 1);
    assert!(b["interval_90_coverage"].is_null());
    let md = std::fs::read_to_string(out.join("three/summary.md")).unwrap();
    assert!(
        md.contains("PSNR, 1 sample") && md.contains("90 % coverage"),
        "{md}"
    );
    assert!(md.contains("| sr4 | dps | 3 |"), "{md}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("three/summary.json")).unwrap())
            .unwrap();
    let row = summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "denoise" && r["method"] == "dps")
        .unwrap();
    assert!(row["interval_90_coverage_mean"].as_f64().is_some(), "{row}");
    assert!(row["single_sample_psnr_mean"].as_f64().is_some(), "{row}");
    let o = bin()
        .args([
            "eval",
            "--quick",
            "--device",
            "cpu",
            "--samples",
            "0",
            "--out",
        ])
        .arg(out.join("zero"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["--samples"]);
}
