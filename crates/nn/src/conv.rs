//! 2-D convolution on the fast CPU kernels, with an input gradient that is itself a GEMM,
//! and on every other device and dtype a backward made of forward convolutions.
//!
//! On CPU f32 tensors [`Conv2d`] runs [`crate::kernels::conv`] as a candle custom op:
//! - forward: Winograd F(2×2, 3×3) for 3×3 stride-1 padding-1 layers on large enough maps
//!   (transformed kernel cached on the layer), otherwise im2col + a SIMD GEMM; bias and an
//!   optional residual are folded in (candle 0.11's CPU conv reaches 14–30 GFLOP/s);
//! - input gradient: for 3×3 stride-1 layers the Winograd convolution of `∂y` with the
//!   flipped, transposed kernel; otherwise `Wᵀ · ∂y` then col2im, the exact adjoint of the
//!   forward (candle's backward calls `conv_transpose2d`, a naive loop, 10–25× a forward pass
//!   — and it takes the output padding from the height only, so it is wrong when H and W
//!   leave different stride remainders);
//! - kernel gradient (only when the kernel is tracked, e.g. a `Var`; loaded weights are not):
//!   the convolution of the input (batch and channels swapped) with the output gradient as
//!   kernel, dilated by the stride; bias gradient: the sum of the output gradient.
//!
//! Other devices (CUDA, Metal) and dtypes (f64, f16, bf16) take the generic path
//! ([`conv2d_generic`]): the forward is candle's `conv2d` (cuDNN or im2col + cuBLAS on CUDA,
//! im2col + GEMM on Metal and CPU); without a tracked input or kernel that is all. When a
//! gradient is wanted, candle's own backward would again call `conv_transpose2d` (a naive
//! loop kernel on CUDA and CPU, the same remainder bug) and would compute the kernel gradient
//! even for constant weights. candle's backward for `conv2d` cannot be replaced, so the
//! forward result is computed detached and re-attached to `x` and `w` by a custom op
//! (`GenericGradOp`) whose forward is a device copy of it (one output-sized copy, only when a
//! gradient is tracked: a custom op must return fresh storage, and candle offers no way to
//! build a device conv from inside one) and whose backward is made of tensor ops that run on
//! the tensors' own device:
//! - input gradient ([`conv2d_input_grad_generic`]): `∂y` dilated by the stride (s − 1 zeros
//!   between entries, built by zero-padding a reshaped view and reshaping back), zero-padded by
//!   k − 1 − p on each side plus the stride remainder (H + 2p − k) mod s at the far end so the
//!   result has the input's exact size, then a stride-1 `conv2d` with the kernel flipped in
//!   both spatial axes and with its channel axes swapped;
//! - kernel gradient ([`conv2d_kernel_grad_generic`], only for a tracked kernel): the
//!   convolution of the input with the output gradient as kernel, as above.
//!
//! All are checked against candle's own `conv2d` and its backward in the tests, the generic
//! path also against the CPU custom op and the adjoint identities in f64.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, MetalStorage, Module, Shape,
    Storage, Tensor,
};

use std::sync::{Arc, Mutex};

use crate::kernels::conv::{conv2d_forward, conv2d_input_grad, conv2d_kernel_grad, ConvGeom};
use crate::kernels::winograd::{self, transform_kernel};
use crate::{cpu_f32, profile};

/// `nn.Conv2d` with bias (groups 1, dilation 1).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    label: &'static str,
    /// The Winograd-transformed kernel (16/9 the weight's size), made on first use by a
    /// 3×3 stride-1 layer on CPU f32 with constant weights.
    wino: std::sync::OnceLock<Option<Arc<Vec<f32>>>>,
    /// The same for the input gradient (the flipped, transposed kernel), made on first
    /// backward pass.
    wino_grad: Arc<std::sync::OnceLock<Vec<f32>>>,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, padding: usize, stride: usize) -> Self {
        let label = match (weight.dims().get(2..4), stride) {
            (Some([1, 1]), 1) => "conv1x1",
            (Some([3, 3]), 1) => "conv3x3",
            (Some([3, 3]), 2) => "conv3x3/stride2",
            _ => "conv/other",
        };
        Self {
            weight,
            bias,
            padding,
            stride,
            label,
            wino: std::sync::OnceLock::new(),
            wino_grad: Arc::default(),
        }
    }

    /// The input-gradient Winograd cache, shared with the ops this layer creates (constant
    /// weights only; a tracked kernel gets a fresh one per call).
    fn wino_cache(&self) -> Arc<std::sync::OnceLock<Vec<f32>>> {
        if self.weight.track_op() {
            Arc::default()
        } else {
            self.wino_grad.clone()
        }
    }

    /// The cached Winograd kernel, when this layer can use one.
    fn wino(&self) -> Option<Arc<Vec<f32>>> {
        let w = &self.weight;
        let eligible = self.stride == 1
            && self.padding == 1
            && w.dims().get(2..4) == Some(&[3, 3][..])
            && w.device().is_cpu()
            && w.dtype() == DType::F32
            && !w.track_op();
        if !eligible {
            return None;
        }
        self.wino
            .get_or_init(|| {
                let (co, ci, _, _) = w.dims4().ok()?;
                let v = w.flatten_all().ok()?.to_vec1::<f32>().ok()?;
                Some(Arc::new(transform_kernel(&v, co, ci)))
            })
            .clone()
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Conv2d {
    /// `self.forward(x) + residual`, with the addition folded into the convolution on CPU f32
    /// (the GEMM accumulates onto the residual: no extra pass, no extra tensor).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let _t = profile::scope(self.label);
        let bias_ok = self
            .bias
            .as_ref()
            .is_none_or(|b| !b.track_op() && b.dtype() == DType::F32);
        if fast_path(x, &self.weight) && residual.dtype() == DType::F32 && bias_ok {
            let bias = match &self.bias {
                Some(b) => Some(b.to_vec1::<f32>()?),
                None => None,
            };
            let op = ConvResidualOp {
                conv: ConvOp {
                    padding: self.padding,
                    stride: self.stride,
                    wino: self.wino(),
                    wino_grad: self.wino_cache(),
                },
                bias,
            };
            x.contiguous()?
                .apply_op3(&self.weight.contiguous()?, &residual.contiguous()?, op)
        } else {
            conv2d_bias(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.padding,
                self.stride,
            )? + residual
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _t = profile::scope(self.label);
        conv2d_bias(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.padding,
            self.stride,
        )
    }
}

fn fast_path(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 && x.rank() == 4
}

/// `x.conv2d(w, padding, stride, 1, 1)` on the fast CPU kernels (see the module docs).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    conv2d_bias(x, w, None, padding, stride)
}

/// [`conv2d`] plus a per-output-channel bias.
pub fn conv2d_bias(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    conv2d_impl(x, w, bias, padding, stride, None, Arc::default())
}

fn conv2d_impl(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
    wino: Option<Arc<Vec<f32>>>,
    wino_grad: Arc<std::sync::OnceLock<Vec<f32>>>,
) -> candle_core::Result<Tensor> {
    if fast_path(x, w) && bias.is_none_or(|b| b.dtype() == DType::F32 && b.device().is_cpu()) {
        let op = ConvOp {
            padding,
            stride,
            wino,
            wino_grad,
        };
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        }
    } else {
        // Other devices and dtypes: candle's conv2d, our backward.
        let y = conv2d_generic(x, w, padding, stride)?;
        match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// The custom op: forward and input gradient on the kernels.
#[derive(Debug, Clone)]
struct ConvOp {
    padding: usize,
    stride: usize,
    wino: Option<Arc<Vec<f32>>>,
    wino_grad: Arc<std::sync::OnceLock<Vec<f32>>>,
}

impl ConvOp {
    fn geom(&self, x: &Shape, w: &Shape) -> candle_core::Result<ConvGeom> {
        let (batch, cin, h, wd) = x.dims4()?;
        let (cout, cin_w, kh, kw) = w.dims4()?;
        if cin != cin_w {
            candle_core::bail!(
                "conv2d: input has {cin} channels but the kernel expects {cin_w} ({x:?} vs {w:?})"
            );
        }
        let g = ConvGeom {
            batch,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            stride: self.stride,
            padding: self.padding,
        };
        g.check().map_err(candle_core::Error::msg)?;
        Ok(g)
    }

    fn run(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        bias: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.shape(), l2.shape())?;
        let x = cpu_f32(s1, l1, "conv2d input")?;
        let w = cpu_f32(s2, l2, "conv2d kernel")?;
        if let Some(b) = bias {
            if b.len() != g.cout {
                candle_core::bail!(
                    "conv2d: bias has {} entries for {} channels",
                    b.len(),
                    g.cout
                );
            }
        }
        let (ho, wo) = g.out_hw();
        let y = conv2d_forward(
            &g,
            x,
            w,
            bias,
            None,
            self.wino.as_deref().map(|v| v.as_slice()),
        );
        Ok((CpuStorage::F32(y), Shape::from((g.batch, g.cout, ho, wo))))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = if x.track_op() {
            let op = InputGradOp {
                geom: self.geom(x.shape(), w.shape())?,
                wino: self.wino_grad.clone(),
            };
            Some(
                grad.contiguous()?
                    .apply_op2_no_bwd(&w.detach().contiguous()?, &op)?,
            )
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(kernel_grad(x, w.dims4()?, grad, self.padding, self.stride)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "genprior-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, grad)
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "genprior-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let b = cpu_f32(s3, l3, "conv2d bias")?;
        self.run((s1, l1), (s2, l2), Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.grads(x, w, grad)?;
        let gb = if b.track_op() {
            Some(grad.sum((0, 2, 3))?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// `conv2d(x, w) + bias + residual` (args x, w, residual; the bias is a constant).
struct ConvResidualOp {
    conv: ConvOp,
    bias: Option<Vec<f32>>,
}

impl CustomOp3 for ConvResidualOp {
    fn name(&self) -> &'static str {
        "genprior-conv2d-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.conv.geom(l1.shape(), l2.shape())?;
        let x = cpu_f32(s1, l1, "conv2d input")?;
        let w = cpu_f32(s2, l2, "conv2d kernel")?;
        let r = cpu_f32(s3, l3, "conv2d residual")?;
        let (ho, wo) = g.out_hw();
        let shape = Shape::from((g.batch, g.cout, ho, wo));
        if l3.shape() != &shape {
            candle_core::bail!(
                "conv2d: residual {:?} does not match the output {shape:?}",
                l3.shape()
            );
        }
        if let Some(b) = &self.bias {
            if b.len() != g.cout {
                candle_core::bail!(
                    "conv2d: bias has {} entries for {} channels",
                    b.len(),
                    g.cout
                );
            }
        }
        let wino = self.conv.wino.as_deref().map(|v| v.as_slice());
        let y = conv2d_forward(&g, x, w, self.bias.as_deref(), Some(r), wino);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.conv.grads(x, w, grad)?;
        Ok((gx, gw, r.track_op().then(|| grad.clone())))
    }
}

/// `∂L/∂x` from `∂L/∂y` (arg 1) and the kernel (arg 2) on the kernels.
struct InputGradOp {
    geom: ConvGeom,
    wino: Arc<std::sync::OnceLock<Vec<f32>>>,
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "genprior-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let _t = profile::scope("conv/input-grad");
        let g = &self.geom;
        let gy = cpu_f32(s1, l1, "conv2d output gradient")?;
        let w = cpu_f32(s2, l2, "conv2d kernel")?;
        let (ho, wo) = g.out_hw();
        if l1.shape().dims() != [g.batch, g.cout, ho, wo] {
            candle_core::bail!("conv2d backward: gradient shape {:?}", l1.shape());
        }
        // 3×3, stride 1, padding 1: ∂L/∂x = conv3x3(∂L/∂y, w̃) with w̃[ci, co] = w[co, ci]
        // flipped in both axes — a forward Winograd convolution.
        let flipped = ConvGeom {
            batch: g.batch,
            cin: g.cout,
            h: ho,
            w: wo,
            cout: g.cin,
            ..*g
        };
        let gx = if (g.kh, g.kw, g.stride, g.padding) == (3, 3, 1, 1) && winograd::applies(&flipped)
        {
            let u = self.wino.get_or_init(|| {
                winograd::transform_kernel(&flip_transpose(w, g.cout, g.cin), g.cin, g.cout)
            });
            let mut gx = vec![0f32; g.batch * g.cin * g.h * g.w];
            winograd::conv3x3_accumulate(&flipped, gy, &[], Some(u), &mut gx);
            gx
        } else {
            conv2d_input_grad(g, gy, w)
        };
        Ok((CpuStorage::F32(gx), Shape::from((g.batch, g.cin, g.h, g.w))))
    }
}

/// `w̃[ci][co][2 − i][2 − j] = w[co][ci][i][j]` for a 3×3 kernel `w` (Co × Ci × 3 × 3).
fn flip_transpose(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for a in 0..3 {
                for b in 0..3 {
                    out[((i * co + o) * 3 + (2 - a)) * 3 + (2 - b)] =
                        w[((o * ci + i) * 3 + a) * 3 + b];
                }
            }
        }
    }
    out
}

/// `∂L/∂w` from the input (arg 1) and `∂L/∂y` (arg 2) on the kernels: im2col bands and GEMMs.
struct KernelGradOp {
    geom: ConvGeom,
}

impl CustomOp2 for KernelGradOp {
    fn name(&self) -> &'static str {
        "genprior-conv2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let x = cpu_f32(s1, l1, "conv2d input")?;
        let gy = cpu_f32(s2, l2, "conv2d output gradient")?;
        let (ho, wo) = g.out_hw();
        if l1.shape().dims() != [g.batch, g.cin, g.h, g.w]
            || l2.shape().dims() != [g.batch, g.cout, ho, wo]
        {
            candle_core::bail!(
                "conv2d kernel gradient: input {:?} and gradient {:?} do not match {g:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let dw = conv2d_kernel_grad(g, x, gy);
        Ok((
            CpuStorage::F32(dw),
            Shape::from((g.cout, g.cin, g.kh, g.kw)),
        ))
    }
}

/// ∂L/∂w of y = conv2d(x, w, p, s) given ∂L/∂y.
fn kernel_grad(
    x: &Tensor,
    (_, _, kh, kw): (usize, usize, usize, usize),
    grad: &Tensor,
    p: usize,
    s: usize,
) -> candle_core::Result<Tensor> {
    let _t = profile::scope("conv/kernel-grad");
    if fast_path(x, grad) {
        let (batch, cin, h, w) = x.dims4()?;
        let (_, cout, _, _) = grad.dims4()?;
        let geom = ConvGeom {
            batch,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride: s,
            padding: p,
        };
        geom.check().map_err(candle_core::Error::msg)?;
        return x
            .detach()
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &KernelGradOp { geom });
    }
    conv2d_kernel_grad_generic(x, grad, (kh, kw), p, s)
}

/// `∂L/∂w` of `y = conv2d(x, w, padding, stride)` from `∂L/∂y`, in candle ops that run on any
/// device: `(Cin, B, H, W) ⋆ (Cout, B, Ho, Wo)` with dilation `stride` gives
/// `(Cin, Cout, ≥kh, ≥kw)`; the first `kh × kw` taps, channels swapped back, are the gradient.
pub fn conv2d_kernel_grad_generic(
    x: &Tensor,
    grad: &Tensor,
    (kh, kw): (usize, usize),
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let _t = profile::scope("conv/kernel-grad-generic");
    let xt = x.detach().transpose(0, 1)?.contiguous()?;
    let gt = grad.transpose(0, 1)?.contiguous()?;
    let g = xt.conv2d(&gt, padding, 1, stride, 1)?;
    g.narrow(2, 0, kh)?
        .narrow(3, 0, kw)?
        .transpose(0, 1)?
        .contiguous()
}

/// `x.conv2d(w, padding, stride, 1, 1)` on any device and dtype with the generic backward of
/// the module docs: candle's forward, and when `x` or `w` is tracked, gradients from
/// [`conv2d_input_grad_generic`] and [`conv2d_kernel_grad_generic`] instead of candle's
/// `conv_transpose2d`. [`conv2d`] takes this path wherever the CPU f32 kernels do not apply;
/// calling it directly forces it (the tests do, on the CPU).
pub fn conv2d_generic(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    if !x.track_op() && !w.track_op() {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let y = x.detach().conv2d(&w.detach(), padding, stride, 1, 1)?;
    x.apply_op2(
        w,
        GenericGradOp {
            y: Mutex::new(Some(y)),
            padding,
            stride,
        },
    )
}

/// Re-attaches a detached `conv2d(x, w)` (held until the forward takes it, so the graph keeps
/// only the copy) to `x` and `w`, with the generic backward.
struct GenericGradOp {
    y: Mutex<Option<Tensor>>,
    padding: usize,
    stride: usize,
}

/// A fresh contiguous copy of `(s, l)` on its own device.
fn copy_out<S>(s: &S, l: &Layout) -> candle_core::Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    // SAFETY: `copy_strided_src` writes every element of the new buffer before it is read.
    let mut dst = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
    s.copy_strided_src(&mut dst, 0, l)?;
    Ok((dst, l.shape().clone()))
}

impl GenericGradOp {
    /// Copies the held result out with `pick`, which selects this backend's storage.
    fn take<S>(&self, pick: impl Fn(&Storage) -> Option<&S>) -> candle_core::Result<(S, Shape)>
    where
        S: BackendStorage,
        S::Device: BackendDevice<Storage = S>,
    {
        let y = self
            .y
            .lock()
            .map_err(|_| candle_core::Error::msg("conv2d: poisoned lock"))?
            .take()
            .ok_or_else(|| candle_core::Error::msg("conv2d: the generic op ran twice"))?;
        let (storage, layout) = y.storage_and_layout();
        match pick(&storage) {
            Some(s) => copy_out(s, layout),
            None => candle_core::bail!("conv2d: result on another device than its input"),
        }
    }
}

impl CustomOp2 for GenericGradOp {
    fn name(&self) -> &'static str {
        "genprior-conv2d-generic-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.take(|s| match s {
            Storage::Cpu(s) => Some(s),
            _ => None,
        })
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.take(|s| match s {
            Storage::Cuda(s) => Some(s),
            _ => None,
        })
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        self.take(|s| match s {
            Storage::Metal(s) => Some(s),
            _ => None,
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(test)]
        tests::GENERIC_BWD.with(|c| c.set(c.get() + 1));
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = if x.track_op() {
            Some(conv2d_input_grad_generic(
                grad,
                &w.detach(),
                (h, wd),
                self.padding,
                self.stride,
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(conv2d_kernel_grad_generic(
                x,
                grad,
                (kh, kw),
                self.padding,
                self.stride,
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `∂L/∂x` of `y = conv2d(x, w, padding, stride)` (x of spatial size `input_hw`) from
/// `grad = ∂L/∂y`, in candle ops that run on any device (see the module docs): the stride-1
/// convolution of `grad`, dilated by the stride and padded to the input's size, with `w`
/// flipped and transposed. The work is one forward convolution over the dilated map, so it
/// runs wherever `conv2d` is fast (cuDNN, im2col + GEMM).
pub fn conv2d_input_grad_generic(
    grad: &Tensor,
    w: &Tensor,
    (h, wd): (usize, usize),
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let _t = profile::scope("conv/input-grad-generic");
    let (n, co, ho, wo) = grad.dims4()?;
    let (co_w, ci, kh, kw) = w.dims4()?;
    let (p, s) = (padding, stride);
    let out = |size: usize, k: usize| (size + 2 * p >= k).then(|| (size + 2 * p - k) / s + 1);
    if co != co_w || s == 0 || out(h, kh) != Some(ho) || out(wd, kw) != Some(wo) {
        candle_core::bail!(
            "conv2d input gradient: gradient {:?} and kernel {:?} do not fit an input of {h}×{wd} \
             (padding {p}, stride {s})",
            grad.dims(),
            w.dims()
        );
    }
    // Where the last output tap stops short of the padded input's end.
    let (rh, rw) = ((h + 2 * p - kh) % s, (wd + 2 * p - kw) % s);
    let d = dilate(&grad.contiguous()?, s, (rh, rw))?;
    // A stride-1 correlation padded by k − 1 − p (the remainder is already in `d`); negative
    // (p ≥ k) crops instead. conv2d pads both axes alike, so the common part goes there.
    let (lh, lw) = (kh as isize - 1 - p as isize, kw as isize - 1 - p as isize);
    let common = lh.min(lw).max(0);
    let d = pad_or_crop(&d, 2, lh - common)?;
    let d = pad_or_crop(&d, 3, lw - common)?;
    let gx = d.conv2d(&flip_transpose_kernel(w)?, common as usize, 1, 1, 1)?;
    if gx.dims() != [n, ci, h, wd] {
        candle_core::bail!(
            "conv2d input gradient: got {:?}, expected {:?}",
            gx.dims(),
            [n, ci, h, wd]
        );
    }
    Ok(gx)
}

/// `g` (N, C, Ho, Wo) with s − 1 zeros between entries along both spatial axes and `r` more
/// zeros at the far end of each: (N, C, (Ho − 1)s + 1 + rh, (Wo − 1)s + 1 + rw), `r < s`.
fn dilate(g: &Tensor, s: usize, (rh, rw): (usize, usize)) -> candle_core::Result<Tensor> {
    if s == 1 {
        return Ok(g.clone());
    }
    let (n, c, ho, wo) = g.dims4()?;
    // Each entry becomes the corner of an s × s block of zeros.
    let d = g
        .reshape((n, c, ho, 1, wo, 1))?
        .pad_with_zeros(5, 0, s - 1)?
        .pad_with_zeros(3, 0, s - 1)?
        .reshape((n, c, ho * s, wo * s))?;
    let (hd, wdd) = ((ho - 1) * s + 1 + rh, (wo - 1) * s + 1 + rw);
    if (hd, wdd) == (ho * s, wo * s) {
        Ok(d)
    } else {
        d.narrow(2, 0, hd)?.narrow(3, 0, wdd)?.contiguous()
    }
}

/// `e` zeros on both sides of axis `dim`, or for negative `e`, |e| entries off both sides.
fn pad_or_crop(t: &Tensor, dim: usize, e: isize) -> candle_core::Result<Tensor> {
    let m = e.unsigned_abs();
    match e.cmp(&0) {
        std::cmp::Ordering::Greater => t.pad_with_zeros(dim, m, m),
        std::cmp::Ordering::Less => t.narrow(dim, m, t.dim(dim)? - 2 * m),
        std::cmp::Ordering::Equal => Ok(t.clone()),
    }
}

/// `w̃[ci][co][kh − 1 − i][kw − 1 − j] = w[co][ci][i][j]` on `w`'s device: flipping both axes
/// reverses the flattened `kh·kw` axis, one `index_select`.
fn flip_transpose_kernel(w: &Tensor) -> candle_core::Result<Tensor> {
    let (co, ci, kh, kw) = w.dims4()?;
    let kk = kh * kw;
    let flipped = if kk == 1 {
        w.clone()
    } else {
        let rev: Vec<u32> = (0..kk as u32).rev().collect();
        let rev = Tensor::from_vec(rev, kk, w.device())?;
        w.reshape((co, ci, kk))?
            .index_select(&rev, 2)?
            .reshape((co, ci, kh, kw))?
    };
    flipped.transpose(0, 1)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{grads, max_diff};
    use candle_core::Var;

    thread_local! {
        /// Backward passes of the generic op on this thread.
        pub(super) static GENERIC_BWD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// (B, Cin, Cout, H, W, k, stride, padding).
    pub(super) type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

    pub(super) const CASES: [Case; 18] = [
        (1, 3, 4, 8, 8, 3, 1, 1),
        (2, 5, 3, 9, 7, 3, 1, 1),
        (2, 4, 6, 8, 8, 3, 2, 1),
        (3, 4, 2, 9, 9, 3, 2, 1),
        (1, 2, 3, 10, 7, 3, 2, 0),
        (2, 6, 5, 7, 7, 1, 1, 0),
        (1, 3, 3, 11, 6, 3, 3, 1),
        (4, 1, 8, 5, 5, 3, 1, 1),
        (2, 3, 4, 16, 16, 3, 2, 0),
        (1, 2, 2, 6, 6, 3, 1, 2),
        // Several im2col bands per image (K·Wo·Ho > COL_BUDGET), batch 1 and 2.
        (1, 64, 8, 64, 64, 3, 1, 1),
        (2, 64, 4, 63, 65, 3, 2, 1),
        // Batch larger than the thread count, odd sizes, stride 2.
        (8, 3, 5, 13, 11, 3, 2, 1),
        // 1×1 (the GEMM-only path), 1×1 with stride 2 (im2col path), 5×5 with padding 2.
        (1, 7, 9, 5, 5, 1, 1, 0),
        (5, 16, 3, 1, 1, 1, 1, 0),
        (1, 2, 3, 9, 9, 1, 2, 0),
        (2, 4, 4, 7, 7, 5, 1, 2),
        // The UNet's smallest feature map.
        (3, 16, 16, 4, 4, 3, 1, 1),
    ];

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        crate::test_util::rand(shape, seed, 1.0)
    }

    fn dot(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_dtype(DType::F64).unwrap() * b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Forward equals candle's conv2d; the gradients satisfy the adjoint identities
    /// ⟨conv(x, w), u⟩ = ⟨x, ∂x⟩ = ⟨w, ∂w⟩ (the map is linear in each argument) and equal
    /// candle's own backward wherever that one works (it takes the output padding from the
    /// height only, so it fails when height and width leave different stride remainders).
    #[test]
    fn matches_candle_conv2d_and_the_adjoint_identities() {
        for (i, &(b, ci, co, h, wd, k, s, p)) in CASES.iter().enumerate() {
            let x = Var::from_tensor(&rand(&[b, ci, h, wd], 10 + i as u64)).unwrap();
            let w = Var::from_tensor(&rand(&[co, ci, k, k], 20 + i as u64)).unwrap();
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
            let up = rand(&[b, co, oh, ow], 30 + i as u64);
            let ours = conv2d(x.as_tensor(), w.as_tensor(), p, s).unwrap();
            let theirs = x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap();
            // Different summation orders: allow f32 rounding growing with the sum length K.
            let tol = 1e-6 * (ci * k * k) as f32;
            let e = max_diff(&ours, &theirs);
            assert!(e < tol, "case {i}: forward off by {e} (tolerance {tol})");
            let lhs = dot(&ours, &up);
            let g1 = grads(&ours, &up);
            let (gx1, gw1) = (
                g1.get(x.as_tensor()).unwrap(),
                g1.get(w.as_tensor()).unwrap(),
            );
            assert_eq!(gx1.dims(), x.as_tensor().dims(), "case {i}");
            assert_eq!(gw1.dims(), w.as_tensor().dims(), "case {i}");
            let (rx, rw) = (dot(x.as_tensor(), gx1), dot(w.as_tensor(), gw1));
            let tol = 1e-4 * (1.0 + lhs.abs());
            assert!(
                (lhs - rx).abs() < tol,
                "case {i}: ⟨Ax, u⟩ {lhs} vs ⟨x, ∂x⟩ {rx}"
            );
            assert!(
                (lhs - rw).abs() < tol,
                "case {i}: ⟨Ax, u⟩ {lhs} vs ⟨w, ∂w⟩ {rw}"
            );
            let same_remainder = (h + 2 * p - k) % s == (wd + 2 * p - k) % s && h == wd;
            if same_remainder {
                let g2 = grads(&theirs, &up);
                let (gx2, gw2) = (
                    g2.get(x.as_tensor()).unwrap(),
                    g2.get(w.as_tensor()).unwrap(),
                );
                assert!(
                    max_diff(gx1, gx2) < 1e-4,
                    "case {i}: input gradient off by {}",
                    max_diff(gx1, gx2)
                );
                assert!(
                    max_diff(gw1, gw2) < 1e-3,
                    "case {i}: kernel gradient off by {}",
                    max_diff(gw1, gw2)
                );
            }
        }
    }

    /// A constant kernel gets no gradient; the input gradient is still right; the module adds
    /// the bias.
    #[test]
    fn constant_kernel_and_bias() {
        let x = Var::from_tensor(&rand(&[2, 3, 6, 6], 1)).unwrap();
        let w = rand(&[4, 3, 3, 3], 2);
        let b = rand(&[4], 3);
        let m = Conv2d::new(w.clone(), Some(b.clone()), 1, 1);
        let y = m.forward(x.as_tensor()).unwrap();
        let reference = x
            .as_tensor()
            .conv2d(&w, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        assert!(max_diff(&y, &reference) < 1e-5);
        let g1 = y.sum_all().unwrap().backward().unwrap();
        let g2 = reference.sum_all().unwrap().backward().unwrap();
        assert!(g1.get(&w).is_none());
        assert!(
            max_diff(
                g1.get(x.as_tensor()).unwrap(),
                g2.get(x.as_tensor()).unwrap()
            ) < 1e-4
        );
        // Inference inputs record no op.
        let plain = rand(&[1, 3, 6, 6], 4);
        assert!(!m.forward(&plain).unwrap().track_op());
    }

    /// The residual-fused convolution equals convolution + addition, forward and backward.
    #[test]
    fn fused_residual_matches_conv_plus_add() {
        for (i, &(b, ci, co, h, s, p)) in [
            (2usize, 3usize, 4usize, 7usize, 1usize, 1usize),
            (1, 5, 2, 8, 2, 1),
            (3, 4, 4, 5, 1, 0),
            // Large enough for the Winograd kernels (cached on the layer).
            (2, 3, 4, 16, 1, 1),
        ]
        .iter()
        .enumerate()
        {
            let k = if p == 0 { 1 } else { 3 };
            let x = Var::from_tensor(&rand(&[b, ci, h, h], 40 + i as u64)).unwrap();
            let m = Conv2d::new(rand(&[co, ci, k, k], 41), Some(rand(&[co], 42)), p, s);
            let ho = (h + 2 * p - k) / s + 1;
            let r = Var::from_tensor(&rand(&[b, co, ho, ho], 43)).unwrap();
            let up = rand(&[b, co, ho, ho], 44);
            let fused = m.forward_add(x.as_tensor(), r.as_tensor()).unwrap();
            let plain = (m.forward(x.as_tensor()).unwrap() + r.as_tensor()).unwrap();
            assert!(max_diff(&fused, &plain) < 1e-5, "case {i}");
            let g1 = grads(&fused, &up);
            let g2 = grads(&plain, &up);
            for v in [x.as_tensor(), r.as_tensor()] {
                assert!(
                    max_diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-5,
                    "case {i}"
                );
            }
            // Again, through the layer's cached kernels, against candle's ops.
            for _ in 0..2 {
                let y = m.forward(x.as_tensor()).unwrap();
                let reference = x
                    .as_tensor()
                    .conv2d(m.weight(), p, s, 1, 1)
                    .unwrap()
                    .broadcast_add(&m.bias().unwrap().reshape((1, co, 1, 1)).unwrap())
                    .unwrap();
                assert!(max_diff(&y, &reference) < 1e-5, "case {i}: cached forward");
                let g3 = grads(&y, &up);
                let g4 = grads(&reference, &up);
                let e = max_diff(
                    g3.get(x.as_tensor()).unwrap(),
                    g4.get(x.as_tensor()).unwrap(),
                );
                assert!(e < 1e-5, "case {i}: cached input gradient off by {e}");
            }
        }
        // A residual of the wrong shape is an error, not garbage.
        let m = Conv2d::new(rand(&[2, 3, 3, 3], 1), None, 1, 1);
        assert!(m
            .forward_add(&rand(&[1, 3, 5, 5], 2), &rand(&[1, 2, 4, 5], 3))
            .is_err());
    }
}

/// The generic backward ([`conv2d_generic`], [`conv2d_input_grad_generic`]) against the CPU
/// custom op, candle's `conv_transpose2d` backward and the adjoint identities, in f32 and f64.
#[cfg(test)]
mod generic_tests {
    use super::tests::{Case, CASES, GENERIC_BWD};
    use super::*;
    use crate::test_util::grads;
    use candle_core::Var;

    /// Cases only the generic path is asked to do: padding ≥ kernel (the correlation crops).
    const EXTRA: [Case; 3] = [
        (2, 3, 4, 5, 6, 1, 1, 1),
        (1, 2, 3, 7, 8, 1, 2, 1),
        (2, 3, 2, 6, 5, 3, 2, 3),
    ];

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        crate::test_util::rand(shape, seed, 1.0)
    }

    fn f64(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F64).unwrap()
    }

    fn scalar(t: Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// max |a − b| / (1 + max |b|), in f64 whatever the dtypes.
    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (f64(a), f64(b));
        let d = scalar((&a - &b).unwrap().abs().unwrap().max_all().unwrap());
        d / (1.0 + scalar(b.abs().unwrap().max_all().unwrap()))
    }

    /// ⟨a, b⟩ and Σ |aᵢ bᵢ| (the scale its rounding error is relative to), in f64.
    fn dot(a: &Tensor, b: &Tensor) -> (f64, f64) {
        let p = (f64(a) * f64(b)).unwrap();
        (
            scalar(p.sum_all().unwrap()),
            scalar(p.abs().unwrap().sum_all().unwrap()),
        )
    }

    /// `⟨lhs⟩ = ⟨rhs⟩` to `tol` relative to the larger of their term scales.
    fn assert_adjoint(lhs: (f64, f64), rhs: (f64, f64), tol: f64, what: &str) {
        let scale = 1.0 + lhs.1.max(rhs.1);
        assert!(
            (lhs.0 - rhs.0).abs() < tol * scale,
            "{what}: {} vs {} (scale {scale})",
            lhs.0,
            rhs.0
        );
    }

    fn out_hw(h: usize, wd: usize, k: usize, s: usize, p: usize) -> (usize, usize) {
        ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1)
    }

    /// The input gradient alone, from `∂y` and a constant kernel: against the CPU custom op
    /// (f32), against candle's `conv_transpose2d` (f32 and f64; only where it is right: equal
    /// height and width stride remainders, whose value it takes as output padding), and in
    /// f64 against the adjoint identity ⟨conv(x, w), u⟩ = ⟨x, ∂x⟩ on every case.
    #[test]
    fn input_grad_matches_the_custom_op_and_conv_transpose2d() {
        for (i, &(b, ci, co, h, wd, k, s, p)) in CASES.iter().chain(&EXTRA).enumerate() {
            let seed = 100 + 3 * i as u64;
            let x = rand(&[b, ci, h, wd], seed);
            let w = rand(&[co, ci, k, k], seed + 1);
            let (ho, wo) = out_hw(h, wd, k, s, p);
            let gy = rand(&[b, co, ho, wo], seed + 2);
            let generic = conv2d_input_grad_generic(&gy, &w, (h, wd), p, s).unwrap();
            let xv = Var::from_tensor(&x).unwrap();
            let fast = grads(&conv2d(xv.as_tensor(), &w, p, s).unwrap(), &gy);
            let fast = fast.get(xv.as_tensor()).unwrap();
            let e = rel(&generic, fast);
            assert!(e < 1e-5, "case {i}: f32 generic vs custom op {e}");

            let (x64, w64, gy64) = (f64(&x), f64(&w), f64(&gy));
            let g64 = conv2d_input_grad_generic(&gy64, &w64, (h, wd), p, s).unwrap();
            assert_eq!(g64.dtype(), DType::F64);
            let e = rel(fast, &g64);
            assert!(e < 1e-5, "case {i}: f32 custom op vs f64 generic {e}");
            let y64 = x64.conv2d(&w64, p, s, 1, 1).unwrap();
            assert_adjoint(
                dot(&y64, &gy64),
                dot(&x64, &g64),
                1e-12,
                &format!("case {i}: ⟨conv(x), u⟩ vs ⟨x, ∂x⟩"),
            );

            let (rh, rw) = ((h + 2 * p - k) % s, (wd + 2 * p - k) % s);
            if rh == rw {
                let t32 = gy.conv_transpose2d(&w, p, rh, s, 1).unwrap();
                let t64 = gy64.conv_transpose2d(&w64, p, rh, s, 1).unwrap();
                let e = rel(&generic, &t32);
                assert!(e < 1e-5, "case {i}: f32 generic vs conv_transpose2d {e}");
                let e = rel(&g64, &t64);
                assert!(e < 1e-12, "case {i}: f64 generic vs conv_transpose2d {e}");
            }
        }
        // A gradient that does not fit the input is an error.
        let w = rand(&[2, 3, 3, 3], 1);
        assert!(conv2d_input_grad_generic(&rand(&[1, 2, 4, 4], 2), &w, (9, 9), 1, 1).is_err());
        assert!(conv2d_input_grad_generic(&rand(&[1, 3, 9, 9], 2), &w, (9, 9), 1, 1).is_err());
    }

    /// A full backward through the generic op with tracked input and kernel: f64 (which
    /// [`conv2d`] sends down the generic path) against candle's autograd and the adjoint
    /// identities to round-off, and f32 forced with [`conv2d_generic`] against the CPU custom
    /// op.
    #[test]
    fn full_backward_matches_candle_and_the_custom_op() {
        for (i, &(b, ci, co, h, wd, k, s, p)) in CASES.iter().chain(&EXTRA).enumerate() {
            let seed = 200 + 3 * i as u64;
            let (x, w) = (rand(&[b, ci, h, wd], seed), rand(&[co, ci, k, k], seed + 1));
            let (ho, wo) = out_hw(h, wd, k, s, p);
            let up = rand(&[b, co, ho, wo], seed + 2);
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            let (x64, w64, up64) = (f64(&x), f64(&w), f64(&up));
            let (xv64, wv64) = (
                Var::from_tensor(&x64).unwrap(),
                Var::from_tensor(&w64).unwrap(),
            );
            let (xt, wt) = (xv64.as_tensor(), wv64.as_tensor());

            let before = GENERIC_BWD.with(|c| c.get());
            let y64 = conv2d(xt, wt, p, s).unwrap();
            let e = rel(&y64, &x64.conv2d(&w64, p, s, 1, 1).unwrap());
            assert!(e < 1e-14, "case {i}: f64 forward {e}");
            let g = grads(&y64, &up64);
            assert_eq!(GENERIC_BWD.with(|c| c.get()), before + 1, "case {i}");
            let (gx64, gw64) = (g.get(xt).unwrap(), g.get(wt).unwrap());
            assert_eq!((gx64.dims(), gw64.dims()), (x.dims(), w.dims()), "case {i}");
            let lhs = dot(&y64, &up64);
            assert_adjoint(lhs, dot(xt, gx64), 1e-12, &format!("case {i}: ∂x"));
            assert_adjoint(lhs, dot(wt, gw64), 1e-12, &format!("case {i}: ∂w"));
            let (rh, rw) = ((h + 2 * p - k) % s, (wd + 2 * p - k) % s);
            if rh == rw {
                let c = grads(&xt.conv2d(wt, p, s, 1, 1).unwrap(), &up64);
                let e = rel(gx64, c.get(xt).unwrap());
                assert!(e < 1e-12, "case {i}: f64 ∂x vs candle {e}");
                let e = rel(gw64, c.get(wt).unwrap());
                assert!(e < 1e-12, "case {i}: f64 ∂w vs candle {e}");
            }

            // f32, forced onto the generic path, against the custom op.
            let (xt, wt) = (xv.as_tensor(), wv.as_tensor());
            let y = conv2d_generic(xt, wt, p, s).unwrap();
            let g = grads(&y, &up);
            let f = grads(&conv2d(xt, wt, p, s).unwrap(), &up);
            for (what, v, tol) in [("∂x", xt, 1e-5), ("∂w", wt, 1e-5)] {
                let e = rel(g.get(v).unwrap(), f.get(v).unwrap());
                assert!(e < tol, "case {i}: f32 generic {what} vs custom op {e}");
            }
            let e = rel(g.get(xt).unwrap(), gx64);
            assert!(e < 1e-5, "case {i}: f32 generic ∂x vs f64 {e}");
        }
        // Nothing tracked: candle's conv2d, no op recorded.
        let y = conv2d_generic(&rand(&[1, 2, 5, 5], 1), &rand(&[3, 2, 3, 3], 2), 1, 1).unwrap();
        assert!(!y.track_op());
    }

    /// y = silu(conv(x)) → silu(conv/stride 2) → silu(conv1x1) → conv3x3 + residual, with bias.
    fn stack(layers: &[Conv2d; 4], x: &Tensor) -> Tensor {
        let silu = |t: Tensor| candle_nn::ops::silu(&t).unwrap();
        let h = silu(layers[0].forward(x).unwrap());
        let h = silu(layers[1].forward(&h).unwrap());
        let h = silu(layers[2].forward(&h).unwrap());
        layers[3].forward_add(&h, &h).unwrap()
    }

    /// The same in candle's own ops (its autograd: `conv_transpose2d`).
    fn candle_stack(layers: &[Conv2d; 4], x: &Tensor) -> Tensor {
        let conv = |l: &Conv2d, t: &Tensor, p, s| {
            let b = l.bias().unwrap();
            t.conv2d(l.weight(), p, s, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap())
                .unwrap()
        };
        let silu = |t: Tensor| candle_nn::ops::silu(&t).unwrap();
        let h = silu(conv(&layers[0], x, 1, 1));
        let h = silu(conv(&layers[1], &h, 1, 2));
        let h = silu(conv(&layers[2], &h, 0, 1));
        (conv(&layers[3], &h, 1, 1) + &h).unwrap()
    }

    /// The input gradient of a small conv stack (odd, non-square maps, a stride-2 layer, 1×1,
    /// fused residual) in f64 runs every convolution's backward on the generic op and equals
    /// candle's autograd to round-off and the f32 network on the CPU custom ops to f32 rounding.
    #[test]
    fn conv_stack_backward_through_the_generic_path() {
        let shapes = [(4, 3, 3), (6, 4, 3), (5, 6, 1), (5, 5, 3)];
        let pads = [(1, 1), (1, 2), (0, 1), (1, 1)];
        let layers = |dtype: DType| -> [Conv2d; 4] {
            std::array::from_fn(|j| {
                let (co, ci, k) = shapes[j];
                let w = (rand(&[co, ci, k, k], 300 + j as u64) * 0.4).unwrap();
                let b = rand(&[co], 310 + j as u64);
                let (p, s) = pads[j];
                Conv2d::new(
                    w.to_dtype(dtype).unwrap(),
                    Some(b.to_dtype(dtype).unwrap()),
                    p,
                    s,
                )
            })
        };
        let (l32, l64) = (layers(DType::F32), layers(DType::F64));
        let x = rand(&[2, 3, 9, 11], 320);
        let up = rand(&[2, 5, 5, 6], 321);
        let (x64, up64) = (f64(&x), f64(&up));

        let xv64 = Var::from_tensor(&x64).unwrap();
        let before = GENERIC_BWD.with(|c| c.get());
        let y64 = stack(&l64, xv64.as_tensor());
        assert_eq!(y64.dims(), up.dims());
        let g = grads(&y64, &up64);
        assert_eq!(GENERIC_BWD.with(|c| c.get()), before + 4);
        let gx64 = g.get(xv64.as_tensor()).unwrap();
        // No gradient for the constant weights.
        assert!(g.get(l64[0].weight()).is_none());

        let reference = grads(&candle_stack(&l64, xv64.as_tensor()), &up64);
        let e = rel(gx64, reference.get(xv64.as_tensor()).unwrap());
        assert!(e < 1e-12, "f64 stack: generic vs candle autograd {e}");

        let xv = Var::from_tensor(&x).unwrap();
        let g32 = grads(&stack(&l32, xv.as_tensor()), &up);
        let e = rel(g32.get(xv.as_tensor()).unwrap(), gx64);
        assert!(e < 1e-5, "f32 custom ops vs f64 generic {e}");
    }
}
