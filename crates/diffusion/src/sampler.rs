//! Batched DDPM (ancestral) and DDIM samplers over any [`ScoreModel`].
//!
//! The loops are diffusers' `DDPMPipeline` / `DDIMPipeline`: x_T ~ N(0, I), then for each
//! timestep of the inference plan one network evaluation and one scheduler step. All
//! randomness comes from a [`BatchNoise`] (host-side, seeded, one stream per image):
//! first the initial x_T, then one draw per step that adds noise (DDPM: every step with
//! t > 0; DDIM: every step when η > 0).

use std::cell::Cell;

use candle_core::{DType, Device, Tensor};

use crate::error::{invalid, Result};
use crate::model::ScoreModel;
use crate::noise::BatchNoise;
use crate::schedule::{Schedule, StepPair};
use crate::step::check_eta;

/// Which sampler to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// Ancestral DDPM with the schedule's `variance_type`.
    Ddpm,
    /// DDIM with stochasticity η ∈ [0, 1] (0: deterministic, 1: DDPM-like variance).
    /// `use_clipped_model_output` recomputes ε from the clipped x̂₀ (diffusers' flag of
    /// the same name; its pipeline default is false).
    Ddim {
        eta: f64,
        use_clipped_model_output: bool,
    },
}

impl SamplerKind {
    pub fn ddim(eta: f64) -> Self {
        SamplerKind::Ddim {
            eta,
            use_clipped_model_output: false,
        }
    }
}

/// Progress report, sent after every network evaluation + step.
#[derive(Clone, Copy, Debug)]
pub struct StepEvent {
    /// Steps completed so far (1-based).
    pub step: usize,
    /// Total number of steps.
    pub total: usize,
    /// Training timestep just processed.
    pub timestep: usize,
    /// Network evaluations so far in this call (one per step: the batch is evaluated
    /// at once).
    pub nfe: usize,
}

/// Sampler result.
#[derive(Clone, Debug)]
pub struct SampleOutput {
    /// `(B, C, H, W)` f32 samples, unclamped (≈ [-1, 1] for image models).
    pub images: Tensor,
    /// Network evaluations (batched calls to [`ScoreModel::forward`]).
    pub nfe: usize,
}

fn check_model(model: &dyn ScoreModel, shape: [usize; 4]) -> Result<()> {
    let [b, c, h, w] = shape;
    if b == 0 || c == 0 || h == 0 || w == 0 {
        return invalid(format!("sample shape {shape:?} has a zero dimension"));
    }
    if model.in_channels() != c {
        return invalid(format!(
            "the model takes {} channels but {c} were requested",
            model.in_channels()
        ));
    }
    let oc = model.out_channels();
    if oc != c && oc != 2 * c {
        return invalid(format!(
            "the model outputs {oc} channels; samplers need {c} or {}",
            2 * c
        ));
    }
    Ok(())
}

fn timestep_tensor(t: usize, batch: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(t as f32, batch, device)?)
}

fn run_loop(
    model: &dyn ScoreModel,
    shape: [usize; 4],
    plan: &[StepPair],
    noise: &mut BatchNoise,
    progress: &mut dyn FnMut(&StepEvent),
    mut step: impl FnMut(&Tensor, StepPair, &Tensor, &mut BatchNoise) -> Result<Tensor>,
) -> Result<SampleOutput> {
    check_model(model, shape)?;
    let [b, c, h, w] = shape;
    if noise.batch() != b {
        return invalid(format!(
            "noise source has {} streams for a batch of {b}",
            noise.batch()
        ));
    }
    let device = model.device().clone();
    let mut x = noise.draw(&[c, h, w], &device)?;
    let mut nfe = 0;
    for (i, &pair) in plan.iter().enumerate() {
        let tt = timestep_tensor(pair.t, b, &device)?;
        let out = model.forward(&x, &tt)?.to_dtype(DType::F32)?;
        nfe += 1;
        x = step(&out, pair, &x, noise)?;
        progress(&StepEvent {
            step: i + 1,
            total: plan.len(),
            timestep: pair.t,
            nfe,
        });
    }
    Ok(SampleOutput { images: x, nfe })
}

/// Ancestral DDPM sampling with `steps` inference steps (diffusers' `DDPMPipeline`).
/// `shape` is `(B, C, H, W)`; `noise` must have `B` streams.
pub fn sample_ddpm(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    shape: [usize; 4],
    steps: usize,
    noise: &mut BatchNoise,
    progress: &mut dyn FnMut(&StepEvent),
) -> Result<SampleOutput> {
    let plan = schedule.ddpm_plan(steps)?;
    run_loop(
        model,
        shape,
        &plan,
        noise,
        progress,
        |out, pair, x, noise| {
            let z = if pair.t > 0 {
                Some(noise.draw_like(x)?)
            } else {
                None
            };
            Ok(schedule
                .ddpm_step(out, pair.t, pair.prev, x, z.as_ref())?
                .prev_sample)
        },
    )
}

/// DDIM sampling with `steps` inference steps and stochasticity `eta` ∈ [0, 1]
/// (diffusers' `DDIMPipeline`).
#[allow(clippy::too_many_arguments)]
pub fn sample_ddim(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    shape: [usize; 4],
    steps: usize,
    eta: f64,
    use_clipped_model_output: bool,
    noise: &mut BatchNoise,
    progress: &mut dyn FnMut(&StepEvent),
) -> Result<SampleOutput> {
    check_eta(eta)?;
    let plan = schedule.ddim_plan(steps)?;
    run_loop(
        model,
        shape,
        &plan,
        noise,
        progress,
        |out, pair, x, noise| {
            let z = if eta > 0.0 {
                Some(noise.draw_like(x)?)
            } else {
                None
            };
            Ok(schedule
                .ddim_step(
                    out,
                    pair.t,
                    pair.prev,
                    x,
                    eta,
                    use_clipped_model_output,
                    z.as_ref(),
                )?
                .prev_sample)
        },
    )
}

/// Sample a batch: images `first_index .. first_index + B` of the run `seed` (see
/// [`BatchNoise`]), so splitting a run into batches does not change the images.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &dyn ScoreModel,
    schedule: &Schedule,
    kind: SamplerKind,
    shape: [usize; 4],
    steps: usize,
    seed: u64,
    first_index: u64,
    progress: &mut dyn FnMut(&StepEvent),
) -> Result<SampleOutput> {
    let mut noise = BatchNoise::new(seed, first_index, shape[0]);
    match kind {
        SamplerKind::Ddpm => sample_ddpm(model, schedule, shape, steps, &mut noise, progress),
        SamplerKind::Ddim {
            eta,
            use_clipped_model_output,
        } => sample_ddim(
            model,
            schedule,
            shape,
            steps,
            eta,
            use_clipped_model_output,
            &mut noise,
            progress,
        ),
    }
}

/// A [`ScoreModel`] wrapper that counts forward calls (network evaluations), for
/// samplers that do not report NFE themselves.
pub struct CountingModel<'a> {
    inner: &'a dyn ScoreModel,
    calls: Cell<usize>,
}

impl<'a> CountingModel<'a> {
    pub fn new(inner: &'a dyn ScoreModel) -> Self {
        Self {
            inner,
            calls: Cell::new(0),
        }
    }
    /// Forward calls so far.
    pub fn calls(&self) -> usize {
        self.calls.get()
    }
}

impl ScoreModel for CountingModel<'_> {
    fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        self.inner.forward(x, t)
    }
    fn in_channels(&self) -> usize {
        self.inner.in_channels()
    }
    fn out_channels(&self) -> usize {
        self.inner.out_channels()
    }
    fn sample_size(&self) -> Option<usize> {
        self.inner.sample_size()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytic::GaussianPrior;

    fn prior(schedule: &Schedule) -> GaussianPrior {
        GaussianPrior::new(
            vec![0.3, -0.2, 0.1, 0.0],
            vec![0.2, 0.5, 0.1, 0.3],
            [1, 2, 2],
            schedule,
            &Device::Cpu,
        )
        .unwrap()
    }

    fn run(kind: SamplerKind, batch: usize, first: u64, seed: u64) -> Vec<Vec<f32>> {
        let s = Schedule::ddpm_default();
        let m = prior(&s);
        sample(&m, &s, kind, [batch, 1, 2, 2], 20, seed, first, &mut |_| {})
            .unwrap()
            .images
            .flatten_from(1)
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    #[test]
    fn same_seed_same_images_whatever_the_batching() {
        for kind in [
            SamplerKind::Ddpm,
            SamplerKind::ddim(0.0),
            SamplerKind::ddim(0.7),
        ] {
            let all = run(kind, 4, 0, 3);
            assert_eq!(all, run(kind, 4, 0, 3), "{kind:?}: not reproducible");
            let tail = run(kind, 2, 2, 3);
            assert_eq!(&all[2..], &tail[..], "{kind:?}: depends on batching");
            assert_ne!(all, run(kind, 4, 0, 4), "{kind:?}: seed ignored");
            assert_ne!(all[0], all[1]);
        }
    }

    #[test]
    fn nfe_and_counting_wrapper() {
        let s = Schedule::ddpm_default();
        let m = prior(&s);
        let counted = CountingModel::new(&m);
        let mut seen = Vec::new();
        let out = sample(
            &counted,
            &s,
            SamplerKind::ddim(0.0),
            [3, 1, 2, 2],
            7,
            0,
            0,
            &mut |e| seen.push((e.step, e.timestep, e.nfe)),
        )
        .unwrap();
        assert_eq!(out.nfe, 7);
        assert_eq!(counted.calls(), 7);
        let plan = s.ddim_plan(7).unwrap();
        let expect: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1, p.t, i + 1))
            .collect();
        assert_eq!(seen, expect);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let s = Schedule::ddpm_default();
        let m = prior(&s);
        let mut nop = |_: &StepEvent| {};
        let e = sample(&m, &s, SamplerKind::Ddpm, [2, 1, 2, 2], 0, 0, 0, &mut nop).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = sample(
            &m,
            &s,
            SamplerKind::Ddpm,
            [2, 1, 2, 2],
            1001,
            0,
            0,
            &mut nop,
        )
        .unwrap_err();
        assert!(e.to_string().contains("1000"), "{e}");
        let e = sample(
            &m,
            &s,
            SamplerKind::ddim(-0.1),
            [2, 1, 2, 2],
            10,
            0,
            0,
            &mut nop,
        )
        .unwrap_err();
        assert!(e.to_string().contains("eta"), "{e}");
        let e = sample(
            &m,
            &s,
            SamplerKind::ddim(f64::NAN),
            [2, 1, 2, 2],
            10,
            0,
            0,
            &mut nop,
        )
        .unwrap_err();
        assert!(e.to_string().contains("eta"), "{e}");
        let e = sample(&m, &s, SamplerKind::Ddpm, [2, 3, 2, 2], 10, 0, 0, &mut nop).unwrap_err();
        assert!(e.to_string().contains("channels"), "{e}");
    }

    /// A 2C-output model: ε from the Gaussian prior plus a constant variance channel v.
    struct LearnedRange<'a>(&'a GaussianPrior, f32);
    impl ScoreModel for LearnedRange<'_> {
        fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
            let eps = self.0.forward(x, t)?;
            let v = (eps.zeros_like()? + self.1 as f64)?;
            Tensor::cat(&[&eps, &v], 1)
        }
        fn in_channels(&self) -> usize {
            1
        }
        fn out_channels(&self) -> usize {
            2
        }
        fn sample_size(&self) -> Option<usize> {
            Some(2)
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
    }

    #[test]
    fn learned_range_interpolates_between_fixed_variances() {
        // v = −1 gives β̃ (fixed_small), v = +1 gives β (fixed_large): the 2C sampler must
        // reproduce the fixed-variance samplers exactly with the same noise.
        let small = Schedule::from_json_str(r#"{"variance_type": "fixed_small"}"#).unwrap();
        let large = Schedule::from_json_str(r#"{"variance_type": "fixed_large"}"#).unwrap();
        let learned = Schedule::from_json_str(r#"{"variance_type": "learned_range"}"#).unwrap();
        let m = prior(&small);
        let go = |model: &dyn ScoreModel, s: &Schedule| -> Vec<f32> {
            sample(
                model,
                s,
                SamplerKind::Ddpm,
                [3, 1, 2, 2],
                25,
                9,
                0,
                &mut |_| {},
            )
            .unwrap()
            .images
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
        };
        for (v, fixed) in [(-1.0f32, &small), (1.0, &large)] {
            let a = go(&LearnedRange(&m, v), &learned);
            let b = go(&m, fixed);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "v={v}: {x} vs {y}");
            }
        }
        // A C-channel model with a learned variance type is a clear error.
        let e = sample(
            &m,
            &learned,
            SamplerKind::Ddpm,
            [1, 1, 2, 2],
            5,
            0,
            0,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("output channels"), "{e}");
    }
}
