//! Architectures to train: two built-in diffusers `UNet2DModel` configs (`small`, the bundled
//! MNIST prior's recipe; `base`, a wider and deeper one) or a user's `config.json`.

use std::path::Path;

use genprior_nn::UNet2DConfig;
use serde_json::{json, Value};

use crate::error::{config, io_err, Result};

/// Names accepted by [`arch_config`] besides a path to a `config.json`.
pub const ARCHS: [&str; 2] = ["small", "base"];

fn builtin(name: &str) -> Option<Value> {
    let (channels, layers, groups, head_dim, down, up): (
        &[usize],
        usize,
        usize,
        usize,
        &[&str],
        &[&str],
    ) = match name {
        // The recipe of models/mnist-ddpm-32 (scripts/train_mnist_prior.py): 1.1 M
        // parameters at 1 channel, attention only at the lowest resolution.
        "small" => (
            &[32, 64, 64],
            1,
            8,
            8,
            &["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
            &["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        ),
        // Twice the width, two resnets per level, attention at the two lowest resolutions.
        "base" => (
            &[64, 128, 128],
            2,
            16,
            32,
            &["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            &["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        ),
        _ => return None,
    };
    Some(json!({
        "_class_name": "UNet2DModel",
        "act_fn": "silu",
        "add_attention": true,
        "attention_head_dim": head_dim,
        "attn_norm_num_groups": null,
        "block_out_channels": channels,
        "center_input_sample": false,
        "class_embed_type": null,
        "down_block_types": down,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "dropout": 0.0,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "layers_per_block": layers,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2D",
        "norm_eps": 1e-5,
        "norm_num_groups": groups,
        "num_class_embeds": null,
        "num_train_timesteps": null,
        "resnet_time_scale_shift": "default",
        "time_embedding_dim": null,
        "time_embedding_type": "positional",
        "up_block_types": up,
        "upsample_type": "conv",
    }))
}

/// The `config.json` value and parsed config of `arch` (`small`, `base` or a path to a
/// diffusers `config.json`) for `channels`-channel images of `size`×`size`. A built-in gets
/// the size and channel count filled in; a file must already agree with them (or leave
/// `sample_size` out, which is then filled in).
pub fn arch_config(arch: &str, size: usize, channels: usize) -> Result<(Value, UNet2DConfig)> {
    let mut value = match builtin(arch) {
        Some(v) => {
            let mut v = v;
            v["in_channels"] = json!(channels);
            v["out_channels"] = json!(channels);
            v["sample_size"] = json!(size);
            v
        }
        None => {
            let path = Path::new(arch);
            if !path.is_file() {
                return config(format!(
                    "--arch {arch:?}: expected small, base or the path of a UNet2DModel config.json (no such file)"
                ));
            }
            let text = std::fs::read_to_string(path).map_err(io_err(path))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                crate::TrainError::Config(format!("--arch {arch}: not valid JSON ({e})"))
            })?;
            if !v.is_object() {
                return config(format!("--arch {arch}: expected a JSON object"));
            }
            v
        }
    };
    let field =
        |v: &Value, k: &str, default: u64| v.get(k).and_then(Value::as_u64).unwrap_or(default);
    for key in ["in_channels", "out_channels"] {
        let got = field(&value, key, 3) as usize;
        if got != channels {
            return config(format!(
                "--arch {arch}: {key} is {got} but --channels is {channels}"
            ));
        }
    }
    match value.get("sample_size") {
        None | Some(Value::Null) => value["sample_size"] = json!(size),
        Some(v) if v.as_u64() == Some(size as u64) => {}
        Some(v) => {
            return config(format!(
                "--arch {arch}: sample_size is {v} but --size is {size}"
            ))
        }
    }
    if value.get("_class_name").is_none() {
        value["_class_name"] = json!("UNet2DModel");
    }
    let cfg = UNet2DConfig::from_json_str(&value.to_string(), Path::new(arch))?;
    cfg.validate()?;
    let levels = cfg.block_out_channels.len();
    let factor = 1usize << (levels.saturating_sub(1));
    if size == 0 || !size.is_multiple_of(factor) {
        return config(format!(
            "--size {size}: this architecture has {levels} resolution levels, so the size must be a positive multiple of {factor}"
        ));
    }
    if cfg.time_embedding()? != genprior_nn::unet2d::TimeEmbedding::Positional {
        return config(format!(
            "--arch {arch}: training supports the positional time embedding only (time_embedding_type = {:?})",
            cfg.time_embedding_type
        ));
    }
    if cfg.dropout != 0.0 {
        return config(format!(
            "--arch {arch}: dropout {} is not supported in training (use 0)",
            cfg.dropout
        ));
    }
    Ok((value, cfg))
}
