"""Table 4 of "Old can be Gold": "ours" (topology-aware init + gradient-guided
rewiring) at 2, 4, 8, 16, 32 and 64 layers on Cora, against vanilla GCN, GAT,
JKNet, SGC, GCNII and APPNP (PyG layers).

    .venv/bin/python experiments/gcn_table4.py --out experiments/results/gcn_table4.jsonl \
        [--epochs 1500] [--seeds 10] [--layers 2 4 8 16 32 64] [--methods ...]

All methods use Adam, lr 0.005, weight decay 5e-4, hidden 64, dropout 0.6 (the
paper's settings for its own model; the baselines' own tuned settings are not
used here).
"""
from __future__ import annotations

from gcn_common import (aggregate, base_parser, data_root, fmt, markdown_table, ours_config, read_jsonl,
                        register_baselines, run_grid, select_jobs, setup_threads)

METHODS = {
    "Vanilla GCN": {"model": "gcn", "init": "glorot"},
    "GAT": {"model": "gat"},
    "JKNet": {"model": "jknet"},
    "SGC": {"model": "sgc"},
    "GCNII": {"model": "gcnii"},
    "APPNP": {"model": "appnp"},
    "Ours (init + rewiring)": ours_config(),
    "Ours, DE rule (code)": ours_config(rewiring="dirichlet_energy"),
}
PAPER = {  # Cora, layers 2/4/8/16/32/64 (Table 4); APPNP is not in the paper's Table 4
    "Vanilla GCN": [81.1, 80.4, 69.5, 21.5, 21.2, 21.9],
    "GAT": [81.9, 80.3, 31.3, 30.5, 27.1, 27.9],
    "JKNet": [79.1, 79.2, 75.0, 72.9, 73.2, 71.5],
    "SGC": [79.3, 79.0, 77.2, 75.9, 68.5, 65.3],
    "GCNII": [82.2, 82.6, 84.2, 84.6, 85.4, 85.5],
    "Ours (init + rewiring)": [83.1, 82.8, 82.4, 82.3, 82.1, 80.4],
}
PAPER_LAYERS = [2, 4, 8, 16, 32, 64]
KEYS = ("dataset", "layers", "method", "seed", "patience", "epochs_cfg")


def main(argv=None):
    p = base_parser(__doc__, epochs=1500, seeds=10, patience=None)
    p.add_argument("--dataset", default="cora")
    p.add_argument("--layers", nargs="+", type=int, default=PAPER_LAYERS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="names as in the table")
    a = p.parse_args(argv)
    setup_threads(a.threads)
    register_baselines()
    if not a.summary_only:
        jobs = [dict(dataset=a.dataset, layers=L, method=m, seed=s, patience=a.patience, **METHODS[m])
                for s in range(a.seeds) for L in a.layers for m in a.methods]
        run_grid(select_jobs(jobs, a), a.out, KEYS, a.epochs, data_root(a.data_root))
    print(summary(read_jsonl(a.out), a.epochs, a.patience, a.dataset, a.layers))


def summary(records, epochs, patience, dataset, layers) -> str:
    agg = aggregate(records, ("dataset", "layers", "method"), epochs, patience)
    header = ["method"] + [str(L) for L in layers]
    rows = []
    for m in METHODS:
        if not any((dataset, L, m) in agg for L in layers):
            continue
        rows.append([m] + [fmt(agg.get((dataset, L, m))) for L in layers])
        if m in PAPER and dataset == "cora":
            rows.append(["  paper"] + [f"{PAPER[m][PAPER_LAYERS.index(L)]:.1f}" if L in PAPER_LAYERS else "—"
                                       for L in layers])
    ns = sorted({v[2] for v in agg.values()})
    return (f"**{dataset}** ({epochs} epochs max, early stop patience {patience}, seeds per cell: {'/'.join(map(str, ns))})\n\n"
            + markdown_table(header, rows))


if __name__ == "__main__":
    main()
