"""Table 3 of "Old can be Gold": gradient-guided rewiring against skip-connection,
normalisation and DropEdge baselines (PyG layers) at 2, 16 and 32 layers.

    .venv/bin/python experiments/gcn_table3.py --out experiments/results/gcn_table3.jsonl \
        [--epochs 1500] [--seeds 10] [--datasets cora citeseer] [--layers 2 16 32] [--methods ...]

Every method uses the paper's training settings (Adam, lr 0.005, weight decay
5e-4, hidden 64, dropout 0.6); "ours" is ``experiments.gcn_common.ours_config``.
"""
from __future__ import annotations

from gcn_common import (aggregate, base_parser, data_root, fmt, markdown_table, ours_config, read_jsonl,
                        register_baselines, run_grid, select_jobs, setup_threads)

METHODS = {  # name in the table -> model config
    "Vanilla GCN": {"model": "gcn", "init": "glorot"},
    "Residual": {"model": "gcn-residual"},
    "Initial": {"model": "gcn-initial"},
    "Jumping": {"model": "gcn-jumping"},
    "Dense": {"model": "gcn-dense"},
    "BatchNorm": {"model": "gcn-batchnorm"},
    "PairNorm": {"model": "gcn-pairnorm"},
    "DropEdge": {"model": "gcn-dropedge"},
    "Ours (init + rewiring)": ours_config(),
    "Ours, DE rule (code)": ours_config(rewiring="dirichlet_energy"),
}
PAPER = {  # Cora 2/16/32, CiteSeer 2/16/32 (test accuracy %, Table 3)
    "Vanilla GCN": [81.10, 21.49, 21.22, 71.46, 19.59, 20.29],
    "Residual": [74.73, 20.05, 19.57, 66.83, 20.77, 20.90],
    "Initial": [79.00, 78.61, 78.74, 70.15, 68.41, 68.36],
    "Jumping": [80.98, 76.04, 75.57, 69.33, 58.38, 55.03],
    "Dense": [77.86, 69.61, 67.26, 66.18, 49.33, 41.48],
    "BatchNorm": [69.91, 61.20, 29.05, 46.27, 26.25, 21.82],
    "PairNorm": [74.43, 55.75, 17.67, 63.26, 27.45, 20.67],
    "DropEdge": [79.16, 28.00, 27.87, 70.26, 22.92, 22.92],
    "Ours (init + rewiring)": [82.79, 80.19, 80.01, 71.06, 68.54, 68.49],
}
KEYS = ("dataset", "layers", "method", "seed", "patience", "epochs_cfg")


def main(argv=None):
    p = base_parser(__doc__, epochs=1500, seeds=10, patience=None)
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    p.add_argument("--layers", nargs="+", type=int, default=[2, 16, 32])
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="names as in the table")
    a = p.parse_args(argv)
    setup_threads(a.threads)
    register_baselines()
    if not a.summary_only:
        jobs = [dict(dataset=d, layers=L, method=m, seed=s, patience=a.patience, **METHODS[m])
                for s in range(a.seeds) for d in a.datasets for L in a.layers for m in a.methods]
        run_grid(select_jobs(jobs, a), a.out, KEYS, a.epochs, data_root(a.data_root))
    print(summary(read_jsonl(a.out), a.epochs, a.patience, a.datasets, a.layers))


def summary(records, epochs, patience, datasets, layers) -> str:
    agg = aggregate(records, ("dataset", "layers", "method"), epochs, patience)
    cols = [(d, L) for d in datasets for L in layers]
    header = ["method"] + [f"{d} {L}" for d, L in cols]
    paper_cols = [(d, L) for d in ("cora", "citeseer") for L in (2, 16, 32)]
    rows = []
    for m in METHODS:
        if not any((d, L, m) in agg for d, L in cols):
            continue
        rows.append([m] + [fmt(agg.get((d, L, m))) for d, L in cols])
        if m in PAPER:
            rows.append(["  paper"] + [f"{PAPER[m][paper_cols.index(c)]:.1f}" if c in paper_cols else "—"
                                       for c in cols])
    ns = sorted({v[2] for v in agg.values()})
    return f"({epochs} epochs max, early stop patience {patience}, seeds per cell: {'/'.join(map(str, ns))})\n\n" + markdown_table(header, rows)


if __name__ == "__main__":
    main()
