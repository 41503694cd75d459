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

from grand_common import PAPER_TABLE2, table_main


def main(argv=None):
    table_main(__doc__, "random", "random LCC splits", PAPER_TABLE2, "Table 2: random LCC splits, test accuracy (%)", "grand_table2.jsonl", argv)


if __name__ == "__main__":
    main()
