//! Hankel (spectrally sparse) completion: exact recovery of sums of complex exponentials
//! from a fraction of their samples, frequency/damping estimates against the generator,
//! κ-independence of ScaledGD vs GD, and bad input.

use genprior_lowrank::hankel::{synthetic, HankelCompletion};
use genprior_lowrank::{LowRankError, Method, Options};
use nalgebra::Complex;

fn rel(a: &[Complex<f64>], b: &[Complex<f64>]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).norm_sqr()).sum();
    let n: f64 = b.iter().map(|y| y.norm_sqr()).sum();
    (d / n).sqrt()
}

fn to(eps: f64, method: Method, truth: candle_core::Tensor, max_iter: usize) -> Options {
    Options {
        method,
        max_iter,
        tol: 0.0,
        truth: Some(truth),
        stop_error: Some(eps),
        // σ₁(H[x⋆]) = 1 for the generator (as the reference GD step η/σ₁).
        gd_scale: Some(1.0),
        ..Options::default()
    }
}

#[test]
fn hankel_exact_recovery_and_frequency_estimates() {
    for damping in [0.0, 0.004] {
        let s = synthetic(128, 128, 4, 5.0, 0.3, damping, 3).unwrap();
        let o = Options {
            max_iter: 500,
            tol: 1e-14,
            ..Options::default()
        };
        let (f, rep) = s.problem.solve(4, &o).unwrap();
        let x = s.problem.signal(&f);
        let e = rel(&x, &s.truth);
        eprintln!(
            "damping {damping}: {} iterations ({:?}), error {e:.3e}",
            rep.iterations, rep.stop_reason
        );
        assert!(e < 1e-10, "relative error {e}");
        let comps = s.problem.components(&f).unwrap();
        for (c, (&fr, &a)) in comps.iter().zip(s.frequencies.iter().zip(&s.amplitudes)) {
            assert!((c.frequency - fr).abs() < 1e-9, "{c:?} vs {fr}");
            assert!((c.damping - damping).abs() < 1e-9, "{c:?}");
            assert!(
                (c.amplitude - a).abs() < 1e-9 * a.max(1e-3) * 1e3,
                "{c:?} vs {a}"
            );
        }
    }
}

#[test]
fn hankel_scaledgd_iterations_independent_of_kappa_gd_slower() {
    let mut its = vec![];
    for kappa in [1.0, 20.0] {
        let s = synthetic(128, 128, 4, kappa, 0.3, 0.0, 7).unwrap();
        let t = s.problem.weighted(&s.truth).unwrap();
        let (_, rep) = s
            .problem
            .solve(4, &to(1e-8, Method::ScaledGd, t.clone(), 600))
            .unwrap();
        let (_, gd) = s.problem.solve(4, &to(1e-8, Method::Gd, t, 600)).unwrap();
        eprintln!(
            "κ = {kappa}: ScaledGD {:?}, GD {:?} (final {:.1e})",
            rep.iterations_to(1e-8),
            gd.iterations_to(1e-8),
            gd.errors.last().unwrap()
        );
        its.push((rep.iterations_to(1e-8).unwrap(), gd.iterations_to(1e-8)));
    }
    let (a, b) = (its[0].0 as f64, its[1].0 as f64);
    assert!(
        (b - a).abs() <= 0.25 * a.max(b),
        "ScaledGD iterations {a} vs {b}"
    );
    assert!(
        its[1].1.is_none_or(|g| g as f64 > 2.0 * b),
        "GD at κ = 20: {:?}",
        its[1].1
    );
}

#[test]
fn hankel_bad_inputs_are_clear_errors() {
    let c = |v: f64| Complex::new(v, 0.0);
    let x: Vec<_> = (0..20).map(|t| c(t as f64)).collect();
    let m = |r: Result<HankelCompletion, LowRankError>| r.unwrap_err().to_string();
    assert!(m(HankelCompletion::new(&x, &[true; 19], None)).contains("mask length"));
    assert!(m(HankelCompletion::new(&x, &[false; 20], None)).contains("empty"));
    assert!(m(HankelCompletion::new(&x, &[true; 20], Some(20))).contains("n1 = 20"));
    let mut xn = x.clone();
    xn[3] = c(f64::NAN);
    assert!(m(HankelCompletion::new(&xn, &[true; 20], None)).contains("NaN"));
    let mut mask = [true; 20];
    mask[3] = false;
    assert!(HankelCompletion::new(&xn, &mask, None).is_ok());
    let p = HankelCompletion::new(&x, &[true; 20], None).unwrap();
    let e = p.solve(10, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("smaller than the smallest dimension"), "{e}");
}
