//! `genprior eval`: the reconstruction-quality benchmark (`genprior_pipeline::eval`): every
//! task × method on a fixed image set; PSNR/SSIM mean ± std, NFE and seconds per image, with a
//! resume cache, summaries and grids under `--out`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use genprior_pipeline::eval::{self, EvalConfig, EvalEvent};
use genprior_pipeline::images;
use genprior_pipeline::imageset::{load_image_set, ImageSet};
use genprior_posterior::MethodOptions;
use indicatif::{MultiProgress, ProgressBar};
use serde_json::{json, Value};

use crate::common::{self, ModelArgs};
use crate::method_args::EvalMethodArgs;
use crate::progress::SamplerBars;

/// The bundled evaluation set (MNIST test images 0, 100, …, 9900; see
/// `scripts/make_mnist_eval_set.py`).
pub const DEFAULT_IMAGES: &str = "examples/mnist-test-100.npy";

/// The bundled `inpaint-mask` mask for 32×32 images (see `scripts/make_mnist_eval_set.py`).
pub const DEFAULT_MASK: &str = "examples/mask-32.png";

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Clean images: an .npy of shape (N, C, H, W) or (N, H, W), uint8 (0–255) or float in
    /// [-1, 1], or an IDX image file (MNIST's *-images-idx3-ubyte; 28×28 digits are zero-padded
    /// to the model's size). Default: the bundled set examples/mnist-test-100.npy (MNIST test
    /// images 0, 100, …, 9900).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Which images of the file: START:END:STEP (Python slice, END exclusive; e.g. 0:10000:100
    /// on the MNIST test IDX file gives the bundled set). Default: all.
    #[arg(long)]
    pub indices: Option<String>,
    /// Comma-separated tasks, or `all` (every task; inpaint-mask uses --mask).
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Mask of the inpaint-mask task (PNG of the image size, white = observed). Default: the
    /// bundled examples/mask-32.png (a cross of two 5-pixel scratches) for 32×32 models.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Comma-separated methods: baseline and the posterior samplers (dpnp-ddim, dpnp-ddpm,
    /// dps), or `all`.
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// CI-sized run: the first 4 images and tiny step counts (checks the pipeline, not the
    /// numbers). Explicit step options still override.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the measurement noise and of every sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per batch (--samples chains each).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Posterior samples (chains) per image. The tables report the score of the posterior mean
    /// of the samples and of the first sample alone (what the papers report), and with ≥ 2
    /// samples the calibration of the spread: the fraction of ground-truth pixels inside the
    /// per-pixel 90 % interval (mean ± 1.645·std) and the error–std correlation.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Output folder (created if missing). Finished results in it are reused when their
    /// settings match.
    #[arg(long)]
    pub out: PathBuf,
    /// Recompute results even when a matching one exists.
    #[arg(long)]
    pub force: bool,
    /// Exact PCS on linear-Gaussian tasks (sr*, inpaint-*, deblur-*, cs, ct, mri, mri-multicoil, denoise): `exact`
    /// samples the Gaussian PCS target exactly (perturb-and-solve), `same` uses --pcs. The
    /// Langevin step-size rule suits none of them well at once: MALA's acceptance falls to
    /// 0.08 on inpainting with the step size that suits super-resolution.
    #[arg(long, default_value = "exact", value_parser = ["exact", "same"])]
    pub pcs_linear: String,
    #[command(flatten)]
    pub method_opts: EvalMethodArgs,
}
/// A bundled file of the source tree (`examples/...`), else the path as given.
fn bundled(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    if p.is_file() {
        p
    } else {
        PathBuf::from(rel)
    }
}

/// The inpaint-mask mask in [0, 1]: --mask, else the bundled one for 32×32 images.
fn load_mask(args: &EvalArgs, size: usize) -> Result<(candle_core::Tensor, String)> {
    let p = match &args.mask {
        Some(p) => p.clone(),
        None if size == 32 => bundled(DEFAULT_MASK),
        None => bail!("task inpaint-mask on {size}×{size} images needs --mask FILE.png (the bundled mask is 32×32)"),
    };
    let m = images::load_image(&p, None, &Device::Cpu)?;
    Ok((((m + 1.0)? * 0.5)?, p.display().to_string()))
}

/// `eval::run` with an overall bar (one step per pair) and the sampler bars.
fn run_with_bars(
    cfg: &EvalConfig,
    net: &dyn genprior_diffusion::ScoreModel,
    schedule: &genprior_diffusion::Schedule,
    set: &ImageSet,
) -> Result<()> {
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(
        (cfg.tasks.len() * cfg.methods.len()) as u64,
    ));
    overall.set_style(common::bar_style(
        "eval  {bar:30} {pos}/{len}  {elapsed_precise}  {msg}",
    ));
    let mut bars = SamplerBars::new(&multi, "", 0);
    let mut steps_per_batch = 0;
    eval::run(cfg, net, schedule, set, &mut |e| match e {
        EvalEvent::Pair {
            task,
            method,
            steps,
            batches,
        } => {
            overall.set_message(format!("{task} / {method}"));
            steps_per_batch = steps;
            bars.reset(steps * batches, String::new());
        }
        EvalEvent::Method { batch, event } => {
            bars.set_offset(batch * steps_per_batch);
            bars.update(event);
        }
        // (eprintln, not ProgressBar::println: that one is silent when stderr is not a
        // terminal, and logs of long runs need these lines.)
        EvalEvent::Log(line) => multi.suspend(|| eprintln!("{line}")),
        EvalEvent::PairDone => overall.inc(1),
    })?;
    bars.finish();
    overall.finish_and_clear();
    Ok(())
}

/// What every result's settings record about the run (the resume cache compares them).
fn run_header(args: &EvalArgs, set: &ImageSet, source: &str, options: &MethodOptions) -> Value {
    let threads = std::thread::available_parallelism()
        .map(|v| v.get())
        .unwrap_or(1);
    json!({
        "model": source,
        "images": set.source,
        "indices": args.indices.clone().unwrap_or_else(|| "all".into()),
        "n_images": set.len(),
        "options": options.to_json(),
        "pcs_linear": args.pcs_linear,
        "version": env!("CARGO_PKG_VERSION"),
        "threads": threads,
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    let tasks = eval::parse_tasks(&args.tasks)?;
    let methods = eval::parse_methods(&args.methods)?;
    let options = args.method_opts.0.all()?;
    let prior = common::load_prior(&args.model, None)?;
    let (schedule, source) = (&prior.schedule, prior.info.source.clone());
    let net = prior.net.as_ref();
    let size = net.sample_size().ok_or_else(|| {
        anyhow::anyhow!("the model config has no square sample_size; cannot tell the image size")
    })?;
    let images_path = args
        .images
        .clone()
        .unwrap_or_else(|| bundled(DEFAULT_IMAGES));
    let mut set = load_image_set(
        &images_path,
        args.indices.as_deref(),
        net.in_channels(),
        size,
    )?;
    if args.quick && args.indices.is_none() {
        set.truncate(4)?;
    }
    let mask = if tasks.iter().any(|t| t == "inpaint-mask") {
        Some(load_mask(&args, size)?)
    } else {
        None
    };
    let header = run_header(&args, &set, &source, &options);
    eprintln!(
        "eval: {} images from {}; {} task(s) × {} method(s); model {source}",
        set.len(),
        set.source,
        tasks.len(),
        methods.len()
    );
    let cfg = EvalConfig {
        tasks,
        methods,
        seed: args.seed,
        batch: args.batch,
        samples: args.samples,
        quick: args.quick,
        options,
        pcs_linear_exact: args.pcs_linear == "exact",
        mask,
        out: args.out.clone(),
        force: args.force,
        header,
    };
    run_with_bars(&cfg, net, schedule, &set)?;
    println!("{}", std::fs::read_to_string(cfg.out.join("summary.md"))?);
    println!(
        "wrote {}/summary.md, summary.json, results/, reconstructions/ and grids/ (rows: clean, then {})",
        cfg.out.display(),
        cfg.methods.join(", ")
    );
    Ok(())
}
