//! Small host linear-algebra helpers: dot products and conjugate gradients.

use crate::error::{InverseError, Result};
use crate::operator::Operator;

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm2(a: &[f64]) -> f64 {
    dot(a, a)
}

/// Solves a shifted Gram system M x = rhs, M = f(AᵀA, I), of a linear operator by conjugate
/// gradients: `combine(g, v)` gives (M v)_i from g = (AᵀA v)_i and v = v_i (e.g.
/// `|g, v| g / σ² + v / γ²`). For operators whose AᵀA is diagonal or FFT-diagonal, use
/// [`Operator::solve_shifted_gram_host`] first; this is the general fallback.
pub fn shifted_gram_cg(
    op: &dyn Operator,
    rhs: &[f64],
    combine: impl Fn(f64, f64) -> f64,
    rel_tol: f64,
    max_iter: usize,
) -> Result<Vec<f64>> {
    conjugate_gradient(
        |v| {
            let mut out = op.adjoint_host(&op.forward_host(v)?)?;
            for (o, vi) in out.iter_mut().zip(v) {
                *o = combine(*o, *vi);
            }
            Ok(out)
        },
        rhs,
        rel_tol,
        max_iter,
    )
}

/// Conjugate gradients for a symmetric positive-definite operator `apply`: solves `M x = b`
/// from `x = 0` until `‖r‖ ≤ rel_tol · ‖b‖`; errors if that takes more than `max_iter` steps.
pub fn conjugate_gradient<F>(apply: F, b: &[f64], rel_tol: f64, max_iter: usize) -> Result<Vec<f64>>
where
    F: Fn(&[f64]) -> Result<Vec<f64>>,
{
    let n = b.len();
    let mut x = vec![0.0; n];
    let bnorm = norm2(b).sqrt();
    if bnorm == 0.0 {
        return Ok(x);
    }
    let mut r = b.to_vec();
    let mut p = r.clone();
    let mut rs = norm2(&r);
    for _ in 0..max_iter {
        if rs.sqrt() <= rel_tol * bnorm {
            return Ok(x);
        }
        let ap = apply(&p)?;
        let pap = dot(&p, &ap);
        if pap.is_nan() || pap <= 0.0 {
            return Err(InverseError::Numerical(format!(
                "conjugate gradients: operator not positive definite (pᵀMp = {pap})"
            )));
        }
        let alpha = rs / pap;
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        let rs_new = norm2(&r);
        let beta = rs_new / rs;
        for i in 0..n {
            p[i] = r[i] + beta * p[i];
        }
        rs = rs_new;
    }
    if rs.sqrt() <= rel_tol * bnorm {
        return Ok(x);
    }
    Err(InverseError::Numerical(format!(
        "conjugate gradients did not reach relative residual {rel_tol:e} in {max_iter} iterations (reached {:e})",
        rs.sqrt() / bnorm
    )))
}
