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

from gcn_common import (aggregate, base_parser, data_root, markdown_table, method_rows, methods, ours_config, paper,
                        read_jsonl, register_baselines, run_grid, select_jobs, setup_threads)

#: Cora settings of the baselines in the "bag of tricks" benchmark (VITA-Group/Deep_GCN_Benchmarking,
#: options/configs/<model>.yml), which the paper says it follows; GCNII's equal GCNII's paper, APPNP's
#: APPNP's.  Trained here at the protocol of the other rows (the benchmark itself stops after 100
#: epochs without a lower validation loss and reports the test accuracy at the lowest one).
BENCHMARK_SETTINGS = {
    "GCNII": {"model": "gcnii", "hidden": 64, "alpha": 0.1, "theta": 0.5, "lr": 0.01, "dropout": 0.6,
              "weight_decay_conv": 0.01, "weight_decay_dense": 5e-4, "pyg_csr": True},
    "JKNet": {"model": "jknet", "hidden": 16, "lr": 0.01, "weight_decay": 5e-4, "dropout": 0.5,
              "jk_dropout_after": True, "pyg_csr": True},
    "SGC": {"model": "sgc", "lr": 0.01, "weight_decay": 5e-4, "sgc_dropout": 0.6, "sgc_dropout_after": True,
            "sgc_bias": False},
    "APPNP": {"model": "appnp", "hidden": 64, "alpha": 0.1, "lr": 0.01, "dropout": 0.5, "weight_decay_in": 5e-3,
              "weight_decay_out": 0.0},
}

METHODS = {
    **methods("Vanilla GCN", "GAT", "JKNet", "SGC", "GCNII", "APPNP", "Ours (init + rewiring)", "Ours, DE rule (code)"),
    # the two rules compared at the paper's protocol (docs/RESULTS.md, Table 4): the gradient-flow
    # rule as the paper states it (online, p = 0.1) and the Dirichlet-energy rule as the authors'
    # code runs it (plain sym Laplacian, threshold 0.4, 200-epoch probe run, restart with the skips)
    "Ours, GF rule (paper)": ours_config(rewiring="gradient_flow"),
    "Ours, DE rule (code protocol)": ours_config(rewiring="dirichlet_energy", rewiring_laplacian="sym",
                                                 rewiring_protocol="restart", rewiring_probe_epochs=200),
    # the baselines at the Cora settings of the benchmark the paper follows ("bag of tricks",
    # Chen et al. 2021, options/configs/*.yml; GCNII's and APPNP's own published settings)
    "GCNII (published settings)": BENCHMARK_SETTINGS["GCNII"],
    "JKNet (published settings)": BENCHMARK_SETTINGS["JKNet"],
    "SGC (published settings)": BENCHMARK_SETTINGS["SGC"],
    "APPNP (published settings)": BENCHMARK_SETTINGS["APPNP"],
}
PAPER = paper("table4")  # experiments/gcn_paper.yaml (Cora; APPNP is not in the paper's Table 4)
PAPER_LAYERS = [2, 4, 8, 16, 32, 64]
KEYS = ("dataset", "layers", "method", "seed", "patience", "epochs_cfg", "dropout_rng")


def main(argv=None):
    p = base_parser(__doc__, epochs=1500, seeds=10, patience=None)
    p.add_argument("--dataset", default="cora")
    p.add_argument("--layers", nargs="+", type=int, default=PAPER_LAYERS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="names as in the table")
    p.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. seeds-1")
    a = p.parse_args(argv)
    setup_threads(a.threads)
    register_baselines()
    if not a.summary_only:
        jobs = [dict(dataset=a.dataset, layers=L, method=m, seed=s, patience=a.patience, **METHODS[m])
                for s in range(a.first_seed, a.seeds) for L in a.layers for m in a.methods]
        run_grid(select_jobs(jobs, a), a.out, KEYS, a.epochs, data_root(a.data_root))
    print(summary(read_jsonl(a.out), a.epochs, a.patience, a.dataset, a.layers, rng=a.dropout_rng))


def summary(records, epochs, patience, dataset, layers, rng=None) -> str:
    agg = aggregate(records, ("dataset", "layers", "method"), epochs, patience, rng)
    header = ["method"] + [str(L) for L in layers]
    rows = method_rows(agg, METHODS, layers, lambda L, m: (dataset, L, m), PAPER if dataset == "cora" else {},
                       PAPER_LAYERS)
    ns = sorted({v[2] for v in agg.values()})
    return (f"**{dataset}** ({epochs} epochs max, early stop patience {patience}, seeds per cell: {'/'.join(map(str, ns))})\n\n"
            + markdown_table(header, rows))


if __name__ == "__main__":
    main()
