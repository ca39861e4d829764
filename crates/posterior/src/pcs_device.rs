//! PCS on the device: the same samplers as [`crate::pcs`] (the Langevin move, its
//! Metropolis–Hastings correction, the exact Gaussian sampler) as tensor ops on the chains'
//! device, through the operator's [`DeviceOperator`] form.
//!
//! - Every chain's state, log-likelihood, gradient, step parameters (a, s) and acceptance
//!   count is a device tensor; the loop never reads anything back per step. The only
//!   device→host copies are the final samples and acceptance rates, and, for the exact sampler's
//!   conjugate gradients, one residual check every [`CG_CHECK_EVERY`] iterations.
//! - The randomness is the host path's, stream for stream: chain i's RNG is seeded with its
//!   seed and draws, per step, the proposal's normals in pixel order and then (MALA) one
//!   uniform, exactly as [`crate::pcs`] does. A producer thread draws them in chunks of steps
//!   while the device works, and each chunk is uploaded in one copy (host→device only), so
//!   with the same seeds the device path in f64 follows the host path to round-off, and in f32
//!   to f32 round-off.
//! - The Metropolis ratio is computed in difference form,
//!   ‖x' − x₀‖² − ‖x − x₀‖² = Σ (x' − x)(x' + x − 2x₀), which keeps f32 accurate on large
//!   images where the two norms are large and nearly equal.

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use genprior_inverse::device::{batch_sum, DeviceOperator};
use genprior_inverse::{InverseError, Result};

use crate::pcs::{PcsConfig, PcsMethod, PcsOutput};

/// How often (in iterations) the device conjugate gradients read their residuals back.
pub const CG_CHECK_EVERY: usize = 8;

/// At most this many random values per uploaded chunk (all chains, all steps of the chunk).
const CHUNK_VALUES: usize = 1 << 22;

/// Runs PCS on the device for the chains `x0` (`(B, C, H, W)`, on the device, in the device
/// path's dtype) against `dop`'s measurement; `m` the step rule's scale, `step` an optional
/// fixed step, `weight` the likelihood weight β/T, one seed per chain. (On the CPU, candle
/// spreads each tensor op over its own thread pool; splitting the chains over threads as well
/// was measured slower: the threads serialise on that pool.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn pcs_device(
    dop: &DeviceOperator<'_>,
    x0: &Tensor,
    gamma: f64,
    m: f64,
    cfg: &PcsConfig,
    step: Option<f64>,
    weight: f64,
    seeds: &[u64],
) -> Result<PcsOutput> {
    match cfg.method {
        PcsMethod::Exact => {
            let sigma = dop.operator().temperature() / weight.sqrt();
            exact_device(dop, x0, gamma, sigma, cfg.cg_max_iter, seeds)
        }
        PcsMethod::Ula => langevin_device(dop, x0, gamma, m, cfg, step, weight, false, seeds),
        PcsMethod::Mala => langevin_device(dop, x0, gamma, m, cfg, step, weight, true, seeds),
    }
}

/// A `(B,)` tensor as `(B, 1, 1, 1)` for broadcasting against images.
fn col(t: &Tensor) -> Result<Tensor> {
    let b = t.dim(0)?;
    Ok(t.reshape((b, 1, 1, 1))?)
}

/// 1 where every value of a batch element is finite, per element: `(B, ...)` → `(B,)` u8.
fn finite(t: &Tensor) -> Result<Tensor> {
    let s = if t.rank() == 1 {
        t.clone()
    } else {
        batch_sum(t)?
    };
    // s·0 is 0 for finite s and NaN for NaN and ±inf; NaN = 0 is false.
    Ok((&s * 0.0)?.eq(0.0)?)
}

/// Random values for chunks of steps, drawn on a producer thread from the per-chain RNGs in
/// the host path's order.
struct Chunk {
    steps: usize,
    /// `(steps, B, n)` normals (step-major, so each step's slice is contiguous).
    z: Vec<f64>,
    /// `(steps, B)` uniforms (MALA only).
    u: Vec<f64>,
}

fn produce(
    rngs: &mut [StdRng],
    steps: usize,
    n: usize,
    uniforms: bool,
    tx: std::sync::mpsc::SyncSender<Chunk>,
) {
    let b = rngs.len();
    let per = (CHUNK_VALUES / (b * n).max(1)).clamp(1, 64);
    let mut done = 0;
    while done < steps {
        let k = per.min(steps - done);
        let mut z = vec![0.0; b * k * n];
        let mut u = if uniforms {
            vec![0.0; b * k]
        } else {
            Vec::new()
        };
        for (i, r) in rngs.iter_mut().enumerate() {
            for s in 0..k {
                for v in &mut z[(s * b + i) * n..(s * b + i + 1) * n] {
                    *v = StandardNormal.sample(r);
                }
                if uniforms {
                    u[s * b + i] = r.random();
                }
            }
        }
        if tx.send(Chunk { steps: k, z, u }).is_err() {
            return; // the consumer stopped (an error): nothing more to draw
        }
        done += k;
    }
}

#[allow(clippy::too_many_arguments)]
fn langevin_device(
    dop: &DeviceOperator<'_>,
    x0: &Tensor,
    gamma: f64,
    m: f64,
    cfg: &PcsConfig,
    step: Option<f64>,
    weight: f64,
    adjust: bool,
    seeds: &[u64],
) -> Result<PcsOutput> {
    let (b, c, h, w) = x0.dims4()?;
    let n = c * h * w;
    let (dev, dtype) = (x0.device().clone(), x0.dtype());
    let g2 = gamma * gamma;
    let lik = |v: &Tensor| -> Result<(Tensor, Tensor)> {
        let (l, g) = dop.log_likelihood_and_grad(v)?;
        if weight != 1.0 {
            return Ok(((l * weight)?, (g * weight)?));
        }
        Ok((l, g))
    };
    let m2 = m * m;
    let cap = cfg.scale * m2.min(g2);
    // (a, s) per chain from its log-likelihood, as (B, 1, 1, 1).
    let move_params = |l: &Tensor| -> Result<(Tensor, Tensor)> {
        let h = match step {
            Some(hh) => Tensor::full(hh, l.shape(), l.device())?.to_dtype(l.dtype())?,
            None => {
                let f = (l * (-2.0 * m2))?.relu()?;
                ((f.sqrt()? + cfg.reg)?.recip()? * cap)?
            }
        };
        let a = (h.affine(-1.0 / g2, 0.0)?.exp()?.affine(-1.0, 1.0))?;
        let s = (h.affine(-2.0 / g2, 0.0)?.exp()?.affine(-1.0, 1.0)?.sqrt()? * gamma)?;
        Ok((col(&a)?, col(&s)?))
    };
    let mut rngs: Vec<StdRng> = seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect();
    let mut x = x0.clone();
    let (mut lx, mut gx) = lik(&x)?;
    let mut accepted = Tensor::zeros(b, dtype, &dev)?;
    let two_x0 = (x0 * 2.0)?;
    let steps = cfg.steps;
    let result: Result<()> = std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
        let rngs = &mut rngs;
        sc.spawn(move || produce(rngs, steps, n, adjust, tx));
        let mut done = 0;
        while done < steps {
            let chunk = rx.recv().map_err(|_| {
                InverseError::Numerical("the PCS noise producer stopped early".into())
            })?;
            let k = chunk.steps;
            let zs = Tensor::from_vec(chunk.z, (k, b, c, h, w), &candle_core::Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(&dev)?;
            let us = if adjust {
                Some(
                    Tensor::from_vec(chunk.u, (k, b), &candle_core::Device::Cpu)?
                        .to_dtype(dtype)?
                        .to_device(&dev)?,
                )
            } else {
                None
            };
            for s in 0..k {
                let z = zs.get(s)?;
                let (a, sd) = move_params(&lx)?;
                // x' = x + a(x₀ − x) + γ² a ∇L + s z
                let drift = ((x0 - &x)? + (&gx * g2)?)?;
                let prop = ((&x + drift.broadcast_mul(&a)?)? + z.broadcast_mul(&sd)?)?;
                let (lp, gp) = lik(&prop)?;
                let Some(us) = &us else {
                    x = prop;
                    lx = lp;
                    gx = gp;
                    continue;
                };
                let (ap, sp) = move_params(&lp)?;
                let zsq = batch_sum(&z.sqr()?)?;
                let mu_rev = (&prop + ((x0 - &prop)? + (&gp * g2)?)?.broadcast_mul(&ap)?)?;
                let rev = batch_sum(&(&x - mu_rev)?.sqr()?)?;
                let (sp1, sd1) = (sp.flatten_all()?, sd.flatten_all()?);
                // log π(x') − log π(x) in difference form.
                let dq = batch_sum(&((&prop - &x)? * ((&prop + &x)? - &two_x0)?)?)?;
                let dtarget = ((&lp - &lx)? - (dq / (2.0 * g2))?)?;
                // log q(x | x') − log q(x' | x)
                let dprop = ((rev / (sp1.sqr()? * 2.0)?)?.neg()? + (zsq * 0.5)?)?;
                let dnorm = ((sp1.log()? - sd1.log()?)? * n as f64)?;
                let log_alpha = ((dtarget + dprop)? - dnorm)?;
                let u = us.get(s)?;
                let take = log_alpha
                    .ge(0.0)?
                    .maximum(&u.log()?.lt(&log_alpha)?)?
                    .mul(&finite(&lp)?)?
                    .mul(&finite(&gp)?)?;
                let img = col(&take)?.broadcast_as(x.shape())?;
                x = img.where_cond(&prop, &x)?;
                gx = img.where_cond(&gp, &gx)?;
                lx = take.where_cond(&lp, &lx)?;
                accepted = (&accepted + take.to_dtype(dtype)?)?;
            }
            done += k;
        }
        Ok(())
    });
    result?;
    let acceptance = if adjust {
        accepted
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|a| a / steps as f64)
            .collect()
    } else {
        vec![1.0; b]
    };
    Ok(PcsOutput {
        samples: x,
        acceptance,
    })
}

/// The exact Gaussian sampler (perturb-and-solve) on the device: ỹ = y + σz₁, x̃₀ = x₀ + γz₂
/// (z₁, z₂ in the host path's order), then (AᵀA/σ² + I/γ²) x = Aᵀỹ/σ² + x̃₀/γ² by the map's
/// direct solve or batched conjugate gradients.
fn exact_device(
    dop: &DeviceOperator<'_>,
    x0: &Tensor,
    gamma: f64,
    sigma: f64,
    cg_max_iter: usize,
    seeds: &[u64],
) -> Result<PcsOutput> {
    let op = dop.operator();
    crate::pcs::check_exact_sigma(op, sigma)?;
    let (b, c, h, w) = x0.dims4()?;
    let (n, ml) = (c * h * w, op.measurement_len());
    let (dev, dtype) = (x0.device().clone(), x0.dtype());
    let mut z1 = Vec::with_capacity(b * ml);
    let mut z2 = Vec::with_capacity(b * n);
    for &s in seeds {
        let mut r = StdRng::seed_from_u64(s);
        z1.extend((0..ml).map(|_| -> f64 { StandardNormal.sample(&mut r) }));
        z2.extend((0..n).map(|_| -> f64 { StandardNormal.sample(&mut r) }));
    }
    let y = dop.measurement();
    let mut yshape = vec![b];
    yshape.extend_from_slice(&y.dims()[1..]);
    let up = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
        Ok(Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(&dev)?)
    };
    let ytil = y.broadcast_add(&(up(z1, &yshape)? * sigma)?)?;
    let xtil = (x0 + (up(z2, &[b, c, h, w])? * gamma)?)?;
    let (s2, g2) = (sigma * sigma, gamma * gamma);
    let rhs = ((dop.adjoint(&ytil)? / s2)? + (xtil / g2)?)?;
    let (alpha, beta) = (1.0 / s2, 1.0 / g2);
    let samples = match dop.solve_shifted_gram(&rhs, alpha, beta) {
        Some(r) => r?,
        None => {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-5 };
            cg_device(
                |v| {
                    let g = dop.vjp(v, &dop.forward(v)?)?;
                    Ok(((g * alpha)? + (v * beta)?)?)
                },
                &rhs,
                tol,
                cg_max_iter,
            )?
        }
    };
    Ok(PcsOutput {
        samples,
        acceptance: vec![1.0; b],
    })
}

/// Batched conjugate gradients on the device: solves M x_b = rhs_b for every batch element
/// from x = 0 (M symmetric positive definite, applied by `apply`) until every
/// ‖r_b‖ ≤ `rel_tol`·‖rhs_b‖, reading the residuals back every [`CG_CHECK_EVERY`] iterations;
/// errors after `max_iter`.
pub fn cg_device(
    apply: impl Fn(&Tensor) -> Result<Tensor>,
    rhs: &Tensor,
    rel_tol: f64,
    max_iter: usize,
) -> Result<Tensor> {
    let b = rhs.dim(0)?;
    let bcol = |t: &Tensor| -> Result<Tensor> {
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, rhs.rank() - 1));
        Ok(t.reshape(shape)?)
    };
    // a/d where d > 0, else 0 (a converged or zero chain stops moving).
    let safe_div = |a: &Tensor, d: &Tensor| -> Result<Tensor> {
        let pos = d.gt(0.0)?;
        let ones = d.ones_like()?;
        Ok(pos.where_cond(&(a / pos.where_cond(d, &ones)?)?, &d.zeros_like()?)?)
    };
    let mut x = rhs.zeros_like()?;
    let mut r = rhs.clone();
    let mut p = r.clone();
    let mut rr = batch_sum(&r.sqr()?)?;
    let bb: Vec<f64> = rr.to_dtype(DType::F64)?.to_vec1()?;
    for it in 0..=max_iter {
        if it % CG_CHECK_EVERY == 0 || it == max_iter {
            let now: Vec<f64> = rr.to_dtype(DType::F64)?.to_vec1()?;
            let worst = now
                .iter()
                .zip(&bb)
                .map(|(r, b)| if *b > 0.0 { (r / b).sqrt() } else { 0.0 })
                .fold(0.0, f64::max);
            if worst <= rel_tol {
                return Ok(x);
            }
            if !worst.is_finite() {
                return Err(InverseError::Numerical(
                    "device conjugate gradients diverged (non-finite residual)".into(),
                ));
            }
            if it == max_iter {
                return Err(InverseError::Numerical(format!(
                    "device conjugate gradients did not reach relative residual {rel_tol:e} in {max_iter} iterations (at {worst:e})"
                )));
            }
        }
        let ap = apply(&p)?;
        let alpha = safe_div(&rr, &batch_sum(&(&p * &ap)?)?)?;
        x = (x + p.broadcast_mul(&bcol(&alpha)?)?)?;
        r = (r - ap.broadcast_mul(&bcol(&alpha)?)?)?;
        let rr_new = batch_sum(&r.sqr()?)?;
        let beta = safe_div(&rr_new, &rr)?;
        p = (&r + p.broadcast_mul(&bcol(&beta)?)?)?;
        rr = rr_new;
    }
    unreachable!("the loop returns at it == max_iter")
}
