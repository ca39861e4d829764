use candle_core::{DType, Device};
use genprior_lowrank::{synthetic, Options};
fn main() {
    let kappa: f64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let alpha: f64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let (s, sstar) = synthetic::rpca(200, 5, kappa, alpha, 0, DType::F64, &Device::Cpu).unwrap();
    let nnz = sstar.ne(0.0).unwrap().to_dtype(DType::F64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    println!("outliers {nnz}");
    let (init, sv) = s.problem.spectral_init(5, 0).unwrap();
    println!("init sv {sv:?}");
    let o = Options { max_iter: 200, tol: 0.0, truth: Some(s.truth.clone()), ..Options::default() };
    let (_, rep) = s.problem.solve(5, &o).unwrap();
    for (i, (e, r)) in rep.errors.iter().zip(&rep.residuals).enumerate().step_by(100) { println!("{i} err {e:.3e} res {r:.3e}"); }
    let _ = init;
    let y = (&s.truth + &sstar).unwrap();
    let m0 = (&y - genprior_lowrank::matrix::sparsify(&y, alpha).unwrap()).unwrap();
    let d = (&m0 - &s.truth).unwrap();
    let (_, sd, _) = genprior_lowrank::linalg::truncated_svd(&d, 3, 0).unwrap();
    println!("sv of M0 - X*: {sd:?}");
    let missed = ((&m0 - &s.truth).unwrap().abs().unwrap().ge(0.1).unwrap()).to_dtype(DType::F64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    println!("entries of M0 - X* above 0.1: {missed}");
}
