"""Solver benchmarks: graphode side by side with torchdiffeq 0.2.5 in one run.

    .venv/bin/python -m pytest bench/test_bench_solvers.py --benchmark-only -q

Cases, each with modes ``fwd`` (under ``no_grad``), ``bwd`` (the forward
runs outside the timing; ``torch.autograd.grad(..., retain_graph=True)`` is
timed) and ``full`` (forward + backward), providers ``graphode`` and
``torchdiffeq`` (same method, same grid or tolerances, same vector field):

* ``rk4``: fixed-step RK4, 1000 steps on [0, 1], state 2708 x 16, f = -y (a
  cheap field: measures the solver's own overhead); backprop through the solver;
* ``dopri5-mlp``: dopri5, rtol = atol = 1e-6 on [0, 1], 3-layer tanh MLP
  field (64 -> 64 -> 64 -> 64), state 2708 x 64; backprop through the solver;
* ``adjoint-graph``: ``odeint_adjoint``, rk4 with 10 steps on [0, 1], the graph
  field f(x) = tanh(A x W) - x (A: row-normalised PubMed-sized power-law graph,
  ``graphode.ops.spmm``; W 64 x 64), state 19717 x 64.

Correctness first: before timing, graphode's output (and, for bwd/full, its
gradients of y0 and of the field's parameters) is checked against
torchdiffeq's; rk4 also against the exact exp(-1) y0, and NFE must match.

Also (not moded):

* adjoint memory: peak RSS of one forward+backward with 10 and with 1000
  rk4 steps, graphode ``odeint_adjoint``, torchdiffeq ``odeint_adjoint`` and
  graphode ``odeint`` (backprop, for contrast), in a fresh subprocess
  (``graphode._benchutil.run_worker``; the high-water mark is reset before
  each run); the 1000-step run is the timed one;
* stiff graph diffusion dx/dt = 1000 (A - I) x, T = 0.1: time to reach 1e-3
  relative error against ``scipy.sparse.linalg.expm_multiply``
  (graphode implicit_euler and dopri5, torchdiffeq dopri5; forward only).

Results: ``bench/results/solvers.md`` / ``.json``.  One intra-op thread
(``GRAPHODE_BENCH_THREADS``).
"""
from __future__ import annotations

import math
import os

import pytest
import torch

import graphode
from graphode import _benchutil as bu
from graphode import ops
from graphode.solvers import solve

torchdiffeq = pytest.importorskip("torchdiffeq", reason="the benchmarks compare against torchdiffeq")

pytestmark = pytest.mark.usefixtures("bench_threads")

LIBS = ("graphode", "torchdiffeq")
MODES = ("fwd", "bwd", "full")
RK4_STEPS = bu.pick(1000, 20)
ROWS = bu.pick(2708, 200)
ROUNDS = bu.pick(5, 1)


def _lib(name):
    return graphode if name == "graphode" else torchdiffeq


class MLP3(torch.nn.Module):
    """Three-layer MLP vector field (tanh), counting evaluations."""

    def __init__(self, dim=64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Tanh(), torch.nn.Linear(dim, dim),
                                       torch.nn.Tanh(), torch.nn.Linear(dim, dim))
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.net(y)


class GraphField(torch.nn.Module):
    """f(x) = tanh(A x W) - x with A a row-normalised graph (``graphode.ops.spmm``)."""

    def __init__(self, g, dim=64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.g, self.w = g, g.row_normalize()
        self.W = torch.nn.Parameter(torch.randn(dim, dim) / dim**0.5)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        return torch.tanh(ops.spmm(self.g, self.w, x) @ self.W) - x


class _Neg(torch.nn.Module):
    nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return -y


# --------------------------------------------------------------------------- cases
_problems: dict = {}


def problem(case):
    """(field, y0, t, solve kwargs, adjoint?)"""
    if case not in _problems:
        if case == "rk4":
            y0 = torch.randn(ROWS, 16, generator=torch.Generator().manual_seed(0))
            _problems[case] = (_Neg(), y0, torch.tensor([0.0, 1.0]),
                               dict(method="rk4", options={"step_size": 1.0 / RK4_STEPS}), False)
        elif case == "dopri5-mlp":
            y0 = torch.randn(ROWS, 64, generator=torch.Generator().manual_seed(1))
            _problems[case] = (MLP3(), y0, torch.tensor([0.0, 1.0]), dict(rtol=1e-6, atol=1e-6, method="dopri5"),
                               False)
        else:
            n, e = bu.pick((19717, 69700), (300, 1500))
            g = graphode.power_law_graph(n, e, seed=1)
            y0 = torch.randn(g.num_nodes, 64, generator=torch.Generator().manual_seed(2))
            _problems[case] = (GraphField(g), y0, torch.tensor([0.0, 1.0]),
                               dict(method="rk4", options={"step_size": 0.1}), True)
    return _problems[case]


CASE_TITLES = {
    "rk4": f"rk4, {RK4_STEPS} fixed steps, state {ROWS}x16, f = -y (backprop)",
    "dopri5-mlp": f"dopri5, rtol=atol=1e-6, 3-layer tanh MLP field, state {ROWS}x64, t in [0,1] (backprop)",
    "adjoint-graph": "odeint_adjoint rk4, 10 steps, f = tanh(A x W) - x, PubMed-sized power-law graph, 64 features",
}


def make_case(case, lib, mode):
    """(run, prepare, field): ``run()`` returns the outputs compared with the reference."""
    f, y0, t, kw, adjoint = problem(case)
    L = _lib(lib)
    params = list(f.parameters())

    def solver(y):
        if adjoint:
            return L.odeint_adjoint(f, y, t, adjoint_params=tuple(params), **kw)
        return L.odeint(f, y, t, **kw)

    if mode == "fwd":
        def run():
            with torch.no_grad():
                return (solver(y0)[-1],)

        return run, None, f
    y = y0.detach().requires_grad_(True)
    inputs = [y] + params
    gy = torch.randn(y0.shape, generator=torch.Generator().manual_seed(3))
    if mode == "full":
        def run():
            yT = solver(y)[-1]
            return (yT.detach(), *torch.autograd.grad(yT, inputs, gy))

        return run, None, f
    state = {}

    def prepare():
        state["yT"] = solver(y)[-1]

    def run():
        return torch.autograd.grad(state["yT"], inputs, gy, retain_graph=True)

    return run, prepare, f


_truth: dict = {}


def truth(case):
    """torchdiffeq's output, gradients and NFE of one full forward + backward."""
    if case not in _truth:
        run, _, f = make_case(case, "torchdiffeq", "full")
        f.nfe = 0
        out = run()
        _truth[case] = (out, f.nfe)
    return _truth[case]


CASES = [(c, lib, m) for c in CASE_TITLES for m in MODES for lib in LIBS]


@pytest.mark.parametrize("case,lib,mode", CASES, ids=[f"{c}-{m}-{l}" for c, l, m in CASES])
def test_solver(benchmark, case, lib, mode):
    benchmark.group = f"solver {case} {mode}"
    run, prepare, f = make_case(case, lib, mode)
    ref, ref_nfe = truth(case)
    f.nfe = 0
    if prepare:
        prepare()
    outs = run()  # correctness first (also the warm-up)
    exp = {"fwd": ref[:1], "bwd": ref[1:], "full": ref}[mode]
    err = bu.check_close(outs, exp, rtol=1e-4, what=f"{case} {mode} {lib} vs torchdiffeq")
    if case == "rk4" and mode != "bwd":
        bu.check_close(outs[0], problem(case)[1] * math.exp(-1.0), rtol=2e-5, what="rk4 vs exp(-1) y0")
    nfe = f.nfe
    if mode == "full":
        assert nfe == ref_nfe, f"{case}: {lib} made {nfe} evaluations, torchdiffeq {ref_nfe}"
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    st = benchmark.stats.stats
    info = dict(case=case, lib=lib, mode=mode, min_s=st.min, median_s=st.median, rounds=ROUNDS,
                nfe_first_call=nfe, max_rel_err_vs_torchdiffeq=err, threads=torch.get_num_threads())
    benchmark.extra_info.update(info)
    REPORT.add(kind="moded", **info)


# --------------------------------------------------------------------------- adjoint peak memory (subprocess)
MEM_STEPS = bu.pick((10, 1000), (3, 20))
MEM_ROWS = bu.pick(2708, 300)
MEM_CASES = [("graphode", "adjoint"), ("torchdiffeq", "adjoint"), ("graphode", "backprop")]


def memory_worker(emit, cases, steps):
    """In one fresh process, for each (lib, mode): peak RSS of a forward+backward
    with each step count (the high-water mark is reset before each run, and
    freed memory leaves the RSS, see ``run_worker``)."""
    import time

    for lib, mode in cases:
        L = _lib(lib)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))

        class Field(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, t, y):
                return self.net(y)

        field = Field()
        y0 = torch.randn(MEM_ROWS, 16, requires_grad=True)
        t = torch.tensor([0.0, 1.0])
        solver = L.odeint_adjoint if mode == "adjoint" else L.odeint

        def once(n):
            ys = solver(field, y0, t, method="rk4", options={"step_size": 1.0 / n})
            ys[-1].square().sum().backward()

        once(2)  # warm-up: imports, allocator
        for n in steps:
            with bu.PeakRSS() as m:
                t0 = time.perf_counter()
                once(n)
                dt = time.perf_counter() - t0
            emit(dict(lib=lib, mode=mode, steps=n, peak_extra_bytes=m.extra, peak_rss_bytes=m.peak, time_s=dt))


_mem: dict = {}


def adjoint_memory():
    if not _mem:
        r = bu.run_worker(f"{os.path.abspath(__file__)}:memory_worker", dict(cases=MEM_CASES, steps=list(MEM_STEPS)),
                          threads=torch.get_num_threads(), mem_limit=bu.memory_limit_bytes(), timeout=900)
        assert r.status == "ok", f"memory worker: {r.status}: {r.error}"
        for rec in r.records:
            _mem.setdefault((rec["lib"], rec["mode"]), []).append(rec)
    return _mem


@pytest.mark.parametrize("lib,mode", MEM_CASES, ids=[f"{l}-{m}" for l, m in MEM_CASES])
def test_adjoint_memory(benchmark, lib, mode):
    benchmark.group = f"odeint_adjoint rk4 peak memory, {MEM_STEPS[0]} vs {MEM_STEPS[1]} steps ({MEM_ROWS}x16)"
    small, large = adjoint_memory()[(lib, mode)]
    info = dict(lib=lib, mode=mode, steps_small=small["steps"], steps_large=large["steps"],
                extra_small_bytes=small["peak_extra_bytes"], extra_large_bytes=large["peak_extra_bytes"],
                peak_rss_small_bytes=small["peak_rss_bytes"], peak_rss_large_bytes=large["peak_rss_bytes"],
                growth=large["peak_rss_bytes"] / small["peak_rss_bytes"], time_large_s=large["time_s"])
    bu.record_external(benchmark, [large["time_s"]])
    benchmark.extra_info.update(info)
    REPORT.add(kind="memory", **info)


# --------------------------------------------------------------------------- stiff: time to accuracy
TARGET = 1e-3  # relative max error at T
_stiff: dict = {}


def _graph(n, extra_edges, seed=0):
    """Random sparse graph, row-stochastic weights (COO)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (extra_edges,), generator=g)
    dst = torch.randint(0, n, (extra_edges,), generator=g)
    ring = torch.arange(n)
    s = torch.cat([src, dst, ring, (ring + 1) % n])
    d = torch.cat([dst, src, (ring + 1) % n, ring])
    A = torch.sparse_coo_tensor(torch.stack([d, s]), torch.ones(len(s), dtype=torch.float64), (n, n)).coalesce()
    deg = torch.sparse.sum(A, 1).to_dense()
    idx = A.indices()
    return torch.sparse_coo_tensor(idx, A.values() / deg[idx[0]], (n, n)).coalesce()


def _stiff_problem():
    if "p" not in _stiff:
        import scipy.sparse
        import scipy.sparse.linalg

        A = _graph(bu.pick(2708, 300), bu.pick(5000, 500))
        kappa, T = 1000.0, 0.1
        x0 = torch.randn(A.shape[0], 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        idx, val = A.indices().numpy(), A.values().numpy()
        As = scipy.sparse.csr_matrix((val, (idx[0], idx[1])), shape=A.shape)
        Lop = kappa * (As - scipy.sparse.identity(A.shape[0]))
        ref = torch.from_numpy(scipy.sparse.linalg.expm_multiply(Lop * T, x0.numpy()))
        _stiff["p"] = (A, kappa, T, x0, ref)
    return _stiff["p"]


def _stiff_field(A, kappa):
    return lambda t, x: kappa * (torch.sparse.mm(A, x) - x)


def _rel_err(y, ref):
    return float((y - ref).abs().max() / ref.abs().max())


def _stiff_settings():
    """The cheapest setting of each method that reaches TARGET (searched once)."""
    if "cfg" not in _stiff:
        A, kappa, T, x0, ref = _stiff_problem()
        f = _stiff_field(A, kappa)
        t = torch.tensor([0.0, T], dtype=torch.float64)
        cfg = {}
        for k in range(1, 12):
            h = T / 2**k
            r = solve(f, x0, t, method="implicit_euler", options={"step_size": h, "jvp": "fd"}, rtol=1e-4, atol=1e-6)
            if _rel_err(r.ys[-1], ref) <= TARGET:
                cfg["implicit_euler"] = ({"step_size": h, "jvp": "fd"}, 1e-4, r)
                break
        for tol in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
            r = solve(f, x0, t, method="dopri5", rtol=tol, atol=tol * 1e-2)
            if _rel_err(r.ys[-1], ref) <= TARGET:
                cfg["dopri5"] = ({}, tol, r)
                break
        _stiff["cfg"] = cfg
    return _stiff["cfg"]


class _Counted:
    def __init__(self, f):
        self.f, self.nfe = f, 0

    def __call__(self, t, y):
        self.nfe += 1
        return self.f(t, y)


@pytest.mark.parametrize("case", ["graphode implicit_euler", "graphode dopri5", "torchdiffeq dopri5"])
def test_stiff_time_to_accuracy(benchmark, case):
    benchmark.group = "stiff graph diffusion dx/dt=1000(A-I)x, T=0.1: time to 1e-3 rel. error (fwd)"
    A, kappa, T, x0, ref = _stiff_problem()
    t = torch.tensor([0.0, T], dtype=torch.float64)
    lib, method = case.split()
    opts, tol, r = _stiff_settings()[method]
    f = _Counted(_stiff_field(A, kappa))
    odeint = _lib(lib).odeint
    kw = dict(method=method, options=dict(opts), rtol=tol, atol=tol * 1e-2)
    with torch.no_grad():
        ys = odeint(f, x0, t, **kw)
        err = _rel_err(ys[-1], ref)
        assert err <= TARGET, f"{case}: relative error {err:.2e} > {TARGET}"  # correctness first
        nfe = f.nfe
        benchmark.pedantic(lambda: odeint(f, x0, t, **kw), rounds=bu.pick(3, 1), iterations=1)
    st = benchmark.stats.stats
    info = dict(case=case, rel_err=err, nfe=nfe, settings=repr(opts or {"rtol": tol}), newton=r.stats.n_newton,
                krylov=r.stats.n_linear, min_s=st.min, median_s=st.median)
    benchmark.extra_info.update(info)
    REPORT.add(kind="stiff", **info)


# --------------------------------------------------------------------------- report
def render(rows, meta):
    out = []
    moded = {(r["case"], r["mode"], r["lib"]): r for r in rows if r["kind"] == "moded"}
    if moded:
        table = []
        for case in CASE_TITLES:
            for mode in MODES:
                g, t = moded.get((case, mode, "graphode")), moded.get((case, mode, "torchdiffeq"))
                if not (g or t):
                    continue
                table.append([case, mode, bu.fmt_time(g and g["min_s"]), bu.fmt_time(t and t["min_s"]),
                              bu.fmt_ratio(t["min_s"] / g["min_s"]) if g and t else "",
                              bu.fmt_time(g and g["median_s"]), bu.fmt_time(t and t["median_s"]),
                              bu.fmt_ratio(t["median_s"] / g["median_s"]) if g and t else "",
                              (g or t)["nfe_first_call"]])
        out.append(bu.markdown_table(
            ["case", "mode", "graphode (min)", "torchdiffeq (min)", "speed-up (min)", "graphode (median)",
             "torchdiffeq (median)", "speed-up (median)", "NFE"], table,
            right=[False, False] + [True] * 7))
        out.append("\nCases: " + "; ".join(f"`{k}`: {v}" for k, v in CASE_TITLES.items()) + ".")
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        out.append(f"\n#### Adjoint memory (rk4, MLP field 16-16-16, state {MEM_ROWS}x16, fwd+bwd, fresh subprocess)\n")
        out.append(bu.markdown_table(
            ["case", "steps", "peak RSS (small / large)", "growth", "extra peak (small / large)",
             "time fwd+bwd (large)"],
            [[f"{r['lib']} {'odeint_adjoint' if r['mode'] == 'adjoint' else 'odeint (backprop)'}",
              f"{r['steps_small']} / {r['steps_large']}",
              f"{bu.fmt_bytes(r['peak_rss_small_bytes'])} / {bu.fmt_bytes(r['peak_rss_large_bytes'])}",
              f"{r['growth']:.2f}x", f"{bu.fmt_bytes(r['extra_small_bytes'])} / {bu.fmt_bytes(r['extra_large_bytes'])}",
              bu.fmt_time(r["time_large_s"])] for r in mem],
            right=[False, True, True, True, True, True]))
    stiff = [r for r in rows if r["kind"] == "stiff"]
    if stiff:
        out.append("\n#### Stiff graph diffusion dx/dt = 1000(A - I)x, T = 0.1: time to 1e-3 relative error\n")
        out.append(bu.markdown_table(
            ["case", "min", "median", "rel. error", "NFE", "settings", "Newton / Krylov"],
            [[r["case"], bu.fmt_time(r["min_s"]), bu.fmt_time(r["median_s"]), f"{r['rel_err']:.1e}", r["nfe"],
              r["settings"], f"{r['newton']} / {r['krylov']}" if "implicit" in r["case"] else ""] for r in stiff],
            right=[False, True, True, True, True, False, True]))
    return "\n".join(out)


REPORT = bu.Report("solvers", "Solvers: graphode vs torchdiffeq 0.2.5", render,
                   command="python -m pytest bench/test_bench_solvers.py --benchmark-only")
