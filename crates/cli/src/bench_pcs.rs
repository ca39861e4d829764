//! `genprior bench --pcs`: one PCS call per task with the host loop (f64 on CPU threads)
//! and with the device loop (tensor ops on `--device`, f32), timed in the same run, at each
//! `--pcs-sizes` image side (3 channels; MRI 1); prints ms per Langevin step and the device/host ratio.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use genprior_inverse::{build_task, Operator, TaskOptions};
use genprior_posterior::pcs::{pcs_seeded, PcsBackend, PcsConfig, PcsMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The tasks timed, one per forward-map family (compressed sensing and CT only up to 64²:
/// a dense 256² Gaussian matrix does not fit, and the host CT projector alone takes seconds).
const TASKS: &[(&str, usize)] = &[
    ("denoise", usize::MAX),
    ("inpaint-random", usize::MAX),
    ("sr4", usize::MAX),
    ("deblur-gauss", usize::MAX),
    ("phase-retrieval", usize::MAX),
    ("one-bit", usize::MAX),
    ("mri", usize::MAX),
    ("mri-multicoil", usize::MAX),
    ("cs", 64),
    ("ct", 64),
];

/// One row: task, side, ms per step on the host and on the device.
pub struct Row {
    pub task: &'static str,
    pub channels: usize,
    pub size: usize,
    pub host_ms: f64,
    pub device_ms: f64,
}

fn time_call(op: &dyn Operator, y: &Tensor, x0: &Tensor, cfg: &PcsConfig) -> Result<f64> {
    let seeds: Vec<u64> = (0..x0.dim(0)? as u64).collect();
    // One warm-up call (allocations, device kernels), then one timed call.
    pcs_seeded(
        op,
        y,
        x0,
        0.3,
        &PcsConfig {
            steps: 1,
            ..cfg.clone()
        },
        &seeds,
    )?;
    let t = Instant::now();
    let out = pcs_seeded(op, y, x0, 0.3, cfg, &seeds)?;
    // Reading the samples back waits for the device.
    out.samples
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / cfg.steps as f64)
}

pub fn time_pcs(
    device: &Device,
    sizes: &[usize],
    only: &[String],
    chains: usize,
    steps: usize,
) -> Result<Vec<Row>> {
    if let Some(t) = only.iter().find(|t| !TASKS.iter().any(|(n, _)| n == t)) {
        bail!(
            "--pcs-tasks: unknown task `{t}` (expected some of {:?})",
            TASKS.iter().map(|t| t.0).collect::<Vec<_>>()
        );
    }
    if chains == 0 || steps == 0 || sizes.is_empty() {
        bail!("--batch, --iters and --pcs-sizes must be positive");
    }
    let mut rows = Vec::new();
    for &size in sizes {
        // Fewer steps at large sizes keep the host loop's phase retrieval to seconds.
        let steps = if size > 64 {
            steps.div_ceil(10).max(2)
        } else {
            steps
        };
        for &(task, max_size) in TASKS {
            if size > max_size || !(only.is_empty() || only.iter().any(|t| t == task)) {
                continue;
            }
            // MRI images are real (1 channel) or complex (2); the rest are RGB.
            let c = if task.starts_with("mri") { 1 } else { 3 };
            let opts = TaskOptions::new(task)?;
            let op = build_task(&opts, [c, size, size])?;
            let n = op.image_len();
            let mut r = StdRng::seed_from_u64(1);
            let truth: Vec<f32> = (0..n).map(|_| r.random_range(-0.8..0.8)).collect();
            let truth = Tensor::from_vec(truth, (1, c, size, size), &Device::Cpu)?;
            let y = op
                .simulate(&truth, &mut StdRng::seed_from_u64(2))?
                .to_device(device)?;
            let x0: Vec<f32> = (0..chains * n).map(|_| r.random_range(-1.0..1.0)).collect();
            let x0 =
                Tensor::from_vec(x0, (chains, c, size, size), &Device::Cpu)?.to_device(device)?;
            let base = PcsConfig {
                method: PcsMethod::Mala,
                steps,
                ..PcsConfig::default()
            };
            let host_ms = time_call(
                op.as_ref(),
                &y,
                &x0,
                &PcsConfig {
                    backend: PcsBackend::Host,
                    ..base.clone()
                },
            )?;
            let device_ms = time_call(
                op.as_ref(),
                &y,
                &x0,
                &PcsConfig {
                    backend: PcsBackend::Device,
                    device_dtype: Some(DType::F32),
                    ..base
                },
            )?;
            eprintln!("{task} {size}²: host {host_ms:.3} ms/step, device {device_ms:.3} ms/step");
            rows.push(Row {
                task,
                channels: c,
                size,
                host_ms,
                device_ms,
            });
        }
    }
    Ok(rows)
}

pub fn run(
    device: &Device,
    sizes: &[usize],
    only: &[String],
    chains: usize,
    steps: usize,
    json: bool,
) -> Result<()> {
    let rows = time_pcs(device, sizes, only, chains, steps)?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"task": r.task, "channels": r.channels, "size": r.size, "host_ms_per_step": r.host_ms, "device_ms_per_step": r.device_ms, "device_over_host": r.device_ms / r.host_ms}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!("| task | image | host ms/step | device ms/step | device/host |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {}×{}² | {:.3} | {:.3} | {:.2} |",
            r.task,
            r.channels,
            r.size,
            r.host_ms,
            r.device_ms,
            r.device_ms / r.host_ms
        );
    }
    Ok(())
}
