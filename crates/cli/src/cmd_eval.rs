//! `genprior eval`: the reconstruction-quality benchmark. Every task at its default settings,
//! every method (classical baseline, DPnP-DDIM, DPnP-DDPM, DPS) on a fixed image set; PSNR and
//! SSIM per image, mean ± std, network evaluations and seconds per image.
//!
//! Images are reconstructed as one batch (one chain per image, `--batch` images at a time).
//! Each (task, method) result is written to `OUT/results/<task>__<method>.json` as soon as it
//! is finished, with its settings; a rerun with the same settings skips it (resume), so an
//! interrupted run loses at most the pair in progress. `OUT/summary.{json,md}` and the
//! per-task grids under `OUT/grids/` are rewritten after every pair.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use genprior_diffusion::Schedule;
use genprior_inverse::{Operator, PcsConfig, PcsMethod};
use genprior_posterior::{
    default_zeta, dpnp, dps, DdsMethod, DpnpConfig, DpsConfig, DpsMisfit, EtaSchedule, Progress,
    WarmStart,
};
use indicatif::{MultiProgress, ProgressBar};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::cmd_reconstruct::{pcs_scale_default, TaskArgs};
use crate::common::{self, ModelArgs};
use crate::images;

/// The methods, in table order.
pub const METHODS: [&str; 4] = ["baseline", "dpnp-ddim", "dpnp-ddpm", "dps"];

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
    /// Comma-separated methods: baseline, dpnp-ddim, dpnp-ddpm, dps (or `all`).
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// CI-sized run: the first 4 images and tiny step counts (checks the pipeline, not the
    /// numbers). Explicit step options still override.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the measurement noise and of every sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per batch (one chain each).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Output folder (created if missing). Finished results in it are reused when their
    /// settings match.
    #[arg(long)]
    pub out: PathBuf,
    /// Recompute results even when a matching one exists.
    #[arg(long)]
    pub force: bool,
    /// DPnP: outer steps (default 8; quick 2).
    #[arg(long)]
    pub outer_steps: Option<usize>,
    /// DPnP: outer steps at η_max before the geometric decrease (default 2; quick 1).
    #[arg(long)]
    pub k_start: Option<usize>,
    /// DPnP: largest η.
    #[arg(long, default_value_t = 0.4)]
    pub eta_max: f64,
    /// DPnP: smallest η.
    #[arg(long, default_value_t = 0.1)]
    pub eta_min: f64,
    /// DPnP: network evaluations per DDS call (default 5; quick 2).
    #[arg(long)]
    pub dds_steps: Option<usize>,
    /// DPnP: start point. auto = the DPS result of the same run for phase-retrieval (as the
    /// reference does; the global sign of x is not identifiable from |F·|, and the baseline, HIO,
    /// lands on the wrong sign for about half the images), the classical baseline otherwise.
    /// With a DPS start, DPnP's NFE and seconds include the DPS run's. baseline-sign: the
    /// baseline or its negative, per image, whichever has the lower denoising energy under the
    /// prior (6 extra NFE; for sign-blind measurements such as phase retrieval).
    #[arg(long, default_value = "auto", value_parser = ["auto", "baseline", "dps", "baseline-sign"])]
    pub warm_start: String,
    /// DPnP: PCS on linear-Gaussian tasks (sr*, inpaint-*, deblur-*, cs, denoise): `exact`
    /// samples the Gaussian PCS target exactly (perturb-and-solve), `same` uses --pcs. The
    /// Langevin step-size rule suits none of them well at once: MALA's acceptance falls to
    /// 0.08 on inpainting with the step size that suits super-resolution.
    #[arg(long, default_value = "exact", value_parser = ["exact", "same"])]
    pub pcs_linear: String,
    /// DPnP: PCS sampler (on linear-Gaussian tasks only with --pcs-linear same).
    #[arg(long, default_value = "mala", value_parser = ["mala", "ula"])]
    pub pcs: String,
    /// DPnP: Langevin steps per PCS call (default 100; quick 10).
    #[arg(long)]
    pub pcs_steps: Option<usize>,
    /// DPnP: PCS step-size scale (default: `genprior reconstruct`'s per-task default).
    #[arg(long)]
    pub pcs_scale: Option<f64>,
    /// DPnP: PCS step-size regulariser (h = scale·min(m², η²)/(reg + √f)). Default 0.5, chosen
    /// on the validation slice: the reference's 50 suits 256×256×3 images, where √f is large;
    /// on 32×32 digits it makes PCS barely move.
    #[arg(long)]
    pub pcs_reg: Option<f64>,
    /// DPS: steps (default 20, about the wall time of one DPnP run; quick 4).
    #[arg(long)]
    pub dps_steps: Option<usize>,
    /// DPS: step size ζ (default: per task, as `genprior reconstruct`).
    #[arg(long)]
    pub zeta: Option<f64>,
}

/// Default PCS step-size regulariser of the benchmark.
pub const EVAL_PCS_REG: f64 = 0.5;

/// Resolved step counts.
#[derive(Debug, Clone, serde::Serialize)]
struct Steps {
    outer_steps: usize,
    k_start: usize,
    dds_steps: usize,
    pcs_steps: usize,
    dps_steps: usize,
}

impl EvalArgs {
    fn steps(&self) -> Steps {
        let q = self.quick;
        Steps {
            outer_steps: self.outer_steps.unwrap_or(if q { 2 } else { 8 }),
            k_start: self.k_start.unwrap_or(if q { 1 } else { 2 }),
            dds_steps: self.dds_steps.unwrap_or(if q { 2 } else { 5 }),
            pcs_steps: self.pcs_steps.unwrap_or(if q { 10 } else { 100 }),
            dps_steps: self.dps_steps.unwrap_or(if q { 4 } else { 20 }),
        }
    }
}

/// The task list for `--tasks`.
fn parse_tasks(s: &str) -> Result<Vec<String>> {
    let all: Vec<String> = genprior_inverse::TASK_NAMES
        .iter()
        .map(|t| t.to_string())
        .collect();
    if s == "all" {
        return Ok(all);
    }
    let mut out = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !all.iter().any(|a| a == t) {
            bail!(
                "--tasks: unknown task `{t}`; expected `all` or some of: {}",
                all.join(", ")
            );
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    if out.is_empty() {
        bail!("--tasks: no task given");
    }
    Ok(out)
}

/// The mask file for inpaint-mask: --mask, else the bundled one for 32×32 images.
fn mask_path(args: &EvalArgs, size: usize) -> Result<PathBuf> {
    if let Some(p) = &args.mask {
        return Ok(p.clone());
    }
    if size != 32 {
        bail!("task inpaint-mask on {size}×{size} images needs --mask FILE.png (the bundled mask is 32×32)");
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEFAULT_MASK);
    Ok(if p.is_file() {
        p
    } else {
        PathBuf::from(DEFAULT_MASK)
    })
}

fn parse_methods(s: &str) -> Result<Vec<String>> {
    if s == "all" {
        return Ok(METHODS.iter().map(|m| m.to_string()).collect());
    }
    let mut out = Vec::new();
    for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        if !METHODS.contains(&m) {
            bail!(
                "--methods: unknown method `{m}`; expected `all` or some of: {}",
                METHODS.join(", ")
            );
        }
        if !out.iter().any(|o| o == m) {
            out.push(m.to_string());
        }
    }
    if out.is_empty() {
        bail!("--methods: no method given");
    }
    // Table order.
    out.sort_by_key(|m| METHODS.iter().position(|x| x == m));
    Ok(out)
}

/// `START:END:STEP` (END exclusive, all parts optional as in Python) → indices below `n`.
fn parse_indices(spec: Option<&str>, n: usize) -> Result<Vec<usize>> {
    let Some(spec) = spec else {
        return Ok((0..n).collect());
    };
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.is_empty() || parts.len() > 3 {
        bail!("--indices {spec:?}: expected START:END:STEP");
    }
    let num = |s: &str, default: usize, what: &str| -> Result<usize> {
        if s.trim().is_empty() {
            Ok(default)
        } else {
            s.trim().parse::<usize>().with_context(|| {
                format!("--indices {spec:?}: {what} is not a non-negative integer")
            })
        }
    };
    let start = num(parts[0], 0, "START")?;
    let end = num(parts.get(1).copied().unwrap_or(""), n, "END")?;
    let step = num(parts.get(2).copied().unwrap_or(""), 1, "STEP")?;
    if step == 0 {
        bail!("--indices {spec:?}: STEP must be at least 1");
    }
    if end > n {
        bail!("--indices {spec:?}: END {end} is past the {n} images in the file");
    }
    let v: Vec<usize> = (start..end).step_by(step).collect();
    if v.is_empty() {
        bail!("--indices {spec:?} selects no image");
    }
    Ok(v)
}

/// Reads an IDX image file (magic 0x00000803, u8 pixels) as (N, 1, H, W) in [0, 255].
fn read_idx_images(path: &Path) -> Result<(Vec<u8>, [usize; 3])> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < 16 || bytes[0..4] != [0, 0, 8, 3] {
        bail!(
            "{}: not an IDX image file (expected the magic number 0x00000803 of *-images-idx3-ubyte)",
            path.display()
        );
    }
    let dim = |i: usize| {
        u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize
    };
    let (n, h, w) = (dim(4), dim(8), dim(12));
    if bytes.len() != 16 + n * h * w {
        bail!(
            "{}: truncated or corrupt IDX file ({} bytes for {n} images of {h}×{w})",
            path.display(),
            bytes.len()
        );
    }
    Ok((bytes[16..].to_vec(), [n, h, w]))
}

/// The clean images `(N, C, size, size)` in [-1, 1] and their indices in the file.
fn load_images(
    args: &EvalArgs,
    channels: usize,
    size: usize,
) -> Result<(Tensor, Vec<usize>, String)> {
    let path = match &args.images {
        Some(p) => p.clone(),
        None => {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(DEFAULT_IMAGES);
            if p.is_file() {
                p
            } else {
                PathBuf::from(DEFAULT_IMAGES)
            }
        }
    };
    if !path.is_file() {
        bail!("{}: no such image file (--images)", path.display());
    }
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let all = if is_npy {
        let t = Tensor::read_npy(&path)
            .with_context(|| format!("{}: not a readable .npy file", path.display()))?;
        let t = match t.rank() {
            3 => t.unsqueeze(1)?,
            4 => t,
            r => bail!(
                "{}: expected images of shape (N, C, H, W) or (N, H, W), got rank {r}",
                path.display()
            ),
        };
        let t = if t.dtype() == DType::U8 {
            t.to_dtype(DType::F32)?.affine(1.0 / 127.5, -1.0)?
        } else {
            let t = t.to_dtype(DType::F32)?;
            genprior_nn::check_finite(&t, &path.display().to_string())?;
            let (lo, hi) = (
                t.min_all()?.to_scalar::<f32>()?,
                t.max_all()?.to_scalar::<f32>()?,
            );
            if lo < -1.001 || hi > 1.001 {
                bail!(
                    "{}: float images must lie in [-1, 1], found values in [{lo}, {hi}]",
                    path.display()
                );
            }
            t
        };
        t
    } else {
        let (px, [n, h, w]) = read_idx_images(&path)?;
        let t = Tensor::from_vec(px, (n, 1, h, w), &Device::Cpu)?;
        t.to_dtype(DType::F32)?.affine(1.0 / 127.5, -1.0)?
    };
    let (n, c, h, w) = all.dims4()?;
    if c != channels {
        bail!(
            "{}: the images have {c} channel(s) but the model takes {channels}",
            path.display()
        );
    }
    let all = if (h, w) == (size, size) {
        all
    } else if h <= size && w <= size && (size - h) % 2 == 0 && (size - w) % 2 == 0 {
        // Zero-pad (black = -1) centred, as the MNIST prior was trained (28 → 32).
        let (ph, pw) = ((size - h) / 2, (size - w) / 2);
        ((all + 1.0)?
            .pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            - 1.0)?
    } else {
        bail!(
            "{}: the images are {w}×{h} but the model works on {size}×{size} (only centred zero-padding by an even margin is done)",
            path.display()
        );
    };
    let idx = parse_indices(args.indices.as_deref(), n)?;
    let sel = Tensor::new(
        idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        &Device::Cpu,
    )?;
    let images = all.index_select(&sel, 0)?.contiguous()?;
    Ok((images, idx, path.display().to_string()))
}

/// The task's options at their `genprior reconstruct` defaults (plus the mask).
fn task_args(task: &str, mask: Option<&Path>) -> Result<TaskArgs> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        t: TaskArgs,
    }
    let mut argv = vec!["eval".to_string(), "--task".into(), task.into()];
    if let Some(m) = mask {
        argv.push("--mask".into());
        argv.push(m.display().to_string());
    }
    Ok(Wrap::try_parse_from(argv)?.t)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn result_path(out: &Path, task: &str, method: &str) -> PathBuf {
    out.join("results").join(format!("{task}__{method}.json"))
}

fn recon_path(out: &Path, task: &str, method: &str) -> PathBuf {
    out.join("reconstructions")
        .join(format!("{task}__{method}.npy"))
}

/// The PCS sampler DPnP uses on `op` (see `--pcs-linear`).
fn pcs_method_for(args: &EvalArgs, op: &dyn Operator) -> Result<PcsMethod> {
    if args.pcs_linear == "exact" && op.is_linear_gaussian() {
        Ok(PcsMethod::Exact)
    } else {
        Ok(args.pcs.parse::<PcsMethod>()?)
    }
}

/// DPnP's start for `task`: "baseline" or "dps".
fn warm_start_for(args: &EvalArgs, task: &str) -> &'static str {
    match args.warm_start.as_str() {
        "dps" => "dps",
        "baseline-sign" => "baseline-sign",
        "auto" if task == "phase-retrieval" => "dps",
        _ => "baseline",
    }
}

/// A finished DPS run used as DPnP's start: reconstructions, NFE per image, seconds per image.
struct DpsStart {
    x: Tensor,
    nfe: usize,
    seconds_per_image: f64,
}

/// One (task, method) run over all images: (reconstructions, NFE per image, mean acceptance).
#[allow(clippy::too_many_arguments)]
fn run_method(
    net: &dyn genprior_diffusion::ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    task: &str,
    method: &str,
    y: &Tensor,
    args: &EvalArgs,
    steps: &Steps,
    start_from: Option<&DpsStart>,
    bar: &ProgressBar,
) -> Result<(Tensor, usize, Option<f64>)> {
    let n = y.dim(0)?;
    if method == "baseline" {
        return Ok((op.baseline(y)?.to_dtype(DType::F32)?, 0, None));
    }
    let dps_cfg = DpsConfig {
        steps: steps.dps_steps,
        zeta: args.zeta.unwrap_or_else(|| default_zeta(task)),
        misfit: DpsMisfit::for_task(task),
    };
    let k_start = steps.k_start.min(steps.outer_steps - 1);
    let mut parts = Vec::new();
    let mut nfe = 0;
    let sign_choice = method.starts_with("dpnp") && warm_start_for(args, task) == "baseline-sign";
    let mut acc = Vec::new();
    let mut done = 0;
    for (chunk, lo) in (0..n).step_by(args.batch).enumerate() {
        let len = args.batch.min(n - lo);
        let yc = y.narrow(0, lo, len)?;
        // One seed per batch (batch 0 uses --seed itself).
        let seed = args.seed.wrapping_add(chunk as u64 * 0x9E37_79B9);
        if method == "dps" {
            bar.set_length((n.div_ceil(args.batch) * steps.dps_steps) as u64);
            let out = dps(net, schedule, op, &yc, len, &dps_cfg, seed, &mut |s, _| {
                bar.set_position((done + s) as u64)
            })?;
            done += steps.dps_steps;
            nfe = out.nfe;
            parts.push(out.samples.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
        } else {
            let cfg = DpnpConfig {
                etas: EtaSchedule::Annealed {
                    eta_max: args.eta_max,
                    eta_min: args.eta_min,
                    k_start,
                    k: steps.outer_steps - k_start,
                },
                dds: if method == "dpnp-ddpm" {
                    DdsMethod::Ddpm
                } else {
                    DdsMethod::Ddim
                },
                dds_steps: Some(steps.dds_steps),
                pcs: PcsConfig {
                    method: pcs_method_for(args, op)?,
                    steps: steps.pcs_steps,
                    scale: args.pcs_scale.unwrap_or_else(|| pcs_scale_default(task)),
                    reg: args.pcs_reg.unwrap_or(EVAL_PCS_REG),
                    ..PcsConfig::default()
                },
                warm_start: match start_from {
                    Some(d) => WarmStart::Given(d.x.narrow(0, lo, len)?.contiguous()?),
                    None if sign_choice => {
                        let b = op.baseline(&yc)?.to_dtype(DType::F32)?;
                        let ts = genprior_posterior::default_energy_timesteps(schedule);
                        let (x0, _) = genprior_posterior::lowest_energy(
                            net,
                            schedule,
                            &[b.clone(), b.neg()?],
                            &ts,
                            seed,
                        )?;
                        WarmStart::Given(x0)
                    }
                    None => WarmStart::Baseline,
                },
                samples: len,
                seed,
            };
            bar.set_length((n.div_ceil(args.batch) * steps.outer_steps) as u64);
            let out = dpnp(net, schedule, op, &yc, &cfg, &mut |e| {
                if let Progress::Outer(s) = e {
                    bar.set_position((done + s.step) as u64);
                    bar.set_message(format!("η {:.3}, acceptance {:.3}", s.eta, s.acceptance));
                }
            })?;
            done += steps.outer_steps;
            nfe = out.nfe
                + start_from.map_or(0, |d| d.nfe)
                + if sign_choice {
                    2 * genprior_posterior::default_energy_timesteps(schedule).len()
                } else {
                    0
                };
            acc.push(out.mean_acceptance());
            parts.push(out.samples.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
        }
    }
    let acc = (!acc.is_empty()).then(|| acc.iter().sum::<f64>() / acc.len() as f64);
    Ok((Tensor::cat(&parts, 0)?, nfe, acc))
}

/// Rewrites summary.json / summary.md from the result files present.
fn write_summary(out: &Path, tasks: &[String], methods: &[String], header: &Value) -> Result<()> {
    let mut rows = Vec::new();
    let mut md = String::new();
    md.push_str("| task | method | PSNR (dB) | SSIM | NFE / image | s / image |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    for t in tasks {
        for m in methods {
            let p = result_path(out, t, m);
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let Ok(r) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            md.push_str(&format!(
                "| {t} | {m} | {:.2} ± {:.2} | {:.3} ± {:.3} | {}{} | {:.3} |\n",
                f("psnr_mean"),
                f("psnr_std"),
                f("ssim_mean"),
                f("ssim_std"),
                r["nfe_per_image"],
                if m == "dps" {
                    " (+grad)"
                } else if r["warm_start"] == "dps" {
                    " (incl. DPS start)"
                } else {
                    ""
                },
                f("seconds_per_image"),
            ));
            rows.push(json!({
                "task": t, "method": m,
                "psnr_mean": r["psnr_mean"], "psnr_std": r["psnr_std"],
                "ssim_mean": r["ssim_mean"], "ssim_std": r["ssim_std"],
                "nfe_per_image": r["nfe_per_image"], "seconds_per_image": r["seconds_per_image"],
                "mean_pcs_acceptance": r["mean_pcs_acceptance"],
            }));
        }
    }
    let summary = json!({"run": header, "rows": rows});
    common::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    common::write_atomic(&out.join("summary.md"), md.as_bytes())?;
    Ok(())
}

/// `grids/<task>.png`: rows = clean, then each method present; the first 8 images.
fn write_grid(out: &Path, task: &str, methods: &[String], truth: &Tensor) -> Result<()> {
    let k = truth.dim(0)?.min(8);
    let mut rows = vec![truth.narrow(0, 0, k)?];
    for m in methods {
        let p = recon_path(out, task, m);
        if p.is_file() {
            let r = common::read_npy(&p, "reconstructions", &Device::Cpu)?;
            if r.dim(0)? >= k {
                rows.push(r.narrow(0, 0, k)?.clamp(-1f32, 1f32)?);
            }
        }
    }
    images::save_grid_cols(
        &Tensor::cat(&rows, 0)?,
        k,
        out.join("grids").join(format!("{task}.png")),
    )
}

pub fn run(args: EvalArgs) -> Result<()> {
    let tasks = parse_tasks(&args.tasks)?;
    let methods = parse_methods(&args.methods)?;
    let steps = args.steps();
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if steps.outer_steps == 0
        || steps.dds_steps == 0
        || steps.pcs_steps == 0
        || steps.dps_steps == 0
    {
        bail!("--outer-steps, --dds-steps, --pcs-steps and --dps-steps must be at least 1");
    }
    common::check_sampler_options(
        args.eta_max,
        args.eta_min,
        args.zeta,
        args.pcs_scale,
        args.pcs_reg.unwrap_or(EVAL_PCS_REG),
    )?;
    for d in ["results", "reconstructions", "grids"] {
        std::fs::create_dir_all(args.out.join(d))
            .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    }
    let prior = common::load_prior(&args.model, None)?;
    let (schedule, source) = (prior.schedule.clone(), prior.info.source.clone());
    let net = prior.net.as_ref();
    let c = net.in_channels();
    let size = net
        .sample_size()
        .context("the model config has no square sample_size; cannot tell the image size")?;
    let (mut truth, mut idx, images_src) = load_images(&args, c, size)?;
    if args.quick && args.indices.is_none() {
        let k = truth.dim(0)?.min(4);
        truth = truth.narrow(0, 0, k)?;
        idx.truncate(k);
    }
    let n = idx.len();
    let threads = std::thread::available_parallelism()
        .map(|v| v.get())
        .unwrap_or(1);
    let header = json!({
        "model": source,
        "images": images_src,
        "indices": args.indices.clone().unwrap_or_else(|| "all".into()),
        "n_images": n,
        "seed": args.seed,
        "batch": args.batch,
        "quick": args.quick,
        "steps": steps,
        "eta_max": args.eta_max,
        "eta_min": args.eta_min,
        "pcs": args.pcs,
        "version": env!("CARGO_PKG_VERSION"),
        "threads": threads,
    });
    eprintln!(
        "eval: {n} images from {images_src}; {} task(s) × {} method(s); model {source}",
        tasks.len(),
        methods.len()
    );

    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new((tasks.len() * methods.len()) as u64));
    overall.set_style(common::bar_style(
        "eval  {bar:30} {pos}/{len}  {elapsed_precise}  {msg}",
    ));
    let inner = multi.add(ProgressBar::new(0));
    inner.set_style(common::bar_style("      {bar:30} {pos}/{len}  {msg}"));
    let truth01 = genprior_inverse::to_unit_range(&truth)?;
    for task in &tasks {
        let mask = if task == "inpaint-mask" {
            Some(mask_path(&args, size)?)
        } else {
            None
        };
        let targs = task_args(task, mask.as_deref())?;
        let op = targs.build([c, size, size])?;
        // One measurement per image, all from the task's seed, independent of --batch.
        let mut rng = StdRng::seed_from_u64(args.seed);
        let y = op.simulate(&truth, &mut rng)?;
        // With a DPS start, DPS runs first (added if not asked for) and feeds DPnP.
        let warm = warm_start_for(&args, task);
        let mut order: Vec<String> = methods.clone();
        if warm == "dps" && order.iter().any(|m| m.starts_with("dpnp")) {
            order.retain(|m| m != "dps");
            let at = order
                .iter()
                .position(|m| m.starts_with("dpnp"))
                .unwrap_or(0);
            order.insert(at, "dps".into());
        }
        let mut dps_start: Option<DpsStart> = None;
        for method in &order {
            overall.set_message(format!("{task} / {method}"));
            let settings = json!({
                "task": task,
                "method": method,
                "task_options": targs,
                "noise_sigma": op.noise_sigma(),
                "run": header,
                "zeta": args.zeta.unwrap_or_else(|| default_zeta(task)),
                "pcs_scale": args.pcs_scale.unwrap_or_else(|| pcs_scale_default(task)),
                "pcs_reg": args.pcs_reg.unwrap_or(EVAL_PCS_REG),
            });
            let mut settings = settings;
            let dpnp_from_dps = method.starts_with("dpnp") && warm == "dps";
            if dpnp_from_dps {
                // (Absent means the baseline start, so results of baseline-started runs stay valid.)
                settings["warm_start"] = json!("dps result of this run (NFE and seconds included)");
            } else if method.starts_with("dpnp") && warm == "baseline-sign" {
                settings["warm_start"] = json!("baseline-sign");
            }
            if method.starts_with("dpnp") && pcs_method_for(&args, op.as_ref())? == PcsMethod::Exact
            {
                // (Absent means --pcs, so results of Langevin runs stay valid.)
                settings["pcs_method"] = json!("exact");
            }
            let keep_for_dpnp = method == "dps" && warm == "dps";
            let rp = result_path(&args.out, task, method);
            if !args.force && recon_path(&args.out, task, method).is_file() {
                if let Ok(old) = std::fs::read_to_string(&rp)
                    .map_err(anyhow::Error::from)
                    .and_then(|s| Ok(serde_json::from_str::<Value>(&s)?))
                {
                    if old["settings"] == settings {
                        multi.suspend(|| eprintln!("{task} / {method}: reusing {}", rp.display()));
                        if keep_for_dpnp {
                            dps_start = Some(DpsStart {
                                x: common::read_npy(
                                    &recon_path(&args.out, task, method),
                                    "DPS reconstructions",
                                    &Device::Cpu,
                                )?,
                                nfe: old["nfe_per_image"].as_u64().unwrap_or(0) as usize,
                                seconds_per_image: old["seconds_per_image"].as_f64().unwrap_or(0.0),
                            });
                        }
                        if methods.contains(method) {
                            overall.inc(1);
                        }
                        continue;
                    }
                }
            }
            inner.set_position(0);
            inner.set_message(String::new());
            let start = Instant::now();
            let (x, nfe, acc) = run_method(
                net,
                &schedule,
                op.as_ref(),
                task,
                method,
                &y,
                &args,
                &steps,
                if dpnp_from_dps {
                    dps_start.as_ref()
                } else {
                    None
                },
                &inner,
            )?;
            if dpnp_from_dps && dps_start.is_none() {
                bail!("internal: DPnP on {task} needs the DPS start, which did not run");
            }
            let seconds = start.elapsed().as_secs_f64()
                + if dpnp_from_dps {
                    dps_start
                        .as_ref()
                        .map_or(0.0, |d| d.seconds_per_image * n as f64)
                } else {
                    0.0
                };
            let x01 = genprior_inverse::to_unit_range(&x)?;
            let psnr = genprior_inverse::psnr(&x01, &truth01)?;
            let ssim = genprior_inverse::ssim(&x01, &truth01)?;
            let (pm, ps) = mean_std(&psnr);
            let (sm, ss) = mean_std(&ssim);
            common::write_npy(&x, &recon_path(&args.out, task, method))?;
            if keep_for_dpnp {
                dps_start = Some(DpsStart {
                    x: x.clone(),
                    nfe,
                    seconds_per_image: seconds / n as f64,
                });
            }
            let result = json!({
                "task": task,
                "method": method,
                "n_images": n,
                "indices": idx,
                "psnr": psnr,
                "ssim": ssim,
                "psnr_mean": pm,
                "psnr_std": ps,
                "ssim_mean": sm,
                "ssim_std": ss,
                "nfe_per_image": nfe,
                "nfe_note": if method == "dps" {
                    "each evaluation is followed by a backward pass"
                } else if dpnp_from_dps {
                    "forward passes, including the DPS start's (each followed by a backward pass)"
                } else {
                    "forward passes"
                },
                "warm_start": if method.starts_with("dpnp") { json!(warm) } else { Value::Null },
                "seconds": seconds,
                "seconds_per_image": seconds / n as f64,
                "mean_pcs_acceptance": acc,
                "settings": settings,
            });
            common::write_atomic(&rp, serde_json::to_string_pretty(&result)?.as_bytes())?;
            // (eprintln, not ProgressBar::println: that one is silent when stderr is not a
            // terminal, and logs of long runs need these lines.)
            multi.suspend(|| {
                eprintln!(
                    "{task} / {method}: PSNR {pm:.2} ± {ps:.2} dB, SSIM {sm:.3} ± {ss:.3}, NFE {nfe}, {:.3} s/image{}",
                    seconds / n as f64,
                    acc.map(|a| format!(", acceptance {a:.3}")).unwrap_or_default()
                )
            });
            if methods.contains(method) {
                overall.inc(1);
            }
            write_summary(&args.out, &tasks, &methods, &header)?;
        }
        write_grid(&args.out, task, &methods, &truth)?;
    }
    inner.finish_and_clear();
    overall.finish_and_clear();
    write_summary(&args.out, &tasks, &methods, &header)?;
    println!("{}", std::fs::read_to_string(args.out.join("summary.md"))?);
    println!(
        "wrote {}/summary.md, summary.json, results/, reconstructions/ and grids/ (rows: clean, then {})",
        args.out.display(),
        methods.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_python_slices() {
        assert_eq!(
            parse_indices(Some("0:10000:100"), 10000).unwrap().len(),
            100
        );
        assert_eq!(parse_indices(Some("5:8"), 10).unwrap(), vec![5, 6, 7]);
        assert_eq!(parse_indices(Some("::4"), 10).unwrap(), vec![0, 4, 8]);
        assert_eq!(parse_indices(None, 3).unwrap(), vec![0, 1, 2]);
        assert!(parse_indices(Some("0:20"), 10).is_err());
        assert!(parse_indices(Some("0:10:0"), 10).is_err());
        assert!(parse_indices(Some("4:2"), 10).is_err());
        assert!(parse_indices(Some("a:2"), 10).is_err());
    }

    #[test]
    fn task_and_method_lists() {
        assert_eq!(
            parse_tasks("all").unwrap().len(),
            genprior_inverse::TASK_NAMES.len()
        );
        assert_eq!(parse_tasks("sr4, cs").unwrap(), vec!["sr4", "cs"]);
        assert!(parse_tasks("nope").is_err());
        assert_eq!(
            parse_methods("dps,baseline").unwrap(),
            vec!["baseline", "dps"]
        );
        assert!(parse_methods("ddpm").is_err());
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!((m, s), (2.0, 2f64.sqrt()));
    }

    #[test]
    fn task_defaults_match_reconstruct() {
        let t = task_args("one-bit", None).unwrap();
        assert_eq!(t.task, "one-bit");
        assert_eq!(t.tau, 0.4);
        assert_eq!(t.cs_ratio, 0.25);
    }
}
