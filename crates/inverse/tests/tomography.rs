//! `ct`: the sinogram and FBP against scikit-image's `radon` / `iradon` (fixtures written by
//! `scripts/gen_ct_fixtures.py`), the adjoint as the exact transpose, FBP intensities, and the
//! errors of bad options.

use std::path::PathBuf;
use std::sync::Arc;

use genprior_inverse::linalg::{dot, norm2};
use genprior_inverse::physics::{FbpFilter, Tomography};
use genprior_inverse::{build_task, Gaussian, InverseError, NoiseModel, Operator, TaskOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/ct"
    ))
}

/// A little-endian float64 C-order `.npy`: (shape, values).
fn read_npy(name: &str) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(fixtures().join(name)).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY", "{name}");
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f8'"), "{name}: {header}");
    assert!(
        header.contains("'fortran_order': False"),
        "{name}: {header}"
    );
    let sh = header.split("'shape': (").nth(1).unwrap();
    let sh = &sh[..sh.find(')').unwrap()];
    let shape: Vec<usize> = sh
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f64> = b[start + hlen..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
    (shape, data)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
        .unwrap()
}

fn gauss(s: f64) -> Arc<dyn NoiseModel> {
    Arc::new(Gaussian::with_sigma(s).unwrap())
}

/// scikit-image's `(D, K)` sinogram as our `(K, D)`.
fn transpose(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = v[i * cols + j];
        }
    }
    out
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn psnr(a: &[f64], truth: &[f64]) -> f64 {
    let mse = a
        .iter()
        .zip(truth)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse).log10()
}

fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
}

const CONFIGS: [&str; 3] = ["full", "sparse", "limited"];

fn config_op(name: &str, filter: FbpFilter) -> Tomography {
    let c = &reference()["configs"][name];
    let k = c["angles"].as_u64().unwrap() as usize;
    let r = c["angle_range"].as_f64().unwrap();
    let op = Tomography::new([1, 64, 64], k, r, filter, gauss(0.0)).unwrap();
    assert_eq!(op.detectors(), c["detectors"].as_u64().unwrap() as usize);
    op
}

#[test]
fn sinogram_matches_scikit_image_radon() {
    let (_, phantom) = read_npy("phantom64.npy");
    for name in CONFIGS {
        let op = config_op(name, FbpFilter::Ramp);
        let (shape, sk) = read_npy(&format!("sino_{name}.npy"));
        let (d, k) = (shape[0], shape[1]);
        assert_eq!(op.measurement_shape(), vec![1, k, d]);
        let ours = op.forward_host(&phantom).unwrap();
        let sk = transpose(&sk, d, k);
        let peak = sk.iter().cloned().fold(0.0, f64::max);
        let err = max_abs_diff(&ours, &sk);
        println!("{name}: max |ours − skimage radon| = {err:e} (sinogram peak {peak:.3})");
        // the same discretisation (ray-driven bilinear, unit steps): agreement to rounding
        assert!(err < 1e-10 * peak, "{name}: {err} vs peak {peak}");
    }
    // a non-square image: the rotation axis at (⌊H/2⌋, ⌊W/2⌋), D = ⌈√2·max(H, W)⌉
    let (ish, img) = read_npy("rect_image.npy");
    let (shape, sk) = read_npy("sino_rect.npy");
    let op = Tomography::new([1, ish[0], ish[1]], 30, 180.0, FbpFilter::Ramp, gauss(0.0)).unwrap();
    assert_eq!(op.detectors(), shape[0]);
    let err = max_abs_diff(
        &op.forward_host(&img).unwrap(),
        &transpose(&sk, shape[0], shape[1]),
    );
    println!("rect 24×40: max |ours − skimage radon| = {err:e}");
    assert!(err < 1e-10 * 40.0, "{err}");
}

#[test]
fn fbp_matches_scikit_image_iradon() {
    let (_, phantom) = read_npy("phantom64.npy");
    let r = reference();
    for name in CONFIGS {
        let (shape, sk) = read_npy(&format!("sino_{name}.npy"));
        let y = transpose(&sk, shape[0], shape[1]);
        for (filter, fname) in [(FbpFilter::Ramp, "ramp"), (FbpFilter::Hann, "hann")] {
            let op = config_op(name, filter);
            let (_, rec) = read_npy(&format!("fbp_{name}_{fname}.npy"));
            let ours = op.fbp(&y).unwrap();
            let err = max_abs_diff(&ours, &rec);
            let (p_ours, p_sk) = (psnr(&ours, &phantom), psnr(&rec, &phantom));
            let p_ref = r["configs"][name]["psnr"][fname].as_f64().unwrap();
            // the baseline on our own sinogram (clipped to [-1, 1])
            let base = op
                .baseline_host(&op.forward_host(&phantom).unwrap())
                .unwrap();
            let p_base = psnr(&base, &phantom);
            println!(
                "{name}/{fname}: PSNR ours {p_ours:.4} dB, iradon {p_sk:.4} dB (json {p_ref:.4}), baseline on our sinogram {p_base:.4} dB; max |ours − iradon| = {err:e}"
            );
            assert!((p_sk - p_ref).abs() < 1e-9);
            assert!((p_ours - p_sk).abs() < 0.5, "{name}/{fname}");
            assert!((p_base - p_sk).abs() < 0.5, "{name}/{fname}");
            // the same filter and back-projection: agreement to rounding
            assert!(err < 1e-10, "{name}/{fname}: {err}");
            assert!(base.iter().all(|v| (-1.0..=1.0).contains(v)));
        }
    }
}

#[test]
fn adjoint_is_the_exact_transpose() {
    // the explicit matrices of A and Aᵀ on a small non-square two-channel image
    let op = Tomography::new([2, 9, 7], 7, 150.0, FbpFilter::Ramp, gauss(0.1)).unwrap();
    let (n, m) = (op.image_len(), op.measurement_len());
    let mut a = vec![0.0; m * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        for (i, v) in op.forward_host(&e).unwrap().into_iter().enumerate() {
            a[i * n + j] = v;
        }
    }
    let mut worst = 0.0f64;
    for i in 0..m {
        let mut e = vec![0.0; m];
        e[i] = 1.0;
        let col = op.adjoint_host(&e).unwrap();
        for j in 0..n {
            worst = worst.max((col[j] - a[i * n + j]).abs());
        }
    }
    println!("max |Aᵀ − transpose(A)| = {worst:e}");
    assert!(worst <= 1e-15, "{worst}");
    assert!(a.iter().any(|v| *v != 0.0));
    // channels do not mix
    let x0: Vec<f64> = (0..n).map(|i| if i < n / 2 { 1.0 } else { 0.0 }).collect();
    let y0 = op.forward_host(&x0).unwrap();
    assert!(y0[m / 2..].iter().all(|v| *v == 0.0));

    // ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ in f64 on a larger operator, full and limited-angle
    for (k, range) in [(45, 180.0), (17, 100.0), (31, 360.0)] {
        let op = Tomography::new([3, 20, 26], k, range, FbpFilter::Hann, gauss(0.1)).unwrap();
        for seed in 0..3 {
            let x = rand_vec(op.image_len(), 10 + seed);
            let y = rand_vec(op.measurement_len(), 20 + seed);
            let ax = op.forward_host(&x).unwrap();
            let aty = op.adjoint_host(&y).unwrap();
            let (l, r) = (dot(&ax, &y), dot(&x, &aty));
            let scale = norm2(&ax).sqrt() * norm2(&y).sqrt();
            assert!(
                (l - r).abs() <= 1e-13 * scale,
                "{k} angles over {range}°: {l} vs {r}"
            );
        }
    }
}

#[test]
fn fbp_reconstructs_a_disk_to_its_intensity() {
    let (h, w) = (64usize, 64usize);
    let disk: Vec<f64> = (0..h * w)
        .map(|p| {
            let (i, j) = ((p / w) as f64 - 32.0, (p % w) as f64 - 32.0);
            if i * i + j * j <= 18.0 * 18.0 {
                0.8
            } else {
                0.0
            }
        })
        .collect();
    let centre = |v: &[f64]| -> f64 {
        let mut s = 0.0;
        let mut c = 0;
        for i in 26..39 {
            for j in 26..39 {
                s += v[i * w + j];
                c += 1;
            }
        }
        s / c as f64
    };
    for (k, range, tol) in [(180, 180.0, 0.01), (360, 360.0, 0.01), (90, 180.0, 0.01)] {
        let op = Tomography::new([1, h, w], k, range, FbpFilter::Ramp, gauss(0.0)).unwrap();
        let rec = op.fbp(&op.forward_host(&disk).unwrap()).unwrap();
        let c = centre(&rec);
        println!("{k} angles over {range}°: centre mean {c:.4} (truth 0.8)");
        assert!((c - 0.8).abs() < tol * 0.8, "{k}/{range}: {c}");
        // the background outside the disk stays near zero
        assert!(rec[2 * w + 2].abs() < 0.05, "{}", rec[2 * w + 2]);
    }
    // limited angle: on average over the disk centre the missing wedge is compensated
    let op = Tomography::new([1, h, w], 120, 120.0, FbpFilter::Ramp, gauss(0.0)).unwrap();
    let c = centre(&op.fbp(&op.forward_host(&disk).unwrap()).unwrap());
    println!("120 angles over 120°: centre mean {c:.4} (truth 0.8)");
    assert!((c - 0.8).abs() < 0.1 * 0.8, "{c}");
    // a constant image of 1 projects to its chord lengths: at 0° every bin sees a column
    let op = Tomography::new([1, 8, 8], 4, 180.0, FbpFilter::Ramp, gauss(0.0)).unwrap();
    let y = op.forward_host(&[1.0; 64]).unwrap();
    let d = op.detectors();
    assert_eq!(d, 12);
    let first: Vec<f64> = y[..d].to_vec();
    let expect: Vec<f64> = (0..d)
        .map(|b| if (2..10).contains(&b) { 8.0 } else { 0.0 })
        .collect();
    assert!(max_abs_diff(&first, &expect) < 1e-12, "{first:?}");
    // and the total mass is the same at every angle (each sample's weights sum to 1)
    for a in 0..4 {
        let s: f64 = y[a * d..(a + 1) * d].iter().sum();
        assert!((s - 64.0).abs() < 1.5, "angle {a}: {s}");
    }
}

#[test]
fn registry_options_and_shapes() {
    let o = TaskOptions::new("ct").unwrap();
    let op = build_task(&o, [3, 32, 32]).unwrap();
    assert_eq!(op.name(), "ct");
    assert_eq!(op.measurement_shape(), vec![3, 60, 46]);
    assert!(op.is_linear() && op.is_linear_gaussian());
    assert!(op.reference_task().is_none() && !op.sign_ambiguous());
    let o = TaskOptions::new("ct")
        .unwrap()
        .with("angles", 16usize)
        .unwrap()
        .with("angle-range", 90.0)
        .unwrap()
        .with("fbp-filter", "hann")
        .unwrap();
    let op = build_task(&o, [1, 16, 16]).unwrap();
    assert_eq!(op.measurement_shape(), vec![1, 16, 23]);
    let t = Tomography::new([1, 16, 16], 16, 90.0, FbpFilter::Hann, gauss(0.05)).unwrap();
    assert_eq!(t.angles_deg()[1], 5.625);
    assert_eq!(t.filter(), FbpFilter::Hann);
    let x = rand_vec(256, 3);
    assert_eq!(op.forward_host(&x).unwrap(), t.forward_host(&x).unwrap());
    let y = t.forward_host(&x).unwrap();
    assert_eq!(op.baseline_host(&y).unwrap(), t.baseline_host(&y).unwrap());
}

#[test]
fn bad_options_are_clear_errors() {
    let err = |o: TaskOptions, shape: [usize; 3]| -> InverseError {
        build_task(&o, shape).err().expect("an error")
    };
    let ct = || TaskOptions::new("ct").unwrap();
    let e = err(ct().with("angles", 0usize).unwrap(), [1, 16, 16]);
    let m = e.to_string();
    assert!(
        matches!(e, InverseError::InvalidOption { .. })
            && m.contains("`ct`")
            && m.contains("angles"),
        "{m}"
    );
    for r in [0.0, -30.0, 360.5, 720.0, f64::INFINITY] {
        let e = err(ct().with("angle-range", r).unwrap(), [1, 16, 16]);
        let m = e.to_string();
        assert!(
            m.contains("`ct`") && m.contains("angle range") && m.contains("(0, 360]"),
            "{r}: {m}"
        );
    }
    // 360 itself is fine
    assert!(build_task(&ct().with("angle-range", 360.0).unwrap(), [1, 16, 16]).is_ok());
    for shape in [[1, 3, 16], [1, 16, 2], [1, 1, 1]] {
        let e = err(ct(), shape);
        let m = e.to_string();
        assert!(
            matches!(e, InverseError::ImageShape { .. })
                && m.contains("`ct`")
                && m.contains("at least 4×4"),
            "{shape:?}: {m}"
        );
    }
    let e = err(ct(), [0, 16, 16]);
    assert!(matches!(e, InverseError::ImageShape { .. }), "{e}");
    let e = err(ct().with("angles", 100_000usize).unwrap(), [1, 256, 256]);
    assert!(e.to_string().contains("fewer angles"), "{e}");
    let m = ct()
        .set("fbp-filter", "shepp-logan")
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("ramp, hann"), "{m}");
    assert!(Tomography::with_angles([1, 8, 8], vec![], FbpFilter::Ramp, gauss(0.0)).is_err());
    assert!(
        Tomography::with_angles([1, 8, 8], vec![0.0, f64::NAN], FbpFilter::Ramp, gauss(0.0))
            .is_err()
    );
    // a measurement of the wrong length
    let op = Tomography::new([1, 8, 8], 4, 180.0, FbpFilter::Ramp, gauss(0.1)).unwrap();
    assert!(matches!(
        op.adjoint_host(&[0.0; 5]),
        Err(InverseError::Measurement { .. })
    ));
    assert!(op.fbp(&[0.0; 5]).is_err());
}
