//! Operator tests: adjoint identities, likelihood gradients against finite differences,
//! reproducibility from seeds, bicubic against MATLAB-convention references, baselines, errors.

use candle_core::{Device, Tensor};
use genprior_inverse::fft::Fft2;
use genprior_inverse::linalg::{conjugate_gradient, dot, norm2};
use std::sync::Arc;

use genprior_inverse::physics::{
    gaussian_kernel, imresize_matrix, motion_kernel, Blur, CompressedSensing, Inpainting, Kernel2d,
    PhaseRetrieval, SrKernel, SuperResolution,
};
use genprior_inverse::{
    build_task, find_task, task_names, Gaussian, InverseError, NoiseModel, Operator, OptionDefault,
    OptionType, OptionValue, TaskOptions,
};
use num_complex::Complex64;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHAPE: [usize; 3] = [2, 16, 16];

fn rand_vec(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Gaussian noise with σ = σ_L = `s`.
fn gauss(s: f64) -> Arc<dyn NoiseModel> {
    Arc::new(Gaussian::with_sigma(s).unwrap())
}

/// The test settings of every option a task takes: operator seed 11, kernel side 5, kernel std
/// 1.2, CS ratio 0.3, a random mask for every required image option; the rest at defaults.
fn spec(task: &str, sigma: f64) -> TaskOptions {
    let mut s = TaskOptions::new(task).unwrap();
    s.set("noise-sigma", sigma).unwrap();
    s.set("operator-seed", 11u64).unwrap();
    for o in s.specs().to_vec() {
        let v: Option<OptionValue> = match (o.name, o.kind, o.default) {
            ("kernel-size", ..) => Some(5usize.into()),
            ("kernel-std", ..) => Some(1.2.into()),
            ("cs-ratio", ..) => Some(0.3.into()),
            (_, OptionType::ImageFile, OptionDefault::Required) => {
                let m = rand_vec(SHAPE[1] * SHAPE[2], 0.0, 1.0, 5);
                Some(
                    Tensor::from_vec(m, (SHAPE[1], SHAPE[2]), &Device::Cpu)
                        .unwrap()
                        .into(),
                )
            }
            _ => None,
        };
        if let Some(v) = v {
            s.set(o.name, v).unwrap();
        }
    }
    s
}

/// The test noise σ of a task: its default if that is 0 (one-bit), else 0.1.
fn sigma_for(task: &str) -> f64 {
    if find_task(task).unwrap().default_noise_sigma == 0.0 {
        0.0
    } else {
        0.1
    }
}

/// Every task of the registry on a small image, plus the box-kernel SR variant.
fn all_ops() -> Vec<Box<dyn Operator>> {
    let mut ops: Vec<Box<dyn Operator>> = task_names()
        .iter()
        .map(|t| build_task(&spec(t, sigma_for(t)), SHAPE).unwrap())
        .collect();
    let mut s = spec("sr4", 0.1);
    s.set("kernel", "box").unwrap();
    ops.push(build_task(&s, SHAPE).unwrap());
    ops
}

/// Whether A(a·x₁ + b·x₂) = a·A(x₁) + b·A(x₂) numerically (an independent check of
/// [`Operator::is_linear`]).
fn numerically_linear(op: &dyn Operator) -> bool {
    let x1 = rand_vec(op.image_len(), -1.0, 1.0, 90);
    let x2 = rand_vec(op.image_len(), -1.0, 1.0, 91);
    let (a, b) = (0.7, -1.3);
    let mix: Vec<f64> = x1.iter().zip(&x2).map(|(u, v)| a * u + b * v).collect();
    let lhs = op.forward_host(&mix).unwrap();
    let (y1, y2) = (op.forward_host(&x1).unwrap(), op.forward_host(&x2).unwrap());
    let rhs: Vec<f64> = y1.iter().zip(&y2).map(|(u, v)| a * u + b * v).collect();
    let scale = norm2(&rhs).sqrt().max(1.0);
    lhs.iter()
        .zip(&rhs)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max)
        <= 1e-10 * scale
}

#[test]
fn every_task_builds_with_the_expected_shapes() {
    for op in all_ops() {
        let x = Tensor::zeros(
            (3, SHAPE[0], SHAPE[1], SHAPE[2]),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let y = op.simulate(&x, &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(y.dims()[0], 3);
        assert_eq!(&y.dims()[1..], &op.measurement_shape()[..], "{}", op.name());
        let b = op.baseline(&y).unwrap();
        assert_eq!(b.dims(), x.dims(), "{}", op.name());
    }
    let pr = build_task(&spec("phase-retrieval", 0.1), SHAPE).unwrap();
    assert_eq!(
        pr.measurement_shape(),
        vec![2, 32, 32],
        "default oversampling 4 = 2× per side"
    );
}

#[test]
fn adjoint_identity_for_every_linear_operator() {
    let mut checked = 0;
    let ops = all_ops();
    for op in &ops {
        assert_eq!(
            op.is_linear(),
            numerically_linear(op.as_ref()),
            "{}: is_linear() disagrees with a numerical linearity check",
            op.name()
        );
        if !op.is_linear() {
            continue;
        }
        for seed in 0..3 {
            let x = rand_vec(op.image_len(), -1.0, 1.0, 100 + seed);
            let y = rand_vec(op.measurement_len(), -1.0, 1.0, 200 + seed);
            let ax = op.forward_host(&x).unwrap();
            let aty = op.adjoint_host(&y).unwrap();
            let (l, r) = (dot(&ax, &y), dot(&x, &aty));
            let scale =
                norm2(&ax).sqrt() * norm2(&y).sqrt() + norm2(&x).sqrt() * norm2(&aty).sqrt();
            assert!(
                (l - r).abs() <= 1e-12 * scale,
                "{}: <Ax,y> = {l}, <x,Aᵀy> = {r}",
                op.name()
            );
        }
        checked += 1;
    }
    // every operator that is numerically linear (all but phase retrieval today: sr2 sr4 sr8
    // sr4-box inpaint×3 deblur×2 one-bit cs denoise)
    let linear = ops
        .iter()
        .filter(|o| numerically_linear(o.as_ref()))
        .count();
    assert_eq!(checked, linear);
    assert!(
        linear >= 1 && linear < ops.len(),
        "{linear} of {}",
        ops.len()
    );
}

#[test]
fn adjoint_through_tensors_matches_host() {
    let op = build_task(&spec("deblur-motion", 0.1), SHAPE).unwrap();
    let y = rand_vec(op.measurement_len(), -1.0, 1.0, 3);
    let yt = Tensor::from_vec(y.clone(), (1, SHAPE[0], SHAPE[1], SHAPE[2]), &Device::Cpu).unwrap();
    let at = op
        .adjoint(&yt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let ah = op.adjoint_host(&y).unwrap();
    for (a, b) in at.iter().zip(&ah) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn log_likelihood_gradient_matches_finite_differences_for_every_task() {
    for op in all_ops() {
        let xt = rand_vec(op.image_len(), -0.9, 0.9, 1);
        let mut rng = StdRng::seed_from_u64(2);
        let y = op.simulate_host(&xt, &mut rng).unwrap();
        let x = rand_vec(op.image_len(), -0.9, 0.9, 3);
        let (l, g) = op.log_likelihood_and_grad_host(&x, &y).unwrap();
        assert!((l - op.log_likelihood_host(&x, &y).unwrap()).abs() <= 1e-12 * l.abs());
        let eps = 1e-5;
        let at = |v: &[f64]| op.log_likelihood_host(v, &y).unwrap();
        // a full directional derivative (every coordinate at once) ...
        let d = rand_vec(op.image_len(), -1.0, 1.0, 4);
        let xp: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + eps * b).collect();
        let xm: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a - eps * b).collect();
        let fd = (at(&xp) - at(&xm)) / (2.0 * eps);
        let an = dot(&g, &d);
        let tol = 1e-6 * (1.0 + an.abs() + l.abs() * 1e-6 / eps);
        assert!(
            (fd - an).abs() <= tol,
            "{}: directional fd {fd} vs analytic {an}",
            op.name()
        );
        // ... and single coordinates
        for k in [0, op.image_len() / 3, op.image_len() - 1] {
            let mut xp = x.clone();
            xp[k] += eps;
            let mut xm = x.clone();
            xm[k] -= eps;
            let fd = (at(&xp) - at(&xm)) / (2.0 * eps);
            let tol = 1e-6 * (1.0 + g[k].abs() + l.abs() * 1e-6 / eps);
            assert!(
                (fd - g[k]).abs() <= tol,
                "{} coord {k}: fd {fd} vs analytic {}",
                op.name(),
                g[k]
            );
        }
    }
}

#[test]
fn tensor_likelihood_broadcasts_one_measurement_over_chains() {
    let op = build_task(&spec("sr2", 0.1), SHAPE).unwrap();
    let x = Tensor::from_vec(
        rand_vec(3 * op.image_len(), -1.0, 1.0, 8),
        (3, 2, 16, 16),
        &Device::Cpu,
    )
    .unwrap();
    let y1 = op
        .simulate(&x.narrow(0, 0, 1).unwrap(), &mut StdRng::seed_from_u64(1))
        .unwrap();
    let ls = op.log_likelihood(&x, &y1).unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let yh = y1.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for (i, l) in ls.iter().enumerate() {
        let n = op.image_len();
        assert_eq!(
            *l,
            op.log_likelihood_host(&xs[i * n..(i + 1) * n], &yh)
                .unwrap()
        );
    }
    let y2 = Tensor::cat(&[&y1, &y1], 0).unwrap();
    assert!(matches!(
        op.log_likelihood(&x, &y2),
        Err(InverseError::Measurement { .. })
    ));
}

#[test]
fn simulated_measurements_are_reproducible_from_the_seeds() {
    for t in task_names() {
        let sigma = sigma_for(t);
        let op1 = build_task(&spec(t, sigma), SHAPE).unwrap();
        let op2 = build_task(&spec(t, sigma), SHAPE).unwrap();
        let x = Tensor::from_vec(
            rand_vec(2 * op1.image_len(), -1.0, 1.0, 9),
            (2, 2, 16, 16),
            &Device::Cpu,
        )
        .unwrap();
        let a = op1
            .simulate(&x, &mut StdRng::seed_from_u64(42))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let b = op2
            .simulate(&x, &mut StdRng::seed_from_u64(42))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(a, b, "{t}");
        let c = op2
            .simulate(&x, &mut StdRng::seed_from_u64(43))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_ne!(
            a, c,
            "{t}: a different noise seed must change the measurement"
        );
    }
    // a different operator seed changes the random operators
    let x = rand_vec(SHAPE.iter().product(), -1.0, 1.0, 10);
    for t in ["inpaint-random", "deblur-motion", "phase-retrieval", "cs"] {
        let mut s = spec(t, 0.0);
        let a = build_task(&s, SHAPE).unwrap().forward_host(&x).unwrap();
        s.set("operator-seed", 12u64).unwrap();
        let b = build_task(&s, SHAPE).unwrap().forward_host(&x).unwrap();
        assert_ne!(a, b, "{t}");
    }
}

fn fixture() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/operators/reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn fx_vec(v: &serde_json::Value) -> Vec<f64> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .collect()
}

#[test]
fn bicubic_downsampling_matches_matlab_imresize_reference() {
    let f = fixture();
    let x = fx_vec(&f["bicubic_input"]);
    for s in [2usize, 4, 8] {
        let op = SuperResolution::new([1, 32, 32], s, SrKernel::Bicubic, gauss(0.0)).unwrap();
        let y = op.forward_host(&x).unwrap();
        let r = fx_vec(&f[format!("bicubic_down_{s}")]);
        assert_eq!(y.len(), r.len());
        let err = y
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-12, "×{s}: max error {err}");
    }
}

#[test]
fn bicubic_upsampling_baseline_matches_matlab_imresize_reference() {
    let f = fixture();
    let lo = fx_vec(&f["bicubic_up_input"]);
    let op = SuperResolution::new([1, 32, 32], 4, SrKernel::Bicubic, gauss(0.0)).unwrap();
    let up = op.baseline_host(&lo).unwrap();
    let r = fx_vec(&f["bicubic_up_4"]);
    let err = up
        .iter()
        .zip(&r)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-12, "max error {err}");
}

#[test]
fn resize_rows_are_partitions_of_unity_and_box_pools() {
    for (n, o) in [(32, 8), (17, 5), (8, 32)] {
        let m = imresize_matrix(n, o, o as f64 / n as f64);
        for r in &m.rows {
            let s: f64 = r.iter().map(|t| t.1).sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
    }
    let op = SuperResolution::new([1, 4, 4], 2, SrKernel::Box, gauss(0.0)).unwrap();
    let x: Vec<f64> = (0..16).map(|v| v as f64).collect();
    assert_eq!(op.forward_host(&x).unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
}

fn brute_circular_conv(x: &[f64], h: usize, w: usize, k: &Kernel2d) -> Vec<f64> {
    let mut out = vec![0.0; h * w];
    let (ch, cw) = (k.h / 2, k.w / 2);
    for i in 0..h {
        for j in 0..w {
            let mut s = 0.0;
            for a in 0..k.h {
                for b in 0..k.w {
                    // y[i,j] = Σ k[a,b] x[i - (a - ch), j - (b - cw)]
                    let r = (i + h + ch - a) % h;
                    let c = (j + w + cw - b) % w;
                    s += k.data[a * k.w + b] * x[r * w + c];
                }
            }
            out[i * w + j] = s;
        }
    }
    out
}

#[test]
fn fft_blur_is_circular_convolution_centred_on_the_kernel() {
    let k = Kernel2d::new(3, 4, rand_vec(12, 0.0, 1.0, 20)).unwrap();
    let op = Blur::new("deblur-motion", [1, 7, 8], k.clone(), gauss(0.0)).unwrap();
    let x = rand_vec(56, -1.0, 1.0, 21);
    let y = op.forward_host(&x).unwrap();
    let r = brute_circular_conv(&x, 7, 8, &k);
    for (a, b) in y.iter().zip(&r) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn kernels_are_normalised_and_seeded() {
    let g = gaussian_kernel(7, 1.5).unwrap();
    assert!((g.data.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(
        g.data[3 * 7 + 3],
        g.data.iter().cloned().fold(0.0, f64::max)
    );
    let a = motion_kernel(9, 0.5, 1).unwrap();
    assert!(a.data.iter().all(|v| *v >= 0.0) && (a.data.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(a, motion_kernel(9, 0.5, 1).unwrap());
    assert_ne!(a, motion_kernel(9, 0.5, 2).unwrap());
    assert!(
        a.data.iter().filter(|v| **v > 0.0).count() > 9,
        "a motion kernel spreads over many pixels"
    );
}

#[test]
fn direct_shifted_gram_solvers_agree_with_conjugate_gradients() {
    let ops: Vec<Box<dyn Operator>> = [
        "deblur-gauss",
        "deblur-motion",
        "inpaint-random",
        "inpaint-box",
        "denoise",
    ]
    .iter()
    .map(|t| build_task(&spec(t, 0.1), SHAPE).unwrap())
    .collect();
    let (alpha, beta) = (37.0, 4.0);
    for op in ops {
        let rhs = rand_vec(op.image_len(), -1.0, 1.0, 30);
        let direct = op
            .solve_shifted_gram_host(&rhs, alpha, beta)
            .unwrap()
            .unwrap();
        let cg = conjugate_gradient(
            |v| {
                let mut o = op.adjoint_host(&op.forward_host(v)?)?;
                o.iter_mut()
                    .zip(v)
                    .for_each(|(a, b)| *a = alpha * *a + beta * b);
                Ok(o)
            },
            &rhs,
            1e-13,
            2000,
        )
        .unwrap();
        let err = direct
            .iter()
            .zip(&cg)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9, "{}: {err}", op.name());
    }
}

#[test]
fn phase_retrieval_mask_statistics_and_parseval() {
    let op = PhaseRetrieval::new([1, 64, 64], 4.0, 3, gauss(0.0)).unwrap();
    let m = op.mask();
    let n = m.len() as f64;
    let zeros = m.iter().filter(|v| **v == 0.0).count() as f64 / n;
    let plus = m.iter().filter(|v| **v == 1.0).count() as f64 / n;
    let minus = m.iter().filter(|v| **v == -1.0).count() as f64 / n;
    assert_eq!(zeros + plus + minus, 1.0);
    // binomial standard errors, 4.5σ
    assert!(
        (zeros - 0.75).abs() < 4.5 * (0.75f64 * 0.25 / n).sqrt(),
        "zeros {zeros}"
    );
    assert!(
        (plus - 0.125).abs() < 4.5 * (0.125f64 * 0.875 / n).sqrt(),
        "plus {plus}"
    );
    assert!(
        (minus - 0.125).abs() < 4.5 * (0.125f64 * 0.875 / n).sqrt(),
        "minus {minus}"
    );
    assert_eq!(op.padded_shape(), (128, 128));
    // orthonormal FFT: ‖A(x)‖² = ‖M ⊙ x‖²
    let x = rand_vec(64 * 64, -1.0, 1.0, 31);
    let y = op.forward_host(&x).unwrap();
    let mx: f64 = x.iter().zip(m).map(|(a, b)| (a * b) * (a * b)).sum();
    assert!((norm2(&y) - mx).abs() < 1e-9 * mx);
    // centred: the zero frequency |Σ M x|/√(PQ) sits at (P/2, Q/2)
    let dc = y[64 * 128 + 64];
    let ms: f64 = x.iter().zip(m).map(|(a, b)| a * b).sum();
    assert!((dc - ms.abs() / 128.0).abs() < 1e-12);
}

#[test]
fn fft_helper_is_unitary() {
    let f = Fft2::new(6, 10);
    let v: Vec<Complex64> = rand_vec(60, -1.0, 1.0, 40)
        .into_iter()
        .map(|a| Complex64::new(a, -a / 2.0))
        .collect();
    let mut w = v.clone();
    f.forward_ortho(&mut w);
    let e1: f64 = v.iter().map(|a| a.norm_sqr()).sum();
    let e2: f64 = w.iter().map(|a| a.norm_sqr()).sum();
    assert!((e1 - e2).abs() < 1e-12 * e1);
    f.inverse_ortho(&mut w);
    for (a, b) in v.iter().zip(&w) {
        assert!((a - b).norm() < 1e-12);
    }
}

#[test]
fn one_bit_dither_has_the_logistic_law() {
    let op = build_task(&spec("one-bit", 0.0), [1, 100, 100]).unwrap();
    for c in [-0.5, 0.0, 0.3] {
        let x = vec![c; 10_000];
        let y = op.simulate_host(&x, &mut StdRng::seed_from_u64(5)).unwrap();
        let p = y.iter().filter(|v| **v == 1.0).count() as f64 / 1e4;
        let q = 1.0 / (1.0 + (-c / 0.4f64).exp());
        assert!(
            (p - q).abs() < 4.5 * (q * (1.0 - q) / 1e4).sqrt(),
            "x = {c}: {p} vs {q}"
        );
    }
}

#[test]
fn baselines_are_sane() {
    let n: usize = SHAPE.iter().product();
    // denoise: y clipped
    let op = build_task(&spec("denoise", 0.1), SHAPE).unwrap();
    let y = rand_vec(n, -1.5, 1.5, 50);
    let b = op.baseline_host(&y).unwrap();
    assert!(b.iter().zip(&y).all(|(a, v)| *a == v.clamp(-1.0, 1.0)));
    // one-bit: the ±1 measurement itself
    let op = build_task(&spec("one-bit", 0.0), SHAPE).unwrap();
    let y: Vec<f64> = rand_vec(n, -1.0, 1.0, 51)
        .iter()
        .map(|v| v.signum())
        .collect();
    assert_eq!(op.baseline_host(&y).unwrap(), y);
    // inpainting: observed pixels kept, a constant image filled with the constant
    for t in ["inpaint-box", "inpaint-random", "inpaint-mask"] {
        let op = build_task(&spec(t, 0.0), SHAPE).unwrap();
        let y = op.forward_host(&vec![0.37; n]).unwrap();
        let b = op.baseline_host(&y).unwrap();
        assert!(b.iter().all(|v| (v - 0.37).abs() < 1e-12), "{t}");
        let x = rand_vec(n, -1.0, 1.0, 52);
        let y = op.forward_host(&x).unwrap();
        let b = op.baseline_host(&y).unwrap();
        let mask = op.forward_host(&vec![1.0; n]).unwrap();
        for i in 0..n {
            if mask[i] == 1.0 {
                assert_eq!(b[i], x[i], "{t}");
            }
        }
    }
    // SR: constant in, constant out
    for t in ["sr2", "sr4", "sr8"] {
        let op = build_task(&spec(t, 0.0), SHAPE).unwrap();
        let b = op
            .baseline_host(&op.forward_host(&vec![-0.25; n]).unwrap())
            .unwrap();
        assert!(b.iter().all(|v| (v + 0.25).abs() < 1e-12), "{t}");
    }
    // Wiener: much closer to a smooth image than the blurred measurement is
    let (h, w) = (32, 32);
    let smooth: Vec<f64> = (0..h * w)
        .map(|k| {
            let (i, j) = ((k / w) as f64, (k % w) as f64);
            0.6 * (2.0 * std::f64::consts::PI * i / 16.0).sin()
                * (2.0 * std::f64::consts::PI * j / 8.0).cos()
        })
        .collect();
    let op = Blur::new(
        "deblur-gauss",
        [1, h, w],
        gaussian_kernel(9, 1.5).unwrap(),
        gauss(0.0),
    )
    .unwrap();
    let y = op.forward_host(&smooth).unwrap();
    let b = op.baseline_host(&y).unwrap();
    let ey: f64 = y.iter().zip(&smooth).map(|(a, v)| (a - v) * (a - v)).sum();
    let eb: f64 = b.iter().zip(&smooth).map(|(a, v)| (a - v) * (a - v)).sum();
    assert!(eb < 0.05 * ey, "Wiener error {eb} vs blurred error {ey}");
    // CS: least-norm solution is consistent and no longer than the truth
    let op = CompressedSensing::gaussian(SHAPE, 0.3, 7, gauss(0.0)).unwrap();
    let x = rand_vec(n, -1.0, 1.0, 53);
    let y = op.forward_host(&x).unwrap();
    let b = op.baseline_host(&y).unwrap();
    let r = op.forward_host(&b).unwrap();
    let res = r
        .iter()
        .zip(&y)
        .map(|(a, v)| (a - v).abs())
        .fold(0.0, f64::max);
    assert!(res < 1e-8, "residual {res}");
    assert!(norm2(&b) < norm2(&x));
}

#[test]
fn phase_retrieval_baseline_fits_the_magnitudes() {
    let op = PhaseRetrieval::new([1, 8, 8], 4.0, 5, gauss(0.0)).unwrap();
    let x = rand_vec(64, -1.0, 1.0, 60);
    let y = op.forward_host(&x).unwrap();
    let b = op.baseline_host(&y).unwrap();
    let r = op.forward_host(&b).unwrap();
    let res: f64 = r.iter().zip(&y).map(|(a, v)| (a - v) * (a - v)).sum();
    // a zero image has residual ‖y‖²; HIO must explain most of the magnitudes
    assert!(
        res < 0.05 * norm2(&y),
        "relative residual {}",
        res / norm2(&y)
    );
}

/// A task's options at their defaults with the given noise σ.
fn task_spec(task: &str, sigma: f64) -> TaskOptions {
    TaskOptions::new(task)
        .unwrap()
        .with("noise-sigma", sigma)
        .unwrap()
}

#[test]
fn bad_input_is_a_clear_error() {
    let e = TaskOptions::new("sr3").err().unwrap();
    assert!(
        matches!(e, InverseError::UnknownTask { .. }) && e.to_string().contains("sr4"),
        "{e}"
    );
    let e = build_task(&task_spec("denoise", -0.1), SHAPE)
        .err()
        .unwrap();
    assert!(e.to_string().contains("noise sigma"), "{e}");
    assert!(build_task(&task_spec("denoise", f64::NAN), SHAPE).is_err());
    assert!(build_task(&task_spec("one-bit", 0.1), SHAPE).is_err());
    assert!(build_task(&task_spec("inpaint-mask", 0.1), SHAPE).is_err());
    assert!(build_task(&task_spec("sr8", 0.1), [1, 12, 12]).is_err());
    let s = task_spec("deblur-gauss", 0.1)
        .with("kernel-size", 17usize)
        .unwrap();
    assert!(build_task(&s, SHAPE).is_err());
    let s = task_spec("cs", 0.1).with("cs-ratio", 1.5).unwrap();
    assert!(build_task(&s, SHAPE).is_err());
    let mut s = spec("inpaint-mask", 0.1);
    s.set(
        "mask",
        Tensor::zeros((8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    assert!(build_task(&s, SHAPE).is_err());
    assert!(Inpainting::random(SHAPE, 0.0, 1, gauss(0.1)).is_err());

    let op = build_task(&spec("sr4", 0.1), SHAPE).unwrap();
    let x = Tensor::zeros((1, 2, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let wrong = Tensor::zeros((1, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = op.log_likelihood(&x, &wrong).err().unwrap();
    assert!(
        matches!(e, InverseError::Measurement { .. }) && e.to_string().contains("(B, 2, 4, 4)"),
        "{e}"
    );
    let mut v = vec![0.0f32; 32];
    v[5] = f32::NAN;
    let nan = Tensor::from_vec(v, (1, 2, 4, 4), &Device::Cpu).unwrap();
    let e = op.baseline(&nan).err().unwrap();
    assert!(e.to_string().contains("non-finite"), "{e}");
    let inf =
        (Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap() / 0.0).unwrap();
    assert!(op.validate_measurement(&inf).is_err());
    let bad_img = Tensor::zeros((1, 3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        op.forward(&bad_img),
        Err(InverseError::ImageShape { .. })
    ));

    let ob = build_task(&spec("one-bit", 0.0), SHAPE).unwrap();
    let half = (Tensor::ones((1, 2, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap() * 0.5)
        .unwrap();
    assert!(ob.validate_measurement(&half).is_err());
    let pr = build_task(&spec("phase-retrieval", 0.1), SHAPE).unwrap();
    assert!(pr
        .adjoint(
            &pr.forward(&x.broadcast_as((1, 2, 16, 16)).unwrap())
                .unwrap()
        )
        .is_err());
    // a Gaussian likelihood with σ = 0 is refused, not divided by zero
    let d0 = build_task(&spec("denoise", 0.0), SHAPE).unwrap();
    assert!(d0.log_likelihood(&x, &x).is_err());
}

#[test]
fn misfit_norm_is_the_residual_norm_with_its_gradient() {
    let op = build_task(&spec("sr2", 0.1), SHAPE).unwrap();
    let xt = rand_vec(op.image_len(), -1.0, 1.0, 70);
    let y = op
        .simulate_host(&xt, &mut StdRng::seed_from_u64(1))
        .unwrap();
    let x = rand_vec(op.image_len(), -1.0, 1.0, 71);
    let r: f64 = op
        .forward_host(&x)
        .unwrap()
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let xt_ = Tensor::from_vec(x.clone(), (1, 2, 16, 16), &Device::Cpu).unwrap();
    let yt = Tensor::from_vec(y.clone(), (1, 2, 8, 8), &Device::Cpu).unwrap();
    let (norms, g) = op.misfit_norm_and_grad(&xt_, &yt).unwrap();
    assert!((norms[0] - r).abs() < 1e-12 * r);
    let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let d = rand_vec(op.image_len(), -1.0, 1.0, 72);
    let eps = 1e-6;
    let nrm = |v: &[f64]| -> f64 {
        op.forward_host(v)
            .unwrap()
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    };
    let xp: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + eps * b).collect();
    let xm: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a - eps * b).collect();
    let fd = (nrm(&xp) - nrm(&xm)) / (2.0 * eps);
    assert!(
        (fd - dot(&g, &d)).abs() < 1e-6 * (1.0 + fd.abs()),
        "{fd} vs {}",
        dot(&g, &d)
    );
}
