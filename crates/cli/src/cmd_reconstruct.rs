//! `genprior reconstruct` (DPnP / DPS posterior sampling) and `genprior degrade` (simulate a
//! measurement).
//!
//! The measurement noise of `--input` runs is drawn from `--seed` exactly as `degrade --seed`
//! draws it, so `degrade --seed S` followed by `reconstruct --measurement` sees the same y as
//! `reconstruct --input --seed S`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use genprior_inverse::{build_operator, Operator, PcsConfig, PcsMethod, TaskSpec};
use genprior_posterior::{
    default_zeta, dpnp, dps, DdsMethod, DpnpConfig, DpsConfig, DpsMisfit, EtaSchedule, Progress,
    WarmStart,
};
use indicatif::{MultiProgress, ProgressBar};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::common::{self, ModelArgs};
use crate::images;

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
    fn noise_sigma(&self) -> f64 {
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
    /// dpnp-ddim (DPnP with DDS-DDIM), dpnp-ddpm (DPnP with DDS-DDPM), or dps.
    #[arg(long, default_value = "dpnp-ddim", value_parser = ["dpnp-ddim", "dpnp-ddpm", "dps"])]
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
    /// DPnP: outer steps K (k_start at η_max, then geometric from η_max to η_min).
    #[arg(long, default_value_t = 16)]
    pub outer_steps: usize,
    /// DPnP: outer steps held at η_max before the geometric decrease.
    #[arg(long, default_value_t = 4)]
    pub k_start: usize,
    /// DPnP: largest η.
    #[arg(long, default_value_t = 0.4)]
    pub eta_max: f64,
    /// DPnP: smallest (final) η.
    #[arg(long, default_value_t = 0.16)]
    pub eta_min: f64,
    /// DPnP: at most this many network evaluations per DDS call (default: the full DDIM grid or
    /// every usable DDPM timestep; fewer is faster and less accurate).
    #[arg(long)]
    pub dds_steps: Option<usize>,
    /// DPnP: PCS sampler (mala: Metropolis-adjusted; ula: unadjusted, as the reference code;
    /// exact: linear-Gaussian tasks only).
    #[arg(long, default_value = "mala", value_parser = ["mala", "ula", "exact"])]
    pub pcs: String,
    /// DPnP: Langevin steps per PCS call.
    #[arg(long, default_value_t = 1000)]
    pub pcs_steps: usize,
    /// DPnP: PCS step-size scale (default: the reference's FFHQ values, phase-retrieval 0.8,
    /// one-bit 0.2, sr* 0.6; 1.0 otherwise).
    #[arg(long)]
    pub pcs_scale: Option<f64>,
    /// DPnP: PCS step-size regulariser: h = scale·min(m², η²)/(reg + √f(x)) (reference: 50,
    /// tuned for 256×256×3 images; small images have a small √f, so a smaller reg moves faster).
    #[arg(long, default_value_t = 50.0)]
    pub pcs_reg: f64,
    /// DPnP: start from the classical baseline, pure noise, or a DPS run (--dps-steps, --zeta).
    #[arg(long, default_value = "baseline", value_parser = ["baseline", "noise", "dps"])]
    pub warm_start: String,
    /// DPS (method or warm start): ancestral DDPM steps.
    #[arg(long, default_value_t = 1000)]
    pub dps_steps: usize,
    /// DPS step size ζ (default per task: sr/deblur/cs/denoise 0.3, inpainting 0.5, phase
    /// retrieval 1.0, one-bit 0.5).
    #[arg(long)]
    pub zeta: Option<f64>,
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

/// Simulated measurement of `x` (`(1, C, H, W)`) with the noise seed.
fn simulate(op: &dyn Operator, x: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(op.simulate(&x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?, &mut rng)?)
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
    if args.outer_steps == 0 {
        bail!("--outer-steps must be at least 1");
    }
    if args.pcs_steps == 0 {
        bail!("--pcs-steps must be at least 1");
    }
    if args.dps_steps == 0 {
        bail!("--dps-steps must be at least 1");
    }
    if args.dds_steps == Some(0) {
        bail!("--dds-steps must be at least 1");
    }
    common::check_sampler_options(
        args.eta_max,
        args.eta_min,
        args.zeta,
        args.pcs_scale,
        args.pcs_reg,
    )?;
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
    Ok(())
}

/// Reads a measurement `.npy` and shapes it `(1, ...measurement shape)`.
fn read_measurement(path: &Path, op: &dyn Operator) -> Result<Tensor> {
    let y = common::read_npy(path, "measurement", &Device::Cpu)?;
    let ms = op.measurement_shape();
    let d = y.dims().to_vec();
    let y = if d == ms {
        y.unsqueeze(0)?
    } else if d.len() == ms.len() + 1 && d[0] == 1 && d[1..] == ms[..] {
        y
    } else {
        bail!(
            "{}: measurement of shape {d:?} does not fit task `{}` on these images: expected {ms:?} or [1, ...] of it",
            path.display(),
            op.name()
        );
    };
    op.validate_measurement(&y)
        .with_context(|| format!("{}", path.display()))?;
    Ok(y)
}

pub(crate) fn pcs_scale_default(task: &str) -> f64 {
    match task {
        "phase-retrieval" => 0.8,
        "one-bit" => 0.2,
        t if t.starts_with("sr") => 0.6,
        _ => 1.0,
    }
}

/// Image-like measurement to write as PNG: `(1, C, h, w)` with the image's channel count.
/// Phase-retrieval magnitudes are scaled by their maximum (to [0, 1] → [-1, 1]).
fn measurement_image(op: &dyn Operator, y: &Tensor, c: usize) -> Result<Option<Tensor>> {
    let ms = op.measurement_shape();
    if ms.len() != 3 || ms[0] != c || !(c == 1 || c == 3) {
        return Ok(None);
    }
    let y = y.to_dtype(DType::F32)?;
    if op.name() == "phase-retrieval" {
        let mx = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
        return Ok(Some(y.affine(2.0 / mx as f64, -1.0)?));
    }
    Ok(Some(y))
}

fn finite_or_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}

pub fn reconstruct(args: ReconstructArgs) -> Result<()> {
    validate(&args)?;
    std::fs::create_dir_all(args.out.join("samples"))
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    if args.random_weights.is_some() && args.model.model.is_some() {
        bail!("--random-weights and --model are mutually exclusive");
    }
    let prior = common::load_prior(&args.model, args.random_weights.as_deref())?;
    let (schedule, source) = (prior.schedule.clone(), prior.info.source.clone());
    let net = prior.net.as_ref();
    let c = net.in_channels();
    if c != 1 && c != 3 {
        bail!("the model has {c} channels; PNG input/output supports 1 (grayscale) or 3 (RGB)");
    }
    let size = net
        .sample_size()
        .context("the model config has no square sample_size; cannot tell the image size")?;

    let truth = match &args.input {
        Some(p) => {
            let x = images::load_image(p, Some(c), &Device::Cpu)?;
            let (h, w) = (x.dim(2)?, x.dim(3)?);
            if (h, w) != (size, size) {
                bail!("{}: the image is {w}×{h} but the model works on {size}×{size} images; resize it first", p.display());
            }
            Some(x)
        }
        None => None,
    };
    let op = args.task.build([c, size, size])?;
    let y = match (&truth, &args.measurement) {
        (Some(x), _) => simulate(op.as_ref(), x, args.seed)?,
        (None, Some(p)) => read_measurement(p, op.as_ref())?,
        (None, None) => bail!("give --input clean.png or --measurement y.npy"),
    };
    let baseline = op.baseline(&y)?.to_dtype(DType::F32)?;

    let task = args.task.task.clone();
    let zeta = args.zeta.unwrap_or_else(|| default_zeta(&task));
    let dps_cfg = DpsConfig {
        steps: args.dps_steps,
        zeta,
        misfit: DpsMisfit::for_task(&task),
    };
    let pcs_method: PcsMethod = args.pcs.parse()?;
    let pcs_scale = args.pcs_scale.unwrap_or_else(|| pcs_scale_default(&task));
    let k_start = args.k_start.min(args.outer_steps - 1);
    let etas = EtaSchedule::Annealed {
        eta_max: args.eta_max,
        eta_min: args.eta_min,
        k_start,
        k: args.outer_steps - k_start,
    };
    eprintln!(
        "model: {}; task {task} on {c}x{size}x{size}; method {}; {} sample(s)",
        source, args.method, args.samples
    );

    let multi = MultiProgress::new();
    let start = Instant::now();
    let (samples, nfe, steps_json, acceptance) = if args.method == "dps" {
        let bar = multi.add(ProgressBar::new(args.dps_steps as u64));
        bar.set_style(common::bar_style(
            "DPS {bar:40} {pos}/{len} steps  {per_sec}  eta {eta}",
        ));
        let out = dps(
            net,
            &schedule,
            op.as_ref(),
            &y,
            args.samples,
            &dps_cfg,
            args.seed,
            &mut |s, _| bar.set_position(s as u64),
        )?;
        bar.finish_and_clear();
        (out.samples, out.nfe, serde_json::Value::Null, None)
    } else {
        let warm_start = match args.warm_start.as_str() {
            "noise" => WarmStart::Noise,
            "dps" => WarmStart::Dps(dps_cfg.clone()),
            _ => WarmStart::Baseline,
        };
        let cfg = DpnpConfig {
            etas,
            dds: if args.method == "dpnp-ddpm" {
                DdsMethod::Ddpm
            } else {
                DdsMethod::Ddim
            },
            dds_steps: args.dds_steps,
            pcs: PcsConfig {
                method: pcs_method,
                steps: args.pcs_steps,
                scale: pcs_scale,
                reg: args.pcs_reg,
                ..PcsConfig::default()
            },
            warm_start,
            samples: args.samples,
            seed: args.seed,
        };
        let outer = multi.add(ProgressBar::new(args.outer_steps as u64));
        outer.set_style(common::bar_style("outer {bar:30} {pos}/{len}  {msg}"));
        let inner = multi.add(ProgressBar::new(0));
        inner.set_style(common::bar_style("inner {bar:30} {pos}/{len}  {msg}"));
        let out = dpnp(net, &schedule, op.as_ref(), &y, &cfg, &mut |e| match e {
            Progress::WarmStart { step, total } => {
                inner.set_length(total as u64);
                inner.set_position(step as u64);
                inner.set_message("DPS warm start");
            }
            Progress::Pcs { eta, .. } => {
                inner.set_message(format!("PCS (η = {eta:.3})"));
            }
            Progress::Dds {
                inner: i,
                inner_total,
                ..
            } => {
                inner.set_length(inner_total as u64);
                inner.set_position(i as u64);
                inner.set_message("DDS");
            }
            Progress::Outer(s) => {
                outer.set_position(s.step as u64);
                outer.set_message(format!(
                    "η {:.3}  acceptance {:.3}  NFE {}",
                    s.eta, s.acceptance, s.nfe
                ));
            }
        })?;
        inner.finish_and_clear();
        outer.finish_and_clear();
        let steps: Vec<_> = out
            .steps
            .iter()
            .map(
                |s| json!({"step": s.step, "eta": s.eta, "acceptance": s.acceptance, "nfe": s.nfe}),
            )
            .collect();
        let acc = out.mean_acceptance();
        (out.samples, out.nfe, json!(steps), Some(acc))
    };
    let seconds = start.elapsed().as_secs_f64();

    // Outputs.
    let samples = samples.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let mean = samples.mean_keepdim(0)?;
    let std = if args.samples > 1 {
        samples
            .broadcast_sub(&mean)?
            .sqr()?
            .sum_keepdim(0)?
            .affine(1.0 / (args.samples - 1) as f64, 0.0)?
            .sqrt()?
    } else {
        mean.zeros_like()?
    };
    let std_max = std.max_all()?.to_scalar::<f32>()? as f64;
    let std_scale = if std_max > 0.0 { std_max } else { 1.0 };
    images::save_image(&mean, args.out.join("reconstruction.png"))?;
    for i in 0..args.samples {
        images::save_image(
            &samples.narrow(0, i, 1)?,
            args.out.join("samples").join(format!("{i:03}.png")),
        )?;
    }
    // std / scale ∈ [0, 1] shown as black → white.
    images::save_image(
        &std.affine(2.0 / std_scale, -1.0)?,
        args.out.join("std.png"),
    )?;
    images::save_image(&baseline.clamp(-1.0, 1.0)?, args.out.join("baseline.png"))?;
    common::write_npy(&y, &args.out.join("measurement.npy"))?;
    let wrote_measurement_png = match measurement_image(op.as_ref(), &y, c)? {
        Some(img) => {
            images::save_image(&img, args.out.join("measurement.png"))?;
            true
        }
        None => false,
    };

    let metrics = |img: &Tensor| -> Result<serde_json::Value> {
        let Some(x) = &truth else {
            return Ok(serde_json::Value::Null);
        };
        let a = genprior_inverse::to_unit_range(img)?;
        let b = genprior_inverse::to_unit_range(x)?;
        let p = genprior_inverse::psnr(&a, &b)?[0];
        let s = genprior_inverse::ssim(&a, &b).ok().map(|v| v[0]);
        Ok(json!({"psnr": finite_or_null(p), "ssim": s}))
    };
    let report = json!({
        "task": task,
        "method": args.method,
        "seed": args.seed,
        "samples": args.samples,
        "nfe": nfe,
        "nfe_per_image": nfe,
        "seconds": seconds,
        "seconds_per_image": seconds / args.samples as f64,
        "std_scale": std_scale,
        "std_png": "per-pixel posterior standard deviation / std_scale, black = 0, white = std_scale (images in [-1, 1])",
        "mean_pcs_acceptance": acceptance,
        "outer_steps": steps_json,
        "reconstruction": metrics(&mean)?,
        "baseline": metrics(&baseline)?,
        "measurement_png": wrote_measurement_png,
        "measurement_source": match (&args.input, &args.measurement) {
            (Some(p), _) => format!("simulated from {} with seed {}", p.display(), args.seed),
            (None, Some(p)) => p.display().to_string(),
            _ => String::new(),
        },
        "image_shape": [c, size, size],
        "measurement_shape": y.dims()[1..].to_vec(),
        "model": source,
        "parameters": {
            "task": &args.task,
            "noise_sigma": args.task.noise_sigma(),
            "likelihood_temperature": op.temperature(),
            "outer_steps": args.outer_steps,
            "k_start": k_start,
            "eta_max": args.eta_max,
            "eta_min": args.eta_min,
            "pcs": args.pcs,
            "pcs_steps": args.pcs_steps,
            "dds_steps": args.dds_steps,
            "pcs_scale": pcs_scale,
            "pcs_reg": args.pcs_reg,
            "warm_start": args.warm_start,
            "dps_steps": args.dps_steps,
            "zeta": zeta,
            "dps_misfit": format!("{:?}", dps_cfg.misfit),
            "device": args.model.device.device,
            "dtype": args.model.device.dtype,
        },
    });
    common::write_atomic(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!(
        "{}: {} sample(s) in {seconds:.2} s, {nfe} network evaluations; wrote {}",
        args.method,
        args.samples,
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
