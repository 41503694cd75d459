"""Scale: GRAND-nl forward + backward with ``odeint_adjoint`` on a generated
graph of 1M nodes and 10M edges (F = 64 input features, hidden 64, H = 4
heads, attention dim 64), on the CPU.

    .venv/bin/python -m pytest bench/test_bench_scale.py --benchmark-only -q -s

The model is ``graphode.models.GRAND(variant="nl", adjoint=True)``, fixed-step
RK4 (``GRAPHODE_BENCH_SCALE_STEPS`` steps on [0, 1], default 1: 4 evaluations
forward, 4 adjoint evaluations backward, which bounds the time), no dropout,
cross-entropy over all nodes against random labels.  The graph is
``graphode.power_law_graph(1_000_000, 10_000_000, seed=0)`` with self loops
(cached under ``.benchmarks/graph-cache``, shared with the scaling benchmark).

1. Correctness first: on a small graph (2,000 nodes, 20,000 edges), the
   same model on the fused ops (``cpu``) and on the composition
   (``reference``) give the same loss and the same gradients of every
   parameter (``test_scale_check``).
2. The 1M/10M run, once per backend, each in its own subprocess under an
   address-space limit (``RLIMIT_AS``: 16 GB, capped at the memory available
   minus 2 GB; ``GRAPHODE_BENCH_MEM_LIMIT_GB``) and a timeout
   (``GRAPHODE_BENCH_SCALE_TIMEOUT``, default 900 s, the same for both), so an
   out-of-memory composition fails with an allocation error:
   reported as "OOM at X GiB limit", with the phase it reached.

Reported (``bench/results/scale.md``): setup time (graph + model), forward and
backward times, NFE, the process's peak RSS after the forward and after the
backward (everything: graph, features, model, solver; for a failed run, the
peak when it failed) and the extra peak during forward+backward.
"""
from __future__ import annotations

import copy
import os
import time

import pytest
import torch
import torch.nn.functional as F

import _benchutil as bu

THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))
NODES, EDGES = bu.pick((1_000_000, 10_000_000), (2_000, 20_000))
FEATURES, HIDDEN, HEADS, ATT_DIM, CLASSES = 64, 64, 4, 64, 16
T = 1.0
STEPS = int(os.environ.get("GRAPHODE_BENCH_SCALE_STEPS", "1"))
_TIMEOUT = float(os.environ.get("GRAPHODE_BENCH_SCALE_TIMEOUT", "900"))
TIMEOUT = {"cpu": _TIMEOUT, "reference": _TIMEOUT}
BACKENDS = ("cpu", "reference")

try:
    import graphode.ops._native  # noqa: F401

    HAVE_CPU = True
except ImportError:  # pragma: no cover
    HAVE_CPU = False


def build(graph, backend, seed=0):
    from graphode.models import GRAND

    torch.manual_seed(seed)
    return GRAND(FEATURES, CLASSES, graph, variant="nl", hidden_dim=HIDDEN, heads=HEADS, attention_dim=ATT_DIM,
                 method="rk4", step_size=T / STEPS, time=T, adjoint=True, input_dropout=0.0, dropout=0.0,
                 backend=None if backend == "cpu" else "reference")


def data(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, FEATURES, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


def step(model, x, y):
    """Forward + backward; returns (loss, forward s, backward s)."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    loss.backward()
    return float(loss.detach()), t1 - t0, time.perf_counter() - t1


# --------------------------------------------------------------------------- correctness
@pytest.mark.skipif(not HAVE_CPU, reason="graphode._C is not built")
def test_scale_check(benchmark):
    """Small graph: fused (cpu) and reference GRAND-nl adjoint agree (loss, every gradient)."""
    import graphode

    benchmark.group = "scale: GRAND-nl adjoint, correctness graph (2k nodes, 20k edges)"
    g = graphode.power_law_graph(2000, 20000, seed=0)
    x, y = data(g.num_nodes)
    m_cpu = build(g, "cpu")
    with torch.no_grad():  # move off the near-uniform initial attention so that the check means something
        for p in m_cpu.attention.parameters():
            p.normal_(0, 0.3)
    m_ref = build(g, "reference")
    m_ref.load_state_dict(m_cpu.state_dict())
    l_cpu, *_ = step(m_cpu, x, y)
    l_ref, *_ = step(m_ref, x, y)
    assert abs(l_cpu - l_ref) <= 1e-4 * max(1.0, abs(l_ref))
    names = [n for n, p in m_ref.named_parameters() if p.grad is not None]
    assert names, "no gradients reached the parameters"
    pc, pr = dict(m_cpu.named_parameters()), dict(m_ref.named_parameters())
    bu.check_close([pc[n].grad for n in names], [pr[n].grad for n in names], rtol=1e-3,
                   what="GRAND-nl adjoint gradients, cpu vs reference")
    benchmark.extra_info.update(loss=l_cpu, checked_gradients=names)


# --------------------------------------------------------------------------- the 1M / 10M run
def worker(emit, nodes, edges, backend):
    t0 = time.perf_counter()
    g = bu.power_law_graph_cached(nodes, edges, seed=0)
    model = build(g, backend)
    x, y = data(g.num_nodes)
    emit(dict(phase="setup", setup_s=time.perf_counter() - t0, nodes=g.num_nodes, edges=model.graph.num_edges,
              rss_bytes=bu.proc_status("VmRSS")))
    with bu.PeakRSS() as m:
        model.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        fwd = time.perf_counter() - t1
        emit(dict(phase="forward", forward_s=fwd, nfe_forward=model.nfe,
                  forward_peak_rss_bytes=bu.proc_status("VmHWM")))
        t2 = time.perf_counter()
        loss.backward()
        bwd = time.perf_counter() - t2
    grads = sum(1 for p in model.parameters() if p.grad is not None)
    emit(dict(phase="backward", backward_s=bwd, nfe_backward=model.nfe_backward, loss=float(loss.detach()),
              peak_extra_bytes=m.extra, peak_rss_bytes=m.peak, rss_before_bytes=m.before,
              params_with_grad=grads, vm_peak_bytes=bu.proc_status("VmPeak")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale(benchmark, backend):
    if backend == "cpu" and not HAVE_CPU:
        pytest.skip("graphode._C is not built")
    benchmark.group = f"scale: GRAND-nl adjoint fwd+bwd, {NODES:,} nodes, {EDGES:,} edges"
    limit = bu.memory_limit_bytes()
    r = bu.run_worker(f"{os.path.abspath(__file__)}:worker", dict(nodes=NODES, edges=EDGES, backend=backend),
                      threads=THREADS, mem_limit=limit, timeout=TIMEOUT[backend])
    rec = dict(backend=backend, status=r.status, mem_limit_bytes=limit, timeout_s=TIMEOUT[backend],
               wall_s=r.wall_s, steps=STEPS, method="rk4", T=T)
    for x in r.records:
        rec.update({k: v for k, v in x.items() if k not in ("_status", "traceback")})
    done = [x["phase"] for x in r.records if "phase" in x]
    rec["phase_reached"] = done[-1] if done else "none"
    rec["failed_during"] = {"none": "setup", "setup": "forward", "forward": "backward"}.get(rec["phase_reached"])
    if r.status == "error":
        pytest.fail(f"scale worker ({backend}) failed: {r.error}")
    if r.status == "ok":
        rec["total_s"] = rec["forward_s"] + rec["backward_s"]
        bu.record_external(benchmark, [rec["total_s"]])
    rec["timed"] = bu.benchmarking(benchmark)
    benchmark.extra_info.update(rec)
    REPORT.add(**rec)
    print(f"\nscale {backend}: {rec}")


REPORT = bu.Report("scale", "Scale: GRAND-nl forward+backward with odeint_adjoint, 1M nodes / 10M edges",
                   command="python -m pytest bench/test_bench_scale.py --benchmark-only", nodes=NODES, edges=EDGES,
                   features=FEATURES, hidden=HIDDEN, heads=HEADS, attention_dim=ATT_DIM, steps=STEPS, T=T,
                   threads=THREADS)
