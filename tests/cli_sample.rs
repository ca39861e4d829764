//! `genprior sample` end to end on small fixture models: reproducibility, PNG layout,
//! grayscale and RGB, and clear errors for bad input.

mod common;

use common::*;

fn rgb_model() -> std::path::PathBuf {
    // 3-channel 16x16 UNet2DModel with random weights (diffusers parity fixture).
    fixtures().join("unet2d/positional_null_heads/model")
}

fn sample_cmd(extra: &[&str], out: &std::path::Path) -> std::process::Output {
    bin()
        .args(["sample", "--device", "cpu"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn same_seed_gives_identical_pngs_and_other_seed_differs() {
    let tmp = temp_dir("sample-seed");
    let model = rgb_model();
    let m = model.to_str().unwrap();
    let args = |seed: &'static str| -> Vec<&str> {
        vec![
            "--model",
            m,
            "--sampler",
            "ddim",
            "--eta",
            "0.5",
            "--steps",
            "8",
            "--num",
            "3",
            "--seed",
            seed,
        ]
    };
    let a = tmp.join("a.png");
    let b = tmp.join("b.png");
    let c = tmp.join("c.png");
    let d = tmp.join("d.png");
    let o = sample_cmd(&args("7"), &a);
    assert_success(&o);
    assert!(
        stdout(&o).contains("network evaluations: 8"),
        "{}",
        stdout(&o)
    );
    assert_success(&sample_cmd(&args("7"), &b));
    assert_success(&sample_cmd(&args("8"), &c));
    // Batching does not change the images either.
    let mut batched = args("7");
    batched.extend(["--batch-size", "2"]);
    assert_success(&sample_cmd(&batched, &d));
    let (ba, bb, bc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert_eq!(ba, bb, "same seed, different bytes");
    assert_ne!(ba, bc, "different seeds gave identical images");
    // Another batch size draws the same noise per image; only the network's float
    // round-off (GEMM blocking depends on the batch) may move a pixel by one level.
    let (pa, pd) = (
        image::open(&a).unwrap().to_rgb8(),
        image::open(&d).unwrap().to_rgb8(),
    );
    let diffs: Vec<i32> = pa
        .as_raw()
        .iter()
        .zip(pd.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .filter(|d| *d > 0)
        .collect();
    assert!(
        diffs.iter().all(|d| *d <= 1),
        "batch size changed the images: {diffs:?}"
    );
    assert!(
        diffs.len() * 100 <= pa.as_raw().len(),
        "{} pixels differ",
        diffs.len()
    );
    let pc = image::open(&c).unwrap().to_rgb8();
    let far = pa
        .as_raw()
        .iter()
        .zip(pc.as_raw())
        .filter(|(x, y)| (**x as i32 - **y as i32).abs() > 8)
        .count();
    assert!(
        far * 4 > pa.as_raw().len(),
        "seeds 7 and 8 should give unrelated images ({far} far pixels)"
    );
    // 3 RGB 16x16 tiles: 2x2 grid with 2-px padding.
    let img = image::open(&a).unwrap();
    assert!(img.color().has_color());
    assert_eq!((img.width(), img.height()), (2 * 18 + 2, 2 * 18 + 2));
}

#[test]
fn out_dir_writes_one_png_per_image_grayscale_model() {
    let tmp = temp_dir("sample-dir");
    let dir = tmp.join("imgs");
    std::fs::create_dir_all(&dir).unwrap();
    let grid = tmp.join("grid.png");
    // The bundled MNIST prior (grayscale, 32x32), DDPM with few steps.
    let o = bin()
        .args([
            "sample",
            "--device",
            "cpu",
            "--sampler",
            "ddpm",
            "--steps",
            "4",
            "--num",
            "2",
            "--seed",
            "1",
        ])
        .arg("--out")
        .arg(&grid)
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_success(&o);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for f in &files {
        let img = image::open(f).unwrap();
        assert!(!img.color().has_color(), "{f:?} should be grayscale");
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    let g = image::open(&grid).unwrap();
    assert_eq!((g.width(), g.height()), (2 * 34 + 2, 34 + 2));
    // The grid tiles are the individual images.
    let g = g.to_luma8();
    let first = image::open(&files[0]).unwrap().to_luma8();
    for y in 0..32 {
        for x in 0..32 {
            assert_eq!(g.get_pixel(x + 2, y + 2), first.get_pixel(x, y));
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = temp_dir("sample-err");
    let model = rgb_model();
    let m = model.to_str().unwrap();
    let out = tmp.join("x.png");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--model", m, "--steps", "0"], vec!["--steps"]),
        (vec!["--model", m, "--steps", "1001"], vec!["1001", "1000"]),
        (
            vec!["--model", m, "--sampler", "ddim", "--eta", "1.5"],
            vec!["eta"],
        ),
        (
            vec!["--model", m, "--sampler", "ddim", "--eta=-0.1"],
            vec!["eta"],
        ),
        (vec!["--model", m, "--eta", "0.5"], vec!["--eta", "ddim"]),
        (vec!["--model", m, "--num", "0"], vec!["--num"]),
    ];
    for (args, needles) in cases {
        let o = sample_cmd(&args, &out);
        assert_clean_error(&o, &needles);
    }
    let o = sample_cmd(
        &["--model", m, "--steps", "2"],
        &tmp.join("missing/grid.png"),
    );
    assert_clean_error(&o, &["does not exist"]);
    // Unknown schedule name in a scheduler config.
    let bad = tmp.join("bad_sched.json");
    std::fs::write(&bad, r#"{"beta_schedule": "cosine"}"#).unwrap();
    let o = sample_cmd(
        &[
            "--model",
            m,
            "--steps",
            "2",
            "--scheduler-config",
            bad.to_str().unwrap(),
        ],
        &out,
    );
    assert_clean_error(&o, &["beta_schedule", "cosine"]);
    assert!(!out.exists());
}
