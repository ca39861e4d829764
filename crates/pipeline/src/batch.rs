//! A whole dataset: the items of a manifest ([`crate::manifest`]), split into shards
//! ([`crate::shard`]), reconstructed in micro-batches with the library calls `reconstruct`
//! uses, and written so that nothing finished is ever lost.
//!
//! **Output folder.**
//! ```text
//! OUT/batch.json                    the items and the run's settings (every shard writes the same)
//! OUT/items/ID/                     one item's reconstruction.png, samples/, std.png, baseline.png,
//!                                   measurement.npy, report.json — as `genprior reconstruct` writes them
//! OUT/items/ID/done.json            the done-marker, written last
//! OUT/shards/shard-I-of-N/failures.jsonl   items this shard could not do, with the error
//! OUT/shards/shard-I-of-N/status.json      the shard's last run: done, failed, skipped, interrupted
//! ```
//! An item is written under a temporary name (`items/.tmp-ID-PID`), renamed to `items/ID`,
//! then marked done. A rerun skips done items and redoes everything else (a folder without
//! a marker, a temporary folder of a killed run); a bad item is recorded in the shard's
//! `failures.jsonl` and the run goes on.
//!
//! **Seeds.** Item j (its position in the manifest) simulates its measurement with the seed
//! [`item_seed`]`(seed, j)` and owns chains j·K .. (j+1)·K − 1 of the run `seed`, so its
//! result is the same whichever shard or micro-batch it runs in.
//!
//! **Micro-batches.** The manifest is cut into blocks of `micro_batch` consecutive items
//! (shards take whole blocks); the items of a block with the same task options share one
//! sampler call (K chains each), so small images fill the device. A block is always run whole
//! (its finished items are recomputed, not rewritten) so that every item meets the same
//! batch-mates in every run: the network's round-off depends on its batch, and a resumed or
//! re-sharded run is bit-identical to a single uninterrupted one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use genprior_diffusion::{Schedule, ScoreModel};
use genprior_inverse::Operator;
use genprior_posterior::{Chains, MethodProgress, PosteriorSampler, Problem};
use serde_json::{json, Value};

use crate::files::{read_npy, write_json};
use crate::images::load_image;
use crate::manifest::Item;
use crate::reconstruct::{measurement_from, reconstruct_many, simulate, Reconstruction};
use crate::shard::Shard;

/// The seed of item `index`'s simulated measurement in the run `seed` (SplitMix64 of both).
pub fn item_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `OUT/items/ID`.
pub fn item_dir(out: &Path, id: &str) -> PathBuf {
    out.join("items").join(id)
}

/// `OUT/items/ID/done.json`.
pub fn done_marker(out: &Path, id: &str) -> PathBuf {
    item_dir(out, id).join("done.json")
}

/// `OUT/shards`.
pub fn shards_dir(out: &Path) -> PathBuf {
    out.join("shards")
}

/// Whether item `id` is finished.
pub fn is_done(out: &Path, id: &str) -> bool {
    done_marker(out, id).is_file()
}

/// An item's task options (flag name → text).
type Options = BTreeMap<String, String>;

/// What the caller provides for the items of one task-option group.
pub struct Group {
    pub op: Box<dyn Operator>,
    pub sampler: Box<dyn PosteriorSampler>,
    /// The report of an item of this group before its results are added (task, method,
    /// parameters, model, ...): `report.json` is this plus the results.
    pub report: Value,
}

/// A batch run of one shard.
pub struct BatchJob<'a> {
    pub out: &'a Path,
    pub items: &'a [Item],
    pub shard: &'a Shard,
    pub model: &'a dyn ScoreModel,
    pub schedule: &'a Schedule,
    /// `[C, H, W]` of the model's images.
    pub image_shape: [usize; 3],
    /// Posterior samples K per item.
    pub samples: usize,
    pub seed: u64,
    /// Items per sampler call.
    pub micro_batch: usize,
    /// Builds the operator, sampler and report for an item's task options.
    pub group: &'a dyn Fn(&Options) -> Result<Group>,
    /// Set by a signal handler: finish the current micro-batch, then stop.
    pub stop: &'a AtomicBool,
}

/// Progress of a batch run.
pub enum BatchEvent<'a> {
    /// The shard's items: `pending` to do, `done` already finished by an earlier run.
    Start {
        pending: usize,
        done: usize,
    },
    /// A sampler call starts on these items.
    MicroBatch {
        ids: Vec<&'a str>,
    },
    Sampler(MethodProgress),
    ItemDone {
        id: &'a str,
        report: &'a Value,
    },
    ItemFailed {
        id: &'a str,
        error: String,
    },
}

/// How a shard's run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardOutcome {
    pub done: usize,
    pub failed: usize,
    /// Items finished by an earlier run.
    pub skipped: usize,
    /// Items not attempted because the run was stopped.
    pub remaining: usize,
    pub interrupted: bool,
}

/// A measurement ready to run: the item, its y `(1, ...)` and ground truth `(1, C, H, W)`.
struct Loaded<'a> {
    item: &'a Item,
    y: Tensor,
    truth: Option<Tensor>,
    source: String,
}

fn load_png(p: &Path, shape: [usize; 3]) -> Result<Tensor> {
    let x = load_image(p, Some(shape[0]), &Device::Cpu)?;
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    if [h, w] != shape[1..] {
        bail!(
            "{}: the image is {w}×{h} but the model works on {}×{} images",
            p.display(),
            shape[2],
            shape[1]
        );
    }
    Ok(x)
}

fn load_item<'a>(job: &BatchJob, op: &dyn Operator, item: &'a Item) -> Result<Loaded<'a>> {
    let truth = item
        .ground_truth()
        .map(|p| load_png(p, job.image_shape))
        .transpose()?;
    let (y, source) = match (&item.input, &item.measurement, &truth) {
        (Some(p), _, Some(x)) => {
            let s = item_seed(job.seed, item.index);
            (
                simulate(op, x, s)?,
                format!("simulated from {} with seed {s}", p.display()),
            )
        }
        (_, Some(p), _) => {
            let what = p.display().to_string();
            let y = read_npy(p, "measurement", &Device::Cpu)?;
            (measurement_from(y, op, &what)?, what)
        }
        _ => bail!("no input image or measurement"),
    };
    Ok(Loaded {
        item,
        y,
        truth,
        source,
    })
}

/// Appends one JSON line to `path` (created if missing) and flushes it.
fn append_jsonl(path: &Path, v: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{v}").with_context(|| format!("writing {}", path.display()))?;
    f.flush()?;
    Ok(())
}

/// Removes what a killed run may have left of item `id`: its temporary folders and an
/// unmarked item folder.
fn clear_partial(out: &Path, id: &str) -> Result<()> {
    let items = out.join("items");
    let prefix = format!(".tmp-{id}-");
    for e in std::fs::read_dir(&items)?.flatten() {
        // `.tmp-ID-PID` exactly: ids may contain '-', so `.tmp-a-b-7` is item a-b's, not a's.
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(&prefix).unwrap_or("");
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    remove_dir(&item_dir(out, id))
}

fn remove_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove the partial result {}", dir.display()))?;
    }
    Ok(())
}

/// Writes one finished item: a temporary folder, renamed, then the done-marker.
fn write_item(job: &BatchJob, g: &Group, l: &Loaded, rec: &Reconstruction) -> Result<Value> {
    let id = &l.item.id;
    let tmp = job
        .out
        .join("items")
        .join(format!(".tmp-{id}-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("samples"))?;
    let mut report = g.report.clone();
    if let Some(r) = report.as_object_mut() {
        r.insert("id".into(), json!(id));
        r.insert("index".into(), json!(l.item.index));
        r.insert("measurement_source".into(), json!(l.source));
    }
    let report = rec.write(&tmp, g.op.as_ref(), &l.y, l.truth.as_ref(), report)?;
    remove_dir(&item_dir(job.out, id))?;
    std::fs::rename(&tmp, item_dir(job.out, id))
        .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    write_json(
        &done_marker(job.out, id),
        &json!({"id": id, "index": l.item.index, "shard": job.shard.dir_name()}),
    )?;
    Ok(report)
}

/// Runs one sampler call on `batch` (consecutive manifest positions, one group) and writes
/// the items not done yet; returns (id, report) of those.
fn run_micro_batch<'a>(
    job: &BatchJob,
    g: &Group,
    batch: &[Loaded<'a>],
    on: &mut dyn FnMut(BatchEvent),
) -> Result<Vec<(&'a str, Value)>> {
    let k = job.samples;
    let ys: Vec<Tensor> = batch
        .iter()
        .map(|l| Tensor::cat(&vec![&l.y; k], 0))
        .collect::<candle_core::Result<_>>()?;
    let y = Tensor::cat(&ys, 0)?;
    let problem = Problem {
        model: job.model,
        schedule: job.schedule,
        op: g.op.as_ref(),
        y: &y,
    };
    let chains = Chains {
        count: batch.len() * k,
        seed: job.seed,
        first_index: (batch[0].item.index * k) as u64,
    };
    let recs = reconstruct_many(
        &problem,
        g.sampler.as_ref(),
        &chains,
        batch.len(),
        &mut |e| on(BatchEvent::Sampler(e)),
    )?;
    batch
        .iter()
        .zip(&recs)
        .filter(|(l, _)| !is_done(job.out, &l.item.id))
        .map(|(l, r)| Ok((l.item.id.as_str(), write_item(job, g, l, r)?)))
        .collect()
}

/// Splits `v` where `same(a, b)` fails between neighbours.
fn runs<T>(v: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=v.len() {
        if i == v.len() || !same(&v[i - 1], &v[i]) {
            if i > start {
                out.push(&v[start..i]);
            }
            start = i;
        }
    }
    out
}

/// The shard's failure log and counters.
struct Tally<'a> {
    failures: PathBuf,
    outcome: ShardOutcome,
    on: &'a mut dyn FnMut(BatchEvent),
}

impl Tally<'_> {
    fn fail(&mut self, it: &Item, e: &anyhow::Error) -> Result<()> {
        let error = format!("{e:#}");
        append_jsonl(
            &self.failures,
            &json!({"id": it.id, "index": it.index, "error": error}),
        )?;
        (self.on)(BatchEvent::ItemFailed { id: &it.id, error });
        self.outcome.failed += 1;
        Ok(())
    }
}

/// Runs the items of one block with the same options (some may be done already: they are
/// recomputed so that the others share their sampler call exactly as in an uninterrupted run,
/// but not rewritten).
fn run_group(
    job: &BatchJob,
    items: &[Item],
    groups: &mut Vec<(Options, std::result::Result<Group, String>)>,
    t: &mut Tally,
) -> Result<()> {
    let pending = |it: &Item| !is_done(job.out, &it.id);
    // Operators and samplers are built once per distinct set of options.
    let opts = &items[0].options;
    let at = match groups.iter().position(|(o, _)| o == opts) {
        Some(i) => i,
        None => {
            groups.push((
                opts.clone(),
                (job.group)(opts).map_err(|e| format!("{e:#}")),
            ));
            groups.len() - 1
        }
    };
    let g = match &groups[at].1 {
        Ok(g) => g,
        Err(e) => {
            let e = anyhow::anyhow!("{e}");
            for it in items.iter().filter(|it| pending(it)) {
                t.fail(it, &e)?;
            }
            return Ok(());
        }
    };
    let mut loaded = Vec::new();
    for it in items {
        if pending(it) {
            clear_partial(job.out, &it.id)?;
        }
        match load_item(job, g.op.as_ref(), it) {
            Ok(l) => loaded.push(l),
            Err(e) if pending(it) => t.fail(it, &e)?,
            Err(_) => {}
        }
    }
    // A failed item splits the call where chain indices stop being consecutive.
    for part in runs(&loaded, |a, b| b.item.index == a.item.index + 1) {
        if !part.iter().any(|l| pending(l.item)) {
            continue;
        }
        (t.on)(BatchEvent::MicroBatch {
            ids: part.iter().map(|l| l.item.id.as_str()).collect(),
        });
        match run_micro_batch(job, g, part, t.on) {
            Ok(written) => {
                for (id, report) in &written {
                    (t.on)(BatchEvent::ItemDone { id, report });
                }
                t.outcome.done += written.len();
            }
            Err(e) => {
                for l in part.iter().filter(|l| pending(l.item)) {
                    t.fail(l.item, &e)?;
                }
            }
        }
    }
    Ok(())
}

/// Runs this shard's pending items (see the module docs) and reports through `on`.
pub fn run_shard(job: &BatchJob, on: &mut dyn FnMut(BatchEvent)) -> Result<ShardOutcome> {
    if job.samples == 0 || job.micro_batch == 0 {
        bail!("samples and the micro-batch size must be at least 1");
    }
    let shard_dir = shards_dir(job.out).join(job.shard.dir_name());
    std::fs::create_dir_all(&shard_dir)?;
    std::fs::create_dir_all(job.out.join("items"))?;
    let failures = shard_dir.join("failures.jsonl");
    // This run's failures only: a rerun retries the items an earlier run failed.
    crate::files::write_atomic(&failures, b"")?;
    let mine = &job.items[job.shard.items(job.items.len(), job.micro_batch)];
    let pending = |b: &[Item]| b.iter().filter(|it| !is_done(job.out, &it.id)).count();
    let skipped = mine.len() - pending(mine);
    on(BatchEvent::Start {
        pending: mine.len() - skipped,
        done: skipped,
    });
    let started = Instant::now();
    let mut t = Tally {
        failures,
        outcome: ShardOutcome {
            skipped,
            ..Default::default()
        },
        on,
    };
    let blocks: Vec<&[Item]> = mine.chunks(job.micro_batch).collect();
    let mut groups = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        if pending(block) == 0 {
            continue;
        }
        if job.stop.load(Ordering::SeqCst) {
            t.outcome.interrupted = true;
            t.outcome.remaining = blocks[b..].iter().map(|b| pending(b)).sum();
            break;
        }
        for group in runs(block, |a, b| a.options == b.options) {
            run_group(job, group, &mut groups, &mut t)?;
        }
    }
    let outcome = t.outcome;
    write_json(
        &shard_dir.join("status.json"),
        &json!({
            "shard": job.shard,
            "items": mine.len(),
            "done": outcome.done,
            "failed": outcome.failed,
            "skipped_already_done": outcome.skipped,
            "remaining": outcome.remaining,
            "interrupted": outcome.interrupted,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    )?;
    Ok(outcome)
}

/// Writes `OUT/batch.json` (the items and `settings`), or checks that an existing one (from
/// an earlier run or another shard) describes the same run.
pub fn record_run(out: &Path, items: &[Item], settings: &Value) -> Result<()> {
    let v = json!({"items": items, "settings": settings});
    let path = out.join("batch.json");
    if path.is_file() {
        let old: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        if old["items"] != v["items"] {
            bail!(
                "{} was started with a different manifest; use a new --out folder",
                out.display()
            );
        }
        if old["settings"] != v["settings"] {
            let diff: Vec<String> = settings
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, val)| old["settings"].get(k.as_str()) != Some(val))
                .map(|(k, _)| k.clone())
                .collect();
            bail!(
                "{} was started with different settings ({}); use the same settings to resume, or a new --out folder",
                out.display(),
                diff.join(", ")
            );
        }
        return Ok(());
    }
    write_json(&path, &v)
}

/// Reads `OUT/batch.json`: the items and settings of the run.
pub fn read_run(out: &Path) -> Result<(Vec<Item>, Value)> {
    let path = out.join("batch.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no batch.json; is this a `genprior batch` output folder?",
            out.display()
        )
    })?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let items: Vec<Item> = serde_json::from_value(v["items"].clone())
        .with_context(|| format!("{}: bad items", path.display()))?;
    Ok((items, v["settings"].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_an_item_leaves_other_items_temporaries() {
        let out = std::env::temp_dir().join(format!("genprior-clear-{}", std::process::id()));
        let items = out.join("items");
        for d in [".tmp-a-12", ".tmp-a-b-13", ".tmp-a-1-14", "a", "a-b"] {
            std::fs::create_dir_all(items.join(d)).unwrap();
        }
        clear_partial(&out, "a").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&items)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-a-1-14", ".tmp-a-b-13", "a-b"]);
        std::fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn item_seeds_differ_by_index_and_run() {
        let s: std::collections::HashSet<u64> = (0..1000)
            .flat_map(|i| [item_seed(0, i), item_seed(1, i)])
            .collect();
        assert_eq!(s.len(), 2000);
    }
}
