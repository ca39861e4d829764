//! guided-diffusion ADM UNet against the reference (deepinv's port of guided-diffusion
//! `unet.py`): fixtures made by scripts/gen_adm_fixtures.py.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};
use genprior_nn::adm::{self, AdmConfig, AdmUNet};
use genprior_nn::{NnError, WeightStore};

const NAMES: [&str; 3] = ["updown_legacy_sigma", "conv_updown_new_order", "class_cond"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/adm")
}

fn summary() -> serde_json::Value {
    let s = std::fs::read_to_string(fixtures().join("summary.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn config(name: &str) -> AdmConfig {
    AdmConfig::from_file(&fixtures().join(name).join("config.json")).unwrap()
}

fn load(name: &str, file: &str, dtype: DType) -> AdmUNet {
    adm::load_adm(
        config(name),
        &fixtures().join(name).join(file),
        dtype,
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{name}/{file}: {e}"))
}

struct Case {
    x: Tensor,
    t: Tensor,
    y: Option<Tensor>,
    out: Tensor,
}

fn case(name: &str) -> Case {
    let d = fixtures().join(name);
    let labels = d.join("labels.npy");
    Case {
        x: Tensor::read_npy(d.join("input.npy")).unwrap(),
        t: Tensor::read_npy(d.join("timesteps.npy")).unwrap(),
        y: labels.exists().then(|| Tensor::read_npy(labels).unwrap()),
        out: Tensor::read_npy(d.join("output.npy")).unwrap(),
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn run(m: &AdmUNet, c: &Case) -> Tensor {
    m.forward_with_labels(&c.x, &c.t, c.y.as_ref()).unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("genprior-adm-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn safetensors_matches_reference() {
    let s = summary();
    for name in NAMES {
        let m = load(name, "model.safetensors", DType::F32);
        let c = case(name);
        let out = run(&m, &c);
        let err = max_abs(&out, &c.out);
        eprintln!(
            "{name}: max abs error {err:.2e} (output max {:.2})",
            c.out
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        );
        assert!(err <= 1e-4, "{name}: max abs error {err}");
        let want = s["fixtures"][name]["num_parameters"].as_u64().unwrap() as usize;
        assert_eq!(m.num_parameters(), want, "{name}: parameter count");
    }
}

#[test]
fn pytorch_pickle_matches_reference() {
    for name in NAMES {
        let m = load(name, "model.pt", DType::F32);
        let c = case(name);
        let err = max_abs(&run(&m, &c), &c.out);
        assert!(err <= 1e-4, "{name} (.pt): max abs error {err}");
    }
}

#[test]
fn per_sample_timesteps_equal_separate_calls() {
    let name = "updown_legacy_sigma";
    let m = load(name, "model.safetensors", DType::F32);
    let c = case(name);
    let batched = run(&m, &c);
    for i in 0..c.x.dim(0).unwrap() {
        let yi = m
            .forward(&c.x.narrow(0, i, 1).unwrap(), &c.t.narrow(0, i, 1).unwrap())
            .unwrap();
        let err = max_abs(&yi, &batched.narrow(0, i, 1).unwrap());
        assert!(err <= 1e-5, "image {i}: {err}");
    }
    // One timestep for the whole batch equals the same value repeated.
    let t1 = Tensor::new(&[417.25f32], &Device::Cpu).unwrap();
    let t3 = Tensor::new(&[417.25f32; 3], &Device::Cpu).unwrap();
    let err = max_abs(
        &m.forward(&c.x, &t1).unwrap(),
        &m.forward(&c.x, &t3).unwrap(),
    );
    assert!(err <= 1e-6, "broadcast timestep: {err}");
}

#[test]
fn half_precision_is_close_to_f32_reference() {
    for name in ["updown_legacy_sigma", "class_cond"] {
        let m = load(name, "model.safetensors", DType::F16);
        let c = case(name);
        let out = run(&m, &c);
        assert_eq!(out.dtype(), DType::F32);
        let scale = c
            .out
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let err = max_abs(&out, &c.out) / scale;
        assert!(err <= 2e-2, "{name} f16: relative max error {err}");
    }
}

#[test]
fn expected_tensor_list_matches_the_reference_state_dicts() {
    for name in NAMES {
        let file = fixtures().join(name).join("model.safetensors");
        let st = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
        let want: HashMap<String, Vec<usize>> = st
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        let got: HashMap<String, Vec<usize>> = adm::plan::expected_tensors(&config(name))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn full_size_presets_have_reference_parameter_counts() {
    let s = summary();
    for name in adm::PRESETS {
        let want = s["reference_archs"][name]["num_parameters"]
            .as_u64()
            .unwrap() as usize;
        let cfg = AdmConfig::preset(name).unwrap();
        let n: usize = adm::plan::expected_tensors(&cfg)
            .unwrap()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(n, want, "{name}: parameters from the layer plan");
    }
    // The model itself, built on random weights (what `genprior inspect` reports).
    let name = "adm-ffhq-256";
    let want = s["reference_archs"][name]["num_parameters"]
        .as_u64()
        .unwrap() as usize;
    let m = adm::random_adm(
        AdmConfig::preset(name).unwrap(),
        0,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(m.num_parameters(), want);
    assert_eq!(want, 93_563_910);
}

#[test]
fn flop_counts_match_torch_flop_counter() {
    let s = summary();
    for name in adm::PRESETS {
        let want = s["reference_archs"][name]["forward_flops_256"]
            .as_f64()
            .unwrap();
        let cfg = AdmConfig::preset(name).unwrap();
        let f = adm::flops::forward_flops(&cfg, 256, 256).unwrap();
        eprintln!(
            "{name}: {:.3} GFLOP (torch FlopCounterMode {:.3})",
            f / 1e9,
            want / 1e9
        );
        assert!(
            (f / want - 1.0).abs() < 1e-3,
            "{name}: {f:e} vs torch {want:e}"
        );
    }
}

#[test]
fn truncated_pickle_is_a_clear_error() {
    let name = "updown_legacy_sigma";
    let bytes = std::fs::read(fixtures().join(name).join("model.pt")).unwrap();
    let dir = scratch("trunc");
    let path = dir.join("truncated.pt");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = adm::load_adm(config(name), &path, DType::F32, &Device::Cpu)
        .err()
        .expect("a truncated .pt must not load");
    assert!(matches!(err, NnError::CorruptWeights { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("truncated.pt"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn pickle_with_a_non_tensor_object_is_rejected() {
    let path = fixtures().join("bad").join("object.pt");
    let err = WeightStore::open(&path)
        .err()
        .expect("a pickle with a custom object must be rejected");
    let msg = err.to_string();
    assert!(matches!(err, NnError::CorruptWeights { .. }), "{msg}");
    assert!(
        msg.contains("NotATensor") && msg.contains("not a tensor"),
        "{msg}"
    );
}

#[test]
fn state_dict_of_another_architecture_is_rejected() {
    // A diffusers UNet2DModel checkpoint with an ADM config: names do not exist.
    let unet2d = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fixtures/unet2d/scale_shift_heads/model/diffusion_pytorch_model.safetensors",
    );
    let err = adm::load_adm(
        config("updown_legacy_sigma"),
        &unet2d,
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .expect("a diffusers checkpoint must not load as ADM");
    assert!(matches!(err, NnError::MissingTensor { .. }), "{err}");
    assert!(err.to_string().contains("time_embed.0.weight"), "{err}");
    let store = WeightStore::open(&unet2d).unwrap();
    assert!(!adm::looks_like_adm(&store));

    // Another ADM configuration's weights: a shape or name mismatch, named.
    let err = adm::load_adm(
        config("updown_legacy_sigma"),
        &fixtures().join("conv_updown_new_order").join("model.pt"),
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .expect("weights of another ADM config must not load");
    assert!(
        matches!(
            err,
            NnError::ShapeMismatch { .. } | NnError::MissingTensor { .. }
        ),
        "{err}"
    );

    // Every expected tensor present plus an extra one: unused tensors are an error.
    let name = "updown_legacy_sigma";
    let mut st = candle_core::safetensors::load(
        fixtures().join(name).join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    st.insert(
        "label_emb.weight".into(),
        Tensor::zeros((10, 128), DType::F32, &Device::Cpu).unwrap(),
    );
    let store = Rc::new(WeightStore::from_tensors(st, "extra.safetensors"));
    let err = AdmUNet::new(config(name), &store.root(DType::F32, &Device::Cpu))
        .err()
        .expect("an extra tensor must be reported");
    assert!(matches!(err, NnError::UnusedTensors { .. }), "{err}");
    assert!(err.to_string().contains("label_emb.weight"), "{err}");
}

#[test]
fn detection_helpers() {
    for name in NAMES {
        let store = WeightStore::open(&fixtures().join(name).join("model.pt")).unwrap();
        assert!(adm::looks_like_adm(&store), "{name}");
        assert_eq!(adm::matching_preset(&store), None, "{name}");
    }
    // A state dict with exactly the names of the FFHQ preset is recognised as it.
    let cfg = AdmConfig::preset("adm-ffhq-256").unwrap();
    let tensors: HashMap<String, Tensor> = adm::plan::expected_tensors(&cfg)
        .unwrap()
        .into_iter()
        .map(|(n, _)| (n, Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let store = WeightStore::from_tensors(tensors, "names-only");
    assert!(adm::looks_like_adm(&store));
    assert_eq!(adm::matching_preset(&store), Some("adm-ffhq-256"));
}

#[test]
fn convert_writes_a_loadable_safetensors_and_config() {
    let name = "class_cond";
    let dir = scratch("convert");
    let (st, cfg_path) =
        adm::convert_checkpoint(&fixtures().join(name).join("model.pt"), &config(name), &dir)
            .unwrap();
    let cfg = AdmConfig::from_file(&cfg_path).unwrap();
    let m = adm::load_adm(cfg, &st, DType::F32, &Device::Cpu).unwrap();
    let c = case(name);
    let err = max_abs(&run(&m, &c), &c.out);
    assert!(err <= 1e-4, "converted: {err}");
    // A config that does not match the weights is refused before anything is written.
    let other = scratch("convert-bad");
    assert!(adm::convert_checkpoint(
        &fixtures().join(name).join("model.pt"),
        &config("updown_legacy_sigma"),
        &other
    )
    .is_err());
    assert!(!other.join("model.safetensors").exists());
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(other).ok();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let cond = load("class_cond", "model.safetensors", DType::F32);
    let c = case("class_cond");
    let e = cond.forward(&c.x, &c.t).unwrap_err().to_string();
    assert!(e.contains("class-conditional"), "{e}");
    let bad = Tensor::new(&[3i64, 10, 0], &Device::Cpu).unwrap();
    let e = cond
        .forward_with_labels(&c.x, &c.t, Some(&bad))
        .unwrap_err()
        .to_string();
    assert!(e.contains("class label 10"), "{e}");

    let m = load("updown_legacy_sigma", "model.safetensors", DType::F32);
    let c = case("updown_legacy_sigma");
    let y = Tensor::new(&[0i64, 1, 2], &Device::Cpu).unwrap();
    let e = m
        .forward_with_labels(&c.x, &c.t, Some(&y))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unconditional"), "{e}");
    let x1 = c.x.narrow(1, 0, 1).unwrap();
    let e = m.forward(&x1, &c.t).unwrap_err().to_string();
    assert!(e.contains("3 channel"), "{e}");
    let odd = Tensor::zeros((1, 3, 15, 16), DType::F32, &Device::Cpu).unwrap();
    let e = m
        .forward(&odd, &c.t.narrow(0, 0, 1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of 2"), "{e}");
    let e = m
        .forward(&c.x, &c.t.narrow(0, 0, 2).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 timesteps for a batch of 3"), "{e}");
}

#[test]
fn config_defaults_presets_and_errors() {
    let ffhq = AdmConfig::preset("adm-ffhq-256").unwrap();
    assert_eq!(
        ffhq.level_channels().unwrap(),
        vec![128, 128, 256, 256, 512, 512]
    );
    assert_eq!(ffhq.attention_ds().unwrap(), vec![16]);
    assert_eq!(ffhq.out_channels(), 6);
    assert_eq!(ffhq.heads(512, true), 8);
    let inet = AdmConfig::preset("adm-imagenet-256-uncond").unwrap();
    assert_eq!(inet.attention_ds().unwrap(), vec![8, 16, 32]);
    assert_eq!(
        inet.level_channels().unwrap(),
        vec![256, 256, 512, 512, 1024, 1024]
    );

    // guided-diffusion defaults; the 512 default has a fractional first multiplier.
    let p = Path::new("inline");
    let d = AdmConfig::from_json_str("{}", p).unwrap();
    assert_eq!(
        (
            d.image_size,
            d.num_channels,
            d.num_res_blocks,
            d.num_heads,
            d.num_head_channels
        ),
        (64, 128, 2, 4, -1)
    );
    assert_eq!(d.attention_ds().unwrap(), vec![4, 8]);
    assert_eq!(d.level_channels().unwrap(), vec![128, 256, 384, 512]);
    assert!(d.use_scale_shift_norm && !d.resblock_updown && !d.learn_sigma);
    let big = AdmConfig::from_json_str(r#"{"image_size": 512, "num_channels": 256}"#, p).unwrap();
    assert_eq!(
        big.level_channels().unwrap(),
        vec![128, 256, 256, 512, 512, 1024, 1024]
    );
    let single = AdmConfig::from_json_str(
        r#"{"image_size": 256, "attention_resolutions": 16, "channel_mult": "1,2"}"#,
        p,
    )
    .unwrap();
    assert_eq!(single.attention_ds().unwrap(), vec![16]);
    assert_eq!(single.channel_mult().unwrap(), vec![1.0, 2.0]);

    // Round trip through the written form.
    let back = AdmConfig::from_json_str(&ffhq.to_json_string().unwrap(), p).unwrap();
    assert_eq!(
        back.to_json_string().unwrap(),
        ffhq.to_json_string().unwrap()
    );
    assert_eq!(
        back.level_channels().unwrap(),
        ffhq.level_channels().unwrap()
    );

    let err = |s: &str| AdmConfig::from_json_str(s, p).unwrap_err().to_string();
    assert!(err(r#"{"_class_name": "UNet2DModel"}"#).contains("not an ADM config"));
    assert!(err(r#"{"image_size": 100}"#).contains("image_size 100"));
    assert!(err(r#"{"num_channels": 48, "channel_mult": [1]}"#).contains("multiple of 32"));
    assert!(err(r#"{"channel_mult": "1,x"}"#).contains("channel_mult"));
    assert!(err(r#"{"num_head_channels": 0}"#).contains("num_head_channels"));
    assert!(err(r#"{"num_head_channels": 48}"#).contains("heads"));
    assert!(err(r#"{"attention_resolutions": "0"}"#).contains("attention_resolutions"));
    assert!(err(r#"{"image_size": "big"}"#).contains("invalid model config"));
    assert!(AdmConfig::preset("adm-celeba")
        .unwrap_err()
        .to_string()
        .contains("adm-ffhq-256"));
}

/// Forward time of the full-size FFHQ-256 ADM (random weights, batch 1, f32, CPU).
/// Slow: run with `cargo test -p genprior-nn --test adm_parity -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_ffhq_256_forward() {
    let cfg = AdmConfig::preset("adm-ffhq-256").unwrap();
    let flops = adm::flops::forward_flops(&cfg, 256, 256).unwrap();
    let m = adm::random_adm(cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 256, 256), &Device::Cpu).unwrap();
    let t = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    let y = m.forward(&x, &t).unwrap(); // warm-up
    assert_eq!(y.dims(), &[1, 6, 256, 256]);
    genprior_nn::check_finite(&y, "ADM output").unwrap();
    let n = 3;
    let start = std::time::Instant::now();
    for _ in 0..n {
        m.forward(&x, &t).unwrap();
    }
    let s = start.elapsed().as_secs_f64() / n as f64;
    eprintln!(
        "adm-ffhq-256 forward (batch 1, f32, {} threads): {s:.3} s, {:.1} GFLOP/s",
        candle_core::utils::get_num_threads(),
        flops / s / 1e9
    );
}
