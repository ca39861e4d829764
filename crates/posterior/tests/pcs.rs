//! PCS exactness: MALA and exact Gaussian PCS against closed-form targets, ULA against its own
//! (biased) closed-form stationary law, MALA on a non-Gaussian (one-bit) target against
//! quadrature.
//!
//! Monte-Carlo tolerances: with N independent chains, a coordinate's sample mean has standard
//! error sqrt(v/N) and its sample variance has standard error sqrt((μ₄ − v²)/N) (μ₄ the fourth
//! central moment; 2v²/N for a Gaussian). Every check allows Z = 4.5 standard errors, so the
//! chance that any of the ≤ 8 checks of a test fails for a correct sampler is below 1e-4.

use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

use genprior_inverse::physics::{one_bit, Blur, CompressedSensing, Identity, Inpainting, Kernel2d};
use genprior_inverse::{build_task, Gaussian, NoiseModel, Operator, TaskOptions};
use genprior_posterior::pcs::{pcs, PcsBackend, PcsConfig, PcsMethod};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const Z: f64 = 4.5;

/// Gaussian noise with σ = σ_L = `s`.
fn gauss(s: f64) -> Arc<dyn NoiseModel> {
    Arc::new(Gaussian::with_sigma(s).unwrap())
}

/// Dense m × n matrix of a linear operator (columns A e_j).
fn dense(op: &dyn Operator) -> Vec<f64> {
    let (n, m) = (op.image_len(), op.measurement_len());
    let mut a = vec![0.0; m * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        for (i, v) in op.forward_host(&e).unwrap().into_iter().enumerate() {
            a[i * n + j] = v;
        }
    }
    a
}

/// Inverse of a small SPD matrix by Gauss–Jordan elimination.
fn inverse(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(c * n + k, p * n + k);
            inv.swap(c * n + k, p * n + k);
        }
        let d = a[c * n + c];
        for k in 0..n {
            a[c * n + k] /= d;
            inv[c * n + k] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = a[r * n + c];
                for k in 0..n {
                    a[r * n + k] -= f * a[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
    }
    inv
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

/// Mean and covariance of the PCS target for a linear-Gaussian operator.
fn closed_form(op: &dyn Operator, y: &[f64], x0: &[f64], gamma: f64) -> (Vec<f64>, Vec<f64>) {
    let (n, m) = (op.image_len(), op.measurement_len());
    let s2 = op.temperature().powi(2);
    let a = dense(op);
    let mut p = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            p[i * n + j] = (0..m).map(|k| a[k * n + i] * a[k * n + j]).sum::<f64>() / s2;
        }
        p[i * n + i] += 1.0 / (gamma * gamma);
    }
    let cov = inverse(p, n);
    let b: Vec<f64> = (0..n)
        .map(|i| (0..m).map(|k| a[k * n + i] * y[k]).sum::<f64>() / s2 + x0[i] / (gamma * gamma))
        .collect();
    let mean = (0..n)
        .map(|i| (0..n).map(|j| cov[i * n + j] * b[j]).sum())
        .collect();
    (mean, cov)
}

/// Per-coordinate sample mean and variance of row-major N × n samples.
fn moments(s: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let cnt = (s.len() / n) as f64;
    let mut mean = vec![0.0; n];
    for r in s.chunks_exact(n) {
        for i in 0..n {
            mean[i] += r[i] / cnt;
        }
    }
    let mut var = vec![0.0; n];
    for r in s.chunks_exact(n) {
        for i in 0..n {
            var[i] += (r[i] - mean[i]).powi(2) / (cnt - 1.0);
        }
    }
    (mean, var)
}

/// Checks Gaussian-target moments within Z standard errors.
fn check_gaussian(label: &str, s: &[f64], n: usize, mean: &[f64], var: &[f64]) {
    let cnt = (s.len() / n) as f64;
    let (m, v) = moments(s, n);
    let zm = (0..n)
        .map(|i| (m[i] - mean[i]).abs() / (var[i] / cnt).sqrt())
        .fold(0.0, f64::max);
    let vr: Vec<String> = (0..n).map(|i| format!("{:.3}", v[i] / var[i])).collect();
    eprintln!(
        "{label}: N = {cnt}, max |mean error| = {zm:.2} s.e., variance ratios [{}]",
        vr.join(", ")
    );
    for i in 0..n {
        let se_m = (var[i] / cnt).sqrt();
        let se_v = (2.0 * var[i] * var[i] / cnt).sqrt();
        assert!(
            (m[i] - mean[i]).abs() <= Z * se_m,
            "{label} coord {i}: mean {} vs {} (se {se_m})",
            m[i],
            mean[i]
        );
        assert!(
            (v[i] - var[i]).abs() <= Z * se_v,
            "{label} coord {i}: var {} vs {} (ratio {})",
            v[i],
            var[i],
            v[i] / var[i]
        );
    }
}

const N_CHAINS: usize = 20_000;
const GAMMA: f64 = 0.5;
const SIGMA: f64 = 0.3;

/// A 3 × 4 linear-Gaussian problem (image shape 1 × 2 × 2).
fn small_cs() -> (CompressedSensing, Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(77);
    let a: Vec<f64> = (0..12)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            0.3 * z
        })
        .collect();
    let op = CompressedSensing::from_matrix([1, 2, 2], 3, a, gauss(SIGMA)).unwrap();
    (op, vec![0.5, -0.3, 0.2], vec![0.2, -0.1, 0.4, 0.0])
}

/// Which PCS loop a test runs: the host loop, or the device loop in a dtype.
type Backend = (PcsBackend, Option<DType>);
const HOST: Backend = (PcsBackend::Host, None);
const DEVICE_F32: Backend = (PcsBackend::Device, Some(DType::F32));

/// [`run_pcs`] with the loop of `backend`.
fn run_pcs_on(
    backend: Backend,
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    cfg: &PcsConfig,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let cfg = PcsConfig {
        backend: backend.0,
        device_dtype: backend.1,
        ..cfg.clone()
    };
    run_pcs(op, y, x0, gamma, &cfg, seed)
}

fn run_pcs(
    op: &dyn Operator,
    y: &[f64],
    x0: &[f64],
    gamma: f64,
    cfg: &PcsConfig,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let [c, h, w] = op.image_shape();
    let mut ms = vec![1];
    ms.extend(op.measurement_shape());
    let yt = Tensor::from_vec(y.to_vec(), ms, &Device::Cpu).unwrap();
    let x0t = Tensor::from_vec(x0.to_vec(), (1, c, h, w), &Device::Cpu)
        .unwrap()
        .repeat((N_CHAINS, 1, 1, 1))
        .unwrap();
    let out = pcs(op, &yt, &x0t, gamma, cfg, &mut StdRng::seed_from_u64(seed)).unwrap();
    assert_eq!(out.samples.dims(), x0t.dims());
    assert_eq!(out.acceptance.len(), N_CHAINS);
    (
        out.samples.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        out.acceptance,
    )
}

fn mala_samples_the_gaussian_target_on(backend: Backend) {
    let (op, y, x0) = small_cs();
    let (mean, cov) = closed_form(&op, &y, &x0, GAMMA);
    let var: Vec<f64> = (0..4).map(|i| cov[i * 4 + i]).collect();
    // reg small, so the step h(x) varies with x and the reverse density's h(x') matters
    let cfg = PcsConfig {
        method: PcsMethod::Mala,
        steps: 150,
        scale: 1.0,
        reg: 0.2,
        temperature: None,
        likelihood_temperature: 1.0,
        cg_max_iter: 100,
        ..PcsConfig::default()
    };
    let (s, acc) = run_pcs_on(backend, &op, &y, &x0, GAMMA, &cfg, 1);
    let mean_acc = acc.iter().sum::<f64>() / acc.len() as f64;
    eprintln!("mala acceptance {mean_acc:.3}");
    assert!(mean_acc > 0.3 && mean_acc < 1.0, "acceptance {mean_acc}");
    check_gaussian("mala", &s, 4, &mean, &var);
}

#[test]
fn mala_samples_the_gaussian_target() {
    mala_samples_the_gaussian_target_on(HOST);
}

#[test]
fn mala_samples_the_gaussian_target_on_the_device_in_f32() {
    mala_samples_the_gaussian_target_on(DEVICE_F32);
}

fn mala_with_large_steps_still_samples_the_target_on(backend: Backend) {
    // big steps: many rejections, and unadjusted Langevin would be far off
    let (op, y, x0) = small_cs();
    let (mean, cov) = closed_form(&op, &y, &x0, GAMMA);
    let var: Vec<f64> = (0..4).map(|i| cov[i * 4 + i]).collect();
    let cfg = PcsConfig {
        method: PcsMethod::Mala,
        steps: 300,
        scale: 8.0,
        reg: 0.0,
        temperature: None,
        likelihood_temperature: 1.0,
        cg_max_iter: 100,
        ..PcsConfig::default()
    };
    let (s, acc) = run_pcs_on(backend, &op, &y, &x0, GAMMA, &cfg, 2);
    let mean_acc = acc.iter().sum::<f64>() / acc.len() as f64;
    eprintln!("mala-large acceptance {mean_acc:.3}");
    assert!(mean_acc > 0.05 && mean_acc < 0.9, "acceptance {mean_acc}");
    check_gaussian("mala-large", &s, 4, &mean, &var);
}

#[test]
fn mala_with_large_steps_still_samples_the_target() {
    mala_with_large_steps_still_samples_the_target_on(HOST);
}

#[test]
fn mala_with_large_steps_still_samples_the_target_on_the_device_in_f32() {
    mala_with_large_steps_still_samples_the_target_on(DEVICE_F32);
}

#[test]
fn ula_has_the_documented_bias() {
    // With reg ≫ √f the step is constant, h = h0, and ULA is the Gaussian AR(1) chain
    // x' = Bx + c + s z, B = (1 − a)I − γ²a AᵀA/σ²: its stationary mean is the target mean, its
    // covariance solves Σ = BΣB + s²I (not the target's).
    let (op, y, x0) = small_cs();
    let (mean, cov) = closed_form(&op, &y, &x0, GAMMA);
    let g2 = GAMMA * GAMMA;
    let a_step: f64 = 0.3;
    let h0 = -g2 * (1.0 - a_step).ln();
    let reg = 1e9;
    let m2 = SIGMA * SIGMA;
    let cfg = PcsConfig {
        method: PcsMethod::Ula,
        steps: 100,
        scale: h0 * reg / m2.min(g2),
        reg,
        temperature: None,
        likelihood_temperature: 1.0,
        cg_max_iter: 100,
        ..PcsConfig::default()
    };
    let s2 = g2 * (1.0 - (1.0 - a_step).powi(2));
    let ad = dense(&op);
    let mut b = vec![0.0; 16];
    for i in 0..4 {
        for j in 0..4 {
            let ata: f64 = (0..3).map(|k| ad[k * 4 + i] * ad[k * 4 + j]).sum();
            b[i * 4 + j] = -g2 * a_step * ata / m2 + if i == j { 1.0 - a_step } else { 0.0 };
        }
    }
    let mut sig = vec![0.0; 16];
    for _ in 0..2000 {
        let mut next = matmul(&matmul(&b, &sig, 4), &b, 4);
        for i in 0..4 {
            next[i * 4 + i] += s2;
        }
        sig = next;
    }
    let ula_var: Vec<f64> = (0..4).map(|i| sig[i * 4 + i]).collect();
    let target_var: Vec<f64> = (0..4).map(|i| cov[i * 4 + i]).collect();
    // the bias is real: at least one coordinate's variance is off by > 10 standard errors
    let se = |v: f64| (2.0 * v * v / N_CHAINS as f64).sqrt();
    let ratios: Vec<String> = (0..4)
        .map(|i| format!("{:.3}", ula_var[i] / target_var[i]))
        .collect();
    eprintln!("ula stationary / target variance: [{}]", ratios.join(", "));
    assert!((0..4).any(|i| (ula_var[i] - target_var[i]).abs() > 10.0 * se(target_var[i])));
    let (s, acc) = run_pcs(&op, &y, &x0, GAMMA, &cfg, 3);
    assert!(acc.iter().all(|a| *a == 1.0));
    check_gaussian("ula", &s, 4, &mean, &ula_var);
}

fn exact_pcs_samples_the_gaussian_target_on(backend: Backend) {
    let (cs, y, x0) = small_cs();
    let kernel = Kernel2d::new(2, 2, vec![0.5, 0.2, 0.2, 0.1]).unwrap();
    let blur = Blur::new("deblur-gauss", [1, 2, 3], kernel, gauss(SIGMA)).unwrap();
    let inp = Inpainting::from_mask(
        "inpaint-mask",
        [1, 2, 3],
        &[1.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        gauss(SIGMA),
    )
    .unwrap();
    let den = Identity::denoise([1, 2, 3], gauss(0.1)).unwrap();
    let cfg = PcsConfig {
        method: PcsMethod::Exact,
        ..PcsConfig::default()
    };
    let x06 = vec![0.2, -0.1, 0.4, 0.0, 0.3, -0.5];
    let y6 = vec![0.5, -0.3, 0.2, 0.1, 0.0, 0.7];
    let cases: Vec<(&dyn Operator, &[f64], &[f64])> = vec![
        (&cs, &y, &x0),
        (&blur, &y6, &x06),
        (&inp, &y6, &x06),
        (&den, &y6, &x06),
    ];
    for (k, (op, y, x0)) in cases.into_iter().enumerate() {
        let n = op.image_len();
        let (mean, cov) = closed_form(op, y, x0, GAMMA);
        let var: Vec<f64> = (0..n).map(|i| cov[i * n + i]).collect();
        let (s, acc) = run_pcs_on(backend, op, y, x0, GAMMA, &cfg, 10 + k as u64);
        assert!(acc.iter().all(|a| *a == 1.0));
        check_gaussian(&format!("exact {}", op.name()), &s, n, &mean, &var);
    }
}

#[test]
fn exact_pcs_samples_the_gaussian_target() {
    exact_pcs_samples_the_gaussian_target_on(HOST);
}

#[test]
fn exact_pcs_samples_the_gaussian_target_on_the_device_in_f32() {
    exact_pcs_samples_the_gaussian_target_on(DEVICE_F32);
}

fn mala_samples_a_non_gaussian_one_bit_target_on(backend: Backend) {
    // π(x) ∝ sigmoid(y x/τ) N(x; x0, γ²) per pixel: moments by quadrature.
    let tau = 0.4;
    let gamma = 0.4;
    let op = one_bit([1, 1, 2], tau, 0.0).unwrap();
    let y = vec![1.0, -1.0];
    let x0 = vec![0.1, 0.3];
    let cfg = PcsConfig {
        method: PcsMethod::Mala,
        steps: 150,
        scale: 1.0,
        reg: 0.0,
        temperature: None,
        likelihood_temperature: 1.0,
        cg_max_iter: 0,
        ..PcsConfig::default()
    };
    let (s, acc) = run_pcs_on(backend, &op, &y, &x0, gamma, &cfg, 4);
    let mean_acc = acc.iter().sum::<f64>() / acc.len() as f64;
    eprintln!("one-bit mala acceptance {mean_acc:.3}");
    assert!(mean_acc > 0.5);
    let (m, v) = moments(&s, 2);
    let cnt = N_CHAINS as f64;
    for i in 0..2 {
        let (lo, hi, k) = (x0[i] - 10.0 * gamma, x0[i] + 10.0 * gamma, 40_001);
        let dx = (hi - lo) / (k - 1) as f64;
        let mut w = [0.0f64; 5];
        for j in 0..k {
            let x = lo + j as f64 * dx;
            let p = (-((1.0 + (-y[i] * x / tau).exp()).ln())
                - (x - x0[i]).powi(2) / (2.0 * gamma * gamma))
                .exp();
            for (e, acc) in w.iter_mut().enumerate() {
                *acc += p * x.powi(e as i32);
            }
        }
        let mean = w[1] / w[0];
        // central moments
        let e = |order: i32| -> f64 {
            let mut s = 0.0;
            let mut z = 0.0;
            for j in 0..k {
                let x = lo + j as f64 * dx;
                let p = (-((1.0 + (-y[i] * x / tau).exp()).ln())
                    - (x - x0[i]).powi(2) / (2.0 * gamma * gamma))
                    .exp();
                s += p * (x - mean).powi(order);
                z += p;
            }
            s / z
        };
        let (var, mu4) = (e(2), e(4));
        eprintln!(
            "one-bit coord {i}: mean {:.4} vs {mean:.4}, var {:.4} vs {var:.4}",
            m[i], v[i]
        );
        assert!(
            (m[i] - mean).abs() <= Z * (var / cnt).sqrt(),
            "one-bit coord {i}: mean {} vs {mean}",
            m[i]
        );
        assert!(
            (v[i] - var).abs() <= Z * ((mu4 - var * var) / cnt).sqrt(),
            "one-bit coord {i}: var {} vs {var}",
            v[i]
        );
    }
}

#[test]
fn mala_samples_a_non_gaussian_one_bit_target() {
    mala_samples_a_non_gaussian_one_bit_target_on(HOST);
}

#[test]
fn mala_samples_a_non_gaussian_one_bit_target_on_the_device_in_f32() {
    mala_samples_a_non_gaussian_one_bit_target_on(DEVICE_F32);
}

#[test]
fn pcs_rejects_bad_settings() {
    let op = build_task(&TaskOptions::new("one-bit").unwrap(), [1, 4, 4]).unwrap();
    let x0 = Tensor::zeros((2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let exact = PcsConfig {
        method: PcsMethod::Exact,
        ..PcsConfig::default()
    };
    assert!(pcs(op.as_ref(), &y, &x0, 0.4, &exact, &mut rng).is_err());
    let mala = PcsConfig::default();
    assert!(pcs(op.as_ref(), &y, &x0, 0.0, &mala, &mut rng).is_err());
    assert!(pcs(
        op.as_ref(),
        &y,
        &x0,
        0.4,
        &PcsConfig {
            steps: 0,
            ..PcsConfig::default()
        },
        &mut rng
    )
    .is_err());
    let y3 = Tensor::ones((3, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(pcs(op.as_ref(), &y3, &x0, 0.4, &mala, &mut rng).is_err());
    // a working call keeps dtype and shape, and is reproducible from the seed
    let a = pcs(
        op.as_ref(),
        &y,
        &x0,
        0.4,
        &PcsConfig {
            steps: 5,
            ..PcsConfig::default()
        },
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    let b = pcs(
        op.as_ref(),
        &y,
        &x0,
        0.4,
        &PcsConfig {
            steps: 5,
            ..PcsConfig::default()
        },
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(a.samples.dtype(), DType::F32);
    assert_eq!(
        a.samples.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.samples.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// Exact PCS on MRI: single-coil (direct Fourier-domain solve, for a real and a complex
/// image) and multi-coil (conjugate gradients) against the closed-form Gaussian target.
#[test]
fn exact_pcs_samples_the_mri_targets() {
    use genprior_inverse::physics::mri::{birdcage_maps, Mri, MriBaseline};
    let cfg = PcsConfig {
        method: PcsMethod::Exact,
        ..PcsConfig::default()
    };
    // 2 × 3 images, columns 0 and 2 sampled.
    let mask: Vec<bool> = (0..6).map(|p| p % 3 != 1).collect();
    for (k, (c, coils)) in [(1, 0), (2, 0), (1, 2), (2, 2)].into_iter().enumerate() {
        let maps = (coils > 0).then(|| birdcage_maps(coils, 2, 3));
        let op = Mri::new(
            "mri",
            [c, 2, 3],
            mask.clone(),
            maps,
            MriBaseline::ZeroFilled,
            gauss(SIGMA),
        )
        .unwrap();
        let n = op.image_len();
        let x0: Vec<f64> = (0..n).map(|i| 0.1 * i as f64 - 0.2).collect();
        let truth: Vec<f64> = (0..n).map(|i| 0.3 - 0.15 * i as f64).collect();
        let y = op.forward_host(&truth).unwrap();
        let (mean, cov) = closed_form(&op, &y, &x0, GAMMA);
        let var: Vec<f64> = (0..n).map(|i| cov[i * n + i]).collect();
        let (s, acc) = run_pcs(&op, &y, &x0, GAMMA, &cfg, 40 + k as u64);
        assert!(acc.iter().all(|a| *a == 1.0));
        check_gaussian(
            &format!("exact mri C={c} coils={coils}"),
            &s,
            n,
            &mean,
            &var,
        );
    }
}

#[test]
fn a_tempered_gaussian_likelihood_is_the_posterior_at_sigma2_times_t() {
    // Target exp(L/T − ‖x − x₀‖²/(2γ²)) with L Gaussian at σ: the PCS target of the same
    // operator at σ·√T. Exact and MALA against that closed form, for T below and above 1.
    let (op, y, x0) = small_cs();
    for (k, t) in [0.5f64, 2.5].into_iter().enumerate() {
        let a = dense(&op);
        let hot = CompressedSensing::from_matrix([1, 2, 2], 3, a, gauss(SIGMA * t.sqrt())).unwrap();
        let (mean, cov) = closed_form(&hot, &y, &x0, GAMMA);
        let var: Vec<f64> = (0..4).map(|i| cov[i * 4 + i]).collect();
        // The untempered target differs by far more than the tolerance.
        let (mean1, _) = closed_form(&op, &y, &x0, GAMMA);
        let shift = (0..4)
            .map(|i| (mean[i] - mean1[i]).abs() / (var[i] / N_CHAINS as f64).sqrt())
            .fold(0.0, f64::max);
        assert!(
            shift > 10.0 * Z,
            "T = {t}: the test cannot tell T from 1 ({shift})"
        );
        let exact = PcsConfig {
            method: PcsMethod::Exact,
            likelihood_temperature: t,
            ..PcsConfig::default()
        };
        let (s, _) = run_pcs(&op, &y, &x0, GAMMA, &exact, 40 + k as u64);
        check_gaussian(&format!("exact, T = {t}"), &s, 4, &mean, &var);
        let mala = PcsConfig {
            method: PcsMethod::Mala,
            steps: 150,
            scale: 1.0,
            reg: 0.2,
            likelihood_temperature: t,
            ..PcsConfig::default()
        };
        let (s, acc) = run_pcs(&op, &y, &x0, GAMMA, &mala, 50 + k as u64);
        let mean_acc = acc.iter().sum::<f64>() / acc.len() as f64;
        assert!(mean_acc > 0.3, "acceptance {mean_acc}");
        check_gaussian(&format!("mala, T = {t}"), &s, 4, &mean, &var);
    }
}

#[test]
fn the_one_bit_step_is_the_reference_codes() {
    // The reference (`MALASampling.conditioning`, `configs/quantization_ffhq_pnp.yaml`: scale
    // 0.2, multiplier m = 0.36, reg 50) moves, from x = x₀,
    //   x' = x − γ²a ∇f(x)/(2m²) + γ sqrt(1 − exp(−2h/γ²)) z,
    //   f = Σ softplus(−y x/τ),  h = scale·min(m², γ²)/(reg + √f),  a = 1 − exp(−h/γ²):
    // genprior's ULA with T = 2m² and --pcs-m m must take exactly that step.
    let (tau, m, gamma): (f64, f64, f64) = (0.4, 0.36, 0.4);
    let op = one_bit([1, 2, 3], tau, 0.0).unwrap();
    let y: Vec<f64> = vec![1.0, -1.0, 1.0, 1.0, -1.0, -1.0];
    let x0: Vec<f64> = vec![0.1, 0.3, -0.6, 0.9, -0.2, 0.0];
    let cfg = PcsConfig {
        method: PcsMethod::Ula,
        steps: 1,
        scale: 0.2,
        reg: 50.0,
        temperature: Some(m),
        likelihood_temperature: 2.0 * m * m,
        ..PcsConfig::default()
    };
    let yt = Tensor::from_vec(y.clone(), (1, 1, 2, 3), &Device::Cpu).unwrap();
    let xt = Tensor::from_vec(x0.clone(), (1, 1, 2, 3), &Device::Cpu).unwrap();
    let seed = 1234u64;
    let out = genprior_posterior::pcs_seeded(&op, &yt, &xt, gamma, &cfg, &[seed]).unwrap();
    let got = out.samples.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    // The reference formula, by hand (softplus and its derivative written out).
    let f: f64 = x0
        .iter()
        .zip(&y)
        .map(|(x, y)| (1.0 + (-y * x / tau).exp()).ln())
        .sum();
    let grad_f: Vec<f64> = x0
        .iter()
        .zip(&y)
        .map(|(x, y)| -y / tau / (1.0 + (y * x / tau).exp()))
        .collect();
    let g2 = gamma * gamma;
    let h = 0.2 * (m * m).min(g2) / (50.0 + f.sqrt());
    let a = 1.0 - (-h / g2).exp();
    let b = gamma * (1.0 - (-2.0 * h / g2).exp()).sqrt();
    let mut rng = StdRng::seed_from_u64(seed);
    let want: Vec<f64> = (0..6)
        .map(|i| {
            let z: f64 = StandardNormal.sample(&mut rng);
            x0[i] - g2 * a * grad_f[i] / (2.0 * m * m) + b * z
        })
        .collect();
    for i in 0..6 {
        assert!(
            (got[i] - want[i]).abs() < 1e-12,
            "pixel {i}: {} vs the reference's {}",
            got[i],
            want[i]
        );
    }
    // The untempered default (T = 1, m = τ) takes a different step: drift ∝ ∇f, not ∇f/(2m²).
    let plain = PcsConfig {
        likelihood_temperature: 1.0,
        temperature: None,
        ..cfg.clone()
    };
    let out = genprior_posterior::pcs_seeded(&op, &yt, &xt, gamma, &plain, &[seed]).unwrap();
    let other = out.samples.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let d = (0..6)
        .map(|i| (other[i] - want[i]).abs())
        .fold(0.0, f64::max);
    assert!(
        d > 1e-4,
        "the untempered step should differ from the reference's ({d})"
    );
}
