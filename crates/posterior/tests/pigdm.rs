//! ΠGDM on problems with a closed form: its guidance term against finite differences of the
//! Gaussian approximate log-likelihood log N(y; A x̂₀(x), r² AAᵀ + σ_y² I) (exact p(y | x_t)
//! for a unit-variance Gaussian prior), its push-through solve against a dense
//! Aᵀ(AAᵀ + cI)⁻¹, a property it must have on masks (σ_y → 0: observed pixels equal y,
//! unobserved ones follow the prior), and its bias against the exact posterior of a Gaussian
//! prior N(μ, diag(s²)) under linear measurements with Gaussian noise — ΠGDM is an
//! approximation at any budget, so the bias is printed and held within a recorded band.
//!
//! Sampling tolerances: with N chains an empirical mean has standard error sqrt(v/N) and an
//! empirical variance relative standard error sqrt(2/(N−1)); Z = 4 standard errors.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use genprior_diffusion::analytic::GaussianPrior;
use genprior_inverse::host::to_host;
use genprior_inverse::{build_task, Operator, TaskOptions};
use genprior_posterior::pigdm::{guidance, guidance_vector, pigdm, GramSolve, PigdmConfig};
use genprior_posterior::{build_sampler, Chains, Denoiser, MethodOptions, Problem};

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn transpose(a: &Mat) -> Mat {
    (0..a[0].len())
        .map(|j| a.iter().map(|r| r[j]).collect())
        .collect()
}

fn matmul(a: &Mat, b: &Mat) -> Mat {
    a.iter()
        .map(|r| {
            (0..b[0].len())
                .map(|j| r.iter().zip(b).map(|(x, row)| x * row[j]).sum())
                .collect()
        })
        .collect()
}

/// The exact posterior of the CS problem under the prior N(MU, diag(VAR)).
fn posterior(a: &Mat, y: &[f64], sigma: f64) -> (Vec<f64>, Vec<f64>) {
    let n = a[0].len();
    let s2 = sigma * sigma;
    let p: Mat = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    let ata: f64 = a.iter().map(|r| r[i] * r[j]).sum();
                    ata / s2 + if i == j { 1.0 / VAR[i] } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let cov = inverse(&p);
    let rhs: Vec<f64> = (0..n)
        .map(|i| a.iter().zip(y).map(|(r, yk)| r[i] * yk).sum::<f64>() / s2 + MU[i] / VAR[i])
        .collect();
    (matvec(&cov, &rhs), (0..n).map(|i| cov[i][i]).collect())
}

fn op_for(task: &str, sigma: f64) -> Box<dyn Operator> {
    let mut o = TaskOptions::new(task).unwrap();
    o.set("noise-sigma", sigma).unwrap();
    if o.spec("kernel-size").is_ok() {
        o.set("kernel-size", 3u64).unwrap();
    }
    build_task(&o, [1, 4, 4]).unwrap()
}

// ---------------------------------------------------------------------------- tests

#[test]
fn guidance_is_r2_times_the_gradient_of_the_gaussian_log_likelihood() {
    let (op, a, y, sigma_y) = cs_problem();
    let s = schedule();
    let at = transpose(&a);
    for (label, var) in [("unit-variance", [1.0; 4]), ("diag(VAR)", VAR)] {
        let model = GaussianPrior::new(MU.to_vec(), var.to_vec(), SHAPE, &s, &Device::Cpu).unwrap();
        // x̂₀ of the analytic prior at VE-scaled x and ᾱ, in f64.
        let x0_of = |x: &[f64], ab: f64| -> Vec<f64> {
            (0..4)
                .map(|i| {
                    let xv = ab.sqrt() * x[i];
                    MU[i] + ab.sqrt() * var[i] * (xv - ab.sqrt() * MU[i]) / (ab * var[i] + 1.0 - ab)
                })
                .collect()
        };
        for t in [900.0, 400.5, 50.0, 3.0] {
            let ab = s.alpha_bar_at(t).unwrap();
            let sigma2 = 1.0 / ab - 1.0;
            let r2 = sigma2 / (1.0 + sigma2);
            // Σ = r² AAᵀ + σ_y² I and log N(y; A x̂₀(x), Σ) up to a constant.
            let mut cov = matmul(&a, &at);
            for (i, row) in cov.iter_mut().enumerate() {
                row.iter_mut().for_each(|v| *v *= r2);
                row[i] += sigma_y * sigma_y;
            }
            let prec = inverse(&cov);
            let logn = |x: &[f64]| -> f64 {
                let ax = matvec(&a, &x0_of(x, ab));
                let d: Vec<f64> = y.iter().zip(&ax).map(|(p, q)| p - q).collect();
                let pd = matvec(&prec, &d);
                -0.5 * d.iter().zip(&pd).map(|(p, q)| p * q).sum::<f64>()
            };
            let x: Vec<f64> = [0.7, -1.3, 0.2, 2.1]
                .iter()
                .map(|v| v * (1.0 + sigma2.sqrt()))
                .collect();
            let h = 1e-4 * (1.0 + sigma2.sqrt());
            let fd: Vec<f64> = (0..4)
                .map(|i| {
                    let mut p = x.clone();
                    let mut m = x.clone();
                    p[i] += h;
                    m[i] -= h;
                    r2 * (logn(&p) - logn(&m)) / (2.0 * h)
                })
                .collect();
            let xt = Tensor::from_vec(
                x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                (1, 1, 2, 2),
                &Device::Cpu,
            )
            .unwrap();
            let mut den = Denoiser::new(&model, &s);
            let (x0, g) = guidance(
                &mut den,
                &op,
                GramSolve::ConjugateGradient,
                &xt,
                t,
                ab,
                &y,
                sigma_y,
            )
            .unwrap();
            assert_eq!(den.nfe(), 1);
            let g = to_host(&g).unwrap();
            let scale = fd.iter().map(|v| v.abs()).fold(0.0, f64::max);
            let e = max_abs_diff(&g, &fd);
            eprintln!(
                "ΠGDM guidance, {label} prior, t = {t}: autograd {g:.5?} vs r²·FD {fd:.5?} (max error {e:.2e}, scale {scale:.3e})"
            );
            assert!(e <= 2e-3 * scale + 1e-6, "{label}, t = {t}: error {e:e}");
            let x0 = to_host(&x0).unwrap();
            assert!(max_abs_diff(&x0, &x0_of(&x, ab)) < 1e-4);
        }
    }
}

#[test]
fn the_push_through_solve_matches_a_dense_inverse() {
    // CS (conjugate gradients) against Aᵀ(AAᵀ + cI)⁻¹ r formed densely (no push-through).
    let (op, a, _, _) = cs_problem();
    assert_eq!(GramSolve::for_operator(&op), GramSolve::ConjugateGradient);
    let at = transpose(&a);
    let r = [0.3, -0.8, 1.2];
    for c in [1e-6, 0.05, 3.0, 1e4] {
        let mut m = matmul(&a, &at);
        for (i, row) in m.iter_mut().enumerate() {
            row[i] += c;
        }
        let want = matvec(&at, &matvec(&inverse(&m), &r));
        let got = guidance_vector(&op, GramSolve::ConjugateGradient, &r, c).unwrap();
        let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let e = max_abs_diff(&got, &want);
        assert!(e <= 1e-8 * scale.max(1.0), "c = {c}: error {e:e}");
    }
    // Operators with a direct solver against the same solve by conjugate gradients.
    for task in ["denoise", "inpaint-random", "deblur-gauss"] {
        let op = op_for(task, 0.1);
        assert_eq!(
            GramSolve::for_operator(op.as_ref()),
            GramSolve::Direct,
            "{task}"
        );
        let r: Vec<f64> = (0..op.measurement_len())
            .map(|i| (i as f64 * 0.71).sin())
            .collect();
        for c in [1e-3, 0.5, 20.0] {
            let d = guidance_vector(op.as_ref(), GramSolve::Direct, &r, c).unwrap();
            let g = guidance_vector(op.as_ref(), GramSolve::ConjugateGradient, &r, c).unwrap();
            let e = max_abs_diff(&d, &g);
            assert!(e < 1e-7, "{task}, c = {c}: direct vs CG {e:e}");
        }
    }
    assert!(guidance_vector(&op, GramSolve::ConjugateGradient, &r, 0.0).is_err());
}

#[test]
fn on_a_mask_with_tiny_noise_observed_pixels_equal_y_and_the_rest_follow_the_prior() {
    // A diagonal Gaussian prior and a pixel mask: pixels are independent a priori and A is a
    // selection, so ΠGDM's guidance touches observed pixels only (∂x̂₀/∂x is diagonal and
    // v = 0 off the mask). The exact posterior puts observed pixels at y (σ_y = 1e-3) and
    // leaves the others at their prior.
    let s = schedule();
    let n = 16;
    let mean: Vec<f64> = (0..n).map(|i| 0.3 * ((i % 5) as f64 - 2.0) / 2.0).collect();
    let var: Vec<f64> = (0..n).map(|i| 0.2 + 0.05 * (i % 4) as f64).collect();
    let model = GaussianPrior::new(mean.clone(), var.clone(), [1, 4, 4], &s, &Device::Cpu).unwrap();
    let op = op_for("inpaint-random", 1e-3);
    let m = op.measurement_len();
    // Which measurement entry each observed pixel feeds.
    let mut observed: Vec<Option<usize>> = vec![None; n];
    for (i, slot) in observed.iter_mut().enumerate() {
        let mut e = vec![0.0; n];
        e[i] = 1.0;
        let ae = op.forward_host(&e).unwrap();
        if let Some(k) = ae.iter().position(|v| v.abs() > 0.5) {
            assert!((ae[k] - 1.0).abs() < 1e-12);
            *slot = Some(k);
        }
    }
    let n_obs = observed.iter().filter(|o| o.is_some()).count();
    assert!(n_obs > 2 && n_obs < n - 2, "{n_obs} observed pixels");
    let y: Vec<f64> = (0..m).map(|k| 0.8 * ((k as f64) * 1.3).cos()).collect();
    let yt = Tensor::from_vec(
        y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        {
            let mut sh = vec![1];
            sh.extend(op.measurement_shape());
            sh
        },
        &Device::Cpu,
    )
    .unwrap();
    let cfg = PigdmConfig::for_operator(op.as_ref()).unwrap();
    assert_eq!(cfg.solve, GramSolve::Direct);
    let chains = 2000;
    let p = Problem {
        model: &model,
        schedule: &s,
        op: op.as_ref(),
        y: &yt,
    };
    let (x, nfe) = pigdm(&p, &Chains::new(chains, 3), &cfg, &mut |_| {}).unwrap();
    assert_eq!(nfe, 100);
    let xs = to_host(&x).unwrap();
    let mut worst_obs: f64 = 0.0;
    let se_var = (2.0 / (chains - 1) as f64).sqrt();
    for i in 0..n {
        let v: Vec<f64> = (0..chains).map(|c| xs[c * n + i]).collect();
        let mu = v.iter().sum::<f64>() / chains as f64;
        let var_e = v.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / (chains - 1) as f64;
        match observed[i] {
            Some(k) => {
                let e = v.iter().map(|a| (a - y[k]).abs()).fold(0.0, f64::max);
                worst_obs = worst_obs.max(e);
            }
            None => {
                let zm = (mu - mean[i]).abs() / (var[i] / chains as f64).sqrt();
                let r = var_e / var[i];
                eprintln!(
                    "ΠGDM mask, unobserved pixel {i}: mean {mu:.4} (prior {:.4}, {zm:.2} SE), variance ratio {r:.4}",
                    mean[i]
                );
                assert!(zm <= Z, "pixel {i}: mean off by {zm:.2} SE");
                // DDIM at 100 steps on the geometric grid: sampling error + 5 %.
                assert!(
                    (r - 1.0).abs() <= Z * se_var + 0.05,
                    "pixel {i}: variance ratio {r}"
                );
            }
        }
    }
    eprintln!("ΠGDM mask: worst |x − y| over observed pixels and {chains} chains: {worst_obs:.2e}");
    // The result carries the reference's end-of-grid noise, level ≈ σ_min = 0.01, so a few σ_min.
    assert!(worst_obs < 0.06, "observed pixels off y by {worst_obs}");
}

#[test]
fn pigdm_bias_against_the_exact_posterior_is_recorded_and_bounded() {
    let (op, a, y, sigma) = cs_problem();
    let (pm, pv) = posterior(&a, &y, sigma);
    let s = schedule();
    let model = prior(&s);
    let yt = y_tensor(&y);
    let n = 4000;
    let dist = |m: &[f64], r: &[f64]| {
        m.iter()
            .zip(r)
            .map(|(p, q)| (p - q).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let prior_dist = dist(&MU, &pm);
    let p = Problem {
        model: &model,
        schedule: &s,
        op: &op,
        y: &yt,
    };
    for (eta, scale) in [(0.2, 1.0), (0.0, 1.0), (1.0, 1.0), (0.2, 0.5)] {
        let cfg = PigdmConfig {
            eta,
            scale,
            ..PigdmConfig::for_operator(&op).unwrap()
        };
        let (x, nfe) = pigdm(&p, &Chains::new(n, 5), &cfg, &mut |_| {}).unwrap();
        assert_eq!(nfe, 100);
        let (m, v, _) = moments(&x);
        let zm: Vec<f64> = (0..4)
            .map(|j| (m[j] - pm[j]) / (pv[j] / n as f64).sqrt())
            .collect();
        let ratios: Vec<f64> = (0..4).map(|j| v[j] / pv[j]).collect();
        let d = dist(&m, &pm);
        let ax = matvec(&a, &m);
        let resid = dist(&ax, &y);
        eprintln!(
            "ΠGDM η = {eta}, w = {scale}, {nfe} NFE, {n} chains vs the posterior: mean distance {d:.4} \
             (prior mean: {prior_dist:.4}), mean errors {zm:.1?} SE, variance ratios {ratios:.3?}; \
             means {m:.4?} vs {pm:.4?}; ‖A·mean − y‖ = {resid:.4}"
        );
        // Every setting uses the data: far closer to the posterior mean than the prior is.
        assert!(
            d < 0.2 * prior_dist,
            "η = {eta}, w = {scale}: mean distance {d} (prior {prior_dist})"
        );
        // The recorded bands (measured with these seeds): means within 0.03 of the posterior
        // mean and variances too small, by a factor 0.3–0.85 at η ≤ 0.2 and ≈ 0.5 at η = 1.
        let (max_d, lo, hi) = match (eta, scale) {
            // Defaults: distance 0.022, ratios 0.30–0.84.
            (0.2, 1.0) => (0.04, 0.2, 1.0),
            // Deterministic: distance 0.023, ratios 0.29–0.86.
            (0.0, _) => (0.04, 0.2, 1.0),
            // Fresh noise only: distance 0.004, ratios 0.47–0.49.
            (1.0, _) => (0.02, 0.35, 0.65),
            // Half guidance: distance 0.020, ratios 0.33–0.87.
            _ => (0.04, 0.2, 1.0),
        };
        assert!(
            d <= max_d,
            "η = {eta}, w = {scale}: mean distance {d} > {max_d}"
        );
        for (j, r) in ratios.iter().enumerate() {
            assert!(
                (lo..=hi).contains(r),
                "η = {eta}, w = {scale}: coord {j} variance ratio {r} outside [{lo}, {hi}]"
            );
        }
    }
}

#[test]
fn options_defaults_and_clear_errors() {
    let settings = |task: &str| {
        let sigma = if task == "one-bit" { 0.0 } else { 0.1 };
        build_sampler("pigdm", &MethodOptions::new(), op_for(task, sigma).as_ref())
            .map(|s| s.settings())
    };
    let s = settings("sr2").unwrap();
    assert_eq!(s["pigdm_steps"], 100);
    assert_eq!(s["pigdm_eta"], 0.2);
    assert_eq!(s["pigdm_scale"], 1.0);
    assert_eq!(s["pigdm_sigma_max"], 100.0);
    assert_eq!(s["pigdm_sigma_min"], 0.01);
    assert_eq!(s["pigdm_solve"], "conjugate-gradient");
    for task in ["denoise", "inpaint-box", "inpaint-random", "deblur-gauss"] {
        assert_eq!(settings(task).unwrap()["pigdm_solve"], "direct", "{task}");
    }
    assert_eq!(settings("cs").unwrap()["pigdm_solve"], "conjugate-gradient");
    for (task, why) in [("phase-retrieval", "nonlinear"), ("one-bit", "")] {
        let e = match settings(task) {
            Ok(_) => panic!("{task} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&format!("`{task}`")) && e.contains("cannot run") && e.contains(why),
            "{e}"
        );
    }
    let op = op_for("denoise", 0.1);
    let given = MethodOptions::new()
        .with("pigdm-steps", 7usize)
        .with("pigdm-eta", 0.0)
        .with("pigdm-scale", 2usize);
    let s = build_sampler("pigdm", &given, op.as_ref()).unwrap();
    assert_eq!(s.total_steps(), 7);
    assert_eq!(s.settings()["pigdm_eta"], 0.0);
    assert_eq!(s.settings()["pigdm_scale"], 2.0);
    let bad = |o: MethodOptions, want: &[&str]| {
        let e = match build_sampler("pigdm", &o, op.as_ref()) {
            Ok(_) => panic!("{o:?} was accepted"),
            Err(e) => e.to_string(),
        };
        for w in want {
            assert!(e.contains(w), "`{e}` lacks `{w}`");
        }
    };
    bad(
        MethodOptions::new().with("pigdm-steps", 0usize),
        &["--pigdm-steps", "at least 1"],
    );
    bad(
        MethodOptions::new().with("pigdm-eta", 1.5),
        &["--pigdm-eta", "[0, 1]"],
    );
    bad(
        MethodOptions::new().with("pigdm-scale", -1.0),
        &["--pigdm-scale"],
    );
    // A measurement batch that is neither 1 nor the chain count.
    let s = schedule();
    let model =
        GaussianPrior::new(vec![0.0; 16], vec![0.3; 16], [1, 4, 4], &s, &Device::Cpu).unwrap();
    let y = Tensor::zeros((2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let sampler = build_sampler("pigdm", &MethodOptions::new(), op.as_ref()).unwrap();
    let p = Problem {
        model: &model,
        schedule: &s,
        op: op.as_ref(),
        y: &y,
    };
    assert!(sampler.sample(&p, &Chains::new(3, 0), &mut |_| {}).is_err());
}
