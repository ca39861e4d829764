//! MRI end to end: parity of `mri` / `mri-multicoil` with deepinv's `MRI` / `MultiCoilMRI`
//! and of the simulated coils with sigpy's birdcage maps (fixtures by
//! `scripts/gen_mri_fixtures.py`, read through the complex `.npy` reader), and the CLI on the
//! bundled prior: every sampler runs on both MRI tasks (a smoke test: no MRI prior ships),
//! k-space is written and read back as complex `.npy`, and bad MRI input is a clear error.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use genprior_inverse::physics::mri::birdcage_maps;
use genprior_inverse::{build_task, Operator, TaskOptions};
use genprior_pipeline::files::{read_npy, write_npy_complex};

fn fx(name: &str) -> Tensor {
    read_npy(&fixtures().join("mri").join(name), name, &Device::Cpu).unwrap()
}

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let m = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / m
}

fn op_with(task: &str, c: usize, files: &[(&str, &str)]) -> Box<dyn Operator> {
    let mut o = TaskOptions::new(task).unwrap();
    for (opt, file) in files {
        o.set(opt, fx(file)).unwrap();
    }
    build_task(&o, [c, 32, 32]).unwrap()
}

#[test]
fn complex_fixtures_read_in_the_planar_layout() {
    let x = fx("x_complex.npy"); // complex128 (32, 32)
    assert_eq!(x.dims(), &[2, 32, 32]);
    let maps = fx("maps.npy"); // complex64 (4, 32, 32)
    assert_eq!(maps.dims(), &[2, 4, 32, 32]);
    // Written back as complex64 and read again: the same values.
    let tmp = temp_dir("mri-npy");
    let p = tmp.join("maps.npy");
    write_npy_complex(&maps, &p).unwrap();
    assert_eq!(
        max_abs_diff(&read_npy(&p, "maps", &Device::Cpu).unwrap(), &maps),
        0.0
    );
    let head = std::fs::read(&p).unwrap();
    let header = String::from_utf8_lossy(&head[10..80]);
    assert!(
        header.contains("'descr': '<c8'") && header.contains("(4, 32, 32)"),
        "{header}"
    );
    std::fs::remove_dir_all(tmp).ok();
}

#[test]
fn single_coil_matches_deepinv() {
    let op = op_with("mri", 2, &[("kspace-mask", "mask.npy")]);
    let x = host(&fx("x_complex.npy"));
    let y = op.forward_host(&x).unwrap();
    let e = rel_err(&y, &host(&fx("y_single.npy")));
    assert!(e < 1e-5, "A x vs deepinv MRI.A: {e:e}");
    let adj = op.adjoint_host(&host(&fx("y_single.npy"))).unwrap();
    let e = rel_err(&adj, &host(&fx("adj_single.npy")));
    assert!(e < 1e-5, "Aᴴ y vs deepinv MRI.A_adjoint: {e:e}");
}

#[test]
fn multi_coil_matches_deepinv() {
    let op = op_with(
        "mri-multicoil",
        2,
        &[("kspace-mask", "mask.npy"), ("coil-maps", "maps.npy")],
    );
    let x = host(&fx("x_complex.npy"));
    let y = op.forward_host(&x).unwrap();
    let e = rel_err(&y, &host(&fx("y_multi.npy")));
    assert!(e < 1e-5, "A x vs deepinv MultiCoilMRI.A: {e:e}");
    let adj = op.adjoint_host(&host(&fx("y_multi.npy"))).unwrap();
    let e = rel_err(&adj, &host(&fx("adj_multi.npy")));
    assert!(e < 1e-5, "Aᴴ y vs deepinv MultiCoilMRI.A_adjoint: {e:e}");
}

#[test]
fn root_sum_of_squares_matches_deepinv() {
    let maps = fx("maps.npy");
    let mask = fx("mask.npy");
    let dims = maps.dims().to_vec();
    let mut o = TaskOptions::new("mri-multicoil").unwrap();
    o.set("kspace-mask", mask).unwrap();
    o.set("coil-maps", maps).unwrap();
    o.set("mri-baseline", "rss").unwrap();
    let op = build_task(&o, [2, 32, 32]).unwrap();
    assert_eq!(op.measurement_shape(), vec![2, dims[1], 32, 32]);
    let b = op.baseline_host(&host(&fx("y_multi.npy"))).unwrap();
    let rss = host(&fx("rss_multi.npy"));
    // The baseline is clipped to [-1, 1]; the phantom's RSS is below 1.
    assert!(rss.iter().all(|v| *v < 1.0));
    let e = rel_err(&b[..32 * 32], &rss);
    assert!(e < 1e-5, "rss vs deepinv A_adjoint(rss=True): {e:e}");
    assert!(b[32 * 32..].iter().all(|v| *v == 0.0), "imaginary part 0");
    // A real image cannot hold a magnitude baseline.
    let e = build_task(&o, [1, 32, 32]).err().unwrap().to_string();
    assert!(e.contains("magnitude"), "{e}");
}

fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (1.0 / mse).log10()
}

/// The classical baselines' known quality on the Shepp–Logan phantom (64×64, values in
/// [0, 1]) with 8 simulated coils at R = 4: CG-SENSE unfolds the aliasing that the
/// zero-filled coil combination keeps: exactly when noise-free (180 dB against 19.2), 25.4 dB
/// against 19.2 at σ = 0.01, and 21.5 against 18.8 with a random mask (worse conditioned).
#[test]
fn cg_sense_beats_zero_filled_on_the_phantom() {
    let x = host(
        &read_npy(
            &fixtures().join("ct/phantom64.npy"),
            "phantom",
            &Device::Cpu,
        )
        .unwrap(),
    );
    for (pattern, sigma, margin) in [
        ("equispaced", 0.0, 15.0),
        ("equispaced", 0.01, 5.0),
        ("random", 0.01, 2.0),
    ] {
        let mut o = TaskOptions::new("mri-multicoil").unwrap();
        o.set("mask-pattern", pattern).unwrap();
        o.set("noise-sigma", sigma).unwrap();
        if sigma == 0.0 {
            o.set("likelihood-sigma", 0.01).unwrap();
        }
        let op = build_task(&o, [1, 64, 64]).unwrap();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
        let y = op.simulate_host(&x, &mut rng).unwrap();
        let zf = psnr(&op.adjoint_host(&y).unwrap(), &x);
        let cg = psnr(&op.baseline_host(&y).unwrap(), &x);
        eprintln!("phantom 64², 8 coils, R = 4 {pattern}, σ = {sigma}: zero-filled {zf:.1} dB, CG-SENSE {cg:.1} dB");
        assert!(
            cg > zf + margin,
            "{pattern}: CG-SENSE {cg} vs zero-filled {zf}"
        );
    }
}

#[test]
fn simulated_coils_are_sigpys_birdcage_maps() {
    let maps = host(&fx("maps.npy"));
    let ours = birdcage_maps(4, 32, 32);
    let n = ours.len();
    let planar: Vec<f64> = ours
        .iter()
        .map(|v| v.re)
        .chain(ours.iter().map(|v| v.im))
        .collect();
    assert_eq!(planar.len(), 2 * n);
    // The fixture went through complex64.
    let e = rel_err(&planar, &maps);
    assert!(e < 1e-6, "birdcage maps vs deepinv/sigpy: {e:e}");
}

fn prior() -> PathBuf {
    repo_root().join("models/mnist-ddpm-32")
}

fn slice() -> PathBuf {
    repo_root().join("examples/mri-slice.png")
}

fn reconstruct(task: &str, method: &str, extra: &[&str], out: &Path) -> std::process::Output {
    let mut cmd = bin();
    cmd.args([
        "reconstruct",
        "--device",
        "cpu",
        "--samples",
        "2",
        "--seed",
        "1",
        "--model",
    ])
    .arg(prior())
    .args(["--task", task, "--method", method])
    .args(extra)
    .arg("--out")
    .arg(out);
    cmd.args(tiny_budgets());
    cmd.output().unwrap()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// Every sampler on both MRI tasks with the bundled (real-valued) prior, from a PNG: the
/// outputs are written, the measurement is complex k-space, the baseline is scored.
#[test]
fn every_method_runs_on_both_mri_tasks() {
    let tmp = temp_dir("mri-cli");
    for task in ["mri", "mri-multicoil"] {
        for method in genprior_posterior::method_names() {
            if method == "dpnp-ddim" && task == "mri-multicoil" {
                continue; // DDS-DDIM's grid is slow in debug builds; dpnp-ddpm covers DPnP.
            }
            let out = tmp.join(format!("{task}-{method}"));
            let input = slice();
            let o = reconstruct(
                task,
                method,
                &["--input", input.to_str().unwrap(), "--coils", "4"]
                    [..if task == "mri" { 2 } else { 4 }],
                &out,
            );
            if stderr(&o).contains("cannot run task") {
                assert_clean_error(&o, &[method, &format!("`{task}`"), "it needs"]);
                continue;
            }
            assert_success(&o);
            let r = report(&out);
            assert_eq!(r["complex_measurement"], true, "{task} {method}");
            assert_eq!(r["complex_image"], false, "{task} {method}");
            assert!(
                r["baseline"]["psnr"].as_f64().unwrap() > 10.0,
                "{task} {method}: {r}"
            );
            assert!(out.join("measurement.png").is_file());
            let y = read_npy(&out.join("measurement.npy"), "k-space", &Device::Cpu).unwrap();
            let want: &[usize] = if task == "mri" {
                &[2, 32, 32]
            } else {
                &[2, 4, 32, 32]
            };
            assert_eq!(y.dims(), want, "{task}: measurement.npy is complex k-space");
        }
    }
    std::fs::remove_dir_all(tmp).ok();
}

/// k-space from `degrade` (complex `.npy`) back into `reconstruct --measurement`, with the
/// mask and coil maps given as files: the same y, so the same baseline.
#[test]
fn kspace_files_round_trip_through_the_cli() {
    let tmp = temp_dir("mri-files");
    let mask = fixtures().join("mri/mask.npy");
    let maps = tmp.join("maps.npy");
    let m = birdcage_maps(3, 32, 32);
    let planar: Vec<f32> = m
        .iter()
        .map(|v| v.re as f32)
        .chain(m.iter().map(|v| v.im as f32))
        .collect();
    write_npy_complex(
        &Tensor::from_vec(planar, (2, 3, 32, 32), &Device::Cpu).unwrap(),
        &maps,
    )
    .unwrap();
    let files = [
        "--kspace-mask",
        mask.to_str().unwrap(),
        "--coil-maps",
        maps.to_str().unwrap(),
    ];
    let y = tmp.join("kspace.npy");
    let o = bin()
        .args([
            "degrade",
            "--task",
            "mri-multicoil",
            "--seed",
            "1",
            "--input",
        ])
        .arg(slice())
        .args(files)
        .arg("--out")
        .arg(&y)
        .output()
        .unwrap();
    assert_success(&o);
    let (a, b) = (tmp.join("from-input"), tmp.join("from-kspace"));
    let y_s = y.to_str().unwrap().to_string();
    let input = slice();
    let mut with_input: Vec<&str> = vec!["--input", input.to_str().unwrap()];
    with_input.extend(files);
    let o = reconstruct("mri-multicoil", "dps", &with_input, &a);
    assert_success(&o);
    let mut with_y: Vec<&str> = vec!["--measurement", &y_s];
    with_y.extend(files);
    let o = reconstruct("mri-multicoil", "dps", &with_y, &b);
    assert_success(&o);
    let ya = read_npy(&a.join("measurement.npy"), "a", &Device::Cpu).unwrap();
    let yb = read_npy(&b.join("measurement.npy"), "b", &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&ya, &yb), 0.0);
    assert_eq!(ya.dims(), &[2, 3, 32, 32]);
    let ba = image::open(a.join("baseline.png")).unwrap().to_luma8();
    let bb = image::open(b.join("baseline.png")).unwrap().to_luma8();
    assert_eq!(ba, bb, "same k-space, same CG-SENSE baseline");

    // Bad input: k-space that does not fit, k-space outside the mask, a 3-coil y for 4 maps.
    let bad = tmp.join("bad.npy");
    write_npy_complex(
        &Tensor::ones((2, 16, 16), DType::F32, &Device::Cpu).unwrap(),
        &bad,
    )
    .unwrap();
    let o = reconstruct(
        "mri",
        "dps",
        &["--measurement", bad.to_str().unwrap()],
        &tmp.join("x"),
    );
    assert_clean_error(&o, &["does not fit", "mri"]);
    write_npy_complex(
        &Tensor::ones((2, 32, 32), DType::F32, &Device::Cpu).unwrap(),
        &bad,
    )
    .unwrap();
    let o = reconstruct(
        "mri",
        "dps",
        &["--measurement", bad.to_str().unwrap()],
        &tmp.join("x"),
    );
    assert_clean_error(&o, &["outside the sampling mask"]);
    let o = reconstruct(
        "mri-multicoil",
        "dps",
        &["--measurement", &y_s, "--coils", "4"],
        &tmp.join("x"),
    );
    assert_clean_error(&o, &["does not fit"]);
    std::fs::remove_dir_all(tmp).ok();
}

/// A 2-channel (complex) model made from the 3-channel fixture UNet by keeping the first two
/// input and output channels of its first and last convolutions (random weights: the
/// pipeline is checked, not the image quality).
fn complex_model(dir: &Path) -> PathBuf {
    let src = fixtures().join("unet2d/positional_null_heads/model");
    let dst = dir.join("complex-model");
    copy_dir(&src, &dst);
    let file = dst.join("diffusion_pytorch_model.safetensors");
    let mut w = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    for (name, axis) in [
        ("conv_in.weight", 1),
        ("conv_out.weight", 0),
        ("conv_out.bias", 0),
    ] {
        let t = w[name].narrow(axis, 0, 2).unwrap().contiguous().unwrap();
        w.insert(name.to_string(), t);
    }
    candle_core::safetensors::save(&w, &file).unwrap();
    let cfg = dst.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["in_channels"] = 2.into();
    c["out_channels"] = 2.into();
    std::fs::write(&cfg, c.to_string()).unwrap();
    dst
}

/// Complex images end to end: a complex `.npy` ground truth, a 2-channel model; the outputs
/// are magnitude PNGs, complex `samples.npy`, and scores on the magnitude.
#[test]
fn complex_images_end_to_end() {
    let tmp = temp_dir("mri-complex");
    let model = complex_model(&tmp);
    // A complex 16×16 image: magnitude 0.6 inside a disk, a linear phase.
    let (h, w) = (16usize, 16usize);
    let mut planar = vec![0f32; 2 * h * w];
    for i in 0..h {
        for j in 0..w {
            let r = ((i as f32 - 8.0).powi(2) + (j as f32 - 8.0).powi(2)).sqrt();
            let mag = if r < 6.0 { 0.6 } else { 0.05 };
            let ph = 0.2 * (i as f32 - j as f32);
            planar[i * w + j] = mag * ph.cos();
            planar[h * w + i * w + j] = mag * ph.sin();
        }
    }
    let x = tmp.join("x.npy");
    write_npy_complex(
        &Tensor::from_vec(planar, (2, h, w), &Device::Cpu).unwrap(),
        &x,
    )
    .unwrap();
    let out = tmp.join("out");
    let o = bin()
        .args([
            "reconstruct",
            "--device",
            "cpu",
            "--samples",
            "3",
            "--model",
        ])
        .arg(&model)
        .args([
            "--task",
            "mri",
            "--method",
            "dpnp-ddpm",
            "--outer-steps",
            "2",
        ])
        .args([
            "--k-start",
            "1",
            "--eta-max",
            "0.03",
            "--eta-min",
            "0.02",
            "--pcs",
            "exact",
        ])
        .arg("--input")
        .arg(&x)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&o);
    let r = report(&out);
    assert_eq!(r["complex_image"], true);
    assert_eq!(r["image_shape"], serde_json::json!([2, 16, 16]));
    assert!(r["reconstruction"]["psnr"].as_f64().is_some(), "{r}");
    let samples = read_npy(&out.join("samples.npy"), "samples", &Device::Cpu).unwrap();
    assert_eq!(
        samples.dims(),
        &[2, 3, 16, 16],
        "complex (K, H, W) = planar (2, K, H, W)"
    );
    for f in [
        "reconstruction.png",
        "baseline.png",
        "std.png",
        "samples/000.png",
    ] {
        let img = image::open(out.join(f)).unwrap();
        assert_eq!(img.color().channel_count(), 1, "{f}: a magnitude image");
    }
    // The magnitude PNG of the zero-filled baseline: bright disk, dark outside.
    let b = image::open(out.join("baseline.png")).unwrap().to_luma8();
    assert!(
        b.get_pixel(8, 8)[0] > b.get_pixel(0, 0)[0] + 60,
        "disk visible"
    );

    // A PNG for a complex model, or a complex model on a real task, is a clear error.
    let e = bin()
        .args(["reconstruct", "--device", "cpu", "--model"])
        .arg(&model)
        .args(["--task", "mri", "--input"])
        .arg(slice())
        .arg("--out")
        .arg(tmp.join("e1"))
        .output()
        .unwrap();
    assert_clean_error(&e, &["complex .npy"]);
    let e = bin()
        .args(["reconstruct", "--device", "cpu", "--model"])
        .arg(&model)
        .args(["--task", "denoise", "--input"])
        .arg(&x)
        .arg("--out")
        .arg(tmp.join("e2"))
        .output()
        .unwrap();
    assert_clean_error(&e, &["2 channels", "does not take complex images"]);
    std::fs::remove_dir_all(tmp).ok();
}
