#!/usr/bin/env python3
"""Write the fixed MNIST evaluation subset that `genprior eval` uses by default.

Index rule (no picking by look): test-split images 0, 100, 200, ..., 9900 (100 images,
Python slice 0:10000:100), each 28x28 digit zero-padded by 2 pixels per side to 32x32.
Stored as examples/mnist-test-100.npy: uint8, shape (100, 1, 32, 32), original pixel values
(0 = black background), i.e. the model input after x / 127.5 - 1. The labels go to
examples/mnist-test-100-labels.npy (uint8, shape (100,)).

It also writes examples/mask-32.png, the mask of the `inpaint-mask` task in the benchmark:
white = observed, black = missing; a cross of two 5-pixel scratches (rows 14-18 and
columns 14-18), 28.8 % of the pixels missing.

`genprior eval --images DIR/t10k-images-idx3-ubyte --indices 0:10000:100` reads the same
images straight from the IDX file; the validation slice used for tuning is
`--images DIR/train-images-idx3-ubyte --indices 50000:60000:100` (training split).

Usage: python scripts/make_mnist_eval_set.py --data DIR/package/data --out examples
(DIR from scripts/fetch_mnist.sh DIR).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_mnist_prior import pad_to_32, read_idx_images, read_idx_labels  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="directory holding t10k-images-idx3-ubyte")
    p.add_argument("--out", default="examples")
    args = p.parse_args(argv)
    imgs = pad_to_32(read_idx_images(os.path.join(args.data, "t10k-images-idx3-ubyte")))
    labels = read_idx_labels(os.path.join(args.data, "t10k-labels-idx1-ubyte"))
    if imgs.shape[0] != 10000:
        raise ValueError(f"expected the 10000-image test split, got {imgs.shape[0]}")
    idx = np.arange(0, 10000, 100)
    sub = imgs[idx][:, None, :, :].astype(np.uint8)
    np.save(os.path.join(args.out, "mnist-test-100.npy"), sub)
    np.save(os.path.join(args.out, "mnist-test-100-labels.npy"), labels[idx].astype(np.uint8))
    from PIL import Image

    mask = np.full((32, 32), 255, np.uint8)
    mask[14:19, :] = 0
    mask[:, 14:19] = 0
    Image.fromarray(mask, mode="L").save(os.path.join(args.out, "mask-32.png"))
    counts = np.bincount(labels[idx], minlength=10)
    print(f"wrote {sub.shape} uint8; label counts {counts.tolist()}")


if __name__ == "__main__":
    sys.exit(main())
