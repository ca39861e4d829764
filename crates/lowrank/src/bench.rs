//! Reference benchmark of the spec (ScaledGD vs vanilla GD across condition numbers):
//! shared by the `bench` example and `genprior lowrank bench`.

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::error::{invalid, Result};
use crate::solver::{Method, Options, Report};
use crate::synthetic;

/// What to benchmark. `None` sizes take the spec's reference values: completion
/// n=1000 r=10 p=0.2; RPCA n=1000 r=10 α=0.1; sensing n=200 r=10 m=5nr; Tucker
/// n=100 r=5 p=0.1; Hankel n1=n2=1000 (signal length 1999) r=10 p=0.2.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// completion | rpca | sensing | tucker | hankel
    pub problem: String,
    pub n: Option<usize>,
    pub r: Option<usize>,
    /// Sampling rate (completion, Tucker) or outlier fraction (RPCA).
    pub p: Option<f64>,
    /// Number of measurements (sensing).
    pub m: Option<usize>,
    pub kappas: Vec<f64>,
    pub methods: Vec<Method>,
    pub max_iter: usize,
    pub seed: u64,
    pub dtype: DType,
    pub device: Device,
}

/// One (problem, κ, method) result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub problem: String,
    pub n: usize,
    pub r: usize,
    pub kappa: f64,
    pub method: Method,
    pub it_1e6: Option<usize>,
    pub it_1e8: Option<usize>,
    pub it_1e10: Option<usize>,
    pub it_1e13: Option<usize>,
    pub iterations: usize,
    pub final_error: Option<f64>,
    pub ms_per_iter: f64,
    pub error: Option<String>,
}

impl BenchRow {
    pub fn markdown_header() -> &'static str {
        "| problem | n | r | κ | method | it→1e-6 | it→1e-8 | it→1e-10 | it→1e-13 | final err | ms/iter |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    }
    pub fn markdown(&self) -> String {
        let f = |x: Option<usize>| x.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
        let m = match self.method {
            Method::ScaledGd => "ScaledGD",
            Method::Gd => "GD",
        };
        if let Some(e) = &self.error {
            return format!(
                "| {} | {} | {} | {} | {m} | error: {e} | | | | | |",
                self.problem, self.n, self.r, self.kappa
            );
        }
        format!(
            "| {} | {} | {} | {} | {m} | {} | {} | {} | {} | {:.1e} | {:.2} |",
            self.problem,
            self.n,
            self.r,
            self.kappa,
            f(self.it_1e6),
            f(self.it_1e8),
            f(self.it_1e10),
            f(self.it_1e13),
            self.final_error.unwrap_or(f64::NAN),
            self.ms_per_iter
        )
    }
}

/// Run the benchmark, calling `on_row` as each row completes.
pub fn run_bench(cfg: &BenchConfig, mut on_row: impl FnMut(&BenchRow)) -> Result<Vec<BenchRow>> {
    let (dn, dr, dp) = match cfg.problem.as_str() {
        "completion" => (1000, 10, 0.2),
        "rpca" => (1000, 10, 0.1),
        "sensing" => (200, 10, 0.0),
        "tucker" => (100, 5, 0.1),
        "hankel" => (1000, 10, 0.2),
        p => {
            return invalid(format!(
                "unknown benchmark problem {p:?} (completion|rpca|sensing|tucker|hankel)"
            ))
        }
    };
    let n = cfg.n.unwrap_or(dn);
    let r = cfg.r.unwrap_or(dr);
    let p = cfg.p.unwrap_or(dp);
    let mut rows = vec![];
    for &kappa in &cfg.kappas {
        for &method in &cfg.methods {
            let opts = |truth: &Tensor| Options {
                method,
                max_iter: cfg.max_iter,
                tol: 0.0,
                truth: Some(truth.clone()),
                stop_error: Some(1e-13),
                // The spec's GD baseline uses η/σ₁(X⋆); the generator has σ₁(X⋆) = 1.
                gd_scale: Some(1.0),
                seed: cfg.seed,
                ..Options::default()
            };
            let (dt, dev, seed) = (cfg.dtype, &cfg.device, cfg.seed);
            let res: Result<Report> = match cfg.problem.as_str() {
                "completion" => synthetic::completion(n, r, kappa, p, seed, dt, dev)
                    .and_then(|s| s.problem.solve(r, &opts(&s.truth)).map(|x| x.1)),
                "rpca" => synthetic::rpca(n, r, kappa, p, seed, dt, dev)
                    .and_then(|(s, _)| s.problem.solve(r, &opts(&s.truth)).map(|x| x.1)),
                "sensing" => {
                    synthetic::sensing(n, r, kappa, cfg.m.unwrap_or(5 * n * r), seed, dt, dev)
                        .and_then(|s| s.problem.solve(r, &opts(&s.truth)).map(|x| x.1))
                }
                // Hankel: n × n Hankel matrix of a length-(2n − 1) signal (host, f64).
                "hankel" => crate::hankel::synthetic(n, n, r, kappa, p, 0.0, seed).and_then(|s| {
                    let t = s.problem.weighted(&s.truth)?;
                    s.problem.solve(r, &opts(&t)).map(|x| x.1)
                }),
                _ => synthetic::tensor_completion(n, r, kappa, p, seed, dt, dev)
                    .and_then(|s| s.problem.solve([r, r, r], &opts(&s.truth)).map(|x| x.1)),
            };
            let row = match res {
                Ok(rep) => BenchRow {
                    problem: cfg.problem.clone(),
                    n,
                    r,
                    kappa,
                    method,
                    it_1e6: rep.iterations_to(1e-6),
                    it_1e8: rep.iterations_to(1e-8),
                    it_1e10: rep.iterations_to(1e-10),
                    it_1e13: rep.iterations_to(1e-13),
                    iterations: rep.iterations,
                    final_error: rep.errors.last().copied(),
                    ms_per_iter: rep.time_per_iter_s * 1e3,
                    error: None,
                },
                Err(e @ crate::error::LowRankError::InvalidInput(_)) => return Err(e),
                Err(e) => BenchRow {
                    problem: cfg.problem.clone(),
                    n,
                    r,
                    kappa,
                    method,
                    it_1e6: None,
                    it_1e8: None,
                    it_1e10: None,
                    it_1e13: None,
                    iterations: 0,
                    final_error: None,
                    ms_per_iter: 0.0,
                    error: Some(e.to_string()),
                },
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Outlier-fraction sweep of ScaledSM (ℓ1 loss) against the ℓ2 solvers: robust PCA
/// (`rpca-l1`: S⋆ = T_α(G), ScaledSM with geometric steps, vanilla SM with the same
/// steps, and ℓ2 ScaledGD-RPCA with the sparsifier T_α) and robust sensing
/// (`sensing-l1`: a fraction of the measurements replaced by outliers up to 10‖y⋆‖∞,
/// ScaledSM with Polyak's and geometric steps, and ℓ2 ScaledGD).
#[derive(Debug, Clone)]
pub struct L1SweepConfig {
    /// rpca-l1 | sensing-l1
    pub problem: String,
    pub n: usize,
    pub r: usize,
    pub kappa: f64,
    /// Measurements (sensing-l1).
    pub m: usize,
    pub outliers: Vec<f64>,
    /// Geometric step (λ relative to ‖X₀‖_F, decay q).
    pub lambda_rel: f64,
    pub q: f64,
    pub max_iter: usize,
    pub seed: u64,
    pub dtype: DType,
    pub device: Device,
}

/// One (problem, outlier fraction, solver) result of [`run_l1_sweep`].
#[derive(Debug, Clone, Serialize)]
pub struct L1Row {
    pub problem: String,
    pub n: usize,
    pub r: usize,
    pub kappa: f64,
    pub outliers: f64,
    pub solver: String,
    pub it_1e6: Option<usize>,
    pub it_1e10: Option<usize>,
    pub iterations: usize,
    pub final_error: Option<f64>,
    pub ms_per_iter: f64,
    pub error: Option<String>,
}

impl L1Row {
    pub fn markdown_header() -> &'static str {
        "| problem | n | r | κ | outliers | solver | it→1e-6 | it→1e-10 | final err | ms/iter |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    }
    pub fn markdown(&self) -> String {
        let f = |x: Option<usize>| x.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
        if let Some(e) = &self.error {
            return format!(
                "| {} | {} | {} | {} | {} | {} | error: {e} | | | |",
                self.problem, self.n, self.r, self.kappa, self.outliers, self.solver
            );
        }
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1e} | {:.2} |",
            self.problem,
            self.n,
            self.r,
            self.kappa,
            self.outliers,
            self.solver,
            f(self.it_1e6),
            f(self.it_1e10),
            self.final_error.unwrap_or(f64::NAN),
            self.ms_per_iter
        )
    }
}

/// Run the ℓ1 sweep, calling `on_row` as each row completes.
pub fn run_l1_sweep(cfg: &L1SweepConfig, mut on_row: impl FnMut(&L1Row)) -> Result<Vec<L1Row>> {
    use crate::l1::L1Step;
    if cfg.problem != "rpca-l1" && cfg.problem != "sensing-l1" {
        return invalid(format!(
            "unknown ℓ1 benchmark problem {:?} (rpca-l1|sensing-l1)",
            cfg.problem
        ));
    }
    let geo = L1Step::Geometric {
        lambda_rel: cfg.lambda_rel,
        q: cfg.q,
    };
    let (dt, dev) = (cfg.dtype, &cfg.device);
    let mut rows = vec![];
    for &ps in &cfg.outliers {
        let opts = |method: Method, truth: &Tensor| Options {
            method,
            max_iter: cfg.max_iter,
            tol: 0.0,
            truth: Some(truth.clone()),
            stop_error: Some(1e-13),
            gd_scale: Some(1.0),
            seed: cfg.seed,
            ..Options::default()
        };
        type Res = Result<Report>;
        let runs: Vec<(String, Res)> = if cfg.problem == "rpca-l1" {
            let s = synthetic::rpca_l1(cfg.n, cfg.r, cfg.kappa, ps, cfg.seed, dt, dev)?;
            let (l2, _) = synthetic::rpca(cfg.n, cfg.r, cfg.kappa, ps, cfg.seed, dt, dev)?;
            let p = &s.problem;
            vec![
                (
                    "ScaledSM geometric".into(),
                    p.solve(cfg.r, ps, geo, &opts(Method::ScaledGd, &s.truth))
                        .map(|x| x.1),
                ),
                (
                    "SM geometric".into(),
                    p.solve(cfg.r, ps, geo, &opts(Method::Gd, &s.truth))
                        .map(|x| x.1),
                ),
                (
                    "ℓ2 ScaledGD-RPCA (T_α)".into(),
                    l2.problem
                        .solve(cfg.r, &opts(Method::ScaledGd, &l2.truth))
                        .map(|x| x.1),
                ),
            ]
        } else {
            let s =
                synthetic::robust_sensing(cfg.n, cfg.r, cfg.kappa, cfg.m, ps, cfg.seed, dt, dev)?;
            let p = &s.problem;
            let polyak = L1Step::Polyak { f_star: s.f_star };
            let l2 = p.l2_sensing()?.expect("sensing problem");
            vec![
                (
                    "ScaledSM Polyak".into(),
                    p.solve(cfg.r, ps, polyak, &opts(Method::ScaledGd, &s.truth))
                        .map(|x| x.1),
                ),
                (
                    "ScaledSM geometric".into(),
                    p.solve(cfg.r, ps, geo, &opts(Method::ScaledGd, &s.truth))
                        .map(|x| x.1),
                ),
                (
                    "SM Polyak".into(),
                    p.solve(cfg.r, ps, polyak, &opts(Method::Gd, &s.truth))
                        .map(|x| x.1),
                ),
                (
                    "ℓ2 ScaledGD".into(),
                    l2.solve(cfg.r, &opts(Method::ScaledGd, &s.truth))
                        .map(|x| x.1),
                ),
            ]
        };
        for (solver, res) in runs {
            let row = match res {
                Ok(rep) => L1Row {
                    problem: cfg.problem.clone(),
                    n: cfg.n,
                    r: cfg.r,
                    kappa: cfg.kappa,
                    outliers: ps,
                    solver,
                    it_1e6: rep.iterations_to(1e-6),
                    it_1e10: rep.iterations_to(1e-10),
                    iterations: rep.iterations,
                    final_error: rep.errors.last().copied(),
                    ms_per_iter: rep.time_per_iter_s * 1e3,
                    error: None,
                },
                Err(e @ crate::error::LowRankError::InvalidInput(_)) => return Err(e),
                Err(e) => L1Row {
                    problem: cfg.problem.clone(),
                    n: cfg.n,
                    r: cfg.r,
                    kappa: cfg.kappa,
                    outliers: ps,
                    solver,
                    it_1e6: None,
                    it_1e10: None,
                    iterations: 0,
                    final_error: None,
                    ms_per_iter: 0.0,
                    error: Some(e.to_string()),
                },
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}
