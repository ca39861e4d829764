//! Floating-point operations of one ADM UNet forward pass (a multiply-add counts as 2),
//! from the config alone: convolutions, linear layers and attention matmuls. Norms,
//! activations, pooling and additions are left out, as in torch's FlopCounterMode.

use super::config::AdmConfig;
use super::plan::{plan, LayerSpec, Resample};
use crate::error::Result;

fn conv(cin: usize, cout: usize, k: usize, h: usize, w: usize) -> f64 {
    2.0 * (cin * cout * k * k) as f64 * (h * w) as f64
}

/// FLOPs of one layer whose input is `h × w`; returns the output size too.
fn layer(l: &LayerSpec, temb: usize, scale_shift: bool, h: usize, w: usize) -> (f64, usize, usize) {
    match *l {
        LayerSpec::ConvIn { cin, cout } => (conv(cin, cout, 3, h, w), h, w),
        LayerSpec::Res {
            cin,
            cout,
            resample,
        } => {
            let (ho, wo) = match resample {
                Resample::None => (h, w),
                Resample::Down => (h / 2, w / 2),
                Resample::Up => (2 * h, 2 * w),
            };
            let emb = 2.0 * (temb * if scale_shift { 2 * cout } else { cout }) as f64;
            let skip = if cin != cout {
                conv(cin, cout, 1, ho, wo)
            } else {
                0.0
            };
            (
                conv(cin, cout, 3, ho, wo) + conv(cout, cout, 3, ho, wo) + emb + skip,
                ho,
                wo,
            )
        }
        LayerSpec::Attn { ch, .. } => {
            let n = (h * w) as f64;
            let c = ch as f64;
            // qkv (3c x c) and proj_out (c x c) per position, then q.k and w.v.
            (2.0 * n * 4.0 * c * c + 2.0 * 2.0 * n * n * c, h, w)
        }
        LayerSpec::Down { ch } => {
            let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
            (conv(ch, ch, 3, ho, wo), ho, wo)
        }
        LayerSpec::Up { ch } => (conv(ch, ch, 3, 2 * h, 2 * w), 2 * h, 2 * w),
    }
}

/// FLOPs of one forward pass on a single `h × w` image.
pub fn forward_flops(cfg: &AdmConfig, h: usize, w: usize) -> Result<f64> {
    let p = plan(cfg)?;
    let temb = cfg.time_embed_dim();
    let ss = cfg.use_scale_shift_norm;
    let mut f = 2.0 * (cfg.num_channels * temb + temb * temb) as f64;
    let (mut hh, mut ww) = (h, w);
    let blocks = p
        .input_blocks
        .iter()
        .chain(std::iter::once(&p.middle_block))
        .chain(p.output_blocks.iter());
    for b in blocks {
        for l in &b.layers {
            let (df, h2, w2) = layer(l, temb, ss, hh, ww);
            f += df;
            hh = h2;
            ww = w2;
        }
    }
    let ch0 = cfg.level_channels()?[0];
    f += conv(ch0, cfg.out_channels(), 3, hh, ww);
    Ok(f)
}
