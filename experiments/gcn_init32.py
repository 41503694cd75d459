"""The raw runs behind docs/RESULTS.md's sentence on the paper's eq. 14 at depth (Deep GCN,
*Which initialisation reproduces the paper*): a 32-layer GCN on Cora with gradient-flow
rewiring (p = 0.1, alpha = 1, checked every epoch), 300 epochs, seed 0, once with the
paper's eq. 14 bound (``init="isometric"``) and once with the authors' code's bound
(``init="isometric-code"``).

    .venv/bin/python experiments/gcn_init32.py --out experiments/results/gcn_init32.jsonl

One JSON line per run (test / validation accuracy at the best validation epoch, the
layers rewired); finished runs are skipped.
"""
from __future__ import annotations

from gcn_common import base_parser, data_root, ours_config, run_grid, setup_threads

KEYS = ("dataset", "layers", "init", "seed", "epochs_cfg")


def main(argv=None):
    p = base_parser(__doc__.split("\n\n")[0], epochs=300, seeds=1, patience=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    jobs = [dict(ours_config(init=init), dataset="cora", layers=32, seed=s, patience=args.patience)
            for init in ("isometric", "isometric-code") for s in range(args.seeds)]
    for r in run_grid(jobs, args.out, KEYS, args.epochs, data_root(args.data_root)):
        print(f"{r['init']:15s} seed {r['seed']}: test {100 * r['test_acc']:.1f} %, val {100 * r['val_acc']:.1f} %, "
              f"layers rewired {len(r['skips'])}")


if __name__ == "__main__":
    main()
