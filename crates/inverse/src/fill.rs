//! Hole filling used by the inpainting and phase-retrieval baselines.
//!
//! Push-pull: observed values are averaged up a 2×2 pyramid until every coarse cell has data,
//! then holes take the value of their first observed ancestor; a few Gauss–Seidel sweeps of the
//! 4-neighbour average over the hole pixels (observed pixels fixed) then smooth the result
//! towards the harmonic interpolant.

/// Number of Gauss–Seidel smoothing sweeps after the push-pull fill.
const SMOOTHING_SWEEPS: usize = 100;

/// Fills the pixels of a row-major `h × w` array where `known` is false; known pixels are
/// returned unchanged. With no known pixel at all the result is 0 everywhere.
pub fn fill_holes(v: &[f64], known: &[bool], h: usize, w: usize) -> Vec<f64> {
    // push
    let mut levels: Vec<(usize, usize, Vec<f64>, Vec<f64>)> = Vec::new();
    let s0: Vec<f64> = v
        .iter()
        .zip(known)
        .map(|(a, &k)| if k { *a } else { 0.0 })
        .collect();
    let w0: Vec<f64> = known.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    levels.push((h, w, s0, w0));
    loop {
        let next = {
            let (lh, lw, ls, lwt) = &levels[levels.len() - 1];
            let (lh, lw) = (*lh, *lw);
            if (lh <= 1 && lw <= 1) || lwt.iter().all(|&x| x > 0.0) {
                break;
            }
            let (nh, nw) = (lh.div_ceil(2), lw.div_ceil(2));
            let mut ns = vec![0.0; nh * nw];
            let mut nwt = vec![0.0; nh * nw];
            for i in 0..lh {
                for j in 0..lw {
                    ns[(i / 2) * nw + j / 2] += ls[i * lw + j];
                    nwt[(i / 2) * nw + j / 2] += lwt[i * lw + j];
                }
            }
            (nh, nw, ns, nwt)
        };
        levels.push(next);
    }
    // pull
    let mut parent: Option<(usize, Vec<f64>)> = None;
    for (lh, lw, ls, lwt) in levels.iter().rev() {
        let mut val = vec![0.0; lh * lw];
        for i in 0..*lh {
            for j in 0..*lw {
                let k = i * lw + j;
                val[k] = if lwt[k] > 0.0 {
                    ls[k] / lwt[k]
                } else if let Some((pw, pv)) = &parent {
                    pv[(i / 2) * pw + j / 2]
                } else {
                    0.0
                };
            }
        }
        parent = Some((*lw, val));
    }
    let mut out = parent.map(|p| p.1).unwrap_or_else(|| vec![0.0; h * w]);
    for (k, &kn) in known.iter().enumerate() {
        if kn {
            out[k] = v[k];
        }
    }
    if known.iter().all(|&k| !k) {
        return out;
    }
    // smooth the holes
    for _ in 0..SMOOTHING_SWEEPS {
        for i in 0..h {
            for j in 0..w {
                let k = i * w + j;
                if known[k] {
                    continue;
                }
                let mut s = 0.0;
                let mut n = 0.0;
                if i > 0 {
                    s += out[k - w];
                    n += 1.0;
                }
                if i + 1 < h {
                    s += out[k + w];
                    n += 1.0;
                }
                if j > 0 {
                    s += out[k - 1];
                    n += 1.0;
                }
                if j + 1 < w {
                    s += out[k + 1];
                    n += 1.0;
                }
                if n > 0.0 {
                    out[k] = s / n;
                }
            }
        }
    }
    out
}
