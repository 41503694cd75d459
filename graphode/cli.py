"""Command line: ``graphode {run,train,partition,demo,info,bench,sweep}`` (also ``python -m graphode``)."""
from __future__ import annotations

import argparse
import json
import os
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

    return main_job(epochs=args.epochs, runs=args.runs, data_root=args.data_root, split=args.split, out=args.out)


def _add_executor_args(s: argparse.ArgumentParser) -> None:
    """``graphode train``'s choice of where the runs execute (see :func:`_cmd_train`)."""
    s.add_argument("--ray", action="store_true",
                   help="run the seeds as Ray tasks (graphode.sweep.RayExecutor; same results seed by seed)")
    s.add_argument("--ray-address", default=None, help="Ray cluster address (default: start Ray locally)")
    s.add_argument("--cpus-per-run", type=float, default=1, help="with --ray: CPUs per run (default 1)")
    s.add_argument("--gpus-per-run", type=float, default=0, help="with --ray: GPUs per run (default 0)")


def _cmd_train(args) -> int:
    """``graphode train``: the runs execute one after another here, or with ``--ray`` on a
    :class:`graphode.sweep.RayExecutor` (this layer picks the executor; graphode.train
    knows none but its default); ``--nproc N`` and a rank under torchrun train across
    processes (:func:`graphode.distributed.train.run_train`)."""
    from .distributed._comm import is_distributed_env
    from .train._cli import run_train

    if is_distributed_env() or (args.nproc or 1) > 1:
        from .distributed import train as across_ranks

        return across_ranks.run_train(args)
    if not args.ray:
        return run_train(args)
    from .errors import UserError
    from .sweep import RayExecutor

    try:
        executor = RayExecutor(address=args.ray_address, cpus_per_run=args.cpus_per_run,
                               gpus_per_run=args.gpus_per_run)
    except ImportError as e:
        raise UserError(str(e)) from None
    args.no_progress = True  # bars drawn in Ray's workers would reach this terminal interleaved
    with executor:
        return run_train(args, executor=executor)


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every graphode command: ``graphode <cmd>: error: ...``
    on stderr and exit code 2 (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bench_dir() -> str:
    """The ``bench/`` directory of the source checkout this package runs from."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _cmd_bench(args) -> int:
    """``graphode bench --quick``: runs ``bench/_bench_quick.py`` of the source checkout."""
    from .errors import UserError

    bench = _bench_dir()
    if not os.path.isfile(os.path.join(bench, "_bench_quick.py")):
        raise UserError(f"needs a source checkout of graphode (no {os.path.join(bench, '_bench_quick.py')}; "
                        "the benchmarks live in the repository's bench/, not in the installed package)")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import _bench_quick

    return _bench_quick.run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    from .distributed.train import add_partition_args, run_partition
    from .distributed.train import add_train_args as add_train_args_across_ranks
    from .sweep import add_sweep_args, run_sweep
    from .train._cli import add_train_args

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the Python traceback of a user error (also: GRAPHODE_DEBUG=1)")
    p = _Parser(prog="graphode", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])  # every command takes --debug

    s = command("info", "what this installation provides (extension, triton, backends)")
    s.set_defaults(fn=_cmd_info)

    s = command("demo", "diffuse Cora's features with the ops and the ODE solvers, with timings")
    s.add_argument("--data-root", default=None)
    s.set_defaults(fn=_cmd_demo)

    s = command("run", "main job: train GRAND-l on the shipped Cora and print its accuracy")
    s.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--split", default="grand", choices=("grand", "public", "random"),
                   help="grand (default): the protocol of the authors' code, which reproduces the paper's "
                        "Table 1; public: the Planetoid masks; random: a random LCC split per seed")
    s.add_argument("--data-root", default=None)
    s.add_argument("--out", default=None, help="also write the summary as JSON here")
    s.set_defaults(fn=_cmd_run)

    s = command("train", "train a model (GRAND variants, deep GCN, baselines)")
    add_train_args(s)
    add_train_args_across_ranks(s)
    _add_executor_args(s)
    s.set_defaults(fn=_cmd_train)

    s = command("partition", "cut a dataset's graph into parts for training across processes "
                             "(graphode train --partition DIR, torchrun)")
    add_partition_args(s)
    s.set_defaults(fn=run_partition)

    s = command("sweep", "hyperparameter sweep on Ray Tune (ASHA), locally or on a Ray cluster")
    add_sweep_args(s)
    s.set_defaults(fn=run_sweep)

    s = command("bench", "a short graphode-vs-alternatives comparison on this machine "
                "(needs a source checkout: the benchmarks live in its bench/)")
    s.add_argument("--quick", action="store_true", help="the short comparison (the only mode here; "
                   "`make bench` runs the full pytest-benchmark suite)")
    s.add_argument("--nodes", type=int, default=20000)
    s.add_argument("--edges", type=int, default=200000)
    s.add_argument("--features", type=int, default=64)
    s.add_argument("--heads", type=int, default=4)
    s.add_argument("--head-dim", type=int, default=16)
    s.set_defaults(fn=_cmd_bench)
    return p


def _one_line(e: BaseException) -> str:
    text = " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())
    return text or type(e).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command.  A :class:`~graphode.errors.UserError` (bad argument, config, dataset,
    checkpoint or output path) prints one line ``graphode <cmd>: error: ...`` on stderr and
    returns 2, without a traceback unless ``--debug`` (or ``GRAPHODE_DEBUG=1``); any other
    exception is a bug and keeps its traceback."""
    from .errors import UserError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc N` starts its ranks with these
    try:
        return int(args.fn(args) or 0)
    except UserError as e:
        if getattr(args, "debug", False) or os.environ.get("GRAPHODE_DEBUG", "") not in ("", "0"):
            raise
        print(f"graphode {args.command}: error: {_one_line(e)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
