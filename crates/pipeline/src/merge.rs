//! `genprior merge`: one summary of a batch run's output folder, whichever shards wrote it.
//!
//! Reads `batch.json` (the items), every done item's `report.json`, and every shard's
//! `failures.jsonl`; writes `summary.json` and `summary.md` with per-item and mean ± std
//! metrics (posterior mean and baseline PSNR/SSIM where the ground truth is known), network
//! evaluations and seconds per image, and the items that are missing or failed.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::batch::{done_marker, is_done, item_dir, read_run, shards_dir};
use crate::files::{write_atomic, write_json};

/// Mean and sample standard deviation of the finite values.
fn mean_std(v: &[f64]) -> Value {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Value::Null;
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    json!({"mean": m, "std": s, "n": v.len()})
}

/// The latest failure of each item, from every shard's `failures.jsonl`.
fn failures(out: &Path) -> Result<std::collections::BTreeMap<String, Value>> {
    let mut by_id = std::collections::BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(shards_dir(out)) else {
        return Ok(by_id);
    };
    let mut dirs: Vec<_> = dirs.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("failures.jsonl")) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A line cut short by a kill is skipped.
            let Ok(mut v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let id = v["id"].as_str().unwrap_or_default().to_string();
            v["shard"] = json!(d.file_name().map(|n| n.to_string_lossy().into_owned()));
            by_id.insert(id, v);
        }
    }
    Ok(by_id)
}

/// Writes `OUT/summary.json` and `OUT/summary.md`; returns the summary.
pub fn merge(out: &Path) -> Result<Value> {
    let (items, settings) = read_run(out)?;
    let fails = failures(out)?;
    let (mut per_item, mut failed, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for it in &items {
        if !is_done(out, &it.id) {
            match fails.get(&it.id) {
                Some(f) => failed.push(f.clone()),
                None => missing.push(json!(it.id)),
            }
            continue;
        }
        let path = item_dir(out, &it.id).join("report.json");
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| {
                format!("{} is marked done but has no report.json", path.display())
            })?)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        per_item.push(json!({
            "id": it.id,
            "index": it.index,
            "psnr": r["reconstruction"]["psnr"],
            "ssim": r["reconstruction"]["ssim"],
            "baseline_psnr": r["baseline"]["psnr"],
            "baseline_ssim": r["baseline"]["ssim"],
            "single_sample_psnr": r["calibration"]["single_sample"]["psnr"],
            "interval_90_coverage": r["calibration"]["interval_90_coverage"],
            "error_std_correlation": r["calibration"]["error_std_correlation"],
            "nfe_per_image": r["nfe_per_image"],
            "seconds_per_image": r["seconds_per_image"],
            "done_marker": done_marker(out, &it.id),
        }));
    }
    let col = |k: &str| -> Vec<f64> { per_item.iter().filter_map(|r| r[k].as_f64()).collect() };
    let means = json!({
        "psnr": mean_std(&col("psnr")),
        "ssim": mean_std(&col("ssim")),
        "baseline_psnr": mean_std(&col("baseline_psnr")),
        "baseline_ssim": mean_std(&col("baseline_ssim")),
        "single_sample_psnr": mean_std(&col("single_sample_psnr")),
        "interval_90_coverage": mean_std(&col("interval_90_coverage")),
        "error_std_correlation": mean_std(&col("error_std_correlation")),
        "nfe_per_image": mean_std(&col("nfe_per_image")),
        "seconds_per_image": mean_std(&col("seconds_per_image")),
    });
    let summary = json!({
        "items": items.len(),
        "done": per_item.len(),
        "failed": failed,
        "missing": missing,
        "complete": per_item.len() == items.len(),
        "settings": settings,
        "mean": means,
        "per_item": per_item,
    });
    write_json(&out.join("summary.json"), &summary)?;
    write_atomic(&out.join("summary.md"), markdown(&summary).as_bytes())?;
    Ok(summary)
}

fn fmt(v: &Value, digits: usize) -> String {
    match (v["mean"].as_f64(), v["std"].as_f64()) {
        (Some(m), Some(s)) => format!("{m:.digits$} ± {s:.digits$}"),
        _ => "–".into(),
    }
}

fn cell(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn markdown(s: &Value) -> String {
    let m = &s["mean"];
    let mut md = format!(
        "# Batch summary\n\n{} of {} items done; {} failed; {} missing.\n\n\
| | PSNR (dB) | SSIM |\n|---|---|---|\n\
| reconstruction (posterior mean) | {} | {} |\n| one sample | {} | |\n| baseline | {} | {} |\n\n\
Calibration: {} of the ground-truth pixels inside the per-pixel 90 % interval (mean ± 1.645 std); \
correlation of the per-pixel error with the std {}.\n\n\
Network evaluations per image: {}; seconds per image: {}.\n",
        s["done"],
        s["items"],
        s["failed"].as_array().map_or(0, Vec::len),
        s["missing"].as_array().map_or(0, Vec::len),
        fmt(&m["psnr"], 2),
        fmt(&m["ssim"], 3),
        fmt(&m["single_sample_psnr"], 2),
        fmt(&m["baseline_psnr"], 2),
        fmt(&m["baseline_ssim"], 3),
        fmt(&m["interval_90_coverage"], 3),
        fmt(&m["error_std_correlation"], 2),
        fmt(&m["nfe_per_image"], 0),
        fmt(&m["seconds_per_image"], 2),
    );
    if let Some(f) = s["failed"].as_array().filter(|f| !f.is_empty()) {
        md.push_str("\n## Failed\n\n| id | shard | error |\n|---|---|---|\n");
        for x in f {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                x["id"].as_str().unwrap_or(""),
                x["shard"].as_str().unwrap_or(""),
                x["error"].as_str().unwrap_or("").replace('|', "\\|")
            ));
        }
    }
    if let Some(f) = s["missing"].as_array().filter(|f| !f.is_empty()) {
        let ids: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
        md.push_str(&format!("\n## Missing\n\n{}\n", ids.join(", ")));
    }
    md.push_str("\n## Items\n\n| id | PSNR | SSIM | baseline PSNR | baseline SSIM | NFE | s |\n|---|---|---|---|---|---|---|\n");
    for r in s["per_item"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r["id"].as_str().unwrap_or(""),
            cell(&r["psnr"], 2),
            cell(&r["ssim"], 3),
            cell(&r["baseline_psnr"], 2),
            cell(&r["baseline_ssim"], 3),
            cell(&r["nfe_per_image"], 0),
            cell(&r["seconds_per_image"], 2),
        ));
    }
    md
}
