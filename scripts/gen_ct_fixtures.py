#!/usr/bin/env python3
"""Reference sinograms and FBP reconstructions for genprior-inverse's `ct` tests
(crates/inverse/tests/tomography.rs).

Writes tests/fixtures/ct/:
  - phantom64.npy: scikit-image's Shepp-Logan phantom (400x400, values in [0, 1]) resized to
    64x64 (skimage.transform.resize, anti_aliasing=True), float64;
  - sino_<name>.npy: radon(phantom, theta, circle=False), shape (D, K) = (91, K), float64;
  - fbp_<name>_<filter>.npy: iradon(sino, theta, circle=False, filter_name=filter,
    interpolation="linear", output_size=64), float64, for filter in ramp, hann;
  - rect_image.npy, sino_rect.npy: the phantom resized to 24x40 (non-square) and its
    radon(..., theta=np.linspace(0, 180, 30, endpoint=False), circle=False), shape (57, 30);
  - reference.json: the configurations (theta = np.linspace(0, range, K, endpoint=False)), the
    scikit-image version, and the PSNR (data range 1) of each iradon reconstruction against the
    phantom.

Configurations: full (90 angles over 180 degrees), sparse (20 over 180), limited (60 over
120).

Run:  python -m venv /tmp/ctenv && /tmp/ctenv/bin/pip install scikit-image numpy
      /tmp/ctenv/bin/python scripts/gen_ct_fixtures.py
"""
import json
import pathlib

import numpy as np
import skimage
from skimage.data import shepp_logan_phantom
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import iradon, radon, resize

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ct"
CONFIGS = {"full": (90, 180.0), "sparse": (20, 180.0), "limited": (60, 120.0)}
SIDE = 64


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    phantom = resize(shepp_logan_phantom(), (SIDE, SIDE), anti_aliasing=True).astype(np.float64)
    np.save(OUT / "phantom64.npy", phantom)
    ref = {
        "skimage_version": skimage.__version__,
        "numpy_version": np.__version__,
        "side": SIDE,
        "configs": {},
    }
    for name, (k, rng) in CONFIGS.items():
        theta = np.linspace(0.0, rng, k, endpoint=False)
        sino = radon(phantom, theta=theta, circle=False)
        np.save(OUT / f"sino_{name}.npy", sino)
        entry = {"angles": k, "angle_range": rng, "detectors": sino.shape[0], "psnr": {}}
        for filt in ["ramp", "hann"]:
            rec = iradon(
                sino,
                theta=theta,
                circle=False,
                filter_name=filt,
                interpolation="linear",
                output_size=SIDE,
            )
            np.save(OUT / f"fbp_{name}_{filt}.npy", rec)
            entry["psnr"][filt] = peak_signal_noise_ratio(phantom, rec, data_range=1.0)
        ref["configs"][name] = entry
        print(name, entry)
    rect = resize(shepp_logan_phantom(), (24, 40), anti_aliasing=True).astype(np.float64)
    np.save(OUT / "rect_image.npy", rect)
    sino = radon(rect, theta=np.linspace(0.0, 180.0, 30, endpoint=False), circle=False)
    np.save(OUT / "sino_rect.npy", sino)
    ref["rect"] = {"shape": list(rect.shape), "angles": 30, "angle_range": 180.0, "detectors": sino.shape[0]}
    (OUT / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")


if __name__ == "__main__":
    main()
