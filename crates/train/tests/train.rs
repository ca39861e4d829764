//! Training checks on tiny networks: gradients of the full DDPM loss against candle's own ops
//! in f64 and against finite differences; the loss falls on real digits; a resumed run equals
//! an uninterrupted one bit for bit; the exported folder loads and computes the EMA network.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use genprior_train::{arch_config, Dataset, TrainOptions, Trainer};
use serde_json::json;

/// Two levels (8×8 → 4×4), attention in the lower level and the mid block.
fn tiny_config(dir: &Path, size: usize, channels: [usize; 2]) -> PathBuf {
    let cfg = json!({
        "in_channels": 1, "out_channels": 1, "sample_size": size,
        "block_out_channels": channels, "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "norm_num_groups": 4, "attention_head_dim": 4,
        "flip_sin_to_cos": true, "freq_shift": 0,
    });
    let p = dir.join("tiny.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    p
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("genprior-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first `n` bundled MNIST test digits, 2×2-averaged to 16×16, in [-1, 1].
fn digits(n: usize) -> Dataset {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mnist-test-100.npy");
    let t = Tensor::read_npy(root).unwrap().narrow(0, 0, n).unwrap();
    let t = t
        .to_dtype(DType::F32)
        .unwrap()
        .affine(1.0 / 127.5, -1.0)
        .unwrap();
    let t = t.avg_pool2d(2).unwrap();
    Dataset::from_tensor(&t).unwrap()
}

fn random_data(n: usize, size: usize, seed: u64) -> Dataset {
    let mut s = seed;
    let v: Vec<f32> = (0..n * size * size)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Dataset::from_tensor(&Tensor::from_vec(v, (n, 1, size, size), &Device::Cpu).unwrap()).unwrap()
}

fn trainer(cfg: &Path, size: usize, data: Dataset, opts: TrainOptions, dtype: DType) -> Trainer {
    let (value, unet) = arch_config(cfg.to_str().unwrap(), size, 1).unwrap();
    Trainer::new(value, unet, opts, data, &Device::Cpu, dtype).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The f32 gradients (genprior's CPU kernels: Winograd/GEMM convolutions, fused group norm,
/// softmax and upsampling with their backward passes, weight gradients included) equal the
/// f64 gradients from candle's own ops; those equal central finite differences of the loss.
#[test]
fn gradients_match_f64_autograd_and_finite_differences() {
    let dir = tmpdir("grads");
    let cfg = tiny_config(&dir, 8, [8, 8]);
    let data = random_data(4, 8, 1);
    let opts = TrainOptions {
        batch: 3,
        ..TrainOptions::default()
    };
    let t32 = trainer(&cfg, 8, data.clone(), opts.clone(), DType::F32);
    let t64 = trainer(&cfg, 8, data, opts, DType::F64);
    let (l32, g32) = t32.loss_and_grads(0).unwrap();
    let (l64, g64) = t64.loss_and_grads(0).unwrap();
    assert!((l32 - l64).abs() < 1e-5 * l64.abs(), "loss {l32} vs {l64}");
    let mut worst = 0f64;
    for ((name, a), b) in t32.names().iter().zip(&g32).zip(&g64) {
        let (a, b) = (flat(a), flat(b));
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-3);
        let err = a
            .iter()
            .zip(&b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        worst = worst.max(err);
        assert!(
            err < 2e-3,
            "{name}: f32 kernels vs f64 candle ops, relative error {err}"
        );
    }
    eprintln!(
        "worst relative gradient error f32 vs f64: {worst:.2e} over {} tensors",
        g32.len()
    );

    // Finite differences in f64 on a few entries of every kind of parameter.
    let batch = t64.batch(0);
    let base: Vec<Tensor> = t64
        .params()
        .iter()
        .map(|p| p.as_detached_tensor())
        .collect();
    let picks = [
        "conv_in.weight",
        "conv_in.bias",
        "time_embedding.linear_1.weight",
        "down_blocks.0.resnets.0.norm1.weight",
        "down_blocks.0.resnets.0.norm2.bias",
        "down_blocks.0.resnets.0.time_emb_proj.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.1.attentions.0.to_q.weight",
        "down_blocks.1.attentions.0.to_k.bias",
        "down_blocks.1.attentions.0.to_v.weight",
        "down_blocks.1.attentions.0.group_norm.weight",
        "mid_block.attentions.0.to_out.0.weight",
        "up_blocks.0.resnets.1.conv_shortcut.weight",
        "up_blocks.0.upsamplers.0.conv.weight",
        "conv_norm_out.weight",
        "conv_out.weight",
        "conv_out.bias",
    ];
    let h = 1e-5;
    for name in picks {
        let i = t64
            .names()
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let vals = flat(&base[i]);
        let grad = flat(&g64[i]);
        for k in [0, vals.len() / 2, vals.len() - 1] {
            let loss_with = |delta: f64| {
                let mut v = vals.clone();
                v[k] += delta;
                let mut ts = base.clone();
                ts[i] = Tensor::from_vec(v, base[i].shape(), &Device::Cpu).unwrap();
                t64.loss(&ts, &batch).unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (loss_with(h) - loss_with(-h)) / (2.0 * h);
            let err = (fd - grad[k]).abs();
            assert!(
                err < 1e-7 + 1e-5 * grad[k].abs(),
                "{name}[{k}]: autograd {} vs finite difference {fd}",
                grad[k]
            );
        }
    }
}

/// A tiny model (8/16 channels, 16×16) trained for 300 steps on 64 digits lowers the loss on
/// fixed held-out batches (steps never used in training) by at least 5× (measured: 1.19 →
/// 0.085, 14×).
#[test]
fn training_lowers_the_loss_on_digits() {
    let dir = tmpdir("digits");
    let cfg = tiny_config(&dir, 16, [8, 16]);
    let opts = TrainOptions {
        steps: 300,
        batch: 8,
        lr: 3e-3,
        warmup: 20,
        ema_decay: 0.99,
        seed: 3,
        ..TrainOptions::default()
    };
    let mut tr = trainer(&cfg, 16, digits(64), opts, DType::F32);
    let eval = |tr: &Trainer| -> f64 {
        let ts: Vec<Tensor> = tr.params().iter().map(|p| p.as_detached_tensor()).collect();
        (0..8u64)
            .map(|k| {
                tr.loss(&ts, &tr.batch(1_000_000 + k))
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum::<f64>()
            / 8.0
    };
    let before = eval(&tr);
    let start = std::time::Instant::now();
    for _ in 0..300 {
        tr.train_step().unwrap();
    }
    let after = eval(&tr);
    eprintln!(
        "held-out loss {before:.4} → {after:.4} (factor {:.2}) in {:.1} s",
        before / after,
        start.elapsed().as_secs_f64()
    );
    assert!(before / after > 5.0, "loss {before} → {after}");
}

/// Checkpoint after 3 steps, resume, 3 more: every weight, EMA and Adam moment equals the
/// uninterrupted 6-step run bit for bit; a checkpoint of another run is refused.
#[test]
fn resume_equals_uninterrupted() {
    let dir = tmpdir("resume");
    let cfg = tiny_config(&dir, 8, [8, 8]);
    let data = random_data(5, 8, 2);
    let opts = TrainOptions {
        steps: 6,
        batch: 2,
        warmup: 2,
        flip: true,
        weight_decay: 0.01,
        ..TrainOptions::default()
    };
    let mut full = trainer(&cfg, 8, data.clone(), opts.clone(), DType::F32);
    for _ in 0..6 {
        full.train_step().unwrap();
    }
    let mut first = trainer(&cfg, 8, data.clone(), opts.clone(), DType::F32);
    for _ in 0..3 {
        first.train_step().unwrap();
    }
    let ck = dir.join("ckpt.safetensors");
    first.save_checkpoint(&ck).unwrap();
    drop(first);
    let (value, unet) = arch_config(cfg.to_str().unwrap(), 8, 1).unwrap();
    let mut resumed = Trainer::resume(
        &ck,
        value.clone(),
        unet.clone(),
        opts.clone(),
        data.clone(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(resumed.step(), 3);
    for _ in 0..3 {
        resumed.train_step().unwrap();
    }
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    full.save_checkpoint(&a).unwrap();
    resumed.save_checkpoint(&b).unwrap();
    let (fa, fb) = (
        candle_core::safetensors::load(&a, &Device::Cpu).unwrap(),
        candle_core::safetensors::load(&b, &Device::Cpu).unwrap(),
    );
    assert_eq!(fa.len(), 4 * full.names().len());
    for (k, ta) in &fa {
        assert_eq!(bits(ta), bits(&fb[k]), "{k} differs after resuming");
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // Other options, other data: refused with a reason.
    let other = TrainOptions {
        lr: 5e-4,
        ..opts.clone()
    };
    let e = Trainer::resume(
        &ck,
        value.clone(),
        unet.clone(),
        other,
        data,
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("other options"), "{e}");
    let e = Trainer::resume(
        &ck,
        value,
        unet,
        opts,
        random_data(5, 8, 9),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("other images"), "{e}");
}

/// The exported folder is a diffusers model genprior loads: the loaded network computes what
/// the trainer's EMA network computes, and the scheduler config is the run's.
#[test]
fn export_loads_as_a_diffusers_folder() {
    let dir = tmpdir("export");
    let cfg = tiny_config(&dir, 8, [8, 8]);
    let opts = TrainOptions {
        steps: 2,
        batch: 2,
        beta_schedule: genprior_train::BetaKind::Cosine,
        ..TrainOptions::default()
    };
    let mut tr = trainer(&cfg, 8, random_data(3, 8, 4), opts, DType::F32);
    tr.train_step().unwrap();
    tr.train_step().unwrap();
    let out = dir.join("model");
    tr.export(&out).unwrap();
    let net = genprior_nn::load_unet2d(
        &out.join("config.json"),
        &out.join("diffusion_pytorch_model.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let b = tr.batch(7);
    let x = Tensor::from_slice(&b.xt, b.dims.as_slice(), &Device::Cpu).unwrap();
    let t = Tensor::new(&[5f32, 900.0], &Device::Cpu).unwrap();
    let y1 = net.forward(&x, &t).unwrap();
    let y2 = tr.ema_model().unwrap().forward(&x, &t).unwrap();
    let d = (y1 - y2)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    let s = genprior_diffusion::Schedule::from_file(out.join("scheduler_config.json")).unwrap();
    assert_eq!(s.config().beta_schedule, "squaredcos_cap_v2");
    assert_eq!(s.num_train_timesteps(), 1000);
}
