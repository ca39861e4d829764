//! `genprior batch` and `genprior merge` on the bundled prior: shards (explicit and as
//! Kubernetes Indexed Job pods) equal one process bit for bit, a pod killed with SIGKILL
//! mid-batch and rerun loses nothing, SIGTERM stops cleanly with status 75 and a rerun
//! finishes, bad items are recorded and skipped, and a resume with other settings is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_clean_error, bin, repo_root, stderr, temp_dir};
use serde_json::Value;

/// Fast settings: DPS with few steps, 2 chains per item.
const FAST: &[&str] = &[
    "--task",
    "sr4",
    "--method",
    "dps",
    "--dps-steps",
    "4",
    "--samples",
    "2",
    "--device",
    "cpu",
];

/// A folder with the first `n` of the bundled example digits.
fn digits(dir: &Path, n: usize) -> PathBuf {
    let src = repo_root().join("examples/digits");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out = dir.join("digits");
    std::fs::create_dir_all(&out).unwrap();
    for f in files.iter().take(n) {
        std::fs::copy(f, out.join(f.file_name().unwrap())).unwrap();
    }
    out
}

fn batch(manifest: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg("batch")
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(FAST)
        .args(extra);
    c
}

fn run_ok(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ids(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out.join("items"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn done(out: &Path) -> usize {
    ids(out)
        .iter()
        .filter(|id| out.join("items").join(id).join("done.json").is_file())
        .count()
}

/// Every item's samples.npy and measurement.npy are byte-identical in `a` and `b`.
fn assert_same_items(a: &Path, b: &Path) {
    assert_eq!(ids(a), ids(b));
    for id in ids(a) {
        for f in ["samples.npy", "measurement.npy"] {
            let x = std::fs::read(a.join("items").join(&id).join(f)).unwrap();
            let y = std::fs::read(b.join("items").join(&id).join(f)).unwrap();
            assert!(x == y, "item {id}: {f} differs between {a:?} and {b:?}");
        }
    }
}

fn merge(out: &Path) -> Value {
    let mut c = bin();
    c.arg("merge").arg("--out").arg(out);
    run_ok(c);
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// Waits until `out` has at least `n` done items (or the child exits).
fn wait_for_done(child: &mut Child, out: &Path, n: usize) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(300) {
        if out.join("items").is_dir() && done(out) >= n {
            return;
        }
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no progress in {out:?}");
}

#[test]
fn shards_and_a_killed_pod_equal_one_process() {
    let d = temp_dir("batch-shards");
    let m = digits(&d, 6);
    let one = d.join("one");
    let s = run_ok(batch(&m, &one, &["--micro-batch", "2"]));
    assert!(s.contains("6 done, 0 failed"), "{s}");
    // Explicit shards, in any order.
    let sharded = d.join("sharded");
    for i in [2, 0, 1] {
        run_ok(batch(
            &m,
            &sharded,
            &["--micro-batch", "2", "--shard", &format!("{i}/3")],
        ));
    }
    assert_same_items(&one, &sharded);
    // Kubernetes Indexed Job pods: pod 1 (of 2) is killed with SIGKILL mid-batch, then rerun.
    let k8s = d.join("k8s");
    let pod = |i: usize| {
        let mut c = batch(&m, &k8s, &["--micro-batch", "1", "--num-shards", "2"]);
        c.env("JOB_COMPLETION_INDEX", i.to_string());
        c
    };
    // micro-batch 1 here: one item per sampler call, so the kill lands between items.
    let single = d.join("single");
    run_ok(batch(&m, &single, &["--micro-batch", "1"]));
    let mut c = pod(1);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_done(&mut child, &k8s, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill = done(&k8s);
    assert!(after_kill < 3, "the pod finished before it was killed");
    run_ok(pod(0));
    let s = run_ok(pod(1));
    assert!(s.contains(&format!("{after_kill} already done")), "{s}");
    assert_same_items(&single, &k8s);
    let summary = merge(&k8s);
    assert_eq!(summary["done"], 6);
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["missing"].as_array().unwrap().len(), 0);
    assert!(summary["mean"]["psnr"]["mean"].as_f64().unwrap() > 5.0);
    let md = std::fs::read_to_string(k8s.join("summary.md")).unwrap();
    assert!(md.contains("6 of 6 items done"), "{md}");
}

#[test]
fn sigterm_stops_after_the_current_batch_and_a_rerun_finishes() {
    let d = temp_dir("batch-sigterm");
    let m = digits(&d, 6);
    let out = d.join("out");
    let mut child = batch(&m, &out, &["--micro-batch", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_done(&mut child, &out, 1);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    let status: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("shards/shard-0000-of-0001/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["interrupted"], true);
    let n = done(&out);
    assert!((1..6).contains(&n), "{n} done");
    assert_eq!(status["remaining"].as_u64().unwrap() as usize, 6 - n);
    // Nothing half-written: every item folder is marked done.
    assert_eq!(ids(&out).len(), n, "{:?}", ids(&out));
    let s = run_ok(batch(&m, &out, &["--micro-batch", "1"]));
    assert!(
        s.contains(&format!("{} done, 0 failed, {n} already done", 6 - n)),
        "{s}"
    );
    assert_eq!(merge(&out)["complete"], true);
}

/// A 1-D f32 .npy file.
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_items_are_recorded_and_the_run_goes_on() {
    let d = temp_dir("batch-bad");
    digits(&d, 2);
    image::GrayImage::new(16, 16)
        .save(d.join("small.png"))
        .unwrap();
    write_npy(&d.join("nan.npy"), &[1, 8, 8], &[f32::NAN; 64]);
    write_npy(&d.join("y.npy"), &[1, 8, 8], &[0.1; 64]);
    let csv = d.join("m.csv");
    std::fs::write(
        &csv,
        "id,input,measurement,truth,noise-sigma\n\
         a,digits/0000.png,,,0.2\n\
         missing,digits/nope.png,,,\n\
         small,small.png,,,\n\
         nan,,nan.npy,,\n\
         meas,,y.npy,digits/0001.png,\n\
         badopt,digits/0001.png,,,-3\n",
    )
    .unwrap();
    let out = d.join("out");
    let s = run_ok(batch(&csv, &out, &["--micro-batch", "2"]));
    assert!(s.contains("2 done, 4 failed"), "{s}");
    let f = std::fs::read_to_string(out.join("shards/shard-0000-of-0001/failures.jsonl")).unwrap();
    let f: Vec<Value> = f
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let err = |id: &str| {
        f.iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {f:?}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(err("missing").contains("nope.png"), "{}", err("missing"));
    assert!(err("small").contains("16×16"), "{}", err("small"));
    assert!(err("nan").to_lowercase().contains("nan"), "{}", err("nan"));
    assert!(err("badopt").contains("noise"), "{}", err("badopt"));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("items/a/report.json")).unwrap())
            .unwrap();
    assert_eq!(r["parameters"]["noise_sigma"], 0.2);
    assert_eq!(r["id"], "a");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("items/meas/report.json")).unwrap())
            .unwrap();
    assert!(r["reconstruction"]["psnr"].as_f64().is_some());
    let summary = merge(&out);
    assert_eq!(summary["done"], 2);
    assert_eq!(summary["complete"], false);
    assert_eq!(summary["failed"].as_array().unwrap().len(), 4);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Failed") && md.contains("nope.png"), "{md}");
}

#[test]
fn a_resume_with_other_settings_is_refused() {
    let d = temp_dir("batch-settings");
    let m = digits(&d, 1);
    let out = d.join("out");
    run_ok(batch(&m, &out, &[]));
    let o = batch(&m, &out, &["--seed", "3"]).output().unwrap();
    assert_clean_error(&o, &["different settings", "seed"]);
    let o = batch(&m, &out, &["--micro-batch", "2"]).output().unwrap();
    assert_clean_error(&o, &["different settings", "micro_batch"]);
    let o = batch(&d.join("nowhere"), &out, &[]).output().unwrap();
    assert_clean_error(&o, &["no such manifest"]);
    let o = batch(&m, &out, &["--shard", "3/2"]).output().unwrap();
    assert_clean_error(&o, &["shard index 3"]);
    let mut c = batch(&m, &out, &[]);
    c.env("JOB_COMPLETION_INDEX", "0");
    assert_clean_error(&c.output().unwrap(), &["--num-shards"]);
    let mut c = bin();
    c.args(["merge", "--out"]).arg(d.join("empty"));
    assert_clean_error(&c.output().unwrap(), &["batch.json"]);
}
