//! `genprior reconstruct` (DPnP / DPS posterior sampling) and `genprior degrade` (simulate a
//! measurement).
//!
//! The measurement noise of `--input` runs is drawn from `--seed` exactly as `degrade --seed`
//! draws it, so `degrade --seed S` followed by `reconstruct --measurement` sees the same y as
//! `reconstruct --input --seed S`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use genprior_inverse::Operator;
use genprior_pipeline::images;
use genprior_pipeline::reconstruct::{measurement_from, reconstruct as run_sampler, simulate};
use genprior_posterior::{build_sampler, Chains, PosteriorSampler, Problem};
use indicatif::MultiProgress;
use serde_json::{json, Value};

use crate::common::{self, ModelArgs};
use crate::method_args::MethodArgs;
use crate::progress::SamplerBars;
use crate::task_args::TaskArgs;

#[derive(clap::Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Clean image (PNG, the model's size and channels; or .npy in [-1, 1], e.g. a complex
    /// (H, W) array for a 2-channel MRI model): the measurement is simulated from it with
    /// --seed, and metrics are reported against it.
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
    /// Posterior sampler: DPnP with DDS-DDIM or DDS-DDPM, DPS, DiffPIR, ΠGDM, RED-diff, DDRM,
    /// DDNM, DAPS or LGD-MC (each method's flags are listed below, prefixed by its name).
    /// [default: dpnp-ddim, or the --protocol's method]
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(genprior_posterior::method_names()))]
    pub method: Option<String>,
    /// Reproduce a published protocol: dpnp-ffhq / dpnp-imagenet (the DPnP reference configs:
    /// DPnP-DDIM on the reference grid, η 0.4 → 0.16 over 16 steps, unadjusted Langevin PCS with
    /// the task's scale, noise σ 0.2 with likelihood σ 0.15 on Gaussian tasks, one-bit τ 0.4 with
    /// m 0.36 / 0.38 as likelihood temperature 2m² and --pcs-m m, the 500-step DPS / LGD-MC
    /// warm start with the configs' ζ and λ) or dps-ffhq (DPS, 1000 steps, ζ 0.6 SR, 0.8 phase
    /// retrieval, 100 on one-bit with the mean softplus loss). It sets the method and every
    /// task and method option it names; flags given explicitly win over the protocol's values.
    /// Everything lands in report.json (`protocol`, and the resolved values in `parameters`).
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(genprior_posterior::PROTOCOLS))]
    pub protocol: Option<String>,
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
    genprior_pipeline::reconstruct::write_measurement(op.as_ref(), &y, &args.out)?;
    eprintln!("wrote {} (shape {:?})", args.out.display(), y.dims());
    Ok(())
}

/// Checks that need nothing loaded.
fn validate(args: &ReconstructArgs) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if let Some(s) = args.task.given_float("noise-sigma") {
        if !(s.is_finite() && s >= 0.0) {
            bail!("--noise-sigma must be a finite number ≥ 0, got {s}");
        }
    }
    genprior_inverse::find_task(&args.task.task)?;
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
    let x = if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        // An array in [-1, 1]: (C, H, W) or (1, C, H, W); a complex (H, W) array reads as
        // (2, H, W), the real and imaginary parts of a complex image.
        let t = common::read_npy(p, "clean image", &Device::Cpu)?;
        let t = if t.rank() == 3 { t.unsqueeze(0)? } else { t };
        if t.rank() != 4 || t.dim(0)? != 1 || t.dim(1)? != c {
            bail!(
                "{}: an image array of shape {:?} does not fit the model's {c} channel(s): expected ({c}, H, W){}",
                p.display(),
                t.dims(),
                if c == 2 { " or a complex (H, W) array" } else { "" }
            );
        }
        t
    } else if c == 2 {
        bail!(
            "{}: a 2-channel (complex) model takes a complex .npy image, not a PNG",
            p.display()
        );
    } else {
        images::load_image(p, Some(c), &Device::Cpu)?
    };
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

/// What a run resolves to once a `--protocol` (if any) is applied under the explicit flags.
pub(crate) struct Resolved {
    pub task: TaskArgs,
    pub method: String,
    pub method_opts: genprior_posterior::MethodOptions,
    /// The protocol's values and which of them explicit flags overrode (`report.json`).
    pub protocol: Option<Value>,
}

/// Applies `protocol` (a name of [`genprior_posterior::PROTOCOLS`]) for images of `shape`:
/// its task options where the task declares them and no flag was given, its method unless
/// `--method` was given, its method options under the explicitly given ones.
pub(crate) fn resolve(
    task: &TaskArgs,
    method: Option<&str>,
    given: &MethodArgs,
    protocol: Option<&str>,
    shape: [usize; 3],
) -> Result<Resolved> {
    let Some(name) = protocol else {
        let method = method.unwrap_or("dpnp-ddim").to_string();
        return Ok(Resolved {
            task: task.clone(),
            method_opts: given.options_for(&method)?,
            method,
            protocol: None,
        });
    };
    let op = task.build(shape)?;
    let p = genprior_posterior::protocol(name, op.as_ref())?;
    let specs = genprior_inverse::find_task(&task.task)?.options();
    let mut overrides = std::collections::BTreeMap::new();
    let mut overridden: Vec<String> = Vec::new();
    for (k, v) in &p.task_options {
        if !specs.iter().any(|s| s.name == *k) {
            continue;
        }
        if task.given_float(k).is_some() {
            overridden.push(k.to_string());
        } else {
            overrides.insert(k.to_string(), format!("{v}"));
        }
    }
    let task = task.with_overrides(&overrides, std::path::Path::new("."))?;
    let method = method.unwrap_or(p.method).to_string();
    let entry = genprior_posterior::method(&method)?;
    let mut opts = p.method_options.declared_by(entry.options);
    for (k, v) in given.options_for(&method)?.iter() {
        if opts.get(k).is_some() {
            overridden.push(k.to_string());
        }
        opts.set(k, v.clone());
    }
    let mut report = p.to_json();
    report["overridden_by_flags"] = json!(overridden);
    if method != p.method {
        report["method_overridden_by_flag"] = json!(method);
    }
    Ok(Resolved {
        task,
        method,
        method_opts: opts,
        protocol: Some(report),
    })
}

/// The run's description for `report.json` (the results are added when it is written):
/// task, method, seed, model and every parameter (task options, the sampler's settings).
pub(crate) fn run_report(
    task: &TaskArgs,
    device: &common::DeviceArgs,
    method: &str,
    seed: u64,
    op: &dyn Operator,
    sampler: &dyn PosteriorSampler,
    source: &str,
) -> Value {
    let mut parameters = json!({
        "task": task,
        "noise_sigma": task.noise_sigma(),
        // The likelihood's σ (Gaussian tasks) or τ (one-bit): the m of L = −f/(2m²).
        "likelihood_m": op.temperature(),
        "device": device.device,
        "dtype": device.dtype,
    });
    if let (Some(p), Value::Object(s)) = (parameters.as_object_mut(), sampler.settings()) {
        p.extend(s);
    }
    json!({
        "task": task.task,
        "method": method,
        "seed": seed,
        "model": source,
        "parameters": parameters,
    })
}

pub fn reconstruct(args: ReconstructArgs) -> Result<()> {
    validate(&args)?;
    // Unknown method flags fail before the model loads.
    if args.protocol.is_none() {
        args.method_opts
            .options_for(args.method.as_deref().unwrap_or("dpnp-ddim"))?;
    }
    std::fs::create_dir_all(args.out.join("samples"))
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let prior = common::load_prior(&args.model, args.random_weights.as_deref())?;
    let (schedule, source) = (&prior.schedule, &prior.info.source);
    let net = prior.net.as_ref();
    let c = net.in_channels();
    if !(1..=3).contains(&c) {
        bail!("the model has {c} channels; genprior reconstructs 1 (grayscale), 2 (complex: real and imaginary part, MRI) or 3 (RGB) channels");
    }
    let size = net
        .sample_size()
        .context("the model config has no square sample_size; cannot tell the image size")?;
    let truth = load_truth(&args, c, size)?;
    let run = resolve(
        &args.task,
        args.method.as_deref(),
        &args.method_opts,
        args.protocol.as_deref(),
        [c, size, size],
    )?;
    let op = run.task.build([c, size, size])?;
    if c == 2 && !op.complex_image() {
        bail!(
            "the model has 2 channels, which genprior reads as complex images (real, imaginary); task `{}` does not take complex images (mri and mri-multicoil do)",
            run.task.task
        );
    }
    let (y, measurement_source) = measurement(&args, op.as_ref(), truth.as_ref())?;
    let sampler = build_sampler(&run.method, &run.method_opts, op.as_ref())?;
    eprintln!(
        "model: {source}; task {} on {c}x{size}x{size}; method {}{}; {} sample(s)",
        run.task.task,
        run.method,
        args.protocol
            .as_deref()
            .map(|p| format!(" (protocol {p})"))
            .unwrap_or_default(),
        args.samples
    );
    let problem = Problem {
        model: net,
        schedule,
        op: op.as_ref(),
        y: &y,
    };
    let mut bars = SamplerBars::new(&MultiProgress::new(), "steps", sampler.total_steps());
    let chains = Chains::new(args.samples, args.seed);
    let rec = run_sampler(&problem, sampler.as_ref(), &chains, &mut |e| bars.update(e))?;
    bars.finish();
    let mut report = run_report(
        &run.task,
        &args.model.device,
        &run.method,
        args.seed,
        op.as_ref(),
        sampler.as_ref(),
        source,
    );
    report["measurement_source"] = json!(measurement_source);
    if let Some(p) = run.protocol {
        report["protocol"] = p;
    }
    let report = rec.write(&args.out, op.as_ref(), &y, truth.as_ref(), report)?;
    println!(
        "{}: {} sample(s) in {:.2} s, {} network evaluations; wrote {}",
        run.method,
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
