//! `genprior bench`: time the network on an architecture with random weights.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};
use genprior_nn::UNet2DConfig;

use crate::common::DeviceArgs;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Architecture: ddpm-cifar10-32, ddpm-256, adm-ffhq-256 (and the other ADM presets), or a
    /// path to a UNet2DModel config.json.
    #[arg(long, default_value = "ddpm-cifar10-32")]
    pub arch: String,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Also time the gradient of a scalar of the output with respect to the input (as DPS needs).
    #[arg(long)]
    pub grad: bool,
    /// Timed passes (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also time each kind of op (convolutions by shape, group norm, attention, ...) over the
    /// timed passes and print the breakdown (CPU: exact; GPU: launch cost only).
    #[arg(long)]
    pub profile: bool,
    /// Instead of the whole network: time each fast CPU kernel (convolution forward and input
    /// gradient, group norm + SiLU forward and backward, softmax) against the candle op it
    /// replaces, on the ddpm-cifar10-32 layer shapes at --batch, and print the speedups.
    #[arg(long)]
    pub ops: bool,
    /// Instead of the network: time one MALA PCS call per task (denoise, inpainting, SR,
    /// deblur, phase retrieval, one-bit, MRI, multi-coil MRI; CS and CT up to 64²) with the
    /// host loop (f64, CPU threads) and the device loop (f32 tensor ops on --device), in the
    /// same run, at each --pcs-sizes side with 3 channels, --batch chains and --iters Langevin
    /// steps (a tenth of them above 64²); prints ms per step and the device/host ratio.
    #[arg(long)]
    pub pcs: bool,
    /// Image sides for --pcs.
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    pub pcs_sizes: Vec<usize>,
    /// Only these tasks for --pcs (default: all of them).
    #[arg(long, value_delimiter = ',')]
    pub pcs_tasks: Vec<String>,
}

/// Peak resident memory of this process in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    if args.pcs {
        let (device, _) = args.device.open()?;
        return crate::bench_pcs::run(
            &device,
            &args.pcs_sizes,
            &args.pcs_tasks,
            args.batch,
            args.iters,
            args.json,
        );
    }
    if args.ops {
        return crate::bench_ops::run(args.batch, args.iters, args.json);
    }
    if genprior_nn::adm::PRESETS.contains(&args.arch.as_str()) {
        return run_adm(&args);
    }
    let cfg = match genprior_nn::preset_config(&args.arch) {
        Some(c) => c,
        None => {
            let p = Path::new(&args.arch);
            if !p.is_file() {
                bail!(
                    "unknown --arch `{}` (expected one of {:?} or a config.json path)",
                    args.arch,
                    genprior_nn::PRESETS
                );
            }
            UNet2DConfig::from_file(p).with_context(|| format!("reading {}", p.display()))?
        }
    };
    let (h, w) = cfg.image_size().unwrap_or((32, 32));
    let (device, dtype) = args.device.open()?;
    let net = genprior_nn::random_unet2d(cfg.clone(), 0, dtype, &device)?;
    let flops = genprior_nn::unet2d::flops::forward_flops(&cfg, h, w) * args.batch as f64;
    let net = genprior_prior::UNet2DScore(net);
    time_and_report(&args, &net, (cfg.in_channels, h, w), flops)
}

fn run_adm(args: &BenchArgs) -> Result<()> {
    let cfg = genprior_nn::AdmConfig::preset(&args.arch)?;
    let (device, dtype) = args.device.open()?;
    let s = cfg.image_size;
    let flops = genprior_nn::adm::flops::forward_flops(&cfg, s, s)? * args.batch as f64;
    let net = genprior_nn::adm::random_adm(cfg.clone(), 0, dtype, &device)?;
    let net = genprior_prior::AdmScore(net);
    time_and_report(args, &net, (cfg.in_channels, s, s), flops)
}

/// Seconds per pass (forward, or forward + input gradient with `--grad`) over `--iters`
/// passes after a warm-up, and with `--profile` the per-op rows.
fn time_passes(
    args: &BenchArgs,
    net: &dyn genprior_diffusion::ScoreModel,
    (c, h, w): (usize, usize, usize),
) -> Result<(f64, Vec<serde_json::Value>)> {
    let device = net.device().clone();
    let x = Tensor::randn(0f32, 1f32, (args.batch, c, h, w), &device)?;
    let t = Tensor::full(500f32, args.batch, &device)?;
    let pass = |x: &Tensor| -> Result<()> {
        if args.grad {
            let v = Var::from_tensor(x)?;
            let y = net.forward(v.as_tensor(), &t)?;
            let g = y.sqr()?.sum_all()?.backward()?;
            let gx = g.get(v.as_tensor()).context("no gradient for the input")?;
            gx.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        } else {
            let y = net.forward(x, &t)?;
            y.sum_all()?.to_scalar::<f32>()?;
        }
        Ok(())
    };
    pass(&x)?; // warm-up
    genprior_nn::profile::take();
    genprior_nn::profile::enable(args.profile);
    let start = Instant::now();
    for _ in 0..args.iters {
        pass(&x)?;
    }
    let secs = start.elapsed().as_secs_f64() / args.iters as f64;
    genprior_nn::profile::enable(false);
    let outer = genprior_nn::profile::outer_seconds() / args.iters as f64;
    let mut ops: Vec<serde_json::Value> = genprior_nn::profile::take()
        .into_iter()
        .map(|(name, s, calls)| {
            serde_json::json!({
                "op": name,
                "seconds_per_pass": s / args.iters as f64,
                "share": s / args.iters as f64 / secs,
                "calls_per_pass": calls as f64 / args.iters as f64,
            })
        })
        .collect();
    if args.profile {
        ops.push(serde_json::json!({
            "op": "(outside any scope)",
            "seconds_per_pass": (secs - outer).max(0.0),
            "share": (secs - outer).max(0.0) / secs,
            "calls_per_pass": 0.0,
        }));
    }
    Ok((secs, ops))
}

fn print_profile(ops: &[serde_json::Value]) {
    println!("per-op time (nested scopes, e.g. softmax inside attention, overlap their parent):");
    println!(
        "  {:<22} {:>10} {:>7} {:>8}",
        "op", "s/pass", "share", "calls"
    );
    for o in ops {
        println!(
            "  {:<22} {:>10.4} {:>6.1}% {:>8.0}",
            o["op"].as_str().unwrap_or(""),
            o["seconds_per_pass"].as_f64().unwrap_or(0.0),
            100.0 * o["share"].as_f64().unwrap_or(0.0),
            o["calls_per_pass"].as_f64().unwrap_or(0.0),
        );
    }
}

fn time_and_report(
    args: &BenchArgs,
    net: &dyn genprior_diffusion::ScoreModel,
    shape: (usize, usize, usize),
    flops: f64,
) -> Result<()> {
    let (secs, ops) = time_passes(args, net, shape)?;
    // Forward + input gradient ≈ 2 forward passes of matmul/conv work.
    let work = if args.grad { 2.0 * flops } else { flops };
    let gflops = work / secs / 1e9;
    let rss = peak_rss_bytes() as f64 / (1 << 20) as f64;
    let mut report = serde_json::json!({
        "arch": args.arch,
        "batch": args.batch,
        "grad": args.grad,
        "dtype": args.device.dtype,
        "device": format!("{:?}", net.device()),
        "gflop_per_forward_per_image": flops / args.batch as f64 / 1e9,
        "seconds_per_pass": secs,
        "images_per_second": args.batch as f64 / secs,
        "gflops_per_second": gflops,
        "peak_rss_mib": rss,
        "iters": args.iters,
    });
    if args.profile {
        report["profile"] = serde_json::Value::Array(ops.clone());
    }
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{} batch {} {}: {:.4} s/pass, {:.2} images/s, {:.1} GFLOP/s ({:.2} GFLOP/image forward), peak RSS {:.0} MiB",
        args.arch,
        args.batch,
        if args.grad { "forward+grad" } else { "forward" },
        secs,
        args.batch as f64 / secs,
        gflops,
        flops / args.batch as f64 / 1e9,
        rss,
    );
    if args.profile {
        print_profile(&ops);
    }
    Ok(())
}
