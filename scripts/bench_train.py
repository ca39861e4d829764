#!/usr/bin/env python3
"""Time one training step on the CPU: genprior vs PyTorch/diffusers, same config, same run.

genprior: ``genprior train`` (its loss.csv records the seconds of every step: forward,
backward, gradient clipping, AdamW, EMA). PyTorch: the same UNet2DModel (built from the
config.json genprior wrote), the same batch size and image size, and the same step
(MSE on ε, ``loss.backward()``, ``clip_grad_norm_``, ``AdamW.step()``, an EMA update).
The first --warmup steps of each are dropped; the median of the rest is reported, and the
two are run alternately --rounds times so both see the same machine load.

    /work/venv-torch/bin/python scripts/bench_train.py --bin target/release/genprior \
        --arch small --batch 16 --steps 12 --threads 2

Prints each median and the ratio genprior / PyTorch (< 1: genprior is faster).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def genprior_steps(args, root, out):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    total = args.warmup + args.steps
    cmd = [
        args.bin, "train", "--device", "cpu",
        "--images", os.path.join(root, "examples", "mnist-test-100.npy"),
        "--arch", args.arch, "--size", "32", "--channels", "1",
        "--steps", str(total), "--batch", str(args.batch),
        "--checkpoint-every", str(total), "--sample-every", "0", "--out", out,
    ]
    if args.profile:
        cmd.append("--profile")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=None if args.profile else subprocess.DEVNULL)
    with open(os.path.join(out, "loss.csv")) as f:
        rows = list(csv.DictReader(f))
    return [float(r["sec_per_step"]) for r in rows[args.warmup:]]


def torch_steps(args, root, config):
    from diffusers import UNet2DModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    model = UNet2DModel(**cfg)
    model.train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    x = np.load(os.path.join(root, "examples", "mnist-test-100.npy")).astype(np.float32) / 127.5 - 1
    data = torch.from_numpy(x)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    ab = torch.cumprod(1 - betas, 0)
    g = torch.Generator().manual_seed(0)
    times = []
    for s in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        idx = torch.randint(0, data.shape[0], (args.batch,), generator=g)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(model(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + s) / (10 + s))
            for k, v in model.state_dict().items():
                ema[k].mul_(d).add_(v, alpha=1 - d)
        float(loss.detach())
        times.append(time.perf_counter() - t0)
    return times[args.warmup:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target", "release", "genprior"))
    ap.add_argument("--arch", default="small", help="small | base | config.json")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--profile", action="store_true", help="print genprior's per-op profile")
    args = ap.parse_args()

    g_all, t_all = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            out = os.path.join(tmp, f"run{r}")
            g = genprior_steps(args, root, out)
            with open(os.path.join(out, "config.json")) as f:
                config = json.load(f)
            t = torch_steps(args, root, config)
            print(f"round {r + 1}: genprior median {statistics.median(g):.3f} s/step, "
                  f"PyTorch median {statistics.median(t):.3f} s/step", flush=True)
            g_all += g
            t_all += t
    gm, tm = statistics.median(g_all), statistics.median(t_all)
    print(f"arch {args.arch}, batch {args.batch}, 32x32x1, {args.threads} thread(s), "
          f"{len(g_all)} timed steps each (torch {torch.__version__})")
    print(f"genprior  {gm:.3f} s/step")
    print(f"PyTorch   {tm:.3f} s/step")
    print(f"ratio genprior/PyTorch = {gm / tm:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
