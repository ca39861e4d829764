#!/usr/bin/env bash
# The README's picture per modality: MRI (multi-coil SENSE, R = 4), sparse-view CT with
# X-ray photon counts, and
# low-light (Poisson) deblurring of the bundled example digit with the bundled prior, DPnP-DDPM
# at its reference budget; each row shows truth | measurement | classical baseline |
# posterior mean | posterior std. Writes docs/images/modalities.png and the run folders under
# ${OUT:-/tmp/genprior-modalities}. Needs the release binary and python3 with Pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/genprior}
OUT=${OUT:-/tmp/genprior-modalities}
PY=${PYTHON:-python3}
mkdir -p "$OUT" docs/images
run() {
  local name=$1; shift
  "$BIN" reconstruct --input examples/digit.png --method dpnp-ddpm --samples 4 --seed 0 \
    --out "$OUT/$name" "$@" 2>/dev/null | tail -n 2
}
run mri --task mri-multicoil --coils 8 --acceleration 4 --mask-pattern equispaced --noise-sigma 0.05
run ct --task ct --angles 16 --noise transmission --photons 1e4
run poisson --task deblur-gauss --noise poisson --photons 50
"$PY" - "$OUT" <<'PYEOF'
import json, sys, pathlib
from PIL import Image, ImageDraw
out = pathlib.Path(sys.argv[1])
rows = [("mri", "MRI, 8 coils, R = 4"), ("ct", "CT, 16 angles, 1e4 photons"), ("poisson", "blur + Poisson, 50 photons")]
cols = ["truth", "measurement", "baseline", "posterior mean", "posterior std"]
S, PAD, LEFT, TOP = 96, 6, 150, 22
W = LEFT + len(cols) * (S + PAD)
H = TOP + len(rows) * (S + PAD + 14)
grid = Image.new("L", (W, H), 255)
d = ImageDraw.Draw(grid)
for j, c in enumerate(cols):
    d.text((LEFT + j * (S + PAD), 4), c, fill=0)
truth = Image.open("examples/digit.png").convert("L")
for i, (name, label) in enumerate(rows):
    r = json.loads((out / name / "report.json").read_text())
    y0 = TOP + i * (S + PAD + 14)
    d.text((4, y0 + S // 2 - 12), label, fill=0)
    d.text((4, y0 + S // 2 + 2), f"{r['baseline']['psnr']:.1f} -> {r['reconstruction']['psnr']:.1f} dB", fill=0)
    imgs = [truth] + [Image.open(out / name / f).convert("L") for f in ["measurement.png", "baseline.png", "reconstruction.png", "std.png"]]
    for j, im in enumerate(imgs):
        grid.paste(im.resize((S, S), Image.NEAREST), (LEFT + j * (S + PAD), y0))
grid.save("docs/images/modalities.png")
print("wrote docs/images/modalities.png")
PYEOF
