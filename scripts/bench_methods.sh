#!/usr/bin/env bash
# Cost and quality of every registered posterior sampler at its default (reference) budget on
# the bundled prior: network evaluations per image, seconds per image and PSNR of the
# posterior mean on one task (a benchmark, not a test).
#
#   scripts/bench_methods.sh [GENPRIOR_BINARY] [TASK_FLAGS...]
#
# Default task: sr4 with the box kernel (average pooling), which every method can run
# (DDRM and DDNM need an SVD), on examples/digit.png with 4 samples, seed 0, CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/genprior}
shift || true
TASK=("$@")
[ ${#TASK[@]} -eq 0 ] && TASK=(--task sr4 --kernel box)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
methods=$("$BIN" reconstruct --help | awk '/--method <METHOD>/ {getline; sub(/.*possible values: /, ""); sub(/\].*/, ""); gsub(/,/, ""); print}')
printf "%-10s %8s %10s %8s %8s\n" method NFE "s/image" PSNR SSIM
for m in $methods; do
    if ! "$BIN" reconstruct "${TASK[@]}" --input examples/digit.png --method "$m" --samples 4 \
        --seed 0 --device cpu --out "$W/$m" >"$W/$m.log" 2>&1; then
        printf "%-10s %s\n" "$m" "$(grep -m1 error: "$W/$m.log")"
        continue
    fi
    python3 - "$W/$m/report.json" "$m" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<10} {r['nfe_per_image']:>8} {r['seconds_per_image']:>10.2f} "
      f"{r['reconstruction']['psnr']:>8.2f} {r['reconstruction']['ssim']:>8.3f}")
PY
done
