//! `genprior train` end to end on a tiny architecture: the output folder is a model that
//! `genprior sample` uses; `--resume` after a stop gives byte-identical files to an
//! uninterrupted run; SIGTERM writes a final checkpoint; bad input is a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn tiny_arch(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.json");
    std::fs::write(
        &p,
        r#"{"in_channels": 1, "out_channels": 1, "sample_size": 8,
            "block_out_channels": [8, 8], "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 4, "attention_head_dim": 4}"#,
    )
    .unwrap();
    p
}

/// Six 8×8 uint8 images as .npy.
fn images(dir: &Path) -> PathBuf {
    let v: Vec<u8> = (0..6 * 64).map(|i| ((i * 37) % 256) as u8).collect();
    let t = candle_core::Tensor::from_vec(v, (6, 1, 8, 8), &candle_core::Device::Cpu).unwrap();
    let p = dir.join("images.npy");
    t.write_npy(&p).unwrap();
    p
}

fn train(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["train", "--device", "cpu", "--size", "8", "--batch", "3"])
        .arg("--arch")
        .arg(tiny_arch(dir))
        .arg("--images")
        .arg(images(dir))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn trains_a_model_that_sample_uses_and_resume_is_bit_identical() {
    let dir = temp_dir("train");
    let full = dir.join("full");
    let o = train(
        &dir,
        &full,
        &["--steps", "6", "--checkpoint-every", "3", "--flip"],
    );
    assert_success(&o);
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
        "checkpoint.safetensors",
        "loss.csv",
        "loss_curve.png",
        "samples/step_000003.png",
        "samples/step_000006.png",
    ] {
        assert!(full.join(f).is_file(), "{f} missing");
    }
    let csv = String::from_utf8(read(full.join("loss.csv"))).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");

    // The folder is a model: genprior sample loads it.
    let png = dir.join("s.png");
    let o = bin()
        .args([
            "sample",
            "--device",
            "cpu",
            "--sampler",
            "ddim",
            "--steps",
            "4",
            "--num",
            "2",
        ])
        .arg("--model")
        .arg(&full)
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert_success(&o);
    assert!(png.is_file());

    // 3 steps, then resumed to 6: the same files as the uninterrupted run.
    let part = dir.join("part");
    assert_success(&train(
        &dir,
        &part,
        &["--steps", "3", "--checkpoint-every", "3", "--flip"],
    ));
    // Without --resume an existing run is never overwritten.
    let o = train(&dir, &part, &["--steps", "6", "--flip"]);
    assert_clean_error(&o, &["--resume"]);
    let o = train(
        &dir,
        &part,
        &[
            "--steps",
            "6",
            "--checkpoint-every",
            "3",
            "--flip",
            "--resume",
        ],
    );
    assert_success(&o);
    for f in [
        "checkpoint.safetensors",
        "diffusion_pytorch_model.safetensors",
        "config.json",
    ] {
        assert_eq!(
            read(full.join(f)),
            read(part.join(f)),
            "{f} differs after --resume"
        );
    }
    let strip = |s: String| -> Vec<String> {
        // Rows minus the timing column.
        s.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(
        strip(csv),
        strip(String::from_utf8(read(part.join("loss.csv"))).unwrap())
    );
    // Resuming with other options is refused.
    let o = train(&dir, &part, &["--steps", "8", "--lr", "0.01", "--resume"]);
    assert_clean_error(&o, &["other options"]);
}

#[test]
fn sigterm_writes_a_final_checkpoint() {
    let dir = temp_dir("train-term");
    let out = dir.join("run");
    let mut child = bin()
        .args(["train", "--device", "cpu", "--size", "8", "--batch", "3"])
        .args([
            "--steps",
            "1000000",
            "--checkpoint-every",
            "100000",
            "--sample-every",
            "0",
        ])
        .arg("--arch")
        .arg(tiny_arch(&dir))
        .arg("--images")
        .arg(images(&dir))
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let csv = out.join("loss.csv");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&csv).map_or(0, |s| s.lines().count()) < 4 {
        assert!(t0.elapsed().as_secs() < 60, "no training progress");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    assert!(out.join("checkpoint.safetensors").is_file());
    assert!(out.join("diffusion_pytorch_model.safetensors").is_file());
    // The checkpoint holds exactly the steps logged: resuming to one more step logs one row.
    let o = train(
        &dir,
        &out,
        &[
            "--steps",
            &(rows + 1).to_string(),
            "--resume",
            "--sample-every",
            "0",
        ],
    );
    assert_success(&o);
    let after = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    assert_eq!(after, rows + 1);
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = temp_dir("train-bad");
    let out = dir.join("o");
    let o = bin()
        .args(["train", "--device", "cpu", "--arch", "huge", "--images"])
        .arg(images(&dir))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_clean_error(&o, &["--arch", "huge"]);
    let o = train(&dir, &out, &["--channels", "2"]);
    assert_clean_error(&o, &["--channels"]);
    let o = bin()
        .args(["train", "--device", "cpu", "--size", "12", "--arch"])
        .arg(tiny_arch(&dir))
        .arg("--images")
        .arg(images(&dir))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_clean_error(&o, &["sample_size"]);
    let o = train(&dir, &out, &["--dtype", "f16"]);
    assert_clean_error(&o, &["f32"]);
    let o = train(&dir, &out, &["--resume"]);
    assert_clean_error(&o, &["--resume"]);
    let o = train(&dir, &out, &["--lr=-1"]);
    assert_clean_error(&o, &["--lr"]);
}
