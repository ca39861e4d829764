//! Bad input is a clear error (never a panic, never NaN with Ok); divergence is
//! detected; the damped preconditioner / backtracking keep real-data-like problems
//! stable; rank selection by held-out error finds the true rank.

use candle_core::{DType, Device, Tensor};
use genprior_lowrank::select::completion_rank_scan;
use genprior_lowrank::{
    synthetic, Damping, LowRankError, MatrixCompletion, Options, RobustPca, TensorCompletion,
};

fn cpu() -> Device {
    Device::Cpu
}

fn msg<T>(r: Result<T, LowRankError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn small_problem() -> (Tensor, Tensor) {
    let y = Tensor::arange(0f64, 20.0, &cpu())
        .unwrap()
        .reshape((4, 5))
        .unwrap();
    let m = Tensor::ones((4, 5), DType::F64, &cpu()).unwrap();
    (y, m)
}

#[test]
fn rank_zero_or_too_large_is_rejected() {
    let (y, m) = small_problem();
    let p = MatrixCompletion::from_dense(&y, &m).unwrap();
    assert!(msg(p.solve(0, &Options::default())).contains("rank must be at least 1"));
    assert!(msg(p.solve(4, &Options::default())).contains("smaller than the smallest dimension"));
    let r = RobustPca::new(&y, 0.1).unwrap();
    assert!(msg(r.solve(7, &Options::default())).contains("smaller than the smallest dimension"));
}

#[test]
fn mask_shape_mismatch_is_rejected() {
    let (y, _) = small_problem();
    let m = Tensor::ones((5, 4), DType::F64, &cpu()).unwrap();
    assert!(msg(MatrixCompletion::from_dense(&y, &m)).contains("does not match"));
    let t = Tensor::ones((3, 4, 5), DType::F64, &cpu()).unwrap();
    let mt = Tensor::ones((3, 4, 4), DType::F64, &cpu()).unwrap();
    assert!(msg(TensorCompletion::from_dense(&t, &mt)).contains("does not match"));
}

#[test]
fn empty_mask_is_rejected() {
    let (y, _) = small_problem();
    let m = Tensor::zeros((4, 5), DType::F64, &cpu()).unwrap();
    assert!(msg(MatrixCompletion::from_dense(&y, &m)).contains("mask is empty"));
}

#[test]
fn nan_in_y_is_rejected() {
    let mut v: Vec<f64> = (0..20).map(|x| x as f64).collect();
    v[7] = f64::NAN;
    let y = Tensor::from_vec(v, (4, 5), &cpu()).unwrap();
    let m = Tensor::ones((4, 5), DType::F64, &cpu()).unwrap();
    assert!(msg(MatrixCompletion::from_dense(&y, &m)).contains("NaN"));
    assert!(msg(RobustPca::new(&y, 0.1)).contains("NaN"));
    // An unobserved NaN is fine: it is never read.
    let mut mv = vec![1.0f64; 20];
    mv[7] = 0.0;
    let m = Tensor::from_vec(mv, (4, 5), &cpu()).unwrap();
    assert!(MatrixCompletion::from_dense(&y, &m).is_ok());
}

#[test]
fn bad_step_size_diverges_with_an_error_not_nan() {
    let s = synthetic::completion(80, 3, 5.0, 0.4, 1, DType::F64, &cpu()).unwrap();
    let o = Options {
        eta: Some(3.0),
        max_iter: 500,
        ..Options::default()
    };
    let e = s.problem.solve(3, &o);
    match e {
        Err(LowRankError::Diverged { iteration, .. }) => {
            assert!(iteration < 50, "detected late: {iteration}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok((f, _)) => panic!(
            "returned Ok with L norm {:?}",
            f.l.sqr().unwrap().sum_all().unwrap()
        ),
    }
    // Backtracking on the observed-entry loss rescues the same step size.
    let o = Options {
        eta: Some(3.0),
        max_iter: 500,
        backtrack: true,
        tol: 1e-12,
        ..Options::default()
    };
    let (f, rep) = s.problem.solve(3, &o).unwrap();
    let err = ((f.dense().unwrap() - &s.truth)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        / s.truth
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap())
    .sqrt();
    assert!(
        err < 1e-8,
        "backtracking run error {err} after {} iterations",
        rep.iterations
    );
}

/// Approximately low-rank data (power-law spectrum plus noise) fitted with a rank above
/// its effective rank: the textbook step may diverge but must then say so (never Ok
/// with non-finite values); the damped preconditioner with backtracking stays finite
/// and predicts held-out entries better than the zero estimate.
#[test]
fn damped_preconditioner_is_stable_on_over_ranked_noisy_data() {
    use rand::{rngs::StdRng, SeedableRng};
    let n = 80;
    let mut rng = StdRng::seed_from_u64(5);
    let u = genprior_lowrank::linalg::randn_host(n, 30, &mut rng)
        .qr()
        .q();
    let v = genprior_lowrank::linalg::randn_host(n, 30, &mut rng)
        .qr()
        .q();
    let s = nalgebra_diag((1..=30).map(|i| 1.0 / (i as f64).powi(2)).collect());
    let x = &u * s * v.transpose() + genprior_lowrank::linalg::randn_host(n, n, &mut rng) * 1e-4;
    let xt = genprior_lowrank::linalg::from_host(&x, DType::F64, &cpu()).unwrap();
    let mask: Vec<f64> = (0..n * n)
        .map(|k| {
            if (k * 7919 + k / 3) % 10 < 3 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let m = Tensor::from_vec(mask, (n, n), &cpu()).unwrap();
    let full = MatrixCompletion::from_dense(&xt, &m).unwrap();
    let (train, hold) = full.split_holdout(0.2, 1).unwrap();
    let rank = 15;
    match train.solve(
        rank,
        &Options {
            max_iter: 300,
            tol: 1e-9,
            ..Options::default()
        },
    ) {
        Ok((f, _)) => assert!(genprior_lowrank::linalg::all_finite(&f.l).unwrap()),
        Err(LowRankError::Diverged { .. }) | Err(LowRankError::Numerical(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
    let o = Options {
        damping: Damping::Relative(1e-2),
        backtrack: true,
        max_iter: 300,
        tol: 1e-9,
        ..Options::default()
    };
    let (f, rep) = train.solve(rank, &o).unwrap();
    assert!(genprior_lowrank::linalg::all_finite(&f.dense().unwrap()).unwrap());
    let he = hold.rel_error(&f).unwrap();
    eprintln!(
        "damped+backtracking rank {rank}: held-out rel. error {he:.3} after {} iterations",
        rep.iterations
    );
    assert!(he < 1.0, "held-out error {he}");
}

fn nalgebra_diag(v: Vec<f64>) -> genprior_lowrank::linalg::HostMatrix {
    genprior_lowrank::linalg::HostMatrix::from_diagonal(
        &genprior_lowrank::linalg::HostVector::from_vec(v),
    )
}

#[test]
fn heldout_rank_scan_finds_the_true_rank() {
    let s = synthetic::completion(80, 3, 3.0, 0.5, 2, DType::F64, &cpu()).unwrap();
    let o = Options {
        max_iter: 300,
        tol: 1e-10,
        backtrack: true,
        damping: Damping::Relative(1e-3),
        ..Options::default()
    };
    let scan = completion_rank_scan(&s.problem, &[1, 2, 3, 4, 5, 6], 0.1, None, &o).unwrap();
    for sc in &scan.scores {
        eprintln!(
            "rank {} held-out {:?} {:?}",
            sc.rank, sc.heldout_rel_error, sc.error
        );
    }
    assert_eq!(scan.best_rank, 3);
}
