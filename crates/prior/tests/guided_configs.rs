//! guided-diffusion checkpoints described by the files their users already hold: the
//! DPS / DPnP `model_config.yaml` and a JSON with guided-diffusion's argument names,
//! beside the checkpoint or given explicitly. Each must load to the same config and
//! the same outputs as the fixture's genprior config.json, and bad configs must be
//! clear errors naming the key or line.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use genprior_nn::AdmConfig;
use genprior_prior::{load_adm_config, ModelSpec, Prior, ScheduleSource};
use serde_json::Value;

/// DPS's configs/model_config.yaml (FFHQ-256), as the DPS repo ships it.
const DPS_FFHQ: &str = "# Defaults for image training.

image_size: 256
num_channels: 128
num_res_blocks: 1
channel_mult: \"\"
learn_sigma: True
class_cond: False
use_checkpoint: False
attention_resolutions: 16
num_heads: 4
num_head_channels: 64
num_heads_upsample: -1
use_scale_shift_norm: True
dropout: 0.0
resblock_updown: True
use_fp16: False
use_new_attention_order: False

model_path: models/ffhq_10m.pt
";

/// DPS's configs/imagenet_model_config.yaml.
const DPS_IMAGENET: &str = "# Defaults for image training.

image_size: 256
num_channels: 256
num_res_blocks: 2
channel_mult: \"\"
learn_sigma: True
class_cond: False
use_checkpoint: False
attention_resolutions: \"32,16,8\"
num_heads: 4
num_head_channels: 64
num_heads_upsample: -1
use_scale_shift_norm: True
dropout: 0.0
resblock_updown: True
use_fp16: False
use_new_attention_order: False

model_path: models/imagenet256.pt
";

/// The updown_legacy_sigma fixture in DPS's YAML style (attention as a bare number).
const LEGACY_YAML: &str = "# tiny ADM, guided-diffusion names
image_size: 16
num_channels: 32
num_res_blocks: 1
channel_mult: \"1,1\"
learn_sigma: True
class_cond: False
use_checkpoint: False
attention_resolutions: 8
num_heads: 4
num_head_channels: 16
num_heads_upsample: -1
use_scale_shift_norm: True
dropout: 0.0
resblock_updown: True
use_fp16: False
use_new_attention_order: False

model_path: models/tiny_legacy.pt
";

/// The conv_updown_new_order fixture as a guided-diffusion argument dump (JSON, no
/// `_class_name`, training options that are not model arguments included).
const NEW_ORDER_JSON: &str = r#"{
  "image_size": 16, "in_channels": 1, "num_channels": 32, "num_res_blocks": 2,
  "channel_mult": "1,1", "attention_resolutions": "16,8", "num_heads": 2,
  "num_head_channels": -1, "num_heads_upsample": 1, "use_scale_shift_norm": false,
  "resblock_updown": false, "use_new_attention_order": true, "learn_sigma": false,
  "class_cond": false, "dropout": 0.0, "use_fp16": false, "use_checkpoint": false,
  "diffusion_steps": 1000, "noise_schedule": "linear", "timestep_respacing": "",
  "batch_size": 8, "lr": 0.0001, "data_dir": "/data/ffhq", "model_path": "x.pt"
}"#;

/// A config as comparable JSON: genprior's resolved form, with attention resolutions
/// as the list of downsampling factors (a bare `16` and a string `"16"` mean the same).
fn normalized(cfg: &AdmConfig) -> Value {
    let mut v: Value = serde_json::from_str(&cfg.to_json_string().unwrap()).unwrap();
    v["attention_resolutions"] = serde_json::json!(cfg.attention_ds().unwrap());
    v
}

fn prior_config(p: &Prior) -> AdmConfig {
    AdmConfig::from_json_str(&p.info.config.to_string(), Path::new("info")).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Load `spec` and check it is the fixture `name` loaded the existing way (its
/// config.json beside model.pt): same config, bit-identical outputs, same schedule.
fn assert_same_as_fixture(spec: &ModelSpec, name: &str, config_path: &Path) {
    let p = load(spec);
    let reference = load(&local(adm(name).join("model.pt")));
    assert_eq!(
        normalized(&prior_config(&p)),
        normalized(&prior_config(&reference)),
        "{name}: config"
    );
    assert_eq!(p.info.config_path, config_path);
    assert_eq!(p.info.num_parameters, reference.info.num_parameters);
    let (x, t, want) = case(&adm(name));
    let got = p.net.forward(&x, &t).unwrap();
    assert!(
        bit_equal(&got, &reference.net.forward(&x, &t).unwrap()),
        "{name}: outputs"
    );
    assert!(max_abs(&got, &want) <= 1e-4, "{name}: reference outputs");
    assert_eq!(p.schedule_source, ScheduleSource::AdmConfig);
    assert_eq!(p.schedule.config(), reference.schedule.config());
    assert_eq!(p.schedule.betas(), reference.schedule.betas());
}

#[test]
fn dps_model_configs_read_as_the_presets() {
    let dir = temp_dir("dps");
    let ffhq = load_adm_config(&write(&dir, "model_config.yaml", DPS_FFHQ)).unwrap();
    assert_eq!(
        normalized(&ffhq),
        normalized(&AdmConfig::preset("adm-ffhq-256").unwrap())
    );
    assert_eq!(
        ffhq.level_channels().unwrap(),
        [128, 128, 256, 256, 512, 512]
    );
    let imagenet =
        load_adm_config(&write(&dir, "imagenet_model_config.yaml", DPS_IMAGENET)).unwrap();
    let mut preset = AdmConfig::preset("adm-imagenet-256-uncond").unwrap();
    assert!(preset.use_fp16 && !imagenet.use_fp16); // the one difference, of no effect here
    preset.use_fp16 = false;
    assert_eq!(normalized(&imagenet), normalized(&preset));
    assert_eq!(imagenet.attention_ds().unwrap(), [8, 16, 32]);
}

#[test]
fn model_config_yaml_beside_the_checkpoint() {
    let dir = temp_dir("yaml-beside");
    let pt = link(
        &adm("updown_legacy_sigma").join("model.pt"),
        &dir,
        "ckpt.pt",
    );
    let yaml = write(&dir, "model_config.yaml", LEGACY_YAML);
    assert_same_as_fixture(&local(&pt), "updown_legacy_sigma", &yaml);
}

#[test]
fn model_config_yaml_given_explicitly() {
    let cfg_dir = temp_dir("yaml-explicit-cfg");
    let yaml = write(&cfg_dir, "ffhq_tiny.yaml", LEGACY_YAML);
    let weights_dir = temp_dir("yaml-explicit-w");
    let pt = link(
        &adm("updown_legacy_sigma").join("model.pt"),
        &weights_dir,
        "ckpt.pt",
    );
    // Without the config the checkpoint is not loadable ...
    assert_contains(&load_err(&local(&pt)), &["without a config"]);
    // ... with it, it is the fixture.
    let mut spec = local(&pt);
    spec.config = Some(yaml.clone());
    assert_same_as_fixture(&spec, "updown_legacy_sigma", &yaml);
}

#[test]
fn guided_diffusion_json_beside_and_explicit() {
    let dir = temp_dir("json-beside");
    let st = link(
        &adm("conv_updown_new_order").join("model.safetensors"),
        &dir,
        "weights.safetensors",
    );
    let json = write(&dir, "config.json", NEW_ORDER_JSON);
    assert_same_as_fixture(&local(&st), "conv_updown_new_order", &json);

    let other = temp_dir("json-explicit");
    let pt = link(
        &adm("conv_updown_new_order").join("model.pt"),
        &other,
        "m.pt",
    );
    let mut spec = local(&pt);
    spec.config = Some(json.clone());
    assert_same_as_fixture(&spec, "conv_updown_new_order", &json);

    // The same JSON as the config.json of an ADM folder.
    let folder = temp_dir("json-folder");
    link(
        &adm("conv_updown_new_order").join("model.pt"),
        &folder,
        "model.pt",
    );
    let json2 = write(&folder, "config.json", NEW_ORDER_JSON);
    assert_same_as_fixture(&local(&folder), "conv_updown_new_order", &json2);
}

#[test]
fn folder_with_model_config_yaml_finds_the_checkpoint_by_model_path() {
    let dir = temp_dir("yaml-folder");
    link(
        &adm("updown_legacy_sigma").join("model.pt"),
        &dir,
        "tiny_legacy.pt",
    );
    let yaml = write(&dir, "model_config.yaml", LEGACY_YAML);
    assert_same_as_fixture(&local(&dir), "updown_legacy_sigma", &yaml);
    // A folder with a model_config.yaml but none of the checkpoint names it looks for.
    let empty = temp_dir("yaml-folder-empty");
    write(&empty, "model_config.yaml", LEGACY_YAML);
    assert_contains(
        &load_err(&local(&empty)),
        &["ADM folder without model.safetensors or model.pt"],
    );
}

#[test]
fn a_diffusers_config_beside_a_checkpoint_is_not_taken_for_its_config() {
    let dir = temp_dir("mixed-beside");
    let pt = link(
        &adm("updown_legacy_sigma").join("model.pt"),
        &dir,
        "ckpt.pt",
    );
    link(
        &unet("positional_null_heads").join("model/config.json"),
        &dir,
        "config.json",
    );
    let yaml = write(&dir, "model_config.yaml", LEGACY_YAML);
    assert_same_as_fixture(&local(&pt), "updown_legacy_sigma", &yaml);
}

/// The error of loading the updown_legacy_sigma checkpoint with `yaml` as its config.
fn yaml_error(tag: &str, yaml: &str) -> String {
    let dir = temp_dir(tag);
    let mut spec = local(adm("updown_legacy_sigma").join("model.pt"));
    spec.config = Some(write(&dir, "model_config.yaml", yaml));
    load_err(&spec)
}

#[test]
fn nested_yaml_is_a_clear_error() {
    let e = yaml_error("nested", "model:\n  image_size: 16\n  num_channels: 32\n");
    assert_contains(
        &e,
        &[
            "model_config.yaml line 2",
            "nested YAML structures are not supported",
        ],
    );
    let e = yaml_error("flowlist", &LEGACY_YAML.replace("\"1,1\"", "[1, 1]"));
    assert_contains(&e, &["line 5", "channel_mult", "nested", "\"1,1,2,2,4,4\""]);
    let e = yaml_error("items", "num_channels: 32\nchannel_mult:\n  - 1\n  - 1\n");
    assert_contains(&e, &["line 3", "nested"]);
}

#[test]
fn unsupported_values_name_the_key() {
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "learn_sigma: True",
            "learn_sigma: maybe",
            &["`learn_sigma` = \"maybe\"", "True or False"],
        ),
        (
            "num_channels: 32",
            "num_channels: -32",
            &["`num_channels` = -32", "whole number"],
        ),
        (
            "num_heads: 4",
            "num_heads: four",
            &["`num_heads` = \"four\""],
        ),
        (
            "attention_resolutions: 8",
            "attention_resolutions: \"8,x\"",
            &["attention_resolutions", "8,x"],
        ),
        (
            "channel_mult: \"1,1\"",
            "channel_mult: \"\"",
            &["channel_mult", "image_size 16"],
        ),
        (
            "num_head_channels: 16",
            "num_head_channels: 0",
            &["num_head_channels", "0"],
        ),
    ];
    for (i, (from, to, needles)) in cases.iter().enumerate() {
        assert!(LEGACY_YAML.contains(from), "{from}");
        let e = yaml_error(&format!("value{i}"), &LEGACY_YAML.replace(from, to));
        assert_contains(&e, needles);
    }
    // The same checks for a JSON with guided-diffusion's names.
    let dir = temp_dir("jsonvalue");
    let mut spec = local(adm("conv_updown_new_order").join("model.pt"));
    spec.config = Some(write(
        &dir,
        "args.json",
        &NEW_ORDER_JSON.replace("\"learn_sigma\": false", "\"learn_sigma\": \"False\""),
    ));
    assert_contains(
        &load_err(&spec),
        &["args.json", "`learn_sigma` = \"False\"", "True or False"],
    );
}

#[test]
fn a_config_that_does_not_match_the_weights_is_a_clear_error() {
    // Twice the channels: the first tensor's shape is wrong, and named.
    let e = yaml_error(
        "wide",
        &LEGACY_YAML.replace("num_channels: 32", "num_channels: 64"),
    );
    assert_contains(&e, &["model.pt", "tensor", "shape"]);
    // Two res blocks per level where the checkpoint has one.
    let e = yaml_error(
        "deep",
        &LEGACY_YAML.replace("num_res_blocks: 1", "num_res_blocks: 2"),
    );
    assert_contains(&e, &["model.pt", "tensor"]);
}

#[test]
fn explicit_config_errors() {
    let dir = temp_dir("explicit-errors");
    let pt = adm("updown_legacy_sigma").join("model.pt");
    let with = |config: PathBuf| {
        let mut s = local(&pt);
        s.config = Some(config);
        s
    };
    // Missing file.
    assert_contains(
        &load_err(&with(dir.join("nope.yaml"))),
        &["reading", "nope.yaml"],
    );
    // Neither kind of model config.
    assert_contains(
        &load_err(&with(write(&dir, "what.json", r#"{"sample_size": 16}"#))),
        &["what.json", "not a model config genprior knows"],
    );
    // Not JSON.
    assert_contains(
        &load_err(&with(write(&dir, "broken.json", "{ not json"))),
        &["broken.json", "not valid JSON"],
    );
    // A preset and a config at once.
    let mut spec = with(write(&dir, "model_config.yaml", LEGACY_YAML));
    spec.preset = Some("adm-ffhq-256".into());
    assert_contains(
        &load_err(&spec),
        &["--preset adm-ffhq-256", "model_config.yaml", "give one"],
    );
    // A diffusers config read as a guided-diffusion one.
    let e = load_adm_config(&unet("positional_null_heads").join("model/config.json"))
        .unwrap_err()
        .to_string();
    assert_contains(&e, &["diffusers UNet2DModel config"]);
}
