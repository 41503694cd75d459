"""Shared machinery of the per-op CPU benchmarks (``test_bench_spmm.py``,
``test_bench_edge_attention.py``, ``test_bench_attention_diffusion.py``: each is
``REPORT, test_bench = bench_test(op)``).

Graphs (``graphode.power_law_graph``, self loops): Cora-sized (2,708 nodes),
PubMed-sized (19,717 nodes) and 100k nodes / ~1M edges; H = 4, D = 16, F = 64,
float32, ``GRAPHODE_BENCH_OP_THREADS`` threads (default 2).  Results:
``bench/results/<op>.json``, rendered by ``bench/report.py``.

Each case is (graph size, op, provider, mode).  Providers: ``graphode``
(``graphode.ops.<op>(..., backend="cpu")``, the public API) and the peers of
``peers.PEERS``.  Every provider of a case gets exactly the same treatment:

* inputs: the same tensors; every cache (graphode's CSR transpose, the peers'
  prebuilt transpose and CSR pattern) is built before the timing;
* correctness first: outputs and gradients against the reference (relative 1e-4)
  -- that call is also the one warm-up call;
* timing: ``ROUNDS[size]`` timed calls in this process (same threads, same
  allocator), median = the statistic (``_benchutil.measure``);
* peak extra memory: per graph and op, a fresh subprocess under the same memory
  limit and timeout for every provider (``memory_worker``).

Modes: ``fwd`` (under ``no_grad``), ``bwd`` (the forward runs outside the timing,
then ``torch.autograd.grad(..., retain_graph=True)`` is timed) and ``full``
(forward + backward).  The backward differentiates all float inputs (spmm: the
edge values and x; edge_attention: q and k; attention_diffusion: q, k and x).

Each row also carries the byte model (``_benchutil.op_bytes``) and the graph's
gather bandwidth (``_benchutil.gather_gbps``), from which ``report.py`` gives
the gather limit of the case: the model's bytes moved at that bandwidth.
"""
from __future__ import annotations

import os

import pytest
import torch

import _benchutil as bu
import graphode  # noqa: F401  (graphode.ops is used through peers.make_op)
import peers

THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))
H, D, F = 4, 16, 64
SCALE = 1.0 / D**0.5
DTYPE = torch.float32
MODES = ("fwd", "bwd", "full")

# name: (num_nodes, num_edges before self loops, seed)
SIZES = bu.pick(
    {"cora": (2708, 7950, 0), "pubmed": (19717, 69700, 1), "100k-1M": (100_000, 1_000_000, 0)},
    {"smoke": (400, 2000, 0)},
)
#: timed rounds per size, the same for every provider
ROUNDS = bu.pick({"cora": 20, "pubmed": 10, "100k-1M": 5}, {"smoke": 2})
_WARM = (300, 1000, 0)
MEM_TIMEOUT = float(os.environ.get("GRAPHODE_BENCH_MEM_TIMEOUT", "900"))

try:
    import graphode.ops._native  # noqa: F401

    HAVE_CPU = True
except ImportError:  # pragma: no cover
    HAVE_CPU = False

_graphs: dict = {}
_inputs: dict = {}
_truth: dict = {}
_memory: dict = {}
_gather: dict = {}


def get_graph(size):
    if size not in _graphs:
        n, e, seed = SIZES.get(size) or _WARM
        g = bu.power_law_graph_cached(n, e, seed=seed)
        g.csr()  # builds and caches the transpose: outside every timing
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


def cotangent(op, t):
    return t["ga"] if op == "edge_attention" else t["gy"]


def make_case(size, op, provider, mode):
    """``(run, prepare)``: ``run()`` executes one case and returns its outputs (forward
    output and/or gradients in the op's input order); in ``bwd`` mode ``prepare()``
    runs the forward first (outside the timing) and ``run`` only the backward."""
    fn, names = peers.make_op(op, provider, get_graph(size), SCALE, backend="cpu")
    t = get_inputs(size)
    return bu.mode_runner(fn, [t[n] for n in names], cotangent(op, t), mode)


def truth(size, op):
    """Reference output and gradients of all inputs (once per graph and op)."""
    key = (size, op)
    if key not in _truth:
        _truth[key] = make_case(size, op, "composition", "full")[0]()
    return _truth[key]


def check(size, op, provider, mode, outs) -> float:
    ref = truth(size, op)
    ref = {"fwd": ref[:1], "bwd": ref[1:], "full": ref}[mode]
    return bu.check_close(outs, ref, rtol=1e-4, what=f"{op} {provider} {mode} on {size}")


def gather_bandwidth(size) -> float:
    if size not in _gather:
        _gather[size] = bu.gather_gbps(get_graph(size), F, repeat=bu.pick(5, 2), min_time=bu.pick(0.3, 0.02))
    return _gather[size]


# --------------------------------------------------------------------------- memory (subprocess)
def memory_worker(emit, size, op):
    """In a fresh process: peak extra RSS of every provider and mode of one op on one
    graph, emitted as ``{"key": "provider|mode", "peak_extra_bytes": ...}``."""
    torch.set_num_threads(THREADS)
    get_graph(size), get_inputs(size)
    providers = [p for p in peers.PROVIDER_ORDER[op] if p != "graphode" or HAVE_CPU]
    for p in providers:  # warm-up on a tiny graph: one-time initialisation is not charged to the first case
        make_case("_warm", op, p, "full")[0]()
    for p in providers:
        for mode in MODES:
            run, prepare = make_case(size, op, p, mode)
            if prepare:
                prepare()
            with bu.PeakRSS() as m:
                res = run()
            del res, run, prepare
            emit({"key": f"{p}|{mode}", "peak_extra_bytes": m.extra})


def peak_memory(size, op):
    key = (size, op)
    if key not in _memory:
        r = bu.run_worker(f"{os.path.abspath(__file__)}:memory_worker", {"size": size, "op": op}, threads=THREADS,
                          mem_limit=bu.memory_limit_bytes(), timeout=MEM_TIMEOUT)
        _memory[key] = {rec["key"]: rec["peak_extra_bytes"] for rec in r.records if "key" in rec}
        if r.status != "ok":
            _memory[key]["_error"] = f"{r.status}: {r.error[-300:]}"
    return _memory[key]


# --------------------------------------------------------------------------- one case
def cases(op):
    return [(size, p, mode) for size in SIZES for mode in MODES for p in peers.PROVIDER_ORDER[op]]


def case_id(case):
    size, p, mode = case
    return f"{size}-{mode}-{p}"


def bench_test(op):
    """``(REPORT, test_bench)`` of a per-op bench file: the report its rows go to
    (``bench/results/<op>.json``) and the benchmark parametrised over every case of ``op``."""
    all_cases = cases(op)
    report = bu.Report(op, f"{op} (CPU): graphode vs its peers",
                       command=f"python -m pytest bench/test_bench_{op}.py --benchmark-only",
                       sizes=SIZES, rounds=ROUNDS, H=H, D=D, F=F)

    @pytest.mark.parametrize("size,provider,mode", all_cases, ids=[case_id(c) for c in all_cases])
    def test_bench(benchmark, size, provider, mode):
        run_case(benchmark, report, size, op, provider, mode)

    return report, test_bench


def run_case(benchmark, report, size, op, provider, mode):
    if provider == "graphode" and not HAVE_CPU:
        pytest.skip("graphode._C is not built")
    torch.set_num_threads(THREADS)
    benchmark.group = f"{op} {mode} {size}"
    run, prepare = make_case(size, op, provider, mode)
    if prepare:
        prepare()
    err = check(size, op, provider, mode, run())  # correctness first (also the warm-up)
    st = bu.measure(benchmark, run, ROUNDS[size])
    g = get_graph(size)
    mem = peak_memory(size, op)
    row = dict(size=size, op=op, provider=provider, mode=mode, nodes=g.num_nodes, edges=g.num_edges, H=H, D=D, F=F,
               threads=THREADS, rounds=ROUNDS[size], max_rel_err=err, timed=st is not None,
               bytes=bu.op_bytes(op, mode, g.num_nodes, g.num_edges, H, D, F), gather_gbps=gather_bandwidth(size),
               triad_gbps=bu.META.get("triad_gbps"), peak_extra_bytes=mem.get(f"{provider}|{mode}"),
               memory_error=mem.get("_error"), loadavg_1min=round(os.getloadavg()[0], 2))
    if st:
        row.update(min_s=st["min_s"], median_s=st["median_s"], times_s=st["times_s"])
        benchmark.extra_info.update({k: v for k, v in row.items() if k != "times_s"})
    report.add(**row)
    return row
