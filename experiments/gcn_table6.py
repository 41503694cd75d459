"""Table 6 subset of "Old can be Gold": 32-layer models on Texas, Wisconsin,
Cornell and Actor with the 10 geom-gcn splits (60/20/20), one run per split
(the run on split i is seeded with i).

    .venv/bin/python experiments/gcn_table6.py --out experiments/results/gcn_table6.jsonl \
        [--epochs 1500] [--splits 10] [--layers 32] [--methods ...]

Settings: Adam, lr 0.005, weight decay 5e-4, hidden 64, dropout 0.6, row-
normalised features as loaded.
"""
from __future__ import annotations

from gcn_common import (aggregate, base_parser, data_root, markdown_table, method_rows, methods, paper, read_jsonl,
                        register_baselines, run_grid, select_jobs, setup_threads)

METHODS = methods("GCN", "GAT", "SGC", "GCNII", "JKNet", "APPNP", "Ours (init + rewiring)", "Ours, DE rule (code)")
DATASETS = ["texas", "wisconsin", "cornell", "actor"]
PAPER = paper("table6")  # experiments/gcn_paper.yaml
KEYS = ("dataset", "layers", "method", "split", "seed", "patience", "epochs_cfg")


def main(argv=None):
    p = base_parser(__doc__, epochs=1500, seeds=10, patience=None)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="names as in the table")
    a = p.parse_args(argv)  # --seeds = number of splits used (split i, seed i)
    setup_threads(a.threads)
    register_baselines()
    if not a.summary_only:
        jobs = [dict(dataset=d, layers=a.layers, method=m, split=s, seed=s, patience=a.patience, **METHODS[m])
                for s in range(a.seeds) for d in a.datasets for m in a.methods]
        run_grid(select_jobs(jobs, a), a.out, KEYS, a.epochs, data_root(a.data_root))
    print(summary(read_jsonl(a.out), a.epochs, a.patience, a.datasets, a.layers))


def summary(records, epochs, patience, datasets, layers) -> str:
    agg = aggregate([r for r in records if r.get("layers") == layers], ("dataset", "method"), epochs, patience)
    header = ["method"] + datasets
    rows = method_rows(agg, METHODS, datasets, lambda d, m: (d, m), PAPER, DATASETS)
    ns = sorted({v[2] for v in agg.values()})
    return (f"({layers} layers, {epochs} epochs max, early stop patience {patience}, splits per cell: {'/'.join(map(str, ns))})\n\n"
            + markdown_table(header, rows))


if __name__ == "__main__":
    main()
