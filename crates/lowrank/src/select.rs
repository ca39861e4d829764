//! Rank selection by held-out validation error (matrix completion).

use serde::Serialize;

use crate::error::{invalid, Result};
use crate::matrix::{Factors, MatrixCompletion};
use crate::solver::Options;

/// Outcome of one candidate rank.
#[derive(Debug, Clone, Serialize)]
pub struct RankScore {
    pub rank: usize,
    /// Relative error on the held-out entries; `None` if the solve failed.
    pub heldout_rel_error: Option<f64>,
    pub train_residual: Option<f64>,
    pub iterations: usize,
    /// Error message when the solve failed (e.g. diverged).
    pub error: Option<String>,
}

/// Held-out error for each candidate rank and the chosen one.
#[derive(Debug, Clone, Serialize)]
pub struct RankScan {
    pub holdout_fraction: f64,
    pub scores: Vec<RankScore>,
    pub best_rank: usize,
}

/// Hold out `frac` of the observed entries, fit each rank in `ranks` on the rest, and
/// pick the rank with the smallest held-out relative error. With `patience`, each fit
/// stops early on the same held-out entries (its best held-out error is the score).
pub fn completion_rank_scan(
    prob: &MatrixCompletion,
    ranks: &[usize],
    frac: f64,
    patience: Option<usize>,
    opts: &Options,
) -> Result<RankScan> {
    if ranks.is_empty() {
        return invalid("no candidate ranks given");
    }
    let (train, hold) = prob.split_holdout(frac, opts.seed.wrapping_add(17))?;
    let mut scores = Vec::with_capacity(ranks.len());
    for &r in ranks {
        let res: Result<(Factors, crate::solver::Report)> = match patience {
            Some(pat) => train.solve_validated(r, &hold, pat, opts),
            None => train.solve(r, opts),
        };
        match res {
            Ok((f, rep)) => scores.push(RankScore {
                rank: r,
                heldout_rel_error: Some(hold.rel_error(&f)?),
                train_residual: Some(rep.final_residual),
                iterations: rep.iterations,
                error: None,
            }),
            Err(e @ crate::error::LowRankError::InvalidInput(_)) => return Err(e),
            Err(e) => scores.push(RankScore {
                rank: r,
                heldout_rel_error: None,
                train_residual: None,
                iterations: 0,
                error: Some(e.to_string()),
            }),
        }
    }
    let best = scores
        .iter()
        .filter_map(|s| s.heldout_rel_error.map(|e| (s.rank, e)))
        .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    match best {
        Some((rank, _)) => Ok(RankScan {
            holdout_fraction: frac,
            scores,
            best_rank: rank,
        }),
        None => Err(crate::error::LowRankError::Numerical(
            "every candidate rank failed during rank selection".into(),
        )),
    }
}
