#!/usr/bin/env python3
"""UNet forward and forward + input gradient speed: genprior vs PyTorch, same machine, same run.

For each case it runs `genprior bench --json` (random weights of the architecture) and the
same computation in PyTorch, each in its own process, then prints a Markdown table with
seconds per pass, GFLOP/s, peak resident memory and the ratio genprior/PyTorch (> 1 means
genprior is slower).

  ddpm-cifar10-32, ddpm-256  diffusers' UNet2DModel from genprior's preset configs
  adm-ffhq-256               guided-diffusion's UNet as ported by deepinv (see
                             scripts/gpu_bench_torch.py, which builds the PyTorch models)

Each pass: x ~ N(0, 1), t = 500; "forward" is one network evaluation, "fwd+grad" also
backpropagates sum(output²) to the input (what DPS does each step). One warm-up pass, then
--iters timed passes. With --repeats R the genprior and PyTorch processes alternate R times
and the fastest of the R per-pass means is kept for each side (the machine is shared; the
minimum is the least disturbed measurement).

Usage:
  python scripts/bench_unet.py [--bin target/release/genprior] [--threads 2]
         [--cases ddpm-cifar10-32:1,ddpm-cifar10-32:16,ddpm-256:1,adm-ffhq-256:1]
         [--modes forward,grad] [--iters 2] [--repeats 2] [--json out.json]
Needs torch + diffusers (CPU; deepinv for the ADM case); genprior built with --release.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GFLOP = {"ddpm-cifar10-32": 12.44, "ddpm-256": 497.03, "adm-ffhq-256": 387.9}


def torch_case(arch, batch, grad, iters, threads):
    """Seconds per pass and peak RSS (MiB) of this process."""
    import torch

    sys.path.insert(0, HERE)
    import gpu_bench_torch

    torch.set_num_threads(threads)
    model, fwd, c, s = gpu_bench_torch.build(arch, torch, torch.float32)
    x = torch.randn(batch, c, s, s)
    t = torch.full((batch,), 500.0)

    def once():
        if grad:
            xv = x.clone().requires_grad_(True)
            (fwd(xv, t) ** 2).sum().backward()
            return xv.grad.sum().item()
        with torch.no_grad():
            return fwd(x, t).sum().item()

    once()
    start = time.perf_counter()
    for _ in range(iters):
        once()
    secs = (time.perf_counter() - start) / iters
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return secs, rss


def run_genprior(args, arch, batch, grad):
    cmd = [args.bin, "bench", "--arch", arch, "--batch", str(batch), "--iters", str(args.iters),
           "--device", "cpu", "--json"] + (["--grad"] if grad else [])
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"genprior bench failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_torch(args, arch, batch, grad):
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_unet as b; "
            f"s, r = b.torch_case({arch!r}, {batch}, {grad}, {args.iters}, {args.threads}); print(s, r)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"torch case failed: {p.stderr}")
    return tuple(map(float, p.stdout.split()[-2:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "genprior"))
    ap.add_argument("--cases", default="ddpm-cifar10-32:1,ddpm-cifar10-32:16,ddpm-256:1,adm-ffhq-256:1")
    ap.add_argument("--modes", default="forward,grad")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    rows = []
    for case in args.cases.split(","):
        arch, batch = case.split(":")
        batch = int(batch)
        for mode in args.modes.split(","):
            grad = mode == "grad"
            g_best, t_best, g_rss, t_rss = None, None, 0.0, 0.0
            for _ in range(args.repeats):
                g = run_genprior(args, arch, batch, grad)
                ts, trss = run_torch(args, arch, batch, grad)
                if g_best is None or g["seconds_per_pass"] < g_best["seconds_per_pass"]:
                    g_best = g
                t_best = ts if t_best is None else min(t_best, ts)
                g_rss, t_rss = max(g_rss, g["peak_rss_mib"]), max(t_rss, trss)
            gflop = GFLOP.get(arch, g_best["gflop_per_forward_per_image"])
            work = gflop * batch * (2 if grad else 1)
            r = dict(arch=arch, batch=batch, mode="fwd+grad" if grad else "forward",
                     genprior_s=g_best["seconds_per_pass"], torch_s=t_best,
                     genprior_gflops=work / g_best["seconds_per_pass"], torch_gflops=work / t_best,
                     genprior_rss_mib=g_rss, torch_rss_mib=t_rss,
                     ratio=g_best["seconds_per_pass"] / t_best)
            rows.append(r)
            print(f"{arch} b{batch} {r['mode']}: genprior {r['genprior_s']:.3f}s torch {t_best:.3f}s "
                  f"ratio {r['ratio']:.2f}", file=sys.stderr, flush=True)
    print(f"PyTorch {torch.__version__}, {args.threads} threads; {platform.processor() or platform.machine()}; "
          f"iters {args.iters}, best of {args.repeats}")
    print("| arch | batch | pass | genprior s | PyTorch s | ratio | genprior GFLOP/s | PyTorch GFLOP/s "
          "| genprior peak MiB | PyTorch peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['batch']} | {r['mode']} | {r['genprior_s']:.3f} | {r['torch_s']:.3f} | "
              f"{r['ratio']:.2f} | {r['genprior_gflops']:.1f} | {r['torch_gflops']:.1f} | "
              f"{r['genprior_rss_mib']:.0f} | {r['torch_rss_mib']:.0f} |")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
