//! guided-diffusion's layers: GroupNorm32, ResBlock (scale-shift norm, BigGAN-style
//! up/down-sampling), AttentionBlock (legacy and new QKV order), Downsample, Upsample.

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

use crate::norm::GroupNorm;

use crate::conv::Conv2d;

use super::plan::{LayerSpec, Resample};
use crate::error::{NnError, Result};
use crate::layers;
use crate::weights::Weights;

/// `GroupNorm(32, C)` computed in float32 (parameters kept in f32, like
/// guided-diffusion's GroupNorm32 in fp16 models), result cast back.
pub struct GroupNorm32 {
    gn: GroupNorm,
}

impl GroupNorm32 {
    pub fn new(w: &Weights, ch: usize) -> Result<Self> {
        let w32 = w.store().root(DType::F32, w.device()).pp(w.prefix_name());
        Ok(Self {
            gn: layers::group_norm(&w32, 32, ch, 1e-5)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        Ok(self.gn.forward(&x.to_dtype(DType::F32)?)?.to_dtype(dt)?)
    }

    /// SiLU((GroupNorm32(x + offset))·(1 + scale) + shift), fused on CPU f32 (see
    /// [`GroupNorm::forward_mod`]); the modulation is cast to f32 like the input.
    pub fn forward_mod(
        &self,
        x: &Tensor,
        offset: Option<&Tensor>,
        scale: Option<&Tensor>,
        shift: Option<&Tensor>,
    ) -> Result<Tensor> {
        let dt = x.dtype();
        let f32 = |t: Option<&Tensor>| t.map(|t| t.to_dtype(DType::F32)).transpose();
        let (o, sc, sh) = (f32(offset)?, f32(scale)?, f32(shift)?);
        Ok(self
            .gn
            .forward_mod(
                &x.to_dtype(DType::F32)?,
                o.as_ref(),
                sc.as_ref(),
                sh.as_ref(),
                true,
            )?
            .to_dtype(dt)?)
    }

    /// SiLU(GroupNorm32(x)), fused on CPU f32.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        Ok(self
            .gn
            .forward_silu(&x.to_dtype(DType::F32)?)?
            .to_dtype(dt)?)
    }
}

fn avg_pool2(x: &Tensor) -> Result<Tensor> {
    Ok(x.avg_pool2d(2)?)
}

fn nearest2(x: &Tensor) -> Result<Tensor> {
    Ok(crate::norm::upsample_nearest2x(x)?)
}

pub struct ResBlock {
    in_norm: GroupNorm32,
    in_conv: Conv2d,
    emb: Linear,
    out_norm: GroupNorm32,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
    resample: Resample,
    scale_shift: bool,
}

impl ResBlock {
    pub fn new(
        w: &Weights,
        cin: usize,
        cout: usize,
        temb: usize,
        scale_shift: bool,
        resample: Resample,
    ) -> Result<Self> {
        let emb_out = if scale_shift { 2 * cout } else { cout };
        Ok(Self {
            in_norm: GroupNorm32::new(&w.pp("in_layers").pp(0), cin)?,
            in_conv: layers::conv2d(&w.pp("in_layers").pp(2), cin, cout, 3, 1, 1)?,
            emb: layers::linear(&w.pp("emb_layers").pp(1), temb, emb_out)?,
            out_norm: GroupNorm32::new(&w.pp("out_layers").pp(0), cout)?,
            out_conv: layers::conv2d(&w.pp("out_layers").pp(3), cout, cout, 3, 1, 1)?,
            skip: if cin != cout {
                Some(layers::conv2d(
                    &w.pp("skip_connection"),
                    cin,
                    cout,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            resample,
            scale_shift,
        })
    }

    /// `emb_act` is SiLU(time embedding), already in the model dtype.
    pub fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let h = self.in_norm.forward_silu(x)?;
        let (h, x) = match self.resample {
            Resample::None => (h, x.clone()),
            Resample::Down => (avg_pool2(&h)?, avg_pool2(x)?),
            Resample::Up => (nearest2(&h)?, nearest2(x)?),
        };
        let h = self.in_conv.forward(&h)?;
        let e = self.emb.forward(emb_act)?.unsqueeze(2)?.unsqueeze(3)?;
        // SiLU(out_norm(h)·(1 + scale) + shift), or SiLU(out_norm(h + e)): one fused pass on CPU.
        let h = if self.scale_shift {
            let c = e.dim(1)? / 2;
            let (scale, shift) = (e.narrow(1, 0, c)?, e.narrow(1, c, c)?);
            self.out_norm
                .forward_mod(&h, None, Some(&scale), Some(&shift))?
        } else {
            self.out_norm.forward_mod(&h, Some(&e), None, None)?
        };
        let skip = match &self.skip {
            Some(c) => c.forward(&x)?,
            None => x,
        };
        Ok(self.out_conv.forward_add(&h, &skip)?)
    }
}

/// `nn.Conv1d(cin, cout, 1)` on `(B, C, T)`: a channel matmul.
struct Conv1x1 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1x1 {
    fn new(w: &Weights, cin: usize, cout: usize) -> Result<Self> {
        let lin = layers::conv1x1_as_linear(w, cin, cout)?;
        let bias = lin
            .bias()
            .cloned()
            .ok_or_else(|| NnError::InvalidConfig("conv1d without bias".into()))?;
        Ok(Self {
            weight: lin.weight().clone(),
            bias: bias.reshape((1, cout, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.weight.broadcast_matmul(x)?.broadcast_add(&self.bias)?)
    }
}

pub struct AttentionBlock {
    norm: GroupNorm32,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    heads: usize,
    new_order: bool,
}

impl AttentionBlock {
    pub fn new(w: &Weights, ch: usize, heads: usize, new_order: bool) -> Result<Self> {
        if heads == 0 || !ch.is_multiple_of(heads) {
            return Err(NnError::InvalidConfig(format!(
                "attention `{}`: {ch} channels cannot be split into {heads} heads",
                w.prefix_name()
            )));
        }
        Ok(Self {
            norm: GroupNorm32::new(&w.pp("norm"), ch)?,
            qkv: Conv1x1::new(&w.pp("qkv"), ch, 3 * ch)?,
            proj_out: Conv1x1::new(&w.pp("proj_out"), ch, ch)?,
            heads,
            new_order,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _t = crate::profile::scope("attention");
        let (b, c, hh, ww) = x.dims4()?;
        let t = hh * ww;
        let xr = x.reshape((b, c, t))?;
        let qkv = self.qkv.forward(&self.norm.forward(&xr)?)?; // (b, 3c, t)
        let heads = self.heads;
        let ch = c / heads;
        let (q, k, v) = if self.new_order {
            // Split q, k, v first, then heads.
            let part = |i: usize| -> Result<Tensor> {
                Ok(qkv.narrow(1, i * c, c)?.reshape((b * heads, ch, t))?)
            };
            (part(0)?, part(1)?, part(2)?)
        } else {
            // Legacy: heads first, each holding its own [q; k; v].
            let r = qkv.reshape((b * heads, 3 * ch, t))?;
            (
                r.narrow(1, 0, ch)?,
                r.narrow(1, ch, ch)?,
                r.narrow(1, 2 * ch, ch)?,
            )
        };
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = (q * scale)?;
        let k = (k * scale)?;
        let weight = q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)?; // (bh, t, t)
        let dt = weight.dtype();
        let weight = crate::norm::softmax_last_dim(&weight.to_dtype(DType::F32)?)?.to_dtype(dt)?;
        // a[c, t] = sum_s v[c, s] w[t, s]
        let a = v
            .contiguous()?
            .matmul(&weight.transpose(1, 2)?.contiguous()?)?;
        let a = a.reshape((b, c, t))?;
        let h = self.proj_out.forward(&a)?;
        Ok((xr + h)?.reshape((b, c, hh, ww))?)
    }
}

// A few dozen layers per network, built once: the size difference between variants is
// irrelevant, and boxing would add an indirection per layer call.
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    Conv(Conv2d),
    Res(ResBlock),
    Attn(AttentionBlock),
    Down(Conv2d),
    Up(Conv2d),
}

impl Layer {
    pub fn new(
        w: &Weights,
        spec: &LayerSpec,
        temb: usize,
        scale_shift: bool,
        new_order: bool,
    ) -> Result<Self> {
        Ok(match *spec {
            LayerSpec::ConvIn { cin, cout } => Layer::Conv(layers::conv2d(w, cin, cout, 3, 1, 1)?),
            LayerSpec::Res {
                cin,
                cout,
                resample,
            } => Layer::Res(ResBlock::new(w, cin, cout, temb, scale_shift, resample)?),
            LayerSpec::Attn { ch, heads } => {
                Layer::Attn(AttentionBlock::new(w, ch, heads, new_order)?)
            }
            LayerSpec::Down { ch } => Layer::Down(layers::conv2d(&w.pp("op"), ch, ch, 3, 2, 1)?),
            LayerSpec::Up { ch } => Layer::Up(layers::conv2d(&w.pp("conv"), ch, ch, 3, 1, 1)?),
        })
    }

    pub fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(c) | Layer::Down(c) => Ok(c.forward(x)?),
            Layer::Res(r) => r.forward(x, emb_act),
            Layer::Attn(a) => a.forward(x),
            Layer::Up(c) => Ok(c.forward(&nearest2(x)?)?),
        }
    }
}

/// A `TimestepEmbedSequential`.
pub struct Sequential(pub Vec<Layer>);

impl Sequential {
    pub fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.0 {
            h = l.forward(&h, emb_act)?;
        }
        Ok(h)
    }
}
