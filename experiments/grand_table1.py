"""GRAND Table 1: Planetoid public splits, mean ± std over seeds.

    .venv/bin/python experiments/grand_table1.py --runs 10 --models grand-l --datasets cora
    .venv/bin/python experiments/grand_table1.py --summary-only

Each run uses the packaged config of its dataset (``graphode/configs/grand/``:
the authors' best GRAND-l settings; the same settings are used for GRAND-nl
and GRAND-nl-rw, for which no separate tuned values are given) with the model
set to the one named.  Reported: test accuracy at the best-validation epoch.
Results are appended to ``experiments/results/grand_table1.jsonl``.
"""
from __future__ import annotations

import os

from grand_common import (PAPER_TABLE1, RESULTS, common_args, config_for, data_root, read_jsonl, run_cell,
                          setup_threads, summary_table)


def main(argv=None):
    p = common_args(__doc__.splitlines()[0], runs=10)
    p.add_argument("--models", nargs="+", default=["grand-l", "grand-nl", "grand-nl-rw"])
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    args = p.parse_args(argv)
    from graphode.train._cli import parse_set

    out = args.out or os.path.join(RESULTS, "grand_table1.jsonl")
    if not args.summary_only:
        setup_threads(args.threads)
        root = data_root(args.data_root)
        seeds = range(args.seed, args.seed + args.runs)
        for d in args.datasets:
            for m in args.models:
                cfg = config_for(m, d, parse_set(args.overrides))
                print(f"{m} on {d} (public split), {args.runs} seeds, epochs "
                      f"{args.epochs or cfg.get('epochs')}", flush=True)
                run_cell(m, d, "public", seeds, cfg, out, root, epochs=args.epochs)
    print(summary_table(read_jsonl(out), PAPER_TABLE1, "Table 1: Planetoid public split, test accuracy (%)"))


if __name__ == "__main__":
    main()
