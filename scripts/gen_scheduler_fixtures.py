#!/usr/bin/env python
"""Record diffusers' DDPMScheduler / DDIMScheduler behaviour as parity fixtures for
genprior-diffusion (crates/diffusion/tests/scheduler_parity.rs).

Run with the reference environment (diffusers + torch CPU):

    /opt/refenv/bin/python scripts/gen_scheduler_fixtures.py

Writes tests/fixtures/schedulers/scheduler_cases.json:

* schedules: betas and alphas_cumprod (at a subset of indices) of every beta
  schedule (+ trained betas and zero-terminal-SNR rescaling);
* timesteps: set_timesteps(n) lists for every spacing, several n, steps_offset 0/1
  (DDPM and DDIM lists are asserted identical here and stored once);
* ddpm: DDPMScheduler.step on fixed (model_output, sample) for the full cross of
  beta schedule x prediction type x variance type, rotating clipping / thresholding
  and timestep spacing; the variance noise diffusers draws from `generator` is
  reproduced by drawing torch.randn from an identically seeded generator (checked
  against diffusers' randn_tensor below) and stored;
* ddim: DDIMScheduler.step (variance_noise passed explicitly) for the full cross of
  beta schedule x prediction type x eta in {0, 0.5, 1}, rotating clipping /
  thresholding, spacing, steps_offset, set_alpha_to_one, use_clipped_model_output.

Tensors are tiny (2, 1, 1, 3); each configuration is stepped at two timesteps, one of
them the last of its list (the no-noise / final-alpha path).
"""

import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "schedulers", "scheduler_cases.json")
SHAPE = (2, 1, 1, 3)

BETAS = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "trained"]
PREDS = ["epsilon", "v_prediction", "sample"]
VARS = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
# (clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value)
CLIPS = [
    dict(clip_sample=False),
    dict(clip_sample=True, clip_sample_range=1.0),
    dict(clip_sample=True, clip_sample_range=1.7),
    dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.5),
    dict(thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.0, clip_sample=False),
]
# (num_inference_steps or None for the full chain, spacing, steps_offset)
DDPM_PLANS = [(None, "leading", 0), (10, "leading", 1), (10, "linspace", 0), (7, "trailing", 0)]
DDIM_PLANS = [(10, "leading", 0), (10, "leading", 1), (10, "linspace", 0), (7, "trailing", 0), (50, "trailing", 0)]

rng = np.random.default_rng(20240517)
TRAINED_T = 20
TRAINED_BETAS = np.round(np.sort(rng.uniform(0.005, 0.3, TRAINED_T)), 5).tolist()


def f32list(t):
    """Shortest decimal that round-trips each f32 value (keeps the JSON small)."""
    arr = t.detach().to(torch.float32).reshape(-1).numpy()
    return [float(np.format_float_scientific(v, unique=True)) for v in arr]


def subset(values):
    """Schedule arrays are checked at the first/last 12 indices and every 17th."""
    n = len(values)
    idx = sorted(set(range(min(12, n))) | set(range(0, n, 17)) | set(range(max(0, n - 12), n)))
    return dict(index=idx, values=[values[k] for k in idx])


def beta_cfg(beta):
    if beta == "trained":
        return dict(num_train_timesteps=TRAINED_T, trained_betas=TRAINED_BETAS)
    if beta == "scaled_linear":
        return dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return dict(beta_schedule=beta)


configs = {}


def register(cfg):
    key = json.dumps(cfg, sort_keys=True)
    for k, v in configs.items():
        if json.dumps(v, sort_keys=True) == key:
            return k
    name = f"c{len(configs)}"
    configs[name] = cfg
    return name


def make_ddim(cfg):
    """DDIMScheduler has no sigmoid schedule: feed it the DDPM sigmoid betas."""
    cfg = dict(cfg)
    if cfg.get("beta_schedule") == "sigmoid":
        betas = DDPMScheduler(**{k: v for k, v in cfg.items() if k in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")}).betas
        cfg.pop("beta_schedule")
        cfg["trained_betas"] = betas.numpy()
    cfg.pop("variance_type", None)
    return DDIMScheduler(**cfg)


def tensors(pred, scale_sample):
    sample = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32) * scale_sample)
    if pred == "sample":
        out = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32) * 1.5)
    else:
        out = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32))
    return sample, out


def main():
    # --- randn_tensor == torch.randn with the same seed (how noise is reproduced) ---
    a = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(5), device=torch.device("cpu"), dtype=torch.float32)
    b = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    assert torch.equal(a, b)

    # --- schedules ---
    schedules = []
    for beta in BETAS:
        cfg = beta_cfg(beta)
        s = DDPMScheduler(**cfg)
        schedules.append(dict(config=register(cfg), betas=subset(f32list(s.betas)), alphas_cumprod=subset(f32list(s.alphas_cumprod))))
    for beta in ["linear", "scaled_linear"]:
        cfg = dict(beta_cfg(beta), rescale_betas_zero_snr=True)
        s = DDPMScheduler(**cfg)
        d = DDIMScheduler(**cfg)
        assert torch.equal(s.alphas_cumprod, d.alphas_cumprod)
        schedules.append(dict(config=register(cfg), betas=subset(f32list(s.betas)), alphas_cumprod=subset(f32list(s.alphas_cumprod))))

    # --- timestep lists ---
    timesteps = []
    for T, ns in [(1000, [1, 2, 3, 7, 10, 50, 61, 100, 103, 333, 1000]), (50, [1, 7, 29, 31, 50])]:
        for spacing in ["leading", "linspace", "trailing"]:
            for offset in ([0, 1] if spacing == "leading" else [0]):
                for n in ns:
                    cfg = dict(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
                    p = DDPMScheduler(**cfg)
                    d = DDIMScheduler(**cfg)
                    p.set_timesteps(n)
                    d.set_timesteps(n)
                    lt = p.timesteps.tolist()
                    assert lt == d.timesteps.tolist()
                    timesteps.append(dict(config=register(cfg), num_inference_steps=n, timesteps=lt))

    # --- DDPM steps ---
    ddpm = []
    i = 0
    for beta in BETAS:
        for pred in PREDS:
            for var in VARS:
                clip = CLIPS[i % len(CLIPS)]
                steps, spacing, offset = DDPM_PLANS[i % len(DDPM_PLANS)]
                cfg = dict(beta_cfg(beta), prediction_type=pred, variance_type=var, timestep_spacing=spacing, steps_offset=offset)
                cfg.update(clip)
                name = register(cfg)
                sched = DDPMScheduler(**cfg)
                if steps is not None:
                    sched.set_timesteps(steps)
                ts = sched.timesteps.tolist()
                picks = [ts[(i * 7) % (len(ts) - 1)], ts[-1]]
                for t in picks:
                    sample, out = tensors(pred, 1.0 + 2.0 * (i % 3))
                    if var == "learned":
                        v = torch.from_numpy(rng.uniform(1e-4, 0.05, SHAPE).astype(np.float32))
                        out = torch.cat([out, v], dim=1)
                    elif var == "learned_range":
                        v = torch.from_numpy(rng.uniform(-1.0, 1.0, SHAPE).astype(np.float32))
                        out = torch.cat([out, v], dim=1)
                    seed = 1000 + len(ddpm)
                    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
                    res = sched.step(out, t, sample, generator=torch.Generator().manual_seed(seed))
                    prev_t = int(sched.previous_timestep(t))
                    note = None
                    if var == "fixed_large_log":
                        if t > 0:
                            # diffusers takes sqrt(log beta) here -> NaN. Record the step with
                            # log-variance semantics (std = exp(log(beta)/2) = sqrt(beta)),
                            # i.e. diffusers' fixed_large step with the same noise.
                            assert torch.isnan(res.prev_sample).all()
                            note = "diffusers returns NaN (sqrt of log beta); expected = diffusers fixed_large"
                        alt = DDPMScheduler(**dict(cfg, variance_type="fixed_large"))
                        if steps is not None:
                            alt.set_timesteps(steps)
                        res = alt.step(out, t, sample, generator=torch.Generator().manual_seed(seed))
                    assert torch.isfinite(res.prev_sample).all(), (cfg, t)
                    case = dict(
                        config=name,
                        num_inference_steps=steps,
                        t=int(t),
                        prev_t=prev_t,
                        shape=list(SHAPE),
                        model_output_shape=list(out.shape),
                        sample=f32list(sample),
                        model_output=f32list(out),
                        noise=f32list(noise),
                        prev_sample=f32list(res.prev_sample),
                        pred_original_sample=f32list(res.pred_original_sample),
                    )
                    if note:
                        case["note"] = note
                    ddpm.append(case)
                i += 1

    # --- DDIM steps ---
    ddim = []
    i = 0
    for beta in BETAS:
        for pred in PREDS:
            for eta in [0.0, 0.5, 1.0]:
                clip = CLIPS[i % len(CLIPS)]
                steps, spacing, offset = DDIM_PLANS[i % len(DDIM_PLANS)]
                if beta == "trained":
                    steps = min(steps, TRAINED_T)
                cfg = dict(
                    beta_cfg(beta),
                    prediction_type=pred,
                    timestep_spacing=spacing,
                    steps_offset=offset,
                    set_alpha_to_one=bool(i % 2 == 0),
                )
                cfg.update(clip)
                use_clipped = bool((i // 2) % 2 == 1)
                ddim.append(ddim_case(cfg, steps, eta, use_clipped, i, pred))
                ddim.append(ddim_case(cfg, steps, eta, use_clipped, i, pred, last=True))
                i += 1
    # Zero terminal SNR with v-prediction and trailing spacing (its intended use).
    cfg = dict(beta_cfg("scaled_linear"), prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True, clip_sample=False)
    ddim.append(ddim_case(cfg, 25, 0.0, False, 0, "v_prediction", first=True))
    ddim.append(ddim_case(cfg, 25, 1.0, False, 1, "v_prediction", last=True))

    data = dict(
        generator="scripts/gen_scheduler_fixtures.py",
        diffusers_version=__import__("diffusers").__version__,
        torch_version=torch.__version__,
        configs=configs,
        schedules=schedules,
        timesteps=timesteps,
        ddpm=ddpm,
        ddim=ddim,
    )
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(schedules)} schedules, {len(timesteps)} timestep lists, {len(ddpm)} ddpm, {len(ddim)} ddim cases")


def ddim_case(cfg, steps, eta, use_clipped, i, pred, last=False, first=False):
    name = register(cfg)
    sched = make_ddim(cfg)
    sched.set_timesteps(steps)
    ts = sched.timesteps.tolist()
    if last:
        t = ts[-1]
    elif first:
        t = ts[0]
    else:
        t = ts[(i * 5) % (len(ts) - 1)]
    sample, out = tensors(pred, 1.0 + 2.0 * (i % 3))
    noise = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32))
    res = sched.step(out, t, sample, eta=eta, use_clipped_model_output=use_clipped, variance_noise=noise)
    assert torch.isfinite(res.prev_sample).all(), (cfg, t)
    return dict(
        config=name,
        num_inference_steps=steps,
        t=int(t),
        prev_t=int(t - sched.config.num_train_timesteps // steps),
        eta=eta,
        use_clipped_model_output=use_clipped,
        shape=list(SHAPE),
        sample=f32list(sample),
        model_output=f32list(out),
        noise=f32list(noise),
        prev_sample=f32list(res.prev_sample),
        pred_original_sample=f32list(res.pred_original_sample),
    )


if __name__ == "__main__":
    main()
