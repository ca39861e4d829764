#!/usr/bin/env python3
"""Parity fixtures for genprior's UNet2DModel: tiny random-weight diffusers models.

Runs diffusers' own UNet2DModel (PyTorch, CPU, float32) on tiny configurations that
together cover every option genprior's loader claims, and writes, per configuration,
under tests/fixtures/unet2d/<name>/:
  model/config.json, model/diffusion_pytorch_model.safetensors  (current key names)
  bin/config.json, bin/diffusion_pytorch_model.bin               (PyTorch zip pickle,
      attention weights under diffusers' deprecated names query/key/value/proj_attn)
  input.npy (B,C,H,W) f32, timesteps.npy (B,) f32 (one per image), output.npy
  meta.json (parameter count, diffusers/torch versions)
Also records diffusers' parameter counts of full-size reference architectures.

Usage: python scripts/gen_unet2d_fixtures.py [--out tests/fixtures/unet2d]
Needs torch + diffusers (CPU is enough); CI never runs this, it uses the files.
"""
import argparse
import json
import os

import numpy as np
import torch
import diffusers
from diffusers import UNet2DModel, DDPMScheduler
from safetensors.torch import save_file

CONFIGS = {
    # cifar10-style: positional, flip_sin_to_cos False, freq_shift 1, head dim null
    # (one head), downsample_padding 0, default time-scale-shift, mid attention.
    "positional_null_heads": dict(
        sample_size=16, in_channels=3, out_channels=3,
        block_out_channels=[32, 64], down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
        attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        norm_num_groups=8, norm_eps=1e-6, time_embedding_type="positional"),
    # scale_shift, multi-head attention (head dim 8), padding 1, flip True, 2C outputs,
    # attn_norm_num_groups given (mid attention keeps a group norm under scale_shift).
    "scale_shift_heads": dict(
        sample_size=16, in_channels=1, out_channels=2,
        block_out_channels=[16, 32, 32],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], layers_per_block=2,
        attention_head_dim=8, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
        norm_num_groups=8, resnet_time_scale_shift="scale_shift", attn_norm_num_groups=4),
    # scale_shift without attn_norm_num_groups: mid attention has no group norm.
    "scale_shift_mid_nonorm": dict(
        sample_size=8, in_channels=3, out_channels=3,
        block_out_channels=[16, 32], down_block_types=["AttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "AttnUpBlock2D"], layers_per_block=1,
        attention_head_dim=16, norm_num_groups=4, resnet_time_scale_shift="scale_shift",
        time_embedding_dim=48),
    # Gaussian Fourier time embedding (log t, sample / t at the end), centred input,
    # mid block without attention, mid_block_scale_factor sqrt(2).
    "fourier_no_mid_attn": dict(
        sample_size=8, in_channels=3, out_channels=3,
        block_out_channels=[16, 32], down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
        attention_head_dim=8, norm_num_groups=4, time_embedding_type="fourier",
        center_input_sample=True, add_attention=False, mid_block_scale_factor=2 ** 0.5),
    # Non-square images, no mid block, gelu activation.
    "rect_no_mid_gelu": dict(
        sample_size=[8, 16], in_channels=2, out_channels=2,
        block_out_channels=[16, 16], down_block_types=["AttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "AttnUpBlock2D"], layers_per_block=1,
        attention_head_dim=None, norm_num_groups=4, mid_block_type=None, act_fn="gelu",
        freq_shift=1),
}

# Full-size architectures: parameter counts as diffusers reports them.
REFERENCE_ARCHS = {
    "ddpm-cifar10-32": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 256],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2, attention_head_dim=None, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, norm_num_groups=32,
        act_fn="silu", center_input_sample=False, mid_block_scale_factor=1,
        time_embedding_type="positional"),
    "ddpm-256": dict(
        sample_size=256, in_channels=3, out_channels=3,
        block_out_channels=[128, 128, 256, 256, 512, 512],
        down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
        layers_per_block=2, attention_head_dim=None, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, norm_num_groups=32,
        act_fn="silu", center_input_sample=False, mid_block_scale_factor=1,
        time_embedding_type="positional"),
}

OLD_NAMES = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def write_model(model, folder, state, fmt):
    os.makedirs(folder, exist_ok=True)
    model.save_config(folder)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()},
                  os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(state, os.path.join(folder, "diffusion_pytorch_model.bin"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "unet2d"))
    args = ap.parse_args()
    torch.manual_seed(0)
    summary = {"diffusers": diffusers.__version__, "torch": torch.__version__, "fixtures": {}, "reference_archs": {}}
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        torch.manual_seed(100 + i)
        model = UNet2DModel(**cfg).eval()
        # Perturb every parameter so norms/biases are not at their trivial init.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        size = cfg["sample_size"]
        h, w = (size, size) if isinstance(size, int) else size
        b = 3
        x = torch.randn(b, cfg["in_channels"], h, w)
        if cfg.get("time_embedding_type") == "fourier":
            t = torch.tensor([0.05, 1.7, 38.5])  # noise levels sigma > 0
        else:
            t = torch.tensor([0.0, 417.25, 999.0])  # per-sample, one fractional
        with torch.no_grad():
            y = model(x, t).sample
        d = os.path.join(args.out, name)
        state = model.state_dict()
        write_model(model, os.path.join(d, "model"), state, "safetensors")
        old = {}
        for k, v in state.items():
            nk = k
            if ".attentions." in k:
                for new, oldn in OLD_NAMES.items():
                    nk = nk.replace(new, oldn)
            old[nk] = v
        write_model(model, os.path.join(d, "bin"), old, "bin")
        np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
        np.save(os.path.join(d, "timesteps.npy"), t.numpy().astype(np.float32))
        np.save(os.path.join(d, "output.npy"), y.numpy().astype(np.float32))
        nparams = sum(p.numel() for p in model.parameters())
        meta = {"num_parameters": nparams, "config": cfg}
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        summary["fixtures"][name] = nparams
        print(f"{name}: {nparams} parameters, output std {y.std().item():.3f}")
    # A scheduler config for CLI sampling tests on the first fixture.
    DDPMScheduler(num_train_timesteps=1000).save_config(os.path.join(args.out, "positional_null_heads", "model"))
    for name, cfg in REFERENCE_ARCHS.items():
        with torch.device("meta"):
            model = UNet2DModel(**cfg)
        n = sum(p.numel() for p in model.parameters())
        summary["reference_archs"][name] = {"num_parameters": n, "config": cfg}
        print(f"{name}: {n} parameters")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
