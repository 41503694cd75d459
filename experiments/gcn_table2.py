"""Table 2 of "Old can be Gold": vanilla GCN with Glorot vs the topology-aware
isometric initialisation, 2-12 layers, Cora and CiteSeer, public split.

    .venv/bin/python experiments/gcn_table2.py --out experiments/results/gcn_table2.jsonl \
        [--epochs 1500] [--seeds 10] [--layers 2 3 ... 12] [--inits glorot isometric isometric-code]
    .venv/bin/python experiments/gcn_table2.py --out ... --summary-only

Runs append to ``--out`` (one JSON line each; finished runs are skipped), so the
grid can be split over processes with ``--part i --nparts n``.
"""
from __future__ import annotations

from gcn_common import (aggregate, base_parser, data_root, fmt, markdown_table, paper, read_jsonl, run_grid,
                        select_jobs, setup_threads)

PAPER = paper("table2")  # experiments/gcn_paper.yaml
KEYS = ("dataset", "layers", "init", "seed", "patience", "epochs_cfg", "dropout_rng")


def main(argv=None):
    p = base_parser(__doc__, epochs=1500, seeds=10, patience=None)
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    p.add_argument("--layers", nargs="+", type=int, default=list(range(2, 13)))
    p.add_argument("--inits", nargs="+", default=["glorot", "isometric", "isometric-code"])
    a = p.parse_args(argv)
    setup_threads(a.threads)
    if not a.summary_only:
        jobs = [dict(dataset=d, model="gcn", layers=L, init=i, seed=s, patience=a.patience)
                for s in range(a.seeds) for d in a.datasets for L in a.layers for i in a.inits]
        run_grid(select_jobs(jobs, a), a.out, KEYS, a.epochs, data_root(a.data_root))
    print(summary(read_jsonl(a.out), a.epochs, a.patience, a.datasets, a.layers, a.inits, rng=a.dropout_rng))


def summary(records, epochs, patience, datasets, layers, inits, rng=None) -> str:
    agg = aggregate(records, ("dataset", "layers", "init"), epochs, patience, rng)
    out = []
    for d in datasets:
        header = ["init"] + [str(L) for L in layers]
        rows = []
        for i in inits:
            cells = [fmt(agg.get((d, L, i))) for L in layers]
            n = sorted({agg[(d, L, i)][2] for L in layers if (d, L, i) in agg})
            rows.append([f"{i} (measured, n={'/'.join(map(str, n)) or 0})"] + cells)
        for i, label in (("glorot", "GCN (paper)"), ("isometric", "GCN + init (paper)")):
            if (d, i) in PAPER:
                rows.append([label] + [f"{PAPER[(d, i)][L - 2]:.1f}" if 2 <= L <= 12 else "—" for L in layers])
        out.append(f"**{d}** ({epochs} epochs max, early stop patience {patience})\n\n" + markdown_table(header, rows))
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
