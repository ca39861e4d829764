//! A diffusion prior's denoising energy of clean images, and choosing between candidate
//! start points with it.
//!
//! E(x) = (1/|T|) Σ_{t∈T} ‖ε̂(sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) z_t, t) − z_t‖² / n: the denoising
//! loss of the diffusion ELBO at a few timesteps (unweighted, one noise draw per timestep,
//! the same draws for every candidate). Lower is more plausible under the prior. DPnP uses it
//! to pick, per chain, among start points the measurement cannot tell apart, e.g. x and −x
//! in phase retrieval, whose likelihoods are equal.

use candle_core::{DType, Tensor};
use genprior_diffusion::{BatchNoise, Schedule, ScoreModel};

use crate::denoiser::Denoiser;
use crate::error::{invalid, Result};

/// The timesteps [`denoising_energy`] uses by default (of a T = 1000 schedule, scaled).
pub fn default_energy_timesteps(schedule: &Schedule) -> Vec<usize> {
    let t = schedule.alphas_cumprod().len();
    [0.1, 0.25, 0.4]
        .iter()
        .map(|f| ((t as f64 * f).round() as usize).min(t - 1))
        .collect()
}

/// E(x_b) for each image of `x` (`(B, C, H, W)`), noise from `seed`, image b on the stream
/// `first_index + b` (see the module docs). Costs `timesteps.len()` batched network
/// evaluations.
pub fn denoising_energy(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    x: &Tensor,
    timesteps: &[usize],
    seed: u64,
    first_index: u64,
) -> Result<Vec<f64>> {
    let (b, c, _, _) = x.dims4()?;
    if timesteps.is_empty() {
        return invalid("the denoising energy needs at least one timestep");
    }
    let ab = schedule.alphas_cumprod();
    if let Some(&t) = timesteps.iter().find(|&&t| t >= ab.len()) {
        return invalid(format!(
            "timestep {t} is outside the schedule's {} steps",
            ab.len()
        ));
    }
    let mut den = Denoiser::new(model, schedule);
    den.check_channels(c)?;
    let x = x.to_dtype(DType::F32)?.to_device(model.device())?;
    let mut noise = BatchNoise::new(seed, first_index, b);
    let mut total = vec![0f64; b];
    for &t in timesteps {
        let z = noise.draw_like(&x)?.to_device(x.device())?;
        let a = ab[t];
        let xt = (x.affine(a.sqrt(), 0.0)? + z.affine((1.0 - a).sqrt(), 0.0)?)?;
        let eps = den.eps(&xt, t as f64, a)?;
        let e = (eps - z)?.sqr()?.flatten_from(1)?.mean(1)?;
        for (acc, v) in total
            .iter_mut()
            .zip(e.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        {
            *acc += v / timesteps.len() as f64;
        }
    }
    Ok(total)
}

/// Every per-channel sign pattern of `x` (`(B, C, H, W)`): the 2^C tensors whose channel c
/// is multiplied by −1 where bit c of the pattern index is set (pattern 0 is `x`, pattern 1
/// flips channel 0, ...). A measurement that cannot see a per-channel sign, such as
/// |F(M x_c)| in phase retrieval, cannot tell these apart; the prior can.
pub fn sign_patterns(x: &Tensor) -> Result<Vec<Tensor>> {
    let (_, c, _, _) = x.dims4()?;
    if c > 8 {
        return invalid(format!(
            "sign patterns of {c} channels would be 2^{c} candidates; at most 8 channels"
        ));
    }
    (0..1usize << c)
        .map(|pattern| {
            let signs: Vec<f32> = (0..c)
                .map(|ch| if pattern >> ch & 1 == 1 { -1.0 } else { 1.0 })
                .collect();
            let s = Tensor::from_vec(signs, (1, c, 1, 1), x.device())?.to_dtype(x.dtype())?;
            Ok(x.broadcast_mul(&s)?)
        })
        .collect()
}

/// For each chain b, the candidate (of `candidates`, each `(B, C, H, W)`) with the lowest
/// [`denoising_energy`] (every candidate sees the same noise). Returns the chosen batch and,
/// per chain, the index of the chosen candidate.
pub fn lowest_energy(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    candidates: &[Tensor],
    timesteps: &[usize],
    seed: u64,
    first_index: u64,
) -> Result<(Tensor, Vec<usize>)> {
    let Some(first) = candidates.first() else {
        return invalid("no candidate start points");
    };
    let dims = first.dims().to_vec();
    if let Some(c) = candidates.iter().find(|c| c.dims() != dims.as_slice()) {
        return invalid(format!(
            "candidate start points differ in shape: {dims:?} and {:?}",
            c.dims()
        ));
    }
    let energies: Vec<Vec<f64>> = candidates
        .iter()
        .map(|c| denoising_energy(model, schedule, c, timesteps, seed, first_index))
        .collect::<Result<_>>()?;
    let b = dims[0];
    let choice: Vec<usize> = (0..b)
        .map(|i| {
            (0..candidates.len())
                .min_by(|&p, &q| energies[p][i].total_cmp(&energies[q][i]))
                .unwrap_or(0)
        })
        .collect();
    let rows: Vec<Tensor> = choice
        .iter()
        .enumerate()
        .map(|(i, &k)| candidates[k].narrow(0, i, 1))
        .collect::<candle_core::Result<_>>()?;
    Ok((Tensor::cat(&rows, 0)?, choice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use genprior_diffusion::analytic::GaussianPrior;
    use genprior_diffusion::SchedulerConfig;

    #[test]
    fn the_prior_prefers_its_own_sign() {
        let s = Schedule::new(SchedulerConfig {
            clip_sample: false,
            ..SchedulerConfig::default()
        })
        .unwrap();
        // A prior concentrated around +μ: μ is plausible, −μ is not; a draw near the mean
        // scores lower than its negation.
        let mu = vec![0.8, -0.6, 0.7, 0.9];
        let prior =
            GaussianPrior::new(mu.clone(), vec![0.01; 4], [1, 2, 2], &s, &Device::Cpu).unwrap();
        let plus = Tensor::from_vec(
            mu.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, 1, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let minus = plus.neg().unwrap();
        let both = Tensor::cat(&[&plus, &minus], 0).unwrap();
        let ts = default_energy_timesteps(&s);
        assert_eq!(ts, vec![100, 250, 400]);
        let e = denoising_energy(&prior, &s, &both, &ts, 3, 0).unwrap();
        assert!(e[0] < e[1], "{e:?}");
        // Per-chain choice between x and −x picks +μ whichever slot it is in.
        let a = Tensor::cat(&[&plus, &minus], 0).unwrap();
        let b = Tensor::cat(&[&minus, &plus], 0).unwrap();
        let (chosen, idx) = lowest_energy(&prior, &s, &[a, b], &ts, 5, 0).unwrap();
        assert_eq!(idx, vec![0, 1]);
        let want = Tensor::cat(&[&plus, &plus], 0).unwrap();
        let d = (chosen - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        assert!(denoising_energy(&prior, &s, &both, &[], 0, 0).is_err());
        assert!(denoising_energy(&prior, &s, &both, &[5000], 0, 0).is_err());
    }

    #[test]
    fn per_channel_signs_are_chosen_by_the_prior() {
        let s = Schedule::new(SchedulerConfig {
            clip_sample: false,
            ..SchedulerConfig::default()
        })
        .unwrap();
        // Three channels, each concentrated around its own non-zero mean.
        let mu = vec![
            0.8, -0.6, 0.7, 0.9, -0.7, 0.5, 0.6, -0.8, 0.9, 0.7, -0.5, 0.8,
        ];
        let prior =
            GaussianPrior::new(mu.clone(), vec![0.01; 12], [3, 2, 2], &s, &Device::Cpu).unwrap();
        let truth = Tensor::from_vec(
            mu.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, 3, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        // A start with channel 1 flipped: of the 8 patterns, the one flipping it back wins.
        let flip = Tensor::from_vec(vec![1f32, -1.0, 1.0], (1, 3, 1, 1), &Device::Cpu).unwrap();
        let start = truth.broadcast_mul(&flip).unwrap();
        let cands = sign_patterns(&start).unwrap();
        assert_eq!(cands.len(), 8);
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&cands[0]), v(&start));
        for (i, a) in cands.iter().enumerate() {
            for b in &cands[i + 1..] {
                assert_ne!(v(a), v(b));
            }
        }
        let ts = default_energy_timesteps(&s);
        let (chosen, idx) = lowest_energy(&prior, &s, &cands, &ts, 9, 0).unwrap();
        assert_eq!(idx, vec![0b010]);
        assert_eq!(v(&chosen), v(&truth));
    }
}
