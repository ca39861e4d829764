//! `genprior bench --ops`: prints `genprior_nn::opbench::time_kernels` as a table or JSON.

use anyhow::Result;

pub fn run(batch: usize, iters: usize, json: bool) -> Result<()> {
    let rows = genprior_nn::opbench::time_kernels(batch, iters)?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"op": r.op, "shape": r.shape, "genprior_s": r.genprior_s, "candle_s": r.candle_s, "speedup": r.speedup()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!("| op | shape | genprior ms | candle ms | speedup |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            r.op,
            r.shape,
            r.genprior_s * 1e3,
            r.candle_s * 1e3,
            r.speedup()
        );
    }
    Ok(())
}
