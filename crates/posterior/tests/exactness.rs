//! Exactness of DDS, DPnP (and a record of DPS's error) on a problem with a closed-form
//! answer: a Gaussian prior N(μ, diag(s²)) with unequal variances, whose ε-model is exact
//! (`analytic::GaussianPrior`), and linear measurements with Gaussian noise.
//!
//! Tolerances come from the sample size alone: with N independent chains, an empirical mean
//! has standard error sqrt(v/N) and an empirical variance of a Gaussian coordinate has
//! relative standard error sqrt(2/(N−1)); every check allows Z = 4 standard errors (a false
//! failure probability of 6e-5 per check). The configurations tested are those whose
//! discretisation error is known (measured, and in the spec) to lie well below that.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use genprior_diffusion::BatchNoise;
use genprior_posterior::{
    dds_sample, dpnp, dps, DdsMethod, DpnpConfig, DpsConfig, DpsMisfit, EtaSchedule, PcsBackend,
    PcsConfig, PcsMethod, WarmStart,
};

/// Worst |mean error| in standard errors and worst |variance ratio − 1| in relative SEs.
fn errors(x: &Tensor, mean: &[f64], var: &[f64]) -> (f64, f64, Vec<f64>) {
    let (m, v, n) = moments(x);
    let se_var = (2.0 / (n - 1) as f64).sqrt();
    let mut zm: f64 = 0.0;
    let mut zv: f64 = 0.0;
    let mut ratios = Vec::new();
    for j in 0..mean.len() {
        zm = zm.max((m[j] - mean[j]).abs() / (var[j] / n as f64).sqrt());
        let r = v[j] / var[j];
        ratios.push(r);
        zv = zv.max((r - 1.0).abs() / se_var);
    }
    (zm, zv, ratios)
}

fn check(label: &str, x: &Tensor, mean: &[f64], var: &[f64]) {
    let (zm, zv, ratios) = errors(x, mean, var);
    eprintln!("{label}: worst mean error {zm:.2} SE, worst variance error {zv:.2} SE, variance ratios {ratios:.3?}");
    assert!(
        zm <= Z,
        "{label}: mean off by {zm:.2} standard errors (allowed {Z})"
    );
    assert!(
        zv <= Z,
        "{label}: variance off by {zv:.2} standard errors (allowed {Z}); ratios {ratios:?}"
    );
}

fn batch_of(v: &[f64], n: usize) -> Tensor {
    let one: Vec<f32> = v.iter().map(|&a| a as f32).collect();
    Tensor::from_vec(one, (1, 1, 2, 2), &Device::Cpu)
        .unwrap()
        .broadcast_as((n, 1, 2, 2))
        .unwrap()
        .contiguous()
        .unwrap()
}

// ------------------------------------------------------------------- small dense algebra

/// The Gaussian law ∝ N(x; μ, diag(VAR)) · N(y; Ax, σ²I + η²AAᵀ): (mean, per-coordinate
/// variance). η = 0 is the posterior; η > 0 is DPnP's stationary law π_η.
fn pi_eta(a: &Mat, y: &[f64], sigma: f64, eta: f64) -> (Vec<f64>, Vec<f64>) {
    let (m, n) = (a.len(), a[0].len());
    let c: Mat = (0..m)
        .map(|i| {
            (0..m)
                .map(|j| {
                    let aat: f64 = (0..n).map(|k| a[i][k] * a[j][k]).sum();
                    eta * eta * aat + if i == j { sigma * sigma } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let ci = inverse(&c);
    // P = Σ⁻¹ + Aᵀ C⁻¹ A
    let p: Mat = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    let mut s = if i == j { 1.0 / VAR[i] } else { 0.0 };
                    for k in 0..m {
                        for l in 0..m {
                            s += a[k][i] * ci[k][l] * a[l][j];
                        }
                    }
                    s
                })
                .collect()
        })
        .collect();
    let cov = inverse(&p);
    let ciy = matvec(&ci, y);
    let rhs: Vec<f64> = (0..n)
        .map(|i| MU[i] / VAR[i] + (0..m).map(|k| a[k][i] * ciy[k]).sum::<f64>())
        .collect();
    (matvec(&cov, &rhs), (0..n).map(|i| cov[i][i]).collect())
}

fn prior_samples(n: usize, seed: u64) -> Tensor {
    let z = BatchNoise::new(seed, 0, n)
        .draw(&SHAPE, &Device::Cpu)
        .unwrap();
    let sd: Vec<f64> = VAR.iter().map(|v| v.sqrt()).collect();
    let sd = batch_of(&sd, 1);
    let mu = batch_of(&MU, 1);
    z.broadcast_mul(&sd).unwrap().broadcast_add(&mu).unwrap()
}

// ---------------------------------------------------------------------------- tests

#[test]
fn dds_samples_the_denoising_posterior() {
    let s = schedule();
    let model = prior(&s);
    let y = [0.5, -0.4, 0.2, 0.9];
    let n = 20_000;
    let yb = batch_of(&y, n);
    // DDS-DDPM at η = 0.1 has only 27 integer steps (plus its first, fractional step from
    // σ = η) and a variance deficit from those coarse levels (the spec measured ~6 % when
    // starting at the first integer level, as the reference does; the start from η removes
    // ~3.5 points of it, see tests/dds_grid.rs): it is printed, not asserted.
    let cases = [
        (DdsMethod::Ddim, 0.1, true),
        (DdsMethod::Ddim, 0.4, true),
        (DdsMethod::Ddim, 0.8, true),
        (DdsMethod::Ddpm, 0.1, false),
        (DdsMethod::Ddpm, 0.4, true),
        (DdsMethod::Ddpm, 0.8, true),
    ];
    for (i, (method, eta, assert)) in cases.into_iter().enumerate() {
        let (x, nfe) = dds_sample(&model, &s, method, &yb, eta, 100 + i as u64).unwrap();
        let e2 = eta * eta;
        let mean: Vec<f64> = (0..4)
            .map(|j| (VAR[j] * y[j] + e2 * MU[j]) / (VAR[j] + e2))
            .collect();
        let var: Vec<f64> = (0..4).map(|j| VAR[j] * e2 / (VAR[j] + e2)).collect();
        let label = format!("DDS-{method:?} η = {eta} ({nfe} NFE)");
        if assert {
            check(&label, &x, &mean, &var);
        } else {
            let (zm, zv, r) = errors(&x, &mean, &var);
            eprintln!("{label} [recorded only]: mean error {zm:.2} SE, variance error {zv:.2} SE, ratios {r:.3?}");
        }
    }
}

#[test]
fn dpnp_constant_eta_matches_stationary_law() {
    let s = schedule();
    let model = prior(&s);
    let (op, a, y, sigma) = cs_problem();
    let yt = y_tensor(&y);
    let eta = 0.5;
    let (mean, var) = pi_eta(&a, &y, sigma, eta);
    // Exact PCS + DDS-DDIM, 10,000 chains from the prior, 12 outer steps.
    let n = 10_000;
    let cfg = DpnpConfig {
        etas: EtaSchedule::Constant { eta, steps: 12 },
        dds: DdsMethod::Ddim,
        dds_steps: None,
        pcs: PcsConfig {
            method: PcsMethod::Exact,
            ..PcsConfig::default()
        },
        warm_start: WarmStart::Given(prior_samples(n, 1)),
        samples: n,
        seed: 7,
        first_index: 0,
    };
    let out = dpnp(&model, &s, &op, &yt, &cfg, &mut |_| {}).unwrap();
    check(
        &format!("DPnP exact-PCS/DDIM η = {eta}, 12 steps ({} NFE)", out.nfe),
        &out.samples,
        &mean,
        &var,
    );
    // Reproducible from the seed.
    let cfg_small = DpnpConfig {
        samples: 8,
        warm_start: WarmStart::Noise,
        etas: EtaSchedule::Constant { eta, steps: 2 },
        ..cfg.clone()
    };
    let a1 = dpnp(&model, &s, &op, &yt, &cfg_small, &mut |_| {})
        .unwrap()
        .samples;
    let a2 = dpnp(&model, &s, &op, &yt, &cfg_small, &mut |_| {})
        .unwrap()
        .samples;
    // (This compared `to_vec3()` of rank-4 tensors, i.e. `None == None`.)
    assert_eq!(a1.dims(), a2.dims());
    assert_eq!(a1.dim(0).unwrap(), 8);
    assert_eq!(
        a1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        a2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    // Exact PCS + DDS-DDPM, 10,000 chains.
    let cfg = DpnpConfig {
        dds: DdsMethod::Ddpm,
        dds_steps: None,
        seed: 8,
        ..cfg
    };
    let out = dpnp(&model, &s, &op, &yt, &cfg, &mut |_| {}).unwrap();
    check(
        &format!("DPnP exact-PCS/DDPM η = {eta}, 12 steps ({} NFE)", out.nfe),
        &out.samples,
        &mean,
        &var,
    );

    // MALA PCS (100 steps; step scale 50, i.e. h = 50·min(m², γ²)/(50 + ‖y − Ax‖), so that
    // the Langevin chain mixes within a call) + DDS-DDIM, 3,000 chains; acceptance reported.
    let n = 3_000;
    let cfg = DpnpConfig {
        etas: EtaSchedule::Constant { eta, steps: 12 },
        dds: DdsMethod::Ddim,
        dds_steps: None,
        pcs: PcsConfig {
            method: PcsMethod::Mala,
            steps: 100,
            scale: 50.0,
            ..PcsConfig::default()
        },
        warm_start: WarmStart::Given(prior_samples(n, 2)),
        samples: n,
        seed: 9,
        first_index: 0,
    };
    let mut events = 0usize;
    let out = dpnp(&model, &s, &op, &yt, &cfg, &mut |e| {
        if let genprior_posterior::Progress::Outer(_) = e {
            events += 1
        }
    })
    .unwrap();
    assert_eq!(events, 12);
    let acc = out.mean_acceptance();
    assert!(acc > 0.0 && acc <= 1.0);
    check(
        &format!("DPnP MALA-PCS/DDIM η = {eta}, 12 steps, acceptance {acc:.3}"),
        &out.samples,
        &mean,
        &var,
    );
}

#[test]
fn dpnp_annealed_reaches_pi_eta_min_and_dps_error_is_recorded() {
    let s = schedule();
    let model = prior(&s);
    let (op, a, y, sigma) = cs_problem();
    let yt = y_tensor(&y);
    let (eta_max, eta_min) = (0.5, 0.2);
    // The reference annealing (4 × η_max, then 12 geometric to η_min), then 24 more steps at
    // η_min (the chain mixes slowly at small η; see the spec).
    let mut etas = EtaSchedule::Annealed {
        eta_max,
        eta_min,
        k_start: 4,
        k: 12,
    }
    .etas()
    .unwrap();
    etas.extend(std::iter::repeat_n(eta_min, 24));
    let n = 5_000;
    let cfg = DpnpConfig {
        etas: EtaSchedule::Custom(etas),
        dds: DdsMethod::Ddim,
        dds_steps: None,
        pcs: PcsConfig {
            method: PcsMethod::Exact,
            ..PcsConfig::default()
        },
        warm_start: WarmStart::Given(prior_samples(n, 3)),
        samples: n,
        seed: 11,
        first_index: 0,
    };
    let out = dpnp(&model, &s, &op, &yt, &cfg, &mut |_| {}).unwrap();
    let (mean, var) = pi_eta(&a, &y, sigma, eta_min);
    check(
        &format!("DPnP annealed {eta_max}→{eta_min} ({} NFE)", out.nfe),
        &out.samples,
        &mean,
        &var,
    );
    // Closer to the true posterior than the start was.
    let (pm, pv) = pi_eta(&a, &y, sigma, 0.0);
    let (m_end, _, _) = moments(&out.samples);
    let (m_start, _, _) = moments(&out.init);
    let dist = |m: &[f64]| {
        m.iter()
            .zip(&pm)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    eprintln!(
        "posterior mean distance: start {:.4}, end {:.4}; π_η_min vs posterior {:.4}",
        dist(&m_start),
        dist(&m_end),
        dist(&mean)
    );
    assert!(dist(&m_end) < dist(&m_start));

    // DPS on the same problem: recorded, not asserted (DPS is not a posterior sampler).
    let k = 1_000;
    let dcfg = DpsConfig {
        steps: 1000,
        zeta: 0.3,
        misfit: DpsMisfit::Norm,
        temperature: 1.0,
        backend: PcsBackend::Auto,
    };
    let d = dps(&model, &s, &op, &yt, k, &dcfg, 5, &mut |_, _| {}).unwrap();
    let (zm, zv, r) = errors(&d.samples, &pm, &pv);
    let (dm, _, _) = moments(&d.samples);
    eprintln!(
        "DPS (ζ = 0.3, 1000 steps, {k} samples) vs the posterior: mean distance {:.4}, worst mean error {zm:.1} SE, \
         worst variance error {zv:.1} SE, variance ratios {r:.3?}",
        dist(&dm)
    );
    assert_eq!(d.nfe, 1000);
    assert!(d
        .samples
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn dds_with_a_step_budget_stays_close_to_the_denoising_posterior() {
    use genprior_posterior::{dds_nfe, dds_nfe_with_budget, dds_with_budget, Denoiser};
    let s = schedule();
    let model = prior(&s);
    let y = [0.5, -0.4, 0.2, 0.9];
    let n = 20_000;
    let yb = batch_of(&y, n);
    let eta = 0.4;
    let e2 = eta * eta;
    let mean: Vec<f64> = (0..4)
        .map(|j| (VAR[j] * y[j] + e2 * MU[j]) / (VAR[j] + e2))
        .collect();
    let var: Vec<f64> = (0..4).map(|j| VAR[j] * e2 / (VAR[j] + e2)).collect();
    for method in [DdsMethod::Ddim, DdsMethod::Ddpm] {
        let full = dds_nfe(&s, method, eta).unwrap();
        // A budget at least the full step count is the full sampler, bit for bit.
        let small = batch_of(&y, 16);
        let run = |budget: Option<usize>, yb: &Tensor| {
            let mut den = Denoiser::new(&model, &s);
            let mut noise = BatchNoise::new(5, 0, yb.dim(0).unwrap());
            let x = dds_with_budget(
                &mut den,
                method,
                yb,
                eta,
                budget,
                &mut noise,
                &mut |_, _| {},
            )
            .unwrap();
            (x, den.nfe())
        };
        let (a, _) = run(None, &small);
        let (b, nb) = run(Some(full + 5), &small);
        assert_eq!(nb, full);
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // 25 steps instead of ~200: the law stays close (discretisation error allowed on
        // top of the sampling error: means within Z SE + 0.02, variances within 10 %).
        let (x, nfe) = run(Some(25), &yb);
        assert_eq!(nfe, 25);
        assert_eq!(dds_nfe_with_budget(&s, method, eta, Some(25)).unwrap(), 25);
        let (m, v, cnt) = moments(&x);
        for j in 0..4 {
            let se = (var[j] / cnt as f64).sqrt();
            eprintln!(
                "DDS-{method:?} η = {eta}, 25 of {full} steps: coord {j} mean {:.4} (exact {:.4}), variance ratio {:.3}",
                m[j],
                mean[j],
                v[j] / var[j]
            );
            assert!(
                (m[j] - mean[j]).abs() <= Z * se + 0.02,
                "{method:?} mean {j}"
            );
            assert!(
                (v[j] / var[j] - 1.0).abs() <= 0.10,
                "{method:?} variance {j}"
            );
        }
    }
    assert!(dds_nfe_with_budget(&s, DdsMethod::Ddim, eta, Some(0)).is_err());
}

#[test]
fn dpnp_with_the_device_pcs_loop_equals_the_host_loop() {
    // A whole DPnP run (MALA PCS, DDS-DDIM) with PCS on the device (f64 on the CPU backend)
    // against the host loop, same seeds: the chains are the same to round-off.
    let s = schedule();
    let model = prior(&s);
    let (op, _, y, _) = cs_problem();
    let yt = y_tensor(&y);
    let run = |backend: PcsBackend| -> Vec<f32> {
        let cfg = DpnpConfig {
            etas: EtaSchedule::Constant { eta: 0.5, steps: 3 },
            dds: DdsMethod::Ddim,
            dds_steps: None,
            pcs: PcsConfig {
                method: PcsMethod::Mala,
                steps: 50,
                backend,
                ..PcsConfig::default()
            },
            warm_start: WarmStart::Noise,
            samples: 6,
            seed: 3,
            first_index: 0,
        };
        dpnp(&model, &s, &op, &yt, &cfg, &mut |_| {})
            .unwrap()
            .samples
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (h, d) = (run(PcsBackend::Host), run(PcsBackend::Device));
    let diff = h
        .iter()
        .zip(&d)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "device vs host DPnP: max difference {diff}");
}

#[test]
fn dps_with_the_device_likelihood_equals_the_host_one() {
    // DPS's likelihood gradient through the operator's device form (f64 on the CPU backend)
    // against the host operator, same seed: the same chains to f32 round-off.
    let s = schedule();
    let model = prior(&s);
    let (op, _, y, _) = cs_problem();
    let yt = y_tensor(&y);
    let run = |backend: PcsBackend, misfit: DpsMisfit| -> Vec<f32> {
        let cfg = DpsConfig {
            steps: 30,
            zeta: 0.3,
            misfit,
            temperature: 1.0,
            backend,
        };
        dps(&model, &s, &op, &yt, 4, &cfg, 9, &mut |_, _| {})
            .unwrap()
            .samples
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    for misfit in [DpsMisfit::Norm, DpsMisfit::NegLogLik] {
        let (h, d) = (
            run(PcsBackend::Host, misfit),
            run(PcsBackend::Device, misfit),
        );
        let diff = h
            .iter()
            .zip(&d)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "{misfit:?}: device vs host DPS {diff}");
    }
}
