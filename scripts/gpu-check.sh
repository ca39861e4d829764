#!/usr/bin/env bash
# One command for a GPU machine (about 5 minutes at most): parity of the CUDA build against
# the CPU and the fixtures, UNet forward timings (genprior and PyTorch, f32 and bf16, batch 1
# and a large batch), the per-step cost of the sampling loop, and one DPnP and one DPS
# reconstruction on a 256-px random-weight model. Writes gpu-check-summary.{json,md}.
# The steps themselves are in scripts/gpu_check.py (its docstring lists them).
#
# Usage:
#   scripts/gpu-check.sh [--bin PATH] [--out DIR] [--python PY] [--cpu-dry-run] [-- gpu_check.py options]
#
#   --bin PATH     the CUDA genprior (default: target-cuda/release/genprior, else
#                  target-cuda/dist/genprior.gz, unpacked; both from scripts/build-cuda.sh)
#   --out DIR      where the summary goes (default: target-cuda/gpu-check)
#   --python PY    the Python with PyTorch (default: $GENPRIOR_TORCH_PYTHON, else
#                  /opt/torch/.venv/bin/python, else python3)
#   --cpu-dry-run  no GPU needed: the same steps with tiny sizes on the CPU, to check the
#                  pipeline and the summary writer (the numbers mean nothing)
# Packages PyTorch's environment lacks (diffusers and its dependencies, deepinv for the ADM
# reference) are taken from target-cuda/pywheels/ (made by `scripts/gpu-check.sh --fetch-wheels`
# on a machine with PyPI access), unpacked into OUT and appended to the Python path.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BIN="" OUT="" PY="${GENPRIOR_TORCH_PYTHON:-}" DRY=0 FETCH=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --bin) BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --cpu-dry-run) DRY=1; shift ;;
        --fetch-wheels) FETCH=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { printf '[gpu-check] %s\n' "$*" >&2; }
die() { printf '[gpu-check] error: %s\n' "$*" >&2; exit 2; }

WHEELS=$ROOT/target-cuda/pywheels
if [[ $FETCH == 1 ]]; then
    # For the GPU machine's Python 3.12: diffusers with its dependencies (not torch), and
    # deepinv alone (only its UNet module is imported). About 40 MB.
    mkdir -p "$WHEELS"
    say "downloading from PyPI into $WHEELS: diffusers==0.42.1 (with dependencies), deepinv==0.5.0 (no dependencies)"
    python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$WHEELS" diffusers==0.42.1
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" deepinv==0.5.0
    du -sh "$WHEELS" >&2
    exit 0
fi

OUT=${OUT:-$ROOT/target-cuda/gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# --- the binary ---------------------------------------------------------------------------
if [[ -z $BIN ]]; then
    if [[ -x $ROOT/target-cuda/release/genprior ]]; then
        BIN=$ROOT/target-cuda/release/genprior
    elif [[ -f $ROOT/target-cuda/dist/genprior.gz ]]; then
        mkdir -p "$OUT/bin"
        gunzip -c "$ROOT/target-cuda/dist/genprior.gz" >"$OUT/bin/genprior"
        chmod +x "$OUT/bin/genprior"
        cp "$ROOT/target-cuda/dist/libcudart.so.13" "$OUT/bin/"
        BIN=$OUT/bin/genprior
    elif [[ $DRY == 1 && -x $ROOT/target/release/genprior ]]; then
        BIN=$ROOT/target/release/genprior
    else
        die "no genprior binary: build it with scripts/build-cuda.sh or pass --bin"
    fi
fi
[[ -x $BIN ]] || die "$BIN is not an executable"
say "binary: $BIN"

# --- Python with PyTorch --------------------------------------------------------------------
if [[ -z $PY ]]; then
    for p in /opt/torch/.venv/bin/python python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then PY=$(command -v "$p"); break; fi
    done
fi
if [[ -z $PY ]]; then
    PY=$(command -v python3 || true)
    [[ -n $PY ]] || die "python3 is required"
    say "no Python with PyTorch found: the PyTorch timings will be missing"
fi
say "python: $PY"

# --- CUDA libraries: libcuda from the driver; cublas/cublasLt/curand/nvrtc (CUDA 13) -------
if [[ -z ${GENPRIOR_CUDA_LIBS:-} ]]; then
    GENPRIOR_CUDA_LIBS=$("$PY" - <<'EOF' 2>/dev/null || true
import importlib.util, os
s = importlib.util.find_spec("nvidia")
for root in (s.submodule_search_locations if s else []):
    d = os.path.join(root, "cu13", "lib")
    if os.path.isdir(d):
        print(d)
        break
EOF
)
fi
if [[ -z $GENPRIOR_CUDA_LIBS ]]; then
    for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /usr/local/cuda/lib64; do
        [[ -d $d ]] && { GENPRIOR_CUDA_LIBS=$d; break; }
    done
fi
if [[ -n $GENPRIOR_CUDA_LIBS ]]; then
    export LD_LIBRARY_PATH=$GENPRIOR_CUDA_LIBS:$(dirname "$BIN")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi

# --- extra Python packages ------------------------------------------------------------------
PYSITE=()
if [[ -d $WHEELS ]] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    mkdir -p "$OUT/pysite"
    for w in "$WHEELS"/*.whl; do
        stamp="$OUT/pysite/.$(basename "$w").done"
        [[ -f $stamp ]] || { unzip -q -o "$w" -d "$OUT/pysite" && touch "$stamp"; }
    done
    PYSITE=(--pysite "$OUT/pysite")
    say "extra packages: $OUT/pysite (appended to sys.path)"
fi

# --- GPU present? ---------------------------------------------------------------------------
if [[ $DRY == 1 ]]; then
    say "CPU dry run: tiny sizes on the CPU (checks the pipeline only)"
    exec "$PY" "$ROOT/scripts/gpu_check.py" --bin "$BIN" --out "$OUT" --cpu-dry-run \
        --torch-python "$PY" "${PYSITE[@]}" "${EXTRA[@]}"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
fi
probe=$("$BIN" bench --arch ddpm-cifar10-32 --iters 1 --device cuda 2>&1 >/dev/null) && ok=1 || ok=0
if [[ $ok == 0 ]]; then
    echo "[gpu-check] no usable CUDA GPU for $BIN:" >&2
    printf '%s\n' "$probe" | grep -v '^device:' | tail -n 3 >&2
    echo "[gpu-check] run this on a GPU machine (see the README's GPU section), or use --cpu-dry-run." >&2
    exit 2
fi
say "CUDA device is usable"
exec timeout 290 "$PY" "$ROOT/scripts/gpu_check.py" --bin "$BIN" --out "$OUT" --device cuda \
    --torch-python "$PY" "${PYSITE[@]}" "${EXTRA[@]}"
