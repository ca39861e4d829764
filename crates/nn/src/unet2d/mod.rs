//! diffusers `UNet2DModel` on candle: the struct tree mirrors the checkpoint key tree
//! (`down_blocks.{i}.resnets.{j}.conv1`, ...), so every weight name is spelled once.

mod blocks;
pub mod config;
pub mod flops;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear};

use crate::norm::GroupNorm;

use crate::conv::Conv2d;

pub use config::{SampleSize, TimeEmbedding, UNet2DConfig};

use crate::error::{NnError, Result};
use crate::layers::{self, Activation};
use crate::weights::{WeightStore, Weights};
use blocks::{DownBlock, MidBlock, UpBlock};

/// Timestep → embedding vector (`time_proj`): diffusers' `Timesteps`,
/// `GaussianFourierProjection` (log t, no flip) or a learned table.
enum TimeProj {
    Positional {
        freqs: Tensor,
        flip: bool,
        odd: bool,
    },
    Fourier {
        weight: Tensor,
    },
    Learned {
        table: Embedding,
        size: usize,
    },
}

impl TimeProj {
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        match self {
            TimeProj::Positional { freqs, flip, odd } => {
                let arg = t.unsqueeze(1)?.broadcast_mul(freqs)?;
                let (sin, cos) = (arg.sin()?, arg.cos()?);
                let mut emb = if *flip {
                    Tensor::cat(&[cos, sin], 1)?
                } else {
                    Tensor::cat(&[sin, cos], 1)?
                };
                if *odd {
                    emb = emb.pad_with_zeros(1, 0, 1)?;
                }
                Ok(emb)
            }
            TimeProj::Fourier { weight } => {
                let x = t.log()?.unsqueeze(1)?;
                let proj =
                    ((x.broadcast_mul(&weight.unsqueeze(0)?)? * 2.0)? * std::f64::consts::PI)?;
                Ok(Tensor::cat(&[proj.sin()?, proj.cos()?], 1)?)
            }
            TimeProj::Learned { table, size } => {
                let rounded = t.round()?;
                let diff = (t - &rounded)?.abs()?.max(0)?.to_scalar::<f32>()?;
                let max = t.max(0)?.to_scalar::<f32>()?;
                let min = t.min(0)?.to_scalar::<f32>()?;
                if diff > 0.0 || min < 0.0 || max >= *size as f32 {
                    return Err(NnError::Input(format!(
                        "a learned time embedding needs integer timesteps in [0, {size}); got values in [{min}, {max}]{}",
                        if diff > 0.0 { " with fractional parts" } else { "" }
                    )));
                }
                Ok(table.forward(&rounded.to_dtype(DType::U32)?)?)
            }
        }
    }
}

/// A diffusers `UNet2DModel`.
pub struct UNet2DModel {
    config: UNet2DConfig,
    conv_in: Conv2d,
    time_proj: TimeProj,
    linear_1: Linear,
    linear_2: Linear,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    dtype: DType,
    device: Device,
    num_parameters: usize,
}

/// Map diffusers' deprecated attention names (`query/key/value/proj_attn`) onto the
/// current ones (`to_q/to_k/to_v/to_out.0`), as diffusers does when it loads them.
pub fn alias_deprecated_attention(store: &mut WeightStore) {
    let renames = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    let names: Vec<String> = store.names().iter().cloned().collect();
    for n in names {
        if !n.contains(".attentions.") {
            continue;
        }
        for (old, new) in renames {
            if n.contains(old) {
                store.add_alias(n.replacen(old, new, 1), n.clone());
            }
        }
    }
}

impl UNet2DModel {
    /// Build from a config and a weight path; every tensor is checked for presence and
    /// shape, and tensors the architecture does not use are an error.
    pub fn new(config: UNet2DConfig, w: &Weights) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let act = Activation::parse("act_fn", &c.act_fn)?;
        let ch0 = c.block_out_channels[0];
        let temb = c.time_embed_dim();
        let groups = c.num_groups();
        let conv_in = layers::conv2d(&w.pp("conv_in"), c.in_channels, ch0, 3, 1, 1)?;
        let (time_proj, t_in) = match c.time_embedding()? {
            TimeEmbedding::Positional => {
                let half = ch0 / 2;
                let denom = half as f64 - c.freq_shift;
                if denom == 0.0 {
                    return Err(NnError::InvalidConfig(format!(
                        "freq_shift = {} equals half the embedding size",
                        c.freq_shift
                    )));
                }
                // Computed in f32 like diffusers' get_timestep_embedding.
                let ln = -(10000f32.ln());
                let freqs: Vec<f32> = (0..half)
                    .map(|i| ((ln * i as f32) / denom as f32).exp())
                    .collect();
                let freqs = Tensor::from_vec(freqs, (1, half), w.device())?;
                (
                    TimeProj::Positional {
                        freqs,
                        flip: c.flip_sin_to_cos,
                        odd: ch0 % 2 == 1,
                    },
                    ch0,
                )
            }
            TimeEmbedding::Fourier => {
                let weight = w
                    .pp("time_proj")
                    .get(&[ch0], "weight")?
                    .to_dtype(DType::F32)?;
                (TimeProj::Fourier { weight }, 2 * ch0)
            }
            TimeEmbedding::Learned => {
                let size = c.num_train_timesteps.unwrap_or(1000);
                let table = w.pp("time_proj").get(&[size, ch0], "weight")?;
                (
                    TimeProj::Learned {
                        table: Embedding::new(table, ch0),
                        size,
                    },
                    ch0,
                )
            }
        };
        let te = w.pp("time_embedding");
        let linear_1 = layers::linear(&te.pp("linear_1"), t_in, temb)?;
        let linear_2 = layers::linear(&te.pp("linear_2"), temb, temb)?;

        let nblocks = c.block_out_channels.len();
        let mut down_blocks = Vec::with_capacity(nblocks);
        let mut out_ch = ch0;
        for (i, ty) in c.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = c.block_out_channels[i];
            let last = i == nblocks - 1;
            down_blocks.push(DownBlock::new(
                &w.pp("down_blocks").pp(i),
                blocks::BlockSpec {
                    num_layers: c.layers_per_block,
                    in_ch,
                    out_ch,
                    temb,
                    eps: c.norm_eps,
                    groups,
                    act,
                    scale_shift: c.resnet_time_scale_shift == "scale_shift",
                    attention: ty == "AttnDownBlock2D",
                    head_dim: c.attention_head_dim.unwrap_or(out_ch),
                    output_scale: 1.0,
                },
                !last,
                c.downsample_padding,
            )?);
        }
        let top = *c.block_out_channels.last().unwrap_or(&ch0);
        let mid_block = match c.mid_block_type {
            None => None,
            Some(_) => Some(MidBlock::new(
                &w.pp("mid_block"),
                blocks::BlockSpec {
                    num_layers: 1,
                    in_ch: top,
                    out_ch: top,
                    temb,
                    eps: c.norm_eps,
                    groups,
                    act,
                    scale_shift: c.resnet_time_scale_shift == "scale_shift",
                    attention: c.add_attention,
                    head_dim: c.attention_head_dim.unwrap_or(top),
                    output_scale: c.mid_block_scale_factor,
                },
                // diffusers: the mid attention has a group norm only with the default
                // time-scale-shift, unless attn_norm_num_groups is given.
                c.attn_norm_num_groups
                    .or(if c.resnet_time_scale_shift == "default" {
                        Some(groups)
                    } else {
                        None
                    }),
            )?),
        };
        let rev: Vec<usize> = c.block_out_channels.iter().rev().cloned().collect();
        let mut up_blocks = Vec::with_capacity(nblocks);
        let mut out_ch = rev[0];
        for (i, ty) in c.up_block_types.iter().enumerate() {
            let prev = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(nblocks - 1)];
            let last = i == nblocks - 1;
            up_blocks.push(UpBlock::new(
                &w.pp("up_blocks").pp(i),
                blocks::BlockSpec {
                    num_layers: c.layers_per_block + 1,
                    in_ch,
                    out_ch,
                    temb,
                    eps: c.norm_eps,
                    groups,
                    act,
                    scale_shift: c.resnet_time_scale_shift == "scale_shift",
                    attention: ty == "AttnUpBlock2D",
                    head_dim: c.attention_head_dim.unwrap_or(out_ch),
                    output_scale: 1.0,
                },
                prev,
                !last,
            )?);
        }
        let conv_norm_out = layers::group_norm(&w.pp("conv_norm_out"), groups, ch0, c.norm_eps)?;
        let conv_out = layers::conv2d(&w.pp("conv_out"), ch0, c.out_channels, 3, 1, 1)?;
        w.store().check_all_used()?;
        let num_parameters = w.store().num_parameters()?;
        Ok(Self {
            config,
            conv_in,
            time_proj,
            linear_1,
            linear_2,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            dtype: w.dtype(),
            device: w.device().clone(),
            num_parameters,
        })
    }

    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Raw network output for `x` `(B, C, H, W)` at timesteps `t` (`(B,)`, `(1,)` or a
    /// scalar tensor; fractional values allowed for positional/fourier embeddings).
    /// Input and output are f32; the network itself runs in the model dtype.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        Ok(self.forward_native(x, t)?.to_dtype(DType::F32)?)
    }

    /// [`Self::forward`] with the output left in the model dtype (f32 for half-precision
    /// models with a Fourier embedding): training in f64 and its gradient checks need the
    /// loss without an f32 rounding of the output.
    pub fn forward_native(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (b, c, h, wd) = x.dims4().map_err(|_| {
            NnError::Input(format!(
                "expected a (batch, channels, height, width) input, got shape {:?}",
                x.dims()
            ))
        })?;
        if c != self.config.in_channels {
            return Err(NnError::Input(format!(
                "the model takes {} channel(s), the input has {c}",
                self.config.in_channels
            )));
        }
        let factor = 1usize << (self.config.block_out_channels.len() - 1);
        if h % factor != 0 || wd % factor != 0 {
            return Err(NnError::Input(format!(
                "image size {h}x{wd} must be divisible by {factor} for this architecture"
            )));
        }
        let t = t.to_dtype(DType::F32)?.flatten_all()?;
        let t = match t.dim(0)? {
            1 => t.broadcast_as(b)?.contiguous()?,
            n if n == b => t,
            n => {
                return Err(NnError::Input(format!(
                    "{n} timesteps for a batch of {b} (give one, or one per image)"
                )))
            }
        };
        let mut x = x.to_dtype(DType::F32)?;
        if self.config.center_input_sample {
            x = ((x * 2.0)? - 1.0)?;
        }
        let x = x.to_dtype(self.dtype)?;
        let t_emb = self.time_proj.forward(&t)?.to_dtype(self.dtype)?;
        let emb = self.linear_1.forward(&t_emb)?;
        let emb = self.linear_2.forward(&candle_nn::ops::silu(&emb)?)?;

        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.clone()];
        for blk in &self.down_blocks {
            h = blk.forward(&h, &emb, &mut skips)?;
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &emb)?;
        }
        for blk in &self.up_blocks {
            h = blk.forward(&h, &emb, &mut skips)?;
        }
        // diffusers applies SiLU here whatever act_fn says.
        let h = self.conv_norm_out.forward_silu(&h)?;
        let mut out = self.conv_out.forward(&h)?;
        if self.config.time_embedding()? == TimeEmbedding::Fourier {
            // Divided in f32 for half-precision models, as before this method existed.
            if matches!(out.dtype(), DType::F16 | DType::BF16) {
                out = out.to_dtype(DType::F32)?;
            }
            out = out.broadcast_div(&t.reshape((b, 1, 1, 1))?.to_dtype(out.dtype())?)?;
        }
        Ok(out)
    }
}
