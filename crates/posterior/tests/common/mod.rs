//! Shared by the closed-form tests: a Gaussian prior N(μ, diag(s²)) with an exact ε-model,
//! a 3 × 4 compressed-sensing problem with its dense algebra, and sample moments.
#![allow(dead_code)]

pub mod diagonal;

use candle_core::{Device, Tensor};
use genprior_diffusion::analytic::GaussianPrior;
use genprior_diffusion::{Schedule, SchedulerConfig};
use genprior_inverse::physics::CompressedSensing;
use genprior_inverse::Gaussian;

pub const Z: f64 = 4.0;

pub const SHAPE: [usize; 3] = [1, 2, 2];

pub const MU: [f64; 4] = [0.1, -0.2, 0.3, 0.0];

pub const VAR: [f64; 4] = [0.3, 0.6, 1.0, 1.5];

pub fn schedule() -> Schedule {
    // Linear β, T = 1000, ε-prediction; no clipping (the Gaussian prior is not bounded).
    let cfg = SchedulerConfig {
        clip_sample: false,
        ..SchedulerConfig::default()
    };
    Schedule::new(cfg).unwrap()
}

pub fn prior(s: &Schedule) -> GaussianPrior {
    GaussianPrior::new(MU.to_vec(), VAR.to_vec(), SHAPE, s, &Device::Cpu).unwrap()
}

/// Per-coordinate empirical mean and (unbiased) variance of a (N, 1, 2, 2) batch.
pub fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>, usize) {
    let n = x.dim(0).unwrap();
    let v = x
        .flatten_from(1)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let d = v[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| v.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let var: Vec<f64> = (0..d)
        .map(|j| v.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n - 1) as f64)
        .collect();
    (mean, var, n)
}

pub type Mat = Vec<Vec<f64>>;

pub fn inverse(a: &Mat) -> Mat {
    let n = a.len();
    let mut m: Mat = a
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            r
        })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))
            .unwrap();
        m.swap(c, p);
        let d = m[c][c];
        m[c].iter_mut().for_each(|v| *v /= d);
        for r in 0..n {
            if r != c {
                let f = m[r][c];
                let row_c = m[c].clone();
                m[r].iter_mut().zip(&row_c).for_each(|(v, w)| *v -= f * w);
            }
        }
    }
    m.into_iter().map(|r| r[n..].to_vec()).collect()
}

pub fn matvec(a: &Mat, x: &[f64]) -> Vec<f64> {
    a.iter()
        .map(|r| r.iter().zip(x).map(|(p, q)| p * q).sum())
        .collect()
}

/// 3 × 4 measurement matrix, σ = 0.2, and a fixed y.
pub fn cs_problem() -> (CompressedSensing, Mat, Vec<f64>, f64) {
    let a: Mat = vec![
        vec![0.9, -0.4, 0.3, 0.1],
        vec![0.2, 0.7, -0.5, 0.4],
        vec![-0.3, 0.1, 0.6, 0.8],
    ];
    let sigma = 0.2;
    let flat: Vec<f64> = a.iter().flatten().copied().collect();
    let op = CompressedSensing::from_matrix(
        SHAPE,
        3,
        flat,
        std::sync::Arc::new(Gaussian::with_sigma(sigma).unwrap()),
    )
    .unwrap();
    let y = vec![0.45, -0.3, 0.6];
    (op, a, y, sigma)
}

pub fn y_tensor(y: &[f64]) -> Tensor {
    Tensor::from_vec(
        y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (1, y.len()),
        &Device::Cpu,
    )
    .unwrap()
}
