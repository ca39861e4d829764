#!/usr/bin/env python3
"""Parity fixtures against deepinv's DiffPIR and DDRM (`deepinv/sampling/diffusion.py`).

Builds a tiny random-weight diffusers UNet2DModel (1 channel, 8x8, fixed torch seed) with
the standard DDPM schedule (linear beta 1e-4..0.02, T = 1000, epsilon prediction, clipped
x0), saves it as a diffusers pipeline folder that both deepinv's `DiffusersDenoiserWrapper`
and genprior's `load_prior` read, and runs deepinv's DiffPIR and DDRM through that wrapper on
four small problems whose operators are the same in both programs:

  denoise   identity                              (dinv Denoising)
  inpaint   a fixed random mask, half the pixels  (dinv Inpainting)
  blur      5x5 Gaussian kernel (std 0.6), circular FFT (dinv BlurFFT)
  sr2       2x2 average pooling                   (DiffPIR: dinv Downsampling with a 2x2 box
            filter, circular padding; DDRM: a DecomposablePhysics with the per-block Haar
            basis, singular value 1/2; both checked equal to block means)

Every operator is checked here against a numpy transcription of genprior's (crates/inverse/
src/physics/*.rs) on random inputs (forward, adjoint and the L2 prox DiffPIR uses), to 1e-5 (float32).

The stochastic parts are switched off (DiffPIR zeta = 0, DDRM eta = eta_b = 0), plus one
DiffPIR case with zeta = 0.5 (inpaint) whose re-noising draws are recorded too. Everything
runs in float32 but DiffPIR on sr2, which runs in float64 (model, physics, y): deepinv's
float32 prox of the box downsampling loses ~1e-2 at DiffPIR's first steps (see below). Every draw of
torch.randn_like is recorded in order, and so is every call of the denoiser (its [0, 1]-unit
input, sigma, the integer timestep handed to the UNet, its output).

Output (tests/fixtures/deepinv/, see README.md there for the format):
  model/                  diffusers pipeline: model_index.json, unet/, scheduler/
  x_true.npy              (1,1,8,8) ground truth in [0, 1]
  <task>/y.npy            deepinv measurement, [0, 1] units; mask.npy / kernel.npy
  diffpir_<case>/...      noise.npy, den_in.npy, den_out.npy, out.npy, meta.json
  ddrm_<task>/...         noise.npy, noise_pixel.npy, den_in.npy, den_out.npy, out.npy,
                          meta.json
  summary.json

Usage: python scripts/gen_deepinv_fixtures.py [--out tests/fixtures/deepinv]
Needs torch, deepinv and diffusers (CPU); CI never runs this, it uses the files.
"""
import argparse
import json
import os
import shutil
import time

import numpy as np
import torch

import deepinv as dinv
import diffusers
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

H = W = 8
SIGMA_N = 0.05  # noise std in deepinv's [0, 1] units (genprior: 0.1 in [-1, 1])
DIFFPIR_STEPS = 20
DIFFPIR_LAMBDA = 7.0  # deepinv's lambda_ (genprior's diffpir-lambda is twice it)
DDRM_STEPS = 20
T = 1000


def save(path, a):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def build_model(out):
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=H, in_channels=1, out_channels=1,
        block_out_channels=[8, 16], down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
        attention_head_dim=8, norm_num_groups=4)
    # Random weights give a tiny output; scale the last conv so that eps is O(1) and the
    # prior matters in the trajectory.
    with torch.no_grad():
        unet.conv_out.weight.mul_(8.0)
        unet.conv_out.bias.mul_(8.0)
    sched = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                          beta_end=0.02, clip_sample=True, prediction_type="epsilon")
    d = os.path.join(out, "model")
    if os.path.isdir(d):
        shutil.rmtree(d)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(d, safe_serialization=True)
    n_params = sum(p.numel() for p in unet.parameters())
    return d, n_params


# ---- numpy transcriptions of genprior's operators ---------------------------------------

def np_blur(x, k):
    """genprior Blur: circular convolution, kernel centre (kh//2, kw//2) at the origin."""
    kh, kw = k.shape
    buf = np.zeros((H, W))
    for i in range(kh):
        for j in range(kw):
            buf[(i - kh // 2) % H, (j - kw // 2) % W] += k[i, j]
    kk = np.fft.fft2(buf)
    return lambda v, adj=False: np.real(np.fft.ifft2(np.fft.fft2(v) * (np.conj(kk) if adj else kk)))


def np_box_down(v):
    return v.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))


def np_box_up_adj(y):
    return np.repeat(np.repeat(y, 2, axis=0), 2, axis=1) / 4.0


def gaussian_kernel(size, std):
    c = (size - 1) / 2
    i = np.arange(size) - c
    g = np.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * std * std))
    return g / g.sum()


# The 2x2 box as a 3x3 filter (deepinv's circular conv_transpose2d fails on even filter
# sides); with the centre at (1, 1) this filter then subsampling at (0, 0) is exactly the
# block mean (checked below).
BOX3 = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]).view(1, 1, 3, 3) / 4


class BoxSR(dinv.physics.DecomposablePhysics):
    """2x2 average pooling as an SVD: V = per-block orthonormal Haar basis (the block sum / 2
    at (2i, 2j), the three differences at the other three positions), singular value 1/2 on
    the block-sum coordinates, U = take them onto the low-resolution grid."""

    def __init__(self, **kw):
        mask = torch.zeros(1, 1, H, W)
        mask[..., ::2, ::2] = 0.5
        super().__init__(mask=mask, **kw)

    @staticmethod
    def V_adjoint(x):
        a, b = x[..., ::2, ::2], x[..., ::2, 1::2]
        c, d = x[..., 1::2, ::2], x[..., 1::2, 1::2]
        out = torch.empty_like(x)
        out[..., ::2, ::2] = (a + b + c + d) / 2
        out[..., ::2, 1::2] = (a - b + c - d) / 2
        out[..., 1::2, ::2] = (a + b - c - d) / 2
        out[..., 1::2, 1::2] = (a - b - c + d) / 2
        return out

    @staticmethod
    def V(z):
        s, h = z[..., ::2, ::2], z[..., ::2, 1::2]
        v, e = z[..., 1::2, ::2], z[..., 1::2, 1::2]
        out = torch.empty_like(z)
        out[..., ::2, ::2] = (s + h + v + e) / 2
        out[..., ::2, 1::2] = (s - h + v - e) / 2
        out[..., 1::2, ::2] = (s + h - v - e) / 2
        out[..., 1::2, 1::2] = (s - h - v + e) / 2
        return out

    @staticmethod
    def U(z):
        return z[..., ::2, ::2]

    @staticmethod
    def U_adjoint(y):
        out = torch.zeros(y.shape[:-2] + (H, W), dtype=y.dtype, device=y.device)
        out[..., ::2, ::2] = y
        return out


def noise_model():
    return dinv.physics.GaussianNoise(sigma=SIGMA_N)


def make_tasks(out):
    noise = noise_model()
    rng = np.random.default_rng(1234)
    mask = np.zeros(H * W)
    mask[rng.permutation(H * W)[: H * W // 2]] = 1.0
    mask = mask.reshape(H, W)
    # std 0.6: the smallest |k̂| on the 8x8 grid is 0.114 > sigma_n, so deepinv's DDRM threshold
    # (singular values <= sigma_n count as zero) leaves every frequency observed, as genprior.
    kernel = gaussian_kernel(5, 0.6)
    blur_np = np_blur(None, kernel)
    tasks = {
        "denoise": dict(
            diffpir=dinv.physics.Denoising(noise_model=noise),
            ddrm=dinv.physics.Denoising(noise_model=noise),
            fwd=lambda v: v, adj=lambda v: v, ones=np.ones((H, W))),
        "inpaint": dict(
            diffpir=dinv.physics.Inpainting(img_size=(1, H, W), mask=torch.tensor(mask, dtype=torch.float32)[None],
                                            noise_model=noise),
            fwd=lambda v: v * mask, adj=lambda v: v * mask, ones=mask, extra={"mask": mask}),
        "blur": dict(
            diffpir=dinv.physics.BlurFFT(img_size=(1, H, W),
                                         filter=torch.tensor(kernel, dtype=torch.float32)[None, None],
                                         noise_model=noise),
            fwd=lambda v: blur_np(v), adj=lambda v: blur_np(v, True), ones=np.ones((H, W)),
            extra={"kernel": kernel}),
        "sr2": dict(
            diffpir=dinv.physics.Downsampling(img_size=(1, H, W), filter=BOX3,
                                              factor=2, padding="circular", noise_model=noise),
            ddrm=BoxSR(noise_model=noise),
            fwd=np_box_down, adj=np_box_up_adj, ones=np.ones((H // 2, W // 2))),
    }
    tasks["inpaint"]["ddrm"] = tasks["inpaint"]["diffpir"]
    tasks["blur"]["ddrm"] = tasks["blur"]["diffpir"]
    # Operators: deepinv == numpy transcription of genprior's, forward and adjoint.
    g = np.random.default_rng(7)
    checks = {}
    for name, t in tasks.items():
        worst = 0.0
        for phys in {id(t["diffpir"]): t["diffpir"], id(t["ddrm"]): t["ddrm"]}.values():
            for _ in range(3):
                v = g.standard_normal((H, W))
                tv = torch.tensor(v, dtype=torch.float32)[None, None]
                fwd = phys.A(tv)[0, 0].numpy()
                e = np.abs(fwd - t["fwd"](v)).max()
                u = g.standard_normal(fwd.shape)
                adj = phys.A_adjoint(torch.tensor(u, dtype=torch.float32)[None, None])[0, 0].numpy()
                e = max(e, np.abs(adj - t["adj"](u)).max())
                # the data-fidelity prox deepinv's DiffPIR uses against a dense solve of
                # (gamma A^T A + I) x = gamma A^T y + z
                gam = 3.7
                pr = phys.prox_l2(tv, torch.tensor(u, dtype=torch.float32)[None, None], gam)[0, 0].numpy()
                n = H * W
                A = np.stack([t["fwd"](np.eye(n)[k].reshape(H, W)).ravel() for k in range(n)], axis=1)
                sol = np.linalg.solve(gam * A.T @ A + np.eye(n), gam * A.T @ u.ravel() + v.ravel()).reshape(H, W)
                e = max(e, np.abs(pr - sol).max())
                worst = max(worst, e)
        assert worst < 1e-5, f"{name}: deepinv and genprior operators differ by {worst}"
        checks[name] = float(worst)
    return tasks, checks


def ground_truth():
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    x = 0.5 + 0.3 * np.sin(2 * np.pi * i / H) * np.cos(2 * np.pi * j / W)
    x[4:10, 5:12] += 0.25
    return np.clip(x, 0.02, 0.98)


class Recorder:
    """Records torch.randn_like draws and denoiser calls."""

    def __init__(self, den):
        self.noise, self.calls = [], []
        self.den = den

    def __enter__(self):
        self._randn_like = torch.randn_like

        def randn_like(t, *a, **k):
            z = self._randn_like(t, *a, **k)
            self.noise.append(z.detach().clone())
            return z

        torch.randn_like = randn_like
        den, unet = self.den, self.den.model
        self._den_forward, self._unet_forward = den.forward, unet.forward

        def unet_forward(x, t, *a, **k):
            self.calls[-1]["timestep"] = int(torch.as_tensor(t).reshape(-1)[0])
            return self._unet_forward(x, t, *a, **k)

        def den_forward(x, sigma, *a, **k):
            self.calls.append({"in": x.detach().clone(), "sigma": float(torch.as_tensor(sigma).reshape(-1)[0])})
            out = self._den_forward(x, sigma, *a, **k)
            self.calls[-1]["out"] = out.detach().clone()
            return out

        unet.forward, den.forward = unet_forward, den_forward
        return self

    def __exit__(self, *exc):
        torch.randn_like = self._randn_like
        del self.den.forward
        del self.den.model.forward


def write_run(d, rec, out, meta, pixel_noise=None):
    os.makedirs(d, exist_ok=True)
    save(os.path.join(d, "noise.npy"), torch.stack([z[0] for z in rec.noise]).numpy())
    if pixel_noise is not None:
        save(os.path.join(d, "noise_pixel.npy"), np.stack(pixel_noise))
    save(os.path.join(d, "den_in.npy"), torch.stack([c["in"][0] for c in rec.calls]).numpy())
    save(os.path.join(d, "den_out.npy"), torch.stack([c["out"][0] for c in rec.calls]).numpy())
    save(os.path.join(d, "out.npy"), out[0].numpy())
    meta = dict(meta)
    meta["calls"] = [{"sigma": c["sigma"], "timestep": c["timestep"]} for c in rec.calls]
    meta["noise_draws"] = len(rec.noise)
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "deepinv"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    model_dir, n_params = build_model(out)
    den = dinv.models.DiffusersDenoiserWrapper(mode_id=model_dir, device="cpu")
    den64 = dinv.models.DiffusersDenoiserWrapper(mode_id=model_dir, dtype=torch.float64, device="cpu")
    tasks, checks = make_tasks(out)

    x01 = ground_truth()
    save(os.path.join(out, "x_true.npy"), x01[None, None])
    xt = torch.tensor(x01, dtype=torch.float32)[None, None]
    g = torch.Generator().manual_seed(99)
    summary = {"deepinv": dinv.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__,
               "num_parameters": n_params, "image": [1, H, W], "sigma_n_01": SIGMA_N,
               "operator_check_max_abs": checks, "runs": {}}
    for name, t in tasks.items():
        td = os.path.join(out, name)
        os.makedirs(td, exist_ok=True)
        for k, v in t.get("extra", {}).items():
            save(os.path.join(td, f"{k}.npy"), v)
        phys = t["diffpir"]
        # y = A x + sigma n in [0, 1] units (holes of the inpainting mask stay 0).
        n = torch.randn(xt.shape if name != "sr2" else (1, 1, H // 2, W // 2), generator=g)
        y = phys.A(xt) + SIGMA_N * n
        if name == "inpaint":
            y = y * phys.mask
        y_np = y[0, 0].numpy().astype(np.float64)
        assert np.abs(y_np - (t["fwd"](x01) + SIGMA_N * n[0, 0].numpy() * (t["ones"] if name == "inpaint" else 1))).max() < 1e-5
        save(os.path.join(td, "y.npy"), y[0].numpy())

        cases = [("diffpir_" + name, 0.0)]
        if name == "inpaint":
            cases.append(("diffpir_inpaint_zeta", 0.5))
        for case, zeta in cases:
            # sr2 runs in float64: deepinv's float32 Downsampling prox (Zhao's FFT formula,
            # like the SVD one) cancels catastrophically at DiffPIR's early steps, where
            # gamma = 1/(2 rho_t) reaches 7e5 (1e-2 errors at gamma = 1e5 against a dense
            # solve); in float64 that error is ~1e-10.
            dtype = torch.float64 if name == "sr2" else torch.float32
            d, ph, yy = den, phys, y
            if dtype == torch.float64:
                d = den64
                ph = dinv.physics.Downsampling(img_size=(1, H, W), filter=BOX3.double(), factor=2,
                                               padding="circular", noise_model=noise_model())
                yy = y.double()
            torch.manual_seed(5)
            model = dinv.sampling.DiffPIR(d, data_fidelity=dinv.optim.data_fidelity.L2(), sigma=SIGMA_N,
                                          max_iter=DIFFPIR_STEPS, zeta=zeta, lambda_=DIFFPIR_LAMBDA)
            with Recorder(d) as rec:
                t0 = time.time()
                xh = model(yy, ph)
                dt = time.time() - t0
            ts = [int(T - 1 - s) for s in model.seq.tolist()]
            meta = {"task": name, "method": "diffpir", "dtype": str(dtype), "steps": DIFFPIR_STEPS, "lambda_deepinv": DIFFPIR_LAMBDA,
                    "zeta": zeta, "sigma_n_01": SIGMA_N, "timesteps": ts,
                    "note": "noise[0] is the start draw: x_T = sqrt(ab_T) (2 A^T y - 1 + sqrt(sbar_T^2 - 4 sigma_n^2) noise[0]) "
                            "in [-1,1] units; noise[1..] are the re-noising draws of the non-final steps; "
                            "den_in/den_out are the denoiser's [0,1]-unit input x_t/(2 sqrt(ab_t)) + 1/2 and output; "
                            "out is the result in [0,1]"}
            write_run(os.path.join(out, case), rec, xh, meta)
            summary["runs"][case] = {"nfe": len(rec.calls), "seconds": dt,
                                     "psnr_vs_truth": float(10 * np.log10(1 / np.mean((xh[0, 0].numpy() - x01) ** 2)))}

        # DDRM: sigmas on the reference DDRM grid (uniform skip T/N: t = T - T/N, ..., 0) in
        # deepinv's [0, 1] units (sbar_t / 2), then 0: the last entry turns deepinv's final
        # denoiser call into the identity, so that its output is the reference's x at t = -1.
        sched = den.scheduler
        ab = sched.alphas_cumprod.double()
        skip = T // DDRM_STEPS
        ddrm_ts = list(range(0, T, skip))[::-1]
        sigmas = [float(((1 - ab[tt]) / ab[tt]).sqrt() / 2) for tt in ddrm_ts] + [0.0]
        phys = t["ddrm"]
        torch.manual_seed(6)
        model = dinv.sampling.DDRM(den, sigmas=np.array(sigmas), eta=0.0, etab=0.0)
        with Recorder(den) as rec:
            t0 = time.time()
            xh = model(y, phys)
            dt = time.time() - t0
        pix = [phys.V(z)[0, 0].numpy() if not isinstance(phys, dinv.physics.Denoising) else z[0, 0].numpy()
               for z in rec.noise]
        meta = {"task": name, "method": "ddrm", "steps": DDRM_STEPS, "eta": 0.0, "eta_b": 0.0,
                "sigma_n_01": SIGMA_N, "timesteps": ddrm_ts, "sigmas_01": sigmas,
                "physics": type(phys).__name__,
                "note": "x_bar = mean + std * noise[k] / sqrt(2) in deepinv's V-domain coordinates "
                        "([0,1] units); noise_pixel[k] = V(noise[k]) (the same draw as an image); "
                        "noise[0] is the start draw, noise[k] the draw of step k; den_in = V(x_bar) "
                        "([0,1] units), den_out its denoised image; out = den_out[-1]"}
        write_run(os.path.join(out, "ddrm_" + name), rec, xh, meta, pixel_noise=pix)
        summary["runs"]["ddrm_" + name] = {"nfe": len(rec.calls), "seconds": dt,
                                           "psnr_vs_truth": float(10 * np.log10(1 / np.mean((xh[0, 0].numpy() - x01) ** 2)))}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
