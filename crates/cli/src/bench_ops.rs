//! `genprior bench --ops`: each fast CPU kernel against the candle op it replaces, on the
//! layer shapes of the ddpm-cifar10-32 UNet, timed in the same run.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Module, Tensor, Var};
use genprior_nn::conv;
use genprior_nn::norm::{reference_group_norm, softmax_last_dim, GroupNorm};

fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

fn sync(t: &Tensor) -> Result<()> {
    // CPU ops are eager; reading one value keeps the compiler from dropping the work.
    t.flatten_all()?
        .get(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?;
    Ok(())
}

/// Rows of (op, shape, genprior seconds, candle seconds).
pub fn run(batch: usize, iters: usize, json: bool) -> Result<()> {
    let dev = Device::Cpu;
    let b = batch;
    let mut rows: Vec<(String, String, f64, f64)> = Vec::new();
    // (Cin, Cout, size, kernel, stride, padding)
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
        rows.push(("conv2d forward".into(), shape.clone(), ours, theirs));
        // Input gradient: ours through autograd, candle's conv_transpose2d directly.
        let so = (s + 2 * p - k) / st + 1;
        let gy = Tensor::randn(0f32, 1f32, (b, co, so, so), &dev)?;
        let xv = Var::from_tensor(&x)?;
        let ours = time(iters, || {
            let y = conv::conv2d(xv.as_tensor(), &w, p, st)?;
            let g = (y * &gy)?.sum_all()?.backward()?;
            sync(g.get(xv.as_tensor()).expect("input gradient"))
        })?;
        let out_pad = s - ((so - 1) * st + k - 2 * p);
        let theirs = time(iters, || sync(&gy.conv_transpose2d(&w, p, out_pad, st, 1)?))?;
        rows.push(("conv2d input grad".into(), shape, ours, theirs));
    }
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
        rows.push(("groupnorm+silu".into(), shape.clone(), ours, theirs));
        let xv = Var::from_tensor(&x)?;
        let up = Tensor::randn(0f32, 1f32, (b, c, s, s), &dev)?;
        let ours = time(iters, || {
            let y = gn.forward_silu(xv.as_tensor())?;
            let gr = (y * &up)?.sum_all()?.backward()?;
            sync(gr.get(xv.as_tensor()).expect("gradient"))
        })?;
        let theirs = time(iters, || {
            let y =
                candle_nn::ops::silu(&reference_group_norm(xv.as_tensor(), &g, &be, 32, 1e-6)?)?;
            let gr = (y * &up)?.sum_all()?.backward()?;
            sync(gr.get(xv.as_tensor()).expect("gradient"))
        })?;
        rows.push(("groupnorm+silu fwd+bwd".into(), shape, ours, theirs));
    }
    let x = Tensor::randn(0f32, 3f32, (b, 256, 256), &dev)?;
    let ours = time(iters, || sync(&softmax_last_dim(&x)?))?;
    let theirs = time(iters, || sync(&candle_nn::ops::softmax_last_dim(&x)?))?;
    rows.push(("softmax".into(), format!("{b}×256×256"), ours, theirs));

    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(op, shape, o, t)| {
                serde_json::json!({"op": op, "shape": shape, "genprior_s": o, "candle_s": t, "speedup": t / o})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!("| op | shape | genprior ms | candle ms | speedup |");
        println!("|---|---|---|---|---|");
        for (op, shape, o, t) in &rows {
            println!(
                "| {op} | {shape} | {:.2} | {:.2} | {:.2} |",
                o * 1e3,
                t * 1e3,
                t / o
            );
        }
    }
    Ok(())
}
