//! The small layers both UNet families are built from, loaded by checkpoint key.

use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::conv::Conv2d;
use crate::norm::GroupNorm;

use crate::error::{NnError, Result};
use crate::weights::Weights;

/// `nn.Conv2d(cin, cout, k, stride, padding)` with bias.
pub fn conv2d(
    w: &Weights,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    let weight = w.get(&[cout, cin, k, k], "weight")?;
    let bias = w.get(&[cout], "bias")?;
    Ok(Conv2d::new(weight, Some(bias), padding, stride))
}

/// `nn.Conv1d(cin, cout, 1)` (ADM's attention `qkv`/`proj_out`), loaded as a
/// `Linear` acting on the channel dimension.
pub fn conv1x1_as_linear(w: &Weights, cin: usize, cout: usize) -> Result<Linear> {
    let weight = w.get(&[cout, cin, 1], "weight")?.squeeze(2)?;
    let bias = w.get(&[cout], "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `nn.Linear(cin, cout)` with bias.
pub fn linear(w: &Weights, cin: usize, cout: usize) -> Result<Linear> {
    let weight = w.get(&[cout, cin], "weight")?;
    let bias = w.get(&[cout], "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `nn.GroupNorm(groups, channels, eps)` with affine parameters.
pub fn group_norm(w: &Weights, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(NnError::InvalidConfig(format!(
            "group norm at `{}`: {channels} channels cannot be split into {groups} groups",
            w.prefix_name()
        )));
    }
    let weight = w.get(&[channels], "weight")?;
    let bias = w.get(&[channels], "bias")?;
    Ok(GroupNorm::new(weight, bias, groups, eps)?)
}

/// `act(norm(x))`, fused into one pass when the activation is SiLU.
pub fn norm_act(norm: &GroupNorm, act: Activation, x: &Tensor) -> candle_core::Result<Tensor> {
    match act {
        Activation::Silu => norm.forward_silu(x),
        other => other.forward(&norm.forward(x)?),
    }
}

/// Activation functions named in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    Gelu,
    Relu,
    Mish,
}

impl Activation {
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        match s {
            "silu" | "swish" => Ok(Self::Silu),
            "gelu" => Ok(Self::Gelu),
            "relu" => Ok(Self::Relu),
            "mish" => Ok(Self::Mish),
            other => Err(NnError::Unsupported {
                field,
                value: other.to_string(),
                reason: "expected silu, swish, gelu, relu or mish".into(),
            }),
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _t = crate::profile::scope("activation");
        match self {
            Self::Silu => candle_nn::ops::silu(x),
            // torch's nn.GELU default is the exact erf form.
            Self::Gelu => x.gelu_erf(),
            Self::Relu => x.relu(),
            Self::Mish => {
                // x * tanh(softplus(x)), softplus computed stably.
                let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                x * sp.tanh()?
            }
        }
    }
}

/// Apply a candle `Module`, converting its error.
pub fn apply<M: Module>(m: &M, x: &Tensor) -> Result<Tensor> {
    Ok(m.forward(x)?)
}
