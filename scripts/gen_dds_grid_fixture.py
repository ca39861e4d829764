#!/usr/bin/env python
"""Record the DPnP reference code's DDS-DDIM time grid as a fixture for genprior's
`--dds-grid reference` (crates/posterior/tests/dds_grid.rs).

The reference is `x1xu/diffusion-plug-and-play`, `guided_diffusion/gaussian_diffusion.py`,
`DDIMDenoiser.gen_schedule`. `reference_grid` below is a line-by-line transcription of that
builder (numpy, as the reference), kept separate from genprior's Rust code so the two can be
compared:

* usable VP steps: alphas_cumprod > 1/(1 + eta^2), candidate conditional levels
  a'_t = ((1 + eta^2) abar_t - 1) / (eta^2 + abar_t - 1), walked from t = 0 upwards;
* skip = 7 above eta 0.75, 1 above 0.3, else 0 integer steps after each kept one, except in
  the last 15 candidates;
* a gap a'_t >= 1.1 a'_{t+1} gets n = int(log(a'_t / a'_{t+1}) / log 1.1) + 1 geometric
  points (a'_t included, a'_{t+1} excluded), the first n // 2 mapped to timestep t, the rest
  to t + 1 (the network is evaluated at those integer timesteps);
* the last candidate is extended geometrically down to 1e-4 (all mapped to it); a candidate
  already below 1e-4 ends the grid, and the reference then *prepends* its timestep to the
  mapping (`np.append(idx, self._mapping_t)`), shifting every earlier point's timestep by one
  position -- reproduced here, as in genprior's reference grid.

alphas_cumprod is the reference's own float64 linear schedule (guided-diffusion's
`get_named_beta_schedule("linear", 1000)`: np.linspace(1e-4, 0.02, 1000) in float64, then
np.cumprod(1 - betas)), which genprior's reference grid also builds for linear schedules, so
the Rust test can compare every (t, a') pair to ~1e-12. The grid is sensitive to that
precision: on genprior's float32 schedule table (diffusers' rounding) one decision flips at
eta = 0.2427 and the reference run takes 2,424 NFE instead of 2,423 (also recorded).

Run once (numpy and torch, e.g. /work/venv-torch/bin/python):

    python scripts/gen_dds_grid_fixture.py

Writes tests/fixtures/dds_grid/reference_grid.json.
"""

import json
import os

import numpy as np
import torch

T = 1000
TOL_EXP = 4 * np.log(10)  # diffuse until a' < 1e-4
MAX_SEP = 1.1


def genprior_alphas_cumprod():
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float32).numpy()
    alphas = (np.float32(1.0) - betas).astype(np.float32)
    out, acc = [], 1.0
    for a in alphas:
        acc = float(np.float32(acc * float(a)))
        out.append(acc)
    return np.array(out, dtype=np.float64)


def reference_alphas_cumprod():
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    return np.cumprod(1.0 - betas, axis=0)


def reference_grid(alphas_cumprod, eta):
    """(a' list, timestep list, whether the early-end branch fired), as gen_schedule."""
    time_mask = alphas_cumprod > 1 / (1 + eta**2)
    masked = alphas_cumprod[time_mask]
    cand = ((1 + eta**2) * masked - 1) / (eta**2 + masked - 1)
    if eta > 0.75:
        skip = 7
    elif eta > 0.3:
        skip = 1
    else:
        skip = 0
    acs = np.empty(shape=(0,), dtype=np.float64)
    mapping = np.empty(shape=(0,), dtype=int)
    early_end = False
    cnt_skip = skip
    for idx in range(len(cand)):
        if cnt_skip < skip:
            cnt_skip += 1
            continue
        this = cand[idx]
        if this < np.exp(-TOL_EXP):
            acs = np.append(acs, this)
            mapping = np.append(idx, mapping)  # sic: prepends
            early_end = True
            break
        if idx == len(cand) - 1:
            n = int((np.log(this) + TOL_EXP) / np.log(MAX_SEP)) + 1
            acs = np.concatenate((acs, np.exp(np.linspace(np.log(this), -TOL_EXP, n))))
            mapping = np.concatenate((mapping, np.repeat([idx], n)))
            break
        nxt = cand[idx + 1]
        if this >= MAX_SEP * nxt:
            n = int(np.log(this / nxt) / np.log(MAX_SEP)) + 1
            acs = np.append(acs, np.exp(np.linspace(np.log(this), np.log(nxt), n + 1))[:-1])
            mapping = np.concatenate(
                (mapping, np.repeat([idx], n // 2), np.repeat([idx + 1], n - n // 2))
            )
        else:
            acs = np.append(acs, this)
            mapping = np.append(mapping, idx)
        if len(cand) - idx > 15:
            cnt_skip = 0
    assert len(acs) == len(mapping)
    return acs, mapping, early_end


def reference_etas():
    # configs/diffusion_config_pnp.yaml: eta_max 0.4, eta_min 0.16, k_start 4, k 12.
    return np.concatenate(
        [np.repeat([0.4], 4), np.exp(np.linspace(np.log(0.4), np.log(0.16), 12))]
    )


def main():
    ac = genprior_alphas_cumprod()
    ac_ref = reference_alphas_cumprod()
    etas = reference_etas()
    nfe = sum(len(reference_grid(ac, e)[0]) for e in etas)
    nfe_ref = sum(len(reference_grid(ac_ref, e)[0]) for e in etas)
    # An eta where the early-end branch fires (found by scanning a fine eta grid).
    early = next(
        e for e in np.linspace(0.3, 0.4, 4001) if reference_grid(ac_ref, float(e))[2]
    )
    case_etas = sorted(set(float(e) for e in etas)) + [0.1, 0.8, 1.2, float(early)]
    cases = []
    for e in case_etas:
        acs, mapping, early_end = reference_grid(ac_ref, e)
        cases.append(
            {
                "eta": e,
                "early_end": bool(early_end),
                "t": [int(t) for t in mapping],
                "alpha_cond": [float(a) for a in acs],
            }
        )
    out = {
        "source": "x1xu/diffusion-plug-and-play guided_diffusion/gaussian_diffusion.py "
        "DDIMDenoiser.gen_schedule, transcribed in scripts/gen_dds_grid_fixture.py",
        "schedule": "linear beta 1e-4..0.02, T = 1000, float64 (the reference's)",
        "reference_etas": [float(e) for e in etas],
        "reference_run_nfe": int(nfe_ref),
        "reference_run_nfe_float32_table": int(nfe),
        "cases": cases,
    }
    path = os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "dds_grid", "reference_grid.json"
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: reference run {nfe_ref} NFE (float32 table: {nfe}); "
          f"early-end eta {early:.6f}; {sum(len(c['t']) for c in cases)} grid points")


if __name__ == "__main__":
    main()
