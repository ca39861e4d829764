//! diffusers `UNet2DModel` `config.json`: plain data with diffusers' defaults, validated once.

use std::path::Path;

use serde::Deserialize;

use crate::error::{NnError, Result};

fn default_in() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_positional() -> String {
    "positional".into()
}
fn default_down() -> Vec<String> {
    [
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_up() -> Vec<String> {
    [
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn default_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn default_layers() -> usize {
    2
}
fn default_one_f() -> f64 {
    1.0
}
fn default_one() -> usize {
    1
}
fn default_conv() -> String {
    "conv".into()
}
fn default_silu() -> String {
    "silu".into()
}
fn default_head_dim() -> Option<usize> {
    Some(8)
}
fn default_groups() -> Option<usize> {
    Some(32)
}
fn default_eps() -> f64 {
    1e-5
}
fn default_shift() -> String {
    "default".into()
}

/// `sample_size` is an int or an `[h, w]` pair in diffusers configs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

/// The fields of diffusers' `UNet2DModel` config. Unknown keys are ignored; missing
/// keys take diffusers' defaults (note: a *missing* `attention_head_dim` means 8, an
/// explicit `null` means one head spanning all channels).
#[derive(Debug, Clone, Deserialize)]
pub struct UNet2DConfig {
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "default_in")]
    pub in_channels: usize,
    #[serde(default = "default_in")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers")]
    pub layers_per_block: usize,
    #[serde(default = "default_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_conv")]
    pub downsample_type: String,
    #[serde(default = "default_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "default_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
}

/// Time-embedding variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEmbedding {
    Positional,
    Fourier,
    Learned,
}

impl UNet2DConfig {
    pub fn from_json_str(s: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = serde_json::from_str(s).map_err(|e| NnError::ConfigParse {
            path: origin.to_path_buf(),
            msg: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| NnError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_json_str(&s, path)
    }

    pub fn time_embedding(&self) -> Result<TimeEmbedding> {
        match self.time_embedding_type.as_str() {
            "positional" => Ok(TimeEmbedding::Positional),
            "fourier" => Ok(TimeEmbedding::Fourier),
            "learned" => Ok(TimeEmbedding::Learned),
            other => Err(NnError::Unsupported {
                field: "time_embedding_type",
                value: other.into(),
                reason: "expected positional, fourier or learned".into(),
            }),
        }
    }

    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Square image size, when the config has one.
    pub fn image_size(&self) -> Option<(usize, usize)> {
        match self.sample_size {
            Some(SampleSize::Square(s)) => Some((s, s)),
            Some(SampleSize::Rect([h, w])) => Some((h, w)),
            None => None,
        }
    }

    pub fn num_groups(&self) -> usize {
        self.norm_num_groups
            .unwrap_or_else(|| (self.block_out_channels[0] / 4).min(32))
    }

    /// Reject every value this implementation does not compute, naming the field.
    pub fn validate(&self) -> Result<()> {
        let unsupported = |field: &'static str, value: String, reason: &str| {
            Err(NnError::Unsupported {
                field,
                value,
                reason: reason.into(),
            })
        };
        if let Some(name) = &self.class_name {
            if name != "UNet2DModel" {
                return unsupported(
                    "_class_name",
                    name.clone(),
                    "this loader reads diffusers UNet2DModel configs",
                );
            }
        }
        self.time_embedding()?;
        if self.block_out_channels.is_empty() {
            return Err(NnError::InvalidConfig("block_out_channels is empty".into()));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(NnError::InvalidConfig(
                "in_channels and out_channels must be positive".into(),
            ));
        }
        if self.down_block_types.len() != self.block_out_channels.len()
            || self.up_block_types.len() != self.block_out_channels.len()
        {
            return Err(NnError::InvalidConfig(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len(),
                self.block_out_channels.len()
            )));
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "AttnDownBlock2D" {
                return unsupported(
                    "down_block_types",
                    t.clone(),
                    "supported: DownBlock2D, AttnDownBlock2D",
                );
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                return unsupported(
                    "up_block_types",
                    t.clone(),
                    "supported: UpBlock2D, AttnUpBlock2D",
                );
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2D") => {}
            Some(other) => {
                return unsupported("mid_block_type", other.into(), "supported: UNetMidBlock2D")
            }
        }
        if self.downsample_type != "conv" {
            return unsupported(
                "downsample_type",
                self.downsample_type.clone(),
                "supported: conv",
            );
        }
        if self.upsample_type != "conv" {
            return unsupported(
                "upsample_type",
                self.upsample_type.clone(),
                "supported: conv",
            );
        }
        if self.downsample_padding > 1 {
            return unsupported(
                "downsample_padding",
                self.downsample_padding.to_string(),
                "supported: 0 or 1",
            );
        }
        crate::layers::Activation::parse("act_fn", &self.act_fn)?;
        match self.resnet_time_scale_shift.as_str() {
            "default" | "scale_shift" => {}
            other => {
                return unsupported(
                    "resnet_time_scale_shift",
                    other.into(),
                    "supported: default, scale_shift",
                )
            }
        }
        if let Some(t) = &self.class_embed_type {
            return unsupported(
                "class_embed_type",
                t.clone(),
                "class-conditional UNet2DModels are not supported (genprior uses unconditional priors)",
            );
        }
        if let Some(n) = self.num_class_embeds {
            return unsupported(
                "num_class_embeds",
                n.to_string(),
                "class-conditional UNet2DModels are not supported (genprior uses unconditional priors)",
            );
        }
        if self.attention_head_dim == Some(0) {
            return unsupported("attention_head_dim", "0".into(), "must be positive or null");
        }
        if self.time_embedding()? == TimeEmbedding::Learned && self.num_train_timesteps.is_none() {
            return Err(NnError::InvalidConfig(
                "time_embedding_type = learned needs num_train_timesteps".into(),
            ));
        }
        let groups = self.num_groups();
        for &c in &self.block_out_channels {
            if groups == 0 || c % groups != 0 {
                return Err(NnError::InvalidConfig(format!(
                    "norm_num_groups = {groups} does not divide block_out_channels entry {c}"
                )));
            }
            if let Some(d) = self.attention_head_dim {
                if c % d != 0 {
                    return Err(NnError::InvalidConfig(format!(
                        "attention_head_dim = {d} does not divide block_out_channels entry {c}"
                    )));
                }
            }
        }
        Ok(())
    }
}
