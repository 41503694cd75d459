"""GRAND Table 2: random splits on the largest connected component, mean ± std.

    .venv/bin/python experiments/grand_table2.py --runs 10 --models grand-l --datasets cora
    .venv/bin/python experiments/grand_table2.py --summary-only

The split protocol is GRAND's (Shchur et al.): 1500 development nodes, 20
training nodes per class among them, the rest of the development set is
validation, all other nodes are test (:func:`graphode.datasets.random_split`).
Run ``i`` draws the split and the initialisation with seed ``seed + i`` (the
paper uses 100 splits x 20 initialisations; here one initialisation per split).
Results are appended to ``experiments/results/grand_table2.jsonl``.
"""
from __future__ import annotations

import os

from grand_common import (PAPER_TABLE2, RESULTS, common_args, config_for, data_root, read_jsonl, run_cell,
                          setup_threads, summary_table)


def main(argv=None):
    p = common_args(__doc__.splitlines()[0], runs=10)
    p.add_argument("--models", nargs="+", default=["grand-l", "grand-nl", "grand-nl-rw"])
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    args = p.parse_args(argv)
    from graphode.train._cli import parse_set

    out = args.out or os.path.join(RESULTS, "grand_table2.jsonl")
    if not args.summary_only:
        setup_threads(args.threads)
        root = data_root(args.data_root)
        seeds = range(args.seed, args.seed + args.runs)
        for d in args.datasets:
            for m in args.models:
                cfg = config_for(m, d, parse_set(args.overrides))
                print(f"{m} on {d} (random LCC splits), {args.runs} splits/seeds, epochs "
                      f"{args.epochs or cfg.get('epochs')}", flush=True)
                run_cell(m, d, "random", seeds, cfg, out, root, epochs=args.epochs)
    print(summary_table(read_jsonl(out), PAPER_TABLE2, "Table 2: random LCC splits, test accuracy (%)"))


if __name__ == "__main__":
    main()
