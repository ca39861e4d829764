//! Times the input gradient of the 3×3 convolutions a UNet runs, candle's own backward
//! (`conv_transpose2d`, a naive loop on CPU) against `genprior_nn::conv::conv2d` (the gradient
//! as a convolution), in the same run, and prints the ratio.
//!
//! `cargo run --release -p genprior-nn --example conv_backward [-- BATCH]`

use std::time::Instant;

use candle_core::{Device, Tensor, Var};

fn time<F: FnMut()>(mut f: F) -> f64 {
    f(); // warm-up
    let n = 3;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn main() -> candle_core::Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let dev = Device::Cpu;
    // (channels in, channels out, size, stride): the bundled MNIST prior's and CIFAR-10 DDPM's
    // typical layers.
    let shapes = [
        (32, 32, 32, 1),
        (64, 64, 16, 1),
        (64, 64, 8, 1),
        (32, 32, 32, 2),
        (128, 128, 32, 1),
        (256, 256, 16, 1),
    ];
    println!("batch {batch}: seconds per forward + input gradient of one conv layer");
    println!("| Cin→Cout | size | stride | candle backward | genprior backward | ratio |");
    println!("|---|---|---|---|---|---|");
    for (ci, co, s, st) in shapes {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, ci, s, s), &dev)?)?;
        let w = Tensor::randn(0f32, 0.05, (co, ci, 3, 3), &dev)?;
        let candle = time(|| {
            let y = x.as_tensor().conv2d(&w, 1, st, 1, 1).unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            assert!(g.get(x.as_tensor()).is_some());
        });
        let ours = time(|| {
            let y = genprior_nn::conv::conv2d(x.as_tensor(), &w, 1, st).unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            assert!(g.get(x.as_tensor()).is_some());
        });
        println!(
            "| {ci}→{co} | {s}×{s} | {st} | {candle:.4} s | {ours:.4} s | {:.1}× faster |",
            candle / ours
        );
    }
    Ok(())
}
