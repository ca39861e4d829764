//! diffusers' block families: ResnetBlock2D, Attention (with group norm, residual),
//! Down/AttnDown, the mid block, Up/AttnUp, Downsample2D and Upsample2D.

use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::norm::GroupNorm;

use crate::conv::Conv2d;

use crate::error::Result;
use crate::layers::{self, Activation};
use crate::weights::Weights;

/// What a block family needs from the UNet config.
#[derive(Clone, Copy)]
pub struct BlockSpec {
    pub num_layers: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    pub temb: usize,
    pub eps: f64,
    pub groups: usize,
    pub act: Activation,
    pub scale_shift: bool,
    pub attention: bool,
    pub head_dim: usize,
    pub output_scale: f64,
}

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
    scale_shift: bool,
    output_scale: f64,
}

impl ResnetBlock {
    pub fn new(w: &Weights, cin: usize, cout: usize, s: &BlockSpec) -> Result<Self> {
        let temb_out = if s.scale_shift { 2 * cout } else { cout };
        Ok(Self {
            norm1: layers::group_norm(&w.pp("norm1"), s.groups, cin, s.eps)?,
            conv1: layers::conv2d(&w.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj: layers::linear(&w.pp("time_emb_proj"), s.temb, temb_out)?,
            norm2: layers::group_norm(&w.pp("norm2"), s.groups, cout, s.eps)?,
            conv2: layers::conv2d(&w.pp("conv2"), cout, cout, 3, 1, 1)?,
            conv_shortcut: if cin != cout {
                Some(layers::conv2d(&w.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
            act: s.act,
            scale_shift: s.scale_shift,
            output_scale: s.output_scale,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = layers::norm_act(&self.norm1, self.act, x)?;
        let h = self.conv1.forward(&h)?;
        let t = self
            .time_emb_proj
            .forward(&self.act.forward(temb)?)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        // The time embedding enters through the norm (one fused pass on CPU).
        let silu = self.act == Activation::Silu;
        let h = if self.scale_shift {
            let c = t.dim(1)? / 2;
            let (scale, shift) = (t.narrow(1, 0, c)?, t.narrow(1, c, c)?);
            self.norm2
                .forward_mod(&h, None, Some(&scale), Some(&shift), silu)?
        } else {
            self.norm2.forward_mod(&h, Some(&t), None, None, silu)?
        };
        let h = if silu { h } else { self.act.forward(&h)? };
        self.finish(x, &h)
    }

    /// conv2 on the activated hidden state, skip connection, output scale.
    fn finish(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = self.conv2.forward_add(h, &skip)?;
        Ok(if self.output_scale != 1.0 {
            (out / self.output_scale)?
        } else {
            out
        })
    }
}

/// diffusers `Attention` as used by the UNet2D blocks: optional group norm, q/k/v
/// projections, `heads = C / head_dim`, softmax in f32, output projection, residual,
/// division by `rescale_output_factor`.
///
/// Computed channel-major, without transposes: q, k and v come from one 1×1 convolution whose
/// weight stacks `[W_q/√d; W_k; W_v]` per head (so each head's q, k, v are adjacent rows and
/// every head is a strided view), scores are `qᵀk`, the output is `v·pᵀ`, and the output
/// projection is a 1×1 convolution that adds the residual in its GEMM.
pub struct Attention {
    group_norm: Option<GroupNorm>,
    qkv: Conv2d,
    to_out: Conv2d,
    heads: usize,
    head_dim: usize,
    rescale: f64,
}

impl Attention {
    pub fn new(
        w: &Weights,
        ch: usize,
        head_dim: usize,
        groups: Option<usize>,
        eps: f64,
        rescale: f64,
    ) -> Result<Self> {
        if head_dim == 0 || !ch.is_multiple_of(head_dim) {
            return Err(crate::error::NnError::InvalidConfig(format!(
                "attention `{}`: {ch} channels cannot be split into heads of {head_dim}",
                w.prefix_name()
            )));
        }
        let heads = ch / head_dim;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let get = |name: &str| -> Result<(Tensor, Tensor)> {
            let l = w.pp(name);
            Ok((l.get(&[ch, ch], "weight")?, l.get(&[ch], "bias")?))
        };
        let (wq, bq) = get("to_q")?;
        let (wk, bk) = get("to_k")?;
        let (wv, bv) = get("to_v")?;
        let (wq, bq) = ((wq * scale)?, (bq * scale)?);
        let (mut ws, mut bs) = (Vec::new(), Vec::new());
        for h in 0..heads {
            for (wp, bp) in [(&wq, &bq), (&wk, &bk), (&wv, &bv)] {
                ws.push(wp.narrow(0, h * head_dim, head_dim)?);
                bs.push(bp.narrow(0, h * head_dim, head_dim)?);
            }
        }
        let qkv_w = Tensor::cat(&ws, 0)?.reshape((3 * ch, ch, 1, 1))?;
        let qkv_b = Tensor::cat(&bs, 0)?;
        let (wo, bo) = {
            let l = w.pp("to_out").pp(0);
            (l.get(&[ch, ch], "weight")?, l.get(&[ch], "bias")?)
        };
        Ok(Self {
            group_norm: match groups {
                Some(g) => Some(layers::group_norm(&w.pp("group_norm"), g, ch, eps)?),
                None => None,
            },
            qkv: Conv2d::new(qkv_w, Some(qkv_b), 0, 1),
            to_out: Conv2d::new(wo.reshape((ch, ch, 1, 1))?, Some(bo), 0, 1),
            heads,
            head_dim,
            rescale,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _t = crate::profile::scope("attention");
        let (b, c, h, w) = x.dims4()?;
        let n = h * w;
        let (heads, d) = (self.heads, self.head_dim);
        let hs = match &self.group_norm {
            Some(gn) => gn.forward(&x.reshape((b, c, n))?)?.reshape((b, c, n, 1))?,
            None => x.reshape((b, c, n, 1))?,
        };
        // (B·heads, 3, d, n): q, k, v of each head are strided views.
        let qkv = self.qkv.forward(&hs)?.reshape((b * heads, 3, d, n))?;
        let (q, k, v) = (
            qkv.narrow(1, 0, 1)?.squeeze(1)?,
            qkv.narrow(1, 1, 1)?.squeeze(1)?,
            qkv.narrow(1, 2, 1)?.squeeze(1)?,
        );
        let scores = strided_matmul(&q.t()?, &k)?; // (B·heads, n_query, n_key), already scaled
        let dtype = scores.dtype();
        // Half precision takes its softmax in f32; f32 and f64 keep their own precision.
        let internal = match dtype {
            candle_core::DType::F16 | candle_core::DType::BF16 => candle_core::DType::F32,
            d => d,
        };
        let probs = crate::norm::softmax_last_dim(&scores.to_dtype(internal)?)?.to_dtype(dtype)?;
        let out = strided_matmul(&v, &probs.t()?)?; // (B·heads, d, n_query)
        let out = out.reshape((b, c, n, 1))?;
        let out = self.to_out.forward_add(&out, &x.reshape((b, c, n, 1))?)?;
        let out = out.reshape((b, c, h, w))?;
        Ok(if self.rescale != 1.0 {
            (out / self.rescale)?
        } else {
            out
        })
    }
}

/// `a.matmul(b)` on strided views; a backend that rejects the strides gets contiguous copies.
fn strided_matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match a.matmul(b) {
        Ok(t) => Ok(t),
        Err(_) => a.contiguous()?.matmul(&b.contiguous()?),
    }
}

/// Stride-2 3×3 convolution; with padding 0 the input is first padded right/bottom by 1.
pub struct Downsample {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample {
    fn new(w: &Weights, ch: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: layers::conv2d(&w.pp("conv"), ch, ch, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.pad_right_bottom {
            x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?
        } else {
            x.clone()
        };
        Ok(self.conv.forward(&x)?)
    }
}

/// Nearest-neighbour ×2 then 3×3 convolution.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    fn new(w: &Weights, ch: usize) -> Result<Self> {
        Ok(Self {
            conv: layers::conv2d(&w.pp("conv"), ch, ch, 3, 1, 1)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let up = crate::norm::upsample_nearest2x(x)?;
        Ok(self.conv.forward(&up)?)
    }
}

/// DownBlock2D / AttnDownBlock2D.
pub struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Attention>,
    downsample: Option<Downsample>,
}

impl DownBlock {
    pub fn new(w: &Weights, s: BlockSpec, add_downsample: bool, padding: usize) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..s.num_layers {
            let cin = if i == 0 { s.in_ch } else { s.out_ch };
            resnets.push(ResnetBlock::new(&w.pp("resnets").pp(i), cin, s.out_ch, &s)?);
            if s.attention {
                attentions.push(Attention::new(
                    &w.pp("attentions").pp(i),
                    s.out_ch,
                    s.head_dim,
                    Some(s.groups),
                    s.eps,
                    s.output_scale,
                )?);
            }
        }
        let downsample = if add_downsample {
            Some(Downsample::new(
                &w.pp("downsamplers").pp(0),
                s.out_ch,
                padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsample,
        })
    }

    /// Runs the block and appends its residual outputs to `skips`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, temb)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h)?;
            }
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsample {
            h = d.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// UNetMidBlock2D: resnet, (attention, resnet) × 1.
pub struct MidBlock {
    resnets: Vec<ResnetBlock>,
    attention: Option<Attention>,
}

impl MidBlock {
    pub fn new(w: &Weights, s: BlockSpec, attn_groups: Option<usize>) -> Result<Self> {
        let resnets = vec![
            ResnetBlock::new(&w.pp("resnets").pp(0), s.in_ch, s.in_ch, &s)?,
            ResnetBlock::new(&w.pp("resnets").pp(1), s.in_ch, s.in_ch, &s)?,
        ];
        let attention = if s.attention {
            Some(Attention::new(
                &w.pp("attentions").pp(0),
                s.in_ch,
                s.head_dim,
                attn_groups,
                s.eps,
                s.output_scale,
            )?)
        } else {
            None
        };
        Ok(Self { resnets, attention })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, temb)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnets[1].forward(&h, temb)
    }
}

/// UpBlock2D / AttnUpBlock2D: each resnet consumes `concat(hidden, skip)`.
pub struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Attention>,
    upsample: Option<Upsample>,
}

impl UpBlock {
    pub fn new(w: &Weights, s: BlockSpec, prev_out: usize, add_upsample: bool) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..s.num_layers {
            let skip_ch = if i == s.num_layers - 1 {
                s.in_ch
            } else {
                s.out_ch
            };
            let cin = if i == 0 { prev_out } else { s.out_ch };
            resnets.push(ResnetBlock::new(
                &w.pp("resnets").pp(i),
                cin + skip_ch,
                s.out_ch,
                &s,
            )?);
            if s.attention {
                attentions.push(Attention::new(
                    &w.pp("attentions").pp(i),
                    s.out_ch,
                    s.head_dim,
                    Some(s.groups),
                    s.eps,
                    s.output_scale,
                )?);
            }
        }
        let upsample = if add_upsample {
            Some(Upsample::new(&w.pp("upsamplers").pp(0), s.out_ch)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsample,
        })
    }

    /// Runs the block, consuming its residual inputs from the end of `skips`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| {
                crate::error::NnError::InvalidConfig("up block ran out of skip connections".into())
            })?;
            h = Tensor::cat(&[&h, &skip], 1)?;
            h = r.forward(&h, temb)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h)?;
            }
        }
        if let Some(u) = &self.upsample {
            h = u.forward(&h)?;
        }
        Ok(h)
    }
}
