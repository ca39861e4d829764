//! `genprior`: imaging inverse problems with generative priors.
//!
//! The binary only parses arguments, loads, calls library crates and writes files.

mod bench_ops;
mod bench_pcs;
mod cmd_batch;
mod cmd_bench;
mod cmd_eval;
mod cmd_lowrank;
mod cmd_model;
mod cmd_reconstruct;
mod cmd_sample;
mod cmd_train;
mod common;
mod method_args;
mod progress;
mod task_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "genprior",
    version,
    about = "Imaging inverse problems with generative priors: diffusion plug-and-play (DPnP) and its peers (DPS, DiffPIR, ΠGDM, RED-diff, DDRM, DDNM, DAPS, LGD-MC), batch runs on clusters, and ScaledGD low-rank recovery",
    long_about = "genprior solves imaging inverse problems y = A(x) + noise with pretrained unconditional \
diffusion models as priors (diffusion plug-and-play, Xu & Chi 2024, and the peers it is compared with), and low-rank \
matrix/tensor problems with scaled gradient descent (Tong, Ma & Chi).\n\n\
Models: a local diffusers folder (config.json + diffusion_pytorch_model.safetensors|.bin) or a \
Hugging Face Hub id such as google/ddpm-cifar10-32. Without --model the bundled MNIST prior \
(models/mnist-ddpm-32) is used.\n\nDevices: --device auto|cpu|cuda|metal (auto: CUDA, then Metal, then CPU)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: source, file format, dtype, config summary, parameter count.
    Inspect(cmd_model::InspectArgs),
    /// Raw network output for a batch: NPY in, NPY out (f32). The hook parity checks use.
    Predict(cmd_model::PredictArgs),
    /// Reconstruct an image from measurements with a posterior sampler (--method: DPnP, DPS, DiffPIR, ΠGDM, RED-diff, DDRM, DDNM, DAPS, LGD-MC; writes PNGs + report.json).
    Reconstruct(Box<cmd_reconstruct::ReconstructArgs>),
    /// Simulate a measurement y = A(x) + noise from a clean image (writes y.npy).
    Degrade(cmd_reconstruct::DegradeArgs),
    /// Write a guided-diffusion ADM checkpoint (.pt) as model.safetensors + config.json.
    Convert(cmd_model::ConvertArgs),
    /// Generate images from the prior with DDPM or DDIM; writes a PNG grid.
    Sample(cmd_sample::SampleArgs),
    /// Low-rank matrix/tensor recovery with scaled gradient descent (ScaledGD).
    Lowrank {
        #[command(subcommand)]
        cmd: cmd_lowrank::LowrankCmd,
    },
    /// Time the network forward (and input-gradient) pass of an architecture with random weights.
    Bench(cmd_bench::BenchArgs),
    /// Reconstruction-quality benchmark: every task × the baseline and every posterior sampler on a
    /// fixed image set (default: 100 bundled MNIST test digits); PSNR/SSIM mean ± std, NFE, s/image.
    Eval(Box<cmd_eval::EvalArgs>),
    /// Reconstruct a whole dataset (a folder or a CSV/JSONL manifest): micro-batched, sharded
    /// over Slurm array tasks, Kubernetes Indexed Jobs or GPUs, resumable; one folder per item.
    Batch(Box<cmd_batch::BatchArgs>),
    /// Merge a batch output folder's item reports into summary.json / summary.md (and list the
    /// items that are missing or failed).
    Merge(cmd_batch::MergeArgs),
    /// Train a diffusion prior (diffusers UNet2DModel, DDPM ε-objective) on your own images;
    /// writes a model folder that --model accepts, checkpoints, loss.csv and sample grids.
    Train(Box<cmd_train::TrainArgs>),
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.cmd {
        Command::Batch(a) => cmd_batch::run(*a),
        Command::Inspect(a) => ok(cmd_model::inspect(a)),
        Command::Predict(a) => ok(cmd_model::predict(a)),
        Command::Reconstruct(a) => ok(cmd_reconstruct::reconstruct(*a)),
        Command::Degrade(a) => ok(cmd_reconstruct::degrade(a)),
        Command::Convert(a) => ok(cmd_model::convert(a)),
        Command::Sample(a) => ok(cmd_sample::run(a)),
        Command::Lowrank { cmd } => ok(cmd_lowrank::run(cmd)),
        Command::Bench(a) => ok(cmd_bench::run(a)),
        Command::Eval(a) => ok(cmd_eval::run(*a)),
        Command::Merge(a) => ok(cmd_batch::merge(a)),
        Command::Train(a) => cmd_train::run(*a),
    }
}

/// glibc's malloc serves large blocks (every activation tensor) with a fresh `mmap` and returns
/// them with `munmap`, so each new tensor page-faults its memory in again (see the README's
/// Benchmarks for the measured cost). Keeping every block in the heap (no mmap, no trimming)
/// lets freed tensors' pages be reused; freed memory is not returned to the OS until exit,
/// which suits a command-line run. `GENPRIOR_SYSTEM_MALLOC=1` keeps glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    if std::env::var_os("GENPRIOR_SYSTEM_MALLOC").is_some_and(|v| v == "1") {
        return;
    }
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    // SAFETY: mallopt only changes allocator tuning; called before any threads start.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace: the chain of causes joined by ": ".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
