//! Host/device linear-algebra helpers.
//!
//! Large products (n×n times n×k) run on the problem's device through candle; the
//! small dense pieces (r×r Cholesky solves, thin QR of an n×k block, SVD of a k×n
//! block with k = rank + oversampling) run on the host in f64 with `nalgebra`.
//!
//! Truncated SVD: randomized subspace iteration (Halko, Martinsson & Tropp 2011) with
//! oversampling 10 and a few power iterations. Why: the initialisation only needs the
//! top r ≪ n singular triplets; the cost is a handful of n×n by n×(r+10) products, which
//! are exactly the operations candle runs fast on CPU (gemm) and GPU, while the only
//! host work is a QR of an n×(r+10) block and an SVD of an (r+10)×n block. A full dense
//! SVD at n = 1000 would be ~100× more work and host-only; Lanczos needs careful
//! reorthogonalisation and is sequential in matrix–vector products. With q power
//! iterations the error in the captured subspace shrinks like (σ_{r+11}/σ_r)^{2q+1}.

use candle_core::{DType, Device, Tensor};
use nalgebra::DMatrix;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::error::{LowRankError, Result};

/// Host-side dense matrix / vector types (re-exported from nalgebra).
pub type HostMatrix = DMatrix<f64>;
pub type HostVector = nalgebra::DVector<f64>;

/// Copy a 2-D tensor (any float dtype, any device) to a host f64 matrix.
pub fn to_host(t: &Tensor) -> Result<DMatrix<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(DMatrix::from_row_slice(r, c, &v))
}

/// Copy a host f64 matrix to a tensor of the given dtype on the given device.
pub fn from_host(m: &DMatrix<f64>, dtype: DType, device: &Device) -> Result<Tensor> {
    let (r, c) = m.shape();
    let mut v = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            v.push(m[(i, j)]);
        }
    }
    Ok(Tensor::from_vec(v, (r, c), device)?.to_dtype(dtype)?)
}

/// Scalar value of a 0-d or 1-element tensor as f64.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?[0])
}

/// ‖x − truth‖_F / ‖truth‖_F, accumulated in f64.
pub fn relative_error(x: &Tensor, truth: &Tensor) -> Result<f64> {
    let d = scalar(&(x - truth)?.sqr()?.sum_all()?)?;
    let n = scalar(&truth.sqr()?.sum_all()?)?;
    Ok((d / n).sqrt())
}

/// Frobenius norm.
pub fn fro(t: &Tensor) -> Result<f64> {
    Ok(scalar(&t.sqr()?.sum_all()?)?.sqrt())
}

/// Frobenius inner product.
pub fn inner(a: &Tensor, b: &Tensor) -> Result<f64> {
    scalar(&(a * b)?.sum_all()?)
}

/// `G (P + λI)⁻¹` for a symmetric positive definite r×r `P` (host) and an n×r `G`
/// (device), via a Cholesky factorisation and triangular solves on the host — never an
/// explicit inverse.
pub fn right_solve_spd(g: &Tensor, p: &DMatrix<f64>, lambda: f64) -> Result<Tensor> {
    let r = p.nrows();
    let mut a = p.clone();
    for i in 0..r {
        a[(i, i)] += lambda;
    }
    // Symmetrise against round-off.
    let a = (&a + a.transpose()) * 0.5;
    let chol = nalgebra::Cholesky::new(a).ok_or_else(|| {
        LowRankError::Numerical(
            "the r×r Gram matrix of a factor is not positive definite (a factor collapsed; \
             use a smaller rank or a damped preconditioner)"
                .into(),
        )
    })?;
    let gh = to_host(g)?; // n×r
    let x = chol.solve(&gh.transpose()); // r×n
    from_host(&x.transpose(), g.dtype(), g.device())
}

/// Host Gram matrix `AᵀA` of a device n×r tensor (computed on the device).
pub fn gram(a: &Tensor) -> Result<DMatrix<f64>> {
    to_host(&a.t()?.matmul(a)?)
}

/// Orthonormal basis (thin Q) of the columns of a device n×k tensor, via a host
/// Householder QR.
pub fn orth(y: &Tensor) -> Result<Tensor> {
    let h = to_host(y)?;
    let q = h.qr().q();
    from_host(&q, y.dtype(), y.device())
}

/// Standard-normal host matrix.
pub fn randn_host(rows: usize, cols: usize, rng: &mut StdRng) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

/// Top-k singular triplets of a dense n1×n2 device matrix `m` by randomized subspace
/// iteration. Returns (U n1×k, σ (k, descending), V n2×k) with U, V on m's device.
pub fn truncated_svd(m: &Tensor, k: usize, seed: u64) -> Result<(Tensor, Vec<f64>, Tensor)> {
    let (n1, n2) = m.dims2()?;
    if k == 0 || k > n1.min(n2) {
        return Err(LowRankError::InvalidInput(format!(
            "truncated SVD of rank {k} requested for a {n1}×{n2} matrix"
        )));
    }
    let l = (k + 10).min(n1.min(n2));
    let mut rng = StdRng::seed_from_u64(seed);
    let omega = from_host(&randn_host(n2, l, &mut rng), m.dtype(), m.device())?;
    let mt = m.t()?;
    let mut q = orth(&m.matmul(&omega)?)?;
    const POWER_ITERS: usize = 4;
    for _ in 0..POWER_ITERS {
        let w = orth(&mt.matmul(&q)?)?;
        q = orth(&m.matmul(&w)?)?;
    }
    let b = to_host(&q.t()?.matmul(m)?)?; // l × n2
    let svd = nalgebra::linalg::SVD::new(b, true, true);
    let (ub, s, vt) = match (svd.u, svd.v_t) {
        (Some(u), Some(vt)) => (u, svd.singular_values, vt),
        _ => return Err(LowRankError::Numerical("SVD did not return vectors".into())),
    };
    // nalgebra does not guarantee ordering: sort descending.
    let mut idx: Vec<usize> = (0..s.len()).collect();
    idx.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
    let idx = &idx[..k];
    let ubk = DMatrix::from_fn(ub.nrows(), k, |i, j| ub[(i, idx[j])]);
    let vk = DMatrix::from_fn(n2, k, |i, j| vt[(idx[j], i)]);
    let sk: Vec<f64> = idx.iter().map(|&i| s[i]).collect();
    let u = q.matmul(&from_host(&ubk, m.dtype(), m.device())?)?;
    let v = from_host(&vk, m.dtype(), m.device())?;
    Ok((u, sk, v))
}

/// Spectral factors `U Σ^{1/2}`, `V Σ^{1/2}` of the best rank-k approximation of `m`.
pub fn balanced_factors(m: &Tensor, k: usize, seed: u64) -> Result<(Tensor, Tensor, Vec<f64>)> {
    let (u, s, v) = truncated_svd(m, k, seed)?;
    let sq: Vec<f64> = s.iter().map(|x| x.sqrt()).collect();
    let d = Tensor::from_vec(sq, (1, k), m.device())?.to_dtype(m.dtype())?;
    Ok((u.broadcast_mul(&d)?, v.broadcast_mul(&d)?, s))
}

/// Whether every entry of `t` is finite.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    // In f64, Σ|x| is NaN/inf iff some entry is NaN/inf (barring overflow of values
    // near f64::MAX, which are garbage anyway).
    Ok(scalar(&t.to_dtype(DType::F64)?.abs()?.sum_all()?)?.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_svd_matches_dense_svd() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = randn_host(60, 8, &mut rng) * randn_host(8, 50, &mut rng)
            + randn_host(60, 50, &mut rng) * 1e-3;
        let full = nalgebra::linalg::SVD::new(a.clone(), false, false);
        let mut sv: Vec<f64> = full.singular_values.iter().copied().collect();
        sv.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let t = from_host(&a, DType::F64, &Device::Cpu).unwrap();
        let (u, s, v) = truncated_svd(&t, 5, 1).unwrap();
        for i in 0..5 {
            assert!((s[i] - sv[i]).abs() < 1e-9 * sv[0], "{} vs {}", s[i], sv[i]);
        }
        // U Σ Vᵀ reproduces the top-5 part: A v_i = σ_i u_i.
        let av = t.matmul(&v).unwrap();
        let us = u
            .broadcast_mul(
                &Tensor::new(s.as_slice(), &Device::Cpu)
                    .unwrap()
                    .reshape((1, 5))
                    .unwrap(),
            )
            .unwrap();
        assert!(fro(&(av - us).unwrap()).unwrap() < 1e-8);
    }

    #[test]
    fn right_solve_matches_closed_form() {
        let p = DMatrix::from_row_slice(2, 2, &[4.0, 1.0, 1.0, 3.0]);
        let g = Tensor::new(&[[1.0f64, 2.0], [0.0, 1.0], [3.0, -1.0]], &Device::Cpu).unwrap();
        let x = to_host(&right_solve_spd(&g, &p, 0.5).unwrap()).unwrap();
        let inv = DMatrix::from_row_slice(2, 2, &[3.5, -1.0, -1.0, 4.5]) / (4.5 * 3.5 - 1.0);
        let want = to_host(&g).unwrap() * inv;
        assert!((x - want).norm() < 1e-14);
    }
}
