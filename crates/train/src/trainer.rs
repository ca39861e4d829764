//! One training run: parameters as candle `Var`s, the DDPM ε-objective, AdamW with warm-up,
//! gradient clipping and an EMA of the weights.
//!
//! Randomness is counter-based, so a run's state is its tensors plus the step count:
//! - step `s` draws its timesteps, flips and noise from `ChaCha8(seed)` on stream `s`;
//! - sample `i = s·B + j` of the data stream is image `perm_e[i mod N]` of epoch
//!   `e = i div N`, each permutation drawn from `ChaCha8(seed ^ PERM_KEY)` on stream `e`;
//! - the initial weights come from `ChaCha8(seed ^ INIT_KEY)`, PyTorch's default layer init
//!   (`U(±1/√fan_in)` for convolution/linear weights and biases, 1 and 0 for norms).
//!
//! Resuming from a checkpoint (weights, EMA, both Adam moments, the step) therefore continues
//! exactly the run that was interrupted.

use std::collections::HashMap;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor, Var};
use genprior_diffusion::{Schedule, SchedulerConfig};
use genprior_nn::{UNet2DConfig, UNet2DModel, WeightStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{config, Result, TrainError};

const PERM_KEY: u64 = 0x5045_524d_5f4b_4559;
const INIT_KEY: u64 = 0x494e_4954_5f4b_4559;

/// β schedule of the forward process (T = 1000 steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BetaKind {
    /// β from 1e-4 to 0.02 (Ho et al.; diffusers `linear`).
    Linear,
    /// Nichol & Dhariwal's cosine ᾱ (diffusers `squaredcos_cap_v2`).
    Cosine,
}

/// Learning-rate shape after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    /// Cosine decay to 10 % of the peak at the last step.
    Cosine,
}

/// Everything that defines a run besides the data and the architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Total optimizer steps.
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: u64,
    pub lr_schedule: LrSchedule,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    /// EMA decay; warmed up as `min(decay, (1 + s)/(10 + s))`.
    pub ema_decay: f64,
    pub beta_schedule: BetaKind,
    /// Random horizontal flips of the training images.
    pub flip: bool,
    pub seed: u64,
}

impl Default for TrainOptions {
    /// The recipe of the bundled MNIST prior (scripts/train_mnist_prior.py).
    fn default() -> Self {
        Self {
            steps: 10_000,
            batch: 64,
            lr: 1e-3,
            warmup: 200,
            lr_schedule: LrSchedule::Constant,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            grad_clip: 1.0,
            ema_decay: 0.999,
            beta_schedule: BetaKind::Linear,
            flip: false,
            seed: 0,
        }
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if self.steps == 0 {
            return config("--steps must be at least 1");
        }
        if self.batch == 0 {
            return config("--batch must be at least 1");
        }
        if !pos(self.lr) {
            return config(format!("--lr must be positive, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return config(format!(
                "--weight-decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return config(format!("--grad-clip must be ≥ 0, got {}", self.grad_clip));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return config(format!(
                "--ema-decay must lie in [0, 1), got {}",
                self.ema_decay
            ));
        }
        for (n, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return config(format!("Adam {n} must lie in [0, 1), got {b}"));
            }
        }
        if !pos(self.adam_eps) {
            return config("Adam eps must be positive");
        }
        Ok(())
    }

    /// The diffusers scheduler config of the run's noise schedule.
    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: match self.beta_schedule {
                BetaKind::Linear => "linear".into(),
                BetaKind::Cosine => "squaredcos_cap_v2".into(),
            },
            ..SchedulerConfig::default()
        }
    }

    /// Learning rate at (0-based) step `s`: linear warm-up, then constant or cosine.
    pub fn lr_at(&self, s: u64) -> f64 {
        if s < self.warmup {
            return self.lr * (s + 1) as f64 / self.warmup as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
                let p = ((s - self.warmup) as f64 / span).min(1.0);
                self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
            }
        }
    }

    /// EMA decay used after step `s`.
    pub fn ema_decay_at(&self, s: u64) -> f64 {
        self.ema_decay.min((1.0 + s as f64) / (10.0 + s as f64))
    }
}

/// Training images: `(N, C, H, W)` f32 in [-1, 1], kept on the host.
#[derive(Clone)]
pub struct Dataset {
    pub pixels: Vec<f32>,
    pub dims: [usize; 4],
}

impl Dataset {
    /// From a `(N, C, H, W)` tensor; values must be finite and in [-1, 1].
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let dims = t.dims4().map_err(|_| {
            TrainError::Data(format!(
                "expected images (N, C, H, W), got shape {:?}",
                t.dims()
            ))
        })?;
        let pixels = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if dims.0 == 0 {
            return Err(TrainError::Data("no training images".into()));
        }
        if let Some(v) = pixels
            .iter()
            .find(|v| !v.is_finite() || v.abs() > 1.0 + 1e-3)
        {
            return Err(TrainError::Data(format!(
                "training images must be finite and lie in [-1, 1]; found {v}"
            )));
        }
        Ok(Self {
            pixels,
            dims: [dims.0, dims.1, dims.2, dims.3],
        })
    }

    pub fn len(&self) -> usize {
        self.dims[0]
    }

    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }

    /// FNV-1a over the shape and the pixel bits: a resumed run must see the same data.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        for d in self.dims {
            (d as u64).to_le_bytes().into_iter().for_each(&mut eat);
        }
        for p in &self.pixels {
            p.to_bits().to_le_bytes().into_iter().for_each(&mut eat);
        }
        format!("{h:016x}")
    }
}

/// One step's inputs: noised images, their timesteps, and the noise the network must predict.
pub struct Batch {
    pub x0: Vec<f32>,
    pub xt: Vec<f32>,
    pub noise: Vec<f32>,
    pub t: Vec<u32>,
    pub dims: [usize; 4],
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Number of completed steps after this one.
    pub step: u64,
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    pub ema_decay: f64,
}

/// A run in progress.
pub struct Trainer {
    pub(crate) config_json: serde_json::Value,
    pub(crate) unet: UNet2DConfig,
    pub(crate) opts: TrainOptions,
    pub(crate) data: Dataset,
    pub(crate) schedule: Schedule,
    pub(crate) names: Vec<String>,
    pub(crate) params: Vec<Var>,
    pub(crate) ema: Vec<Tensor>,
    pub(crate) m: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
    pub(crate) step: u64,
    device: Device,
    dtype: DType,
    perm: std::cell::RefCell<Option<(u64, Vec<u32>)>>,
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

impl Trainer {
    /// A fresh run: PyTorch-default initial weights from `opts.seed`, EMA = weights, zero
    /// Adam moments. `dtype` is f32 for training (f64 for reference checks).
    pub fn new(
        config_json: serde_json::Value,
        unet: UNet2DConfig,
        opts: TrainOptions,
        data: Dataset,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        opts.validate()?;
        let [_, c, h, w] = data.dims;
        if c != unet.in_channels || c != unet.out_channels {
            return config(format!(
                "the images have {c} channel(s), the architecture {} in / {} out",
                unet.in_channels, unet.out_channels
            ));
        }
        if h != w {
            return Err(TrainError::Data(format!(
                "training images must be square, got {h}×{w}"
            )));
        }
        let schedule = Schedule::new(opts.scheduler_config())?;
        // The parameter list: ask the architecture which tensors it needs.
        let probe = Rc::new(WeightStore::random(0));
        UNet2DModel::new(unet.clone(), &probe.root(DType::F32, &Device::Cpu))?;
        let shapes: Vec<(String, Vec<usize>)> = probe.requested_shapes();
        let by_name: HashMap<&str, &Vec<usize>> =
            shapes.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ INIT_KEY);
        let mut names = Vec::with_capacity(shapes.len());
        let mut params = Vec::with_capacity(shapes.len());
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            // The layer's weight decides: ≥ 2-D → conv/linear (fan-in bound), 1-D → norm.
            let layer = name.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
            let weight = by_name.get(format!("{layer}.weight").as_str()).copied();
            let vals = match (name.ends_with(".weight"), weight) {
                (_, Some(ws)) if ws.len() >= 2 => {
                    let fan_in: usize = ws[1..].iter().product();
                    uniform(&mut rng, n, 1.0 / (fan_in.max(1) as f32).sqrt())
                }
                (true, _) => vec![1.0; n],
                (false, _) => vec![0.0; n],
            };
            let t = Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?;
            names.push(name.clone());
            params.push(Var::from_tensor(&t)?);
        }
        let ema = params
            .iter()
            .map(|p| p.as_detached_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            config_json,
            unet,
            opts,
            data,
            schedule,
            names,
            params,
            ema,
            m,
            v,
            step: 0,
            device: device.clone(),
            dtype,
            perm: Default::default(),
        })
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }

    /// Change the total step count (a resumed run may be extended).
    pub fn set_total_steps(&mut self, steps: u64) -> Result<()> {
        if steps < self.step {
            return config(format!(
                "--steps {steps} is below the {} steps the checkpoint has done",
                self.step
            ));
        }
        if self.opts.lr_schedule == LrSchedule::Cosine && steps != self.opts.steps {
            return config(
                "a cosine learning-rate schedule depends on --steps: resume with the same --steps",
            );
        }
        self.opts.steps = steps;
        Ok(())
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn unet_config(&self) -> &UNet2DConfig {
        &self.unet
    }

    pub fn config_json(&self) -> &serde_json::Value {
        &self.config_json
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn params(&self) -> &[Var] {
        &self.params
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.elem_count()).sum()
    }

    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    /// Image `pos` of epoch `epoch`'s permutation (the current epoch's is cached).
    fn image_at(&self, epoch: u64, pos: usize) -> usize {
        let mut cache = self.perm.borrow_mut();
        if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            use rand::seq::SliceRandom;
            let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed ^ PERM_KEY);
            rng.set_stream(epoch);
            let mut p: Vec<u32> = (0..self.data.len() as u32).collect();
            p.shuffle(&mut rng);
            *cache = Some((epoch, p));
        }
        cache.as_ref().map_or(0, |(_, p)| p[pos] as usize)
    }

    /// The inputs of (0-based) step `s`: a pure function of the seed, the data and `s`.
    pub fn batch(&self, s: u64) -> Batch {
        let [n, c, h, w] = self.data.dims;
        let b = self.opts.batch;
        let per = c * h * w;
        let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed);
        rng.set_stream(s);
        let big_t = self.schedule.num_train_timesteps() as u32;
        let ab = self.schedule.alphas_cumprod();
        let mut x0 = vec![0f32; b * per];
        let mut t = Vec::with_capacity(b);
        let mut flips = Vec::with_capacity(b);
        for j in 0..b {
            t.push(rng.random_range(0..big_t));
            flips.push(self.opts.flip && rng.random::<bool>());
            let i = s * b as u64 + j as u64;
            let (epoch, pos) = (i / n as u64, (i % n as u64) as usize);
            let img = self.image_at(epoch, pos);
            let src = &self.data.pixels[img * per..(img + 1) * per];
            let dst = &mut x0[j * per..(j + 1) * per];
            if flips[j] {
                for row in 0..c * h {
                    for col in 0..w {
                        dst[row * w + col] = src[row * w + (w - 1 - col)];
                    }
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
        let noise: Vec<f32> = (0..b * per)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect();
        let mut xt = vec![0f32; b * per];
        for j in 0..b {
            let a = ab[t[j] as usize] as f32;
            let (sa, sn) = (a.sqrt(), (1.0 - a).sqrt());
            for k in j * per..(j + 1) * per {
                xt[k] = sa * x0[k] + sn * noise[k];
            }
        }
        Batch {
            x0,
            xt,
            noise,
            t,
            dims: [b, c, h, w],
        }
    }

    /// The network with the given tensors (one per name, in [`Self::names`] order).
    pub fn model_with(&self, tensors: &[Tensor]) -> Result<UNet2DModel> {
        let map: HashMap<String, Tensor> = self
            .names
            .iter()
            .cloned()
            .zip(tensors.iter().cloned())
            .collect();
        let store = Rc::new(WeightStore::from_tensors(map, "<training weights>"));
        let dtype = tensors.first().map(|t| t.dtype()).unwrap_or(self.dtype);
        Ok(UNet2DModel::new(
            self.unet.clone(),
            &store.root(dtype, &self.device),
        )?)
    }

    /// The EMA network (constant weights: the inference kernels apply).
    pub fn ema_model(&self) -> Result<UNet2DModel> {
        self.model_with(&self.ema)
    }

    /// The EMA tensors by name.
    pub fn ema_tensors(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .cloned()
            .zip(self.ema.iter().cloned())
            .collect()
    }

    /// The DDPM loss `mean((ε_θ(x_t, t) − ε)²)` of `batch` with the network built from
    /// `tensors` (tracked when they are `Var`s), as a scalar tensor in their dtype.
    pub fn loss(&self, tensors: &[Tensor], batch: &Batch) -> Result<Tensor> {
        let model = self.model_with(tensors)?;
        let dt = model.dtype();
        let xt = Tensor::from_slice(&batch.xt, batch.dims.as_slice(), &self.device)?;
        let noise =
            Tensor::from_slice(&batch.noise, batch.dims.as_slice(), &self.device)?.to_dtype(dt)?;
        let t: Vec<f32> = batch.t.iter().map(|&v| v as f32).collect();
        let t = Tensor::from_vec(t, batch.t.len(), &self.device)?;
        let pred = model.forward_native(&xt, &t)?;
        Ok((pred - noise)?.sqr()?.mean_all()?)
    }

    /// Loss and gradients (one per parameter, in name order) of step `s`'s batch at the
    /// current weights, without changing anything.
    pub fn loss_and_grads(&self, s: u64) -> Result<(f64, Vec<Tensor>)> {
        let tensors: Vec<Tensor> = self.params.iter().map(|p| p.as_tensor().clone()).collect();
        let batch = self.batch(s);
        let loss = self.loss(&tensors, &batch)?;
        let grads = loss.backward()?;
        let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let mut out = Vec::with_capacity(self.params.len());
        for (p, name) in self.params.iter().zip(&self.names) {
            match grads.get(p.as_tensor()) {
                Some(g) => out.push(g.clone()),
                None => {
                    return Err(TrainError::Config(format!(
                        "parameter {name} received no gradient (it does not reach the output)"
                    )))
                }
            }
        }
        Ok((lv, out))
    }

    /// One optimizer step: loss and gradients, clipping, AdamW, EMA. A non-finite loss or
    /// gradient is an error and leaves the state untouched.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let s = self.step;
        let (loss, mut grads) = {
            let _t = genprior_nn::profile::scope("train/forward+backward");
            self.loss_and_grads(s)?
        };
        let _t = genprior_nn::profile::scope("train/clip+adamw+ema");
        if !loss.is_finite() {
            return Err(TrainError::Diverged(format!(
                "the loss became {loss} at step {}; the state of step {s} is kept (lower --lr?)",
                s + 1
            )));
        }
        let sq: Vec<Tensor> = grads
            .iter()
            .map(|g| g.sqr()?.sum_all()?.to_dtype(DType::F64))
            .collect::<candle_core::Result<_>>()?;
        let grad_norm = Tensor::stack(&sq, 0)?.sum_all()?.to_scalar::<f64>()?.sqrt();
        if !grad_norm.is_finite() {
            return Err(TrainError::Diverged(format!(
                "the gradient norm became {grad_norm} at step {}; the state of step {s} is kept",
                s + 1
            )));
        }
        if self.opts.grad_clip > 0.0 {
            // torch.nn.utils.clip_grad_norm_: scale by min(1, max / (norm + 1e-6)).
            let coef = (self.opts.grad_clip / (grad_norm + 1e-6)).min(1.0);
            if coef < 1.0 {
                for g in grads.iter_mut() {
                    *g = (&*g * coef)?;
                }
            }
        }
        let o = &self.opts;
        let lr = o.lr_at(s);
        let t = (s + 1) as i32;
        let bc1 = 1.0 - o.beta1.powi(t);
        let bc2_sqrt = (1.0 - o.beta2.powi(t)).sqrt();
        let decay = o.ema_decay_at(s);
        let mut new = Vec::with_capacity(self.params.len());
        for (i, g) in grads.iter().enumerate() {
            // torch.optim.AdamW (decoupled decay, bias-corrected moments, eps outside √).
            let p = self.params[i].as_detached_tensor();
            let p = if o.weight_decay > 0.0 {
                (&p * (1.0 - lr * o.weight_decay))?
            } else {
                p
            };
            let m = ((&self.m[i] * o.beta1)? + (g * (1.0 - o.beta1))?)?;
            let v = ((&self.v[i] * o.beta2)? + (g.sqr()? * (1.0 - o.beta2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + o.adam_eps)?;
            let p = (p - (m.div(&denom)? * (lr / bc1))?)?;
            let e = ((&self.ema[i] * decay)? + (&p * (1.0 - decay))?)?;
            new.push((p, m, v, e));
        }
        for (i, (p, m, v, e)) in new.into_iter().enumerate() {
            self.params[i].set(&p)?;
            self.m[i] = m;
            self.v[i] = v;
            self.ema[i] = e;
        }
        self.step = s + 1;
        Ok(StepStats {
            step: self.step,
            loss,
            grad_norm,
            lr,
            ema_decay: decay,
        })
    }
}
