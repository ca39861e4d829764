//! Benchmark of ScaledGD vs vanilla GD on the spec's reference problems (not a test).
//!   cargo run --release -p genprior-lowrank --example bench -- \
//!       [--problem completion|rpca|sensing|tucker|all] [--n N] [--r R] [--p P] [--m M]
//!       [--kappas 1,5,10,20,100,1000] [--max-iter 1000] [--seed 0] [--f32] [--json out.json]
//! Prints a markdown table: iterations to relative error 1e-6/1e-8/1e-10/1e-13 ("–" if
//! not reached within --max-iter) and wall time per iteration.
//! The same benchmark is available as `genprior lowrank bench`.

use std::collections::HashMap;

use candle_core::{DType, Device};
use genprior_lowrank::bench::{run_bench, BenchConfig, BenchRow};
use genprior_lowrank::Method;

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
        let v = args
            .get(i + 1)
            .ok_or(format!("missing value for --{k}"))?
            .clone();
        kv.insert(k, v);
        i += 2;
    }
    let get = |k: &str| kv.get(k).cloned();
    let problem = get("problem").unwrap_or_else(|| "all".into());
    let problems: Vec<String> = if problem == "all" {
        ["completion", "rpca", "sensing", "tucker"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec![problem]
    };
    let kappas: Vec<f64> = get("kappas")
        .unwrap_or_else(|| "1,5,10,20,100,1000".into())
        .split(',')
        .map(|s| s.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let mut all = vec![];
    println!("{}", BenchRow::markdown_header());
    for prob in problems {
        let cfg = BenchConfig {
            problem: prob,
            n: get("n").map(|s| s.parse()).transpose()?,
            r: get("r").map(|s| s.parse()).transpose()?,
            p: get("p").map(|s| s.parse()).transpose()?,
            m: get("m").map(|s| s.parse()).transpose()?,
            kappas: kappas.clone(),
            methods: vec![Method::ScaledGd, Method::Gd],
            max_iter: get("max-iter")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1000),
            seed: get("seed").map(|s| s.parse()).transpose()?.unwrap_or(0),
            dtype: if kv.contains_key("f32") {
                DType::F32
            } else {
                DType::F64
            },
            device: Device::Cpu,
        };
        all.extend(run_bench(&cfg, |row| println!("{}", row.markdown()))?);
    }
    if let Some(path) = get("json") {
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    Ok(())
}
