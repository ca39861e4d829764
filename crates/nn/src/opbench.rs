//! Each fast CPU kernel against the candle op it replaces, on the layer shapes of the
//! ddpm-cifar10-32 UNet, timed in the same run (`genprior bench --ops`); also the generic
//! (any-device) convolution input gradient against candle's `conv_transpose2d`, on the CPU.

use std::time::Instant;

use candle_core::{Device, Module, Tensor, Var};

use crate::conv;
use crate::error::{NnError, Result};
use crate::norm::{reference_group_norm, softmax_last_dim, GroupNorm};

/// One kernel timed against candle's op: seconds per call of each.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpTiming {
    pub op: String,
    pub shape: String,
    pub genprior_s: f64,
    pub candle_s: f64,
}

impl OpTiming {
    /// candle's time over genprior's.
    pub fn speedup(&self) -> f64 {
        self.candle_s / self.genprior_s
    }
}

fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / iters.max(1) as f64)
}

fn sync(t: &Tensor) -> Result<()> {
    // CPU ops are eager; reading one value keeps the compiler from dropping the work.
    t.flatten_all()?
        .get(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    Ok(())
}

fn row(op: &str, shape: &str, genprior_s: f64, candle_s: f64) -> OpTiming {
    OpTiming {
        op: op.into(),
        shape: shape.into(),
        genprior_s,
        candle_s,
    }
}

fn grad_of(g: &candle_core::backprop::GradStore, x: &Var) -> Result<Tensor> {
    g.get(x.as_tensor())
        .cloned()
        .ok_or_else(|| NnError::Candle(candle_core::Error::Msg("no input gradient".into())))
}

/// Convolution forward and input gradient: (Cin, Cout, size, kernel, stride, padding).
fn conv_rows(b: usize, iters: usize, rows: &mut Vec<OpTiming>) -> Result<()> {
    let dev = Device::Cpu;
    for &(ci, co, s, k, st, p) in &[
        (128usize, 128usize, 32usize, 3usize, 1usize, 1usize),
        (256, 256, 8, 3, 1, 1),
        (128, 128, 32, 3, 2, 1),
        (256, 128, 16, 1, 1, 0),
    ] {
        let x = Tensor::randn(0f32, 1f32, (b, ci, s, s), &dev)?;
        let w = (Tensor::randn(0f32, 1f32, (co, ci, k, k), &dev)? * 0.05)?;
        let bias = Tensor::randn(0f32, 1f32, co, &dev)?;
        let shape = format!("{b}×{ci}×{s}×{s} → {co}, {k}×{k}/{st}");
        let ours = time(iters, || {
            sync(&conv::conv2d_bias(&x, &w, Some(&bias), p, st)?)
        })?;
        let theirs = time(iters, || {
            let y = x.conv2d(&w, p, st, 1, 1)?;
            sync(&y.broadcast_add(&bias.reshape((1, co, 1, 1))?)?)
        })?;
        rows.push(row("conv2d forward", &shape, ours, theirs));
        // Input gradient: ours through autograd, candle's conv_transpose2d directly.
        let so = (s + 2 * p - k) / st + 1;
        let gy = Tensor::randn(0f32, 1f32, (b, co, so, so), &dev)?;
        let xv = Var::from_tensor(&x)?;
        let ours = time(iters, || {
            let y = conv::conv2d(xv.as_tensor(), &w, p, st)?;
            sync(&grad_of(&(y * &gy)?.sum_all()?.backward()?, &xv)?)
        })?;
        let out_pad = s - ((so - 1) * st + k - 2 * p);
        let theirs = time(iters, || sync(&gy.conv_transpose2d(&w, p, out_pad, st, 1)?))?;
        rows.push(row("conv2d input grad", &shape, ours, theirs));
        // The device-generic input gradient (a forward conv2d of the dilated gradient, what
        // CUDA/Metal and non-f32 dtypes use), timed here on the CPU against the same candle op.
        let generic = time(iters, || {
            sync(&conv::conv2d_input_grad_generic(&gy, &w, (s, s), p, st)?)
        })?;
        rows.push(row("conv2d input grad (generic)", &shape, generic, theirs));
    }
    Ok(())
}

/// Group norm + SiLU, forward and forward + backward: (channels, size).
fn norm_rows(b: usize, iters: usize, rows: &mut Vec<OpTiming>) -> Result<()> {
    let dev = Device::Cpu;
    for &(c, s) in &[(128usize, 32usize), (256, 8)] {
        let x = Tensor::randn(0f32, 1f32, (b, c, s, s), &dev)?;
        let g = Tensor::randn(0f32, 1f32, c, &dev)?;
        let be = Tensor::randn(0f32, 1f32, c, &dev)?;
        let gn = GroupNorm::new(g.clone(), be.clone(), 32, 1e-6)?;
        let shape = format!("{b}×{c}×{s}×{s}, 32 groups");
        let ours = time(iters, || sync(&gn.forward_silu(&x)?))?;
        let theirs = time(iters, || {
            let cgn = candle_nn::GroupNorm::new(g.clone(), be.clone(), c, 32, 1e-6)?;
            sync(&candle_nn::ops::silu(&cgn.forward(&x)?)?)
        })?;
        rows.push(row("groupnorm+silu", &shape, ours, theirs));
        let xv = Var::from_tensor(&x)?;
        let up = Tensor::randn(0f32, 1f32, (b, c, s, s), &dev)?;
        let ours = time(iters, || {
            let y = gn.forward_silu(xv.as_tensor())?;
            sync(&grad_of(&(y * &up)?.sum_all()?.backward()?, &xv)?)
        })?;
        let theirs = time(iters, || {
            let y =
                candle_nn::ops::silu(&reference_group_norm(xv.as_tensor(), &g, &be, 32, 1e-6)?)?;
            sync(&grad_of(&(y * &up)?.sum_all()?.backward()?, &xv)?)
        })?;
        rows.push(row("groupnorm+silu fwd+bwd", &shape, ours, theirs));
    }
    Ok(())
}

/// Every kernel against candle's op at batch `batch`, `iters` timed calls each.
pub fn time_kernels(batch: usize, iters: usize) -> Result<Vec<OpTiming>> {
    let mut rows = Vec::new();
    conv_rows(batch, iters, &mut rows)?;
    norm_rows(batch, iters, &mut rows)?;
    let x = Tensor::randn(0f32, 3f32, (batch, 256, 256), &Device::Cpu)?;
    let ours = time(iters, || sync(&softmax_last_dim(&x)?))?;
    let theirs = time(iters, || sync(&candle_nn::ops::softmax_last_dim(&x)?))?;
    rows.push(row("softmax", &format!("{batch}×256×256"), ours, theirs));
    Ok(rows)
}
