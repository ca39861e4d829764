//! Noise models and the operator/noise composition: measurement-space likelihood gradients
//! against finite differences (Gaussian, logistic sign), phase retrieval's vector–Jacobian
//! product against finite differences, and the composed likelihood of operators with a
//! non-Gaussian noise model.

use std::sync::Arc;

use genprior_inverse::linalg::dot;
use genprior_inverse::operator::composed_log_likelihood_and_grad;
use genprior_inverse::physics::{Inpainting, PhaseRetrieval};
use genprior_inverse::{Gaussian, LogisticSign, NoiseModel, Operator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rand_vec(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Central differences of `f` along `d` at `z`, against ⟨∇f, d⟩ and single coordinates.
fn check_gradient(what: &str, f: &dyn Fn(&[f64]) -> f64, grad: &[f64], z: &[f64], seed: u64) {
    let eps = 1e-5;
    let d = rand_vec(z.len(), -1.0, 1.0, seed);
    let at = |s: f64, dir: &[f64]| -> f64 {
        let p: Vec<f64> = z.iter().zip(dir).map(|(a, b)| a + s * b).collect();
        f(&p)
    };
    let fd = (at(eps, &d) - at(-eps, &d)) / (2.0 * eps);
    let an = dot(grad, &d);
    let scale = 1.0 + an.abs() + f(z).abs() * 1e-6 / eps;
    assert!(
        (fd - an).abs() <= 1e-6 * scale,
        "{what}: directional fd {fd} vs {an}"
    );
    for k in [0, z.len() / 2, z.len() - 1] {
        let mut e = vec![0.0; z.len()];
        e[k] = 1.0;
        let fd = (at(eps, &e) - at(-eps, &e)) / (2.0 * eps);
        assert!(
            (fd - grad[k]).abs() <= 1e-6 * (1.0 + grad[k].abs() + f(z).abs() * 1e-6 / eps),
            "{what} coord {k}: fd {fd} vs {}",
            grad[k]
        );
    }
}

#[test]
fn gaussian_likelihood_gradient_matches_finite_differences() {
    let g = Gaussian::new(0.2, 0.15).unwrap();
    assert_eq!((g.noise_sigma(), g.temperature()), (0.2, 0.15));
    assert!(g.is_gaussian());
    let z = rand_vec(40, -1.0, 1.0, 1);
    let y = g
        .simulate(z.clone(), &mut StdRng::seed_from_u64(2))
        .unwrap();
    assert_ne!(y, z);
    let x = rand_vec(40, -1.0, 1.0, 3);
    let lg = g.log_likelihood_and_grad(&x, &y).unwrap();
    let r2: f64 = y.iter().zip(&x).map(|(a, b)| (a - b) * (a - b)).sum();
    assert!((lg.value + r2 / (2.0 * 0.15 * 0.15)).abs() < 1e-12 * lg.value.abs());
    assert_eq!(lg.divisor, 0.15 * 0.15);
    let f = |v: &[f64]| g.log_likelihood(v, &y).unwrap();
    check_gradient("gaussian", &f, &lg.gradient(), &x, 4);
    // σ = 0 simulates exactly; σ_L = 0 has no likelihood
    let g0 = Gaussian::new(0.0, 0.0).unwrap();
    assert_eq!(
        g0.simulate(z.clone(), &mut StdRng::seed_from_u64(2))
            .unwrap(),
        z
    );
    assert!(g0.check_likelihood().is_err());
    assert!(g0.log_likelihood(&z, &z).is_err());
    assert!(Gaussian::new(-0.1, 0.1).is_err() && Gaussian::new(0.1, f64::NAN).is_err());
}

#[test]
fn logistic_sign_likelihood_gradient_matches_finite_differences() {
    let n = LogisticSign::new(0.4).unwrap();
    assert_eq!((n.noise_sigma(), n.temperature()), (0.0, 0.4));
    assert!(!n.is_gaussian());
    let z = rand_vec(50, -1.0, 1.0, 5);
    let y = n
        .simulate(z.clone(), &mut StdRng::seed_from_u64(6))
        .unwrap();
    assert!(y.iter().all(|v| *v == 1.0 || *v == -1.0));
    assert!(n.check_measurement(&y).is_ok());
    assert!(n.check_measurement(&[1.0, 0.5]).is_err());
    let x = rand_vec(50, -1.5, 1.5, 7);
    let lg = n.log_likelihood_and_grad(&x, &y).unwrap();
    let exact: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| -(1.0 + (-b * a / 0.4f64).exp()).ln())
        .sum();
    assert!((lg.value - exact).abs() < 1e-12 * exact.abs());
    let f = |v: &[f64]| n.log_likelihood(v, &y).unwrap();
    check_gradient("logistic sign", &f, &lg.gradient(), &x, 8);
    assert!(LogisticSign::new(0.0).is_err());
}

fn phase_retrieval(noise: Arc<dyn NoiseModel>) -> PhaseRetrieval {
    PhaseRetrieval::new([2, 8, 8], 4.0, 3, noise).unwrap()
}

#[test]
fn phase_retrieval_vjp_matches_finite_differences() {
    let op = phase_retrieval(Arc::new(Gaussian::with_sigma(0.1).unwrap()));
    let x = rand_vec(op.image_len(), -1.0, 1.0, 10);
    for seed in 0..3 {
        let v = rand_vec(op.measurement_len(), -1.0, 1.0, 20 + seed);
        let jv = op.vjp_host(&x, &v).unwrap();
        // ⟨v, A(x)⟩ has gradient Jᵀv
        let f = |p: &[f64]| dot(&v, &op.forward_host(p).unwrap());
        check_gradient("phase-retrieval vjp", &f, &jv, &x, 30 + seed);
    }
    // the gradient of the fused Gaussian likelihood is the composed one (Jᵀ(y − A(x))/σ²)
    // bit for bit; its value differs only by summation order
    let y = op.simulate_host(&x, &mut StdRng::seed_from_u64(1)).unwrap();
    let x2 = rand_vec(op.image_len(), -1.0, 1.0, 11);
    let (l, g) = op.log_likelihood_and_grad_host(&x2, &y).unwrap();
    let (lc, gc) = composed_log_likelihood_and_grad(&op, &x2, &y).unwrap();
    assert_eq!(g, gc);
    assert!((l - lc).abs() <= 1e-12 * l.abs(), "{l} vs {lc}");
}

#[test]
fn composed_likelihood_of_a_non_gaussian_noise_model() {
    // phase retrieval with the logistic sign model: L = Σ log sigmoid(y |F pad(M x)| / τ)
    let op = phase_retrieval(Arc::new(LogisticSign::new(0.3).unwrap()));
    assert!(!op.is_linear_gaussian());
    assert_eq!(op.temperature(), 0.3);
    let x = rand_vec(op.image_len(), -1.0, 1.0, 40);
    let y = op
        .simulate_host(&x, &mut StdRng::seed_from_u64(41))
        .unwrap();
    assert!(y.iter().all(|v| v.abs() == 1.0));
    let x2 = rand_vec(op.image_len(), -1.0, 1.0, 42);
    let (l, g) = op.log_likelihood_and_grad_host(&x2, &y).unwrap();
    assert!(l.is_finite() && l < 0.0);
    let f = |p: &[f64]| op.log_likelihood_host(p, &y).unwrap();
    check_gradient("phase retrieval + logistic sign", &f, &g, &x2, 43);

    // inpainting with the logistic sign model: the observed entries only, zeros at the holes
    let mask: Vec<f64> = (0..36)
        .map(|i| if i % 3 == 0 { 0.0 } else { 1.0 })
        .collect();
    let op = Inpainting::from_mask(
        "inpaint-mask",
        [1, 6, 6],
        &mask,
        Arc::new(LogisticSign::new(0.4).unwrap()),
    )
    .unwrap();
    let x = rand_vec(36, -1.0, 1.0, 50);
    let y = op
        .simulate_host(&x, &mut StdRng::seed_from_u64(51))
        .unwrap();
    for (v, m) in y.iter().zip(&mask) {
        assert_eq!(*v == 0.0, *m == 0.0, "zeros exactly at the holes");
    }
    assert!(op.check_measurement_values(&y).is_ok());
    let mut bad = y.clone();
    bad[1] = 0.5;
    assert!(op.check_measurement_values(&bad).is_err());
    let (l, g) = op.log_likelihood_and_grad_host(&x, &y).unwrap();
    let exact: f64 = x
        .iter()
        .zip(&y)
        .zip(&mask)
        .filter(|(_, m)| **m == 1.0)
        .map(|((a, b), _)| -(1.0 + (-b * a / 0.4f64).exp()).ln())
        .sum();
    assert!((l - exact).abs() < 1e-12 * exact.abs());
    assert!(g.iter().zip(&mask).all(|(g, m)| *m == 1.0 || *g == 0.0));
    let f = |p: &[f64]| op.log_likelihood_host(p, &y).unwrap();
    check_gradient("inpainting + logistic sign", &f, &g, &x, 52);
}
