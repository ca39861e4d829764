//! Operators as device tensors: forward maps, vector–Jacobian products, likelihoods and
//! shifted-Gram solves written in candle ops, so they run on whatever device the tensors live
//! on (CPU, CUDA, Metal) in f32 or f64, with no host round trip.
//!
//! The host operators ([`Operator::forward_host`] and friends, f64 on host buffers) stay the
//! reference; a task that can run on a device says so by returning a [`DeviceMap`] from
//! [`Operator::device_map`], built from its own host-side description (its mask, matrices,
//! kernel spectrum). [`DeviceOperator`] composes that map with the noise model's device
//! likelihood ([`NoiseModel::device_log_likelihood_and_grad`]) and a measurement uploaded once.
//!
//! Building blocks, shared by the operator files:
//! - [`right_mul`] / [`left_mul`]: a batch of matrices times a fixed matrix, as one 2-D matmul;
//! - [`Separable`]: X ↦ L X Rᵀ per channel (super-resolution's resize matrices);
//! - [`Cx`] and [`CxSeparable`]: complex tensors as (re, im) pairs and Z ↦ L Z Rᵀ with complex
//!   L, R — a 2-D DFT as two matrix products (candle has no FFT; F X Fᵀ is exact and runs on
//!   any backend), with padding, cropping and (i)fftshift folded into the matrices;
//! - [`dft_matrix`]: the 1-D DFT matrices (plain, centred, orthonormal, padded);
//! - [`SparseRows`]: a fixed sparse matrix in ELLPACK form for S and Sᵀ, applied with
//!   `index_select`, a product and a sum — no scatter, so no atomics and deterministic on GPUs
//!   (CT's ray-driven projector);
//! - [`Dense`]: a dense matrix on flattened images (compressed sensing).
//!
//! Images are `(B, C, H, W)`; measurements `(B, ...measurement_shape())` as on the host.

use candle_core::{DType, Device, Tensor, D};

use crate::error::{InverseError, Result};
use crate::operator::Operator;

/// A forward map A on device tensors, batched (see the module docs).
pub trait DeviceMap: Send + Sync {
    /// A(x): `(B, C, H, W)` → `(B, ...measurement_shape())`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// J(x)ᵀv for a measurement-shaped `v` (Aᵀv for a linear map, `x` unused).
    fn vjp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor>;
    /// (α AᵀA + β I)⁻¹ rhs when AᵀA is diagonal or Fourier-diagonal; `None`: use CG.
    fn solve_shifted_gram(&self, _rhs: &Tensor, _alpha: f64, _beta: f64) -> Option<Result<Tensor>> {
        None
    }
}

/// Uploads a row-major host buffer as a tensor of `shape`.
pub fn upload(v: &[f64], shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// `x · m` for `x` of shape `(..., K)` and a matrix `m` of shape `(K, N)`: one 2-D matmul.
pub fn right_mul(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("rank ≥ 1");
    let rows = x.elem_count() / k.max(1);
    let n = m.dim(1)?;
    let mut out = dims;
    *out.last_mut().expect("rank ≥ 1") = n;
    Ok(x.contiguous()?
        .reshape((rows, k))?
        .matmul(m)?
        .reshape(out)?)
}

/// `m · x` for `x` of shape `(..., H, W)` and a matrix `m` of shape `(P, H)`, given `mt = mᵀ`:
/// `(xᵀ mᵀ)ᵀ` with one 2-D matmul.
pub fn left_mul(mt: &Tensor, x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    Ok(right_mul(&x.transpose(r - 2, r - 1)?, mt)?.transpose(r - 2, r - 1)?)
}

/// A real matrix and its transpose on a device.
#[derive(Clone)]
pub struct Mat {
    pub m: Tensor,
    pub t: Tensor,
}

impl Mat {
    /// From a row-major `rows × cols` host matrix.
    pub fn new(v: &[f64], rows: usize, cols: usize, device: &Device, dtype: DType) -> Result<Self> {
        let m = upload(v, &[rows, cols], device, dtype)?;
        let t = m.t()?.contiguous()?;
        Ok(Self { m, t })
    }
}

/// X ↦ L X Rᵀ on the last two axes (see the module docs).
#[derive(Clone)]
pub struct Separable {
    pub l: Mat,
    pub r: Mat,
}

impl Separable {
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        right_mul(&left_mul(&self.l.t, x)?, &self.r.t)
    }
    /// Lᵀ Y R.
    pub fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        right_mul(&left_mul(&self.l.m, y)?, &self.r.m)
    }
}

/// A complex tensor as its real and imaginary parts (same shape).
#[derive(Clone, Debug)]
pub struct Cx {
    pub re: Tensor,
    pub im: Tensor,
}

impl Cx {
    /// A real tensor as a complex one (zero imaginary part).
    pub fn real(re: Tensor) -> Result<Self> {
        let im = re.zeros_like()?;
        Ok(Self { re, im })
    }
    /// Elementwise product (broadcasting).
    pub fn mul(&self, o: &Cx) -> Result<Cx> {
        Ok(Cx {
            re: (self.re.broadcast_mul(&o.re)? - self.im.broadcast_mul(&o.im)?)?,
            im: (self.re.broadcast_mul(&o.im)? + self.im.broadcast_mul(&o.re)?)?,
        })
    }
    /// Elementwise product with a real tensor (broadcasting).
    pub fn scale(&self, s: &Tensor) -> Result<Cx> {
        Ok(Cx {
            re: self.re.broadcast_mul(s)?,
            im: self.im.broadcast_mul(s)?,
        })
    }
    /// The complex conjugate.
    pub fn conj(&self) -> Result<Cx> {
        Ok(Cx {
            re: self.re.clone(),
            im: self.im.neg()?,
        })
    }
    /// |z|.
    pub fn abs(&self) -> Result<Tensor> {
        Ok((self.re.sqr()? + self.im.sqr()?)?.sqrt()?)
    }
    /// Sum of two complex tensors.
    pub fn add(&self, o: &Cx) -> Result<Cx> {
        Ok(Cx {
            re: (&self.re + &o.re)?,
            im: (&self.im + &o.im)?,
        })
    }
}

/// A complex matrix (re, im) and the pieces needed to apply it and its adjoint from either
/// side.
#[derive(Clone)]
pub struct CxMat {
    re: Mat,
    im: Mat,
}

impl CxMat {
    /// From a row-major `rows × cols` host matrix of (re, im) pairs.
    pub fn new(
        v: &[(f64, f64)],
        rows: usize,
        cols: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let re: Vec<f64> = v.iter().map(|p| p.0).collect();
        let im: Vec<f64> = v.iter().map(|p| p.1).collect();
        Ok(Self {
            re: Mat::new(&re, rows, cols, device, dtype)?,
            im: Mat::new(&im, rows, cols, device, dtype)?,
        })
    }
}

/// Z ↦ L Z Rᵀ with complex L (`P × H`) and R (`Q × W`) on the last two axes; its adjoint is
/// W ↦ Lᴴ W R̄.
#[derive(Clone)]
pub struct CxSeparable {
    pub l: CxMat,
    pub r: CxMat,
}

impl CxSeparable {
    /// L Z Rᵀ.
    pub fn apply(&self, z: &Cx) -> Result<Cx> {
        // L Z: (Lr + iLi)(Zr + iZi).
        let (lr, li) = (&self.l.re.t, &self.l.im.t);
        let a = Cx {
            re: (left_mul(lr, &z.re)? - left_mul(li, &z.im)?)?,
            im: (left_mul(lr, &z.im)? + left_mul(li, &z.re)?)?,
        };
        // (L Z) Rᵀ.
        let (rr, ri) = (&self.r.re.t, &self.r.im.t);
        Ok(Cx {
            re: (right_mul(&a.re, rr)? - right_mul(&a.im, ri)?)?,
            im: (right_mul(&a.re, ri)? + right_mul(&a.im, rr)?)?,
        })
    }
    /// L X Rᵀ for a real X (half the products of [`CxSeparable::apply`]).
    pub fn apply_real(&self, x: &Tensor) -> Result<Cx> {
        let a = Cx {
            re: left_mul(&self.l.re.t, x)?,
            im: left_mul(&self.l.im.t, x)?,
        };
        let (rr, ri) = (&self.r.re.t, &self.r.im.t);
        Ok(Cx {
            re: (right_mul(&a.re, rr)? - right_mul(&a.im, ri)?)?,
            im: (right_mul(&a.re, ri)? + right_mul(&a.im, rr)?)?,
        })
    }
    /// Lᴴ W R̄.
    pub fn adjoint(&self, w: &Cx) -> Result<Cx> {
        // Lᴴ W = (Lrᵀ − i Liᵀ)(Wr + iWi); left_mul takes the transpose of its left factor,
        // so Lᵀ's transpose is L itself.
        let (lr, li) = (&self.l.re.m, &self.l.im.m);
        let a = Cx {
            re: (left_mul(lr, &w.re)? + left_mul(li, &w.im)?)?,
            im: (left_mul(lr, &w.im)? - left_mul(li, &w.re)?)?,
        };
        // (Lᴴ W) R̄ = A (Rr − i Ri).
        let (rr, ri) = (&self.r.re.m, &self.r.im.m);
        Ok(Cx {
            re: (right_mul(&a.re, rr)? + right_mul(&a.im, ri)?)?,
            im: (right_mul(&a.im, rr)? - right_mul(&a.re, ri)?)?,
        })
    }
}

/// The 1-D DFT conventions [`dft_matrix`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DftKind {
    /// Unnormalised, natural order: F[k][n] = e^{−2πi kn/N}.
    Plain,
    /// Orthonormal, centred on both sides: fftshift ∘ F/√N ∘ ifftshift.
    CentredOrtho,
    /// Orthonormal with the output fftshifted only: fftshift ∘ F/√N.
    ShiftedOrtho,
}

/// The `n_out × n_in` matrix of a 1-D DFT of length `n_out` applied to a length-`n_in` signal
/// zero-padded to `n_out` with the signal at `offset` (`n_in = n_out`, `offset = 0` for no
/// padding), as (re, im) pairs.
pub fn dft_matrix(kind: DftKind, n_out: usize, n_in: usize, offset: usize) -> Vec<(f64, f64)> {
    let n = n_out;
    let h = n / 2;
    let (scale, shift_out, shift_in) = match kind {
        DftKind::Plain => (1.0, 0, 0),
        DftKind::CentredOrtho => (1.0 / (n as f64).sqrt(), h, h),
        DftKind::ShiftedOrtho => (1.0 / (n as f64).sqrt(), h, 0),
    };
    let mut out = Vec::with_capacity(n_out * n_in);
    for k in 0..n_out {
        // fftshift: output k holds frequency (k − ⌊N/2⌋) mod N.
        let f = (k + n - shift_out) % n;
        for j in 0..n_in {
            // ifftshift: input position p holds x[(p + ⌊N/2⌋) mod N], so sample q sits at
            // position (q − ⌊N/2⌋) mod N.
            let q = (j + offset + n - shift_in) % n;
            let phase = -2.0 * std::f64::consts::PI * ((f * q) % n) as f64 / n as f64;
            out.push((scale * phase.cos(), scale * phase.sin()));
        }
    }
    out
}

/// One direction of a [`SparseRows`] matrix in ELLPACK form: every output has `k` (index,
/// weight) slots, padded with weight 0, so a product is one gather, one multiply and one sum
/// (no scatter, hence no atomics on GPUs and the same result on every run).
#[derive(Clone)]
struct Ell {
    n_out: usize,
    k: usize,
    idx: Tensor,
    weight: Tensor,
}

impl Ell {
    fn new(n_out: usize, lists: &[Vec<(u32, f64)>], device: &Device, dtype: DType) -> Result<Self> {
        let k = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut idx = vec![0u32; n_out * k];
        let mut w = vec![0.0; n_out * k];
        for (o, list) in lists.iter().enumerate() {
            for (s, &(i, v)) in list.iter().enumerate() {
                idx[o * k + s] = i;
                w[o * k + s] = v;
            }
        }
        Ok(Self {
            n_out,
            k,
            idx: Tensor::from_vec(idx, n_out * k, device)?,
            weight: upload(&w, &[n_out * k], device, dtype)?,
        })
    }
    /// `(K, n_in)` ↦ `(K, n_out)`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        Ok(x.contiguous()?
            .index_select(&self.idx, 1)?
            .broadcast_mul(&self.weight)?
            .reshape((b, self.n_out, self.k))?
            .sum(2)?)
    }
}

/// A fixed sparse matrix (`rows × cols`) applied to the last axis of a batch, stored in
/// ELLPACK form for both S and Sᵀ (see [`Ell`]).
#[derive(Clone)]
pub struct SparseRows {
    fwd: Ell,
    adj: Ell,
}

impl SparseRows {
    /// From (row, column, weight) triplets (duplicates are summed).
    pub fn new(
        rows: usize,
        cols: usize,
        triplets: &[(u32, u32, f64)],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        if let Some(t) = triplets
            .iter()
            .find(|t| t.0 as usize >= rows || t.1 as usize >= cols)
        {
            return Err(InverseError::InvalidArgument(format!(
                "sparse triplet ({}, {}) outside a {rows} × {cols} matrix",
                t.0, t.1
            )));
        }
        let merge = |lists: &mut Vec<Vec<(u32, f64)>>| {
            for l in lists.iter_mut() {
                l.sort_by_key(|e| e.0);
                l.dedup_by(|a, b| {
                    if a.0 == b.0 {
                        b.1 += a.1;
                        true
                    } else {
                        false
                    }
                });
            }
        };
        let mut by_row: Vec<Vec<(u32, f64)>> = vec![Vec::new(); rows];
        let mut by_col: Vec<Vec<(u32, f64)>> = vec![Vec::new(); cols];
        for &(r, c, w) in triplets {
            by_row[r as usize].push((c, w));
            by_col[c as usize].push((r, w));
        }
        merge(&mut by_row);
        merge(&mut by_col);
        Ok(Self {
            fwd: Ell::new(rows, &by_row, device, dtype)?,
            adj: Ell::new(cols, &by_col, device, dtype)?,
        })
    }
    /// `x` `(K, cols)` ↦ `(K, rows)`: y = S x per row of the batch.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.fwd.apply(x)
    }
    /// `y` `(K, rows)` ↦ `(K, cols)`: Sᵀ y.
    pub fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.adj.apply(y)
    }
}

/// A dense `m × n` matrix applied to flattened images.
#[derive(Clone)]
pub struct Dense {
    mat: Mat,
}

impl Dense {
    pub fn new(a: &[f64], m: usize, n: usize, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self {
            mat: Mat::new(a, m, n, device, dtype)?,
        })
    }
    /// `(B, n)` ↦ `(B, m)`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.matmul(&self.mat.t)?)
    }
    /// `(B, m)` ↦ `(B, n)`.
    pub fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.contiguous()?.matmul(&self.mat.m)?)
    }
}

/// Per-batch-element sums: `(B, ...)` → `(B,)`.
pub fn batch_sum(t: &Tensor) -> Result<Tensor> {
    Ok(t.flatten_from(1)?.sum(D::Minus1)?)
}

/// How a [`DeviceOperator`] evaluates A: its tensor ops, or (on the CPU, for tasks whose
/// host FFT beats DFT-as-matmul there) the host operator image by image.
#[derive(Clone)]
enum Eval {
    Tensor(std::sync::Arc<dyn DeviceMap>),
    Host { ys: std::sync::Arc<Vec<f64>> },
}

/// An operator on a device: its [`DeviceMap`], its noise model's device likelihood and a
/// measurement batch uploaded once (batch 1, shared by every chain, or the chain count).
///
/// On the CPU, a task that says its host form is faster there
/// ([`Operator::host_faster_on_cpu`]: the FFT-based ones and CT) is evaluated through its host
/// operator ([`DeviceOperator::new`] with `host_on_cpu`), which is what "keep the host FFT on
/// the CPU, selected per device" means; everywhere else, and whenever `host_on_cpu` is false,
/// through its tensor ops.
#[derive(Clone)]
pub struct DeviceOperator<'a> {
    op: &'a dyn Operator,
    eval: Eval,
    y: Tensor,
    by: usize,
}

impl<'a> DeviceOperator<'a> {
    /// The device form of `op` against the (already validated) host measurements `ys` of
    /// batch `by`, on `device` in `dtype` (f32 or f64); `None` when the task or its noise model
    /// has no device form. `host_on_cpu`: on the CPU, evaluate tasks that are faster on the
    /// host (see the type docs) with their host operator.
    pub fn new(
        op: &'a dyn Operator,
        ys: &[f64],
        by: usize,
        device: &Device,
        dtype: DType,
        host_on_cpu: bool,
    ) -> Result<Option<Self>> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(InverseError::InvalidArgument(format!(
                "device operators run in f32 or f64, not {dtype:?}"
            )));
        }
        if !op.noise().has_device_likelihood() {
            return Ok(None);
        }
        op.noise()
            .check_likelihood()
            .map_err(|msg| InverseError::InvalidOption {
                task: op.name().to_string(),
                msg,
            })?;
        let eval = if host_on_cpu && device.is_cpu() && op.host_faster_on_cpu() {
            Eval::Host {
                ys: std::sync::Arc::new(ys.to_vec()),
            }
        } else {
            match op.device_map(device, dtype)? {
                Some(map) => Eval::Tensor(std::sync::Arc::from(map)),
                None => return Ok(None),
            }
        };
        let mut shape = vec![by];
        shape.extend(op.measurement_shape());
        let y = upload(ys, &shape, device, dtype)?;
        Ok(Some(Self { op, eval, y, by }))
    }

    /// Whether `op` has a device form at all (task and noise model).
    pub fn available(op: &dyn Operator, device: &Device) -> Result<bool> {
        Ok(op.noise().has_device_likelihood() && op.device_map(device, DType::F32)?.is_some())
    }

    pub fn operator(&self) -> &dyn Operator {
        self.op
    }
    /// The uploaded measurement batch.
    pub fn measurement(&self) -> &Tensor {
        &self.y
    }
    /// The dtype it computes in.
    pub fn dtype(&self) -> DType {
        self.y.dtype()
    }

    /// A(x).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.eval {
            Eval::Tensor(map) => map.forward(x),
            Eval::Host { .. } => self.op.forward(x),
        }
    }

    /// J(x)ᵀv.
    pub fn vjp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor> {
        match &self.eval {
            Eval::Tensor(map) => map.vjp(x, v),
            Eval::Host { .. } => {
                let (n, m) = (self.op.image_len(), self.op.measurement_len());
                let (xs, vs) = (crate::host::to_host(x)?, crate::host::to_host(v)?);
                let mut out = Vec::with_capacity(xs.len());
                for (xi, vi) in xs.chunks_exact(n).zip(vs.chunks_exact(m)) {
                    out.extend(self.op.vjp_host(xi, vi)?);
                }
                crate::host::from_host(out, x.dims(), x.device(), x.dtype())
            }
        }
    }

    /// (α AᵀA + β I)⁻¹ rhs where the task has a direct solve.
    pub fn solve_shifted_gram(
        &self,
        rhs: &Tensor,
        alpha: f64,
        beta: f64,
    ) -> Option<Result<Tensor>> {
        match &self.eval {
            Eval::Tensor(map) => map.solve_shifted_gram(rhs, alpha, beta),
            Eval::Host { .. } => {
                let run = || -> Option<Result<Tensor>> {
                    let n = self.op.image_len();
                    let rs = match crate::host::to_host(rhs) {
                        Ok(v) => v,
                        Err(e) => return Some(Err(e)),
                    };
                    let mut out = Vec::with_capacity(rs.len());
                    for ri in rs.chunks_exact(n) {
                        match self.op.solve_shifted_gram_host(ri, alpha, beta)? {
                            Ok(v) => out.extend(v),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    Some(crate::host::from_host(
                        out,
                        rhs.dims(),
                        rhs.device(),
                        rhs.dtype(),
                    ))
                };
                run()
            }
        }
    }

    /// (L(x_b; y_b) as a `(B,)` tensor, ∇ₓL shaped like `x`).
    pub fn log_likelihood_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.eval {
            Eval::Tensor(map) => {
                let z = map.forward(x)?;
                let (l, gz) = self
                    .op
                    .noise()
                    .device_log_likelihood_and_grad(&z, &self.y)
                    .ok_or_else(|| {
                        InverseError::Unsupported(format!(
                            "the {} noise model has no device likelihood",
                            self.op.noise().name()
                        ))
                    })??;
                Ok((l, map.vjp(x, &gz)?))
            }
            Eval::Host { ys } => {
                let (n, m) = (self.op.image_len(), self.op.measurement_len());
                let xs = crate::host::to_host(x)?;
                let b = xs.len() / n;
                // Images on host threads, as the host PCS loop runs its chains.
                let one = |i: usize| -> Result<(f64, Vec<f64>)> {
                    let j = if self.by == 1 { 0 } else { i };
                    self.op.log_likelihood_and_grad_host(
                        &xs[i * n..(i + 1) * n],
                        &ys[j * m..(j + 1) * m],
                    )
                };
                let parts: Vec<Result<(f64, Vec<f64>)>> = if b == 1 {
                    vec![one(0)]
                } else {
                    std::thread::scope(|sc| {
                        let hs: Vec<_> = (0..b).map(|i| sc.spawn(move || one(i))).collect();
                        hs.into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    Err(InverseError::Numerical(
                                        "a likelihood thread panicked".into(),
                                    ))
                                })
                            })
                            .collect()
                    })
                };
                let mut ls = Vec::with_capacity(b);
                let mut gs = Vec::with_capacity(xs.len());
                for p in parts {
                    let (l, g) = p?;
                    ls.push(l);
                    gs.extend(g);
                }
                Ok((
                    crate::host::from_host(ls, &[b], x.device(), x.dtype())?,
                    crate::host::from_host(gs, x.dims(), x.device(), x.dtype())?,
                ))
            }
        }
    }

    /// Aᵀv (linear operators).
    pub fn adjoint(&self, v: &Tensor) -> Result<Tensor> {
        if !self.op.is_linear() {
            return Err(InverseError::Unsupported(format!(
                "task `{}` is not linear: it has no adjoint",
                self.op.name()
            )));
        }
        let [c, h, w] = self.op.image_shape();
        let b = v.dim(0)?;
        // A linear map's vjp does not read its point x; give it one of the image's shape.
        let x = Tensor::zeros((b, c, h, w), v.dtype(), v.device())?;
        self.vjp(&x, v)
    }
}
/// A = diag(d) on images (`d` of length C·H·W), or the identity (`d = None`): denoising,
/// one-bit (with its sign noise), inpainting.
pub struct Diagonal {
    d: Option<Tensor>,
}

impl Diagonal {
    pub fn new(
        d: Option<&[f64]>,
        shape: [usize; 3],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let [c, h, w] = shape;
        Ok(Self {
            d: d.map(|d| upload(d, &[1, c, h, w], device, dtype))
                .transpose()?,
        })
    }
}

impl DeviceMap for Diagonal {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.d {
            Some(d) => x.broadcast_mul(d)?,
            None => x.clone(),
        })
    }
    fn vjp(&self, _x: &Tensor, v: &Tensor) -> Result<Tensor> {
        self.forward(v)
    }
    fn solve_shifted_gram(&self, rhs: &Tensor, alpha: f64, beta: f64) -> Option<Result<Tensor>> {
        let run = || -> Result<Tensor> {
            Ok(match &self.d {
                Some(d) => rhs.broadcast_div(&d.sqr()?.affine(alpha, beta)?)?,
                None => (rhs / (alpha + beta))?,
            })
        };
        Some(run())
    }
}
