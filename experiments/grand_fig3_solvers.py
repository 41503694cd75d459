"""GRAND Figure 3: choice of solver on Cora (public split).

Left panel (``--panel left``): explicit Adams–Bashforth (``explicit_adams``),
implicit Adams–Moulton with predictor–corrector (``implicit_adams``) and
semi-implicit Euler with the Krylov solver (``implicit_euler``) over fixed step
sizes, against adaptive dopri5: test accuracy and training time per epoch.

Right panel (``--panel right``): Cora rewired by GDC (PPR, α = 0.05) keeping the
``K`` largest coefficients per node, for several ``K``: accuracy and time per
epoch with explicit Adams and implicit Adams (the paper's τ = 0.005 and τ = 1.0
are the defaults of ``--right-steps``) and dopri5.

    .venv/bin/python experiments/grand_fig3_solvers.py --panel left --runs 2 --epochs 30
    .venv/bin/python experiments/grand_fig3_solvers.py --summary-only

Model: GRAND-l with the packaged Cora config; only ``method``/``step_size`` (and
the graph, right panel) change.  A diverging run (NaN/overflow, or more than
``--max-nfe`` evaluations per solve) is recorded as unstable.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from grand_common import RESULTS, common_args, config_for, data_root, read_jsonl, run_cell, setup_threads


def _safe_cell(model, name, seeds, cfg, out, root, epochs, tag, dataset_obj=None):
    try:
        run_cell(model, name, "public", seeds, cfg, out, root, epochs=epochs, tag=tag, dataset_obj=dataset_obj)
    except Exception as e:  # unstable solver: record it
        rec = {"model": model, "dataset": name, "split": "public", "seed": -1, "config": cfg, "tag": tag,
               "failed": f"{type(e).__name__}: {str(e)[:200]}"}
        with open(out, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        print(f"  {tag}: FAILED ({rec['failed']})", flush=True)


def main(argv=None):
    p = common_args(__doc__.splitlines()[0], runs=2)
    p.add_argument("--panel", choices=["left", "right", "both"], default="left")
    p.add_argument("--methods", nargs="+", default=["explicit_adams", "implicit_adams", "implicit_euler"])
    p.add_argument("--steps", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0, 4.0])
    p.add_argument("--ks", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--right-steps", nargs="+", default=["explicit_adams=0.005", "implicit_adams=1.0"],
                   help="METHOD=STEP pairs of the right panel (plus dopri5)")
    p.add_argument("--max-nfe", type=int, default=20000)
    p.add_argument("--no-dopri5", action="store_true")
    p.add_argument("--png", default=os.path.join(RESULTS, "grand_fig3_solvers.png"))
    args = p.parse_args(argv)
    from graphode.train._cli import parse_set

    out = args.out or os.path.join(RESULTS, "grand_fig3_solvers.jsonl")
    if not args.summary_only:
        setup_threads(args.threads)
        root = data_root(args.data_root)
        seeds = range(args.seed, args.seed + args.runs)
        over = {**parse_set(args.overrides), "max_nfe": args.max_nfe}
        if args.panel in ("left", "both"):
            if not args.no_dopri5:
                cfg = config_for("grand-l", "cora", over)
                _safe_cell("grand-l", "cora", seeds, cfg, out, root, args.epochs, "left|dopri5|adaptive")
            for m in args.methods:
                for h in args.steps:
                    cfg = config_for("grand-l", "cora", {**over, "method": m, "step_size": h})
                    _safe_cell("grand-l", "cora", seeds, cfg, out, root, args.epochs, f"left|{m}|{h}")
        if args.panel in ("right", "both"):
            from graphode.datasets import load_dataset
            from graphode.transforms import GDC

            base = load_dataset("cora", root=root)
            pairs = [s.split("=") for s in args.right_steps]
            for k in args.ks:
                t0 = time.perf_counter()
                ds = GDC(method="ppr", alpha=0.05, sparsification="topk", k=k)(base)
                print(f"GDC top-{k}: {ds.num_edges} edges ({time.perf_counter() - t0:.1f} s)", flush=True)
                name = f"cora-gdc-k{k}"
                runs = [("dopri5", None)] if not args.no_dopri5 else []
                runs += [(m, float(h)) for m, h in pairs]
                for m, h in runs:
                    extra = {"method": m} if h is None else {"method": m, "step_size": h}
                    cfg = config_for("grand-l", "cora", {**over, **extra, "gdc_k_graph": k})
                    _safe_cell("grand-l", name, seeds, cfg, out, root, args.epochs,
                               f"right|{m}|{h if h is not None else 'adaptive'}|{k}", dataset_obj=ds)
    plot(read_jsonl(out), args.png)


from report_grand import fig3_groups as _groups  # noqa: E402  (one grouping and table for the script and docs)
from report_grand import fig3_table as _table  # noqa: E402


def plot(records, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        plt = None
    panels = [p for p in ("left", "right") if _groups(records, p)]
    if not panels:
        print("no results yet")
        return
    if plt is not None:
        fig, axes = plt.subplots(2, len(panels), figsize=(5 * len(panels), 6), squeeze=False)
    for j, panel in enumerate(panels):
        g = _groups(records, panel)
        print(f"\n{panel} panel ({'step size' if panel == 'left' else 'GDC top-K'}):")
        print(_table(records, panel))
        for label, pts in g.items():
            xs, acc, tm = [], [], []
            for x in sorted(pts, key=lambda v: -1 if v is None else v):
                ok = [r for r in pts[x] if "failed" not in r]
                if not ok:
                    continue
                a = np.array([100 * r["test_acc"] for r in ok])
                t = np.mean([r["epoch_time_s"] for r in ok])
                if x is not None:
                    xs.append(x)
                    acc.append(a.mean())
                    tm.append(t)
                elif plt is not None:
                    axes[0, j].axhline(a.mean(), ls="--", color="k", label=f"{label} (adaptive)")
                    axes[1, j].axhline(t, ls="--", color="k", label=f"{label} (adaptive)")
            if plt is not None and xs:
                axes[0, j].plot(xs, acc, marker="o", label=label)
                axes[1, j].plot(xs, tm, marker="o", label=label)
        if plt is not None:
            xl = "step size τ" if panel == "left" else "GDC top-K per node"
            for i, yl in enumerate(("test accuracy (%)", "time per epoch (s)")):
                axes[i, j].set_xscale("log", base=2)
                axes[i, j].set_xlabel(xl)
                axes[i, j].set_ylabel(yl)
                axes[i, j].legend(fontsize=7)
            axes[0, j].set_title("Cora" if panel == "left" else "GDC-rewired Cora")
    if plt is not None:
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
        fig.savefig(png, dpi=120)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
