//! `mri` / `mri-multicoil` and the photon-counting noise models: adjoint identities in f64,
//! the direct Gram solve against conjugate gradients, the sampling masks, the CG-SENSE
//! baseline, likelihood gradients against finite differences, simulation statistics, and the
//! errors of bad input. (Parity with deepinv's `MRI` / `MultiCoilMRI` is in the workspace test
//! `tests/mri.rs`, which reads the complex fixtures.)

use std::sync::Arc;

use candle_core::{Device, Tensor};
use genprior_inverse::linalg::{conjugate_gradient, dot, norm2};
use genprior_inverse::noise::{Poisson, Transmission};
use genprior_inverse::physics::mri::{birdcage_maps, column_mask, MaskPattern, Mri, MriBaseline};
use genprior_inverse::{build_task, Gaussian, InverseError, NoiseModel, Operator, TaskOptions};
use num_complex::Complex64;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rand_vec(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn gauss(s: f64) -> Arc<dyn NoiseModel> {
    Arc::new(Gaussian::with_sigma(s).unwrap())
}

fn col_mask(h: usize, w: usize, r: usize, pattern: MaskPattern, seed: u64) -> Vec<bool> {
    let cols = column_mask(w, r, 0.08, pattern, seed).unwrap();
    (0..h * w).map(|p| cols[p % w]).collect()
}

/// Every variant: real and complex images, single- and multi-coil, odd and even sizes.
fn variants() -> Vec<(String, Mri)> {
    let mut out = Vec::new();
    for (h, w) in [(16, 16), (15, 12)] {
        for c in [1, 2] {
            for coils in [0, 3] {
                let maps = (coils > 0).then(|| birdcage_maps(coils, h, w));
                let name = if coils > 0 { "mri-multicoil" } else { "mri" };
                let mask = col_mask(h, w, 3, MaskPattern::Random, 4);
                let op = Mri::new(
                    name,
                    [c, h, w],
                    mask,
                    maps,
                    MriBaseline::ZeroFilled,
                    gauss(0.1),
                )
                .unwrap();
                out.push((format!("{name} C={c} {h}x{w}"), op));
            }
        }
    }
    out
}

#[test]
fn adjoint_is_the_exact_transpose() {
    for (label, op) in variants() {
        for seed in 0..3 {
            let x = rand_vec(op.image_len(), -1.0, 1.0, seed);
            // A measurement that is zero outside the mask, like every valid one.
            let y = op
                .forward_host(&rand_vec(op.image_len(), -1.0, 1.0, 50 + seed))
                .unwrap();
            let lhs = dot(&op.forward_host(&x).unwrap(), &y);
            let rhs = dot(&x, &op.adjoint_host(&y).unwrap());
            let scale = norm2(&x).sqrt() * norm2(&y).sqrt();
            assert!(
                (lhs - rhs).abs() <= 1e-12 * scale,
                "{label}: <Ax, y> = {lhs}, <x, A^T y> = {rhs}"
            );
        }
    }
}

#[test]
fn a_full_mask_single_coil_is_unitary() {
    for c in [1, 2] {
        let op = Mri::new(
            "mri",
            [c, 8, 10],
            vec![true; 80],
            None,
            MriBaseline::ZeroFilled,
            gauss(0.1),
        )
        .unwrap();
        let x = rand_vec(op.image_len(), -1.0, 1.0, 9);
        let y = op.forward_host(&x).unwrap();
        assert!((norm2(&y) - norm2(&x)).abs() < 1e-10 * norm2(&x), "C={c}");
        let back = op.adjoint_host(&y).unwrap();
        let e = back
            .iter()
            .zip(&x)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(e < 1e-12, "C={c}: A^T A x differs from x by {e}");
        // A constant image has all its energy at the zero frequency, at pixel (h/2, w/2).
        let ones = vec![1.0; op.image_len()];
        let k = op.forward_host(&ones).unwrap();
        assert!((k[4 * 10 + 5] - (80f64).sqrt()).abs() < 1e-12, "centred DC");
    }
}

#[test]
fn direct_gram_solve_matches_conjugate_gradients() {
    for (label, op) in variants() {
        let (alpha, beta) = (3.0, 0.7);
        let rhs = rand_vec(op.image_len(), -1.0, 1.0, 21);
        let cg = conjugate_gradient(
            |v| {
                let mut g = op.adjoint_host(&op.forward_host(v)?)?;
                g.iter_mut()
                    .zip(v)
                    .for_each(|(a, b)| *a = alpha * *a + beta * b);
                Ok(g)
            },
            &rhs,
            1e-13,
            10_000,
        )
        .unwrap();
        match op.solve_shifted_gram_host(&rhs, alpha, beta) {
            None => assert!(
                label.starts_with("mri-multicoil"),
                "{label}: no direct solve"
            ),
            Some(d) => {
                let d = d.unwrap();
                let e = d
                    .iter()
                    .zip(&cg)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(e < 1e-9, "{label}: direct vs CG differ by {e}");
            }
        }
    }
}

#[test]
fn masks_sample_the_requested_columns() {
    let w = 64;
    for pattern in [MaskPattern::Random, MaskPattern::Gaussian] {
        for r in [2, 4, 8] {
            let m = column_mask(w, r, 0.08, pattern, 3).unwrap();
            assert_eq!(m.iter().filter(|&&v| v).count(), w / r, "{pattern:?} R={r}");
            // The ⌊0.08·64⌋ = 5 centre columns [30, 35) are always sampled.
            assert!(m[30..35].iter().all(|&v| v), "{pattern:?} R={r}");
            assert_eq!(m, column_mask(w, r, 0.08, pattern, 3).unwrap(), "seeded");
        }
        assert_ne!(
            column_mask(w, 4, 0.08, pattern, 1).unwrap(),
            column_mask(w, 4, 0.08, pattern, 2).unwrap(),
            "{pattern:?}: another seed gives another mask"
        );
    }
    // Variable density: over many seeds the Gaussian pattern's columns sit nearer the centre.
    let mean_dist = |p: MaskPattern| -> f64 {
        let mut s = 0.0;
        let mut n = 0.0;
        for seed in 0..200 {
            for (j, v) in column_mask(w, 4, 0.08, p, seed).unwrap().iter().enumerate() {
                if *v && !(30..35).contains(&j) {
                    s += (j as f64 - 32.0).abs();
                    n += 1.0;
                }
            }
        }
        s / n
    };
    let (g, u) = (
        mean_dist(MaskPattern::Gaussian),
        mean_dist(MaskPattern::Random),
    );
    assert!(g < 0.8 * u, "gaussian mean distance {g} vs uniform {u}");
    // Equispaced: a centre plus columns every ~R, about W/R in all.
    let m = column_mask(w, 4, 0.08, MaskPattern::Equispaced, 0).unwrap();
    let count = m.iter().filter(|&&v| v).count();
    assert!(
        (14..=18).contains(&count),
        "equispaced sampled {count} of 64"
    );
    let (pad, nc) = (30, 5); // (W − n_c + 1)/2 = 30
    assert!(m[pad..pad + nc].iter().all(|&v| v));
    // Acceleration 1 samples everything.
    assert!(column_mask(w, 1, 0.08, MaskPattern::Random, 0)
        .unwrap()
        .iter()
        .all(|&v| v));
}

#[test]
fn birdcage_maps_have_unit_root_sum_of_squares() {
    let (n, h, w) = (6, 9, 11);
    let m = birdcage_maps(n, h, w);
    for p in 0..h * w {
        let rss: f64 = (0..n).map(|c| m[c * h * w + p].norm_sqr()).sum();
        assert!((rss - 1.0).abs() < 1e-12);
    }
    // Coil 0 sits at (x, y) = (1.5, 0) in the normalised frame: brightest on the right edge.
    let row = h / 2;
    assert!(m[row * w + w - 1].norm() > m[row * w].norm());
}

/// The Shepp–Logan-like test object: a few ellipses, values in [0, 1].
fn ellipses(h: usize, w: usize) -> Vec<f64> {
    let mut x = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            let (u, v) = (
                (j as f64 - w as f64 / 2.0) / (w as f64 / 2.0),
                (i as f64 - h as f64 / 2.0) / (h as f64 / 2.0),
            );
            let mut val = 0.0;
            if (u / 0.7).powi(2) + (v / 0.9).powi(2) <= 1.0 {
                val += 0.8;
            }
            if ((u - 0.2) / 0.2).powi(2) + ((v + 0.1) / 0.35).powi(2) <= 1.0 {
                val -= 0.4;
            }
            if ((u + 0.25) / 0.15).powi(2) + ((v - 0.3) / 0.15).powi(2) <= 1.0 {
                val += 0.2;
            }
            x[i * w + j] = val;
        }
    }
    x
}

fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (1.0 / mse).log10()
}

/// CG-SENSE unfolds the aliasing of equispaced R = 4 sampling with 8 coils; the zero-filled
/// coil combination cannot.
#[test]
fn cg_sense_beats_zero_filled_at_acceleration_4() {
    let (h, w) = (48, 48);
    let x = ellipses(h, w);
    let cols = column_mask(w, 4, 0.08, MaskPattern::Equispaced, 0).unwrap();
    let mask: Vec<bool> = (0..h * w).map(|p| cols[p % w]).collect();
    let op = Mri::new(
        "mri-multicoil",
        [1, h, w],
        mask,
        Some(birdcage_maps(8, h, w)),
        MriBaseline::CgSense,
        gauss(0.0),
    )
    .unwrap();
    let y = op.forward_host(&x).unwrap();
    let zf = op.adjoint_host(&y).unwrap();
    let cg = op.cg_sense(&y).unwrap();
    let (pz, pc) = (psnr(&zf, &x), psnr(&cg, &x));
    eprintln!("R=4, 8 coils, noise-free: zero-filled {pz:.1} dB, CG-SENSE {pc:.1} dB");
    assert!(pc > pz + 15.0, "CG-SENSE {pc} dB vs zero-filled {pz} dB");
    assert!(
        pc > 35.0,
        "noise-free CG-SENSE should be close to exact: {pc} dB"
    );

    // With noise σ = 0.05 and a random mask (worse conditioned), the discrepancy principle
    // stops CG before it fits the noise; running it 100 more iterations is worse.
    let cols = column_mask(w, 4, 0.08, MaskPattern::Random, 1).unwrap();
    let mask: Vec<bool> = (0..h * w).map(|p| cols[p % w]).collect();
    let op = Mri::new(
        "mri-multicoil",
        [1, h, w],
        mask,
        Some(birdcage_maps(8, h, w)),
        MriBaseline::CgSense,
        gauss(0.05),
    )
    .unwrap();
    let y = op.simulate_host(&x, &mut StdRng::seed_from_u64(8)).unwrap();
    let (pz, pc) = (
        psnr(&op.adjoint_host(&y).unwrap(), &x),
        psnr(&op.cg_sense(&y).unwrap(), &x),
    );
    eprintln!("R=4 random, 8 coils, σ = 0.05: zero-filled {pz:.1} dB, CG-SENSE {pc:.1} dB");
    assert!(
        pc > pz + 1.0,
        "noisy: CG-SENSE {pc} dB vs zero-filled {pz} dB"
    );
}

fn opts(task: &str, pairs: &[(&str, &str)]) -> TaskOptions {
    let mut o = TaskOptions::new(task).unwrap();
    for (k, v) in pairs {
        let spec = *o.spec(k).unwrap();
        let val = spec.kind.parse_scalar(k, v).unwrap();
        o.set(k, val).unwrap();
    }
    o
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = |task: &str, pairs: &[(&str, &str)], shape: [usize; 3]| -> String {
        match build_task(&opts(task, pairs), shape) {
            Ok(_) => panic!("{task} {pairs:?}: no error"),
            Err(e) => e.to_string(),
        }
    };
    assert!(err("mri", &[], [3, 16, 16]).contains("1 channel"));
    assert!(err("mri", &[("acceleration", "0")], [1, 16, 16]).contains("acceleration"));
    assert!(err("mri", &[("center-fraction", "0.6")], [1, 16, 16]).contains("centre"));
    assert!(err("mri", &[("noise", "poisson")], [1, 16, 16]).contains("only --noise gaussian"));
    assert!(err("mri-multicoil", &[("coils", "0")], [1, 16, 16]).contains("--coils"));

    let with_tensor = |task: &str, name: &str, t: Tensor| -> String {
        let mut o = TaskOptions::new(task).unwrap();
        o.set(name, t).unwrap();
        match build_task(&o, [1, 8, 8]) {
            Ok(_) => panic!("{task} {name}: no error"),
            Err(e) => e.to_string(),
        }
    };
    let dev = &Device::Cpu;
    let half = Tensor::full(0.5f32, (8, 8), dev).unwrap();
    assert!(with_tensor("mri", "kspace-mask", half).contains("only 0 and 1"));
    let wrong = Tensor::ones((4, 4), candle_core::DType::F32, dev).unwrap();
    assert!(with_tensor("mri", "kspace-mask", wrong).contains("shape"));
    let zeros = Tensor::zeros(8, candle_core::DType::F32, dev).unwrap();
    assert!(with_tensor("mri", "kspace-mask", zeros).contains("samples nothing"));
    let mut maps = vec![1f32; 2 * 8 * 8];
    maps[5] = 0.0;
    maps[64 + 5] = 0.0;
    let maps = Tensor::from_vec(maps, (2, 8, 8), dev).unwrap();
    assert!(with_tensor("mri-multicoil", "coil-maps", maps).contains("no coil"));

    // A column mask given as (W,) works, and a measurement outside it is rejected.
    let mut o = TaskOptions::new("mri").unwrap();
    let cols: Vec<f32> = (0..8).map(|j| (j % 2) as f32).collect();
    o.set("kspace-mask", Tensor::from_vec(cols, 8, dev).unwrap())
        .unwrap();
    let op = build_task(&o, [1, 8, 8]).unwrap();
    let mut y = vec![0f32; 2 * 64];
    y[0] = 1.0; // column 0 is not sampled
    let y = Tensor::from_vec(y, (1, 2, 8, 8), dev).unwrap();
    let e = op.validate_measurement(&y).unwrap_err();
    assert!(matches!(e, InverseError::Measurement { .. }), "{e}");
    assert!(e.to_string().contains("outside the sampling mask"), "{e}");
}

#[test]
fn simulated_noise_is_masked() {
    let op = build_task(&opts("mri-multicoil", &[("coils", "2")]), [2, 16, 16]).unwrap();
    let x = Tensor::zeros((1, 2, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let y = op.simulate(&x, &mut StdRng::seed_from_u64(1)).unwrap();
    op.validate_measurement(&y).unwrap();
    let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let nonzero = v.iter().filter(|a| **a != 0.0).count();
    // 4 of 16 columns sampled, 2 coils, real and imaginary parts.
    assert_eq!(nonzero, 2 * 2 * 16 * 4);
}

// ------------------------------------------------------------------ photon-counting noise

fn fd_check(model: &dyn NoiseModel, z: &[f64], y: &[f64], label: &str) {
    let g = model.log_likelihood_and_grad(z, y).unwrap().gradient();
    let eps = 1e-6;
    for k in 0..z.len() {
        let mut zp = z.to_vec();
        zp[k] += eps;
        let mut zm = z.to_vec();
        zm[k] -= eps;
        let fd = (model.log_likelihood(&zp, y).unwrap() - model.log_likelihood(&zm, y).unwrap())
            / (2.0 * eps);
        assert!(
            (fd - g[k]).abs() <= 1e-5 * (1.0 + g[k].abs()),
            "{label} entry {k} (z = {}, y = {}): fd {fd} vs analytic {}",
            z[k],
            y[k],
            g[k]
        );
    }
}

#[test]
fn poisson_likelihood_gradients_match_finite_differences() {
    // z covers bright, dark (rate below the floor) and impossible (z < −1) intensities.
    let z = [0.5, -0.2, -0.99, -1.0, -1.3, 0.95];
    let p = Poisson::new(50.0).unwrap();
    let y: Vec<f64> = [30.0, 10.0, 0.0, 1.0, 0.0, 48.0]
        .iter()
        .map(|n| 2.0 * n / 50.0 - 1.0)
        .collect();
    fd_check(&p, &z, &y, "poisson");
    let pg = Poisson::with_read_noise(50.0, 0.05).unwrap();
    let y2 = [0.4, -0.1, -1.02, -0.95, -1.1, 0.9];
    fd_check(&pg, &z, &y2, "poisson-gaussian");
    let t = Transmission::new(1e3, 0.1, vec![3.0, 10.0, 0.5, 7.0, 2.0, 1.0]).unwrap();
    let counts = [800.0, 300.0, 0.0, 950.0, 12.0, 1001.0];
    fd_check(
        &t,
        &[1.0, 5.0, -0.5, 0.2, 20.0, -1.0],
        &counts,
        "transmission",
    );
}

#[test]
fn poisson_likelihood_peaks_at_the_counts() {
    // Away from the floor, L(z; y) is maximised at z = y (λ = n) and is 0 there.
    let p = Poisson::new(200.0).unwrap();
    let y = [0.3];
    let at = |z: f64| p.log_likelihood(&[z], &y).unwrap();
    assert!(at(0.3).abs() < 1e-12);
    assert!(at(0.25) < 0.0 && at(0.35) < 0.0);
}

#[test]
fn poisson_simulation_has_the_right_mean_and_variance() {
    let (g, n) = (40.0, 200_000);
    let p = Poisson::new(g).unwrap();
    let z = vec![0.2; n]; // u = 0.6, λ = 24
    let y = p.simulate(z, &mut StdRng::seed_from_u64(3)).unwrap();
    let mean = y.iter().sum::<f64>() / n as f64;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    // E y = z; Var y = 4u/γ = 0.06.
    assert!(
        (mean - 0.2).abs() < 4.0 * (0.06f64 / n as f64).sqrt(),
        "mean {mean}"
    );
    assert!((var / 0.06 - 1.0).abs() < 0.02, "var {var}");
    // Counts are integers: γ(y + 1)/2 ∈ ℕ.
    assert!(y.iter().all(|v| {
        let c = g * (v + 1.0) / 2.0;
        (c - c.round()).abs() < 1e-9
    }));
    assert!(p
        .simulate(vec![-1.5], &mut StdRng::seed_from_u64(0))
        .is_err());
    assert!(p.check_measurement(&[-1.2]).is_err());
    assert!(Poisson::new(0.0).is_err() && Poisson::new(f64::NAN).is_err());
}

#[test]
fn noise_options_pick_the_model_or_explain_why_not() {
    let op = build_task(
        &opts("denoise", &[("noise", "poisson"), ("photons", "100")]),
        [1, 4, 4],
    )
    .unwrap();
    assert_eq!(op.noise().name(), "poisson");
    assert!(!op.is_linear_gaussian());
    let op = build_task(
        &opts(
            "sr2",
            &[("noise", "poisson-gaussian"), ("noise-sigma", "0.02")],
        ),
        [1, 8, 8],
    )
    .unwrap();
    assert_eq!(op.noise().name(), "poisson-gaussian");
    assert_eq!(op.noise().noise_sigma(), 0.02);
    let e = |t: &str, p: &[(&str, &str)]| match build_task(&opts(t, p), [1, 8, 8]) {
        Ok(_) => panic!("{t} {p:?}: no error"),
        Err(e) => e.to_string(),
    };
    assert!(
        e("denoise", &[("noise", "poisson"), ("noise-sigma", "0.1")]).contains("poisson-gaussian")
    );
    assert!(e("denoise", &[("noise", "transmission")]).contains("ct"));
    assert!(e("one-bit", &[("noise", "poisson")]).contains("logistic dither"));
    assert!(e("phase-retrieval", &[("noise", "poisson")]).contains("only --noise gaussian"));
    assert!(
        e("ct", &[("noise", "transmission"), ("noise-sigma", "0.1")]).contains("does not apply")
    );
    assert!(e("denoise", &[("noise", "poisson"), ("photons", "-3")]).contains("photon count"));
}

#[test]
fn transmission_ct_baseline_inverts_the_log() {
    let shape = [1, 16, 16];
    let o = opts(
        "ct",
        &[
            ("noise", "transmission"),
            ("photons", "1e9"),
            ("angles", "30"),
        ],
    );
    let op = build_task(&o, shape).unwrap();
    assert_eq!(op.noise().name(), "transmission");
    let x = rand_vec(op.image_len(), -1.0, 1.0, 4);
    let y = op.simulate_host(&x, &mut StdRng::seed_from_u64(2)).unwrap();
    assert!(y.iter().all(|v| *v >= 0.0 && v.fract() == 0.0), "counts");
    // At 10⁹ photons the post-log sinogram is A x to ~1e-4, so the FBPs agree closely.
    let lin = op.noise().linearized(&y);
    let ax = op.forward_host(&x).unwrap();
    let e = lin
        .iter()
        .zip(&ax)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(e < 2e-2, "post-log vs A x: {e}");
    let gauss_op = build_task(&opts("ct", &[("angles", "30")]), shape).unwrap();
    let b1 = op.baseline_host(&y).unwrap();
    let b0 = gauss_op.baseline_host(&ax).unwrap();
    assert!(
        psnr(&b1, &b0) > 35.0,
        "FBP of the counts vs of A x: {} dB",
        psnr(&b1, &b0)
    );
    let neg = vec![-1.0; op.measurement_len()];
    assert!(op
        .check_measurement_values(&neg)
        .unwrap_err()
        .to_string()
        .contains("counts"));
}

#[test]
fn given_planar_coil_maps_equal_the_simulated_ones() {
    let m = birdcage_maps(2, 8, 8);
    let planar: Vec<f32> = m
        .iter()
        .map(|v| v.re as f32)
        .chain(m.iter().map(|v| v.im as f32))
        .collect();
    let t = Tensor::from_vec(planar, (2, 2, 8, 8), &Device::Cpu).unwrap();
    let mut o = opts("mri-multicoil", &[("coils", "2")]);
    let sim = build_task(&o, [2, 8, 8]).unwrap();
    o.set("coil-maps", t).unwrap();
    let given = build_task(&o, [2, 8, 8]).unwrap();
    let x = rand_vec(sim.image_len(), -1.0, 1.0, 1);
    let (a, b) = (
        sim.forward_host(&x).unwrap(),
        given.forward_host(&x).unwrap(),
    );
    let e = a
        .iter()
        .zip(&b)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max);
    // The given maps went through f32.
    assert!(e < 1e-6, "{e}");
    assert!(
        m.iter().any(|v: &Complex64| v.im.abs() > 1e-3),
        "birdcage maps are complex"
    );
}
