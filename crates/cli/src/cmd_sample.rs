//! `genprior sample`: unconditional DDPM / DDIM sampling from a diffusion prior.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;
use genprior_diffusion::{sample, SamplerKind};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::ModelArgs;
use genprior_pipeline::images;

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of images to generate.
    #[arg(long, default_value_t = 16)]
    pub num: usize,
    /// Sampling steps (default: 1000 for ddpm, 50 for ddim); at most the schedule's
    /// num_train_timesteps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sampler: ancestral DDPM, or DDIM (deterministic at --eta 0).
    #[arg(long, default_value = "ddpm", value_parser = ["ddpm", "ddim"])]
    pub sampler: String,
    /// DDIM stochasticity η in [0, 1] (0: deterministic; 1: DDPM-like). DDIM only.
    #[arg(long)]
    pub eta: Option<f64>,
    /// Random seed: the same seed gives byte-identical images on every run. Each image
    /// has its own noise stream, so other batch sizes or devices give the same images up
    /// to the network's float round-off.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output PNG grid.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Also write each image as DIR/sample_00000.png, ... (the folder must exist).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Images per network batch (default: min(num, 64)).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Use this scheduler_config.json instead of the model's (default: the model's, else
    /// diffusers' DDPMScheduler defaults).
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Image size for models whose config has no sample_size.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Sample from an architecture preset with seeded random weights instead of --model
    /// (ddpm-cifar10-32 or ddpm-256): for timing without a checkpoint.
    #[arg(long, value_name = "ARCH")]
    pub random_weights: Option<String>,
}

struct Plan {
    kind: SamplerKind,
    steps: usize,
    batch: usize,
}

/// Argument checks that need nothing loaded.
fn validate(args: &SampleArgs) -> Result<Plan> {
    if args.num == 0 {
        bail!("--num must be at least 1");
    }
    let kind = match (args.sampler.as_str(), args.eta) {
        ("ddpm", None) => SamplerKind::Ddpm,
        ("ddpm", Some(_)) => bail!("--eta applies to --sampler ddim only"),
        ("ddim", eta) => {
            let eta = eta.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&eta) {
                bail!("--eta must lie in [0, 1], got {eta}");
            }
            SamplerKind::ddim(eta)
        }
        (other, _) => bail!("unknown --sampler {other:?} (expected ddpm or ddim)"),
    };
    let steps = args.steps.unwrap_or(match kind {
        SamplerKind::Ddpm => 1000,
        SamplerKind::Ddim { .. } => 50,
    });
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let batch = args.batch_size.unwrap_or(args.num.min(64));
    if batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    crate::common::check_parent(&args.out)?;
    if args
        .out
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("png"))
    {
        bail!(
            "--out {}: the grid is written as PNG; use a .png file name",
            args.out.display()
        );
    }
    if let Some(dir) = &args.out_dir {
        if !dir.is_dir() {
            bail!("--out-dir {}: no such folder", dir.display());
        }
    }
    if args.random_weights.is_some() && args.model.model.is_some() {
        bail!("--random-weights and --model are mutually exclusive");
    }
    Ok(Plan {
        kind,
        steps,
        batch: batch.min(args.num),
    })
}

pub fn run(args: SampleArgs) -> Result<()> {
    let plan = validate(&args)?;

    // The network and its schedule (--scheduler-config replaces the model's).
    let prior = crate::common::load_prior_scheduled(
        &args.model,
        args.random_weights.as_deref(),
        args.scheduler_config.as_deref(),
    )?;
    let (net, schedule, source) = (prior.net.as_ref(), &prior.schedule, &prior.info.source);
    // Checks steps against num_train_timesteps (and the spacing) before any work.
    schedule.timesteps(plan.steps)?;

    let size = match (net.sample_size(), args.image_size) {
        (_, Some(s)) if s > 0 => s,
        (_, Some(_)) => bail!("--image-size must be at least 1"),
        (Some(s), None) => s,
        (None, None) => bail!("the model config has no sample_size; pass --image-size"),
    };
    let c = net.in_channels();
    if c != 1 && c != 3 {
        bail!("the model has {c} channels; PNG output supports 1 (grayscale) or 3 (RGB)");
    }

    eprintln!(
        "model: {source}; sampler: {}, {} steps; {} image(s) of {c}x{size}x{size}, batch {}",
        match plan.kind {
            SamplerKind::Ddpm => "ddpm".to_string(),
            SamplerKind::Ddim { eta, .. } => format!("ddim (eta {eta})"),
        },
        plan.steps,
        args.num,
        plan.batch
    );

    let n_batches = args.num.div_ceil(plan.batch);
    let bar = ProgressBar::new((plan.steps * n_batches) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut nfe = 0usize;
    let mut parts: Vec<Tensor> = Vec::with_capacity(n_batches);
    for bi in 0..n_batches {
        let first = bi * plan.batch;
        let b = plan.batch.min(args.num - first);
        bar.set_message(format!("batch {}/{n_batches}", bi + 1));
        let out = sample(
            net,
            schedule,
            plan.kind,
            [b, c, size, size],
            plan.steps,
            args.seed,
            first as u64,
            &mut |_| bar.inc(1),
        )?;
        nfe += out.nfe;
        parts.push(out.images.to_device(&candle_core::Device::Cpu)?);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let images = Tensor::cat(&parts, 0)?;

    images::save_grid(&images, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    if let Some(dir) = &args.out_dir {
        let paths = images::save_images(&images, dir, "sample_", 0)?;
        eprintln!("wrote {} images to {}", paths.len(), dir.display());
    }
    println!(
        "sampled {} image(s) in {secs:.2} s ({:.3} images/s); network evaluations: {nfe} \
         (batched, {} per batch of up to {}; {} per image)",
        args.num,
        args.num as f64 / secs,
        plan.steps,
        plan.batch,
        plan.steps
    );
    Ok(())
}
