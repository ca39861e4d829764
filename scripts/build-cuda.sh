#!/usr/bin/env bash
# Build genprior with --features cuda on a machine WITHOUT a GPU or a CUDA install, and
# package the result for a GPU machine. Facts and recipe: ../shared/specs/gpu-build.md
# (summarised in the README's GPU section).
#
# What it does (every step is skipped when its output is already there: rerunning is cheap):
#   1. Downloads five CUDA 13.0 wheels from PyPI (nvcc, nvvm, crt headers, the runtime and
#      CCCL; about 100 MB) into target-cuda/wheels/ and unpacks them, without installing
#      anything, into target-cuda/cu13/ (about 270 MB).
#   2. Copies the crates.io source of candle-core 0.11.1 from the local cargo registry into
#      target-cuda/patched/candle-core and switches its cudarc dependency from
#      `dynamic-linking` (needs libcuda/libcublas/... at link time, which no wheel ships)
#      to `dynamic-loading` (the libraries are dlopen'ed on first use). Nothing third-party
#      is committed: the copy is made here, at build time.
#   3. Mirrors the workspace sources into target-cuda/ws/ with a [patch.crates-io] entry
#      for the patched candle-core (so the checked-in Cargo.lock is never touched), and
#      builds `genprior` with `--features cuda` for compute capability $CUDA_COMPUTE_CAP
#      (default 90: H100/H200) into target-cuda/release/.
#   4. Writes target-cuda/dist/: genprior.gz and libcudart.so.13 (the only CUDA library
#      the binary needs at load time; its RUNPATH is $ORIGIN, so keep it beside the binary).
#
# Usage: scripts/build-cuda.sh [--head]
#   --head   build the last commit (git archive HEAD) instead of the working tree
#   env: CUDA_COMPUTE_CAP=80|90 (default 90), GENPRIOR_CUDA_DIR=<dir> (default target-cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
FROM_HEAD=0
for a in "$@"; do
    case $a in
        --head) FROM_HEAD=1 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "build-cuda: unknown option $a" >&2; exit 2 ;;
    esac
done
OUT=${GENPRIOR_CUDA_DIR:-$ROOT/target-cuda}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CAP=${CUDA_COMPUTE_CAP:-90}
CU=$OUT/cu13
WHEELS=$OUT/wheels
CANDLE_VERSION=0.11.1

say() { printf '[build-cuda] %s\n' "$*" >&2; }
die() { printf '[build-cuda] error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
command -v unzip >/dev/null || die "unzip is required (apt-get install unzip)"

# ---------------------------------------------------------------------------------------
# 1. CUDA 13.0 compiler and headers from PyPI wheels.
# CUDA 13.0 exactly: the target machines' driver (580) rejects PTX from 13.1 and newer.
WHEEL_SPECS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)
if [[ -x $CU/bin/nvcc && -f $CU/lib/libcudart.so.13 && -f $CU/.complete ]]; then
    say "CUDA 13.0 toolchain already unpacked in $CU"
else
    PIP=()
    for py in python3 /opt/refenv/bin/python python; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            PIP=("$py" -m pip)
            break
        fi
    done
    [[ ${#PIP[@]} -gt 0 ]] || die "pip is required to download the CUDA wheels (python3 -m pip)"
    mkdir -p "$WHEELS"
    say "downloading from PyPI (about 100 MB, once) into $WHEELS:"
    for w in "${WHEEL_SPECS[@]}"; do say "  $w"; done
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --python-version 3.12 \
        -d "$WHEELS" "${WHEEL_SPECS[@]}"
    rm -rf "$OUT/unpack" "$CU"
    mkdir -p "$OUT/unpack"
    for w in "${WHEEL_SPECS[@]}"; do
        name=${w%%==*}
        ver=${w##*==}
        f=$(ls "$WHEELS"/"${name//-/_}"-"$ver"-*.whl 2>/dev/null | head -n1)
        [[ -n $f ]] || die "wheel for $w not found in $WHEELS"
        say "unpacking $(basename "$f")"
        unzip -q -o "$f" 'nvidia/*' -d "$OUT/unpack"
    done
    [[ -d $OUT/unpack/nvidia/cu13 ]] || die "unexpected wheel layout: no nvidia/cu13 in the wheels"
    mv "$OUT/unpack/nvidia/cu13" "$CU"
    rm -rf "$OUT/unpack"
    chmod +x "$CU"/bin/* "$CU"/nvvm/bin/* 2>/dev/null || true
    ln -sf libcudart.so.13 "$CU/lib/libcudart.so"
    [[ -x $CU/bin/nvcc ]] || die "nvcc missing after unpacking"
    touch "$CU/.complete"
fi
say "nvcc: $("$CU/bin/nvcc" --version | tail -n2 | head -n1)"

# ---------------------------------------------------------------------------------------
# 2. Patched copy of candle-core (cudarc: dynamic-linking -> dynamic-loading).
PATCHED=$OUT/patched/candle-core
if [[ -f $PATCHED/.genprior-patched ]]; then
    say "patched candle-core already in $PATCHED"
else
    CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
    find_src() { ls -d "$CARGO_HOME_DIR"/registry/src/*/candle-core-$CANDLE_VERSION 2>/dev/null | head -n1; }
    SRC=$(find_src || true)
    if [[ -z $SRC ]]; then
        say "candle-core $CANDLE_VERSION not in the cargo registry yet: cargo fetch"
        cargo fetch --locked >/dev/null
        SRC=$(find_src || true)
    fi
    [[ -n $SRC && -f $SRC/Cargo.toml ]] || die "candle-core-$CANDLE_VERSION source not found under $CARGO_HOME_DIR/registry/src"
    say "copying $SRC -> $PATCHED (cudarc: dynamic-linking -> dynamic-loading)"
    rm -rf "$PATCHED"
    mkdir -p "$(dirname "$PATCHED")"
    cp -a "$SRC" "$PATCHED"
    chmod -R u+w "$PATCHED"
    grep -q '"dynamic-linking",' "$PATCHED/Cargo.toml" \
        || die "candle-core's Cargo.toml no longer asks cudarc for dynamic-linking: recheck the recipe"
    sed -i 's/"dynamic-linking",/"dynamic-loading",/' "$PATCHED/Cargo.toml"
    rm -f "$PATCHED/.cargo-ok" "$PATCHED/.cargo_vcs_info.json"
    touch "$PATCHED/.genprior-patched"
fi

# ---------------------------------------------------------------------------------------
# 3. Build in a mirror of the workspace (the patch entry changes Cargo.lock; only the
#    mirror's copy changes). Copies keep their timestamps, so unchanged crates do not rebuild.
WS=$OUT/ws
SRC=$OUT/src
rm -rf "$SRC"
mkdir -p "$SRC" "$WS"
if [[ $FROM_HEAD == 1 ]]; then
    say "sources: the last commit ($(git -C "$ROOT" rev-parse --short HEAD))"
    git -C "$ROOT" archive HEAD Cargo.toml Cargo.lock crates tests/common $(cd "$ROOT" && git ls-files 'tests/*.rs') \
        | tar -x -C "$SRC"
else
    say "sources: the working tree (use --head for the last commit)"
    cp -p "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$SRC/"
    cp -a "$ROOT/crates" "$SRC/crates"
    mkdir -p "$SRC/tests"
    cp -a "$ROOT"/tests/*.rs "$SRC/tests/"      # [[test]] targets named by crates/cli/Cargo.toml
    [[ -d $ROOT/tests/common ]] && cp -a "$ROOT/tests/common" "$SRC/tests/common"
fi
rm -rf "$WS/crates" "$WS/tests"
mv "$SRC/crates" "$WS/crates"
[[ -d $SRC/tests ]] && mv "$SRC/tests" "$WS/tests"
# Data the binary finds through its compiled-in source path (bundled prior, example images).
for d in models examples; do ln -sfn "$ROOT/$d" "$WS/$d"; done
if ! cmp -s "$SRC/Cargo.lock" "$WS/Cargo.lock.base" 2>/dev/null; then
    cp -p "$SRC/Cargo.lock" "$WS/Cargo.lock"
    cp -p "$SRC/Cargo.lock" "$WS/Cargo.lock.base"
fi
{
    cat "$SRC/Cargo.toml"
    printf '\n# Added by scripts/build-cuda.sh: candle-core with cudarc dynamic-loading.\n'
    printf '[patch.crates-io]\ncandle-core = { path = "%s" }\n' "$PATCHED"
} >"$WS/Cargo.toml.new"
if ! cmp -s "$WS/Cargo.toml.new" "$WS/Cargo.toml" 2>/dev/null; then
    mv "$WS/Cargo.toml.new" "$WS/Cargo.toml"
else
    rm -f "$WS/Cargo.toml.new"
fi
rm -rf "$SRC"

export NVCC=$CU/bin/nvcc
export CUDA_HOME=$CU
export PATH=$CU/bin:$PATH
export CUDA_COMPUTE_CAP=$CAP
export CUDARC_CUDA_VERSION=13000
export RUSTFLAGS="-L native=$CU/lib -C link-arg=-Wl,-rpath,\$ORIGIN"
say "building genprior --features cuda (compute capability $CAP) into $OUT/release"
say "(from scratch: about 20 minutes on 2 cores, most of it nvcc; afterwards seconds)"
start=$(date +%s)
(cd "$WS" && cargo build --release -p genprior --features cuda --target-dir "$OUT")
say "cargo build took $(($(date +%s) - start)) s"

# ---------------------------------------------------------------------------------------
# 4. Package.
BIN=$OUT/release/genprior
DIST=$OUT/dist
mkdir -p "$DIST"
cp -L "$CU/lib/libcudart.so.13" "$DIST/libcudart.so.13"
gzip -c -n "$BIN" >"$DIST/genprior.gz.tmp" && mv "$DIST/genprior.gz.tmp" "$DIST/genprior.gz"
# Also beside the unpacked binary, so target-cuda/release/genprior runs on a GPU machine too.
cp -L "$CU/lib/libcudart.so.13" "$OUT/release/libcudart.so.13"
size() { du -h "$1" | cut -f1; }
cat <<EOF

genprior (CUDA, sm_$CAP) built:
  $BIN  ($(size "$BIN"))
  $DIST/genprior.gz  ($(size "$DIST/genprior.gz"))
  $DIST/libcudart.so.13  ($(size "$DIST/libcudart.so.13"))

On the GPU machine, put both files in one folder, then:
  gunzip genprior.gz && chmod +x genprior
  export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib:\${LD_LIBRARY_PATH:-}
  ./genprior bench --arch ddpm-256 --batch 8 --device cuda --dtype bf16
The LD_LIBRARY_PATH line points at a folder that holds libcublas, libcublasLt and libcurand
for CUDA 13 (there: PyTorch cu130's venv; check it with ls). libcuda comes with the driver.
Without a GPU the binary runs on the CPU under --device auto.
EOF
echo "$DIST/genprior.gz"
