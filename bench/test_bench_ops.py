"""Graph-op benchmarks on the CPU: every provider side by side in one run.

    .venv/bin/python -m pytest bench/test_bench_ops.py --benchmark-only -q

Providers (2 intra-op threads, ``GRAPHODE_BENCH_OP_THREADS``):

* ``cpu``          graphode's C++/OpenMP kernels (``backend="cpu"``);
* ``composition``  the native-torch PyG recipe (gather -> ``scatter_reduce``
                   softmax -> ``index_add_``), i.e. ``graphode.ops.reference``;
* ``sparse.mm``    ``torch.sparse.mm`` on a CSR tensor (spmm only; its backward
                   differentiates x only: torch's gradient w.r.t. the CSR values
                   is a dense [N, N] tensor, 40 GB at N = 100k).

Modes: ``fwd`` (under ``no_grad``), ``bwd`` (the backward alone: the forward
runs once outside the timing, then ``torch.autograd.grad(..., retain_graph=True)``
is timed) and ``full`` (forward + backward).  The backward differentiates all
float inputs (spmm: weight and x; edge_attention: q and k;
attention_diffusion: q, k and x).

Graphs (``graphode.power_law_graph``, self loops): Cora-sized (2,708 nodes,
~10.5k edges), PubMed-sized (19,717 nodes, ~88.6k edges) and N = 100k,
E ~ 1M.  H = 4, D = 16, F = 64, float32.

Every case first checks its outputs and gradients against the reference
(relative 1e-4).  Reported per case (``bench/results/ops.md``):

* time: min and median over rounds (pytest-benchmark's statistics);
* GB/s: compulsory bytes / min time, and as a percentage of the session's
  STREAM triad.  Compulsory bytes = every input array read once plus every
  output written once; the same count for every provider of an op (so GB/s
  ratios are speed ratios), and a lower bound on what the kernels move (each
  edge gathers a source row);
* peak extra memory: per graph, a fresh subprocess (``graphode._benchutil.run_worker``)
  builds the inputs, warms every case up on a tiny graph, then for each case
  resets the peak-RSS counter and runs it once: VmHWM minus the RSS before.  It
  counts outputs, saved tensors, temporaries and gradients, not the inputs
  (in ``bwd`` mode: what the backward adds once the forward is done).
"""
from __future__ import annotations

import os

import pytest
import torch

import graphode
from graphode import _benchutil as bu
from graphode import ops

THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))
torch.set_num_threads(THREADS)
H, D, F = 4, 16, 64
DTYPE = torch.float32

try:
    import graphode.ops._native  # noqa: F401

    HAVE_CPU = True
except ImportError:  # pragma: no cover
    HAVE_CPU = False

# name: (num_nodes, num_edges, seed, rounds for cpu / sparse.mm, rounds for the composition)
SIZES = bu.pick(
    {
        "cora": (2708, 7950, 0, 20, 10),  # 10,537 edges
        "pubmed": (19717, 69700, 1, 10, 5),  # 88,627 edges
        "100k-1M": (100_000, 1_000_000, 0, 3, 1),  # 1,080,760 edges
    },
    {"smoke": (400, 2000, 0, 2, 1)},
)
_WARM = (300, 1000, 0, 1, 1)

OPS = ("spmm", "edge_attention", "attention_diffusion")
BACKENDS = {"spmm": ("cpu", "composition", "sparse.mm"), "edge_attention": ("cpu", "composition"),
            "attention_diffusion": ("cpu", "composition")}
MODES = ("fwd", "bwd", "full")

_graphs: dict = {}
_inputs: dict = {}
_truth: dict = {}
_memory: dict = {}


# --------------------------------------------------------------------------- inputs
def get_graph(size):
    if size not in _graphs:
        n, e, seed = (SIZES.get(size) or _WARM)[:3]
        g = bu.power_law_graph_cached(n, e, seed=seed)
        g.csr()
        g.csc_ptr  # build and cache the transpose outside the timings
        _graphs[size] = g
    return _graphs[size]


def get_inputs(size):
    if size not in _inputs:
        g = get_graph(size)
        gen = torch.Generator().manual_seed(0)
        N, E = g.num_nodes, g.num_edges
        _inputs[size] = dict(
            q=torch.randn(N, H, D, generator=gen, dtype=DTYPE),
            k=torch.randn(N, H, D, generator=gen, dtype=DTYPE),
            x=torch.randn(N, F, generator=gen, dtype=DTYPE),
            w=torch.rand(E, generator=gen, dtype=DTYPE),
            gy=torch.randn(N, F, generator=gen, dtype=DTYPE),
            ga=torch.randn(E, H, generator=gen, dtype=DTYPE),
        )
    return _inputs[size]


def op_fn(size, op, backend):
    """(function of the differentiable inputs, their names, the cotangent)."""
    g, t = get_graph(size), get_inputs(size)
    scale = 1.0 / D**0.5
    be = "cpu" if backend == "cpu" else "reference"
    if op == "spmm":
        if backend == "sparse.mm":
            A = torch.sparse_csr_tensor(g.rowptr, g.col, t["w"], size=(g.num_nodes, g.num_nodes),
                                        check_invariants=False)
            return (lambda x: torch.sparse.mm(A, x)), ("x",), t["gy"]
        return (lambda w, x: ops.spmm(g, w, x, backend=be)), ("w", "x"), t["gy"]
    if op == "edge_attention":
        return (lambda q, k: ops.edge_attention(g, q, k, scale, backend=be)), ("q", "k"), t["ga"]
    return (lambda q, k, x: ops.attention_diffusion(g, q, k, x, scale, backend=be)), ("q", "k", "x"), t["gy"]


def make_case(size, op, backend, mode):
    """``(run, prepare)``: ``run()`` executes one (op, backend, mode) and returns its
    outputs (forward output and/or gradients); in ``bwd`` mode ``prepare()`` runs
    the forward first (outside the timing) and ``run`` only the backward."""
    fn, names, cot = op_fn(size, op, backend)
    t = get_inputs(size)
    if mode == "fwd":
        args = [t[n] for n in names]

        def run():
            with torch.no_grad():
                return (fn(*args),)

        return run, None
    args = [t[n].detach().requires_grad_(True) for n in names]
    if mode == "full":
        def run():
            y = fn(*args)
            return (y.detach(), *torch.autograd.grad(y, args, cot))

        return run, None
    state = {}

    def prepare():
        state["y"] = fn(*args)

    def run():
        return torch.autograd.grad(state["y"], args, cot, retain_graph=True)

    return run, prepare


def compulsory_bytes(size, op, mode):
    g = get_graph(size)
    return bu.graph_op_bytes(op, mode, g.num_nodes, g.num_edges, H, D, F)


def truth(size, op):
    """Reference output and gradients of all inputs (once per graph and op)."""
    key = (size, op)
    if key not in _truth:
        _truth[key] = make_case(size, op, "composition", "full")[0]()
    return _truth[key]


def check(size, op, backend, mode, outs):
    ref = truth(size, op)
    if backend == "sparse.mm":
        ref = (ref[0], ref[2])  # output and grad x (no grad w)
    ref = {"fwd": ref[:1], "bwd": ref[1:], "full": ref}[mode]
    bu.check_close(outs, ref, rtol=1e-4, what=f"{op} {backend} {mode} on {size}")


# --------------------------------------------------------------------------- memory (subprocess)
def memory_worker(emit, size):
    """In a fresh process: peak extra RSS of every case of one graph, emitted as
    ``{"key": "op|backend|mode", "peak_extra_bytes": ...}``."""
    get_graph(size), get_inputs(size)
    for op in OPS:  # warm-up on a tiny graph: one-time initialisation is not charged to the first case
        for backend in BACKENDS[op]:
            if backend != "cpu" or HAVE_CPU:
                make_case("_warm", op, backend, "full")[0]()
    for op in OPS:
        for backend in BACKENDS[op]:
            if backend == "cpu" and not HAVE_CPU:
                continue
            for mode in MODES:
                run, prepare = make_case(size, op, backend, mode)
                if prepare:
                    prepare()
                with bu.PeakRSS() as m:
                    res = run()
                del res, run, prepare
                emit({"key": f"{op}|{backend}|{mode}", "peak_extra_bytes": m.extra})


def peak_memory(size):
    if size not in _memory:
        r = bu.run_worker(f"{os.path.abspath(__file__)}:memory_worker", {"size": size}, threads=THREADS,
                          mem_limit=bu.memory_limit_bytes(), timeout=600)
        _memory[size] = {rec["key"]: rec["peak_extra_bytes"] for rec in r.records if "key" in rec}
        if r.status != "ok":
            _memory[size]["_error"] = f"{r.status}: {r.error[-300:]}"
    return _memory[size]


# --------------------------------------------------------------------------- benchmarks
CASES = [(size, op, backend, mode) for size in SIZES for op in OPS for backend in BACKENDS[op] for mode in MODES]


@pytest.mark.parametrize("size,op,backend,mode", CASES, ids=[f"{s}-{o}-{b}-{m}" for s, o, b, m in CASES])
def test_bench(benchmark, size, op, backend, mode):
    if backend == "cpu" and not HAVE_CPU:
        pytest.skip("graphode._C is not built")
    benchmark.group = f"{op} {mode} {size}"
    run, prepare = make_case(size, op, backend, mode)
    if prepare:
        prepare()
    check(size, op, backend, mode, run())  # correctness first (also the warm-up)
    rounds = SIZES[size][4] if backend == "composition" else SIZES[size][3]
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    st = benchmark.stats.stats
    nbytes = compulsory_bytes(size, op, mode)
    g = get_graph(size)
    gbps = nbytes / st.min / 1e9
    triad = bu.META.get("triad_gbps")
    mem = peak_memory(size)
    info = dict(size=size, op=op, backend=backend, mode=mode, nodes=g.num_nodes, edges=g.num_edges, threads=THREADS,
                min_s=st.min, median_s=st.median, rounds=rounds, compulsory_bytes=nbytes, gbps=gbps,
                triad_fraction=gbps / triad if triad else None,
                peak_extra_bytes=mem.get(f"{op}|{backend}|{mode}"), loadavg_1min=os.getloadavg()[0])
    benchmark.extra_info.update(info)
    REPORT.add(**info)


# --------------------------------------------------------------------------- report
def render(rows, meta):
    res = {(r["size"], r["op"], r["backend"], r["mode"]): r for r in rows}
    out = []
    for size in SIZES:
        keys = [k for k in res if k[0] == size]
        if not keys:
            continue
        r0 = res[keys[0]]
        out.append(f"\n#### {size}: N = {r0['nodes']:,}, E = {r0['edges']:,} "
                   f"(H={H}, D={D}, F={F}, float32, {r0['threads']} threads)\n")
        table = []
        for op in OPS:
            for mode in MODES:
                cpu = res.get((size, op, "cpu", mode))
                for backend in BACKENDS[op]:
                    r = res.get((size, op, backend, mode))
                    if r is None:
                        continue
                    sp = spm = mr = None
                    if cpu is not None and backend != "cpu":
                        sp, spm = r["min_s"] / cpu["min_s"], r["median_s"] / cpu["median_s"]
                        if r.get("peak_extra_bytes") and cpu.get("peak_extra_bytes"):
                            mr = r["peak_extra_bytes"] / cpu["peak_extra_bytes"]
                    tf = r.get("triad_fraction")
                    table.append([op, mode, backend, bu.fmt_time(r["min_s"]), bu.fmt_time(r["median_s"]),
                                  f"{r['gbps']:.2f}", f"{100 * tf:.0f}%" if tf is not None else "n/a",
                                  bu.fmt_bytes(r.get("peak_extra_bytes")), bu.fmt_ratio(sp), bu.fmt_ratio(spm),
                                  bu.fmt_ratio(mr)])
        out.append(bu.markdown_table(
            ["op", "mode", "provider", "min", "median", "GB/s (min)", "% of triad", "peak extra mem",
             "cpu speed-up (min)", "cpu speed-up (median)", "cpu mem ratio"],
            table, right=[False, False, False] + [True] * 8))
    return "\n".join(out)


REPORT = bu.Report("ops", "Graph ops (CPU): graphode cpu vs the composition vs torch.sparse.mm", render,
                   command="python -m pytest bench/test_bench_ops.py --benchmark-only")
