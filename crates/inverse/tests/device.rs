//! Device-path operators ([`genprior_inverse::device`]) against the host f64 operators, on
//! the CPU backend in f64 (to round-off) and f32 (to f32 round-off): forward maps,
//! vector–Jacobian products, likelihoods and their gradients, shifted-Gram solves, for every
//! task of the registry, odd sizes, and every MRI variant.

use candle_core::{DType, Device, Tensor};
use genprior_inverse::device::DeviceOperator;
use genprior_inverse::{
    build_task, task_names, Operator, OptionDefault, OptionType, OptionValue, TaskOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rand_vec(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn set(o: &mut TaskOptions, k: &str, v: &str) {
    let spec = *o.spec(k).unwrap();
    let val = spec.kind.parse_scalar(k, v).unwrap();
    o.set(k, val).unwrap();
}

/// A task's options at test settings (σ 0.1 where the task has noise, a random mask for every
/// required image option); `None` when the task does not take this shape.
fn build(task: &str, shape: [usize; 3], extra: &[(&str, &str)]) -> Option<Box<dyn Operator>> {
    let mut s = TaskOptions::new(task).unwrap();
    s.set("operator-seed", 11u64).unwrap();
    for o in s.specs().to_vec() {
        let v: Option<OptionValue> = match (o.name, o.kind, o.default) {
            ("kernel-size", ..) => Some(5usize.into()),
            ("cs-ratio", ..) => Some(0.3.into()),
            ("angles", ..) => Some(12usize.into()),
            (_, OptionType::ImageFile, OptionDefault::Required) => {
                let m = rand_vec(shape[1] * shape[2], 0.0, 1.0, 5);
                Some(
                    Tensor::from_vec(m, (shape[1], shape[2]), &Device::Cpu)
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
    for (k, v) in extra {
        set(&mut s, k, v);
    }
    build_task(&s, shape).ok()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// `what` agrees within `tol` relative to the host values' magnitude.
fn close(dev: &[f64], host: &[f64], tol: f64, what: &str) {
    let d = max_abs_diff(dev, host);
    let scale = max_abs(host).max(1e-12);
    assert!(
        d <= tol * scale,
        "{what}: max |device − host| = {d:e}, {:e} of max |host| {scale:e}",
        d / scale
    );
}

/// Every check of one operator in one dtype; returns whether it has a device form.
fn check(op: &dyn Operator, dtype: DType, tol: f64) -> bool {
    let name = format!("{} {:?} {:?}", op.name(), op.image_shape(), dtype);
    let Some(map) = op.device_map(&Device::Cpu, dtype).unwrap() else {
        return false;
    };
    let [c, h, w] = op.image_shape();
    let (n, m) = (op.image_len(), op.measurement_len());
    let b = 3;
    let xs = rand_vec(b * n, -1.0, 1.0, 1);
    let x = tensor(&xs, &[b, c, h, w], dtype);
    // The likelihood and Gram tests use values the dtype holds exactly.
    let xs = host(&x);
    let mut mshape = vec![b];
    mshape.extend(op.measurement_shape());

    // Forward.
    let z = host(&map.forward(&x).unwrap());
    let zh: Vec<f64> = xs
        .chunks(n)
        .flat_map(|xi| op.forward_host(xi).unwrap())
        .collect();
    close(&z, &zh, tol, &format!("{name}: forward"));

    // Vector–Jacobian product at x (for linear maps, Aᵀ), with a v that respects the
    // operator's measurement support (MRI rejects k-space off its mask: use A of something).
    let vs: Vec<f64> = if op.is_linear() {
        rand_vec(b * n, -1.0, 1.0, 2)
            .chunks(n)
            .flat_map(|xi| op.forward_host(xi).unwrap())
            .collect()
    } else {
        rand_vec(b * m, -1.0, 1.0, 2)
    };
    let v = tensor(&vs, &mshape, dtype);
    let vs = host(&v);
    let g = host(&map.vjp(&x, &v).unwrap());
    let gh: Vec<f64> = xs
        .chunks(n)
        .zip(vs.chunks(m))
        .flat_map(|(xi, vi)| op.vjp_host(xi, vi).unwrap())
        .collect();
    close(&g, &gh, tol, &format!("{name}: vjp"));

    // Likelihood and gradient through DeviceOperator, against y of batch 1 and of batch B.
    if op.noise().has_device_likelihood() {
        let x_true = rand_vec(b * n, -0.8, 0.8, 3);
        let mut rng = StdRng::seed_from_u64(4);
        let ys: Vec<f64> = x_true
            .chunks(n)
            .flat_map(|xi| op.simulate_host(xi, &mut rng).unwrap())
            .collect();
        for (by, host_on_cpu) in [(1, false), (b, false), (1, true), (b, true)] {
            let ys = &ys[..by * m];
            let dop = DeviceOperator::new(op, ys, by, &Device::Cpu, dtype, host_on_cpu)
                .unwrap()
                .expect("device form");
            let (l, g) = dop.log_likelihood_and_grad(&x).unwrap();
            let (l, g) = (host(&l), host(&g));
            let mut lh = Vec::new();
            let mut gh = Vec::new();
            for (i, xi) in xs.chunks(n).enumerate() {
                let yi = &ys[(if by == 1 { 0 } else { i }) * m..][..m];
                let (li, gi) = op.log_likelihood_and_grad_host(xi, yi).unwrap();
                lh.push(li);
                gh.extend(gi);
            }
            close(
                &l,
                &lh,
                tol,
                &format!("{name}: log-likelihood (y batch {by})"),
            );
            close(
                &g,
                &gh,
                tol,
                &format!("{name}: ∇ log-likelihood (y batch {by})"),
            );
        }
    }

    // Shifted-Gram solve: where the device has one, the host has one and they agree.
    let rhs = tensor(&rand_vec(b * n, -1.0, 1.0, 6), &[b, c, h, w], dtype);
    let rs = host(&rhs);
    let (alpha, beta) = (3.0, 0.7);
    if let Some(sol) = map.solve_shifted_gram(&rhs, alpha, beta) {
        let sol = host(&sol.unwrap());
        let sh: Vec<f64> = rs
            .chunks(n)
            .flat_map(|ri| {
                op.solve_shifted_gram_host(ri, alpha, beta)
                    .expect("host solve where the device has one")
                    .unwrap()
            })
            .collect();
        close(&sol, &sh, tol, &format!("{name}: shifted-Gram solve"));
    }
    true
}

fn all_operators() -> Vec<Box<dyn Operator>> {
    let mut ops = Vec::new();
    for shape in [[2, 16, 16], [1, 15, 13], [3, 12, 12]] {
        for t in task_names() {
            ops.extend(build(t, shape, &[]));
        }
        ops.extend(build("sr4", shape, &[("kernel", "box")]));
        ops.extend(build("mri-multicoil", shape, &[("coils", "3")]));
    }
    // Complex (2-channel) MRI images at an odd size.
    ops.extend(build("mri", [2, 15, 13], &[]));
    ops.extend(build("mri-multicoil", [2, 15, 13], &[("coils", "2")]));
    ops
}

#[test]
fn every_device_map_matches_the_host_operator_in_f64() {
    let mut with = Vec::new();
    for op in all_operators() {
        if check(op.as_ref(), DType::F64, 1e-10) {
            with.push(op.name().to_string());
        }
    }
    with.sort();
    with.dedup();
    // Every task of the registry has a device form.
    let mut all: Vec<String> = task_names().iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(with, all, "tasks with a device map");
}

#[test]
fn every_device_map_matches_the_host_operator_in_f32() {
    for op in all_operators() {
        check(op.as_ref(), DType::F32, 2e-5);
    }
}

#[test]
fn photon_noise_has_no_device_likelihood_and_says_so() {
    let op = build("denoise", [1, 8, 8], &[("noise", "poisson")]).unwrap();
    let ys = vec![0.0; op.measurement_len()];
    assert!(
        DeviceOperator::new(op.as_ref(), &ys, 1, &Device::Cpu, DType::F32, true)
            .unwrap()
            .is_none()
    );
    assert!(!DeviceOperator::available(op.as_ref(), &Device::Cpu).unwrap());
    let op = build("denoise", [1, 8, 8], &[]).unwrap();
    assert!(DeviceOperator::available(op.as_ref(), &Device::Cpu).unwrap());
    let err = DeviceOperator::new(op.as_ref(), &ys, 1, &Device::Cpu, DType::BF16, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("f32 or f64"), "{err}");
}
