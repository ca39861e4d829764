#!/usr/bin/env python3
"""UNet forward (and forward + input gradient) speed: genprior vs PyTorch, same machine, same run.

For each case it runs `genprior bench --json` (random weights of the architecture) and
the same computation in PyTorch with diffusers' UNet2DModel, then prints a Markdown
table with seconds per pass, images/s, GFLOP/s, peak memory and the ratio
genprior/PyTorch (> 1 means genprior is slower).

Usage:
  python scripts/bench_unet.py [--bin target/release/genprior] [--threads 2]
         [--cases ddpm-cifar10-32:1,ddpm-cifar10-32:16,ddpm-256:1] [--grad] [--iters 3]
         [--json out.json]
Needs torch + diffusers (CPU); the genprior binary must be built with --release.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from diffusers import UNet2DModel

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = os.path.join(HERE, "..", "crates", "nn", "src", "presets")


def torch_case(arch, batch, grad, iters, threads):
    torch.set_num_threads(threads)
    cfg = json.load(open(os.path.join(PRESETS, f"{arch}.json")))
    cfg.pop("_class_name", None)
    torch.manual_seed(0)
    model = UNet2DModel(**cfg).eval()
    size = cfg["sample_size"]
    x = torch.randn(batch, cfg["in_channels"], size, size)
    t = torch.full((batch,), 500.0)

    def once():
        if grad:
            xv = x.clone().requires_grad_(True)
            y = model(xv, t).sample
            (y ** 2).sum().backward()
            return xv.grad.sum().item()
        with torch.no_grad():
            return model(x, t).sample.sum().item()

    once()
    start = time.perf_counter()
    for _ in range(iters):
        once()
    secs = (time.perf_counter() - start) / iters
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB (Linux: KiB)
    return secs, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "genprior"))
    ap.add_argument("--cases", default="ddpm-cifar10-32:1,ddpm-cifar10-32:16,ddpm-256:1")
    ap.add_argument("--grad", action="store_true", help="also time forward + input gradient")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    modes = [False, True] if args.grad else [False]
    for case in args.cases.split(","):
        arch, batch = case.split(":")
        batch = int(batch)
        for grad in modes:
            cmd = [args.bin, "bench", "--arch", arch, "--batch", str(batch), "--iters", str(args.iters),
                   "--device", "cpu", "--json"] + (["--grad"] if grad else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"genprior bench failed: {out.stderr}")
            g = json.loads(out.stdout.strip().splitlines()[-1])
            # PyTorch in a fresh process so its peak memory is its own.
            code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_unet as b; "
                    f"s, r = b.torch_case({arch!r}, {batch}, {grad}, {args.iters}, {args.threads}); print(s, r)")
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"torch case failed: {p.stderr}")
            ts, trss = map(float, p.stdout.split())
            work = g["gflop_per_forward_per_image"] * batch * (2 if grad else 1)
            rows.append(dict(arch=arch, batch=batch, mode="fwd+grad" if grad else "forward",
                             genprior_s=g["seconds_per_pass"], torch_s=ts,
                             genprior_gflops=g["gflops_per_second"], torch_gflops=work / ts,
                             genprior_rss_mib=g["peak_rss_mib"], torch_rss_mib=trss,
                             ratio=g["seconds_per_pass"] / ts))
            r = rows[-1]
            print(f"{arch} b{batch} {r['mode']}: genprior {r['genprior_s']:.3f}s torch {ts:.3f}s ratio {r['ratio']:.2f}",
                  file=sys.stderr)
    print(f"torch {torch.__version__}, {args.threads} threads; iters {args.iters}")
    print("| arch | batch | pass | genprior s | PyTorch s | ratio | genprior GFLOP/s | PyTorch GFLOP/s | genprior peak MiB | PyTorch peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['batch']} | {r['mode']} | {r['genprior_s']:.3f} | {r['torch_s']:.3f} | {r['ratio']:.2f} | "
              f"{r['genprior_gflops']:.1f} | {r['torch_gflops']:.1f} | {r['genprior_rss_mib']:.0f} | {r['torch_rss_mib']:.0f} |")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
