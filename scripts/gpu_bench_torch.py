#!/usr/bin/env python3
"""PyTorch timing of the UNet forward for the architectures `genprior bench` times, on CPU or GPU.

The same computation as `genprior bench --arch ARCH --batch B --dtype D`: random weights
(seed 0), x ~ N(0, 1) of shape (B, C, S, S), every timestep 500, one warm-up pass, then
`--iters` timed passes, each ending with a device synchronisation.

  ddpm-cifar10-32, ddpm-256  diffusers' UNet2DModel from genprior's preset configs
                             (crates/nn/src/presets/*.json)
  adm-ffhq-256               guided-diffusion's UNet as ported by deepinv (DiffUNet,
                             large_model=False: the FFHQ-256 architecture, 93,563,910
                             parameters), imported without deepinv's package __init__
                             (which needs torchvision), as scripts/gen_adm_fixtures.py does

dtypes: f32 is strict f32 (TF32 off for matmul and cuDNN convolutions, as candle's f32
path); bf16 and f16 cast the whole model and the input (GroupNorm runs in f32 in both
implementations).

Extra packages can come from a folder of unpacked wheels given with --pysite: it is
*appended* to sys.path, so what the interpreter already has (torch, numpy) wins.

Usage:
  python scripts/gpu_bench_torch.py --device cuda --cases ddpm-256:16:bf16,adm-ffhq-256:1:f32 \
      [--iters 3] [--pysite DIR] [--json out.json]
  python scripts/gpu_bench_torch.py --check-adm   # build the ADM model, print its parameter count
Prints one JSON object per case on stdout (errors are recorded per case, not fatal).
"""
import argparse
import importlib.util
import json
import os
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = os.path.join(HERE, "..", "crates", "nn", "src", "presets")


def import_diffunet():
    if "deepinv.models.diffunet" in sys.modules:
        return sys.modules["deepinv.models.diffunet"]
    spec = importlib.util.find_spec("deepinv")
    if spec is None:
        raise RuntimeError("deepinv is not importable (pip install deepinv --no-deps, or --pysite)")
    root = os.path.dirname(spec.origin)
    for name, sub in [("deepinv", ""), ("deepinv.models", "models"), ("deepinv.utils", "utils")]:
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = m
    io = types.ModuleType("deepinv.utils.io")

    class DownloadError(Exception):
        pass

    io.DownloadError = DownloadError
    sys.modules["deepinv.utils.io"] = io
    import deepinv.models.diffunet as du

    return du


def build(arch, torch, dtype):
    """(model, forward(x, t), in_channels, size)."""
    torch.manual_seed(0)
    if arch == "adm-ffhq-256":
        du = import_diffunet()
        emb = getattr(du, "_f32_timestep_embedding", du.timestep_embedding)
        du._f32_timestep_embedding = emb
        du.timestep_embedding = emb
        model = du.DiffUNet(in_channels=3, out_channels=3, large_model=False, pretrained=None).eval()
        if dtype != torch.float32:
            model = model.to(dtype)
            # GroupNorm32 computes in f32 and casts back, so its affine parameters stay f32
            # (guided-diffusion's own fp16 mode converts only convolutions and linears, too).
            for mod in model.modules():
                if isinstance(mod, torch.nn.GroupNorm):
                    mod.float()
            model.dtype = dtype  # forward_diffusion casts the input to this
            du.timestep_embedding = lambda t, dim, *a, **k: emb(t, dim, *a, **k).to(dtype)
        return model, lambda x, t: model.forward_diffusion(x, t), 3, 256
    from diffusers import UNet2DModel

    cfg = json.load(open(os.path.join(PRESETS, f"{arch}.json")))
    cfg.pop("_class_name", None)
    model = UNet2DModel(**cfg).eval().to(dtype)
    return model, lambda x, t: model(x, t).sample, cfg["in_channels"], cfg["sample_size"]


def run_case(torch, arch, batch, dtype_name, iters, device):
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype_name]
    dev = torch.device(device)
    model, fwd, c, s = build(arch, torch, dtype)
    model = model.to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    x = torch.randn(batch, c, s, s, device=dev).to(dtype)
    t = torch.full((batch,), 500.0, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        fwd(x, t).float().sum().item()  # warm-up (cuDNN autotuning happens here)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            fwd(x, t).float().sum().item()
        sync()
    secs = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    del model, x
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return dict(seconds_per_pass=secs, images_per_second=batch / secs, parameters=nparams,
                peak_gpu_mib=peak)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cases", default="ddpm-cifar10-32:1:f32")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--pysite", default=None, help="folder of unpacked wheels, appended to sys.path")
    ap.add_argument("--check-adm", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.pysite:
        sys.path.append(os.path.abspath(args.pysite))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # Strict f32, as candle's f32 path (no TF32 anywhere).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    if args.check_adm:
        model, _, _, _ = build("adm-ffhq-256", torch, torch.float32)
        print(json.dumps({"adm_ffhq_256_parameters": sum(p.numel() for p in model.parameters())}))
        return
    env = {"torch": torch.__version__, "device": args.device}
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except Exception as e:  # recorded, the ADM cases may still run
        env["diffusers_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    print(json.dumps({"env": env}), flush=True)
    rows = []
    for case in args.cases.split(","):
        arch, batch, dt = case.split(":")
        row = dict(arch=arch, batch=int(batch), dtype=dt)
        try:
            row.update(run_case(torch, arch, int(batch), dt, args.iters, args.device))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        json.dump({"env": env, "rows": rows}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
