#!/usr/bin/env bash
# Throughput of `genprior batch` against a shell loop of `genprior reconstruct` on the same 64
# digits at the same settings, both timed in this run (a benchmark, not a test).
#
#   scripts/bench_batch.sh [GENPRIOR_BINARY] [MICRO_BATCH]
#
# The 64 items are the 10 bundled example digits, repeated under distinct ids (each item gets
# its own measurement noise). Settings: sr4, DPS with 50 steps, 4 samples per item, CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/genprior}
MB=${2:-8}
N=64
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
SET=(--task sr4 --method dps --dps-steps 50 --samples 4 --device cpu)
digits=(examples/digits/*.png)
echo "id,input" > "$W/m.csv"
for ((j = 0; j < N; j++)); do
    echo "d$(printf %02d $j),$PWD/${digits[$((j % ${#digits[@]}))]}" >> "$W/m.csv"
done
t0=$(date +%s.%N)
for ((j = 0; j < N; j++)); do
    "$BIN" reconstruct "${SET[@]}" --input "${digits[$((j % ${#digits[@]}))]}" --seed "$j" \
        --out "$W/loop/$j" >/dev/null 2>&1
done
t1=$(date +%s.%N)
"$BIN" batch "${SET[@]}" --manifest "$W/m.csv" --out "$W/batch" --micro-batch "$MB" >/dev/null 2>&1
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$N" "$MB" <<'PY'
import sys
t0, t1, t2, n, mb = map(float, sys.argv[1:])
loop, batch = t1 - t0, t2 - t1
print(f"{int(n)} items, sr4, DPS 50 steps, 4 samples each, CPU")
print(f"reconstruct loop : {loop:7.1f} s  {n / loop:6.2f} items/s")
print(f"batch (micro-batch {int(mb)}): {batch:7.1f} s  {n / batch:6.2f} items/s")
print(f"batch / loop throughput: {loop / batch:.2f}x")
PY
