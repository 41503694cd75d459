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

from grand_common import PAPER_TABLE1, table_main


def main(argv=None):
    table_main(__doc__, "public", "public split", PAPER_TABLE1, "Table 1: Planetoid public split, test accuracy (%)", "grand_table1.jsonl", argv)


if __name__ == "__main__":
    main()
