//! The [`Operator`] trait: a measurement model y ~ p(y | x) made of a forward map A and a
//! [`NoiseModel`] p(y | z = A(x)), with simulation, log-likelihood, its gradient, the adjoint
//! (linear maps) and a classical baseline.
//!
//! An operator implements A on single-image host buffers (`forward_host`, and `adjoint_host`
//! for linear maps or `vjp_host` for nonlinear ones), its baseline, and names its noise model;
//! simulation and the likelihood are provided on top of them: y = noise.simulate(A(x)),
//! L(x; y) = noise.L(A(x); y), ∇ₓL = Jᵀ∇_z L (see [`composed_log_likelihood_and_grad`]). The
//! batched tensor-level methods (`forward`, `simulate`, `log_likelihood`, ...) are provided on
//! top of the host ones. Images are `(B, C, H, W)` tensors in [-1, 1]; a measurement is
//! `(B, ...measurement_shape())`. Wherever a method takes both an image batch and a
//! measurement batch, the measurement batch may be 1 (one `y` shared by all chains) or equal to
//! the image batch.

use candle_core::Tensor;
use rand::rngs::StdRng;

use crate::error::{InverseError, Result};
use crate::host::{from_host, to_host};
use crate::noise::NoiseModel;

/// The task of the DPS / DPnP papers' reference configurations an operator corresponds to, so
/// samplers can key their default hyperparameters on it instead of on task-name strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceTask {
    SuperResolution,
    Inpainting,
    Deblur,
    PhaseRetrieval,
    OneBit,
}

/// A measurement model: forward map plus noise model. See the module docs for the conventions.
pub trait Operator: Send + Sync {
    /// The task's CLI name (`sr4`, `inpaint-box`, ...).
    fn name(&self) -> &str;
    /// `[C, H, W]` of one image.
    fn image_shape(&self) -> [usize; 3];
    /// Shape of one measurement (without the batch axis).
    fn measurement_shape(&self) -> Vec<usize>;
    /// The noise model p(y | z) applied to z = A(x).
    fn noise(&self) -> &dyn NoiseModel;
    /// Whether A is linear (so [`Operator::adjoint`] exists).
    fn is_linear(&self) -> bool;

    /// A(x) for one image.
    fn forward_host(&self, x: &[f64]) -> Result<Vec<f64>>;
    /// Aᵀy for one measurement (linear operators only).
    fn adjoint_host(&self, _y: &[f64]) -> Result<Vec<f64>> {
        Err(InverseError::Unsupported(format!(
            "task `{}` is not linear: it has no adjoint",
            self.name()
        )))
    }
    /// The vector–Jacobian product J(x)ᵀv of A at `x` for a measurement-space `v`; for a linear
    /// operator (the default) Aᵀv. Nonlinear operators implement it.
    fn vjp_host(&self, _x: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        if self.is_linear() {
            self.adjoint_host(v)
        } else {
            Err(InverseError::Unsupported(format!(
                "task `{}` does not implement its vector–Jacobian product",
                self.name()
            )))
        }
    }
    /// The classical baseline reconstruction of one image from one measurement.
    fn baseline_host(&self, y: &[f64]) -> Result<Vec<f64>>;
    /// Checks of a measurement's values (called after the shape and finiteness checks); the
    /// default asks the noise model (e.g. `one-bit` requires ±1).
    fn check_measurement_values(&self, y: &[f64]) -> Result<()> {
        noise_check_measurement(self, y)
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
    /// Whether the measurement cannot tell x from −x (or a per-channel sign flip), as for phase
    /// retrieval, where |F(M x_c)| is unchanged by x_c → −x_c.
    fn sign_ambiguous(&self) -> bool {
        false
    }
    /// Whether an image is complex: 2 channels holding its real and imaginary parts (MRI).
    /// Viewers show the magnitude, and metrics are computed on it.
    fn complex_image(&self) -> bool {
        false
    }
    /// Whether a measurement is complex, stored planar: axis 0 of
    /// [`Operator::measurement_shape`] has length 2 (real part, imaginary part), and files
    /// hold it as a complex `.npy` of the remaining axes.
    fn complex_measurement(&self) -> bool {
        false
    }
    /// The reference task of the DPS / DPnP papers this operator corresponds to, if any.
    fn reference_task(&self) -> Option<ReferenceTask> {
        None
    }
    /// The operator's singular value decomposition A = U S Vᵀ where it is known in closed form
    /// (or cheap), for the SVD-based samplers; `None` (the default) means none is available.
    fn svd(&self) -> Option<&dyn crate::svd::OperatorSvd> {
        None
    }
    /// The forward map as device tensor ops on `device` in `dtype` (f32 or f64), for samplers
    /// that keep their loop on the device (see [`crate::device`]); `None` (the default) means
    /// the task runs on the host only.
    fn device_map(
        &self,
        _device: &candle_core::Device,
        _dtype: candle_core::DType,
    ) -> Result<Option<Box<dyn crate::device::DeviceMap>>> {
        Ok(None)
    }
    /// Whether the host form beats the [`Operator::device_map`] form on the CPU (the
    /// FFT-based tasks, whose device form is a DFT as matrix products, and CT, whose device
    /// projector is padded gathers); a
    /// [`crate::device::DeviceOperator`] on the CPU then evaluates A on the host.
    fn host_faster_on_cpu(&self) -> bool {
        false
    }

    // ---------------------------------------------------------- provided, from A + noise

    /// Standard deviation of the additive Gaussian noise used by [`Operator::simulate`]
    /// (0 for `one-bit`, whose randomness is the logistic dither).
    fn noise_sigma(&self) -> f64 {
        self.noise().noise_sigma()
    }
    /// The likelihood's scale m, with L(x; y) = −f(x)/(2m²): the σ the Gaussian likelihood
    /// uses (the noise σ unless overridden by the `likelihood-sigma` option), τ for `one-bit`.
    /// PCS uses √T·m in its step-size rule unless `--pcs-m` is given; the target's temperature
    /// T lives in the posterior layer (`--likelihood-temperature`), not here.
    fn temperature(&self) -> f64 {
        self.noise().temperature()
    }
    /// Whether A is linear and the likelihood Gaussian, L = −‖y − Ax‖²/(2σ²): the PCS target is
    /// then Gaussian and can be sampled exactly.
    fn is_linear_gaussian(&self) -> bool {
        self.is_linear() && self.noise().is_gaussian()
    }
    /// (L(x; y), ∇ₓL(x; y)) for one image and one measurement; default
    /// [`composed_log_likelihood_and_grad`].
    fn log_likelihood_and_grad_host(&self, x: &[f64], y: &[f64]) -> Result<(f64, Vec<f64>)> {
        composed_log_likelihood_and_grad(self, x, y)
    }
    /// L(x; y) for one image and one measurement.
    fn log_likelihood_host(&self, x: &[f64], y: &[f64]) -> Result<f64> {
        Ok(self.log_likelihood_and_grad_host(x, y)?.0)
    }
    /// One simulated measurement; default [`composed_simulate`], noise.simulate(A(x)).
    fn simulate_host(&self, x: &[f64], rng: &mut StdRng) -> Result<Vec<f64>> {
        composed_simulate(self, x, rng)
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

/// y = noise.simulate(A(x)) for one image.
pub fn composed_simulate<O: Operator + ?Sized>(
    op: &O,
    x: &[f64],
    rng: &mut StdRng,
) -> Result<Vec<f64>> {
    op.noise().simulate(op.forward_host(x)?, rng)
}

/// L(x; y) = noise.L(A(x); y) and ∇ₓL = J(x)ᵀ∇_z L for one image and one measurement: the
/// noise model's factored gradient `direction / divisor` is pulled back by
/// [`Operator::vjp_host`] and then divided, i.e. Aᵀ(y − Ax)/σ² for a linear Gaussian task, in
/// that operation order.
pub fn composed_log_likelihood_and_grad<O: Operator + ?Sized>(
    op: &O,
    x: &[f64],
    y: &[f64],
) -> Result<(f64, Vec<f64>)> {
    let noise = op.noise();
    noise
        .check_likelihood()
        .map_err(|msg| invalid_option(op.name(), msg))?;
    let z = op.forward_host(x)?;
    let lg = noise.log_likelihood_and_grad(&z, y)?;
    let mut g = op.vjp_host(x, &lg.direction)?;
    if lg.divisor != 1.0 {
        g.iter_mut().for_each(|v| *v /= lg.divisor);
    }
    Ok((lg.value, g))
}

/// The noise model's check of a measurement's values, reported with the task name.
pub fn noise_check_measurement<O: Operator + ?Sized>(op: &O, y: &[f64]) -> Result<()> {
    op.noise()
        .check_measurement(y)
        .map_err(|msg| InverseError::Measurement {
            task: op.name().to_string(),
            msg,
        })
}

fn invalid_option(task: &str, msg: String) -> InverseError {
    InverseError::InvalidOption {
        task: task.to_string(),
        msg,
    }
}

/// σ_L of a Gaussian noise model, or the task-named error when it is not positive (a Gaussian
/// likelihood with σ = 0 is degenerate).
pub(crate) fn require_likelihood_sigma(task: &str, g: &crate::noise::Gaussian) -> Result<f64> {
    g.positive_likelihood_sigma()
        .map_err(|msg| invalid_option(task, msg))
}

/// Clips a buffer to the image range [-1, 1].
pub(crate) fn clip_unit(v: &mut [f64]) {
    v.iter_mut().for_each(|a| *a = a.clamp(-1.0, 1.0));
}
