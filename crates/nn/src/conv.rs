//! 2-D convolution whose input gradient is itself a convolution.
//!
//! candle 0.11's backward of `conv2d` calls `conv_transpose2d`, which is a naive loop on CPU
//! (and CUDA): backpropagating through a UNet to its input — what DPS does every step — costs
//! 10–25× a forward pass. [`Conv2d`] computes the same forward (candle's im2col `conv2d`) but on
//! CPU runs it as a custom op whose backward is
//! - input gradient: the convolution of the output gradient (zero-dilated by the stride) with the
//!   spatially flipped, in/out-transposed kernel, padding k − 1 − p, zero-padded at the bottom
//!   and right where the forward dropped rows/columns (when (H + 2p − k) is not a multiple of the
//!   stride);
//! - kernel gradient (only when the kernel is tracked, e.g. a `Var`; loaded weights are not):
//!   the convolution of the input (batch and channels swapped) with the output gradient as
//!   kernel, dilated by the stride.
//!
//! Both are checked against candle's own `conv2d` backward in the tests. Other devices and
//! dtypes use candle's `conv2d` directly (CUDA keeps cuDNN/cuBLAS).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Shape, Tensor};

/// `nn.Conv2d` with bias (square kernel, groups 1, dilation 1).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, padding: usize, stride: usize) -> Self {
        Self {
            weight,
            bias,
            padding,
            stride,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = conv2d(x, &self.weight, self.padding, self.stride)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `x.conv2d(w, padding, stride, 1, 1)` with the fast backward on CPU f32 (see the module docs).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let tracked = x.track_op() || w.track_op();
    if tracked && x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, ConvOp { padding, stride })
    } else {
        // Inference (nothing to differentiate), other devices and dtypes: candle's conv2d.
        x.conv2d(w, padding, stride, 1, 1)
    }
}

/// The custom op: forward = candle's conv2d, backward = convolutions.
#[derive(Debug, Clone, Copy)]
struct ConvOp {
    padding: usize,
    stride: usize,
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("genprior conv2d: {what} must be f32");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("genprior conv2d: {what} must be contiguous"),
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
        let dev = candle_core::Device::Cpu;
        let x = Tensor::from_slice(contiguous_f32(s1, l1, "input")?, l1.shape(), &dev)?;
        let w = Tensor::from_slice(contiguous_f32(s2, l2, "kernel")?, l2.shape(), &dev)?;
        let y = x.conv2d(&w, self.padding, self.stride, 1, 1)?;
        let shape = y.shape().clone();
        let v = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(v), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = if x.track_op() {
            Some(input_grad(x.dims4()?, w, grad, self.padding, self.stride)?)
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

/// Inserts `s − 1` zeros between the rows and columns of `g` (B, C, H, W).
fn dilate(g: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    if s == 1 {
        return Ok(g.clone());
    }
    let (b, c, h, w) = g.dims4()?;
    // (B, C, H, 1, W, 1) padded to (B, C, H, s, W, s), then the trailing zeros cut.
    let g = g.reshape((b, c, h, 1, w, 1))?;
    let g = g.pad_with_zeros(3, 0, s - 1)?.pad_with_zeros(5, 0, s - 1)?;
    g.reshape((b, c, h * s, w * s))?
        .narrow(2, 0, (h - 1) * s + 1)?
        .narrow(3, 0, (w - 1) * s + 1)
}

/// Reverses dims 2 and 3 of a kernel.
fn flip_hw(w: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, kh, kw) = w.dims4()?;
    let dev = w.device();
    let rh = Tensor::new((0..kh as u32).rev().collect::<Vec<_>>(), dev)?;
    let rw = Tensor::new((0..kw as u32).rev().collect::<Vec<_>>(), dev)?;
    w.index_select(&rh, 2)?.index_select(&rw, 3)
}

/// ∂L/∂x of y = conv2d(x, w, p, s) given ∂L/∂y: gx[i] = Σ_k gd[i + p − k] w[k], with gd the
/// output gradient zero-dilated by s, i.e. a stride-1 convolution of the padded gd with the
/// flipped kernel.
fn input_grad(
    (_, _, h, wd): (usize, usize, usize, usize),
    w: &Tensor,
    grad: &Tensor,
    p: usize,
    s: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, kh, kw) = w.dims4()?;
    if kh != kw || p > kh - 1 {
        // Not needed by the networks here; candle's path is correct, just slow.
        let (_, _, oh, _) = grad.dims4()?;
        let out_size = (oh - 1) * s + kh - 2 * p;
        return grad.conv_transpose2d(&w.detach(), p, h - out_size, s, 1);
    }
    let wt = flip_hw(&w.detach())?.transpose(0, 1)?.contiguous()?;
    // Pad k − 1 − p on each side, plus the r = (H + 2p − k) mod s trailing rows/columns the
    // strided forward windows stepped over (they read input but no window starts there).
    let (_, _, oh, ow) = grad.dims4()?;
    let rh = h + 2 * p - kh - (oh - 1) * s;
    let rw = wd + 2 * p - kw - (ow - 1) * s;
    let q = kh - 1 - p;
    let gd = dilate(grad, s)?
        .pad_with_zeros(2, q, q + rh)?
        .pad_with_zeros(3, q, q + rw)?;
    gd.conv2d(&wt, 0, 1, 1, 1)
}

/// ∂L/∂w of y = conv2d(x, w, p, s) given ∂L/∂y.
fn kernel_grad(
    x: &Tensor,
    (_, _, kh, kw): (usize, usize, usize, usize),
    grad: &Tensor,
    p: usize,
    s: usize,
) -> candle_core::Result<Tensor> {
    // (Cin, B, H, W) ⋆ (Cout, B, Ho, Wo) with dilation s → (Cin, Cout, ≥kh, ≥kw).
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
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // Deterministic pseudo-random values in [-1, 1].
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
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
        ];
        for (i, &(b, ci, co, h, wd, k, s, p)) in cases.iter().enumerate() {
            let x = Var::from_tensor(&rand(&[b, ci, h, wd], 10 + i as u64)).unwrap();
            let w = Var::from_tensor(&rand(&[co, ci, k, k], 20 + i as u64)).unwrap();
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
            let up = rand(&[b, co, oh, ow], 30 + i as u64);
            let ours = conv2d(x.as_tensor(), w.as_tensor(), p, s).unwrap();
            let theirs = x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5, "case {i}: forward");
            let lhs = dot(&ours, &up);
            let g1 = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
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
                let g2 = (theirs * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
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
}
