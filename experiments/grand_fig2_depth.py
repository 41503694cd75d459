"""GRAND Figure 2 (depth): GRAND with RK4, step τ = 1, integration time T = 1 .. 32
(T steps = T "layers") against GCN and GCN + residual connections with the
same number of layers, on Cora (public split).  Writes a PNG and a JSONL.

    .venv/bin/python experiments/grand_fig2_depth.py --runs 3 --depths 1 2 4 8 16 32
    .venv/bin/python experiments/grand_fig2_depth.py --summary-only

GRAND: the packaged Cora config (GRAND-l) with ``method: rk4``, ``step_size: 1``,
``time: T``.  GCN: the registry's ``gcn`` (``graphode/configs/gcn/cora.yaml``
training settings, ``layers: T``).  GCN+residual: the same stack with
``h <- h + ReLU(Â h W)`` on the hidden layers (a small model defined here).
Both GCNs train for ``--gcn-epochs`` (default 200) epochs.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grand_common import RESULTS, common_args, config_for, data_root, read_jsonl, run_cell, setup_threads


class ResGCN(nn.Module):
    """``L`` GCN convolutions (F -> h -> ... -> h -> C), dropout before each, ReLU
    after the hidden ones, and a residual ``h + ReLU(Â h W)`` on hidden-to-hidden layers."""

    def __init__(self, dataset, config):
        super().__init__()
        from graphode import ops

        self._ops = ops
        self.graph, self.w = dataset.graph.gcn_norm()
        L = int(config.get("layers", 2))
        h = int(config.get("hidden", 64))
        dims = [dataset.num_features] + [h] * (L - 1) + [dataset.num_classes]
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.dropout = float(config.get("dropout", 0.6))

    def forward(self, x):
        L = len(self.lins)
        for i, lin in enumerate(self.lins):
            z = self._ops.spmm(self.graph, self.w, lin(F.dropout(x, self.dropout, self.training)))
            if i == L - 1:
                return z
            z = F.relu(z)
            x = x + z if (i > 0 and x.shape == z.shape) else z
        return x


def build_resgcn(dataset, config):
    return ResGCN(dataset, config)


def main(argv=None):
    p = common_args(__doc__.splitlines()[0], runs=3)
    p.add_argument("--depths", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--models", nargs="+", default=["grand", "gcn", "gcn-residual"])
    p.add_argument("--gcn-epochs", type=int, default=200)
    p.add_argument("--png", default=os.path.join(RESULTS, "grand_fig2_depth.png"))
    args = p.parse_args(argv)
    from graphode.models import register_model
    from graphode.train import load_config
    from graphode.train._cli import parse_set

    register_model("gcn-residual", build_resgcn)
    out = args.out or os.path.join(RESULTS, "grand_fig2_depth.jsonl")
    if not args.summary_only:
        setup_threads(args.threads)
        root = data_root(args.data_root)
        seeds = range(args.seed, args.seed + args.runs)
        over = parse_set(args.overrides)
        for T in args.depths:
            for m in args.models:
                if m == "grand":
                    cfg = config_for("grand-l", "cora", {**over, "method": "rk4", "step_size": 1.0, "time": float(T)})
                    run_cell("grand-l", "cora", "public", seeds, cfg, out, root, epochs=args.epochs, tag=f"T={T}")
                else:
                    cfg = load_config(None, "gcn", "cora")
                    cfg.update(over)
                    cfg.update(model=m, layers=int(T), epochs=args.gcn_epochs, rewiring=None)
                    run_cell(m, "cora", "public", seeds, cfg, out, root, epochs=args.gcn_epochs, tag=f"T={T}")
    plot(read_jsonl(out), args.png)


def plot(records, png):
    rows = {}
    for r in records:
        depth = int(float(r["tag"].split("=")[1]))
        name = "GRAND (RK4, τ=1)" if r["model"].startswith("grand") else {"gcn": "GCN",
                                                                        "gcn-residual": "GCN + residual"}[r["model"]]
        rows.setdefault(name, {}).setdefault(depth, []).append(100 * r["test_acc"])
    from report_grand import fig2_table

    print(fig2_table(records))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        print("matplotlib not available: no PNG")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, v in rows.items():
        ds = sorted(v)
        mu = np.array([np.mean(v[d]) for d in ds])
        sd = np.array([np.std(v[d]) for d in ds])
        ax.errorbar(ds, mu, yerr=sd, marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("layers (GCN) / integration time T (GRAND, τ = 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Cora, public split")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
