//! Early stopping on a held-out fraction of the observed entries: on a noisy,
//! over-ranked completion problem the full run overfits the noise, early stopping
//! returns the best held-out iterate, whose error to the (independent) truth on the
//! unobserved entries is lower.

use candle_core::{DType, Device, Tensor};
use genprior_lowrank::{synthetic, Factors, LowRankError, MatrixCompletion, Options, StopReason};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Rank-r n×n truth (σ = linspace(1, 1/4, r), entries of RMS size ≈ ‖σ‖/n), Bernoulli(p)
/// mask, observations with i.i.d. Gaussian noise of standard deviation `sigma`. Returns
/// the problem, the truth and the unobserved (i, j).
fn noisy_problem(
    n: usize,
    r: usize,
    p: f64,
    sigma: f64,
    seed: u64,
) -> (MatrixCompletion, Tensor, Vec<(usize, usize)>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = synthetic::low_rank_host(n, n, r, 4.0, &mut rng);
    let (mut rows, mut cols, mut vals, mut unobs) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        for j in 0..n {
            if rng.random::<f64>() < p {
                let e: f64 = StandardNormal.sample(&mut rng);
                rows.push(i);
                cols.push(j);
                vals.push(x[(i, j)] + sigma * e);
            } else {
                unobs.push((i, j));
            }
        }
    }
    let nv = vals.len();
    let v = Tensor::from_vec(vals, nv, &Device::Cpu).unwrap();
    let prob = MatrixCompletion::new(n, n, &rows, &cols, &v).unwrap();
    let truth = genprior_lowrank::linalg::from_host(&x, DType::F64, &Device::Cpu).unwrap();
    (prob, truth, unobs)
}

/// Relative error to the truth on the unobserved entries.
fn test_error(f: &Factors, truth: &Tensor, unobs: &[(usize, usize)]) -> f64 {
    let d: Vec<Vec<f64>> = f.dense().unwrap().to_vec2().unwrap();
    let t: Vec<Vec<f64>> = truth.to_vec2().unwrap();
    let (mut num, mut den) = (0.0, 0.0);
    for &(i, j) in unobs {
        num += (d[i][j] - t[i][j]).powi(2);
        den += t[i][j].powi(2);
    }
    (num / den).sqrt()
}

fn opts(max_iter: usize) -> Options {
    Options {
        max_iter,
        tol: 0.0,
        ..Options::default()
    }
}

#[test]
fn early_stopping_beats_the_full_run_on_noisy_over_ranked_completion() {
    let (n, r, fit_rank) = (100, 3, 8);
    let (prob, truth, unobs) = noisy_problem(n, r, 0.3, 0.003, 5);
    // Full run on the same training split, so the only difference is when it stops.
    let (train, hold) = prob.split_holdout(0.15, 17).unwrap();
    let (f_full, rep_full) = train.solve(fit_rank, &opts(300)).unwrap();
    let (f_es, rep_es) = train
        .solve_validated(fit_rank, &hold, 10, &opts(300))
        .unwrap();
    let e_full = test_error(&f_full, &truth, &unobs);
    let e_es = test_error(&f_es, &truth, &unobs);
    let best = rep_es.best_iteration.unwrap();
    eprintln!(
        "full: {} its, test err {e_full:.4}; early stop at {} (best {best}, held-out {:.4}), test err {e_es:.4}",
        rep_full.iterations,
        rep_es.iterations,
        rep_es.best_heldout_error.unwrap()
    );
    assert_eq!(rep_es.stop_reason, StopReason::EarlyStop);
    assert_eq!(rep_es.iterations, best + 10);
    assert_eq!(rep_es.heldout_errors.len(), rep_es.iterations + 1);
    // The returned iterate is the best held-out one.
    let min = rep_es
        .heldout_errors
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    assert_eq!(rep_es.best_heldout_error.unwrap(), min);
    assert!((hold.rel_error(&f_es).unwrap() - min).abs() < 1e-12);
    // The full run overfits (noise ≈ 27% of the entries' RMS, rank 8 for a rank-3
    // truth; measured 0.54 vs 0.34): early stopping is clearly better on the unobserved
    // entries.
    assert_eq!(rep_full.iterations, 300);
    assert!(e_es < 0.8 * e_full, "early stop {e_es} vs full {e_full}");
}

#[test]
fn solve_early_stopping_splits_with_the_seed_and_reports() {
    let (prob, _, _) = noisy_problem(60, 2, 0.4, 0.01, 3);
    let (_, rep) = prob.solve_early_stopping(5, 0.1, 5, &opts(200)).unwrap();
    assert!(rep.best_iteration.is_some());
    let j = serde_json::to_value(&rep).unwrap();
    assert!(j["best_heldout_error"].as_f64().unwrap() > 0.0);
    assert!(j["heldout_errors"].as_array().unwrap().len() == rep.iterations + 1);
}

#[test]
fn bad_early_stopping_arguments_are_clear_errors() {
    let (prob, _, _) = noisy_problem(40, 2, 0.5, 0.0, 1);
    for frac in [0.0, 1.0, -0.5, f64::NAN] {
        let e = prob
            .solve_early_stopping(2, frac, 5, &opts(10))
            .unwrap_err();
        assert!(
            matches!(&e, LowRankError::InvalidInput(m) if m.contains("held-out fraction")),
            "{e}"
        );
    }
    let e = prob.solve_early_stopping(2, 0.1, 0, &opts(10)).unwrap_err();
    assert!(e.to_string().contains("patience"), "{e}");
}

#[test]
fn a_diverging_run_with_early_stopping_keeps_its_best_iterate() {
    let (prob, _, _) = noisy_problem(60, 2, 0.5, 0.0, 2);
    let o = Options {
        eta: Some(3.0),
        ..opts(100)
    };
    assert!(matches!(
        prob.solve(2, &o),
        Err(LowRankError::Diverged { .. })
    ));
    let (f, rep) = prob.solve_early_stopping(2, 0.1, 10, &o).unwrap();
    assert_eq!(rep.stop_reason, StopReason::DivergedKeptBest);
    let at = rep.diverged_at.unwrap();
    assert_eq!(rep.iterations, at - 1);
    let best = rep.best_iteration.unwrap();
    assert!(best < at);
    assert_eq!(rep.heldout_errors.len(), at);
    assert!(f
        .dense()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}
