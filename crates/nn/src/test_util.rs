//! Helpers shared by the unit tests of the custom ops and kernels.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};

/// Deterministic pseudo-random values in [−scale, scale].
pub fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32 * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// max |a − b|.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a − b| / (1 + max |b|).
pub fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let m = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    max_diff(a, b) / (1.0 + m)
}

/// The gradients of Σ up ⊙ y with respect to everything `y` depends on.
pub fn grads(y: &Tensor, up: &Tensor) -> GradStore {
    (y * up).unwrap().sum_all().unwrap().backward().unwrap()
}
