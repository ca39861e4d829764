#!/usr/bin/env python3
"""Plot the chlorine demo: singular-value spectrum and relative error vs iteration.

    cargo run --release -p genprior-lowrank --example chlorine -- --json /tmp/chlorine.json
    /opt/refenv/bin/python scripts/lowrank_plot.py /tmp/chlorine.json docs/lowrank/chlorine.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src, out = sys.argv[1], sys.argv[2]
    d = json.load(open(src))
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    sv = d["singular_values"]
    ax[0].loglog(range(1, len(sv) + 1), sv, "o-", ms=3)
    ax[0].set_xlabel("index i")
    ax[0].set_ylabel("σ_i")
    ax[0].set_title("chlorine (Net3, 92×4032): spectrum")
    for k, p in enumerate([0.2, 0.5]):
        a = ax[1 + k]
        for run in d["runs"]:
            if run["p"] != p or "errors" not in run:
                continue
            ls = "-" if run["method"] == "ScaledGD" else "--"
            a.semilogy(run["errors"], ls, label=f'{run["method"]} {run["setting"]} r={run["rank"]}')
        for run in d["runs"]:
            if run["p"] == p and "error" in run:
                a.plot([], [], "x", label=f'{run["method"]} {run["setting"]} r={run["rank"]}: diverged')
        a.set_xlabel("iteration")
        a.set_ylabel("‖X_t − X‖_F / ‖X‖_F (all entries)")
        a.set_title(f"completion from {int(p * 100)}% of entries")
        a.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
