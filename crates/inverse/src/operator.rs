//! The [`Operator`] trait: a measurement model y ~ p(y | x) with forward map, simulation,
//! log-likelihood, its gradient, the adjoint (linear maps) and a classical baseline.
//!
//! Each operator implements a handful of single-image host primitives on flat row-major `f64`
//! buffers (`*_host`); the batched tensor-level methods (`forward`, `simulate`,
//! `log_likelihood`, ...) are provided on top of them. Images are `(B, C, H, W)` tensors in
//! [-1, 1]; a measurement is `(B, ...measurement_shape())`. Wherever a method takes both an image
//! batch and a measurement batch, the measurement batch may be 1 (one `y` shared by all chains)
//! or equal to the image batch.

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{InverseError, Result};
use crate::host::{from_host, to_host};

/// A measurement model. See the module docs for the conventions.
pub trait Operator: Send + Sync {
    /// The task's CLI name (`sr4`, `inpaint-box`, ...).
    fn name(&self) -> &str;
    /// `[C, H, W]` of one image.
    fn image_shape(&self) -> [usize; 3];
    /// Shape of one measurement (without the batch axis).
    fn measurement_shape(&self) -> Vec<usize>;
    /// Standard deviation of the additive Gaussian noise used by [`Operator::simulate`]
    /// (0 for `one-bit`, whose randomness is the logistic dither).
    fn noise_sigma(&self) -> f64;
    /// The likelihood's temperature m, with L(x; y) = −f(x)/(2m²): the σ the Gaussian
    /// likelihood uses (the noise σ unless overridden by `TaskSpec::likelihood_sigma`), τ for
    /// `one-bit`. The PCS step-size rule uses it.
    fn temperature(&self) -> f64;
    /// Whether A is linear (so [`Operator::adjoint`] exists).
    fn is_linear(&self) -> bool;
    /// Whether A is linear and the likelihood Gaussian, L = −‖y − Ax‖²/(2σ²): the PCS target is
    /// then Gaussian and can be sampled exactly.
    fn is_linear_gaussian(&self) -> bool;

    /// A(x) for one image.
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>>;
    /// Aᵀy for one measurement (linear operators only).
    fn adjoint_host(&self, _y: &[f64]) -> Result<Vec<f64>> {
        Err(InverseError::Unsupported(format!(
            "task `{}` is not linear: it has no adjoint",
            self.name()
        )))
    }
    /// (L(x; y), ∇ₓL(x; y)) for one image and one measurement.
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)>;
    /// L(x; y) for one image and one measurement.
    fn log_likelihood_host(&self, x: &[f64], y: &[f64]) -> Result<f64> {
        Ok(self.log_likelihood_and_grad_host(x, y)?.0)
    }
    /// One simulated measurement; default A(x) + σ·z.
    fn simulate_host(&self, x: &[f64], rng: &mut StdRng) -> Result<Vec<f64>> {
        let mut y = self.forward_host(x)?;
        let s = self.noise_sigma();
        if s > 0.0 {
            for v in y.iter_mut() {
                let z: f64 = StandardNormal.sample(rng);
                *v += s * z;
            }
        }
        Ok(y)
    }
    /// The classical baseline reconstruction of one image from one measurement.
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>>;
    /// Task-specific checks of a measurement's values (called after the shape and finiteness
    /// checks), e.g. `one-bit` requires ±1.
    fn check_measurement_values(&self, _y: &[f64]) -> Result<()> {
        Ok(())
    }
    /// Solves (α AᵀA + β I) x = rhs directly when AᵀA is diagonal or FFT-diagonal; `None` means
    /// "no direct solver, use conjugate gradients".
    fn solve_shifted_gram_host(
        &self,
        _rhs: &[f64],
        _alpha: f64,
        _beta: f64,
    ) -> Option<Result<Vec<f64>>> {
        None
    }

    // ---------------------------------------------------------------- provided, batched

    /// Number of values in one image.
    fn image_len(&self) -> usize {
        self.image_shape().iter().product()
    }

    /// Number of values in one measurement.
    fn measurement_len(&self) -> usize {
        self.measurement_shape().iter().product()
    }

    /// Checks that `x` is `(B, C, H, W)` with this operator's image shape; returns B.
    fn check_image(&self, x: &Tensor) -> Result<usize> {
        let [c, h, w] = self.image_shape();
        match x.dims() {
            [b, cc, hh, ww] if *b > 0 && (*cc, *hh, *ww) == (c, h, w) => Ok(*b),
            d => Err(InverseError::ImageShape {
                task: self.name().to_string(),
                msg: format!("expected a batch of shape (B, {c}, {h}, {w}) with B ≥ 1, got {d:?}"),
            }),
        }
    }

    /// Checks a measurement batch: shape `(B, ...measurement_shape())`, finite values, and the
    /// task's own value checks. Returns (B, host copy).
    fn measurement_to_host(&self, y: &Tensor) -> Result<(usize, Vec<f64>)> {
        let ms = self.measurement_shape();
        let d = y.dims();
        if d.len() != ms.len() + 1 || d[1..] != ms[..] || d[0] == 0 {
            let mut expect = String::from("(B");
            for m in &ms {
                expect.push_str(&format!(", {m}"));
            }
            expect.push(')');
            return Err(InverseError::Measurement {
                task: self.name().to_string(),
                msg: format!("expected shape {expect} with B ≥ 1, got {d:?}"),
            });
        }
        let v = to_host(y)?;
        if let Some(i) = v.iter().position(|a| !a.is_finite()) {
            return Err(InverseError::Measurement {
                task: self.name().to_string(),
                msg: format!("non-finite value {} at flat index {i}", v[i]),
            });
        }
        let n = self.measurement_len();
        for chunk in v.chunks_exact(n) {
            self.check_measurement_values(chunk)?;
        }
        Ok((d[0], v))
    }

    /// Validates a measurement batch (see [`Operator::measurement_to_host`]).
    fn validate_measurement(&self, y: &Tensor) -> Result<()> {
        self.measurement_to_host(y).map(|_| ())
    }

    /// A(x), batched: `(B, C, H, W)` → `(B, ...measurement_shape())`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = self.check_image(x)?;
        let xs = to_host(x)?;
        let mut out = Vec::with_capacity(b * self.measurement_len());
        for xi in xs.chunks_exact(self.image_len()) {
            out.extend(self.forward_host(xi)?);
        }
        let mut shape = vec![b];
        shape.extend(self.measurement_shape());
        from_host(out, &shape, x.device(), x.dtype())
    }

    /// Aᵀy, batched (linear operators only).
    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        if !self.is_linear() {
            return Err(InverseError::Unsupported(format!(
                "task `{}` is not linear: it has no adjoint",
                self.name()
            )));
        }
        let (b, ys) = self.measurement_to_host(y)?;
        let mut out = Vec::with_capacity(b * self.image_len());
        for yi in ys.chunks_exact(self.measurement_len()) {
            out.extend(self.adjoint_host(yi)?);
        }
        let [c, h, w] = self.image_shape();
        from_host(out, &[b, c, h, w], y.device(), y.dtype())
    }

    /// Simulated measurements y ~ p(y | x), one per batch element, all randomness from `rng`.
    fn simulate(&self, x: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
        let b = self.check_image(x)?;
        let xs = to_host(x)?;
        let mut out = Vec::with_capacity(b * self.measurement_len());
        for xi in xs.chunks_exact(self.image_len()) {
            out.extend(self.simulate_host(xi, rng)?);
        }
        let mut shape = vec![b];
        shape.extend(self.measurement_shape());
        from_host(out, &shape, x.device(), x.dtype())
    }

    /// L(x_b; y_b) for each batch element (y batch 1 is shared by all x).
    fn log_likelihood(&self, x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
        let (xs, ys, by) = paired_host(self, x, y)?;
        let (n, m) = (self.image_len(), self.measurement_len());
        xs.chunks_exact(n)
            .enumerate()
            .map(|(i, xi)| {
                let j = if by == 1 { 0 } else { i };
                self.log_likelihood_host(xi, &ys[j * m..(j + 1) * m])
            })
            .collect()
    }

    /// (L(x_b; y_b) per batch element, ∇ₓL as a tensor shaped like `x`).
    fn log_likelihood_and_grad(&self, x: &Tensor, y: &Tensor) -> Result<(Vec<f64>, Tensor)> {
        let (xs, ys, by) = paired_host(self, x, y)?;
        let (n, m) = (self.image_len(), self.measurement_len());
        let mut ls = Vec::new();
        let mut gs = Vec::with_capacity(xs.len());
        for (i, xi) in xs.chunks_exact(n).enumerate() {
            let j = if by == 1 { 0 } else { i };
            let (l, g) = self.log_likelihood_and_grad_host(xi, &ys[j * m..(j + 1) * m])?;
            ls.push(l);
            gs.extend(g);
        }
        Ok((ls, from_host(gs, x.dims(), x.device(), x.dtype())?))
    }

    /// ∇ₓL(x; y), shaped like `x`.
    fn grad_log_likelihood(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(self.log_likelihood_and_grad(x, y)?.1)
    }

    /// The data-misfit norm ‖y − A(x)‖ of Gaussian tasks (in general √f with
    /// f = −2m²L, m = [`Operator::temperature`]) and its gradient −m²∇L/√f, per batch element:
    /// the quantity DPS descends (Chung et al. use the non-squared norm). Where √f = 0 the
    /// gradient is 0.
    fn misfit_norm_and_grad(&self, x: &Tensor, y: &Tensor) -> Result<(Vec<f64>, Tensor)> {
        let (xs, ys, by) = paired_host(self, x, y)?;
        let (n, m) = (self.image_len(), self.measurement_len());
        let t2 = self.temperature().powi(2);
        let mut norms = Vec::new();
        let mut gs = Vec::with_capacity(xs.len());
        for (i, xi) in xs.chunks_exact(n).enumerate() {
            let j = if by == 1 { 0 } else { i };
            let (l, g) = self.log_likelihood_and_grad_host(xi, &ys[j * m..(j + 1) * m])?;
            let r = (-2.0 * t2 * l).max(0.0).sqrt();
            norms.push(r);
            gs.extend(
                g.into_iter()
                    .map(|v| if r > 0.0 { -t2 * v / r } else { 0.0 }),
            );
        }
        Ok((norms, from_host(gs, x.dims(), x.device(), x.dtype())?))
    }

    /// Classical baseline reconstruction, `(B, ...)` measurements → `(B, C, H, W)` images.
    fn baseline(&self, y: &Tensor) -> Result<Tensor> {
        let (b, ys) = self.measurement_to_host(y)?;
        let mut out = Vec::with_capacity(b * self.image_len());
        for yi in ys.chunks_exact(self.measurement_len()) {
            out.extend(self.baseline_host(yi)?);
        }
        let [c, h, w] = self.image_shape();
        from_host(out, &[b, c, h, w], y.device(), y.dtype())
    }
}

/// Host copies of an image batch and a measurement batch whose batch is 1 or the image batch.
fn paired_host<O: Operator + ?Sized>(
    op: &O,
    x: &Tensor,
    y: &Tensor,
) -> Result<(Vec<f64>, Vec<f64>, usize)> {
    let b = op.check_image(x)?;
    let (by, ys) = op.measurement_to_host(y)?;
    if by != 1 && by != b {
        return Err(InverseError::Measurement {
            task: op.name().to_string(),
            msg: format!("measurement batch {by} must be 1 or the image batch {b}"),
        });
    }
    Ok((to_host(x)?, ys, by))
}

/// Errors unless the likelihood's σ is positive (a Gaussian likelihood with σ = 0 is degenerate).
pub(crate) fn require_likelihood_sigma(task: &str, sigma: f64) -> Result<f64> {
    if sigma > 0.0 && sigma.is_finite() {
        Ok(sigma)
    } else {
        Err(InverseError::InvalidOption {
            task: task.to_string(),
            msg: format!(
                "the Gaussian likelihood needs a positive σ (got {sigma}); simulate with a positive noise sigma or set a positive likelihood sigma"
            ),
        })
    }
}

/// L = −‖y − Ax‖²/(2σ²) and ∇L = Aᵀ(y − Ax)/σ² for a linear operator.
pub(crate) fn gaussian_linear_ll_grad<O: Operator + ?Sized>(
    op: &O,
    sigma: f64,
    x: &[f64],
    y: &[f64],
) -> Result<(f64, Vec<f64>)> {
    let s = require_likelihood_sigma(op.name(), sigma)?;
    let ax = op.forward_host(x)?;
    let r: Vec<f64> = y.iter().zip(&ax).map(|(a, b)| a - b).collect();
    let l = -crate::linalg::norm2(&r) / (2.0 * s * s);
    let mut g = op.adjoint_host(&r)?;
    g.iter_mut().for_each(|v| *v /= s * s);
    Ok((l, g))
}

/// Clips a buffer to the image range [-1, 1].
pub(crate) fn clip_unit(v: &mut [f64]) {
    v.iter_mut().for_each(|a| *a = a.clamp(-1.0, 1.0));
}
