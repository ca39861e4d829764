//! `genprior train`: train a diffusers `UNet2DModel` prior on a folder or file of images.
//! Parses, loads the images, drives `genprior_train::Trainer`, draws progress and writes the
//! run's files; the training itself lives in the genprior-train crate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use genprior_diffusion::{sample, SamplerKind};
use genprior_pipeline::{images, imageset};
use genprior_train::{
    arch_config, log::LossLog, BetaKind, Dataset, LrSchedule, TrainOptions, Trainer,
};
use indicatif::ProgressBar;

use crate::common::{self, bar_style, DeviceArgs};

/// Exit status of a run stopped by SIGINT/SIGTERM (after its final checkpoint).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Training images: a folder of PNGs (each --size × --size), a .npy array (N, C, H, W) or
    /// (N, H, W) (uint8 0–255 or float in [-1, 1]), or an IDX file (MNIST's
    /// train-images-idx3-ubyte). Smaller images are zero-padded centred (MNIST 28 → 32).
    #[arg(long)]
    pub images: PathBuf,
    /// Image size (square) the model is trained at.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Image channels (1 grayscale, 3 RGB).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Architecture: small (the bundled MNIST prior's: channels 32/64/64, 1.1 M parameters at
    /// 1 channel), base (64/128/128, two resnets per level, attention at the two lowest
    /// resolutions), or the path of a diffusers UNet2DModel config.json.
    #[arg(long, default_value = "small")]
    pub arch: String,
    /// Optimizer steps in total (a resumed run continues up to this count).
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Output folder: the model (config.json, diffusion_pytorch_model.safetensors with the EMA
    /// weights, scheduler_config.json), checkpoint.safetensors, loss.csv, loss_curve.png,
    /// samples/.
    #[arg(long)]
    pub out: PathBuf,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Learning rate after the warm-up: constant, or cosine decay to 10 % at --steps.
    #[arg(long, default_value = "constant", value_parser = ["constant", "cosine"])]
    pub lr_schedule: String,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// EMA decay of the exported weights (warmed up as min(decay, (1+s)/(10+s))).
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    /// β schedule (T = 1000): linear (1e-4 … 0.02) or cosine (squaredcos_cap_v2).
    #[arg(long, default_value = "linear", value_parser = ["linear", "cosine"])]
    pub beta_schedule: String,
    /// Random horizontal flips.
    #[arg(long)]
    pub flip: bool,
    /// Seed of everything random (initial weights, batch order, timesteps, noise, flips).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write checkpoint.safetensors and the model every K steps (and at the end, and on
    /// Ctrl-C/SIGTERM).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Write samples/step_NNNNNN.png (16 DDIM-50 samples of the EMA model) every K steps
    /// (default: --checkpoint-every; 0: never).
    #[arg(long)]
    pub sample_every: Option<u64>,
    /// Continue the run in --out from its checkpoint (same options; --steps may grow). The
    /// continuation is bit-identical to an uninterrupted run.
    #[arg(long)]
    pub resume: bool,
    /// Print the time per step spent in each network op (genprior's op profiler; the first
    /// step is not counted).
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn options(a: &TrainArgs) -> TrainOptions {
    TrainOptions {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup,
        lr_schedule: if a.lr_schedule == "cosine" {
            LrSchedule::Cosine
        } else {
            LrSchedule::Constant
        },
        weight_decay: a.weight_decay,
        grad_clip: a.grad_clip,
        ema_decay: a.ema_decay,
        beta_schedule: if a.beta_schedule == "cosine" {
            BetaKind::Cosine
        } else {
            BetaKind::Linear
        },
        flip: a.flip,
        seed: a.seed,
        ..TrainOptions::default()
    }
}

/// The images of a folder of PNGs (sorted by name), a .npy or an IDX file, `(N, C, S, S)`.
fn load_images(path: &Path, channels: usize, size: usize) -> Result<Tensor> {
    if !path.is_dir() {
        return Ok(imageset::load_image_set(path, None, channels, size)?.images);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "--images {}: the folder holds no .png files",
            path.display()
        );
    }
    let mut all = Vec::with_capacity(files.len());
    for f in &files {
        let img = images::load_image(f, Some(channels), &Device::Cpu)?;
        let (_, _, h, w) = img.dims4()?;
        if (h, w) != (size, size) {
            bail!(
                "{}: the image is {w}×{h} but --size is {size} (resize the folder's images first)",
                f.display()
            );
        }
        all.push(img);
    }
    Ok(Tensor::cat(&all, 0)?)
}

struct Run<'a> {
    out: &'a Path,
    ckpt: PathBuf,
}

impl Run<'_> {
    /// Checkpoint, model folder and loss curve, each written atomically.
    fn save(&self, tr: &Trainer, log: &LossLog) -> Result<()> {
        tr.save_checkpoint(&self.ckpt)?;
        tr.export(self.out)?;
        genprior_train::log::plot_losses(&log.read()?, &self.out.join("loss_curve.png"))?;
        Ok(())
    }

    fn samples(&self, tr: &Trainer) -> Result<PathBuf> {
        let [_, c, s, _] = tr.dataset().dims;
        let net = genprior_prior::UNet2DScore(tr.ema_model()?);
        let out = sample(
            &net,
            tr.schedule(),
            SamplerKind::ddim(0.0),
            [16, c, s, s],
            50,
            0,
            0,
            &mut |_| {},
        )?;
        let dir = self.out.join("samples");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("step_{:06}.png", tr.step()));
        images::save_grid(&out.images.to_device(&Device::Cpu)?, &path)?;
        Ok(path)
    }
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    if args.checkpoint_every == 0 {
        bail!("--checkpoint-every must be at least 1");
    }
    if args.channels != 1 && args.channels != 3 {
        bail!("--channels must be 1 or 3, got {}", args.channels);
    }
    let opts = options(&args);
    opts.validate()?;
    let (value, unet) = arch_config(&args.arch, args.size, args.channels)?;
    let ckpt = args.out.join("checkpoint.safetensors");
    if args.resume && !ckpt.is_file() {
        bail!("--resume: {} does not exist", ckpt.display());
    }
    if !args.resume && ckpt.exists() {
        bail!(
            "{} holds a training checkpoint; pass --resume to continue it or choose another --out",
            args.out.display()
        );
    }
    if args.device.dtype != "f32" {
        bail!(
            "training runs in f32 (--dtype {} is for inference)",
            args.device.dtype
        );
    }
    let data = Dataset::from_tensor(&load_images(&args.images, args.channels, args.size)?)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let (device, _) = args.device.open()?;
    let mut tr = if args.resume {
        Trainer::resume(&ckpt, value, unet, opts, data, &device, DType::F32)?
    } else {
        Trainer::new(value, unet, opts, data, &device, DType::F32)?
    };
    let mut log = LossLog::open(&args.out.join("loss.csv"), args.resume.then_some(tr.step()))?;
    eprintln!(
        "training {} ({} parameters) on {} image(s) of {}×{}×{}; batch {}, {} steps{}",
        args.arch,
        tr.num_parameters(),
        tr.dataset().len(),
        args.channels,
        args.size,
        args.size,
        args.batch,
        args.steps,
        if args.resume {
            format!(", resuming at step {}", tr.step())
        } else {
            String::new()
        }
    );
    let run = Run {
        out: &args.out,
        ckpt,
    };
    let sample_every = args.sample_every.unwrap_or(args.checkpoint_every);
    let stop = common::stop_flag()?;
    let bar = ProgressBar::new(args.steps);
    bar.set_style(bar_style(
        "{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
    ));
    bar.set_position(tr.step());
    bar.reset_eta();
    let start = Instant::now();
    let first = tr.step();
    let mut smooth: Option<f64> = None;
    let mut profiled_from: Option<Instant> = None;
    while tr.step() < args.steps {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        let stats = match tr.train_step() {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                run.save(&tr, &log)?;
                return Err(e.into());
            }
        };
        let dt = t0.elapsed().as_secs_f64();
        if args.profile && stats.step == first + 1 {
            genprior_nn::profile::take();
            genprior_nn::profile::enable(true);
            profiled_from = Some(Instant::now());
        }
        log.append(&stats, dt)?;
        let sm = smooth.map_or(stats.loss, |v| 0.98 * v + 0.02 * stats.loss);
        smooth = Some(sm);
        bar.set_position(stats.step);
        bar.set_message(format!(
            "loss {:.4} (avg {sm:.4})  {:.2} s/step",
            stats.loss, dt
        ));
        if stats.step % args.checkpoint_every == 0 && stats.step < args.steps {
            run.save(&tr, &log)?;
        }
        if sample_every > 0 && stats.step % sample_every == 0 {
            let p = run.samples(&tr)?;
            bar.println(format!("step {}: samples {}", stats.step, p.display()));
        }
    }
    bar.finish_and_clear();
    if let Some(t0) = profiled_from {
        genprior_nn::profile::enable(false);
        print_profile(tr.step() - first - 1, t0.elapsed().as_secs_f64());
    }
    run.save(&tr, &log)?;
    let done = tr.step() - first;
    let secs = start.elapsed().as_secs_f64();
    if tr.step() < args.steps {
        eprintln!(
            "interrupted at step {}: checkpoint and model written to {}; continue with --resume",
            tr.step(),
            args.out.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    println!(
        "trained {done} step(s) in {secs:.1} s ({:.3} s/step); final loss {:.4} (running mean); \
         model in {} (use it with --model {})",
        secs / done.max(1) as f64,
        smooth.unwrap_or(f64::NAN),
        args.out.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The op profiler's table per step, largest first (nested scopes overlap their parent).
fn print_profile(steps: u64, secs: f64) {
    if steps == 0 {
        return;
    }
    let n = steps as f64;
    let mut ops = genprior_nn::profile::take();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!(
        "profile over {steps} step(s), {:.3} s/step (nested scopes such as conv/kernel-grad inside train/forward+backward overlap their parent):",
        secs / n
    );
    eprintln!(
        "  {:<26} {:>10} {:>7} {:>8}",
        "op", "s/step", "share", "calls"
    );
    for (name, s, calls) in ops {
        eprintln!(
            "  {name:<26} {:>10.4} {:>6.1}% {:>8.1}",
            s / n,
            100.0 * s / secs,
            calls as f64 / n
        );
    }
}
