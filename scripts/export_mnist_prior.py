#!/usr/bin/env python3
"""Export a checkpoint of scripts/train_mnist_prior.py to diffusers layout.

Writes the EMA weights as
    OUT/config.json
    OUT/diffusion_pytorch_model.safetensors
    OUT/scheduler_config.json          (DDPMScheduler, clip_sample True, range 1.0)
via UNet2DModel.save_pretrained(safe_serialization=True), reloads the written
files with UNet2DModel.from_pretrained and checks that the reloaded network
gives bit-identical outputs to the exported EMA weights, and checks the
16 MB size budget.

Optional extras:
    --grid PNG       a sample grid made with diffusers' own DDIMPipeline
                     (DDIM, eta 0, --grid-steps steps, --grid-n images)
    --loss-png PNG   the training loss curve from the run's loss.csv
    --summary        print the recipe numbers the model card records

Example:
    python scripts/export_mnist_prior.py \
        --ckpt /work/train-mnist/run/ckpt_latest.pt --out models/mnist-ddpm-32 \
        --grid /work/train-mnist/ddim50_grid.png --loss-png models/mnist-ddpm-32/loss_curve.png --summary
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_mnist_prior import SCHEDULER_KW, build_unet  # noqa: E402

SIZE_LIMIT = 16 * 1024 * 1024


def load_ckpt(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("unet_config", "ema", "step"):
        if key not in ck:
            raise ValueError(f"{path}: not a train_mnist_prior.py checkpoint (missing {key!r})")
    return ck


def export(ck, out_dir):
    from diffusers import DDPMScheduler, UNet2DModel

    unet = build_unet(ck["unet_config"])
    missing, unexpected = unet.load_state_dict(ck["ema"], strict=True), None
    del missing, unexpected
    unet.eval()
    os.makedirs(out_dir, exist_ok=True)
    unet.save_pretrained(out_dir, safe_serialization=True)
    sched_kw = dict(SCHEDULER_KW)
    sched_kw.update(ck.get("scheduler_config", {}))
    sched_kw["clip_sample"] = True
    sched_kw["clip_sample_range"] = 1.0
    DDPMScheduler(**sched_kw).save_pretrained(out_dir)
    for f in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        os.chmod(os.path.join(out_dir, f), 0o644)

    # Round trip: the files on disk must reproduce the EMA network exactly.
    re = UNet2DModel.from_pretrained(out_dir).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 32, 32, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        a = unet(x, t).sample
        b = re(x, t).sample
    if not torch.equal(a, b):
        raise RuntimeError(f"reloaded model differs from the exported EMA weights (max |diff| {(a - b).abs().max()})")

    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in
                ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"))
    if total > SIZE_LIMIT:
        raise RuntimeError(f"exported model is {total} bytes, over the {SIZE_LIMIT}-byte budget")
    n_params = sum(p.numel() for p in re.parameters())
    print(f"exported step {ck['step']} EMA weights ({n_params} parameters, {total} bytes) to {out_dir}")
    return re


def to_u8(img01):
    return (np.clip(img01, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_grid(images01, path, ncol=8, pad=2, scale=2):
    """images01: (N, H, W) floats in [0, 1] -> one PNG grid (white gutters)."""
    from PIL import Image

    n, h, w = images01.shape
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = to_u8(images01[i])
    im = Image.fromarray(grid, mode="L")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im.save(path)


def ddim_grid(unet, out_dir, path, n, steps, seed):
    from diffusers import DDIMPipeline, DDIMScheduler

    sched = DDIMScheduler.from_pretrained(out_dir)
    pipe = DDIMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = pipe(batch_size=n, generator=g, num_inference_steps=steps, eta=0.0, output_type="np")
    imgs = np.asarray(out.images)[..., 0]  # (N, 32, 32) in [0, 1]
    save_grid(imgs, path)
    print(f"DDIM-{steps} grid of {n} samples (seed {seed}) -> {path}")


def read_loss_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def loss_png(rows, path, width=640, height=360):
    """Plain PIL line plot of the logged loss (log-scale y) with a moving average."""
    from PIL import Image, ImageDraw

    steps = np.array([int(r["step"]) for r in rows], dtype=float)
    loss = np.array([float(r["loss"]) for r in rows], dtype=float)
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    ssteps = steps[k - 1:]
    ml, mr, mt, mb = 70, 20, 30, 45
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    lo, hi = math.log10(max(loss.min(), 1e-4)), math.log10(loss.max())
    lo, hi = math.floor(lo * 10) / 10, math.ceil(hi * 10) / 10
    if hi <= lo:
        hi = lo + 0.1
    x0, x1 = 0.0, max(steps.max(), 1.0)

    def px(s, l):
        x = ml + (s - x0) / (x1 - x0) * (width - ml - mr)
        y = mt + (hi - math.log10(max(l, 1e-4))) / (hi - lo) * (height - mt - mb)
        return x, y

    d.rectangle([ml, mt, width - mr, height - mb], outline="black")
    ticks = [m * 10.0 ** k for k in range(int(math.floor(lo)) - 1, int(math.ceil(hi)) + 1) for m in (1, 2, 5)]
    for v in ticks:
        if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
            _, y = px(0, v)
            d.line([ml - 4, y, width - mr, y], fill=(225, 225, 225))
            d.line([ml - 4, y, ml, y], fill="black")
            d.text((5, y - 6), f"{v:g}", fill="black")
    spacing = next(m * 10 ** k for k in range(0, 9) for m in (1, 2, 5) if x1 / (m * 10 ** k) <= 6)
    for s in np.arange(0, x1 + 1e-9, spacing):
        x, _ = px(s, 10 ** lo)
        d.line([x, height - mb, x, height - mb + 4], fill="black")
        d.text((x - 12, height - mb + 8), f"{int(s)}", fill="black")
    d.line([px(s, l) for s, l in zip(steps, loss)], fill=(170, 190, 230), width=1)
    if len(smooth) > 1:
        d.line([px(s, l) for s, l in zip(ssteps, smooth)], fill=(200, 30, 30), width=2)
    d.text((ml, 8), f"training loss (MSE on eps, log scale); red: moving average of {k} log points", fill="black")
    d.text((width // 2 - 20, height - 18), "step", fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im.save(path)
    print(f"loss curve -> {path}")


def summary(ck, rows, quiet=False):
    args = ck.get("args", {})
    info = {
        "step": int(ck["step"]),
        "n_params": ck.get("n_params"),
        "wall_seconds": round(float(ck.get("wall_seconds", float("nan"))), 1),
        "unet_config": ck["unet_config"],
        "args": {k: args.get(k) for k in ("batch_size", "lr", "warmup", "lr_schedule", "weight_decay",
                                          "grad_clip", "ema_decay", "seed", "threads", "nice")},
    }
    if rows:
        rows = [r for r in rows if int(r["step"]) <= info["step"]]
        sps = np.array([float(r["sec_per_step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        steps = np.array([int(r["step"]) for r in rows])
        tail = steps > info["step"] - 100
        info["loss_last_100"] = round(float(loss[tail].mean()), 4) if tail.any() else None
        info["sec_per_step_median"] = round(float(np.median(sps)), 3)
        info["sec_per_step_mean"] = round(float(info["wall_seconds"] / max(1, info["step"])), 3)
        marks = {}
        for s in (100, 200, 500, 1000, 2000, 3000, 5000, 10000, 20000):
            sel = (steps > s - 100) & (steps <= s)
            if sel.any() and s <= info["step"]:
                marks[s] = round(float(loss[sel].mean()), 4)
        info["loss_mean_over_100_steps_ending_at"] = marks
    if not quiet:
        print(json.dumps(info, indent=2))
    return info


CARD_BEGIN = "<!-- BEGIN training-record: written by scripts/export_mnist_prior.py --card; do not edit by hand -->"
CARD_END = "<!-- END training-record -->"


def machine_line():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def training_record(ck, info, grid_name, loss_name, machine_note):
    import datetime as dt

    import diffusers

    a = info["args"]
    cfg = info["unet_config"]
    wall = info["wall_seconds"]
    lines = [
        CARD_BEGIN,
        "",
        "## Training record",
        "",
        f"Exported {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the checkpoint at "
        f"**step {info['step']}** (EMA weights).",
        "",
        "| item | value |",
        "|---|---|",
        f"| parameters | {info['n_params']:,} ({info['n_params'] / 1e6:.2f} M) |",
        f"| block_out_channels / layers_per_block | {tuple(cfg['block_out_channels'])} / {cfg['layers_per_block']} |",
        f"| optimizer steps | {info['step']} |",
        f"| images seen | {info['step'] * a['batch_size']:,} ({info['step'] * a['batch_size'] / 60000:.2f} epochs of the 60k training split) |",
        f"| batch size | {a['batch_size']} |",
        f"| learning rate | AdamW, {a['lr']:g}, linear warm-up over {a['warmup']} steps, then {a['lr_schedule']}; "
        f"weight decay {a['weight_decay']:g}; gradient-norm clip {a['grad_clip']:g} |",
        f"| EMA | decay min({a['ema_decay']}, (1 + step) / (10 + step)) |",
        f"| seed | {a['seed']} |",
        f"| threads / niceness | {a['threads']} torch thread(s), nice {a['nice']} |",
        f"| wall time | {wall:.0f} s ({wall / 3600:.2f} h) |",
        f"| seconds per step | median {info.get('sec_per_step_median', float('nan'))}, "
        f"mean {info.get('sec_per_step_mean', float('nan'))} (includes checkpoint writes) |",
        f"| machine | {machine_line()}{', ' + machine_note if machine_note else ''} |",
        f"| software | torch {torch.__version__}, diffusers {diffusers.__version__} |",
        "",
        "Training loss (MSE between predicted and true noise, mean over the 100 steps ending at the given step):",
        "",
        "| step | loss |",
        "|---|---|",
    ]
    for k, v in info.get("loss_mean_over_100_steps_ending_at", {}).items():
        if isinstance(k, int):
            lines.append(f"| {k} | {v} |")
    if info["step"] not in info.get("loss_mean_over_100_steps_ending_at", {}):
        lines.append(f"| {info['step']} (last 100) | {info.get('loss_last_100', 'n/a')} |")
    lines.append("")
    if loss_name:
        lines += [f"![training loss]({loss_name})", ""]
    if grid_name:
        lines += [
            f"Reference samples made with diffusers' own `DDIMPipeline` (DDIM, 50 steps, eta 0, 64 images, "
            f"generator seed 0), for cross-checking genprior's sampler:",
            "",
            f"![DDIM-50 samples from diffusers]({grid_name})",
            "",
        ]
    lines.append(CARD_END)
    return "\n".join(lines)


def write_card(card_path, record):
    if os.path.exists(card_path):
        text = open(card_path).read()
        if CARD_BEGIN in text and CARD_END in text:
            head, rest = text.split(CARD_BEGIN, 1)
            _, tail = rest.split(CARD_END, 1)
            text = head + record + tail
        else:
            text = text.rstrip() + "\n\n" + record + "\n"
    else:
        text = "# mnist-ddpm-32\n\n" + record + "\n"
    with open(card_path + ".tmp", "w") as f:
        f.write(text)
    os.replace(card_path + ".tmp", card_path)
    print(f"training record -> {card_path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="/work/train-mnist/run/ckpt_latest.pt")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "mnist-ddpm-32"))
    p.add_argument("--grid", default=None, help="write a DDIM sample grid PNG here")
    p.add_argument("--grid-n", type=int, default=64)
    p.add_argument("--grid-steps", type=int, default=50)
    p.add_argument("--grid-seed", type=int, default=0)
    p.add_argument("--loss-csv", default=None, help="default: loss.csv next to the checkpoint")
    p.add_argument("--loss-png", default=None, help="write the loss curve PNG here")
    p.add_argument("--summary", action="store_true")
    p.add_argument(
        "--card",
        action="store_true",
        help="(re)write the training-record section of OUT/README.md; with --grid / --loss-png inside OUT "
        "the images are linked from it",
    )
    p.add_argument("--machine-note", default="shared with concurrent Rust builds",
                   help="appended to the machine line of the training record")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    ck = load_ckpt(args.ckpt)
    unet = export(ck, os.path.normpath(args.out))
    csv_path = args.loss_csv or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "loss.csv")
    rows = read_loss_csv(csv_path) if os.path.exists(csv_path) else []
    if args.loss_png:
        if not rows:
            raise FileNotFoundError(f"no loss log at {csv_path}")
        loss_png([r for r in rows if int(r["step"]) <= int(ck["step"])], args.loss_png)
    if args.grid:
        ddim_grid(unet, os.path.normpath(args.out), args.grid, args.grid_n, args.grid_steps, args.grid_seed)
    if args.summary or args.card:
        info = summary(ck, rows, quiet=not args.summary)
    if args.card:
        out = os.path.normpath(args.out)

        def rel(path):
            if not path:
                return None
            r = os.path.relpath(os.path.abspath(path), os.path.abspath(out))
            return None if r.startswith("..") else r

        write_card(os.path.join(out, "README.md"), training_record(ck, info, rel(args.grid), rel(args.loss_png), args.machine_note))


if __name__ == "__main__":
    sys.exit(main())
