"""Table 3 of "Old can be Gold": gradient-guided rewiring against skip-connection,
normalisation and DropEdge baselines (PyG layers) at 2, 16 and 32 layers.

    .venv/bin/python experiments/gcn_table3.py --out experiments/results/gcn_table3.jsonl \
        [--epochs 1500] [--seeds 10] [--datasets cora citeseer] [--layers 2 16 32] [--methods ...]

Every method uses the paper's training settings (Adam, lr 0.005, weight decay
5e-4, hidden 64, dropout 0.6); "ours" is ``experiments.gcn_common.ours_config``.
"""
from __future__ import annotations

from gcn_common import (aggregate, base_parser, data_root, markdown_table, method_rows, methods, paper, read_jsonl,
                        register_baselines, run_grid, select_jobs, setup_threads)

METHODS = methods("Vanilla GCN", "Residual", "Initial", "Jumping", "Dense", "BatchNorm", "PairNorm", "DropEdge",
                  "Ours (init + rewiring)", "Ours, DE rule (code)")
#: the same baselines propagating with a normalised sparse CSR adj_t (the same sums, ~1-3x faster
#: here; DropEdge renormalises every forward and keeps PyG's edge_index path): the paper-protocol runs
for _m in ("Residual", "Initial", "Jumping", "Dense", "BatchNorm", "PairNorm"):
    METHODS[_m + " (csr)"] = {**METHODS[_m], "pyg_csr": True}
PAPER = paper("table3")  # experiments/gcn_paper.yaml (Cora, CiteSeer 2/16/32)
KEYS = ("dataset", "layers", "method", "seed", "patience", "epochs_cfg", "dropout_rng")


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
    print(summary(read_jsonl(a.out), a.epochs, a.patience, a.datasets, a.layers, rng=a.dropout_rng))


def summary(records, epochs, patience, datasets, layers, rng=None) -> str:
    agg = aggregate(records, ("dataset", "layers", "method"), epochs, patience, rng)
    cols = [(d, L) for d in datasets for L in layers]
    header = ["method"] + [f"{d} {L}" for d, L in cols]
    paper_cols = [(d, L) for d in ("cora", "citeseer") for L in (2, 16, 32)]
    paper_rows = {**PAPER, **{m: PAPER[m.replace(" (csr)", "")] for m in METHODS if m.endswith(" (csr)")}}
    rows = method_rows(agg, METHODS, cols, lambda c, m: (*c, m), paper_rows, paper_cols)
    ns = sorted({v[2] for v in agg.values()})
    return f"({epochs} epochs max, early stop patience {patience}, seeds per cell: {'/'.join(map(str, ns))})\n\n" + markdown_table(header, rows)


if __name__ == "__main__":
    main()
