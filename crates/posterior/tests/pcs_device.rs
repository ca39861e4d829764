//! The device PCS loop against the host loop, chain for chain: with the same seeds, the device
//! loop in f64 on the CPU backend follows the host loop to round-off (MALA, ULA and the exact
//! sampler, every task with a device form), and in f32 stays within f32 round-off over a short
//! run. The statistical checks of the device loop in f32 are in `pcs.rs` (`*_on_the_device_in_f32`).

use candle_core::{DType, Device, Tensor};
use genprior_inverse::{build_task, Operator, OptionValue, TaskOptions};
use genprior_posterior::device_operator;
use genprior_posterior::pcs::{pcs_seeded, PcsBackend, PcsConfig, PcsMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn set(o: &mut TaskOptions, k: &str, v: &str) {
    let spec = *o.spec(k).unwrap();
    let val: OptionValue = spec.kind.parse_scalar(k, v).unwrap();
    o.set(k, val).unwrap();
}

fn op(task: &str, shape: [usize; 3], extra: &[(&str, &str)]) -> Box<dyn Operator> {
    let mut o = TaskOptions::new(task).unwrap();
    for (k, v) in extra {
        set(&mut o, k, v);
    }
    build_task(&o, shape).unwrap()
}

/// The tasks the parity checks run: every forward-map family and both noise models with a
/// device likelihood.
fn operators() -> Vec<Box<dyn Operator>> {
    vec![
        op("denoise", [1, 8, 8], &[]),
        op("inpaint-random", [2, 8, 8], &[]),
        op("sr2", [1, 8, 8], &[]),
        op("deblur-motion", [1, 9, 8], &[("kernel-size", "5")]),
        op("cs", [1, 6, 6], &[("cs-ratio", "0.5")]),
        op("ct", [1, 8, 8], &[("angles", "6")]),
        op("mri", [1, 8, 8], &[]),
        op("mri-multicoil", [2, 8, 8], &[("coils", "2")]),
        op("phase-retrieval", [1, 8, 8], &[]),
        op("one-bit", [1, 8, 8], &[]),
    ]
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// (samples, acceptance) of one PCS call with `backend`, 3 chains against one measurement.
fn run(
    op: &dyn Operator,
    cfg: &PcsConfig,
    backend: PcsBackend,
    dtype: Option<DType>,
) -> (Vec<f64>, Vec<f64>) {
    let [c, h, w] = op.image_shape();
    let n = op.image_len();
    let b = 3;
    let mut r = StdRng::seed_from_u64(7);
    let truth: Vec<f64> = (0..n).map(|_| r.random_range(-0.8..0.8)).collect();
    let truth = Tensor::from_vec(truth, (1, c, h, w), &Device::Cpu).unwrap();
    let y = op.simulate(&truth, &mut StdRng::seed_from_u64(8)).unwrap();
    let x0: Vec<f64> = (0..b * n).map(|_| r.random_range(-1.0..1.0)).collect();
    let x0 = Tensor::from_vec(x0, (b, c, h, w), &Device::Cpu).unwrap();
    let cfg = PcsConfig {
        backend,
        device_dtype: dtype,
        ..cfg.clone()
    };
    let out = pcs_seeded(op, &y, &x0, 0.3, &cfg, &[11, 12, 13]).unwrap();
    assert_eq!(out.samples.dims(), x0.dims());
    assert_eq!(out.samples.dtype(), x0.dtype());
    (host(&out.samples), out.acceptance)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max)
}

fn langevin(method: PcsMethod) -> PcsConfig {
    PcsConfig {
        method,
        steps: 60,
        scale: 1.0,
        reg: 1.0,
        ..PcsConfig::default()
    }
}

#[test]
fn device_langevin_in_f64_follows_the_host_chain_for_chain() {
    for op in operators() {
        for method in [PcsMethod::Mala, PcsMethod::Ula] {
            let cfg = langevin(method);
            let (hs, ha) = run(op.as_ref(), &cfg, PcsBackend::Host, None);
            let (ds, da) = run(op.as_ref(), &cfg, PcsBackend::Device, Some(DType::F64));
            let d = max_diff(&hs, &ds);
            eprintln!(
                "{} {method:?}: max |device − host| = {d:e}, acceptance {ha:?}",
                op.name()
            );
            assert!(
                d < 1e-9,
                "{} {method:?}: device and host chains differ by {d:e}",
                op.name()
            );
            assert_eq!(ha, da, "{} {method:?}: acceptance", op.name());
            if method == PcsMethod::Mala {
                // The test would pass vacuously if every proposal were rejected.
                assert!(ha.iter().any(|&a| a > 0.0 && a < 1.0) || ha.iter().all(|&a| a > 0.0));
            }
        }
    }
}

#[test]
fn device_langevin_in_f32_stays_within_f32_round_off_of_the_host() {
    for op in operators() {
        let cfg = PcsConfig {
            steps: 10,
            ..langevin(PcsMethod::Ula)
        };
        let (hs, _) = run(op.as_ref(), &cfg, PcsBackend::Host, None);
        let cfg = PcsConfig {
            host_fft_on_cpu: false,
            ..cfg
        };
        let (ds, _) = run(op.as_ref(), &cfg, PcsBackend::Device, Some(DType::F32));
        let d = max_diff(&hs, &ds);
        assert!(d < 1e-3, "{}: f32 device vs host {d:e}", op.name());
    }
}

#[test]
fn device_exact_sampler_matches_the_host() {
    for op in operators() {
        if !op.is_linear_gaussian() {
            continue;
        }
        let cfg = PcsConfig {
            method: PcsMethod::Exact,
            ..PcsConfig::default()
        };
        let (hs, _) = run(op.as_ref(), &cfg, PcsBackend::Host, None);
        let tensor_form = PcsConfig {
            host_fft_on_cpu: false,
            ..cfg.clone()
        };
        let (ds, _) = run(
            op.as_ref(),
            &tensor_form,
            PcsBackend::Device,
            Some(DType::F64),
        );
        let d = max_diff(&hs, &ds);
        eprintln!("{} exact: max |device − host| = {d:e}", op.name());
        assert!(d < 1e-7, "{} exact: device vs host {d:e}", op.name());
        let (fs, _) = run(
            op.as_ref(),
            &tensor_form,
            PcsBackend::Device,
            Some(DType::F32),
        );
        let d = max_diff(&hs, &fs);
        assert!(d < 1e-3, "{} exact f32: device vs host {d:e}", op.name());
    }
}

#[test]
fn backend_selection_and_its_errors() {
    let den = op("denoise", [1, 4, 4], &[]);
    let ys = vec![0.0; den.measurement_len()];
    let pick = |op: &dyn Operator, backend: PcsBackend| {
        device_operator(op, &ys, 1, &Device::Cpu, backend, None, true).map(|d| d.map(|d| d.dtype()))
    };
    // auto and host keep the host loop on the CPU; device forces the device loop (f64 on
    // the CPU).
    assert_eq!(pick(den.as_ref(), PcsBackend::Auto).unwrap(), None);
    assert_eq!(pick(den.as_ref(), PcsBackend::Host).unwrap(), None);
    assert_eq!(
        pick(den.as_ref(), PcsBackend::Device).unwrap(),
        Some(DType::F64)
    );
    // Photon noise has no device likelihood: forcing the device loop is a clear error.
    let poisson = op("denoise", [1, 4, 4], &[("noise", "poisson")]);
    let err = pick(poisson.as_ref(), PcsBackend::Device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no device form") && err.contains("--pcs-backend host"),
        "{err}"
    );
    assert!("gpu".parse::<PcsBackend>().is_err());
}

#[test]
fn device_loop_with_a_fixed_step_and_a_weight_follows_the_host() {
    // DAPS's use of PCS: a fixed Langevin step h and a likelihood weight β.
    use genprior_posterior::pcs::pcs_seeded_tempered;
    for op in operators() {
        let [c, h, w] = op.image_shape();
        let n = op.image_len();
        let mut r = StdRng::seed_from_u64(3);
        let truth: Vec<f64> = (0..n).map(|_| r.random_range(-0.8..0.8)).collect();
        let truth = Tensor::from_vec(truth, (1, c, h, w), &Device::Cpu).unwrap();
        let y = op.simulate(&truth, &mut StdRng::seed_from_u64(4)).unwrap();
        let x0: Vec<f64> = (0..2 * n).map(|_| r.random_range(-1.0..1.0)).collect();
        let x0 = Tensor::from_vec(x0, (2, c, h, w), &Device::Cpu).unwrap();
        let mut out = Vec::new();
        for backend in [PcsBackend::Host, PcsBackend::Device] {
            let cfg = PcsConfig {
                backend,
                host_fft_on_cpu: false,
                ..langevin(PcsMethod::Mala)
            };
            let o = pcs_seeded_tempered(op.as_ref(), &y, &x0, 0.4, &cfg, Some(1e-3), 0.7, &[5, 6])
                .unwrap();
            out.push((host(&o.samples), o.acceptance));
        }
        let d = max_diff(&out[0].0, &out[1].0);
        assert!(d < 1e-9, "{}: fixed-step device vs host {d:e}", op.name());
        assert_eq!(out[0].1, out[1].1, "{}: acceptance", op.name());
    }
}
