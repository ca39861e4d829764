//! guided-diffusion ADM checkpoints through the CLI: `.pt` loading with a config beside
//! it, `convert` to safetensors, `inspect`, and clear errors.

mod common;

use candle_core::Tensor;
use common::*;

fn adm(name: &str) -> std::path::PathBuf {
    fixtures().join("adm").join(name)
}

fn predict(
    model: &std::path::Path,
    dir: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    bin()
        .args(["predict", "--device", "cpu", "--model"])
        .arg(model)
        .arg("--input")
        .arg(dir.join("input.npy"))
        .arg("--timesteps")
        .arg(dir.join("timesteps.npy"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn max_err(a: &std::path::Path, b: &std::path::Path) -> f32 {
    max_abs_diff(&Tensor::read_npy(a).unwrap(), &Tensor::read_npy(b).unwrap())
}

#[test]
fn adm_pt_predict_convert_and_reload() {
    let tmp = temp_dir("adm");
    for name in ["updown_legacy_sigma", "conv_updown_new_order"] {
        let d = adm(name);
        let out = tmp.join(format!("{name}.npy"));
        let o = predict(&d.join("model.pt"), &d, &out, &[]);
        assert_success(&o);
        let e = max_err(&out, &d.join("output.npy"));
        assert!(e <= 1e-4, "{name} .pt: {e}");

        let conv = tmp.join(format!("{name}-converted"));
        let o = bin()
            .args(["convert", "--model"])
            .arg(d.join("model.pt"))
            .arg("--out")
            .arg(&conv)
            .output()
            .unwrap();
        assert_success(&o);
        let out2 = tmp.join(format!("{name}-2.npy"));
        let o = predict(&conv, &d, &out2, &[]);
        assert_success(&o);
        let e = max_err(&out2, &d.join("output.npy"));
        assert!(e <= 1e-4, "{name} converted: {e}");
    }
    let o = bin()
        .args(["inspect", "--device", "cpu", "--model"])
        .arg(adm("updown_legacy_sigma").join("model.pt"))
        .output()
        .unwrap();
    assert_success(&o);
    assert!(stdout(&o).contains("guided-diffusion ADM UNet"));
}

#[test]
fn adm_errors_are_clear() {
    let tmp = temp_dir("admerr");
    // A .pt alone, without a config or a matching preset.
    let lone = tmp.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(
        adm("updown_legacy_sigma").join("model.pt"),
        lone.join("ckpt.pt"),
    )
    .unwrap();
    let o = bin()
        .args(["inspect", "--device", "cpu", "--model"])
        .arg(lone.join("ckpt.pt"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["--preset"]);
    // The wrong preset: shapes do not match.
    let o = bin()
        .args([
            "inspect",
            "--device",
            "cpu",
            "--preset",
            "adm-ffhq-256",
            "--model",
        ])
        .arg(lone.join("ckpt.pt"))
        .output()
        .unwrap();
    assert_clean_error(&o, &[]);
    // A pickle holding a non-tensor object.
    let o = bin()
        .args(["inspect", "--device", "cpu", "--model"])
        .arg(adm("bad").join("object.pt"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["not a tensor"]);
    // A truncated .pt.
    let bytes = std::fs::read(adm("updown_legacy_sigma").join("model.pt")).unwrap();
    std::fs::write(lone.join("trunc.pt"), &bytes[..bytes.len() / 2]).unwrap();
    let o = bin()
        .args(["inspect", "--device", "cpu", "--model"])
        .arg(lone.join("trunc.pt"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["cannot read weights"]);
}
