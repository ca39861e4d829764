//! `genprior inspect` / `predict` end to end on the diffusers parity fixtures, and the
//! clear errors every bad input must give.

mod common;

use candle_core::Tensor;
use common::*;

const NAMES: [&str; 5] = [
    "positional_null_heads",
    "scale_shift_heads",
    "scale_shift_mid_nonorm",
    "fourier_no_mid_attn",
    "rect_no_mid_gelu",
];

fn unet_fixture(name: &str) -> std::path::PathBuf {
    fixtures().join("unet2d").join(name)
}

#[test]
fn predict_reproduces_diffusers_on_every_fixture() {
    let tmp = temp_dir("predict");
    for name in NAMES {
        for sub in ["model", "bin"] {
            let d = unet_fixture(name);
            let out = tmp.join(format!("{name}-{sub}.npy"));
            let o = bin()
                .args(["predict", "--device", "cpu", "--model"])
                .arg(d.join(sub))
                .arg("--input")
                .arg(d.join("input.npy"))
                .arg("--timesteps")
                .arg(d.join("timesteps.npy"))
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap();
            assert_success(&o);
            let got = Tensor::read_npy(&out).unwrap();
            let want = Tensor::read_npy(d.join("output.npy")).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err <= 1e-4, "{name}/{sub}: max abs error {err}");
        }
    }
}

#[test]
fn predict_single_timestep_broadcasts() {
    let tmp = temp_dir("predict1");
    let d = unet_fixture("positional_null_heads");
    let out = tmp.join("y.npy");
    let o = bin()
        .args(["predict", "--device", "cpu", "--timestep", "10", "--model"])
        .arg(d.join("model"))
        .arg("--input")
        .arg(d.join("input.npy"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&o);
    let y = Tensor::read_npy(&out).unwrap();
    assert_eq!(y.dims(), &[3, 3, 16, 16]);
}

#[test]
fn inspect_reports_diffusers_parameter_count() {
    for name in NAMES {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(unet_fixture(name).join("meta.json")).unwrap(),
        )
        .unwrap();
        let o = bin()
            .args(["inspect", "--json", "--device", "cpu", "--model"])
            .arg(unet_fixture(name).join("model"))
            .output()
            .unwrap();
        assert_success(&o);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["num_parameters"], meta["num_parameters"], "{name}");
        assert_eq!(v["format"], "safetensors");
    }
    let o = bin()
        .args(["inspect", "--device", "cpu", "--model"])
        .arg(unet_fixture("scale_shift_heads").join("bin"))
        .output()
        .unwrap();
    assert_success(&o);
    assert!(stdout(&o).contains("pytorch pickle"));
}

fn predict_with(
    model: &std::path::Path,
    input: &std::path::Path,
    out: &std::path::Path,
) -> std::process::Output {
    bin()
        .args(["predict", "--device", "cpu", "--timestep", "3", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// A copy of a fixture model whose safetensors file is rewritten by `edit`.
fn edited_model(
    tag: &str,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) -> std::path::PathBuf {
    let src = unet_fixture("positional_null_heads").join("model");
    let dst = temp_dir(tag);
    copy_dir(&src, &dst);
    let file = dst.join("diffusion_pytorch_model.safetensors");
    let mut ts = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    edit(&mut ts);
    candle_core::safetensors::save(&ts, &file).unwrap();
    dst
}

#[test]
fn bad_weights_are_clear_errors() {
    let d = unet_fixture("positional_null_heads");
    let input = d.join("input.npy");
    let tmp = temp_dir("badw");
    let out = tmp.join("y.npy");

    // Missing tensor: named.
    let m = edited_model("missing", |ts| {
        ts.remove("mid_block.attentions.0.to_q.weight");
    });
    assert_clean_error(
        &predict_with(&m, &input, &out),
        &["mid_block.attentions.0.to_q.weight", "missing"],
    );

    // Shape mismatch: name and both shapes.
    let m = edited_model("shape", |ts| {
        ts.insert(
            "conv_out.bias".into(),
            Tensor::zeros(5, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        );
    });
    assert_clean_error(
        &predict_with(&m, &input, &out),
        &["conv_out.bias", "[5]", "[3]"],
    );

    // Extra tensors: a checkpoint of another architecture.
    let m = edited_model("extra", |ts| {
        ts.insert(
            "down_blocks.7.resnets.0.conv1.weight".into(),
            Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        );
    });
    assert_clean_error(
        &predict_with(&m, &input, &out),
        &["not used", "different architecture"],
    );

    // Truncated safetensors.
    let m = temp_dir("trunc");
    copy_dir(&d.join("model"), &m);
    let f = m.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&predict_with(&m, &input, &out), &["cannot read weights"]);

    // Truncated pickle.
    let m = temp_dir("truncbin");
    copy_dir(&d.join("bin"), &m);
    let f = m.join("diffusion_pytorch_model.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    assert_clean_error(&predict_with(&m, &input, &out), &["cannot read weights"]);

    // Garbage bytes.
    let m = temp_dir("garbage");
    copy_dir(&d.join("model"), &m);
    std::fs::write(
        m.join("diffusion_pytorch_model.safetensors"),
        b"not a checkpoint at all",
    )
    .unwrap();
    assert_clean_error(&predict_with(&m, &input, &out), &["cannot read weights"]);

    // Missing model folder.
    assert_clean_error(&predict_with(&tmp.join("nope"), &input, &out), &["nope"]);
}

#[test]
fn bad_configs_are_clear_errors() {
    let d = unet_fixture("positional_null_heads");
    let input = d.join("input.npy");
    let out = temp_dir("badc").join("y.npy");
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "\"DownBlock2D\", \"AttnDownBlock2D\"",
            "\"DownBlock2D\", \"CrossAttnDownBlock2D\"",
            &["down_block_types", "CrossAttnDownBlock2D"],
        ),
        (
            "\"positional\"",
            "\"sinusoidal-ish\"",
            &["time_embedding_type", "sinusoidal-ish"],
        ),
        ("\"silu\"", "\"tanhshrink\"", &["act_fn", "tanhshrink"]),
        (
            "\"in_channels\": 3",
            "\"in_channels\": 4",
            &["conv_in.weight", "[32, 4, 3, 3]", "[32, 3, 3, 3]"],
        ),
    ];
    for (i, (from, to, needles)) in cases.iter().enumerate() {
        let m = temp_dir(&format!("cfg{i}"));
        copy_dir(&d.join("model"), &m);
        let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
        // Normalise the JSON layout so the replacements find their text.
        let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        let cfg = serde_json::to_string(&v)
            .unwrap()
            .replace(",\"", ", \"")
            .replace("\":", "\": ");
        assert!(cfg.contains(from), "{from} not in {cfg}");
        std::fs::write(m.join("config.json"), cfg.replace(from, to)).unwrap();
        assert_clean_error(&predict_with(&m, &input, &out), needles);
    }
    let m = temp_dir("cfgjson");
    copy_dir(&d.join("model"), &m);
    std::fs::write(m.join("config.json"), "{ not json").unwrap();
    assert_clean_error(&predict_with(&m, &input, &out), &["config.json"]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = unet_fixture("positional_null_heads");
    let model = d.join("model");
    let tmp = temp_dir("badin");
    let out = tmp.join("y.npy");
    let dev = candle_core::Device::Cpu;

    let nan = tmp.join("nan.npy");
    let mut v = vec![0f32; 3 * 16 * 16];
    v[5] = f32::NAN;
    Tensor::from_vec(v, (1, 3, 16, 16), &dev)
        .unwrap()
        .write_npy(&nan)
        .unwrap();
    assert_clean_error(&predict_with(&model, &nan, &out), &["NaN"]);

    let chans = tmp.join("chans.npy");
    Tensor::zeros((1, 4, 16, 16), candle_core::DType::F32, &dev)
        .unwrap()
        .write_npy(&chans)
        .unwrap();
    assert_clean_error(&predict_with(&model, &chans, &out), &["3 channel", "4"]);

    let odd = tmp.join("odd.npy");
    Tensor::zeros((1, 3, 15, 16), candle_core::DType::F32, &dev)
        .unwrap()
        .write_npy(&odd)
        .unwrap();
    assert_clean_error(&predict_with(&model, &odd, &out), &["15x16", "divisible"]);

    assert_clean_error(
        &predict_with(&model, &tmp.join("absent.npy"), &out),
        &["absent.npy"],
    );
    let junk = tmp.join("junk.npy");
    std::fs::write(&junk, b"\x93NUMPY garbage").unwrap();
    assert_clean_error(&predict_with(&model, &junk, &out), &["junk.npy"]);

    assert_clean_error(
        &predict_with(&model, &d.join("input.npy"), &tmp.join("missing-dir/y.npy")),
        &["does not exist"],
    );
}

#[test]
fn cuda_request_without_cuda_is_a_clear_error_and_auto_falls_back() {
    let d = unet_fixture("positional_null_heads");
    let o = bin()
        .args(["inspect", "--device", "cuda", "--model"])
        .arg(d.join("model"))
        .output()
        .unwrap();
    assert_clean_error(&o, &["CUDA"]);
    let o = bin()
        .args(["inspect", "--device", "auto", "--model"])
        .arg(d.join("model"))
        .output()
        .unwrap();
    assert_success(&o);
    assert!(stderr(&o).contains("device: cpu"), "{}", stderr(&o));
}
