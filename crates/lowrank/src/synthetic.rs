//! Reference problems of the ScaledGD papers, generated from a seed: singular values
//! σ_i = linspace(1, 1/κ, r), random orthonormal singular vectors.

use candle_core::{DType, Device, Tensor};
use nalgebra::DMatrix;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::{invalid, Result};
use crate::l1::L1Problem;
use crate::linalg::{from_host, randn_host, to_host};
use crate::matrix::{Design, MatrixCompletion, MatrixSensing, PsdSensing, RobustPca};
use crate::tensor::{mode_mul, TensorCompletion, TensorRpca, TrpcaParams, Tucker};

/// σ_i = linspace(1, 1/κ, r).
pub fn linspace_spectrum(r: usize, kappa: f64) -> Vec<f64> {
    if r == 1 {
        return vec![1.0];
    }
    (0..r)
        .map(|i| 1.0 + (1.0 / kappa - 1.0) * i as f64 / (r - 1) as f64)
        .collect()
}

fn orthonormal(n: usize, r: usize, rng: &mut StdRng) -> DMatrix<f64> {
    randn_host(n, r, rng).qr().q()
}

fn check(n: usize, r: usize, kappa: f64) -> Result<()> {
    if r == 0 || r >= n {
        return invalid(format!(
            "synthetic problem needs 1 ≤ r < n, got n={n}, r={r}"
        ));
    }
    if !(kappa >= 1.0 && kappa.is_finite()) {
        return invalid(format!("condition number κ must be ≥ 1, got {kappa}"));
    }
    Ok(())
}

/// Orthonormalised random ±1 matrix (as the reference MATLAB code: maximally incoherent).
fn orthonormal_sign(n: usize, r: usize, rng: &mut StdRng) -> DMatrix<f64> {
    DMatrix::from_fn(n, r, |_, _| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .qr()
        .q()
}

/// X⋆ = U diag(σ) Vᵀ, n1×n2, rank r, condition number κ (host f64); U, V are
/// orthonormalised random sign matrices as in the reference experiments.
pub fn low_rank_host(n1: usize, n2: usize, r: usize, kappa: f64, rng: &mut StdRng) -> DMatrix<f64> {
    let u = orthonormal_sign(n1, r, rng);
    let v = orthonormal_sign(n2, r, rng);
    let s = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(linspace_spectrum(r, kappa)));
    u * s * v.transpose()
}

/// A synthetic problem with its ground truth.
pub struct Synthetic<P> {
    pub problem: P,
    pub truth: Tensor,
}

/// Matrix completion, Bernoulli(p) mask.
pub fn completion(
    n: usize,
    r: usize,
    kappa: f64,
    p: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<Synthetic<MatrixCompletion>> {
    check(n, r, kappa)?;
    if !(p > 0.0 && p <= 1.0) {
        return invalid(format!("sampling rate must be in (0, 1], got {p}"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let x = low_rank_host(n, n, r, kappa, &mut rng);
    let (mut rows, mut cols, mut vals) = (vec![], vec![], vec![]);
    for i in 0..n {
        for j in 0..n {
            if rng.random::<f64>() < p {
                rows.push(i);
                cols.push(j);
                vals.push(x[(i, j)]);
            }
        }
    }
    let nv = vals.len();
    let v = Tensor::from_vec(vals, nv, dev)?.to_dtype(dtype)?;
    let problem = MatrixCompletion::new(n, n, &rows, &cols, &v)?.with_p(p)?;
    Ok(Synthetic {
        problem,
        truth: from_host(&x, dtype, dev)?,
    })
}

/// Robust PCA as in the reference MATLAB experiment: S⋆ = T_α(G) for a standard
/// Gaussian G (so each row/column has at most ⌊αn⌋ outliers, of size O(1) against
/// entries of X⋆ of size O(‖X⋆‖_F/n)). Returns the problem (truth X⋆) and S⋆.
pub fn rpca(
    n: usize,
    r: usize,
    kappa: f64,
    alpha: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<(Synthetic<RobustPca>, Tensor)> {
    let (x, s) = rpca_host(n, r, kappa, alpha, seed, dev)?;
    let y = &x + &s;
    let problem = RobustPca::new(&from_host(&y, dtype, dev)?, alpha)?;
    Ok((
        Synthetic {
            problem,
            truth: from_host(&x, dtype, dev)?,
        },
        from_host(&s, dtype, dev)?,
    ))
}

/// X⋆ and S⋆ = T_α(G) of [`rpca`] (host f64).
fn rpca_host(
    n: usize,
    r: usize,
    kappa: f64,
    alpha: f64,
    seed: u64,
    dev: &Device,
) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    check(n, r, kappa)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = low_rank_host(n, n, r, kappa, &mut rng);
    let g = from_host(&randn_host(n, n, &mut rng), DType::F64, dev)?;
    let s = to_host(&crate::matrix::sparsify(&g, alpha)?)?;
    Ok((x, s))
}

/// An ℓ1 problem with its truth and the optimal loss f⋆ = ‖outliers‖₁ (for Polyak's
/// step).
pub struct SyntheticL1 {
    pub problem: L1Problem,
    pub truth: Tensor,
    pub f_star: f64,
}

/// Robust PCA with the ℓ1 loss: the same Y = X⋆ + S⋆ as [`rpca`] (fully observed).
pub fn rpca_l1(
    n: usize,
    r: usize,
    kappa: f64,
    alpha: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<SyntheticL1> {
    let (x, s) = rpca_host(n, r, kappa, alpha, seed, dev)?;
    let y = &x + &s;
    Ok(SyntheticL1 {
        problem: L1Problem::entries(&from_host(&y, dtype, dev)?, None)?,
        truth: from_host(&x, dtype, dev)?,
        f_star: s.abs().sum(),
    })
}

/// Robust matrix sensing as the reference `MS_l1_outlier.m`: Gaussian design, m
/// measurements, each replaced with probability `ps` by an outlier
/// 10‖y⋆‖_∞·U(−1, 1) added to it.
pub fn robust_sensing(
    n: usize,
    r: usize,
    kappa: f64,
    m: usize,
    ps: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<SyntheticL1> {
    check(n, r, kappa)?;
    if !(0.0..0.5).contains(&ps) {
        return invalid(format!("outlier fraction must be in [0, 0.5), got {ps}"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let x = low_rank_host(n, n, r, kappa, &mut rng);
    let a = Design::gaussian(m, n, n, seed.wrapping_add(1), dtype, dev)?;
    let xt = from_host(&x, dtype, dev)?;
    let ystar: Vec<f64> = a.apply(&xt)?.to_dtype(DType::F64)?.to_vec1()?;
    let ymax = ystar.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut f_star = 0.0;
    let y: Vec<f64> = ystar
        .iter()
        .map(|&v| {
            let u: f64 = rng.random::<f64>() * 2.0 - 1.0;
            if rng.random::<f64>() < ps {
                f_star += (10.0 * ymax * u).abs();
                v + 10.0 * ymax * u
            } else {
                v
            }
        })
        .collect();
    let y = Tensor::from_vec(y, m, dev)?.to_dtype(dtype)?;
    Ok(SyntheticL1 {
        problem: L1Problem::sensing(a, &y)?,
        truth: xt,
        f_star,
    })
}

/// Matrix sensing with a Gaussian design, m measurements.
pub fn sensing(
    n: usize,
    r: usize,
    kappa: f64,
    m: usize,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<Synthetic<MatrixSensing>> {
    check(n, r, kappa)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = low_rank_host(n, n, r, kappa, &mut rng);
    let a = Design::gaussian(m, n, n, seed.wrapping_add(1), dtype, dev)?;
    let xt = from_host(&x, dtype, dev)?;
    let y = a.apply(&xt)?;
    Ok(Synthetic {
        problem: MatrixSensing::new(a, &y)?,
        truth: xt,
    })
}

/// PSD sensing: M⋆ = U diag(σ) Uᵀ, symmetric Gaussian-design measurements.
pub fn psd_sensing(
    n: usize,
    r: usize,
    kappa: f64,
    m: usize,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<Synthetic<PsdSensing>> {
    check(n, r, kappa)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let u = orthonormal(n, r, &mut rng);
    let s = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(linspace_spectrum(r, kappa)));
    let mstar = &u * s * u.transpose();
    let a = Design::gaussian(m, n, n, seed.wrapping_add(1), dtype, dev)?;
    let mt = from_host(&mstar, dtype, dev)?;
    let y = a.apply(&mt)?;
    Ok(Synthetic {
        problem: PsdSensing::new(a, &y)?,
        truth: mt,
    })
}

/// Tucker tensor of multilinear rank (r, r, r) whose unfoldings all have singular
/// values linspace(1, 1/κ, r): a superdiagonal core rotated by random orthogonal r×r
/// matrices, times random orthonormal n×r factors.
pub fn tucker_truth(
    n: usize,
    r: usize,
    kappa: f64,
    rng: &mut StdRng,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    let sig = linspace_spectrum(r, kappa);
    let mut core = vec![0.0; r * r * r];
    for (i, s) in sig.iter().enumerate() {
        core[i * r * r + i * r + i] = *s;
    }
    let mut core = Tensor::from_vec(core, (r, r, r), dev)?.to_dtype(dtype)?;
    for k in 0..3 {
        let q = from_host(&orthonormal(r, r, rng), dtype, dev)?;
        core = mode_mul(&core, &q, k)?;
    }
    let factors = [
        from_host(&orthonormal(n, r, rng), dtype, dev)?,
        from_host(&orthonormal(n, r, rng), dtype, dev)?,
        from_host(&orthonormal(n, r, rng), dtype, dev)?,
    ];
    Tucker { core, factors }.dense()
}

/// Tucker tensor completion, Bernoulli(p) mask.
pub fn tensor_completion(
    n: usize,
    r: usize,
    kappa: f64,
    p: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<Synthetic<TensorCompletion>> {
    check(n, r, kappa)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = tucker_truth(n, r, kappa, &mut rng, dtype, dev)?;
    let xv: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let (mut idx, mut vals) = (vec![], vec![]);
    for (k, v) in xv.iter().enumerate() {
        if rng.random::<f64>() < p {
            idx.push(k);
            vals.push(*v);
        }
    }
    let nv = vals.len();
    let v = Tensor::from_vec(vals, nv, dev)?.to_dtype(dtype)?;
    Ok(Synthetic {
        problem: TensorCompletion::new([n, n, n], &idx, &v)?,
        truth: x,
    })
}

/// Tensor RPCA: Bernoulli(α) outliers, uniform in ±10·E|X⋆|.
pub fn tensor_rpca(
    n: usize,
    r: usize,
    kappa: f64,
    alpha: f64,
    params: TrpcaParams,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<Synthetic<TensorRpca>> {
    check(n, r, kappa)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = tucker_truth(n, r, kappa, &mut rng, dtype, dev)?;
    let mut xv: Vec<f64> = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let mean_abs = xv.iter().map(|v| v.abs()).sum::<f64>() / xv.len() as f64;
    for v in xv.iter_mut() {
        if rng.random::<f64>() < alpha {
            *v += (rng.random::<f64>() * 2.0 - 1.0) * 10.0 * mean_abs;
        }
    }
    let y = Tensor::from_vec(xv, (n, n, n), dev)?.to_dtype(dtype)?;
    Ok(Synthetic {
        problem: TensorRpca::new(&y, params)?,
        truth: x,
    })
}
