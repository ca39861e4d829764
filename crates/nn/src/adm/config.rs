//! ADM model config: a JSON object with guided-diffusion's argument names
//! (`model_and_diffusion_defaults()` / `create_model()`), their defaults, and two
//! extensions guided-diffusion hard-codes: `in_channels` (3) and `num_classes` (1000).
//!
//! `channel_mult` and `attention_resolutions` accept guided-diffusion's comma strings
//! (`"1,1,2,2,4,4"`, `"32,16,8"`), a JSON list, or (attention) a single number; an empty
//! `channel_mult` takes create_model's default for the image size.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// The `_class_name` genprior writes into ADM configs (diffusers configs carry
/// `UNet2DModel` there, so the two kinds of config.json are told apart by it).
pub const CLASS_NAME: &str = "ADMUNet";

/// A list field given as a comma string, a JSON list or a single number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum NumList {
    Text(String),
    Numbers(Vec<f64>),
    Single(f64),
}

impl NumList {
    fn values(&self, field: &'static str) -> Result<Vec<f64>> {
        let bad = |v: String, why: &str| NnError::Unsupported {
            field,
            value: v,
            reason: why.into(),
        };
        match self {
            NumList::Text(s) if s.trim().is_empty() => Ok(vec![]),
            NumList::Text(s) => s
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<f64>()
                        .map_err(|_| bad(s.clone(), "expected comma-separated numbers"))
                })
                .collect(),
            NumList::Numbers(v) => Ok(v.clone()),
            NumList::Single(x) => Ok(vec![*x]),
        }
    }
}

fn d_image_size() -> usize {
    64
}
fn d_three() -> usize {
    3
}
fn d_channels() -> usize {
    128
}
fn d_two() -> usize {
    2
}
fn d_heads() -> i64 {
    4
}
fn d_minus_one() -> i64 {
    -1
}
fn d_attn() -> NumList {
    NumList::Text("16,8".into())
}
fn d_mult() -> NumList {
    NumList::Text(String::new())
}
fn d_true() -> bool {
    true
}
fn d_thousand() -> usize {
    1000
}
fn d_linear() -> String {
    "linear".into()
}

/// guided-diffusion's model (and diffusion) arguments. Unknown keys are ignored;
/// missing keys take guided-diffusion's defaults. `dropout`, `use_checkpoint` and
/// `use_fp16` are training/runtime options with no effect here (genprior picks the
/// dtype itself); the diffusion arguments are kept for the sampler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdmConfig {
    #[serde(
        rename = "_class_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub class_name: Option<String>,
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_two")]
    pub num_res_blocks: usize,
    #[serde(default = "d_heads")]
    pub num_heads: i64,
    #[serde(default = "d_minus_one")]
    pub num_heads_upsample: i64,
    #[serde(default = "d_minus_one")]
    pub num_head_channels: i64,
    #[serde(default = "d_attn")]
    pub attention_resolutions: NumList,
    #[serde(default = "d_mult")]
    pub channel_mult: NumList,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub class_cond: bool,
    #[serde(default = "d_thousand")]
    pub num_classes: usize,
    #[serde(default)]
    pub use_checkpoint: bool,
    #[serde(default = "d_true")]
    pub use_scale_shift_norm: bool,
    #[serde(default)]
    pub resblock_updown: bool,
    #[serde(default)]
    pub use_fp16: bool,
    #[serde(default)]
    pub use_new_attention_order: bool,
    #[serde(default)]
    pub learn_sigma: bool,
    #[serde(default = "d_thousand")]
    pub diffusion_steps: usize,
    #[serde(default = "d_linear")]
    pub noise_schedule: String,
    #[serde(default)]
    pub predict_xstart: bool,
    #[serde(default)]
    pub rescale_timesteps: bool,
    #[serde(default)]
    pub timestep_respacing: String,
}

/// Names accepted by [`AdmConfig::preset`].
pub const PRESETS: [&str; 2] = ["adm-ffhq-256", "adm-imagenet-256-uncond"];

impl AdmConfig {
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

    /// Built-in configs: `adm-ffhq-256` (DPS/DPnP `ffhq_10m.pt`, deepinv
    /// `diffusion_ffhq_10m.pt`) and `adm-imagenet-256-uncond` (guided-diffusion
    /// `256x256_diffusion_uncond.pt`, deepinv `diffusion_openai.pt`).
    pub fn preset(name: &str) -> Result<Self> {
        let text = match name {
            "adm-ffhq-256" => include_str!("presets/adm-ffhq-256.json"),
            "adm-imagenet-256-uncond" => include_str!("presets/adm-imagenet-256-uncond.json"),
            other => {
                return Err(NnError::Unsupported {
                    field: "preset",
                    value: other.into(),
                    reason: format!("known ADM presets: {}", PRESETS.join(", ")),
                })
            }
        };
        Self::from_json_str(text, Path::new(name))
    }

    /// The config as JSON (explicit `channel_mult` and `attention_resolutions`, with
    /// `_class_name = "ADMUNet"`), readable by [`AdmConfig::from_json_str`].
    pub fn to_json_string(&self) -> Result<String> {
        let mut c = self.clone();
        c.class_name = Some(CLASS_NAME.into());
        c.channel_mult = NumList::Numbers(self.channel_mult()?);
        serde_json::to_string_pretty(&c).map_err(|e| NnError::InvalidConfig(e.to_string()))
    }

    /// Write [`AdmConfig::to_json_string`] to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json_string()?).map_err(|e| NnError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// Channel multipliers per level (create_model's default for the image size when
    /// `channel_mult` is empty).
    pub fn channel_mult(&self) -> Result<Vec<f64>> {
        let v = self.channel_mult.values("channel_mult")?;
        if !v.is_empty() {
            return Ok(v);
        }
        Ok(match self.image_size {
            512 => vec![0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            256 => vec![1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            128 => vec![1.0, 1.0, 2.0, 3.0, 4.0],
            64 => vec![1.0, 2.0, 3.0, 4.0],
            other => {
                return Err(NnError::Unsupported {
                    field: "channel_mult",
                    value: "\"\"".into(),
                    reason: format!(
                        "no default channel multipliers for image_size {other} (guided-diffusion has them for 64, 128, 256, 512): give channel_mult"
                    ),
                })
            }
        })
    }

    /// Channels of each level: `int(mult * num_channels)`.
    pub fn level_channels(&self) -> Result<Vec<usize>> {
        Ok(self
            .channel_mult()?
            .iter()
            .map(|m| (m * self.num_channels as f64) as usize)
            .collect())
    }

    /// Downsampling factors with attention: `image_size // r` for each resolution r.
    pub fn attention_ds(&self) -> Result<Vec<usize>> {
        self.attention_resolutions
            .values("attention_resolutions")?
            .into_iter()
            .map(|r| {
                if r < 1.0 || r.fract() != 0.0 {
                    Err(NnError::Unsupported {
                        field: "attention_resolutions",
                        value: r.to_string(),
                        reason: "resolutions must be positive integers".into(),
                    })
                } else {
                    Ok(self.image_size / r as usize)
                }
            })
            .collect()
    }

    /// Output channels: `in_channels`, doubled with `learn_sigma` (ε then the variance
    /// interpolation v).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    pub fn time_embed_dim(&self) -> usize {
        4 * self.num_channels
    }

    /// Attention heads of a block with `ch` channels (`up`: in the output blocks).
    pub fn heads(&self, ch: usize, up: bool) -> usize {
        if self.num_head_channels > 0 {
            ch / self.num_head_channels as usize
        } else if up && self.num_heads_upsample != -1 {
            self.num_heads_upsample.max(0) as usize
        } else {
            self.num_heads.max(0) as usize
        }
    }

    /// The factor image sizes must be divisible by.
    pub fn size_factor(&self) -> Result<usize> {
        Ok(1usize << (self.channel_mult()?.len().saturating_sub(1)))
    }

    /// Reject values this implementation does not compute, naming the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = &self.class_name {
            if n != CLASS_NAME {
                return Err(NnError::Unsupported {
                    field: "_class_name",
                    value: n.clone(),
                    reason: format!(
                        "this is not an ADM config (expected {CLASS_NAME}; diffusers UNet2DModel configs load as diffusers models)"
                    ),
                });
            }
        }
        let positive = |field: &'static str, v: usize| {
            if v == 0 {
                Err(NnError::Unsupported {
                    field,
                    value: "0".into(),
                    reason: "must be positive".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("image_size", self.image_size)?;
        positive("in_channels", self.in_channels)?;
        positive("num_channels", self.num_channels)?;
        positive("num_res_blocks", self.num_res_blocks)?;
        if self.class_cond {
            positive("num_classes", self.num_classes)?;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(NnError::Unsupported {
                field: "dropout",
                value: self.dropout.to_string(),
                reason: "must be in [0, 1) (it is ignored at inference)".into(),
            });
        }
        if self.num_head_channels == 0 || self.num_head_channels < -1 {
            return Err(NnError::Unsupported {
                field: "num_head_channels",
                value: self.num_head_channels.to_string(),
                reason: "must be positive, or -1 to use num_heads".into(),
            });
        }
        if self.num_head_channels == -1 && self.num_heads < 1 {
            return Err(NnError::Unsupported {
                field: "num_heads",
                value: self.num_heads.to_string(),
                reason: "must be positive when num_head_channels = -1".into(),
            });
        }
        if self.num_head_channels == -1
            && self.num_heads_upsample != -1
            && self.num_heads_upsample < 1
        {
            return Err(NnError::Unsupported {
                field: "num_heads_upsample",
                value: self.num_heads_upsample.to_string(),
                reason: "must be positive, or -1 to use num_heads".into(),
            });
        }
        let mult = self.channel_mult()?;
        if mult.is_empty() || mult.len() > 16 {
            return Err(NnError::InvalidConfig(format!(
                "channel_mult must have 1 to 16 levels, got {}",
                mult.len()
            )));
        }
        for m in &mult {
            if !(m.is_finite() && *m > 0.0) {
                return Err(NnError::Unsupported {
                    field: "channel_mult",
                    value: m.to_string(),
                    reason: "multipliers must be positive".into(),
                });
            }
        }
        let attn = self.attention_ds()?;
        let chans = self.level_channels()?;
        for (level, &c) in chans.iter().enumerate() {
            if c == 0 || c % 32 != 0 {
                return Err(NnError::InvalidConfig(format!(
                    "level {level} has {c} channels (channel_mult {} x num_channels {}): GroupNorm32 needs a multiple of 32",
                    mult[level], self.num_channels
                )));
            }
            let ds = 1usize << level;
            let in_blocks = attn.contains(&ds);
            let middle = level == chans.len() - 1;
            for (up, used) in [(false, in_blocks || middle), (true, in_blocks)] {
                if used {
                    let h = self.heads(c, up);
                    if h == 0
                        || c % h != 0
                        || (self.num_head_channels > 0 && c % self.num_head_channels as usize != 0)
                    {
                        return Err(NnError::InvalidConfig(format!(
                            "attention at level {level}: {c} channels cannot be split into heads (num_heads {}, num_head_channels {}, num_heads_upsample {})",
                            self.num_heads, self.num_head_channels, self.num_heads_upsample
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
