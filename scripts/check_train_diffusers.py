#!/usr/bin/env python3
"""Check once that a `genprior train` output folder is a diffusers model.

Trains a few steps with genprior (the `small` architecture on the bundled MNIST digits),
loads the folder with diffusers' ``UNet2DModel.from_pretrained`` and
``DDPMScheduler.from_pretrained``, and compares the network output with
``genprior predict`` on the same random batch at several timesteps (max abs error must be
<= 1e-4). Also checks that diffusers reports no missing or unexpected weights and that the
scheduler's betas are the requested schedule.

    /work/venv-torch/bin/python scripts/check_train_diffusers.py [--bin target/release/genprior]

CI does not need torch: this is run once and its result recorded in the report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target", "release", "genprior"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--beta-schedule", default="cosine", choices=["linear", "cosine"])
    args = ap.parse_args()

    from diffusers import DDPMScheduler, UNet2DModel

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model")
        cmd = [
            args.bin, "train", "--device", "cpu",
            "--images", os.path.join(root, "examples", "mnist-test-100.npy"),
            "--arch", "small", "--size", "32", "--channels", "1",
            "--steps", str(args.steps), "--batch", "8", "--warmup", "2",
            "--beta-schedule", args.beta_schedule,
            "--checkpoint-every", str(args.steps), "--sample-every", "0", "--out", out,
        ]
        subprocess.run(cmd, check=True)

        model, info = UNet2DModel.from_pretrained(out, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            print(f"FAIL: diffusers loading info {bad}")
            return 1
        sched = DDPMScheduler.from_pretrained(out)
        want = "squaredcos_cap_v2" if args.beta_schedule == "cosine" else "linear"
        if sched.config.beta_schedule != want or sched.config.num_train_timesteps != 1000:
            print(f"FAIL: scheduler {sched.config}")
            return 1

        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
        t = np.array([0, 250, 500, 999], dtype=np.float32)
        xp, tp, yp = (os.path.join(tmp, n) for n in ("x.npy", "t.npy", "y.npy"))
        np.save(xp, x)
        np.save(tp, t)
        subprocess.run(
            [args.bin, "predict", "--device", "cpu", "--model", out, "--input", xp,
             "--timesteps", tp, "--out", yp],
            check=True,
        )
        ours = np.load(yp)
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(t).long()).sample.numpy()
        err = float(np.abs(ours - ref).max())
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"diffusers UNet2DModel.from_pretrained: {n_params} parameters, no missing/unexpected keys; "
            f"scheduler {sched.config.beta_schedule}; max |genprior - diffusers| = {err:.2e} "
            f"(output scale {float(np.abs(ref).max()):.3f})"
        )
        if err > 1e-4:
            print("FAIL: outputs differ")
            return 1
        print("OK")
        return 0


if __name__ == "__main__":
    sys.exit(main())
