//! DDS against the reference code and a closed form:
//! - the reference code's DDS-DDIM grid (`DdimGrid::reference`) against a transcription of its
//!   builder (`scripts/gen_dds_grid_fixture.py` → `tests/fixtures/dds_grid/reference_grid.json`):
//!   every (timestep, ᾱ') pair, and the 2,423 network evaluations of a default DPnP run;
//! - DDS-DDPM's first step from σ = η (`DdsMethod::Ddpm`) against the reference's start at the
//!   first usable integer level (`DdsMethod::DdpmReference`), on a Gaussian prior whose
//!   denoising posterior is known in closed form.

use std::path::Path;

use candle_core::{Device, Tensor};
use genprior_diffusion::analytic::GaussianPrior;
use genprior_diffusion::{Schedule, SchedulerConfig};
use genprior_posterior::{dds_nfe, dds_sample, DdimGrid, DdsMethod, EtaSchedule};
use serde_json::Value;

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/dds_grid/reference_grid.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_reference_grid_matches_the_transcribed_builder() {
    let s = Schedule::ddpm_default();
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    let mut saw_early_end = false;
    for c in cases {
        let eta = c["eta"].as_f64().unwrap();
        let ts: Vec<u64> = c["t"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let acs: Vec<f64> = c["alpha_cond"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        saw_early_end |= c["early_end"].as_bool().unwrap();
        let g = DdimGrid::reference(&s, eta).unwrap();
        assert_eq!(g.len(), ts.len(), "η = {eta}: grid size");
        // The fixture is in the reference's order (low noise first); the grid runs high noise
        // first.
        for (j, p) in g.points.iter().rev().enumerate() {
            assert_eq!(p.t, ts[j] as f64, "η = {eta}, point {j}: timestep");
            assert!(
                (p.alpha_cond / acs[j] - 1.0).abs() < 1e-12,
                "η = {eta}, point {j}: ᾱ' {} vs the reference's {}",
                p.alpha_cond,
                acs[j]
            );
            // The network is evaluated at the integer timestep's own level.
            let ab = s.alphas_cumprod()[ts[j] as usize];
            assert!((p.alpha_bar / ab - 1.0).abs() < 1e-6);
        }
    }
    assert!(
        saw_early_end,
        "the fixture should exercise the early-end branch"
    );
    // A default DPnP run (η schedule of configs/diffusion_config_pnp.yaml).
    let etas = EtaSchedule::default().etas().unwrap();
    let nfe: usize = etas
        .iter()
        .map(|&e| dds_nfe(&s, DdsMethod::DdimReference, e).unwrap())
        .sum();
    assert_eq!(nfe as u64, fx["reference_run_nfe"].as_u64().unwrap());
    assert_eq!(nfe, 2423);
    let refined: usize = etas
        .iter()
        .map(|&e| dds_nfe(&s, DdsMethod::Ddim, e).unwrap())
        .sum();
    assert_eq!(refined, 2823);
    eprintln!("default DPnP run: {nfe} NFE on the reference grid, {refined} on the refined grid");
}

/// The exact law of DDS-DDPM's output on a 1-D Gaussian prior N(μ, s²), given y: the update
/// is linear in x − μ (ε̂ = σ(x − μ)/(s² + σ²) in VE coordinates), so the output is
/// μ + A(y − μ) + noise of variance V. Returns (A, V) for the given σ levels (descending).
fn ddpm_law(levels: &[f64], s2: f64) -> (f64, f64) {
    let (mut a, mut v) = (1.0, 0.0);
    for (i, &s) in levels.iter().enumerate() {
        let sp = levels.get(i + 1).copied().unwrap_or(0.0);
        let k = 1.0 + 2.0 * (sp - s) * s / (s2 + s * s);
        a *= k;
        v *= k * k;
        if i + 1 < levels.len() {
            v += s * s - sp * sp;
        }
    }
    (a, v)
}

#[test]
fn ddpm_from_eta_removes_the_first_step_bias() {
    let s = Schedule::new(SchedulerConfig {
        clip_sample: false,
        ..SchedulerConfig::default()
    })
    .unwrap();
    // η = 0.12: the first usable integer level is well below η, the case the issue describes.
    let (eta, mu, s2, yv) = (0.12f64, 0.1f64, 1.0f64, 0.5f64);
    let (h, w, chains) = (8, 8, 1250);
    let n = h * w;
    let prior = GaussianPrior::new(vec![mu; n], vec![s2; n], [1, h, w], &s, &Device::Cpu).unwrap();
    let y = Tensor::full(yv as f32, (chains, 1, h, w), &Device::Cpu).unwrap();
    let e2 = eta * eta;
    let (mean_true, var_true) = ((s2 * yv + e2 * mu) / (s2 + e2), s2 * e2 / (s2 + e2));
    // σ levels as each variant walks them.
    let ab = s.alphas_cumprod();
    let integer: Vec<f64> = (0..ab.len())
        .rev()
        .filter(|&t| ab[t] > 1.0 / (1.0 + e2))
        .map(|t| (1.0 / ab[t] - 1.0).sqrt())
        .collect();
    let from_eta: Vec<f64> = std::iter::once(eta)
        .chain(integer.iter().copied())
        .collect();
    eprintln!(
        "η = {eta}: first integer level σ = {:.4} ({:.1} % of η²)",
        integer[0],
        100.0 * integer[0] * integer[0] / e2
    );
    let total = (chains * n) as f64;
    let se_var = (2.0 / (total - 1.0)).sqrt();
    let mut zs = Vec::new();
    for (method, levels, seed) in [
        (DdsMethod::Ddpm, &from_eta, 7u64),
        (DdsMethod::DdpmReference, &integer, 7u64),
    ] {
        let (x, nfe) = dds_sample(&prior, &s, method, &y, eta, seed).unwrap();
        assert_eq!(nfe, levels.len());
        let v: Vec<f64> = x
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = v.iter().sum::<f64>() / total;
        let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (total - 1.0);
        // The discretised chain's exact law: the sampler must match it (whatever its bias).
        let (a, vd) = ddpm_law(levels, s2);
        let mean_d = mu + a * (yv - mu);
        let z_mean = (m - mean_d).abs() / (vd / total).sqrt();
        let z_impl = (var / vd - 1.0).abs() / se_var;
        let z_true = (var / var_true - 1.0).abs() / se_var;
        eprintln!(
            "{method:?} ({nfe} NFE): mean {m:.5} (closed form {mean_true:.5}, chain's law {mean_d:.5}); \
             variance ratio to the posterior {:.4} ({z_true:.1} SE), to the chain's law {:.4} ({z_impl:.1} SE)",
            var / var_true,
            var / vd
        );
        assert!(
            z_mean < 4.0,
            "{method:?}: mean off its law by {z_mean:.1} SE"
        );
        assert!(
            z_impl < 4.0,
            "{method:?}: variance off its law by {z_impl:.1} SE"
        );
        assert!(
            (m - mean_true).abs() < 4.0 * (var_true / total).sqrt(),
            "{method:?}: mean {m} vs the posterior's {mean_true}"
        );
        zs.push(z_true);
    }
    // From σ = η the variance is the closed form's; from the first integer level (the
    // reference code's start) it falls short by ~4 %, many standard errors.
    assert!(
        zs[0] < 4.0,
        "from η: variance off the posterior by {:.1} SE",
        zs[0]
    );
    assert!(
        zs[1] > 4.0,
        "the reference start should show its bias ({:.1} SE)",
        zs[1]
    );
}
