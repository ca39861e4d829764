//! Helpers of the diagonal closed-form tests of the SVD methods (DDRM, DDNM): a Gaussian prior
//! N(μ, diag v) with its exact denoiser in f64, Gaussian noise, a half mask, and f64 ↔ tensor.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use genprior_inverse::{Gaussian, NoiseModel};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::StandardNormal;

pub fn prior_moments(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mean = (0..n).map(|i| 0.1 * (i % 3) as f64 - 0.1).collect();
    let var = (0..n).map(|i| 0.1 + 0.05 * (i % 4) as f64).collect();
    (mean, var)
}

pub fn noise(sigma: f64) -> Arc<dyn NoiseModel> {
    Arc::new(Gaussian::with_sigma(sigma).unwrap())
}

pub fn half_mask(shape: [usize; 3]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| ((i * 5) % 7 < 4) as u8 as f64).collect()
}

pub fn tensor(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(
        v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
        dims,
        &Device::Cpu,
    )
    .unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn randn(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

/// x̂₀ and ε̂ of the Gaussian prior N(μ, diag v) at x_t, noise level ᾱ, in f64.
pub fn denoise(mu: &[f64], var: &[f64], x: &[f64], ab: f64) -> (Vec<f64>, Vec<f64>) {
    let x0: Vec<f64> = (0..x.len())
        .map(|i| {
            let g = ab.sqrt() * var[i] / (ab * var[i] + 1.0 - ab);
            mu[i] + g * (x[i] - ab.sqrt() * mu[i])
        })
        .collect();
    let eps = (0..x.len())
        .map(|i| (x[i] - ab.sqrt() * x0[i]) / (1.0 - ab).sqrt())
        .collect();
    (x0, eps)
}
