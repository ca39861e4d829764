#!/usr/bin/env python3
"""Reference MRI operators for genprior-inverse's `mri` / `mri-multicoil` tests
(crates/inverse/tests/mri.rs) and the README's MRI example image.

Runs deepinv's `MRI` and `MultiCoilMRI` (CPU torch, float64) and sigpy's `birdcage_maps`
(which deepinv uses for simulated coils). Never run in CI; the outputs are committed.

Writes tests/fixtures/mri/:
  - x_complex.npy: complex128 (32, 32), the Shepp-Logan phantom of tests/fixtures/ct/phantom64.npy
    averaged 2x2 to 32x32, times a smooth phase exp(i*pi/3*(col - row)/32);
  - mask.npy: float64 (32, 32) 0/1, deepinv RandomMaskGenerator((32, 32), acceleration=4,
    center_fraction=0.08, rng seeded 0);
  - maps.npy: complex64 (4, 32, 32), MultiCoilMRI(coil_maps=4, img_size=(32, 32)).coil_maps;
  - y_single.npy (2, 32, 32), adj_single.npy (2, 32, 32): MRI(mask).A(x) and A_adjoint(A(x));
  - y_multi.npy (2, 4, 32, 32), adj_multi.npy (2, 32, 32), rss_multi.npy (32, 32):
    MultiCoilMRI(mask, maps).A(x), A_adjoint(y), A_adjoint(y, rss=True);
  - reference.json: versions and shapes.
And examples/mri-slice.png: matplotlib's sample MRI slice (mpl-data/sample_data/s1045.ima.gz,
256x256 16-bit), averaged 8x8 to 32x32 and scaled to [0, 255] by its maximum (a 1-channel PNG
for `genprior reconstruct --task mri --input examples/mri-slice.png`).

Run:  /work/venv-torch/bin/pip install sigpy && /work/venv-torch/bin/python scripts/gen_mri_fixtures.py
"""
import gzip
import json
import pathlib

import deepinv
import matplotlib
import numpy as np
import sigpy
import torch
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "mri"
H = W = 32
COILS = 4


def planar(z: torch.Tensor) -> np.ndarray:
    """(1, 2, ...) deepinv tensor -> (2, ...) float64 array."""
    return z[0].detach().cpu().numpy().astype(np.float64)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    p64 = np.load(ROOT / "tests" / "fixtures" / "ct" / "phantom64.npy")
    p32 = p64.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    rows, cols = np.mgrid[:H, :W]
    x = p32 * np.exp(1j * np.pi / 3 * (cols - rows) / 32.0)
    np.save(OUT / "x_complex.npy", x.astype(np.complex128))
    xt = torch.from_numpy(np.stack([x.real, x.imag])[None]).to(torch.float64)

    gen = deepinv.physics.generator.RandomMaskGenerator(
        (H, W), acceleration=4, center_fraction=0.08, rng=torch.Generator().manual_seed(0)
    )
    mask = gen.step(batch_size=1, seed=0)["mask"][0].to(torch.float64)
    if mask.dim() == 3:
        mask = mask[0]
    np.save(OUT / "mask.npy", mask.numpy())

    single = deepinv.physics.MRI(mask=mask, img_size=(2, H, W))
    y1 = single.A(xt)
    np.save(OUT / "y_single.npy", planar(y1))
    np.save(OUT / "adj_single.npy", planar(single.A_adjoint(y1)))

    sim = deepinv.physics.MultiCoilMRI(coil_maps=COILS, img_size=(H, W))
    maps = sim.coil_maps.detach().cpu()
    maps = maps[0] if maps.dim() == 4 else maps
    ref = sigpy.mri.birdcage_maps((COILS, H, W))
    ref = ref / np.sqrt((np.abs(ref) ** 2).sum(0))
    assert np.allclose(maps.numpy(), ref, atol=1e-6), "deepinv's maps are not sigpy's"
    np.save(OUT / "maps.npy", maps.numpy().astype(np.complex64))

    multi = deepinv.physics.MultiCoilMRI(
        mask=mask, coil_maps=maps.to(torch.complex128), img_size=(H, W)
    )
    ym = multi.A(xt)
    np.save(OUT / "y_multi.npy", planar(ym))
    np.save(OUT / "adj_multi.npy", planar(multi.A_adjoint(ym)))
    np.save(OUT / "rss_multi.npy", planar(multi.A_adjoint(ym, rss=True))[0])

    ref = {
        "deepinv": deepinv.__version__,
        "torch": torch.__version__,
        "sigpy": sigpy.__version__,
        "image": [H, W],
        "coils": COILS,
        "sampled_columns": int(mask[0].sum().item()),
        "mask_generator": "RandomMaskGenerator(acceleration=4, center_fraction=0.08, seed 0)",
    }
    (OUT / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")

    ima = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
    with gzip.open(ima) as f:
        slice_ = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float64)
    small = slice_.reshape(32, 8, 32, 8).mean(axis=(1, 3))
    img = np.round(255 * small / small.max()).astype(np.uint8)
    Image.fromarray(img, mode="L").save(ROOT / "examples" / "mri-slice.png")
    print("wrote", OUT, "and examples/mri-slice.png")


if __name__ == "__main__":
    main()
