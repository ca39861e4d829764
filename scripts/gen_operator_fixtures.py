#!/usr/bin/env python3
"""Reference values for genprior-inverse's operator and metric tests.

Writes tests/fixtures/operators/reference.json with
  - MATLAB-convention antialiased bicubic downsampling (imresize(x, 1/s)) of a 32x32 image for
    s = 2, 4, 8, computed in float64 by the PyPI package `resize-right` (a MATLAB-consistent
    resizer) with MATLAB's symmetric border padding, and cross-checked against `bicubic-pytorch`
    (a port of MATLAB's imresize, float32 weights, so to ~1e-7);
  - bicubic upsampling by 4 of an 8x8 image (the SR baseline), same packages;
  - SSIM (scikit-image structural_similarity, Gaussian 11x11 window, sigma 1.5, K1 0.01,
    K2 0.03, population covariance, data range 1) and PSNR of a pair of 3x24x24 images in [0, 1].

Run with the reference environment:  /opt/refenv/bin/python scripts/gen_operator_fixtures.py
(needs numpy, torch, scikit-image, bicubic-pytorch, resize-right).
"""
import json
import pathlib

import numpy as np
import torch
from bicubic_pytorch import imresize as bp_imresize
from resize_right import resize as rr_resize
from resize_right import interp_methods
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "operators" / "reference.json"


def resize_both(x: np.ndarray, scale: float) -> np.ndarray:
    # Reference: resize-right on a float64 numpy array with MATLAB's half-sample symmetric
    # padding (resize-right's default padding is zeros, which differs from MATLAB at the borders).
    ref = rr_resize(x, scale_factors=scale, interp_method=interp_methods.cubic, antialiasing=True, pad_mode="symmetric")
    # Cross-check: bicubic-pytorch, a port of MATLAB's imresize. It builds its weights in float32,
    # so it agrees to ~1e-7, not to the last digit.
    t = torch.from_numpy(x)[None, None]
    other = bp_imresize(t, scale=scale, antialiasing=True)[0, 0].numpy()
    diff = float(np.abs(ref - other).max())
    assert diff < 1e-6, f"resize-right and bicubic-pytorch disagree by {diff} at scale {scale}"
    return np.asarray(ref, dtype=np.float64)


def main() -> None:
    rng = np.random.default_rng(20240317)
    ref = {}

    x = rng.uniform(-1.0, 1.0, size=(32, 32))
    ref["bicubic_input"] = {"shape": [32, 32], "data": x.ravel().tolist()}
    for s in (2, 4, 8):
        y = resize_both(x, 1.0 / s)
        assert y.shape == (32 // s, 32 // s)
        ref[f"bicubic_down_{s}"] = {"shape": list(y.shape), "data": y.ravel().tolist()}

    lo = rng.uniform(-0.4, 0.4, size=(8, 8))
    up = resize_both(lo, 4.0)
    assert up.shape == (32, 32) and np.abs(up).max() < 1.0
    ref["bicubic_up_input"] = {"shape": [8, 8], "data": lo.ravel().tolist()}
    ref["bicubic_up_4"] = {"shape": [32, 32], "data": up.ravel().tolist()}

    a = rng.uniform(0.0, 1.0, size=(3, 24, 24))
    # a smooth-ish image plus noise so that SSIM is neither ~0 nor ~1
    a = (a + np.roll(a, 1, axis=1) + np.roll(a, 1, axis=2)) / 3.0
    b = np.clip(a + rng.normal(0.0, 0.1, size=a.shape), 0.0, 1.0)
    ssim = structural_similarity(
        a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0)
    ref["metrics"] = {
        "shape": [3, 24, 24],
        "a": a.ravel().tolist(),
        "b": b.ravel().tolist(),
        "ssim": float(ssim),
        "psnr": float(psnr),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(ref))
    print(f"wrote {OUT} (ssim {ssim:.6f}, psnr {psnr:.4f})")


if __name__ == "__main__":
    main()
