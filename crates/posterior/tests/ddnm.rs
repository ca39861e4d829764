//! DDNM / DDNM⁺ on problems with a closed-form answer, with the Gaussian prior N(μ, diag(v))
//! whose ε is exact (`analytic::GaussianPrior`):
//! - a pathwise replay: [`ddnm_from_noise`] against an independent f64 implementation of the
//!   reference's update (DDNM for σ_y = 0, DDNM⁺ otherwise, time travel included) written on
//!   top of the operator's SVD (masks, FFT blur, box SR), same noise;
//! - the output law: with V = I (inpainting, denoising) and a diagonal prior every pixel's
//!   chain is a scalar linear-Gaussian recursion (time-travel jumps included), so the law of
//!   the output is Gaussian with a mean and variance computed here exactly; thousands of chains
//!   must match it (tolerances from the sample size);
//! - the bias against the exact posterior, printed. Noiseless DDNM returns y exactly on the
//!   observed pixels (asserted) and samples the prior elsewhere through DDIM, whose bias
//!   shrinks with the steps (asserted small at 100); DDNM⁺ is not a posterior sampler for
//!   noisy y and its bias is recorded (and held within a band).
//!
//! Sampling tolerances: with N chains an empirical mean has standard error sqrt(v/N) and an
//! empirical variance relative standard error sqrt(2/(N−1)); Z = 4 standard errors.

use candle_core::{Device, Tensor};
use genprior_diffusion::analytic::GaussianPrior;
use genprior_diffusion::Schedule;
use genprior_inverse::physics::{
    gaussian_kernel, Blur, Identity, Inpainting, SrKernel, SuperResolution,
};
use genprior_inverse::{build_task, Operator, TaskOptions};
use genprior_posterior::ddnm::{
    ddnm, ddnm_from_noise, ddnm_noise_draws, ddnm_time_pairs, DdnmConfig,
};
use genprior_posterior::{build_sampler, Chains, MethodOptions, MethodProgress, Problem};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

mod common;

use common::diagonal::{denoise, flat, half_mask, noise, prior_moments, randn, tensor};
use common::schedule;

const Z: f64 = 4.0;
const SHAPE: [usize; 3] = [1, 4, 4];
const SIGMA: f64 = 0.1;

fn alpha(s: &Schedule, t: i64) -> f64 {
    if t < 0 {
        1.0
    } else {
        s.alpha_bar(t as usize).unwrap()
    }
}

/// An independent f64 DDNM for one chain: the reference's `A_pinv`, `Lambda` and
/// `Lambda_noise` written with the operator's SVD, in the reference's image-space form.
#[allow(clippy::too_many_arguments)]
fn reference_path(
    op: &dyn Operator,
    sch: &Schedule,
    mu: &[f64],
    var: &[f64],
    cfg: &DdnmConfig,
    y: &[f64],
    z0: &[f64],
    zs: &[Vec<f64>],
) -> Vec<f64> {
    let svd = op.svd().unwrap();
    let s = svd.singular_values();
    let sy = op.temperature();
    let pairs = ddnm_time_pairs(sch.num_train_timesteps(), cfg).unwrap();
    let mut x = z0.to_vec();
    let mut x0_prev = Vec::new();
    let eta = cfg.eta;
    for (k, &(t, tn)) in pairs.iter().enumerate() {
        let abn = alpha(sch, tn);
        let (a, sig) = (abn.sqrt(), (1.0 - abn).sqrt());
        if tn > t {
            x = x0_prev
                .iter()
                .zip(&zs[k])
                .map(|(p, z): (&f64, &f64)| a * p + sig * z)
                .collect();
            continue;
        }
        let (x0, eps) = denoise(mu, var, &x, alpha(sch, t));
        // r = A⁺(A x̂₀ − y), Λ applied in the V basis.
        let ax: Vec<f64> = op.forward_host(&x0).unwrap();
        let res: Vec<f64> = ax.iter().zip(y).map(|(p, q)| p - q).collect();
        let r = svd.pinv(&res).unwrap();
        let mut vr = svd.v_adjoint(&r).unwrap();
        let ve = svd.v_adjoint(&eps).unwrap();
        let mut d1 = vec![sig * eta; s.len()];
        let mut d2 = vec![sig * (1.0 - eta * eta).sqrt(); s.len()];
        for i in 0..s.len() {
            if sy > 0.0 && s[i] > 0.0 {
                let nsr = a * sy / s[i];
                if sig < nsr {
                    vr[i] *= s[i] * sig * (1.0 - eta * eta).sqrt() / (a * sy);
                    d2[i] = 0.0;
                } else if sig > nsr {
                    d1[i] = (sig * sig - nsr * nsr).sqrt();
                    d2[i] = 0.0;
                }
            }
        }
        let corr = svd.v(&vr).unwrap();
        let last = k + 1 == pairs.len();
        let zb: Vec<f64> = (0..s.len())
            .map(|i| if last { 0.0 } else { d1[i] * zs[k][i] } + d2[i] * ve[i])
            .collect();
        let nz = svd.v(&zb).unwrap();
        x = (0..s.len())
            .map(|i| a * (x0[i] - corr[i]) + nz[i])
            .collect();
        x0_prev = x0;
    }
    x
}

#[test]
fn replayed_noise_matches_an_independent_implementation() {
    let s = schedule();
    let mk_inp = |sigma| -> Box<dyn Operator> {
        Box::new(
            Inpainting::from_mask("inpaint-mask", SHAPE, &half_mask(SHAPE), noise(sigma)).unwrap(),
        )
    };
    let ops: Vec<(Box<dyn Operator>, [usize; 3])> = vec![
        (mk_inp(SIGMA), SHAPE),
        (mk_inp(0.0), SHAPE),
        (
            Box::new(Identity::denoise([3, 4, 4], noise(0.05)).unwrap()),
            [3, 4, 4],
        ),
        (
            Box::new(
                Blur::new(
                    "deblur-gauss",
                    [1, 6, 5],
                    gaussian_kernel(3, 1.0).unwrap(),
                    noise(SIGMA),
                )
                .unwrap(),
            ),
            [1, 6, 5],
        ),
        (
            Box::new(SuperResolution::new([1, 4, 8], 2, SrKernel::Box, noise(0.0)).unwrap()),
            [1, 4, 8],
        ),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    for (op, shape) in &ops {
        let n: usize = shape.iter().product();
        let (mu, var) = prior_moments(n);
        let model = GaussianPrior::new(mu.clone(), var.clone(), *shape, &s, &Device::Cpu).unwrap();
        let xtrue = randn(n, &mut rng);
        let y = op.simulate_host(&xtrue, &mut rng).unwrap();
        let yt = {
            let mut d = vec![1];
            d.extend(op.measurement_shape());
            tensor(&y, &d)
        };
        for cfg in [
            DdnmConfig {
                steps: 20,
                ..DdnmConfig::default()
            },
            DdnmConfig {
                steps: 8,
                eta: 0.0,
                ..DdnmConfig::default()
            },
            DdnmConfig {
                steps: 10,
                eta: 1.0,
                travel_length: 2,
                travel_repeat: 3,
            },
        ] {
            let k = 2;
            let dims = [k, shape[0], shape[1], shape[2]];
            let draws = ddnm_noise_draws(&cfg);
            let z0 = randn(k * n, &mut rng);
            let zs: Vec<Vec<f64>> = (1..draws).map(|_| randn(k * n, &mut rng)).collect();
            let p = Problem {
                model: &model,
                schedule: &s,
                op: op.as_ref(),
                y: &yt,
            };
            let zs_t: Vec<Tensor> = zs.iter().map(|z| tensor(z, &dims)).collect();
            let got = flat(&ddnm_from_noise(&p, &cfg, &tensor(&z0, &dims), &zs_t).unwrap());
            let r = |v: &[f64]| v.iter().map(|&a| a as f32 as f64).collect::<Vec<_>>();
            for j in 0..k {
                // zs[i] is the noise of pair i + 1 in ddnm_from_noise; the reference indexes
                // by pair: pair 0 takes zs[0].
                let zj: Vec<Vec<f64>> = zs.iter().map(|z| r(&z[j * n..(j + 1) * n])).collect();
                let want = reference_path(
                    op.as_ref(),
                    &s,
                    &mu,
                    &var,
                    &cfg,
                    &y,
                    &r(&z0[j * n..(j + 1) * n]),
                    &zj,
                );
                let e = got[j * n..(j + 1) * n]
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(e < 2e-4, "{} {cfg:?} chain {j}: max error {e:e}", op.name());
            }
        }
    }
}

/// The exact law (mean, variance) of DDNM's output for one pixel with singular value `sv`
/// (0 or 1, V = I), diagonal prior N(μ, v), measurement `y`, likelihood σ `sy`.
fn output_law(
    sch: &Schedule,
    cfg: &DdnmConfig,
    mu: f64,
    v: f64,
    sv: f64,
    y: f64,
    sy: f64,
) -> (f64, f64) {
    let pairs = ddnm_time_pairs(sch.num_train_timesteps(), cfg).unwrap();
    let (mut m, mut p) = (0.0, 1.0);
    // The law of the last uncorrected x̂₀.
    let (mut m0, mut p0) = (0.0, 0.0);
    let eta = cfg.eta;
    let ce = (1.0 - eta * eta).sqrt();
    for &(t, tn) in &pairs {
        let abn = alpha(sch, tn);
        let (a, sig) = (abn.sqrt(), (1.0 - abn).sqrt());
        if tn > t {
            m = a * m0;
            p = a * a * p0 + sig * sig;
            continue;
        }
        let ab = alpha(sch, t);
        let g = ab.sqrt() * v / (ab * v + 1.0 - ab);
        let h = mu - g * ab.sqrt() * mu;
        let e1 = (1.0 - ab.sqrt() * g) / (1.0 - ab).sqrt();
        let e0 = -ab.sqrt() * h / (1.0 - ab).sqrt();
        m0 = g * m + h;
        p0 = g * g * p;
        let (lambda, d1, d2) = if sv == 0.0 {
            (0.0, sig * eta, sig * ce)
        } else if sy == 0.0 {
            (1.0, sig * eta, sig * ce)
        } else {
            let nsr = a * sy / sv;
            if sig < nsr {
                (sv * sig * ce / (a * sy), sig * eta, 0.0)
            } else if sig > nsr {
                (1.0, (sig * sig - nsr * nsr).sqrt(), 0.0)
            } else {
                (1.0, sig * eta, sig * ce)
            }
        };
        let ybar = if sv > 0.0 { y / sv } else { 0.0 };
        let a1 = a * (1.0 - lambda) * g + d2 * e1;
        let a0 = a * ((1.0 - lambda) * h + lambda * ybar) + d2 * e0;
        m = a1 * m + a0;
        p = a1 * a1 * p + d1 * d1;
    }
    (m, p)
}

#[test]
fn output_law_and_bias_against_the_exact_posterior() {
    let s = schedule();
    let n: usize = SHAPE.iter().product();
    let (mu, var) = prior_moments(n);
    let model = GaussianPrior::new(mu.clone(), var.clone(), SHAPE, &s, &Device::Cpu).unwrap();
    let chains = 4000;
    let cases: Vec<(Box<dyn Operator>, f64)> = vec![
        (
            Box::new(
                Inpainting::from_mask("inpaint-mask", SHAPE, &half_mask(SHAPE), noise(0.0))
                    .unwrap(),
            ),
            0.0,
        ),
        (
            Box::new(
                Inpainting::from_mask("inpaint-mask", SHAPE, &half_mask(SHAPE), noise(SIGMA))
                    .unwrap(),
            ),
            SIGMA,
        ),
        (
            Box::new(Identity::denoise(SHAPE, noise(SIGMA)).unwrap()),
            SIGMA,
        ),
    ];
    let mut rng = StdRng::seed_from_u64(9);
    for (op, sy) in &cases {
        let sy = *sy;
        let xtrue: Vec<f64> = (0..n)
            .map(|i| mu[i] + var[i].sqrt() * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let y = op.simulate_host(&xtrue, &mut rng).unwrap();
        let yt = tensor(&y, &[1, SHAPE[0], SHAPE[1], SHAPE[2]]);
        let sv = op.svd().unwrap().singular_values().to_vec();
        let post: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                if sv[i] == 0.0 {
                    (mu[i], var[i])
                } else if sy == 0.0 {
                    (y[i], 0.0)
                } else {
                    let pv = 1.0 / (1.0 / var[i] + 1.0 / (sy * sy));
                    (pv * (mu[i] / var[i] + y[i] / (sy * sy)), pv)
                }
            })
            .collect();
        for cfg in [
            DdnmConfig {
                steps: 20,
                ..DdnmConfig::default()
            },
            DdnmConfig::default(),
            DdnmConfig {
                steps: 20,
                eta: 0.0,
                ..DdnmConfig::default()
            },
            DdnmConfig {
                steps: 100,
                eta: 0.0,
                ..DdnmConfig::default()
            },
            DdnmConfig {
                steps: 20,
                travel_length: 2,
                travel_repeat: 3,
                ..DdnmConfig::default()
            },
        ] {
            let p = Problem {
                model: &model,
                schedule: &s,
                op: op.as_ref(),
                y: &yt,
            };
            let mut events = 0;
            let (x, nfe) = ddnm(&p, &Chains::new(chains, 3), &cfg, &mut |e| {
                if let MethodProgress::Step { .. } = e {
                    events += 1
                }
            })
            .unwrap();
            assert_eq!((nfe, events), (cfg.nfe(), cfg.nfe()));
            let v = flat(&x);
            let (mut worst_mean, mut worst_var) = (0.0f64, 0.0f64);
            let (mut bias_mean, mut bias_var) = (0.0f64, 0.0f64);
            for i in 0..n {
                let xs: Vec<f64> = (0..chains).map(|j| v[j * n + i]).collect();
                let m = xs.iter().sum::<f64>() / chains as f64;
                let var_e = xs.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (chains - 1) as f64;
                let (lm, lv) = output_law(&s, &cfg, mu[i], var[i], sv[i], y[i], sy);
                let (pm, pv) = post[i];
                if lv < 1e-12 {
                    // Noiseless observed pixel: y exactly (f32).
                    assert!(
                        (m - y[i]).abs() < 1e-5 && var_e < 1e-10,
                        "{} pixel {i}: {m} vs y {}",
                        op.name(),
                        y[i]
                    );
                    assert!((lm - pm).abs() < 1e-12);
                    continue;
                }
                let se = (lv / chains as f64).sqrt();
                assert!(
                    (m - lm).abs() < Z * se + 1e-4,
                    "{} {cfg:?} pixel {i}: mean {m} vs law {lm}",
                    op.name()
                );
                let rel = Z * (2.0 / (chains - 1) as f64).sqrt();
                assert!(
                    (var_e / lv - 1.0).abs() < rel + 1e-3,
                    "{} {cfg:?} pixel {i}: var {var_e} vs law {lv}",
                    op.name()
                );
                worst_mean = worst_mean.max((m - lm).abs() / se);
                worst_var = worst_var.max((var_e / lv - 1.0).abs());
                bias_mean = bias_mean.max((lm - pm).abs() / pv.sqrt());
                bias_var = bias_var.max((lv / pv - 1.0).abs());
            }
            println!(
                "ddnm {:<12} σ_y {sy:.2} steps {:>3} η {:.2} L {} r {} (NFE {}): sampled vs own law: mean ≤ {worst_mean:.2} se, \
                 var ≤ {:.1}%; own law vs exact posterior: |mean bias| ≤ {bias_mean:.3} posterior sd, |var ratio − 1| ≤ {:.1}%",
                op.name(),
                cfg.steps,
                cfg.eta,
                cfg.travel_length,
                cfg.travel_repeat,
                cfg.nfe(),
                100.0 * worst_var,
                100.0 * bias_var
            );
            if sy == 0.0 && cfg.eta == 0.0 && cfg.steps == 100 {
                // Noiseless DDNM with η = 0: y on the range, the DDIM ODE on the null space,
                // consistent in the steps: its exact law's variance error falls from 100 to
                // 1000 steps to under 1% (the law alone, no sampling).
                let law_bias = |steps: usize| {
                    let c = DdnmConfig {
                        steps,
                        ..cfg.clone()
                    };
                    (0..n)
                        .filter(|&i| sv[i] == 0.0)
                        .map(|i| {
                            let (_, lv) = output_law(&s, &c, mu[i], var[i], 0.0, 0.0, 0.0);
                            (lv / var[i] - 1.0).abs()
                        })
                        .fold(0.0, f64::max)
                };
                let (b100, b1000) = (law_bias(100), law_bias(1000));
                println!("ddnm noiseless η 0: null-space variance error {:.2}% at 100 steps, {:.2}% at 1000", 100.0 * b100, 100.0 * b1000);
                assert!(b1000 < 0.01 && b1000 < b100 / 4.0, "{b100} {b1000}");
            }
            assert!(bias_mean < 1.0 && bias_var < 1.0, "{} {cfg:?}", op.name());
        }
    }
}

#[test]
fn operators_without_an_svd_are_clear_errors() {
    for task in ["phase-retrieval", "one-bit", "ct"] {
        let mut o = TaskOptions::new(task).unwrap();
        if task == "one-bit" {
            o.set("noise-sigma", 0.0).unwrap();
        }
        let op = build_task(&o, [1, 8, 8]).unwrap();
        let e = match build_sampler("ddnm", &MethodOptions::new(), op.as_ref()) {
            Ok(_) => panic!("ddnm accepted {task}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("ddnm") && e.contains(task) && e.contains("SVD"),
            "{e}"
        );
    }
    let op = Identity::denoise(SHAPE, noise(SIGMA)).unwrap();
    for (name, v) in [
        ("ddnm-eta", MethodOptions::new().with("ddnm-eta", 1.5)),
        (
            "ddnm-steps",
            MethodOptions::new().with("ddnm-steps", 0usize),
        ),
        (
            "ddnm-travel-repeat",
            MethodOptions::new().with("ddnm-travel-repeat", 0usize),
        ),
    ] {
        let e = build_sampler("ddnm", &v, &op).err().unwrap().to_string();
        assert!(e.contains(name), "{e}");
    }
}
