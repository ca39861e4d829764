//! Floating-point operations of one `UNet2DModel` forward pass (a multiply-add counts
//! as 2), from the config alone: convolutions, linear layers and attention matmuls.
//! Norms, activations and additions are left out (they are memory-bound and small).

use super::config::UNet2DConfig;

fn conv(cin: usize, cout: usize, k: usize, h: usize, w: usize) -> f64 {
    2.0 * (cin * cout * k * k) as f64 * (h * w) as f64
}

fn resnet(cin: usize, cout: usize, temb: usize, scale_shift: bool, h: usize, w: usize) -> f64 {
    let proj = 2.0 * (temb * if scale_shift { 2 * cout } else { cout }) as f64;
    let short = if cin != cout {
        conv(cin, cout, 1, h, w)
    } else {
        0.0
    };
    conv(cin, cout, 3, h, w) + conv(cout, cout, 3, h, w) + proj + short
}

fn attention(c: usize, h: usize, w: usize) -> f64 {
    let n = (h * w) as f64;
    let c = c as f64;
    4.0 * 2.0 * n * c * c + 2.0 * 2.0 * n * n * c
}

/// FLOPs of one forward pass on a single `h × w` image.
pub fn forward_flops(cfg: &UNet2DConfig, h: usize, w: usize) -> f64 {
    let ch = &cfg.block_out_channels;
    let temb = cfg.time_embed_dim();
    let ss = cfg.resnet_time_scale_shift == "scale_shift";
    let t_in = if cfg.time_embedding_type == "fourier" {
        2 * ch[0]
    } else {
        ch[0]
    };
    let mut f = 2.0 * (t_in * temb + temb * temb) as f64;
    f += conv(cfg.in_channels, ch[0], 3, h, w);
    let (mut hh, mut ww) = (h, w);
    let mut out = ch[0];
    let n = ch.len();
    for (i, ty) in cfg.down_block_types.iter().enumerate() {
        let cin = out;
        out = ch[i];
        for l in 0..cfg.layers_per_block {
            f += resnet(if l == 0 { cin } else { out }, out, temb, ss, hh, ww);
            if ty == "AttnDownBlock2D" {
                f += attention(out, hh, ww);
            }
        }
        if i + 1 < n {
            hh = hh.div_ceil(2);
            ww = ww.div_ceil(2);
            f += conv(out, out, 3, hh, ww);
        }
    }
    let top = ch[n - 1];
    if cfg.mid_block_type.is_some() {
        f += 2.0 * resnet(top, top, temb, ss, hh, ww);
        if cfg.add_attention {
            f += attention(top, hh, ww);
        }
    }
    let rev: Vec<usize> = ch.iter().rev().cloned().collect();
    let mut out = rev[0];
    for (i, ty) in cfg.up_block_types.iter().enumerate() {
        let prev = out;
        out = rev[i];
        let cin = rev[(i + 1).min(n - 1)];
        let layers = cfg.layers_per_block + 1;
        for l in 0..layers {
            let skip = if l == layers - 1 { cin } else { out };
            let res_in = if l == 0 { prev } else { out };
            f += resnet(res_in + skip, out, temb, ss, hh, ww);
            if ty == "AttnUpBlock2D" {
                f += attention(out, hh, ww);
            }
        }
        if i + 1 < n {
            hh *= 2;
            ww *= 2;
            f += conv(out, out, 3, hh, ww);
        }
    }
    f += conv(ch[0], cfg.out_channels, 3, hh, ww);
    f
}
