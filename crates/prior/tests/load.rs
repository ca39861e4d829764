//! `load_prior` on the committed fixture models: the network through the `ScoreModel`
//! seam gives the reference outputs and exactly what genprior-nn's own loaders give, the
//! description and the schedule are the model's, and bad specs are clear errors.

mod common;

use candle_core::{DType, Device};
use common::*;
use genprior_diffusion::{Schedule, VarianceType};
use genprior_nn::AdmConfig;
use genprior_prior::{ModelSource, ModelSpec, ScheduleSource};

const UNETS: [&str; 5] = [
    "positional_null_heads",
    "scale_shift_heads",
    "scale_shift_mid_nonorm",
    "fourier_no_mid_attn",
    "rect_no_mid_gelu",
];

fn meta(name: &str) -> serde_json::Value {
    let s = std::fs::read_to_string(unet(name).join("meta.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn diffusers_fixtures_match_reference_and_nn_loader() {
    for name in UNETS {
        let (x, t, want) = case(&unet(name));
        for (sub, weights, format) in [
            (
                "model",
                "diffusion_pytorch_model.safetensors",
                "safetensors",
            ),
            ("bin", "diffusion_pytorch_model.bin", "pytorch pickle"),
        ] {
            let dir = unet(name).join(sub);
            let p = load(&local(&dir));
            let got = p.net.forward(&x, &t).unwrap();
            let err = max_abs(&got, &want);
            assert!(err <= 1e-4, "{name}/{sub}: max abs error {err}");
            let direct = genprior_nn::load_unet2d(
                &dir.join("config.json"),
                &dir.join(weights),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
            .forward(&x, &t)
            .unwrap();
            assert!(
                bit_equal(&got, &direct),
                "{name}/{sub}: differs from load_unet2d"
            );

            let m = meta(name);
            assert_eq!(
                p.info.num_parameters as u64,
                m["num_parameters"].as_u64().unwrap()
            );
            assert_eq!(p.info.architecture, "diffusers UNet2DModel");
            assert_eq!(p.info.format, format, "{name}/{sub}");
            assert_eq!(p.info.source, format!("local folder {}", dir.display()));
            assert_eq!(p.info.config_path, dir.join("config.json"));
            assert_eq!(p.info.weights_path, dir.join(weights));
            let cfg: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(p.info.config, cfg);
            assert_eq!(
                p.net.in_channels(),
                m["config"]["in_channels"].as_u64().unwrap() as usize
            );
            assert_eq!(
                p.net.out_channels(),
                m["config"]["out_channels"].as_u64().unwrap() as usize
            );
            assert_eq!(p.dtype, DType::F32);
        }
    }
}

#[test]
fn diffusers_schedule_is_the_models_or_ddpm_defaults() {
    let with = unet("positional_null_heads").join("model");
    let p = load(&local(&with));
    let file = with.join("scheduler_config.json");
    assert_eq!(p.schedule_source, ScheduleSource::File(file.clone()));
    assert!(!p.uses_default_schedule());
    assert_eq!(p.scheduler_config(), Some(file.as_path()));
    let want = Schedule::from_file(&file).unwrap();
    assert_eq!(p.schedule.config(), want.config());
    assert_eq!(p.schedule.betas(), want.betas());

    // No scheduler_config.json: diffusers' DDPMScheduler defaults, and the prior says so.
    let without = unet("scale_shift_heads").join("model");
    assert!(!without.join("scheduler_config.json").exists());
    let p = load(&local(&without));
    assert_eq!(p.schedule_source, ScheduleSource::DdpmDefaults);
    assert!(p.uses_default_schedule());
    assert_eq!(p.scheduler_config(), None);
    assert_eq!(p.schedule.config(), Schedule::ddpm_default().config());

    // A scheduler config in the spec replaces the model's.
    let mut spec = local(&without);
    let sched = temp_dir("sched").join("s.json");
    std::fs::write(
        &sched,
        r#"{"num_train_timesteps": 500, "beta_schedule": "scaled_linear"}"#,
    )
    .unwrap();
    spec.scheduler_config = Some(sched.clone());
    let p = load(&spec);
    assert_eq!(p.schedule_source, ScheduleSource::File(sched.clone()));
    assert_eq!(p.schedule.num_train_timesteps(), 500);
    // ... and a bad one is an error naming the file and the field.
    std::fs::write(&sched, r#"{"beta_schedule": "cosine"}"#).unwrap();
    assert_contains(
        &load_err(&spec),
        &["scheduler config", "s.json", "beta_schedule", "cosine"],
    );
}

const ADMS: [&str; 2] = ["updown_legacy_sigma", "conv_updown_new_order"];

fn adm_direct(name: &str, file: &str) -> genprior_nn::AdmUNet {
    let cfg = AdmConfig::from_file(&adm(name).join("config.json")).unwrap();
    genprior_nn::adm::load_adm(cfg, &adm(name).join(file), DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn adm_fixtures_match_reference_and_nn_loader() {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("adm/summary.json")).unwrap(),
    )
    .unwrap();
    for name in ADMS {
        let (x, t, want) = case(&adm(name));
        let cfg = AdmConfig::from_file(&adm(name).join("config.json")).unwrap();
        for (spec, file, source) in [
            (
                local(adm(name).join("model.pt")),
                "model.pt",
                format!("file {}", adm(name).join("model.pt").display()),
            ),
            (
                local(adm(name).join("model.safetensors")),
                "model.safetensors",
                format!("file {}", adm(name).join("model.safetensors").display()),
            ),
            (
                local(adm(name)),
                "model.safetensors",
                format!("local folder {}", adm(name).display()),
            ),
        ] {
            let p = load(&spec);
            let got = p.net.forward(&x, &t).unwrap();
            let err = max_abs(&got, &want);
            assert!(err <= 1e-4, "{name}/{file}: max abs error {err}");
            let direct = adm_direct(name, file).forward(&x, &t).unwrap();
            assert!(
                bit_equal(&got, &direct),
                "{name}/{file}: differs from load_adm"
            );

            assert_eq!(p.info.source, source);
            assert_eq!(p.info.architecture, "guided-diffusion ADM UNet");
            assert_eq!(p.info.config_path, adm(name).join("config.json"));
            assert_eq!(p.info.weights_path, adm(name).join(file));
            assert_eq!(
                p.info.num_parameters as u64,
                summary["fixtures"][name]["num_parameters"]
                    .as_u64()
                    .unwrap()
            );
            let want_cfg: serde_json::Value =
                serde_json::from_str(&cfg.to_json_string().unwrap()).unwrap();
            assert_eq!(p.info.config, want_cfg);
            assert_eq!(p.net.sample_size(), Some(cfg.image_size));
            assert_eq!(p.net.out_channels(), cfg.out_channels());

            // The schedule of guided-diffusion's diffusion arguments, in memory.
            assert_eq!(p.schedule_source, ScheduleSource::AdmConfig);
            assert_eq!(p.schedule.num_train_timesteps(), 1000);
            let want_var = if cfg.learn_sigma {
                VarianceType::LearnedRange
            } else {
                VarianceType::FixedSmall
            };
            assert_eq!(p.schedule.variance_type(), want_var, "{name}");
            assert!(p.schedule.clip_sample());
            assert_eq!(p.schedule.betas(), Schedule::ddpm_default().betas());
        }
    }
}

#[test]
fn class_conditional_adm_loads_and_refuses_unlabelled_calls() {
    let p = load(&local(adm("class_cond").join("model.pt")));
    assert_eq!(p.info.num_parameters, 356102);
    let (x, t, _) = case(&adm("class_cond"));
    // The seam carries no labels: a clear error, not a panic.
    assert!(p.net.forward(&x, &t).is_err());
}

#[test]
fn lone_adm_checkpoint_needs_a_preset_and_a_wrong_one_is_named() {
    let dir = temp_dir("lone");
    let pt = link(
        &adm("updown_legacy_sigma").join("model.pt"),
        &dir,
        "ckpt.pt",
    );
    assert_contains(
        &load_err(&local(&pt)),
        &[
            "ckpt.pt",
            "ADM checkpoint without a config",
            "--preset",
            "adm-ffhq-256",
        ],
    );
    let mut spec = local(&pt);
    spec.preset = Some("adm-nope".into());
    assert_contains(&load_err(&spec), &["preset", "adm-nope", "adm-ffhq-256"]);
    spec.preset = Some("adm-ffhq-256".into());
    // The preset's shapes are not the checkpoint's: a tensor is named.
    assert_contains(&load_err(&spec), &["ckpt.pt", "tensor"]);
}

#[test]
fn preset_detection_by_tensor_names_still_works() {
    // A checkpoint with exactly the FFHQ preset's tensor names (tiny shapes, to keep the
    // file small), no config beside it and no --preset: the preset is detected from the
    // names, so loading gets as far as checking shapes against the preset.
    let cfg = AdmConfig::preset("adm-ffhq-256").unwrap();
    let expected = genprior_nn::adm::plan::expected_tensors(&cfg).unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = expected
        .iter()
        .map(|(n, _)| {
            (
                n.clone(),
                candle_core::Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let dir = temp_dir("detect");
    let file = dir.join("ffhq.safetensors");
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let e = load_err(&local(&file));
    assert_contains(
        &e,
        &["ffhq.safetensors", "has shape [1], but the config needs"],
    );
    assert!(!e.contains("without a config"), "{e}");

    // One tensor fewer: no preset matches, so a config is asked for.
    let mut fewer = tensors.clone();
    let middle = expected
        .iter()
        .find(|(n, _)| n.starts_with("middle_block."))
        .unwrap();
    fewer.remove(&middle.0);
    candle_core::safetensors::save(&fewer, &file).unwrap();
    assert_contains(&load_err(&local(&file)), &["without a config", "--preset"]);
}

#[test]
fn diffusers_config_with_adm_weights_is_an_error() {
    // A diffusers folder whose weight file is an ADM checkpoint.
    let dir = temp_dir("mixed");
    link(
        &unet("positional_null_heads").join("model/config.json"),
        &dir,
        "config.json",
    );
    link(
        &adm("updown_legacy_sigma").join("model.safetensors"),
        &dir,
        "diffusion_pytorch_model.safetensors",
    );
    assert_contains(
        &load_err(&local(&dir)),
        &[
            "guided-diffusion ADM checkpoint",
            "is a diffusers config",
            "--preset",
        ],
    );
    // The same with the diffusers config given explicitly for a .pt file.
    let mut spec = local(adm("updown_legacy_sigma").join("model.pt"));
    spec.config = Some(unet("positional_null_heads").join("model/config.json"));
    assert_contains(&load_err(&spec), &["model.pt", "is a diffusers config"]);
}

#[test]
fn explicit_diffusers_config_for_a_weight_file() {
    let d = unet("scale_shift_heads");
    let mut spec = local(d.join("model/diffusion_pytorch_model.safetensors"));
    spec.config = Some(d.join("bin/config.json"));
    let p = load(&spec);
    let (x, t, want) = case(&d);
    assert!(max_abs(&p.net.forward(&x, &t).unwrap(), &want) <= 1e-4);
    assert_eq!(p.info.config_path, d.join("bin/config.json"));
}

#[test]
fn missing_and_non_model_paths_are_clear_errors() {
    let tmp = temp_dir("paths");
    assert_contains(
        &load_err(&local(tmp.join("nope"))),
        &["nope", "no such folder or file"],
    );
    assert_contains(
        &load_err(&local(&tmp)),
        &["not a model folder", "config.json"],
    );
    // A diffusers safetensors file alone is not an ADM checkpoint.
    let f = unet("positional_null_heads").join("model/diffusion_pytorch_model.safetensors");
    assert_contains(
        &load_err(&local(&f)),
        &["not a guided-diffusion ADM checkpoint", "from a folder"],
    );
    // An ADM folder without its weights.
    let dir = temp_dir("admnoweights");
    std::fs::copy(
        adm("updown_legacy_sigma").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    assert_contains(
        &load_err(&local(&dir)),
        &["ADM folder without model.safetensors or model.pt"],
    );
    // A missing explicit config.
    let mut spec = local(adm("updown_legacy_sigma").join("model.pt"));
    spec.config = Some(tmp.join("absent.yaml"));
    assert_contains(&load_err(&spec), &["reading", "absent.yaml"]);
}

#[test]
fn random_weights_of_a_preset() {
    let spec = ModelSpec::new(ModelSource::RandomWeights {
        arch: "ddpm-cifar10-32".into(),
        seed: 0,
    });
    let p = load(&spec);
    assert_eq!(p.info.source, "ddpm-cifar10-32 with random weights");
    assert_eq!(p.net.sample_size(), Some(32));
    assert!((35_000_000..36_500_000).contains(&p.info.num_parameters));
    assert!(p.uses_default_schedule());

    let spec = ModelSpec::new(ModelSource::RandomWeights {
        arch: "ddpm-1024".into(),
        seed: 0,
    });
    assert_contains(
        &load_err(&spec),
        &[
            "--random-weights",
            "ddpm-1024",
            "ddpm-cifar10-32",
            "ddpm-256",
        ],
    );
}

#[test]
fn the_bundled_model_is_found_and_loads() {
    if std::env::var_os("GENPRIOR_DEFAULT_MODEL").is_some() {
        eprintln!("GENPRIOR_DEFAULT_MODEL is set: skipping the search-order check");
        return;
    }
    let repo_models = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(genprior_prior::DEFAULT_MODEL_NAME);
    let dir = genprior_prior::default_model_dir().unwrap();
    assert_eq!(
        dir.canonicalize().unwrap(),
        repo_models.canonicalize().unwrap()
    );
    let p = load(&ModelSpec::default());
    assert_eq!(p.info.source, format!("local folder {}", dir.display()));
    assert_eq!(p.net.in_channels(), 1);
    assert!(!p.uses_default_schedule());
}

#[test]
fn from_arg_tells_paths_from_hub_ids() {
    let d = unet("positional_null_heads").join("model");
    let s = d.display().to_string();
    assert_eq!(ModelSource::from_arg(&s, Some("v1")), ModelSource::Local(d));
    assert_eq!(
        ModelSource::from_arg("google/ddpm-cifar10-32", Some("v1")),
        ModelSource::Hub {
            repo: "google/ddpm-cifar10-32".into(),
            revision: Some("v1".into())
        }
    );
    assert_eq!(
        ModelSource::from_arg("a/b/c", None),
        ModelSource::Local("a/b/c".into())
    );
    assert_contains(
        &load_err(&ModelSpec::new(ModelSource::from_arg("a/b/c", None))),
        &["a/b/c: no such folder or file, and not a Hub id of the form org/name"],
    );
}
