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
    Ddim { eta: f64, use_clipped_model_output: bool },
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
    run_loop(model, shape, &plan, noise, progress, |out, pair, x, noise| {
        let z = if pair.t > 0 {
            Some(noise.draw_like(x)?)
        } else {
            None
        };
        Ok(schedule
            .ddpm_step(out, pair.t, pair.prev, x, z.as_ref())?
            .prev_sample)
    })
}

/// DDIM sampling with `steps` inference steps and stochasticity `eta` ∈ [0, 1]
/// (diffusers' `DDIMPipeline`).
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
    run_loop(model, shape, &plan, noise, progress, |out, pair, x, noise| {
        let z = if eta > 0.0 {
            Some(noise.draw_like(x)?)
        } else {
            None
        };
        Ok(schedule
            .ddim_step(out, pair.t, pair.prev, x, eta, use_clipped_model_output, z.as_ref())?
            .prev_sample)
    })
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
