//! genprior-pipeline: the jobs the `genprior` binary runs, as library calls.
//!
//! - [`reconstruct`]: one reconstruction — measurement, posterior sampler, posterior mean and
//!   standard deviation, baseline, metrics — and its output folder.
//! - [`eval`]: the quality benchmark — every task × method on an image set, with a resume
//!   cache, summaries and grids.
//! - [`batch`], [`manifest`], [`shard`], [`merge`]: a whole dataset — manifest items split
//!   into shards (Slurm arrays, Indexed Jobs, one process per GPU), micro-batched, resumable,
//!   and merged into one summary.
//! - [`imageset`]: image sets from `.npy` or IDX files, with Python-slice index selection.
//! - [`images`], [`files`]: PNG input/output and grids; `.npy` and atomic writes.

pub mod batch;
pub mod eval;
pub mod files;
pub mod images;
pub mod imageset;
pub mod manifest;
pub mod merge;
pub mod reconstruct;
pub mod shard;
