//! LGD-MC: with one draw and r = 0 it is DPS (ζ_DPS = ζ·sqrt(λ)) step for step; its Monte
//! Carlo loss against a direct dense evaluation and its guidance against finite differences
//! (linear-Gaussian, phase retrieval, one-bit); its bias on the Gaussian prior, printed; and
//! as DPnP's warm start.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use genprior_inverse::{build_task, Operator, TaskOptions};
use genprior_posterior::lgd::{
    lgd_indexed, mc_draws, mc_loss_and_grad, LgdConfig, LgdDraws, LgdLoss,
};
use genprior_posterior::{
    build_sampler, dps, Chains, DpsConfig, DpsMisfit, MethodOptions, Problem,
};

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn lgd_cfg(op: &dyn Operator, steps: usize, zeta: f64, lambda: f64, n: usize, r: f64) -> LgdConfig {
    LgdConfig {
        steps,
        zeta,
        lambda,
        mc_samples: n,
        r,
        ..LgdConfig::for_operator(op, steps)
    }
}

#[test]
fn one_draw_without_perturbation_is_dps() {
    let s = schedule();
    let model = prior(&s);
    let (op, _, y, _) = cs_problem();
    let yt = y_tensor(&y);
    let (k, steps, zeta, lambda) = (16, 100, 2.0, 0.04f64);
    let d = dps(
        &model,
        &s,
        &op,
        &yt,
        k,
        &DpsConfig {
            steps,
            zeta: zeta * lambda.sqrt(),
            misfit: DpsMisfit::Norm,
            temperature: 1.0,
            backend: genprior_posterior::PcsBackend::Auto,
        },
        21,
        &mut |_, _| {},
    )
    .unwrap();
    let lgd = |n: usize, r: f64, l: f64| {
        let cfg = lgd_cfg(&op, steps, zeta, l, n, r);
        let (x, nfe) = lgd_indexed(&model, &s, &op, &yt, k, &cfg, 21, 0, &mut |_, _| {}).unwrap();
        assert_eq!(nfe, steps);
        flat(&x)
    };
    let want = flat(&d.samples);
    let e = max_diff(&lgd(1, 0.0, lambda), &want);
    eprintln!("LGD-MC (n = 1, r = 0) vs DPS (ζ·sqrt(λ)): max |difference| {e:e}");
    assert!(e < 1e-4, "{e}");
    // r = 0 with several draws is the same loss.
    assert!(max_diff(&lgd(5, 0.0, lambda), &want) < 1e-4);
    // Controls: perturbed draws, or a wrong ζ scaling (λ → 4λ is ζ_DPS × 2), differ.
    let e1 = max_diff(&lgd(1, 0.1, lambda), &want);
    let e2 = max_diff(&lgd(1, 0.0, 4.0 * lambda), &want);
    eprintln!("controls: r = 0.1 differs by {e1:e}, 4λ by {e2:e}");
    assert!(e1 > 1e-3 && e2 > 1e-3);
}

/// G by direct dense evaluation for the CS problem.
fn dense_g(a: &Mat, y: &[f64], lambda: f64, x: &[f64], draws: &[Vec<f64>]) -> f64 {
    let mean: f64 = draws
        .iter()
        .map(|d| {
            let xp: Vec<f64> = x.iter().zip(d).map(|(p, q)| p + q).collect();
            let r: f64 = matvec(a, &xp)
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).powi(2))
                .sum();
            (-lambda * r).exp()
        })
        .sum::<f64>()
        / draws.len() as f64;
    (-mean.ln()).sqrt()
}

fn check_fd(
    label: &str,
    op: &dyn Operator,
    loss: LgdLoss,
    lambda: f64,
    x: &[f64],
    y: &[f64],
    draws: &[Vec<f64>],
) {
    let (_, g) = mc_loss_and_grad(op, loss, lambda, x, y, draws).unwrap();
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    let scale = g.iter().map(|v| v.abs()).fold(0.0, f64::max);
    for i in 0..x.len() {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[i] += h;
        xm[i] -= h;
        let fp = mc_loss_and_grad(op, loss, lambda, &xp, y, draws).unwrap().0;
        let fm = mc_loss_and_grad(op, loss, lambda, &xm, y, draws).unwrap().0;
        let fd = (fp - fm) / (2.0 * h);
        worst = worst.max((fd - g[i]).abs() / scale);
    }
    eprintln!("{label}: guidance vs central differences, max relative error {worst:.2e}");
    assert!(worst < 1e-5, "{label}: {worst}");
}

#[test]
fn monte_carlo_loss_and_its_gradient() {
    let (op, a, y, _) = cs_problem();
    let x = [0.3, -0.5, 0.8, 0.1];
    for (n, draws) in [(5, LgdDraws::Gaussian), (3, LgdDraws::Uniform)] {
        let d = mc_draws(4, 2, 17, n, 4, 0.3, draws);
        assert_eq!(d.len(), n);
        if draws == LgdDraws::Uniform {
            assert!(d.iter().flatten().all(|v| (0.0..0.3).contains(v)));
        }
        for lambda in [1e-3, 0.5, 40.0] {
            let (g, _) =
                mc_loss_and_grad(&op, LgdLoss::SquaredResidual, lambda, &x, &y, &d).unwrap();
            let want = dense_g(&a, &y, lambda, &x, &d);
            assert!(
                (g - want).abs() < 1e-9 * (1.0 + want),
                "λ {lambda}: {g} vs {want}"
            );
            check_fd(
                &format!("cs, n = {n} {draws:?}, λ = {lambda}"),
                &op,
                LgdLoss::SquaredResidual,
                lambda,
                &x,
                &y,
                &d,
            );
        }
    }
    // Nonlinear and non-Gaussian tasks.
    for task in ["phase-retrieval", "one-bit"] {
        let mut o = TaskOptions::new(task).unwrap();
        o.set("noise-sigma", if task == "one-bit" { 0.0 } else { 0.05 })
            .unwrap();
        let op = build_task(&o, [1, 4, 4]).unwrap();
        let xs: Vec<f64> = (0..16).map(|i| (i as f64 * 0.7).sin() * 0.6).collect();
        let xt = Tensor::from_vec(
            xs.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, 1, 4, 4),
            &Device::Cpu,
        )
        .unwrap();
        use rand::SeedableRng;
        let yt = op
            .simulate(&xt, &mut rand::rngs::StdRng::seed_from_u64(5))
            .unwrap();
        let yh = genprior_inverse::host::to_host(&yt.to_dtype(DType::F32).unwrap()).unwrap();
        let loss = LgdLoss::for_operator(op.as_ref());
        let x0: Vec<f64> = xs.iter().map(|v| v * 0.5 + 0.1).collect();
        let d = mc_draws(1, 0, 3, 5, 16, 0.1, LgdDraws::Gaussian);
        check_fd(task, op.as_ref(), loss, 0.05, &x0, &yh, &d);
    }
}

#[test]
fn gaussian_prior_bias_is_recorded() {
    // LGD-MC is DPS-like: not a posterior sampler. Its output moments on the CS problem are
    // printed against the exact posterior at a few settings.
    let s = schedule();
    let model = prior(&s);
    let (op, a, y, sigma) = cs_problem();
    let yt = y_tensor(&y);
    let n = 2000;
    // exact posterior
    let p: Mat = (0..4)
        .map(|i| {
            (0..4)
                .map(|j| {
                    let ata: f64 = a.iter().map(|r| r[i] * r[j]).sum();
                    ata / (sigma * sigma) + if i == j { 1.0 / VAR[i] } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let cov = inverse(&p);
    let rhs: Vec<f64> = (0..4)
        .map(|i| {
            a.iter().zip(&y).map(|(r, yk)| r[i] * yk).sum::<f64>() / (sigma * sigma)
                + MU[i] / VAR[i]
        })
        .collect();
    let pm = matvec(&cov, &rhs);
    for (zeta, lambda, mc) in [(30.0, 1e-3, 5), (10.0, 1e-2, 5), (10.0, 1e-2, 1)] {
        let cfg = lgd_cfg(&op, 200, zeta, lambda, mc, 0.05);
        let (x, _) = lgd_indexed(&model, &s, &op, &yt, n, &cfg, 3, 0, &mut |_, _| {}).unwrap();
        let (m, v, _) = moments(&x);
        assert!(m.iter().chain(&v).all(|q| q.is_finite()));
        let em = (0..4)
            .map(|i| (m[i] - pm[i]).abs() / cov[i][i].sqrt())
            .fold(0.0, f64::max);
        let ratios: Vec<String> = (0..4).map(|i| format!("{:.3}", v[i] / cov[i][i])).collect();
        eprintln!(
            "LGD-MC 200 steps, ζ {zeta}, λ {lambda}, n {mc}: max |mean error| {em:.3} posterior std, variance ratios [{}]",
            ratios.join(", ")
        );
    }
}

#[test]
fn options_defaults_and_warm_start() {
    let task = |name: &str| {
        let mut o = TaskOptions::new(name).unwrap();
        o.set("noise-sigma", if name == "one-bit" { 0.0 } else { 0.05 })
            .unwrap();
        build_task(&o, [1, 4, 4]).unwrap()
    };
    let st = |name: &str| {
        build_sampler("lgd", &MethodOptions::new(), task(name).as_ref())
            .unwrap()
            .settings()
    };
    let sr = st("sr2");
    assert_eq!(
        (sr["lgd_zeta"].as_f64(), sr["lgd_lambda"].as_f64()),
        (Some(30.0), Some(1e-3))
    );
    assert_eq!(sr["lgd_steps"], 1000);
    assert_eq!(sr["lgd_mc_samples"], 5);
    assert_eq!(sr["lgd_r"], 0.05);
    let pr = st("phase-retrieval");
    assert_eq!(pr["lgd_zeta"].as_f64(), Some(400.0));
    let ob = st("one-bit");
    assert_eq!(
        (ob["lgd_zeta"].as_f64(), ob["lgd_lambda"].as_f64()),
        (Some(500.0), Some(2e-5))
    );
    assert_eq!(ob["lgd_loss"], "NegLogLik");
    let bad = build_sampler(
        "lgd",
        &MethodOptions::new().with("lgd-lambda", 0.0),
        task("sr2").as_ref(),
    );
    assert!(bad.err().unwrap().to_string().contains("--lgd-lambda"));
    // DPnP with the LGD warm start: 500 steps by default, recorded; its NFE includes them.
    let op = task("sr2");
    let o = MethodOptions::new()
        .with("warm-start", "lgd")
        .with("outer-steps", 1usize)
        .with("pcs-steps", 3usize)
        .with("dds-steps", 2usize)
        .with("lgd-warm-steps", 7usize);
    let sampler = build_sampler("dpnp-ddim", &o, op.as_ref()).unwrap();
    let st = sampler.settings();
    assert_eq!(st["warm_start"], "lgd");
    assert_eq!(st["lgd_warm_steps"], 7);
    let default_steps = build_sampler(
        "dpnp-ddim",
        &MethodOptions::new().with("warm-start", "lgd"),
        op.as_ref(),
    )
    .unwrap()
    .settings()["lgd_warm_steps"]
        .clone();
    assert_eq!(default_steps, 500);
    let s = genprior_diffusion::Schedule::new(genprior_diffusion::SchedulerConfig {
        clip_sample: false,
        ..Default::default()
    })
    .unwrap();
    let model = genprior_diffusion::analytic::GaussianPrior::isotropic(
        0.0,
        0.3,
        [1, 4, 4],
        &s,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    use rand::SeedableRng;
    let y = op
        .simulate(&x, &mut rand::rngs::StdRng::seed_from_u64(2))
        .unwrap();
    let p = Problem {
        model: &model,
        schedule: &s,
        op: op.as_ref(),
        y: &y,
    };
    let out = sampler.sample(&p, &Chains::new(2, 1), &mut |_| {}).unwrap();
    assert!(out.backprop);
    assert!(out.nfe >= 7 + 2, "{}", out.nfe);
}
