"""Figures 1, 4 and 5 of "Old can be Gold": per-layer gradient flow and Dirichlet
energy (layer x epoch heatmaps) of a 10-layer GCN on Cora, with and without
the topology-aware initialisation and the gradient-guided rewiring.

    .venv/bin/python experiments/gcn_figures.py [--epochs 500] [--layers 10] [--out-dir docs/figures]
    .venv/bin/python experiments/gcn_figures.py --dataset texas --split 0 --layers 32 --epochs 1500 \
        --settings vanilla init_rewiring --tag table6_texas     # the runs of Table 6, monitored

Writes ``gcn_gf_<setting>.png`` and ``gcn_de_<setting>.png`` (log10 colour
scale) per setting (``gcn_<tag>_gf_<setting>.png`` with ``--tag``), the raw
arrays to ``experiments/results/gcn_figures.npz`` (``gcn_<tag>.npz``) and the
runs' results (test / validation accuracy, best epoch, skips) to the ``.json``
beside it.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from gcn_common import HERE, ROOT, TRAIN, data_root, load, ours_config, setup_threads, train_one

SETTINGS = {
    "vanilla": {"init": "glorot"},
    "init": {"init": "isometric-code"},
    "rewiring": {"init": "glorot", "rewiring": "gradient_flow", "rewiring_p": 0.1},
    "init_rewiring": ours_config(),
}
TITLES = {
    "vanilla": "GCN (Glorot)",
    "init": "GCN + isometric init",
    "rewiring": "GCN + GF rewiring",
    "init_rewiring": "GCN + init + GF rewiring",
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    p.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "figures"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--dataset", default="cora")
    p.add_argument("--split", type=int, default=0, help="split of a dataset with several (geom-gcn: 10)")
    p.add_argument("--dropout-rng", default="torch", choices=("philox", "torch"),
                   help="dropout masks (torch: as the committed Cora figures were made)")
    p.add_argument("--tag", default=None, help="name of this set of figures (default: the Cora figures)")
    a = p.parse_args(argv)
    setup_threads(a.threads)
    from graphode.monitor import TrainingMonitor, plot_heatmap

    ds = load(a.dataset, data_root(a.data_root))
    if ds.train_mask.dim() == 2:
        ds = ds.split(a.split)
    prefix = f"gcn_{a.tag}_" if a.tag else "gcn_"
    stem = f"gcn_{a.tag}" if a.tag else "gcn_figures"
    os.makedirs(a.out_dir, exist_ok=True)
    arrays, runs = {}, {}
    for name in a.settings:
        cfg = {**TRAIN, "model": "gcn", "layers": a.layers, "dropout_rng": a.dropout_rng, **SETTINGS[name]}
        cfg.pop("model")
        mon = TrainingMonitor()
        r = train_one("gcn", ds, cfg, a.seed, a.epochs, extra_callbacks=[mon])
        arrays[f"{name}_gf"], arrays[f"{name}_de"] = mon.array("grad_norm"), mon.array("dirichlet_energy")
        runs[name] = r
        print(f"{name}: test {r['test_acc']:.3f} val {r['val_acc']:.3f} skips {r['skips']} "
              f"({r['time_s']:.0f} s)", flush=True)

    def log_range(key):  # one colour scale per metric, over all settings
        vals = np.concatenate([arrays[f"{n}_{key}"].ravel() for n in a.settings])
        vals = vals[vals > 0]
        return (float(np.log10(vals.min())), float(np.log10(vals.max()))) if vals.size else (None, None)

    for key, what, unit in (("gf", "gradient norm ||dL/dW_l||_2", "log10 GF"),
                            ("de", "Dirichlet energy (pre-ReLU)", "log10 E")):
        lo, hi = log_range(key)
        for name in a.settings:
            r = runs[name]
            tag = f"{TITLES[name]} ({a.layers} layers, {a.dataset}): test {100 * r['test_acc']:.1f}%"
            tag += f"\nskips at layers {[s + 1 for s in r['skips']]}" if r["skips"] else "\nno skips"
            plot_heatmap(arrays[f"{name}_{key}"], os.path.join(a.out_dir, f"{prefix}{key}_{name}.png"),
                         title=f"{what} -- {tag}", log=True, cbar_label=unit, ylabel="layer (1 = input)",
                         vmin=lo, vmax=hi)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    np.savez_compressed(os.path.join(HERE, "results", stem + ".npz"), **arrays)
    meta = {"dataset": a.dataset, "split": a.split, "layers": a.layers, "epochs": a.epochs, "seed": a.seed,
            "dropout_rng": a.dropout_rng,
            "runs": {n: {k: runs[n][k] for k in ("test_acc", "val_acc", "best_epoch", "skips")} for n in a.settings}}
    with open(os.path.join(HERE, "results", stem + ".json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
