//! Which part of a batch run this process does: `--shard i/n`, a Slurm array task, a
//! Kubernetes Indexed Job pod, or one process per GPU on a node.
//!
//! The manifest's N items form blocks of B consecutive items (B = the micro-batch size: the
//! items that share a sampler call), and shard i of n does blocks ⌊i·nb/n⌋ .. ⌊(i+1)·nb/n⌋ − 1
//! of the nb = ⌈N/B⌉, so the same manifest, block size and shard count give the same split on
//! every run and machine, and an item shares its sampler call with the same items whatever
//! the shard count (which keeps results bit-identical: a network's floating-point round-off
//! depends on what else is in its batch).

use std::ops::Range;

use anyhow::{bail, Result};
use serde::Serialize;

/// This process's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// Where index and count came from (for logs and reports).
    pub source: String,
    /// `LOCAL_RANK` when the shard came from it (one process per GPU: the CUDA device to use).
    pub local_rank: Option<usize>,
}

impl Shard {
    /// The whole run in one process.
    pub fn single() -> Self {
        Self {
            index: 0,
            count: 1,
            source: "single process".into(),
            local_rank: None,
        }
    }

    /// The manifest positions this shard does, of `n` items in blocks of `block`.
    pub fn items(&self, n: usize, block: usize) -> Range<usize> {
        let block = block.max(1);
        let nb = n.div_ceil(block);
        let first = self.index * nb / self.count;
        let end = (self.index + 1) * nb / self.count;
        (first * block).min(n)..(end * block).min(n)
    }

    /// Folder name of the shard's bookkeeping (`shard-0003-of-0100`).
    pub fn dir_name(&self) -> String {
        format!("shard-{:04}-of-{:04}", self.index, self.count)
    }
}

fn parse_usize(name: &str, v: &str) -> Result<usize> {
    v.trim()
        .parse::<usize>()
        .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a non-negative integer"))
}

fn checked(index: usize, count: usize, source: String, local_rank: Option<usize>) -> Result<Shard> {
    if count == 0 {
        bail!("{source}: the number of shards must be at least 1");
    }
    if index >= count {
        bail!("{source}: shard index {index} is not below the shard count {count}");
    }
    Ok(Shard {
        index,
        count,
        source,
        local_rank,
    })
}

/// The shard of this process. `explicit` is `--shard i/n`, `num_shards` is `--num-shards`,
/// `env` reads the environment. In order of precedence:
/// 1. `--shard i/n`;
/// 2. a Slurm array task: with `--num-shards N`, shard `SLURM_ARRAY_TASK_ID` of N (array ids
///    0..N−1 are the shards, so one task can be resubmitted alone); without it, index
///    (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`) / `SLURM_ARRAY_TASK_STEP` of
///    `SLURM_ARRAY_TASK_COUNT`;
/// 3. a Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` of `--num-shards` (the Job's
///    completions);
/// 4. one process per GPU: `LOCAL_RANK` of `--num-shards`, else of `LOCAL_WORLD_SIZE`;
/// 5. otherwise the whole run (`--num-shards` above 1 without an index is an error).
///
/// `--num-shards` given with `--shard` must agree with its count.
pub fn resolve_shard(
    explicit: Option<&str>,
    num_shards: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Shard> {
    let agree = |count: usize, source: &str| -> Result<()> {
        match num_shards {
            Some(n) if n != count => {
                bail!("--num-shards {n} disagrees with {source}, which gives {count} shards")
            }
            _ => Ok(()),
        }
    };
    if let Some(s) = explicit {
        let Some((i, n)) = s.split_once('/') else {
            bail!("--shard {s:?}: expected INDEX/COUNT, e.g. 0/4");
        };
        let (i, n) = (parse_usize("--shard", i)?, parse_usize("--shard", n)?);
        agree(n, "--shard")?;
        return checked(i, n, format!("--shard {s}"), None);
    }
    if let Some(id) = env("SLURM_ARRAY_TASK_ID") {
        let id = parse_usize("SLURM_ARRAY_TASK_ID", &id)?;
        if let Some(n) = num_shards {
            // Array ids are the shard indices: resubmitting one task (`--array=7`) keeps its
            // shard.
            return checked(
                id,
                n,
                format!("Slurm array task {id} of --num-shards {n}"),
                None,
            );
        }
        let Some(count) = env("SLURM_ARRAY_TASK_COUNT") else {
            bail!("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not");
        };
        let count = parse_usize("SLURM_ARRAY_TASK_COUNT", &count)?;
        let min = match env("SLURM_ARRAY_TASK_MIN") {
            Some(v) => parse_usize("SLURM_ARRAY_TASK_MIN", &v)?,
            None => 0,
        };
        let step = match env("SLURM_ARRAY_TASK_STEP") {
            Some(v) => parse_usize("SLURM_ARRAY_TASK_STEP", &v)?.max(1),
            None => 1,
        };
        if id < min || !(id - min).is_multiple_of(step) {
            bail!("SLURM_ARRAY_TASK_ID={id} is not on the array's grid (min {min}, step {step})");
        }
        let source = format!("Slurm array task {id} (min {min}, step {step}, {count} tasks)");
        return checked((id - min) / step, count, source, None);
    }
    if let Some(i) = env("JOB_COMPLETION_INDEX") {
        let i = parse_usize("JOB_COMPLETION_INDEX", &i)?;
        let Some(n) = num_shards else {
            bail!("JOB_COMPLETION_INDEX={i} is set (a Kubernetes Indexed Job): give --num-shards, the Job's completions");
        };
        return checked(i, n, format!("Kubernetes JOB_COMPLETION_INDEX {i}"), None);
    }
    if let Some(r) = env("LOCAL_RANK") {
        let r = parse_usize("LOCAL_RANK", &r)?;
        let n = match (num_shards, env("LOCAL_WORLD_SIZE")) {
            (Some(n), _) => n,
            (None, Some(w)) => parse_usize("LOCAL_WORLD_SIZE", &w)?,
            (None, None) => bail!(
                "LOCAL_RANK={r} is set: give --num-shards (or set LOCAL_WORLD_SIZE), the number of processes"
            ),
        };
        return checked(r, n, format!("LOCAL_RANK {r}"), Some(r));
    }
    match num_shards {
        Some(n) if n > 1 => bail!(
            "--num-shards {n} without a shard index: give --shard i/{n}, or run under a Slurm array, an Indexed Job (JOB_COMPLETION_INDEX) or a launcher setting LOCAL_RANK"
        ),
        _ => Ok(Shard::single()),
    }
}

/// The CUDA device ordinal for a shard from `LOCAL_RANK`: the rank itself, unless
/// `CUDA_VISIBLE_DEVICES` leaves this process exactly one device (a launcher already pinned
/// it), then 0.
pub fn cuda_ordinal(shard: &Shard, cuda_visible_devices: Option<&str>) -> usize {
    match (shard.local_rank, cuda_visible_devices) {
        (None, _) => 0,
        (Some(_), Some(v)) if v.split(',').filter(|s| !s.trim().is_empty()).count() == 1 => 0,
        (Some(r), _) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    #[test]
    fn blocks_cover_every_item_once() {
        for n in [0usize, 1, 5, 10, 13, 100] {
            for count in [1usize, 2, 3, 4, 7, 16] {
                for block in [1usize, 3, 4] {
                    let mut seen = vec![0; n];
                    for index in 0..count {
                        let s = checked(index, count, "t".into(), None).unwrap();
                        let r = s.items(n, block);
                        // Whole blocks only.
                        assert!(r.is_empty() || r.start.is_multiple_of(block), "{r:?}");
                        assert!(
                            r.is_empty() || r.end.is_multiple_of(block) || r.end == n,
                            "{r:?}"
                        );
                        for i in r {
                            seen[i] += 1;
                        }
                    }
                    assert!(seen.iter().all(|&c| c == 1), "{n} items, {count} shards");
                }
            }
        }
    }

    #[test]
    fn sources_in_order_of_precedence() {
        let none = env_of(&[]);
        assert_eq!(resolve_shard(None, None, &none).unwrap(), Shard::single());
        assert_eq!(resolve_shard(Some("2/5"), None, &none).unwrap().index, 2);
        assert!(resolve_shard(Some("5/5"), None, &none).is_err());
        assert!(resolve_shard(Some("2-5"), None, &none).is_err());
        assert!(resolve_shard(Some("1/4"), Some(3), &none).is_err());
        assert!(resolve_shard(None, Some(4), &none).is_err());
        let slurm = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("JOB_COMPLETION_INDEX", "0"),
        ]);
        let s = resolve_shard(None, None, &slurm).unwrap();
        assert_eq!((s.index, s.count), (3, 4));
        // --shard wins over the environment.
        assert_eq!(resolve_shard(Some("0/2"), None, &slurm).unwrap().count, 2);
        let s = resolve_shard(None, Some(8), &slurm).unwrap();
        assert_eq!((s.index, s.count), (7, 8));
        assert!(resolve_shard(None, Some(5), &slurm).is_err());
        let off_grid = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert!(resolve_shard(None, None, &off_grid).is_err());
        let k8s = env_of(&[("JOB_COMPLETION_INDEX", "3")]);
        assert!(resolve_shard(None, None, &k8s).is_err());
        assert_eq!(resolve_shard(None, Some(8), &k8s).unwrap().index, 3);
        assert!(resolve_shard(None, Some(3), &k8s).is_err());
        let rank = env_of(&[("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")]);
        let s = resolve_shard(None, None, &rank).unwrap();
        assert_eq!((s.index, s.count, s.local_rank), (1, 2, Some(1)));
        assert_eq!(cuda_ordinal(&s, None), 1);
        assert_eq!(cuda_ordinal(&s, Some("0,1")), 1);
        assert_eq!(cuda_ordinal(&s, Some("3")), 0);
        assert!(resolve_shard(None, None, &env_of(&[("LOCAL_RANK", "0")])).is_err());
        assert!(resolve_shard(None, None, &env_of(&[("SLURM_ARRAY_TASK_ID", "x")])).is_err());
    }
}
