"""Scaling curves: time and peak memory against the number of edges E.

    .venv/bin/python -m pytest bench/test_bench_scaling.py --benchmark-only -q

E in {1e4, 1e5, 1e6, 1e7} (``graphode.power_law_graph`` with N = E / 10 nodes
plus self loops; the 1e7 graph is cached under ``.benchmarks/graph-cache``),
H = 4, D = 16, F = 64, float32, ``full`` mode (forward + backward of all
inputs), 2 threads.  Providers: graphode ``cpu`` and the ``composition``
(``graphode.ops.reference``) for spmm and attention_diffusion, and
``torch.sparse.mm`` (CSR, gradient of x only) for spmm.

Each E runs in its own subprocess (``graphode._benchutil.run_worker``) under an
address-space limit (16 GB, less when the machine has less available: the
limit used is in the table) and a timeout, so a composition that runs out of
memory fails with an allocation error and is reported as ``oom``.  Per case:

1. correctness first, checked against the reference on a sampled subgraph:
   the in-edges of 256 random rows and of the heaviest row.  Every op is
   row-local, so with a cotangent that is zero outside those rows the output
   rows and *all* gradients of the full graph must equal those of the
   subgraph computed by the reference (exact at every E, cheap at 1e7);
2. that run is also the memory run: peak extra RSS (VmHWM after resetting
   it, minus the RSS before), i.e. outputs, saved tensors, temporaries and
   gradients, not the inputs;
3. then ``rounds`` timed runs (at E = 1e7: 1 for graphode and sparse.mm; the
   composition's time is that of its check/memory run, marked with * in the
   rounds column).

Writes ``bench/results/scaling.{md,json,png}`` (log-log time and memory vs E).
"""
from __future__ import annotations

import gc
import os

import pytest
import torch

from graphode import _benchutil as bu
from graphode import ops
from graphode.graph import Graph

THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))
H, D, F = 4, 16, 64
POINTS = bu.pick([10_000, 100_000, 1_000_000, 10_000_000], [10_000])
# timed rounds after the check/memory run: (cpu and sparse.mm, composition)
# (0: the time of the check/memory run is the timing: at 1e7 every tensor the composition
# allocates is far above glibc's mmap threshold either way, and a second 40 s run is saved)
ROUNDS = {10_000: (10, 5), 100_000: (5, 3), 1_000_000: (3, 1), 10_000_000: (1, 0)}
if bu.smoke():
    ROUNDS = {10_000: (2, 1)}
PROVIDERS = {"spmm": ("cpu", "sparse.mm", "composition"), "attention_diffusion": ("cpu", "composition")}
OPS = tuple(PROVIDERS)
TIMEOUT = float(os.environ.get("GRAPHODE_BENCH_SCALING_TIMEOUT", "900"))
SAMPLE_ROWS = 256

try:
    import graphode.ops._native  # noqa: F401

    HAVE_CPU = True
except ImportError:  # pragma: no cover
    HAVE_CPU = False


# --------------------------------------------------------------------------- worker (subprocess)
def _fn(g, op, provider, w):
    scale = 1.0 / D**0.5
    be = "cpu" if provider == "cpu" else "reference"
    if op == "spmm":
        if provider == "sparse.mm":
            A = torch.sparse_csr_tensor(g.rowptr, g.col, w, size=(g.num_nodes, g.num_nodes), check_invariants=False)
            return lambda x: torch.sparse.mm(A, x)
        return lambda w_, x: ops.spmm(g, w_, x, backend=be)
    return lambda q, k, x: ops.attention_diffusion(g, q, k, x, scale, backend=be)


def _names(op, provider):
    if op == "spmm":
        return ("x",) if provider == "sparse.mm" else ("w", "x")
    return ("q", "k", "x")


def _full(g, op, provider, t, cot):
    fn = _fn(g, op, provider, t["w"])
    args = [t[n].detach().requires_grad_(True) for n in _names(op, provider)]

    def run():
        y = fn(*args)
        return (y.detach(), *torch.autograd.grad(y, args, cot))

    return run


def worker(emit, num_edges, rounds_fast, rounds_comp):
    N = max(num_edges // 10, 10)
    g = bu.power_law_graph_cached(N, num_edges, seed=0)
    g.csr()
    g.csc_ptr
    N, E = g.num_nodes, g.num_edges
    gen = torch.Generator().manual_seed(0)
    t = dict(q=torch.randn(N, H, D, generator=gen), k=torch.randn(N, H, D, generator=gen),
             x=torch.randn(N, F, generator=gen), w=torch.rand(E, generator=gen))
    gy = torch.randn(N, F, generator=gen)
    # the sampled rows and their subgraph (same N; the edges keep their CSR order)
    deg = g.rowptr[1:] - g.rowptr[:-1]
    rows = torch.unique(torch.cat([torch.randperm(N, generator=gen)[:SAMPLE_ROWS], deg.argmax().view(1)]))
    rmask = torch.zeros(N, dtype=torch.bool)
    rmask[rows] = True
    emask = rmask[g.row]
    sub = Graph.from_edge_index(g.edge_index[:, emask], N)
    gy_masked = gy * rmask.unsqueeze(1)
    st = dict(t, w=t["w"][emask].contiguous())
    # warm-up on a tiny graph (one-time initialisation is not charged to the first case)
    tiny = bu.power_law_graph_cached(300, 1000, seed=0)
    tt = dict(q=torch.randn(tiny.num_nodes, H, D), k=torch.randn(tiny.num_nodes, H, D),
              x=torch.randn(tiny.num_nodes, F), w=torch.rand(tiny.num_edges))
    for op in OPS:
        for provider in PROVIDERS[op]:
            if provider != "cpu" or HAVE_CPU:
                _full(tiny, op, provider, tt, torch.randn(tiny.num_nodes, F))()
    state = {}
    for op in OPS:
        expected = None
        for provider in PROVIDERS[op]:
            rec = dict(op=op, provider=provider, edges=E, nodes=N, threads=torch.get_num_threads())
            if provider == "cpu" and not HAVE_CPU:
                continue
            try:
                if expected is None:  # reference on the subgraph, masked cotangent
                    full_ref = _full(sub, op, "composition", st, gy_masked)()
                    gw = torch.zeros(E)
                    if op == "spmm":
                        gw[emask] = full_ref[1]
                        expected = (full_ref[0][rows], gw, full_ref[2])
                    else:
                        expected = (full_ref[0][rows], *full_ref[1:])
                    del full_ref
                # 1. one run with the masked cotangent: the correctness check and the memory run
                bu.set_malloc_mmap_threshold(64 << 10)  # freed tensors go back to the OS: exact peaks
                run = _full(g, op, provider, t, gy_masked)
                with bu.PeakRSS() as m:
                    t_check = bu.time_calls(lambda: state.__setitem__("outs", run()), 1)
                outs = state.pop("outs")
                got = (outs[0][rows], *outs[1:])
                exp = expected if provider != "sparse.mm" else (expected[0], expected[2])
                rec["max_rel_err"] = bu.check_close(got, exp, rtol=1e-4, what=f"{op} {provider} E={E}")
                del outs, got
                gc.collect()
                # 2. the timed rounds, with glibc's default-like allocator settings
                bu.set_malloc_mmap_threshold(32 << 20)
                run = _full(g, op, provider, t, gy)
                n = rounds_comp if provider == "composition" else rounds_fast
                times = bu.time_calls(run, n) if n > 0 else t_check
                rec["timing"] = "timed rounds" if n > 0 else "the check/memory run"
                rec.update(status="ok", times_s=times, peak_extra_bytes=m.extra, peak_rss_bytes=m.peak,
                           **bu.summarize(times))
            except Exception as exc:  # noqa: BLE001
                if not bu.is_oom_error(exc):
                    raise
                rec.update(status="oom", error=str(exc)[:300], peak_rss_bytes=bu.proc_status("VmHWM"))
            finally:
                run = None
                gc.collect()
            emit(rec)


# --------------------------------------------------------------------------- parent
_points: dict = {}


def point(E):
    if E not in _points:
        rf, rc = ROUNDS[E]
        limit = bu.memory_limit_bytes()
        r = bu.run_worker(f"{os.path.abspath(__file__)}:worker", dict(num_edges=E, rounds_fast=rf, rounds_comp=rc),
                          threads=THREADS, mem_limit=limit, timeout=TIMEOUT)
        recs = {(x["op"], x["provider"]): x for x in r.records if "op" in x}
        _points[E] = (r, recs, limit)
    return _points[E]


CASES = [(E, op, p) for E in POINTS for op in OPS for p in PROVIDERS[op]]


@pytest.mark.parametrize("E,op,provider", CASES, ids=[f"E{E:.0e}-{o}-{p}".replace("+0", "") for E, o, p in CASES])
def test_scaling(benchmark, E, op, provider):
    if provider == "cpu" and not HAVE_CPU:
        pytest.skip("graphode._C is not built")
    benchmark.group = f"scaling {op} full E={E:.0e}"
    r, recs, limit = point(E)
    rec = recs.get((op, provider))
    if rec is None:  # the worker died or timed out before this case
        if r.status == "error":
            pytest.fail(f"scaling worker failed: {r.error}")
        rec = dict(op=op, provider=provider, status=r.status, error=r.error[-300:], edges=None, nodes=E // 10)
    rec = dict(rec, requested_edges=E, mem_limit_bytes=limit)
    if rec.get("status") == "ok":
        gbps = bu.graph_op_bytes(op, "full", rec["nodes"], rec["edges"], H, D, F) / rec["min_s"] / 1e9
        triad = bu.META.get("triad_gbps")
        rec.update(gbps=gbps, triad_fraction=gbps / triad if triad else None)
        bu.record_external(benchmark, rec["times_s"])
    benchmark.extra_info.update({k: v for k, v in rec.items() if k != "times_s"})
    REPORT.add(**rec)


# --------------------------------------------------------------------------- report
def _status(r):
    s = r.get("status")
    if s == "oom":
        return f"OOM at {r['mem_limit_bytes'] / 2**30:.1f} GiB limit"
    if s == "timeout":
        return f"timeout ({TIMEOUT:.0f} s)"
    return s


def render(rows, meta):
    cpu = {(r["requested_edges"], r["op"]): r for r in rows if r["provider"] == "cpu" and r.get("status") == "ok"}
    table = []
    for r in sorted(rows, key=lambda r: (OPS.index(r["op"]), r["requested_edges"], PROVIDERS[r["op"]].index(r["provider"]))):
        ok = r.get("status") == "ok"
        c = cpu.get((r["requested_edges"], r["op"]))
        sp = r["min_s"] / c["min_s"] if ok and c and r["provider"] != "cpu" else None
        mr = (r["peak_extra_bytes"] / c["peak_extra_bytes"]
              if ok and c and r["provider"] != "cpu" and c["peak_extra_bytes"] else None)
        tf = r.get("triad_fraction")
        table.append([r["op"], f"{r['edges']:,}" if r.get("edges") else f"~{r['requested_edges']:.0e}",
                      r["provider"], bu.fmt_time(r.get("min_s")) if ok else "",
                      bu.fmt_bytes(r.get("peak_extra_bytes")) if ok else "",
                      f"{r['gbps']:.2f}" if ok else "", f"{100 * tf:.0f}%" if tf else "",
                      bu.fmt_ratio(sp), bu.fmt_ratio(mr),
                      (f"{r.get('rounds', '')}{'*' if r.get('timing', '').startswith('the check') else ''}" if ok
                       else ""), _status(r)])
    text = bu.markdown_table(["op", "E", "provider", "time (min)", "peak extra mem", "GB/s", "% of triad",
                              "time / cpu", "mem / cpu", "rounds", "status"], table,
                             right=[False, True, False, True, True, True, True, True, True, True, False])
    png = _plot(rows, meta["results_dir"])
    if png:
        text = f"![scaling]({os.path.basename(png)})\n\n" + text
    return text


def _plot(rows, directory):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"cpu": "o-", "sparse.mm": "s--", "composition": "^:"}
    colors = {"spmm": "tab:blue", "attention_diffusion": "tab:red"}
    limits = set()
    for op in OPS:
        for p in PROVIDERS[op]:
            rs = sorted((r for r in rows if r["op"] == op and r["provider"] == p), key=lambda r: r["requested_edges"])
            ok = [r for r in rs if r.get("status") == "ok"]
            label = f"{op} {'graphode cpu' if p == 'cpu' else p}"
            if ok:
                axes[0].plot([r["edges"] for r in ok], [r["min_s"] for r in ok], styles[p], color=colors[op],
                             label=label)
                mem = [r for r in ok if r["peak_extra_bytes"] > 0]
                axes[1].plot([r["edges"] for r in mem], [r["peak_extra_bytes"] / 2**20 for r in mem], styles[p],
                             color=colors[op], label=label)
            for r in rs:
                if r.get("status") != "ok":
                    x = r.get("edges") or r["requested_edges"]
                    ax, y = (axes[1], r["mem_limit_bytes"] / 2**20) if r["status"] == "oom" else (axes[0], TIMEOUT)
                    ax.plot([x], [y], "X", ms=10, color=colors[op])
                    ax.annotate(f"{label}:\n{_status(r)}", (x, y), xytext=(-8, -4), textcoords="offset points",
                                fontsize=7, color=colors[op], ha="right", va="top")
                    if r["status"] == "oom":
                        limits.add(y)
    for y in limits:
        axes[1].axhline(y, color="grey", ls="--", lw=0.8, alpha=0.6)
    axes[0].set(xscale="log", yscale="log", xlabel="edges E", ylabel="time, forward+backward (s, min)",
                title="time vs E")
    axes[1].set(xscale="log", yscale="log", xlabel="edges E", ylabel="peak extra memory (MiB)",
                title="peak memory vs E")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"graphode ops, power-law graphs N = E/10, H={H}, D={D}, F={F}, float32, {THREADS} threads",
                 fontsize=9)
    fig.tight_layout()
    path = os.path.join(directory, "scaling.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


REPORT = bu.Report("scaling", "Scaling: time and peak memory vs E (forward+backward)", render,
                   command="python -m pytest bench/test_bench_scaling.py --benchmark-only")
