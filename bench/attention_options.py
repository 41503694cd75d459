"""Cost of the attention options on the CPU kernels, relative to the default options.

    OMP_NUM_THREADS=1 python bench/attention_options.py [--graphs cora 100k-1M] [--rounds 5] [--threads 1]

For each graph and each option set (score x normalize x normalize_over), the
time of ``graphode.ops.attention_diffusion`` and ``edge_attention`` on the
"cpu" backend, forward (no grad) and forward + backward (q, k, x and, for
exp_kernel, its parameters differentiated), as the median over ``--rounds``
rounds; the rounds of all option sets are interleaved (round r of every set,
then round r + 1), so that a change of the machine's load hits them alike.
Each row gives the ratio to the default options (scaled_dot, softmax, target)
on the first of ``--backends`` (default cpu, then reference: an option set the
cpu kernels lack is timed on the reference only, which is what automatic
dispatch runs for it) for the same op, graph and mode.  Shapes: H = 4, D = 16, F = 64, float32 (the
op benchmarks' shape).  Writes one JSON line per (graph, op, options, mode) to
``--out`` (default bench/results/attention_options.jsonl) and prints a table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import graphode
from graphode import ops

H, D, F = 4, 16, 64
OPTIONS = [("scaled_dot", "softmax", "target")] + [
    o for o in itertools.product(("scaled_dot", "exp_kernel", "cosine", "pearson"), ("softmax", "squareplus"),
                                 ("target", "source")) if o != ("scaled_dot", "softmax", "target")]


def graph_of(name: str):
    if name == "cora":
        return graphode.datasets.load_planetoid("cora").graph
    if name == "100k-1M":
        return graphode.power_law_graph(100_000, 1_000_000, seed=0)
    raise ValueError(name)


def make_call(op, g, q, k, x, kp, options, grad: bool, backend: str = "cpu"):
    score, normalize, over = options
    kw = dict(score=score, normalize=normalize, normalize_over=over, backend=backend)
    if score == "exp_kernel":
        kw["kernel_params"] = kp
    fn = getattr(ops, op)
    args = (q, k, x) if op == "attention_diffusion" else (q, k)
    wrt = [*args] + ([kp] if score == "exp_kernel" else [])
    if not grad:
        def call():
            with torch.no_grad():
                fn(g, *args, **kw)
    else:
        def call():
            y = fn(g, *args, **kw)
            torch.autograd.grad(y, wrt, torch.ones_like(y))
    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", nargs="+", default=["cora"])
    parser.add_argument("--ops", nargs="+", default=["attention_diffusion", "edge_attention"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["cpu", "reference"],
                        help="backends timed side by side (option sets a backend lacks are left out for it)")
    parser.add_argument("--options", nargs="+", default=None,
                        help="option sets as score/normalize/normalize_over (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attention_options.jsonl")
    args = parser.parse_args(argv)
    options = [tuple(o.split("/")) for o in args.options] if args.options else OPTIONS
    if OPTIONS[0] not in options:
        options.insert(0, OPTIONS[0])
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(threads=args.threads, torch=torch.__version__, load=os.getloadavg()[0], H=H, D=D, F=F,
                dtype="float32", rounds=args.rounds, date=time.strftime("%Y-%m-%d %H:%M"))
    with args.out.open("a") as out:
        for gname in args.graphs:
            g = graph_of(gname)
            gen = torch.Generator().manual_seed(0)
            q, k = (torch.randn(g.num_nodes, H, D, generator=gen) * 0.5 for _ in range(2))
            x = torch.randn(g.num_nodes, F, generator=gen)
            kp = torch.tensor([1.0, 2.0])
            q, k, x, kp = (t.requires_grad_() for t in (q, k, x, kp))
            for op in args.ops:
                for mode in ("fwd", "full"):
                    calls = {}
                    for b in args.backends:
                        for o in options:
                            lacks = ops._dispatch.backend_supports(b, dict(zip(("score", "normalize", "normalize_over"),
                                                                               o)), op)
                            if lacks is None or o[0] in ("cosine", "pearson") and lacks.startswith("score"):
                                calls[(b, o)] = make_call(op, g, q, k, x, kp, o, mode == "full", b)
                    for c in calls.values():  # warm-up (and caches: the CSC transpose)
                        c()
                    times = {key: [] for key in calls}
                    for _ in range(args.rounds):
                        for o, c in calls.items():
                            t0 = time.perf_counter()
                            c()
                            times[o].append(time.perf_counter() - t0)
                    base = statistics.median(times[(args.backends[0], OPTIONS[0])])
                    for (b, o) in calls:
                        med = statistics.median(times[(b, o)])
                        row = dict(graph=gname, op=op, mode=mode, backend=b, score=o[0], normalize=o[1],
                                   normalize_over=o[2], median_s=med, ratio=med / base, **meta)
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        print(f"{gname:8s} {op:20s} {mode:4s} {b:9s} {'/'.join(o):36s} {med * 1e3:9.2f} ms  x{med / base:5.2f}",
                              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
