//! The layer layout of guided-diffusion's `UNetModel`, from the config alone. The model
//! builder, the FLOP count and the expected checkpoint names all walk this one plan, so
//! the wiring is written once.

use super::config::AdmConfig;
use crate::error::Result;

/// Resampling done inside a ResBlock (`resblock_updown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    None,
    Down,
    Up,
}

/// One layer of a `TimestepEmbedSequential`, at its checkpoint index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSpec {
    /// The input 3×3 convolution (`input_blocks.0.0`).
    ConvIn {
        cin: usize,
        cout: usize,
    },
    Res {
        cin: usize,
        cout: usize,
        resample: Resample,
    },
    Attn {
        ch: usize,
        heads: usize,
    },
    /// Stride-2 3×3 convolution (`op`).
    Down {
        ch: usize,
    },
    /// Nearest ×2 then 3×3 convolution (`conv`).
    Up {
        ch: usize,
    },
}

/// A sequential block and the downsampling factor of its input.
#[derive(Debug, Clone)]
pub struct BlockSpec {
    pub layers: Vec<LayerSpec>,
    pub ds: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub input_blocks: Vec<BlockSpec>,
    pub middle_block: BlockSpec,
    pub output_blocks: Vec<BlockSpec>,
    /// Channels entering `out` (= channels of level 0).
    pub out_in: usize,
}

pub fn plan(cfg: &AdmConfig) -> Result<Plan> {
    cfg.validate()?;
    let chans = cfg.level_channels()?;
    let attn = cfg.attention_ds()?;
    let nrb = cfg.num_res_blocks;
    let res = |cin, cout, resample| LayerSpec::Res {
        cin,
        cout,
        resample,
    };
    let mut ch = chans[0];
    let mut input_blocks = vec![BlockSpec {
        layers: vec![LayerSpec::ConvIn {
            cin: cfg.in_channels,
            cout: ch,
        }],
        ds: 1,
    }];
    let mut skips = vec![ch];
    let mut ds = 1;
    for (level, &c) in chans.iter().enumerate() {
        for _ in 0..nrb {
            let mut layers = vec![res(ch, c, Resample::None)];
            ch = c;
            if attn.contains(&ds) {
                layers.push(LayerSpec::Attn {
                    ch,
                    heads: cfg.heads(ch, false),
                });
            }
            input_blocks.push(BlockSpec { layers, ds });
            skips.push(ch);
        }
        if level + 1 != chans.len() {
            let layer = if cfg.resblock_updown {
                res(ch, ch, Resample::Down)
            } else {
                LayerSpec::Down { ch }
            };
            input_blocks.push(BlockSpec {
                layers: vec![layer],
                ds,
            });
            skips.push(ch);
            ds *= 2;
        }
    }
    let middle_block = BlockSpec {
        layers: vec![
            res(ch, ch, Resample::None),
            LayerSpec::Attn {
                ch,
                heads: cfg.heads(ch, false),
            },
            res(ch, ch, Resample::None),
        ],
        ds,
    };
    let mut output_blocks = Vec::new();
    for (level, &c) in chans.iter().enumerate().rev() {
        for i in 0..=nrb {
            let skip = skips.pop().unwrap_or(0);
            let block_ds = ds;
            let mut layers = vec![res(ch + skip, c, Resample::None)];
            ch = c;
            if attn.contains(&ds) {
                layers.push(LayerSpec::Attn {
                    ch,
                    heads: cfg.heads(ch, true),
                });
            }
            if level > 0 && i == nrb {
                layers.push(if cfg.resblock_updown {
                    res(ch, ch, Resample::Up)
                } else {
                    LayerSpec::Up { ch }
                });
                ds /= 2;
            }
            output_blocks.push(BlockSpec {
                layers,
                ds: block_ds,
            });
        }
    }
    Ok(Plan {
        input_blocks,
        middle_block,
        output_blocks,
        out_in: ch,
    })
}

impl LayerSpec {
    /// Checkpoint tensors of this layer under `prefix`, with their shapes.
    pub fn params(
        &self,
        prefix: &str,
        temb: usize,
        scale_shift: bool,
    ) -> Vec<(String, Vec<usize>)> {
        let p = |n: &str, s: Vec<usize>| (format!("{prefix}.{n}"), s);
        match *self {
            LayerSpec::ConvIn { cin, cout } => {
                vec![p("weight", vec![cout, cin, 3, 3]), p("bias", vec![cout])]
            }
            LayerSpec::Res { cin, cout, .. } => {
                let emb = if scale_shift { 2 * cout } else { cout };
                let mut v = vec![
                    p("in_layers.0.weight", vec![cin]),
                    p("in_layers.0.bias", vec![cin]),
                    p("in_layers.2.weight", vec![cout, cin, 3, 3]),
                    p("in_layers.2.bias", vec![cout]),
                    p("emb_layers.1.weight", vec![emb, temb]),
                    p("emb_layers.1.bias", vec![emb]),
                    p("out_layers.0.weight", vec![cout]),
                    p("out_layers.0.bias", vec![cout]),
                    p("out_layers.3.weight", vec![cout, cout, 3, 3]),
                    p("out_layers.3.bias", vec![cout]),
                ];
                if cin != cout {
                    v.push(p("skip_connection.weight", vec![cout, cin, 1, 1]));
                    v.push(p("skip_connection.bias", vec![cout]));
                }
                v
            }
            LayerSpec::Attn { ch, .. } => vec![
                p("norm.weight", vec![ch]),
                p("norm.bias", vec![ch]),
                p("qkv.weight", vec![3 * ch, ch, 1]),
                p("qkv.bias", vec![3 * ch]),
                p("proj_out.weight", vec![ch, ch, 1]),
                p("proj_out.bias", vec![ch]),
            ],
            LayerSpec::Down { ch } => {
                vec![p("op.weight", vec![ch, ch, 3, 3]), p("op.bias", vec![ch])]
            }
            LayerSpec::Up { ch } => vec![
                p("conv.weight", vec![ch, ch, 3, 3]),
                p("conv.bias", vec![ch]),
            ],
        }
    }
}

/// Every checkpoint tensor an ADM UNet of this config has, with its shape, in
/// guided-diffusion's naming.
pub fn expected_tensors(cfg: &AdmConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let plan = plan(cfg)?;
    let mc = cfg.num_channels;
    let temb = cfg.time_embed_dim();
    let ss = cfg.use_scale_shift_norm;
    let mut v = vec![
        ("time_embed.0.weight".to_string(), vec![temb, mc]),
        ("time_embed.0.bias".to_string(), vec![temb]),
        ("time_embed.2.weight".to_string(), vec![temb, temb]),
        ("time_embed.2.bias".to_string(), vec![temb]),
    ];
    if cfg.class_cond {
        v.push(("label_emb.weight".into(), vec![cfg.num_classes, temb]));
    }
    for (k, b) in plan.input_blocks.iter().enumerate() {
        for (m, l) in b.layers.iter().enumerate() {
            v.extend(l.params(&format!("input_blocks.{k}.{m}"), temb, ss));
        }
    }
    for (m, l) in plan.middle_block.layers.iter().enumerate() {
        v.extend(l.params(&format!("middle_block.{m}"), temb, ss));
    }
    for (k, b) in plan.output_blocks.iter().enumerate() {
        for (m, l) in b.layers.iter().enumerate() {
            v.extend(l.params(&format!("output_blocks.{k}.{m}"), temb, ss));
        }
    }
    v.push(("out.0.weight".into(), vec![plan.out_in]));
    v.push(("out.0.bias".into(), vec![plan.out_in]));
    v.push((
        "out.2.weight".into(),
        vec![cfg.out_channels(), chans0(cfg)?, 3, 3],
    ));
    v.push(("out.2.bias".into(), vec![cfg.out_channels()]));
    Ok(v)
}

fn chans0(cfg: &AdmConfig) -> Result<usize> {
    Ok(cfg.level_channels()?[0])
}
