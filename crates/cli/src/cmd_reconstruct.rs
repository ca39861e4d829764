//! `genprior reconstruct` (DPnP / DPS posterior sampling) and `genprior degrade` (simulate a
//! measurement).
//!
//! The measurement noise of `--input` runs is drawn from `--seed` exactly as `degrade --seed`
//! draws it, so `degrade --seed S` followed by `reconstruct --measurement` sees the same y as
//! `reconstruct --input --seed S`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use genprior_inverse::{build_operator, Operator, TaskSpec};
use genprior_pipeline::images;
use genprior_pipeline::reconstruct::{measurement_from, reconstruct as run_sampler, simulate};
use genprior_posterior::{build_sampler, Chains, PosteriorSampler, Problem};
use indicatif::MultiProgress;
use serde_json::{json, Value};

use crate::common::{self, ModelArgs};
use crate::method_args::MethodArgs;
use crate::progress::SamplerBars;

/// `--task NAME` and every task option (each task reads the ones it needs).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct TaskArgs {
    /// Task: sr2, sr4, sr8, inpaint-box, inpaint-random, inpaint-mask, deblur-gauss,
    /// deblur-motion, phase-retrieval, one-bit, cs, denoise.
    #[arg(long)]
    pub task: String,
    /// σ of the additive Gaussian measurement noise (images in [-1, 1]). Default 0.05; 0 for
    /// one-bit (whose randomness is the logistic dither).
    #[arg(long, allow_hyphen_values = true)]
    pub noise_sigma: Option<f64>,
    /// σ the likelihood uses, if not the noise σ (the DPnP reference uses 0.15 for σ = 0.2).
    #[arg(long)]
    pub likelihood_sigma: Option<f64>,
    /// Seed of the operator's random parts (inpainting mask, motion kernel, phase-retrieval
    /// mask, CS matrix).
    #[arg(long, default_value_t = 0)]
    pub operator_seed: u64,
    /// sr*: downsampling kernel.
    #[arg(long, default_value = "bicubic", value_parser = ["bicubic", "box"])]
    pub kernel: String,
    /// inpaint-box: side of the centred square hole (default: half the image side).
    #[arg(long)]
    pub box_size: Option<usize>,
    /// inpaint-random: fraction of pixels kept.
    #[arg(long, default_value_t = 0.3)]
    pub keep_fraction: f64,
    /// inpaint-mask: mask image (PNG, same size as the images; white = observed).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// deblur-*: kernel side (default 61, or the largest odd size fitting the image).
    #[arg(long)]
    pub kernel_size: Option<usize>,
    /// deblur-gauss: kernel standard deviation in pixels.
    #[arg(long, default_value_t = 3.0)]
    pub kernel_std: f64,
    /// deblur-motion: trajectory intensity in [0, 1].
    #[arg(long, default_value_t = 0.5)]
    pub motion_intensity: f64,
    /// deblur-*: explicit kernel as a 2-D .npy (normalised to sum 1).
    #[arg(long)]
    pub kernel_file: Option<PathBuf>,
    /// phase-retrieval: oversampling factor in pixels (4 = 2× zero padding per side).
    #[arg(long, default_value_t = 4.0)]
    pub oversample: f64,
    /// one-bit: logistic dither temperature τ.
    #[arg(long, default_value_t = 0.4)]
    pub tau: f64,
    /// cs: measurement ratio m/n.
    #[arg(long, default_value_t = 0.25)]
    pub cs_ratio: f64,
}

impl TaskArgs {
    pub(crate) fn noise_sigma(&self) -> f64 {
        self.noise_sigma
            .unwrap_or(if self.task == "one-bit" { 0.0 } else { 0.05 })
    }

    /// The operator for images of shape `[C, H, W]`.
    pub(crate) fn build(&self, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
        if !genprior_inverse::TASK_NAMES.contains(&self.task.as_str()) {
            bail!(
                "unknown task `{}`; expected one of: {}",
                self.task,
                genprior_inverse::TASK_NAMES.join(", ")
            );
        }
        let mut spec = TaskSpec::new(&self.task, self.noise_sigma());
        spec.likelihood_sigma = self.likelihood_sigma;
        spec.operator_seed = self.operator_seed;
        spec.sr_kernel = self
            .kernel
            .parse()
            .map_err(|e| anyhow::anyhow!("--kernel: {e}"))?;
        spec.box_size = self.box_size;
        spec.keep_fraction = self.keep_fraction;
        spec.kernel_size = self.kernel_size;
        spec.kernel_std = self.kernel_std;
        spec.motion_intensity = self.motion_intensity;
        spec.oversample = self.oversample;
        spec.tau = self.tau;
        spec.cs_ratio = self.cs_ratio;
        if let Some(p) = &self.mask {
            // PNG in [-1, 1] → [0, 1]; values ≥ 0.5 are observed.
            let m = images::load_image(p, None, &Device::Cpu)
                .with_context(|| format!("--mask {}", p.display()))?;
            spec.mask = Some(((m + 1.0)? * 0.5)?);
        } else if self.task == "inpaint-mask" {
            bail!("task inpaint-mask needs --mask FILE.png");
        }
        if let Some(p) = &self.kernel_file {
            spec.kernel = Some(common::read_npy(p, "blur kernel", &Device::Cpu)?);
        }
        Ok(build_operator(&spec, shape)?)
    }
}

#[derive(clap::Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Clean image (PNG, the model's size and channels): the measurement is simulated from it
    /// with --seed, and metrics are reported against it.
    #[arg(
        long,
        conflicts_with = "measurement",
        required_unless_present = "measurement"
    )]
    pub input: Option<PathBuf>,
    /// Measurement y as .npy (shape: the task's measurement shape, optionally with a leading 1),
    /// e.g. from `genprior degrade`; use the same --operator-seed and task options.
    #[arg(long)]
    pub measurement: Option<PathBuf>,
    /// Posterior sampler: dpnp-ddim (DPnP with DDS-DDIM), dpnp-ddpm (DPnP with DDS-DDPM), dps.
    #[arg(long, default_value = "dpnp-ddim", value_parser = clap::builder::PossibleValuesParser::new(genprior_posterior::method_names()))]
    pub method: String,
    /// Posterior samples K (run as one batch).
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Seed of all randomness (measurement noise with --input, warm start, PCS, DDS, DPS).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub method_opts: MethodArgs,
    /// Use an architecture preset with seeded random weights instead of --model
    /// (ddpm-cifar10-32 or ddpm-256), with diffusers' default DDPM schedule: for timing only.
    #[arg(long, value_name = "ARCH")]
    pub random_weights: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DegradeArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Clean image (PNG).
    #[arg(long)]
    pub input: PathBuf,
    /// Seed of the measurement noise (one-bit: of the dither).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output .npy (shape: (1, ...measurement shape), f32).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn degrade(args: DegradeArgs) -> Result<()> {
    if args
        .out
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("npy"))
    {
        bail!(
            "--out {}: the measurement is written as .npy; use a .npy file name",
            args.out.display()
        );
    }
    common::check_parent(&args.out)?;
    let x = images::load_image(&args.input, None, &Device::Cpu)?;
    let (c, h, w) = (x.dim(1)?, x.dim(2)?, x.dim(3)?);
    let op = args.task.build([c, h, w])?;
    let y = simulate(op.as_ref(), &x, args.seed)?;
    common::write_npy(&y, &args.out)?;
    eprintln!("wrote {} (shape {:?})", args.out.display(), y.dims());
    Ok(())
}

/// Checks that need nothing loaded.
fn validate(args: &ReconstructArgs) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if let Some(s) = args.task.noise_sigma {
        if !(s.is_finite() && s >= 0.0) {
            bail!("--noise-sigma must be a finite number ≥ 0, got {s}");
        }
    }
    if !genprior_inverse::TASK_NAMES.contains(&args.task.task.as_str()) {
        bail!(
            "unknown task `{}`; expected one of: {}",
            args.task.task,
            genprior_inverse::TASK_NAMES.join(", ")
        );
    }
    if args.random_weights.is_some() && args.model.model.is_some() {
        bail!("--random-weights and --model are mutually exclusive");
    }
    Ok(())
}

/// The clean image of `--input`, checked against the model's channels and size.
fn load_truth(args: &ReconstructArgs, c: usize, size: usize) -> Result<Option<Tensor>> {
    let Some(p) = &args.input else {
        return Ok(None);
    };
    let x = images::load_image(p, Some(c), &Device::Cpu)?;
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    if (h, w) != (size, size) {
        bail!(
            "{}: the image is {w}×{h} but the model works on {size}×{size} images; resize it first",
            p.display()
        );
    }
    Ok(Some(x))
}

/// The measurement (simulated from the truth with --seed, or read) and a description of it.
fn measurement(
    args: &ReconstructArgs,
    op: &dyn Operator,
    truth: Option<&Tensor>,
) -> Result<(Tensor, String)> {
    match (truth, &args.measurement, &args.input) {
        (Some(x), _, Some(p)) => Ok((
            simulate(op, x, args.seed)?,
            format!("simulated from {} with seed {}", p.display(), args.seed),
        )),
        (None, Some(p), _) => Ok((
            measurement_from(
                common::read_npy(p, "measurement", &Device::Cpu)?,
                op,
                &p.display().to_string(),
            )?,
            p.display().to_string(),
        )),
        _ => bail!("give --input clean.png or --measurement y.npy"),
    }
}

/// The run's description for `report.json` (the results are added when it is written).
fn report(
    args: &ReconstructArgs,
    op: &dyn Operator,
    sampler: &dyn PosteriorSampler,
    source: &str,
    measurement_source: String,
) -> Value {
    let mut parameters = json!({
        "task": &args.task,
        "noise_sigma": args.task.noise_sigma(),
        "likelihood_temperature": op.temperature(),
        "device": args.model.device.device,
        "dtype": args.model.device.dtype,
    });
    if let (Some(p), Value::Object(s)) = (parameters.as_object_mut(), sampler.settings()) {
        p.extend(s);
    }
    json!({
        "task": args.task.task,
        "method": args.method,
        "seed": args.seed,
        "measurement_source": measurement_source,
        "model": source,
        "parameters": parameters,
    })
}

pub fn reconstruct(args: ReconstructArgs) -> Result<()> {
    validate(&args)?;
    let method_opts = args.method_opts.options_for(&args.method)?;
    std::fs::create_dir_all(args.out.join("samples"))
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let (net, scheduler_config, source) =
        common::load_net_or_random(&args.model, args.random_weights.as_deref())?;
    let schedule = common::load_schedule(scheduler_config.as_deref())?;
    let net = net.as_ref();
    let c = net.in_channels();
    if c != 1 && c != 3 {
        bail!("the model has {c} channels; PNG input/output supports 1 (grayscale) or 3 (RGB)");
    }
    let size = net
        .sample_size()
        .context("the model config has no square sample_size; cannot tell the image size")?;
    let truth = load_truth(&args, c, size)?;
    let op = args.task.build([c, size, size])?;
    let (y, measurement_source) = measurement(&args, op.as_ref(), truth.as_ref())?;
    let sampler = build_sampler(&args.method, &method_opts, op.as_ref())?;
    eprintln!(
        "model: {source}; task {} on {c}x{size}x{size}; method {}; {} sample(s)",
        args.task.task, args.method, args.samples
    );
    let problem = Problem {
        model: net,
        schedule: &schedule,
        op: op.as_ref(),
        y: &y,
    };
    let mut bars = SamplerBars::new(&MultiProgress::new(), "steps", sampler.total_steps());
    let chains = Chains::new(args.samples, args.seed);
    let rec = run_sampler(&problem, sampler.as_ref(), &chains, &mut |e| bars.update(e))?;
    bars.finish();
    let report = report(&args, op.as_ref(), sampler.as_ref(), &source, measurement_source);
    let report = rec.write(&args.out, op.as_ref(), &y, truth.as_ref(), report)?;
    println!(
        "{}: {} sample(s) in {:.2} s, {} network evaluations; wrote {}",
        args.method,
        args.samples,
        rec.seconds,
        rec.nfe,
        args.out.display()
    );
    if let Some(r) = report["reconstruction"].as_object() {
        println!(
            "PSNR/SSIM reconstruction {} / {}; baseline {} / {}",
            r["psnr"], r["ssim"], report["baseline"]["psnr"], report["baseline"]["ssim"]
        );
    }
    Ok(())
}
