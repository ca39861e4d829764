//! The SVD seam: for every operator that exposes one, U S Vᵀ x = A x, Vᵀ V = V Vᵀ = I,
//! Uᵀ U = I on the coordinates with s > 0, U Uᵀ is the identity on the range of A,
//! V S Uᵀ y = Aᵀ y and A A⁺ A = A, on random f64 vectors, for several shapes (square and not,
//! C = 1 and 3). The operators without one (phase retrieval, CT) return `None`; one-bit's
//! forward map is the identity, whose SVD it exposes (its noise model is not Gaussian).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use genprior_inverse::physics::{
    gaussian_kernel, motion_kernel, Blur, CompressedSensing, Identity, Inpainting, SrKernel,
    SuperResolution,
};
use genprior_inverse::{
    build_task, task_names, Gaussian, NoiseModel, Operator, OptionDefault, OptionType, TaskOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const TOL: f64 = 1e-10;

fn noise() -> Arc<dyn NoiseModel> {
    Arc::new(Gaussian::new(0.05, 0.05).unwrap())
}

fn randn(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Every identity of the module docs, on a few random vectors.
fn check(op: &dyn Operator, label: &str) {
    let svd = op
        .svd()
        .unwrap_or_else(|| panic!("{label}: no SVD exposed"));
    let (n, m) = (op.image_len(), op.measurement_len());
    assert_eq!(svd.image_len(), n, "{label}");
    assert_eq!(svd.measurement_len(), m, "{label}");
    let s = svd.singular_values();
    assert_eq!(s.len(), n, "{label}");
    assert!(s.iter().all(|v| v.is_finite() && *v >= 0.0), "{label}");
    let rank = s.iter().filter(|v| **v > 0.0).count();
    assert!(rank > 0, "{label}: rank 0");
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..3 {
        let x = randn(n, &mut rng);
        let y = randn(m, &mut rng);
        let z = randn(n, &mut rng);
        // A x = U S Vᵀ x.
        let ax = op.forward_host(&x).unwrap();
        let e = max_abs_diff(&svd.forward(&x).unwrap(), &ax);
        assert!(e < TOL, "{label}: |USVᵀx − Ax| = {e:e}");
        // Aᵀ y = V S Uᵀ y.
        let mut uy = svd.u_adjoint(&y).unwrap();
        uy.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
        let e = max_abs_diff(&svd.v(&uy).unwrap(), &op.adjoint_host(&y).unwrap());
        assert!(e < TOL, "{label}: |VSUᵀy − Aᵀy| = {e:e}");
        // Vᵀ V z = z and V Vᵀ x = x.
        let e = max_abs_diff(&svd.v_adjoint(&svd.v(&z).unwrap()).unwrap(), &z);
        assert!(e < TOL, "{label}: |VᵀVz − z| = {e:e}");
        let e = max_abs_diff(&svd.v(&svd.v_adjoint(&x).unwrap()).unwrap(), &x);
        assert!(e < TOL, "{label}: |VVᵀx − x| = {e:e}");
        // ‖Vᵀx‖ = ‖x‖.
        let nx: f64 = x.iter().map(|v| v * v).sum();
        let nvx: f64 = svd.v_adjoint(&x).unwrap().iter().map(|v| v * v).sum();
        assert!((nx - nvx).abs() < TOL * nx, "{label}");
        // Uᵀ U z = z on the coordinates with s > 0, 0 elsewhere.
        let uz = svd.u(&z).unwrap();
        assert_eq!(uz.len(), m, "{label}");
        let back = svd.u_adjoint(&uz).unwrap();
        let want: Vec<f64> = z
            .iter()
            .zip(s)
            .map(|(&v, &s)| if s > 0.0 { v } else { 0.0 })
            .collect();
        let e = max_abs_diff(&back, &want);
        assert!(e < TOL, "{label}: |UᵀUz − P z| = {e:e}");
        // U Uᵀ is the identity on the range: U Uᵀ (A x) = A x.
        let e = max_abs_diff(&svd.u(&svd.u_adjoint(&ax).unwrap()).unwrap(), &ax);
        assert!(e < TOL, "{label}: |UUᵀAx − Ax| = {e:e}");
        // A A⁺ A x = A x.
        let e = max_abs_diff(&op.forward_host(&svd.pinv(&ax).unwrap()).unwrap(), &ax);
        assert!(e < 1e-8, "{label}: |AA⁺Ax − Ax| = {e:e}");
    }
    // Wrong lengths are errors, not panics.
    assert!(svd.v_adjoint(&vec![0.0; n + 1]).is_err(), "{label}");
    assert!(svd.u_adjoint(&vec![0.0; m + 1]).is_err(), "{label}");
}

#[test]
fn diagonal_operators() {
    for shape in [[1, 4, 4], [3, 5, 7], [1, 6, 3]] {
        check(&Identity::denoise(shape, noise()).unwrap(), "denoise");
        let [c, h, w] = shape;
        let mut rng = StdRng::seed_from_u64(3);
        // Per-channel random masks (C·H·W values) and a shared one (H·W values).
        let full: Vec<f64> = (0..c * h * w)
            .map(|_| if rng.random::<f64>() < 0.6 { 1.0 } else { 0.0 })
            .collect();
        check(
            &Inpainting::from_mask("inpaint-mask", shape, &full, noise()).unwrap(),
            "inpainting (per-channel mask)",
        );
        let shared: Vec<f64> = (0..h * w).map(|i| (i % 3 != 0) as u8 as f64).collect();
        let op = Inpainting::from_mask("inpaint-mask", shape, &shared, noise()).unwrap();
        check(&op, "inpainting (shared mask)");
        let s = op.svd().unwrap().singular_values();
        assert_eq!(
            s.iter().filter(|v| **v > 0.0).count(),
            c * shared.iter().filter(|v| **v > 0.0).count()
        );
    }
}

#[test]
fn fft_blur() {
    for shape in [[1, 8, 8], [3, 7, 10], [1, 6, 9]] {
        let g = gaussian_kernel(5, 1.3).unwrap();
        check(
            &Blur::new("deblur-gauss", shape, g, noise()).unwrap(),
            &format!("deblur-gauss {shape:?}"),
        );
        let k = motion_kernel(5, 0.5, 11).unwrap();
        check(
            &Blur::new("deblur-motion", shape, k, noise()).unwrap(),
            &format!("deblur-motion {shape:?}"),
        );
    }
}

#[test]
fn super_resolution_box_and_bicubic() {
    for (shape, factor) in [
        ([1, 8, 8], 2),
        ([3, 8, 12], 4),
        ([1, 16, 8], 2),
        ([1, 16, 16], 8),
    ] {
        for kernel in [SrKernel::Box, SrKernel::Bicubic] {
            let op = SuperResolution::new(shape, factor, kernel, noise()).unwrap();
            let label = format!("sr{factor} {kernel:?} {shape:?}");
            check(&op, &label);
            // Full row rank: one nonzero singular value per measurement.
            let s = op.svd().unwrap().singular_values();
            assert_eq!(
                s.iter().filter(|v| **v > 0.0).count(),
                op.measurement_len(),
                "{label}"
            );
            if kernel == SrKernel::Box {
                // s×s average pooling: every nonzero singular value is 1/s.
                for v in s.iter().filter(|v| **v > 0.0) {
                    assert!((v - 1.0 / factor as f64).abs() < 1e-12, "{label}: {v}");
                }
            }
        }
    }
}

#[test]
fn compressed_sensing_dense() {
    for (shape, ratio) in [([1, 4, 6], 0.5), ([3, 4, 4], 1.0), ([1, 5, 5], 0.3)] {
        let op = CompressedSensing::gaussian(shape, ratio, 5, noise()).unwrap();
        check(&op, &format!("cs {shape:?} ratio {ratio}"));
    }
    // Too large for a dense SVD: none.
    let big = CompressedSensing::gaussian([1, 40, 40], 0.01, 5, noise()).unwrap();
    assert!(big.svd().is_none());
}

/// Through the registry: the linear tasks expose an SVD (checked), the others none.
#[test]
fn registry_tasks() {
    const SHAPE: [usize; 3] = [2, 16, 16];
    for task in task_names() {
        let mut o = TaskOptions::new(task).unwrap();
        for s in o.specs().to_vec() {
            if s.default == OptionDefault::Required {
                assert_eq!(s.kind, OptionType::ImageFile, "{task}");
                let m: Vec<f32> = (0..SHAPE[1] * SHAPE[2])
                    .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
                    .collect();
                o.set(
                    s.name,
                    Tensor::from_vec(m, (SHAPE[1], SHAPE[2]), &Device::Cpu).unwrap(),
                )
                .unwrap();
            }
        }
        if o.specs().iter().any(|s| s.name == "kernel-size") {
            o.set("kernel-size", 7usize).unwrap();
        }
        let op = build_task(&o, SHAPE).unwrap();
        match task {
            "phase-retrieval" | "ct" | "mri-multicoil" => {
                assert!(op.svd().is_none(), "{task} should have no SVD")
            }
            // Single-coil MRI: complex images (this shape) and real ones, odd sizes too.
            "mri" => {
                check(op.as_ref(), "mri, complex image");
                for shape in [[1, 16, 16], [1, 15, 12], [2, 15, 12]] {
                    let op = build_task(&o, shape).unwrap();
                    check(op.as_ref(), &format!("mri {shape:?}"));
                }
            }
            // One-bit's forward map is the identity (its nonlinearity is the logistic sign
            // noise model): the SVD of A exists; SVD samplers reject it as non-Gaussian.
            "one-bit" => {
                check(op.as_ref(), task);
                assert!(!op.is_linear_gaussian());
            }
            _ => check(op.as_ref(), task),
        }
    }
}
