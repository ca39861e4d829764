#!/usr/bin/env python3
"""Write the example digits shipped under examples/ from the MNIST *test* split.

Index rule (no picking by look):
  examples/digit.png          test image index 0
  examples/digits/NNNN.png    for each class d = 0..9, the lowest test index
                              whose label is d (NNNN = that index, 4 digits)

Every image is the 28x28 test digit zero-padded by 2 pixels on each side to
32x32, stored as 8-bit grayscale PNG with the original pixel values
(0 = black background, 255 = white stroke), i.e. exactly the [-1, 1] model
input after x / 127.5 - 1.

Usage: python scripts/make_mnist_examples.py --data DIR/package/data --out examples
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
    from PIL import Image

    imgs = pad_to_32(read_idx_images(os.path.join(args.data, "t10k-images-idx3-ubyte")))
    labels = read_idx_labels(os.path.join(args.data, "t10k-labels-idx1-ubyte"))
    if imgs.shape[0] != 10000 or labels.shape[0] != 10000:
        raise ValueError(f"expected the 10000-image test split, got {imgs.shape[0]} images / {labels.shape[0]} labels")

    os.makedirs(os.path.join(args.out, "digits"), exist_ok=True)
    Image.fromarray(imgs[0], mode="L").save(os.path.join(args.out, "digit.png"))
    print(f"digit.png: test index 0, label {labels[0]}")
    for d in range(10):
        idx = int(np.flatnonzero(labels == d)[0])
        name = os.path.join(args.out, "digits", f"{idx:04d}.png")
        Image.fromarray(imgs[idx], mode="L").save(name)
        print(f"{name}: test index {idx}, label {d}")


if __name__ == "__main__":
    sys.exit(main())
