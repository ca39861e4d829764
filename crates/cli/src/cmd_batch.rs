//! `genprior batch` (a whole dataset, sharded and resumable) and `genprior merge` (one summary
//! of a batch output folder). The work is `genprior_pipeline::batch`; this file parses,
//! loads, installs the signal handler and draws progress.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use genprior_pipeline::batch::{self, BatchEvent, BatchJob, Group};
use genprior_pipeline::{manifest, merge, shard};
use genprior_posterior::build_sampler;
use indicatif::{MultiProgress, ProgressBar};
use serde_json::json;

use crate::cmd_reconstruct::run_report;
use crate::common::{self, bar_style, ModelArgs};
use crate::method_args::MethodArgs;
use crate::progress::SamplerBars;
use crate::task_args::TaskArgs;

/// Exit status of a run stopped by SIGTERM/SIGINT before its shard was finished
/// (EX_TEMPFAIL: rerun it to continue).
pub const EXIT_INTERRUPTED: u8 = 75;

#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
Manifest: a folder of PNG images (sorted by name; id = file stem), a .csv with a header row \
(columns id, input, measurement, truth, and task options by flag name, e.g. noise-sigma, \
overriding the command line for that row), or a .jsonl of objects with the keys id, input, \
measurement, truth and options. Relative paths are relative to the manifest.

Output: OUT/items/ID/ holds what `genprior reconstruct` writes (reconstruction.png, samples/, \
std.png, baseline.png, measurement.npy, report.json) and a done-marker done.json, written last; \
OUT/shards/shard-I-of-N/failures.jsonl lists the items a shard could not do. A rerun skips \
done items and redoes partial ones. SIGTERM or Ctrl-C finishes the current micro-batch and \
exits with status 75, so a scheduler can requeue the task.

Shards (contiguous blocks of the manifest, the same split on every run): --shard I/N; else a \
Slurm array task (SLURM_ARRAY_TASK_ID, _COUNT, _MIN, _STEP); else a Kubernetes Indexed Job \
(JOB_COMPLETION_INDEX with --num-shards); else LOCAL_RANK (one process per GPU, with \
--num-shards or LOCAL_WORLD_SIZE; it also picks the CUDA device). Item j's measurement noise \
and chains are seeded by (--seed, j), so results do not depend on the shard or micro-batch. \
Then `genprior merge --out OUT` writes summary.json and summary.md.")]
pub struct BatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// The items: a folder of PNG images, a .csv or a .jsonl manifest (see below).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Posterior sampler (any of `genprior reconstruct --method`).
    #[arg(long, default_value = "dpnp-ddim", value_parser = clap::builder::PossibleValuesParser::new(genprior_posterior::method_names()))]
    pub method: String,
    /// Posterior samples K per item.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Seed of the run; item j's randomness derives from (seed, j).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (created if missing; shared by every shard).
    #[arg(long)]
    pub out: PathBuf,
    /// Items per sampler call (each with --samples chains): more fills a GPU better. Part of
    /// the run's settings: shards take whole blocks of this many items, and a resumed run must
    /// use the same value (results are bit-identical only with the same batch-mates).
    #[arg(long, default_value_t = 4)]
    pub micro_batch: usize,
    /// This process's shard, INDEX/COUNT (e.g. 3/100); default: from the environment (see below).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Number of shards, for JOB_COMPLETION_INDEX or LOCAL_RANK (or to check a Slurm array's count).
    #[arg(long, value_name = "N")]
    pub num_shards: Option<usize>,
    #[command(flatten)]
    pub method_opts: MethodArgs,
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// A `genprior batch` output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// The settings every shard of a run must share (`batch.json`).
fn settings(args: &BatchArgs, source: &str, sampler: &serde_json::Value) -> serde_json::Value {
    json!({
        "task": &args.task,
        "method": args.method,
        "method_settings": sampler,
        "samples": args.samples,
        "micro_batch": args.micro_batch,
        "seed": args.seed,
        "model": source,
        "dtype": args.model.device.dtype,
    })
}

fn validate(args: &BatchArgs) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if args.micro_batch == 0 {
        bail!("--micro-batch must be at least 1");
    }
    genprior_inverse::find_task(&args.task.task)?;
    Ok(())
}

pub fn run(mut args: BatchArgs) -> Result<std::process::ExitCode> {
    validate(&args)?;
    let items = manifest::read_manifest(&args.manifest)?;
    let env = |k: &str| std::env::var(k).ok();
    let shard = shard::resolve_shard(args.shard.as_deref(), args.num_shards, &env)?;
    args.model.device.cuda_ordinal = shard::cuda_ordinal(
        &shard,
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    );
    let method_opts = args.method_opts.options_for(&args.method)?;
    let stop = common::stop_flag()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let prior = common::load_prior(&args.model, None)?;
    let net = prior.net.as_ref();
    let c = net.in_channels();
    let size = net
        .sample_size()
        .context("the model config has no square sample_size; cannot tell the image size")?;
    let base = args
        .manifest
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let group = |overrides: &std::collections::BTreeMap<String, String>| -> Result<Group> {
        let task = args.task.with_overrides(overrides, &base)?;
        let op = task.build([c, size, size])?;
        let sampler = build_sampler(&args.method, &method_opts, op.as_ref())?;
        let report = run_report(
            &task,
            &args.model.device,
            &args.method,
            args.seed,
            op.as_ref(),
            sampler.as_ref(),
            &prior.info.source,
        );
        Ok(Group {
            op,
            sampler,
            report,
        })
    };
    // The command line's own settings describe the run (a bad task option fails here).
    let first = group(&Default::default())?;
    let s = settings(&args, &prior.info.source, &first.sampler.settings());
    batch::record_run(&args.out, &items, &s)?;
    eprintln!(
        "model: {}; task {} on {c}x{size}x{size}; method {}; {} item(s) in the manifest; {} ({})",
        prior.info.source,
        args.task.task,
        args.method,
        items.len(),
        shard.dir_name(),
        shard.source
    );
    let job = BatchJob {
        out: &args.out,
        items: &items,
        shard: &shard,
        model: net,
        schedule: &prior.schedule,
        image_shape: [c, size, size],
        samples: args.samples,
        seed: args.seed,
        micro_batch: args.micro_batch,
        group: &group,
        stop: &stop,
    };
    let outcome = run_with_bars(&job, first.sampler.total_steps())?;
    println!(
        "{}: {} done, {} failed, {} already done{}; wrote {}",
        shard.dir_name(),
        outcome.done,
        outcome.failed,
        outcome.skipped,
        if outcome.interrupted {
            format!(", {} left (interrupted)", outcome.remaining)
        } else {
            String::new()
        },
        args.out.display()
    );
    if outcome.failed > 0 {
        eprintln!(
            "{} item(s) failed: see {}",
            outcome.failed,
            batch::shards_dir(&args.out)
                .join(shard.dir_name())
                .join("failures.jsonl")
                .display()
        );
    }
    if outcome.interrupted {
        eprintln!("interrupted: rerun the same command to finish this shard");
        return Ok(std::process::ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn run_with_bars(job: &BatchJob, steps: usize) -> Result<batch::ShardOutcome> {
    let multi = MultiProgress::new();
    let items_bar = multi.add(ProgressBar::new(0));
    items_bar.set_style(bar_style("items {bar:30} {pos}/{len}  {per_sec}  {msg}"));
    let mut bars = SamplerBars::new(&multi, "steps", steps);
    let outcome = batch::run_shard(job, &mut |e| match e {
        BatchEvent::Start { pending, done } => {
            items_bar.set_length(pending as u64);
            items_bar.set_message(format!("{done} already done"));
        }
        BatchEvent::MicroBatch { ids } => {
            bars.reset(steps, ids.join(","));
        }
        BatchEvent::Sampler(p) => bars.update(p),
        BatchEvent::ItemDone { id, report } => {
            items_bar.inc(1);
            items_bar.set_message(format!("{id}: PSNR {}", report["reconstruction"]["psnr"]));
        }
        BatchEvent::ItemFailed { id, error } => {
            items_bar.inc(1);
            multi.suspend(|| eprintln!("{id}: failed: {error}"));
        }
    })?;
    bars.finish();
    items_bar.finish_and_clear();
    Ok(outcome)
}

pub fn merge(args: MergeArgs) -> Result<()> {
    let s = merge::merge(&args.out)?;
    let m = &s["mean"];
    println!(
        "{} of {} items done, {} failed, {} missing; PSNR {} ± {}, SSIM {} ± {} (baseline PSNR {}); wrote {} and {}",
        s["done"],
        s["items"],
        s["failed"].as_array().map_or(0, Vec::len),
        s["missing"].as_array().map_or(0, Vec::len),
        m["psnr"]["mean"],
        m["psnr"]["std"],
        m["ssim"]["mean"],
        m["ssim"]["std"],
        m["baseline_psnr"]["mean"],
        args.out.join("summary.json").display(),
        args.out.join("summary.md").display()
    );
    Ok(())
}
