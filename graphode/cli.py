"""Command line: ``graphode {run,train,demo,info,bench,sweep}`` (also ``python -m graphode``)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional


def _cmd_info(args) -> int:
    import torch

    from . import __version__, extension_info

    info = extension_info()
    info.update(graphode=__version__, torch=torch.__version__, threads=torch.get_num_threads())
    print(json.dumps(info, indent=2))
    return 0


def _cmd_demo(args) -> int:
    """Diffuse Cora's features with the graph ops and solve dX/dt = (A - I) X."""
    import torch

    from . import ops
    from .datasets import load_planetoid
    from .solvers import solve

    ds = load_planetoid("cora", root=args.data_root)
    g = ds.graph.add_self_loops()
    w = g.row_normalize()
    x = ds.x
    print(f"Cora: {ds.num_nodes} nodes, {ds.edge_index.size(1)} edges, {ds.num_features} features")
    print(f"backends available: {', '.join(ops.available_backends())}")
    for backend in ops.available_backends():
        if backend in ("triton", "cuda"):
            continue
        t0 = time.perf_counter()
        for _ in range(10):
            ops.spmm(g, w, x, backend=backend)
        print(f"  spmm [{backend:9s}] {1e3 * (time.perf_counter() - t0) / 10:8.2f} ms / call  (F={x.size(1)})")
    f = lambda t, y: ops.spmm(g, w, y) - y  # noqa: E731
    for method in ("euler", "rk4", "dopri5"):
        opts = {"step_size": 0.1} if method != "dopri5" else None
        t0 = time.perf_counter()
        res = solve(f, x, torch.tensor([0.0, 3.0]), method=method, options=opts, rtol=1e-5, atol=1e-7)
        dt = time.perf_counter() - t0
        y = res.ys[-1]
        print(f"  solve {method:7s} T=3: {dt * 1e3:7.1f} ms, nfe={res.nfe}, "
              f"max principle ok={bool(y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5)}")
    return 0


def _cmd_run(args) -> int:
    """The main job: train GRAND-l on the Cora copy shipped with the package."""
    from .train import main_job

    return main_job(epochs=args.epochs, runs=args.runs, data_root=args.data_root)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphode", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="what this installation provides (extension, triton, backends)")
    s.set_defaults(fn=_cmd_info)

    s = sub.add_parser("demo", help="diffuse Cora's features with the ops and the ODE solvers, with timings")
    s.add_argument("--data-root", default=None)
    s.set_defaults(fn=_cmd_demo)

    s = sub.add_parser("run", help="main job: train GRAND-l on the shipped Cora and print its accuracy")
    s.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--data-root", default=None)
    s.set_defaults(fn=_cmd_run)

    try:
        from .train._cli import add_train_args, run_train
    except ImportError:  # training layer not available
        pass
    else:
        s = sub.add_parser("train", help="train a model (GRAND variants, deep GCN, baselines)")
        add_train_args(s)
        s.set_defaults(fn=run_train)

    try:
        from .sweep import add_sweep_args, run_sweep
    except ImportError:  # sweep layer not available
        pass
    else:
        s = sub.add_parser("sweep", help="hyperparameter sweep on Ray Tune (ASHA), locally or on a Ray cluster")
        add_sweep_args(s)
        s.set_defaults(fn=run_sweep)

    try:
        from ._bench_quick import add_bench_args, run_bench
    except ImportError:
        pass
    else:
        s = sub.add_parser("bench", help="a short graphode-vs-alternatives comparison on this machine")
        add_bench_args(s)
        s.set_defaults(fn=run_bench)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
