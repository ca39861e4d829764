//! 2-D convolution on the fast CPU kernels, with an input gradient that is itself a GEMM.
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
//! All are checked against candle's own `conv2d` and its backward in the tests. Other devices
//! and dtypes use candle's `conv2d` directly (CUDA keeps cuDNN/cuBLAS).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Shape, Tensor};

use std::sync::Arc;

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
        // Other devices and dtypes: candle's conv2d.
        let y = x.conv2d(w, padding, stride, 1, 1)?;
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
    // Elsewhere: (Cin, B, H, W) ⋆ (Cout, B, Ho, Wo) with dilation s → (Cin, Cout, ≥kh, ≥kw).
    let xt = x.detach().transpose(0, 1)?.contiguous()?;
    let gt = grad.transpose(0, 1)?.contiguous()?;
    let g = xt.conv2d(&gt, p, 1, s, 1)?;
    g.narrow(2, 0, kh)?
        .narrow(3, 0, kw)?
        .transpose(0, 1)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{grads, max_diff};
    use candle_core::Var;

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
        // (B, Cin, Cout, H, W, k, stride, padding)
        let cases = [
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
        for (i, &(b, ci, co, h, wd, k, s, p)) in cases.iter().enumerate() {
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
