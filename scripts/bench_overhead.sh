#!/usr/bin/env bash
# Host-side bookkeeping of each posterior sampler: wall time of a reconstruction minus its
# network evaluations (each timed by `genprior bench` on the same network and batch in the
# same run), at 32×32 with 16 chains on the bundled prior (a benchmark, not a test).
#
#   scripts/bench_overhead.sh [GENPRIOR_BINARY]
#
# Budgets are cut to a few dozen evaluations (the overhead per evaluation does not depend on
# the budget, except DPnP's PCS, whose Langevin steps per outer step are set here).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/genprior}
K=16
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
CFG=models/mnist-ddpm-32/config.json
per_pass() {
    "$BIN" bench --arch "$CFG" --batch $K --iters 10 --device cpu --json "$@" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["seconds_per_pass"])'
}
t_fwd=$(per_pass)
t_grad=$(per_pass --grad)
echo "network at batch $K: forward $t_fwd s, forward+gradient $t_grad s"
run() {
    local m=$1 task=$2; shift 2
    "$BIN" reconstruct --task "$task" --input examples/digit.png --method "$m" --samples $K \
        --seed 0 --device cpu --out "$W/$m" "$@" >/dev/null 2>&1 || { echo "$m: failed"; return; }
    python3 - "$W/$m/report.json" "$m" "$task" "$t_fwd" "$t_grad" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m, task, tf, tg = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
grad = m in ("dps", "pigdm", "lgd")
net = r["nfe"] * (tg if grad else tf)
wall = r["seconds"]
print(f"{m:<10} {task:<16} NFE {r['nfe']:>5}{' (+grad)' if grad else '        '} wall {wall:7.2f} s"
      f"  network {net:7.2f} s  host {max(wall - net, 0):6.2f} s = {100 * max(wall - net, 0) / wall:5.1f} %")
PY
}
run dpnp-ddpm sr4 --outer-steps 4 --k-start 1 --dds-steps 5 --pcs-steps 100 --warm-start noise
run dpnp-ddpm phase-retrieval --outer-steps 4 --k-start 1 --dds-steps 5 --pcs-steps 100 --warm-start noise
run dps sr4 --dps-steps 30
run diffpir sr4 --diffpir-steps 31
run diffpir phase-retrieval --diffpir-steps 31
run pigdm sr4 --pigdm-steps 30
run reddiff sr4 --reddiff-steps 30
run ddrm sr4 --kernel box --ddrm-steps 30
run ddnm sr4 --kernel box --ddnm-steps 30
run daps sr4 --daps-steps 10 --daps-ode-steps 3
run lgd sr4 --lgd-steps 30
