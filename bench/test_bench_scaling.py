"""Scaling curves: time and peak memory of forward+backward against the number of edges E.

    .venv/bin/python -m pytest bench/test_bench_scaling.py --benchmark-only -q

E in {1e4, 1e5, 1e6, 1e7} (``graphode.power_law_graph`` with N = E / 10 nodes
plus self loops; the 1e7 graph is cached under ``.benchmarks/graph-cache``),
H = 4, D = 16, F = 64, float32, ``full`` mode (forward + backward of all
inputs), ``GRAPHODE_BENCH_OP_THREADS`` threads (default 2).  Providers: graphode
and the peers of ``bench/peers.py`` for spmm and attention_diffusion.

Every (E, op, provider) runs in its own fresh subprocess
(``_benchutil.run_worker``) under the same address-space limit (16 GB, less when
the machine has less available: the limit is in the JSON) and the same timeout,
so a provider that runs out of memory fails with an allocation error and is
reported as ``oom``.  In each:

1. correctness first, against the reference on a sampled subgraph: the
   in-edges of 256 random rows and of the heaviest row.  Every op is row-local,
   so with a cotangent that is zero outside those rows the output rows and
   *all* gradients of the full graph must equal those of the subgraph computed
   by the reference (exact at every E, cheap at 1e7).  This call is the warm-up;
2. it is also the memory run: peak extra RSS (VmHWM after resetting it, minus
   the RSS before), i.e. outputs, saved tensors, temporaries and gradients;
3. then ``ROUNDS[E]`` timed calls, the same number for every provider (median).
"""
from __future__ import annotations

import gc
import os

import pytest
import torch

import _benchutil as bu
import peers
from graphode.graph import Graph

THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))
H, D, F = 4, 16, 64
SCALE = 1.0 / D**0.5
POINTS = bu.pick([10_000, 100_000, 1_000_000, 10_000_000], [10_000])
#: timed rounds after the checked warm-up call, the same for every provider
ROUNDS = {10_000: 10, 100_000: 5, 1_000_000: 3, 10_000_000: 1}
if bu.smoke():
    ROUNDS = {10_000: 2}
PROVIDERS = {"spmm": peers.PROVIDER_ORDER["spmm"], "attention_diffusion": peers.PROVIDER_ORDER["attention_diffusion"]}
OPS = tuple(PROVIDERS)
TIMEOUT = float(os.environ.get("GRAPHODE_BENCH_SCALING_TIMEOUT", "900"))
SAMPLE_ROWS = 256

try:
    import graphode.ops._native  # noqa: F401

    HAVE_CPU = True
except ImportError:  # pragma: no cover
    HAVE_CPU = False


# --------------------------------------------------------------------------- worker (subprocess)
def _full(g, op, provider, t, cot):
    fn, names = peers.make_op(op, provider, g, SCALE, backend="cpu")
    args = [t[n].detach().requires_grad_(True) for n in names]

    def run():
        y = fn(*args)
        return (y.detach(), *torch.autograd.grad(y, args, cot))

    return run


def _inputs(N, E, gen):
    return dict(q=torch.randn(N, H, D, generator=gen), k=torch.randn(N, H, D, generator=gen),
                x=torch.randn(N, F, generator=gen), w=torch.rand(E, generator=gen))


def worker(emit, num_edges, op, provider, rounds):
    N = max(num_edges // 10, 10)
    g = bu.power_law_graph_cached(N, num_edges, seed=0)
    g.csr()  # graphode's transpose, built before anything is measured (the peers build theirs in make_op)
    N, E = g.num_nodes, g.num_edges
    gen = torch.Generator().manual_seed(0)
    t = _inputs(N, E, gen)
    gy = torch.randn(N, F, generator=gen)
    # the sampled rows and their subgraph (same N; the edges keep their CSR order)
    deg = g.rowptr[1:] - g.rowptr[:-1]
    rows = torch.unique(torch.cat([torch.randperm(N, generator=gen)[:SAMPLE_ROWS], deg.argmax().view(1)]))
    rmask = torch.zeros(N, dtype=torch.bool)
    rmask[rows] = True
    emask = rmask[g.row]
    sub = Graph.from_edge_index(g.edge_index[:, emask], N)
    gy_masked = gy * rmask.unsqueeze(1)
    rec = dict(op=op, provider=provider, edges=E, nodes=N, threads=torch.get_num_threads())
    # warm-up on a tiny graph (one-time initialisation is not charged to the case)
    tiny = bu.power_law_graph_cached(300, 1000, seed=0)
    _full(tiny, op, provider, _inputs(tiny.num_nodes, tiny.num_edges, gen), torch.randn(tiny.num_nodes, F))()
    ref = _full(sub, op, "composition", dict(t, w=t["w"][emask].contiguous()), gy_masked)()
    if op == "spmm":  # (y, grad w, grad x): the subgraph's grad w scattered back to the full edge set
        gw = torch.zeros(E)
        gw[emask] = ref[1]
        expected = (ref[0][rows], gw, ref[2])
    else:
        expected = (ref[0][rows], *ref[1:])
    del ref
    state = {}
    try:
        # 1. the checked warm-up call with the masked cotangent, which is also the memory run
        bu.set_malloc_mmap_threshold(64 << 10)  # freed tensors go back to the OS: exact peaks
        run = _full(g, op, provider, t, gy_masked)
        with bu.PeakRSS() as m:
            state["outs"] = run()
        outs = state.pop("outs")
        rec["max_rel_err"] = bu.check_close((outs[0][rows], *outs[1:]), expected, rtol=1e-4,
                                            what=f"{op} {provider} E={E}")
        rec.update(peak_extra_bytes=m.extra, peak_rss_bytes=m.peak)
        emit(dict(rec, phase="checked"))
        del outs, run
        gc.collect()
        # 2. the timed rounds, with glibc's default-like allocator settings
        bu.set_malloc_mmap_threshold(32 << 20)
        run = _full(g, op, provider, t, gy)
        times = bu.time_calls(run, rounds)
        del run
        gc.collect()
        rec.update(status="ok", timed=rounds > 0, times_s=times, **bu.summarize(times))
        if provider == "graphode":
            rec["gather_gbps"] = bu.gather_gbps(g, F, repeat=2, min_time=0.05)
    except Exception as exc:  # noqa: BLE001
        if not bu.is_oom_error(exc):
            raise
        rec.update(status="oom", error=str(exc)[:300], peak_rss_bytes=bu.proc_status("VmHWM"))
    emit(rec)


# --------------------------------------------------------------------------- parent
CASES = [(E, op, p) for E in POINTS for op in OPS for p in PROVIDERS[op]]


@pytest.mark.parametrize("E,op,provider", CASES, ids=[f"E{E:.0e}-{o}-{p}".replace("+0", "") for E, o, p in CASES])
def test_scaling(benchmark, E, op, provider):
    if provider == "graphode" and not HAVE_CPU:
        pytest.skip("graphode._C is not built")
    benchmark.group = f"scaling {op} fwd+bwd E={E:.0e}"
    limit = bu.memory_limit_bytes()
    rounds = ROUNDS[E] if bu.benchmarking(benchmark) else 0
    r = bu.run_worker(f"{os.path.abspath(__file__)}:worker", dict(num_edges=E, op=op, provider=provider, rounds=rounds),
                      threads=THREADS, mem_limit=limit, timeout=TIMEOUT)
    recs = [x for x in r.records if "op" in x]
    rec = dict(recs[-1]) if recs else dict(op=op, provider=provider, edges=None, nodes=E // 10)
    if r.status == "error":
        pytest.fail(f"scaling worker ({op}, {provider}, E={E}) failed: {r.error}")
    if rec.get("status") != "ok":
        rec.update(status=rec.get("status") or r.status, error=rec.get("error") or r.error[-300:])
    rec.update(requested_edges=E, mem_limit_bytes=limit, timeout_s=TIMEOUT, rounds=rounds)
    if rec.get("edges"):
        rec["bytes"] = bu.op_bytes(op, "full", rec["nodes"], rec["edges"], H, D, F)
    if rec.get("status") == "ok" and rec.get("timed"):
        bu.record_external(benchmark, rec["times_s"])
    benchmark.extra_info.update({k: v for k, v in rec.items() if k != "times_s"})
    REPORT.add(**rec)


REPORT = bu.Report("scaling", "Scaling: time and peak memory vs E (forward+backward)",
                   command="python -m pytest bench/test_bench_scaling.py --benchmark-only",
                   points=POINTS, rounds=ROUNDS, timeout_s=TIMEOUT, H=H, D=D, F=F, threads=THREADS)
