//! Real-data demonstration: complete the simulated chlorine matrix (92 junctions ×
//! 4032 five-minute steps, tests/fixtures/lowrank/chlorine_net3.npy, made by
//! scripts/lowrank_chlorine.py) from 20% and 50% of its entries at ranks 5 and 10 with
//! ScaledGD (textbook η = 0.5; damped preconditioner λ = 1e-2·σ₁(X₀); backtracking on the
//! observed-entry loss) and GD, and ScaledGD with early stopping on 10% of the observed
//! entries held out for validation. Prints a markdown table of held-out
//! relative errors and iterations; `--json PATH` also writes the spectrum and the error
//! curves for scripts/lowrank_plot.py.
//!   cargo run --release -p genprior-lowrank --example chlorine -- [--json out.json]

use candle_core::{DType, Device, Tensor};
use genprior_lowrank::{linalg, Damping, MatrixCompletion, Method, Options};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/lowrank/chlorine_net3.npy"
    );
    let x = Tensor::read_npy(path)?.to_dtype(DType::F64)?;
    let (n1, n2) = x.dims2()?;
    let xh = linalg::to_host(&x)?;
    let mut sv: Vec<f64> = (&xh * xh.transpose())
        .symmetric_eigenvalues()
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .collect();
    sv.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    println!(
        "chlorine matrix {n1}×{n2}; σ1..σ10 = {:?}",
        sv[..10]
            .iter()
            .map(|v| (v * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    println!(
        "σ1/σ5 = {:.1}, σ1/σ10 = {:.1}, σ1/σ20 = {:.1}, σ1/σ50 = {:.1}",
        sv[0] / sv[4],
        sv[0] / sv[9],
        sv[0] / sv[19],
        sv[0] / sv[49]
    );
    let xv: Vec<f64> = x.flatten_all()?.to_vec1()?;
    let mut curves = vec![];
    println!("\n| observed | rank | method | setting | status | iterations | held-out rel. error | time (s) |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in [0.2, 0.5] {
        let mut rng = StdRng::seed_from_u64(42);
        let mask: Vec<bool> = (0..n1 * n2).map(|_| rng.random::<f64>() < p).collect();
        let (mut r, mut c, mut v, mut hr, mut hc, mut hv) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for k in 0..n1 * n2 {
            if mask[k] {
                r.push(k / n2);
                c.push(k % n2);
                v.push(xv[k]);
            } else {
                hr.push((k / n2) as u32);
                hc.push((k % n2) as u32);
                hv.push(xv[k]);
            }
        }
        let nv = v.len();
        let prob = MatrixCompletion::new(n1, n2, &r, &c, &Tensor::from_vec(v, nv, &Device::Cpu)?)?;
        let nh = hv.len();
        let hold = genprior_lowrank::matrix::Holdout {
            rows: Tensor::from_vec(hr, nh, &Device::Cpu)?,
            cols: Tensor::from_vec(hc, nh, &Device::Cpu)?,
            values: Tensor::from_vec(hv, nh, &Device::Cpu)?,
        };
        for rank in [5usize, 10] {
            let runs = [
                (Method::ScaledGd, "textbook", Damping::None, false, false),
                (
                    Method::ScaledGd,
                    "textbook + early stop",
                    Damping::None,
                    false,
                    true,
                ),
                (
                    Method::ScaledGd,
                    "damped + early stop",
                    Damping::Relative(1e-2),
                    false,
                    true,
                ),
                (
                    Method::ScaledGd,
                    "damped λ=1e-2·σ₁",
                    Damping::Relative(1e-2),
                    false,
                    false,
                ),
                (Method::ScaledGd, "backtracking", Damping::None, true, false),
                (Method::Gd, "textbook", Damping::None, false, false),
            ];
            for (method, setting, damping, backtrack, early) in runs {
                {
                    let o = Options {
                        method,
                        max_iter: 300,
                        tol: 1e-7,
                        damping,
                        backtrack,
                        truth: Some(x.clone()),
                        ..Options::default()
                    };
                    let m = if method == Method::ScaledGd {
                        "ScaledGD"
                    } else {
                        "GD"
                    };
                    // Early stopping holds out 10% of the observed entries (validation),
                    // patience 10; the table's error is still on the unobserved entries.
                    let res = if early {
                        prob.solve_early_stopping(rank, 0.1, 10, &o)
                    } else {
                        prob.solve(rank, &o)
                    };
                    match res {
                        Ok((f, rep)) => {
                            let he = hold.rel_error(&f)?;
                            let its = match rep.best_iteration {
                                Some(b) => format!("{} (best {b})", rep.iterations),
                                None => rep.iterations.to_string(),
                            };
                            println!("| {:.0}% | {rank} | {m} | {setting} | ok ({:?}) | {its} | {he:.4} | {:.2} |", p * 100.0, rep.stop_reason, rep.time_s);
                            curves.push(serde_json::json!({"p": p, "rank": rank, "method": m, "setting": setting,
                                "errors": rep.errors, "heldout": he, "iterations": rep.iterations}));
                        }
                        Err(e) => {
                            println!(
                                "| {:.0}% | {rank} | {m} | {setting} | **{e}** | – | – | – |",
                                p * 100.0
                            );
                            curves.push(serde_json::json!({"p": p, "rank": rank, "method": m, "setting": setting, "error": e.to_string()}));
                        }
                    }
                }
            }
        }
    }
    if let Some(j) = json {
        std::fs::write(
            j,
            serde_json::to_string(&serde_json::json!({"singular_values": sv, "runs": curves}))?,
        )?;
    }
    Ok(())
}
