#!/usr/bin/env python3
"""Simulate a chlorine-concentration matrix (junctions x time) with WNTR/EPANET.

Network: EPANET example Net3 (bundled with the PyPI package `wntr`, which also bundles
the EPANET engine, so this runs offline; `six` must be installed too).
Chlorine (reactive, first-order bulk decay) is injected at the two sources (river and
lake) and the network is simulated for 15 days at 5-minute hydraulic/quality/report
steps; the first day (spin-up of the quality model) is dropped, leaving 14 days x 288
steps = 4032 time points for each of the 92 junctions.

Writes tests/fixtures/lowrank/chlorine_net3.npy (float32, 92 x 4032, ~1.5 MB) and
prints its singular-value spectrum.

    /opt/refenv/bin/python scripts/lowrank_chlorine.py
"""
import os
import sys

import numpy as np
import wntr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "lowrank", "chlorine_net3.npy")


def main():
    inp = os.path.join(os.path.dirname(wntr.__file__), "library", "networks", "Net3.inp")
    wn = wntr.network.WaterNetworkModel(inp)
    step = 300  # 5 minutes
    wn.options.time.duration = 15 * 24 * 3600
    wn.options.time.hydraulic_timestep = step
    wn.options.time.quality_timestep = step
    wn.options.time.report_timestep = step
    wn.options.time.pattern_timestep = 3600
    wn.options.quality.parameter = "CHEMICAL"
    wn.options.quality.chemical_name = "Chlorine"
    wn.options.reaction.bulk_coeff = -0.5 / 86400.0  # 1/s: -0.5 per day
    wn.options.reaction.wall_coeff = 0.0
    # Chlorine sources at the reservoirs: 1 mg/L, with a daily dosing pattern.
    pat = [1.0 + 0.3 * np.sin(2 * np.pi * h / 24.0) for h in range(24)]
    wn.add_pattern("ClDose", pat)
    for name in wn.reservoir_name_list:
        wn.add_source("Src" + name, name, "CONCEN", 1.0, "ClDose")
    sim = wntr.sim.EpanetSimulator(wn)
    res = sim.run_sim(file_prefix=os.path.join("/tmp", "genprior_net3"))
    q = res.node["quality"][wn.junction_name_list]  # time x junctions
    t = q.index.values
    keep = t >= 24 * 3600
    x = q.values[keep].T.astype(np.float64)  # junctions x time
    x = x[:, : 14 * 288]
    if not np.all(np.isfinite(x)):
        sys.exit("non-finite concentrations")
    s = np.linalg.svd(x, compute_uv=False)
    print("shape", x.shape, "min/max", x.min(), x.max())
    print("singular values (first 20):", np.array2string(s[:20], precision=3))
    print("sigma_1/sigma_5 = %.1f, sigma_1/sigma_10 = %.1f, sigma_1/sigma_20 = %.1f"
          % (s[0] / s[4], s[0] / s[9], s[0] / s[19]))
    np.save(OUT, np.ascontiguousarray(x, dtype=np.float32))  # C order: candle reads it
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
