"""Accuracy vs depth for the deep-GCN reproduction: Tables 2 and 4 as one figure.

    .venv/bin/python experiments/gcn_depth_plot.py \
        [--table2 experiments/results/gcn_table2.jsonl] \
        [--table4 experiments/results/gcn_table4_paper.jsonl] [--ours "Ours, GF rule (paper)"] \
        [--epochs 1500] [--out docs/figures/gcn_accuracy_vs_depth.png]

One panel per dataset of Table 2 (Glorot vs the isometric init, no rewiring)
and one for Table 4 (vanilla GCN vs "ours" = init + rewiring, Cora).  Every run
is a dot (the runs of deep plain GCNs are bimodal: a mean ± std hides that),
the line is the mean over seeds, the dashed line the paper's figure.  Only the
runs with ``--epochs`` (the paper's 1500) and no early stop are drawn; each
panel holds the runs of one dropout random stream (Table 2: torch's, Table 4:
the fused Philox dropout), as its table in docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List

import numpy as np

from gcn_common import ROOT, read_jsonl
from gcn_table2 import PAPER as PAPER2
from gcn_table4 import PAPER as PAPER4
from gcn_table4 import PAPER_LAYERS

#: the "ours" method of the Table 4 panel (the default that docs/RESULTS.md selects)
OURS = "Ours, GF rule (paper)"

# (value in the records, paper key, colour, legend of the measured line, legend of the paper's line)
TABLE2_SERIES = [("glorot", "glorot", "tab:red", "GCN, Glorot", "GCN"),
                 ("isometric-code", "isometric", "tab:blue", "GCN + isometric init (code's bound)", "GCN + init")]
def table4_series(ours: str):
    return [("Vanilla GCN", "Vanilla GCN", "tab:red", "vanilla GCN (Glorot)", "vanilla GCN"),
            (ours, "Ours (init + rewiring)", "tab:blue", f"ours: init + rewiring ({ours.split(', ', 1)[-1]})", "ours")]


def runs_by_depth(records: List[dict], field: str, value: str, dataset: str,
                  epochs: int) -> Dict[int, List[float]]:
    """``{layers: [test accuracy % of each seed]}`` for the runs with ``record[field] == value``
    (``epochs`` epochs, no early stop)."""
    out: Dict[int, List[float]] = {}
    for r in records:
        if (r.get("dataset") == dataset and r.get(field) == value and r.get("epochs_cfg") == epochs
                and r.get("patience") is None):
            out.setdefault(int(r["layers"]), []).append(100.0 * float(r["test_acc"]))
    return dict(sorted(out.items()))


def _panel(ax, series, paper_of, records, field, dataset, epochs) -> str:
    """Draw one panel; returns the number of seeds per point ("10" or "2-3")."""
    ns = []
    for value, paper_key, colour, label, paper_label in series:
        runs = runs_by_depth(records, field, value, dataset, epochs)
        if runs:
            xs = list(runs)
            for L, accs in runs.items():
                ax.scatter([L] * len(accs), accs, s=10, color=colour, alpha=0.35, linewidths=0)
                ns.append(len(accs))
            ax.plot(xs, [np.mean(runs[L]) for L in xs], "-o", color=colour, ms=4,
                    label=f"{label}, measured")
        paper = paper_of(paper_key)
        if paper:
            px, py = zip(*paper)
            ax.plot(px, py, "--", color=colour, alpha=0.8, label=f"{paper_label} (paper)")
    ax.set_xlabel("layers")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 90)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    if not ns:
        return "0"
    return str(min(ns)) if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table2", default=os.path.join(ROOT, "experiments", "results", "gcn_table2.jsonl"))
    p.add_argument("--table4", default=os.path.join(ROOT, "experiments", "results", "gcn_table4_paper.jsonl"))
    p.add_argument("--ours", default=OURS, help="the Table 4 method drawn as 'ours'")
    p.add_argument("--epochs", type=int, default=1500)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "figures", "gcn_accuracy_vs_depth.png"))
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t2 = [r for r in read_jsonl(a.table2) if r.get("dropout_rng") == "torch"]
    t4 = [r for r in read_jsonl(a.table4) if r.get("dropout_rng") == "philox" or r.get("model") != "gcn"]
    datasets2 = [d for d in ("cora", "citeseer") if any(r.get("dataset") == d and r.get("epochs_cfg") == a.epochs
                                                         for r in t2)]
    fig, axes = plt.subplots(1, len(datasets2) + 1, figsize=(4.6 * (len(datasets2) + 1), 3.8), squeeze=False)
    for ax, d in zip(axes[0], datasets2):
        n = _panel(ax, TABLE2_SERIES, lambda k, d=d: list(zip(range(2, 13), PAPER2.get((d, k), []))),
                   t2, "init", d, a.epochs)
        ax.set_title(f"Table 2, {d}: init only ({n} seeds/point)", fontsize=9)
    ax = axes[0][-1]
    n = _panel(ax, table4_series(a.ours), lambda k: list(zip(PAPER_LAYERS, PAPER4.get(k, []))),
               t4, "method", "cora", a.epochs)
    ax.set_xscale("log", base=2)
    ax.set_xticks(PAPER_LAYERS, [str(L) for L in PAPER_LAYERS])
    ax.set_title(f"Table 4, cora: init + rewiring ({n} seeds/point)", fontsize=9)
    fig.suptitle(f"Deep vanilla GCN, test accuracy at the best validation epoch ({a.epochs} epochs)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return a.out


if __name__ == "__main__":
    main()
