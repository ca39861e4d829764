//! DPnP — diffusion plug-and-play posterior sampling (Xu & Chi 2024), the outer loop:
//! ```text
//! for k in 0..K:
//!     x_{k+1/2} ~ PCS:  ∝ exp( L(x; y) − ‖x − x_k‖² / (2 η_k²) )
//!     x_{k+1}   ~ DDS:  p(x | x + η_k w = x_{k+1/2})
//! ```
//! With a constant η the pair is a Gibbs sampler on p(x)·e^{L(z)}·N(z; x, η²I), whose
//! x-marginal π_η ∝ p(x)·(e^L * N(0, η²I))(x) is the stationary law; a decreasing schedule
//! drives it towards the posterior. PCS is [`crate::pcs`](mod@crate::pcs) (MALA by default,
//! ULA, or exact for linear-Gaussian tasks), DDS is [`crate::dds`] (DDIM on the refined grid by
//! default, or DDPM).
//!
//! The K posterior samples run as one batch of K chains. All randomness comes from one seed:
//! the warm start, PCS (one `StdRng`, chains in order) and DDS (one stream per chain) each
//! use their own sub-seed of it.

use candle_core::Tensor;
use genprior_diffusion::{BatchNoise, Schedule, ScoreModel};
use genprior_inverse::Operator;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::dds::{dds_with_budget, DdsMethod};
use crate::denoiser::Denoiser;
use crate::dps::{dps, DpsConfig};
use crate::error::{invalid, Result};
use crate::pcs::{pcs, PcsConfig};
use crate::seeds;

/// The annealing schedule η_0 ≥ η_1 ≥ … of the outer loop.
#[derive(Debug, Clone, PartialEq)]
pub enum EtaSchedule {
    /// The reference schedule: η_max repeated `k_start` times, then `k` values geometric from
    /// η_max to η_min inclusive (K = k_start + k outer steps; k = 1 gives just η_min, so the
    /// last η is always η_min).
    Annealed {
        eta_max: f64,
        eta_min: f64,
        k_start: usize,
        k: usize,
    },
    /// A constant η for `steps` outer steps (its stationary law is π_η).
    Constant { eta: f64, steps: usize },
    /// Explicit values.
    Custom(Vec<f64>),
}

impl Default for EtaSchedule {
    /// η_max = 0.4, η_min = 0.16, k_start = 4, k = 12 (16 outer steps).
    fn default() -> Self {
        Self::Annealed {
            eta_max: 0.4,
            eta_min: 0.16,
            k_start: 4,
            k: 12,
        }
    }
}

impl EtaSchedule {
    /// The η values, validated (each finite and > 0, at least one).
    pub fn etas(&self) -> Result<Vec<f64>> {
        let v = match self {
            Self::Annealed {
                eta_max,
                eta_min,
                k_start,
                k,
            } => {
                let (hi, lo, k) = (*eta_max, *eta_min, *k);
                if !(hi.is_finite() && lo.is_finite() && lo > 0.0 && hi >= lo) {
                    return invalid(format!(
                        "the η schedule needs η_max ≥ η_min > 0, got η_max {hi}, η_min {lo}"
                    ));
                }
                let mut v = vec![hi; *k_start];
                if k == 1 {
                    // A one-point "geometric" run ends at η_min (numpy's geomspace would give η_max).
                    v.push(lo);
                } else {
                    let r = (lo / hi).ln();
                    v.extend((0..k).map(|i| {
                        if i + 1 == k {
                            lo
                        } else {
                            hi * (r * i as f64 / (k - 1) as f64).exp()
                        }
                    }));
                }
                v
            }
            Self::Constant { eta, steps } => vec![*eta; *steps],
            Self::Custom(v) => v.clone(),
        };
        if v.is_empty() {
            return invalid("the η schedule has no outer steps");
        }
        if let Some(e) = v.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
            return invalid(format!("every η must be a finite number > 0, got {e}"));
        }
        Ok(v)
    }
}

/// Where the chains start.
#[derive(Debug, Clone)]
pub enum WarmStart {
    /// The operator's classical baseline reconstruction of y (every chain the same).
    Baseline,
    /// Pure noise x_0 ~ N(0, I), independent per chain.
    Noise,
    /// A DPS run (one per chain) with these settings.
    Dps(DpsConfig),
    /// Given start points: `(1, C, H, W)` (shared) or `(K, C, H, W)`.
    Given(Tensor),
}

/// DPnP settings.
#[derive(Debug, Clone)]
pub struct DpnpConfig {
    pub etas: EtaSchedule,
    pub dds: DdsMethod,
    /// At most this many network evaluations per DDS call (`None`: the full DDIM grid or all
    /// usable DDPM timesteps). See [`crate::dds::dds_with_budget`].
    pub dds_steps: Option<usize>,
    pub pcs: PcsConfig,
    pub warm_start: WarmStart,
    /// Posterior samples K (chains, run as one batch).
    pub samples: usize,
    pub seed: u64,
}

impl Default for DpnpConfig {
    fn default() -> Self {
        Self {
            etas: EtaSchedule::default(),
            dds: DdsMethod::Ddim,
            dds_steps: None,
            pcs: PcsConfig::default(),
            warm_start: WarmStart::Baseline,
            samples: 1,
            seed: 0,
        }
    }
}

/// What one outer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OuterStep {
    /// 1-based.
    pub step: usize,
    pub total: usize,
    pub eta: f64,
    /// Mean PCS acceptance rate over the chains (1 for ULA and exact PCS).
    pub acceptance: f64,
    /// Network evaluations so far (warm start included).
    pub nfe: usize,
}

/// Progress reports, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// A DPS warm-start step finished.
    WarmStart { step: usize, total: usize },
    /// PCS of outer step `step` is starting.
    Pcs { step: usize, total: usize, eta: f64 },
    /// An inner DDS step of outer step `step` finished.
    Dds {
        step: usize,
        inner: usize,
        inner_total: usize,
    },
    /// An outer step finished.
    Outer(OuterStep),
}

/// DPnP result.
#[derive(Debug, Clone)]
pub struct DpnpOutput {
    /// `(K, C, H, W)` posterior samples x_K.
    pub samples: Tensor,
    /// The start points x_0.
    pub init: Tensor,
    /// Network evaluations (batched calls), warm start included.
    pub nfe: usize,
    /// Per outer step: η, mean acceptance, cumulative NFE.
    pub steps: Vec<OuterStep>,
}

impl DpnpOutput {
    /// Mean PCS acceptance over all outer steps.
    pub fn mean_acceptance(&self) -> f64 {
        self.steps.iter().map(|s| s.acceptance).sum::<f64>() / self.steps.len().max(1) as f64
    }
}

fn start_points(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: &Tensor,
    cfg: &DpnpConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Tensor, usize)> {
    let k = cfg.samples;
    let [c, h, w] = op.image_shape();
    let device = model.device();
    Ok(match &cfg.warm_start {
        WarmStart::Baseline => {
            let b = op
                .baseline(y)?
                .to_dtype(candle_core::DType::F32)?
                .to_device(device)?;
            (b.broadcast_as((k, c, h, w))?.contiguous()?, 0)
        }
        WarmStart::Noise => {
            let mut noise = BatchNoise::new(seeds::derive(cfg.seed, seeds::WARM_START), 0, k);
            (noise.draw(&[c, h, w], device)?, 0)
        }
        WarmStart::Dps(dcfg) => {
            let out = dps(
                model,
                schedule,
                op,
                y,
                k,
                dcfg,
                seeds::derive(cfg.seed, seeds::WARM_START),
                &mut |s, t| progress(Progress::WarmStart { step: s, total: t }),
            )?;
            (out.samples, out.nfe)
        }
        WarmStart::Given(x) => {
            let x = x.to_dtype(candle_core::DType::F32)?.to_device(device)?;
            match x.dims() {
                [1, cc, hh, ww] if (*cc, *hh, *ww) == (c, h, w) => (x.broadcast_as((k, c, h, w))?.contiguous()?, 0),
                [b, cc, hh, ww] if *b == k && (*cc, *hh, *ww) == (c, h, w) => (x, 0),
                d => {
                    return invalid(format!(
                        "DPnP start points must have shape (1, {c}, {h}, {w}) or ({k}, {c}, {h}, {w}), got {d:?}"
                    ))
                }
            }
        }
    })
}

/// Runs DPnP: K = `cfg.samples` chains against the measurement `y`, validated by the operator:
/// batch 1 (every chain samples the posterior of the same y) or batch K (chain k samples the
/// posterior of y_k, e.g. K different images reconstructed as one batch). `progress` gets every
/// [`Progress`] event.
pub fn dpnp(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    op: &dyn Operator,
    y: &Tensor,
    cfg: &DpnpConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<DpnpOutput> {
    let etas = cfg.etas.etas()?;
    let k = cfg.samples;
    if k == 0 {
        return invalid("DPnP needs at least one posterior sample (K ≥ 1)");
    }
    op.validate_measurement(y)?;
    let by = y.dim(0)?;
    if by != 1 && by != k {
        return invalid(format!(
            "DPnP takes a measurement batch of 1 or of the chain count {k}, got {by}"
        ));
    }
    let [c, _, _] = op.image_shape();
    let mut den = Denoiser::new(model, schedule);
    den.check_channels(c)?;
    let (init, warm_nfe) = start_points(model, schedule, op, y, cfg, progress)?;
    let mut pcs_rng = StdRng::seed_from_u64(seeds::derive(cfg.seed, seeds::PCS));
    let mut dds_noise = BatchNoise::new(seeds::derive(cfg.seed, seeds::DDS), 0, k);
    let mut x = init.clone();
    let total = etas.len();
    let mut steps = Vec::with_capacity(total);
    for (i, &eta) in etas.iter().enumerate() {
        let step = i + 1;
        progress(Progress::Pcs { step, total, eta });
        let p = pcs(op, y, &x, eta, &cfg.pcs, &mut pcs_rng)?;
        let acceptance = p.acceptance.iter().sum::<f64>() / p.acceptance.len().max(1) as f64;
        let z = p
            .samples
            .to_dtype(candle_core::DType::F32)?
            .to_device(model.device())?;
        x = dds_with_budget(
            &mut den,
            cfg.dds,
            &z,
            eta,
            cfg.dds_steps,
            &mut dds_noise,
            &mut |inner, inner_total| {
                progress(Progress::Dds {
                    step,
                    inner,
                    inner_total,
                })
            },
        )?;
        let info = OuterStep {
            step,
            total,
            eta,
            acceptance,
            nfe: warm_nfe + den.nfe(),
        };
        progress(Progress::Outer(info));
        steps.push(info);
    }
    Ok(DpnpOutput {
        samples: x,
        init,
        nfe: warm_nfe + den.nfe(),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schedule() {
        let v = EtaSchedule::default().etas().unwrap();
        assert_eq!(v.len(), 16);
        assert!(v[..5].iter().all(|&e| e == 0.4));
        assert_eq!(v[15], 0.16);
        // Geometric: constant ratio over the last 12 values.
        let r = (0.16f64 / 0.4).powf(1.0 / 11.0);
        for i in 5..16 {
            assert!((v[i] / v[i - 1] - r).abs() < 1e-12);
        }
        assert!(EtaSchedule::Constant { eta: 0.0, steps: 3 }.etas().is_err());
        assert!(EtaSchedule::Constant { eta: 0.3, steps: 0 }.etas().is_err());
        assert!(EtaSchedule::Annealed {
            eta_max: 0.1,
            eta_min: 0.2,
            k_start: 1,
            k: 3
        }
        .etas()
        .is_err());
        assert!(EtaSchedule::Custom(vec![0.3, f64::NAN]).etas().is_err());
        assert_eq!(
            EtaSchedule::Annealed {
                eta_max: 0.4,
                eta_min: 0.2,
                k_start: 1,
                k: 1
            }
            .etas()
            .unwrap(),
            vec![0.4, 0.2]
        );
    }

    #[test]
    fn reference_run_network_evaluations() {
        // The spec's estimate for the reference schedule on the linear-β, T = 1000 schedule is
        // ≈ 1,400 (DDS-DDPM) score evaluations per DPnP run. For DDS-DDIM it says ≈ 2,400 (the
        // reference code skips steps at large η); the refined grid used here (whose per-η sizes
        // match the spec's 123 / 203 / 291 at η = 0.1 / 0.4 / 0.8) makes 2,823.
        let s = Schedule::ddpm_default();
        let etas = EtaSchedule::default().etas().unwrap();
        let total = |m| {
            etas.iter()
                .map(|&e| crate::dds::dds_nfe(&s, m, e).unwrap())
                .sum::<usize>()
        };
        let (ddim, ddpm) = (total(DdsMethod::Ddim), total(DdsMethod::Ddpm));
        eprintln!("reference DPnP run: {ddim} NFE with DDS-DDIM, {ddpm} with DDS-DDPM");
        assert!(ddim > ddpm);
        assert!((1300..1500).contains(&ddpm), "{ddpm}");
    }
}
