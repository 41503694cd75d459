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

from gcn_common import (aggregate, base_parser, data_root, markdown_table, method_rows, methods, paper, read_jsonl,
                        register_baselines, run_grid, select_jobs, setup_threads)

METHODS = methods("Vanilla GCN", "GAT", "JKNet", "SGC", "GCNII", "APPNP", "Ours (init + rewiring)",
                  "Ours, DE rule (code)")
PAPER = paper("table4")  # experiments/gcn_paper.yaml
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
    rows = method_rows(agg, METHODS, layers, lambda L, m: (dataset, L, m), PAPER if dataset == "cora" else {},
                       PAPER_LAYERS)
    ns = sorted({v[2] for v in agg.values()})
    return (f"**{dataset}** ({epochs} epochs max, early stop patience {patience}, seeds per cell: {'/'.join(map(str, ns))})\n\n"
            + markdown_table(header, rows))


if __name__ == "__main__":
    main()
