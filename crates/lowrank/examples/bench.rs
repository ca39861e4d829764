//! Benchmark of ScaledGD vs vanilla GD on the reference problems of the spec
//! (not a test). Usage:
//!   cargo run --release -p genprior-lowrank --example bench -- \
//!       [--problem completion|rpca|sensing|tucker|all] [--n N] [--r R] [--p P]
//!       [--alpha A] [--m M] [--kappas 1,5,10,20,100,1000] [--max-iter 1000] [--seed 0]
//!       [--f32] [--json out.json]
//! Prints, per κ and method, the iterations to relative error 1e-6 / 1e-10 / 1e-13
//! (or "-" if not reached within --max-iter) and the wall time per iteration.

use std::collections::HashMap;

use candle_core::{DType, Device};
use genprior_lowrank::{synthetic, Method, Options, Report};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kv: HashMap<String, String> = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let k = args[i].trim_start_matches("--").to_string();
        if k == "f32" {
            kv.insert(k, "1".into());
            i += 1;
            continue;
        }
        let v = args.get(i + 1).ok_or(format!("missing value for --{k}"))?.clone();
        kv.insert(k, v);
        i += 2;
    }
    let get = |k: &str| kv.get(k).cloned();
    let problem = get("problem").unwrap_or_else(|| "all".into());
    let kappas: Vec<f64> = get("kappas")
        .unwrap_or_else(|| "1,5,10,20,100,1000".into())
        .split(',')
        .map(|s| s.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let max_iter: usize = get("max-iter").map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let seed: u64 = get("seed").map(|s| s.parse()).transpose()?.unwrap_or(0);
    let dtype = if kv.contains_key("f32") { DType::F32 } else { DType::F64 };
    let dev = Device::Cpu;
    let problems: Vec<&str> = if problem == "all" {
        vec!["completion", "rpca", "sensing", "tucker"]
    } else {
        vec![problem.as_str()]
    };
    let mut rows = vec![];
    println!("| problem | κ | method | it→1e-6 | it→1e-10 | it→1e-13 | final err | ms/iter |");
    println!("|---|---|---|---|---|---|---|---|");
    for prob in problems {
        let (dn, dr) = match prob {
            "completion" | "rpca" => (1000, 10),
            "sensing" => (200, 10),
            "tucker" => (100, 5),
            _ => return Err(format!("unknown problem {prob}").into()),
        };
        let n: usize = get("n").map(|s| s.parse()).transpose()?.unwrap_or(dn);
        let r: usize = get("r").map(|s| s.parse()).transpose()?.unwrap_or(dr);
        for &kappa in &kappas {
            for method in [Method::ScaledGd, Method::Gd] {
                let opts = |truth: &candle_core::Tensor| Options {
                    method,
                    max_iter,
                    tol: 0.0,
                    truth: Some(truth.clone()),
                    stop_error: Some(1e-13),
                    gd_scale: Some(1.0),
                    seed,
                    ..Options::default()
                };
                let res: Result<Report, genprior_lowrank::LowRankError> = match prob {
                    "completion" => {
                        let p: f64 = get("p").map(|s| s.parse()).transpose()?.unwrap_or(0.2);
                        let s = synthetic::completion(n, r, kappa, p, seed, dtype, &dev)?;
                        s.problem.solve(r, &opts(&s.truth)).map(|x| x.1)
                    }
                    "rpca" => {
                        let a: f64 = get("alpha").map(|s| s.parse()).transpose()?.unwrap_or(0.1);
                        let (s, _) = synthetic::rpca(n, r, kappa, a, seed, dtype, &dev)?;
                        s.problem.solve(r, &opts(&s.truth)).map(|x| x.1)
                    }
                    "sensing" => {
                        let m: usize = get("m").map(|s| s.parse()).transpose()?.unwrap_or(5 * n * r);
                        let s = synthetic::sensing(n, r, kappa, m, seed, dtype, &dev)?;
                        s.problem.solve(r, &opts(&s.truth)).map(|x| x.1)
                    }
                    "tucker" => {
                        let p: f64 = get("p").map(|s| s.parse()).transpose()?.unwrap_or(0.1);
                        let s = synthetic::tensor_completion(n, r, kappa, p, seed, dtype, &dev)?;
                        s.problem.solve([r, r, r], &opts(&s.truth)).map(|x| x.1)
                    }
                    _ => unreachable!(),
                };
                let m = match method {
                    Method::ScaledGd => "ScaledGD",
                    Method::Gd => "GD",
                };
                match res {
                    Ok(rep) => {
                        let f = |e: f64| rep.iterations_to(e).map(|x| x.to_string()).unwrap_or("-".into());
                        println!(
                            "| {prob} | {kappa} | {m} | {} | {} | {} | {:.1e} | {:.2} |",
                            f(1e-6),
                            f(1e-10),
                            f(1e-13),
                            rep.errors.last().copied().unwrap_or(f64::NAN),
                            rep.time_per_iter_s * 1e3
                        );
                        rows.push(serde_json::json!({
                            "problem": prob, "kappa": kappa, "method": m, "n": n, "r": r,
                            "it_1e-6": rep.iterations_to(1e-6), "it_1e-10": rep.iterations_to(1e-10),
                            "it_1e-13": rep.iterations_to(1e-13), "ms_per_iter": rep.time_per_iter_s * 1e3,
                            "final_error": rep.errors.last(),
                        }));
                    }
                    Err(e) => println!("| {prob} | {kappa} | {m} | error: {e} | | | | |"),
                }
            }
        }
    }
    if let Some(path) = get("json") {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
