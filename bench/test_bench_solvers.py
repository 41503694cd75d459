"""Solver benchmarks: graphode against torchdiffeq 0.2.5 and torchode, and against the
limit that the vector field sets, in one run.

    .venv/bin/python -m pytest bench/test_bench_solvers.py --benchmark-only -q

Workloads (same method, same grid or tolerances, same vector field object for
every library), modes ``fwd`` (under ``no_grad``), ``bwd`` (the forward runs
outside the timing; ``torch.autograd.grad(..., retain_graph=True)`` is timed)
and ``full`` (forward + backward):

* ``decay-rk4``: rk4 (3/8 rule), 1000 fixed steps on [0, 1], state 2708 x 16,
  f = -y: the field costs next to nothing, so this measures the solver's overhead;
* ``mlp-rk4``: rk4, 100 steps on [0, 1], an MLP field 64 -> 64 -> 64 -> 64 with
  tanh, state 2708 x 64: the field dominates;
* ``mlp-dopri5``: the same MLP, dopri5 at rtol = atol = 1e-7 on [0, 1];
* ``graph-adjoint``: ``odeint_adjoint``, rk4 with 10 steps on [0, 1], the graph
  field f(x) = tanh(A x W) - x (A: row-normalised PubMed-sized power-law graph
  through ``graphode.ops.spmm``, W 64 x 64), state 19717 x 64.

Providers: ``graphode``, ``torchdiffeq`` and ``torchode`` (the state flattened
to one batch element, so that it solves the same single ODE with one error norm;
rk4 as the same 3/8-rule tableau on torchode's ``ExplicitRungeKutta`` with a
``FixedStepController``; dopri5 with its ``IntegralController``; eager, no JIT;
not run on the adjoint workload).

The limit (``limit`` rows): ``fwd`` = NFE x the median time of one vector-field
call (under ``no_grad``); ``bwd`` / ``full`` = the same accepted steps as graphode
took, written as a plain torch loop over the tableau (no step-size control, no
bookkeeping), backpropagated; for the adjoint workload ``bwd`` = backward NFE x
one vector-field call with its vector-Jacobian product.  Each library's overhead
is its time minus the limit.

Correctness first: before timing, each library's output (and, for bwd/full, its
gradients of y0 and of the field's parameters) is checked against torchdiffeq's
(relative 1e-4; rk4 also against the exact e^-1 y0), and the NFE must equal
torchdiffeq's where the methods are identical (rk4 for all three; dopri5 for
graphode, whose controller follows torchdiffeq's; torchode's controller differs,
its NFE is reported).

Also: adjoint peak memory (10 vs 1000 steps) and stiff time-to-accuracy.
Results: ``bench/results/solvers.json``.  ``GRAPHODE_BENCH_THREADS`` intra-op
threads (default 1).
"""
from __future__ import annotations

import math
import os

import pytest
import torch

import _benchutil as bu
import graphode
from graphode import ops
from graphode.solvers import solve
from graphode.solvers._tableaux import TABLEAUX

torchdiffeq = pytest.importorskip("torchdiffeq", reason="the benchmarks compare against torchdiffeq")
try:
    import torchode
except ImportError:  # pragma: no cover - torchode is in the test extras
    torchode = None

pytestmark = pytest.mark.usefixtures("bench_threads")

LIBS = ("graphode", "torchdiffeq", "torchode")
MODES = ("fwd", "bwd", "full")
ROWS = bu.pick(2708, 200)
ROUNDS = bu.pick(5, 1)
DECAY_STEPS = bu.pick(1000, 20)
MLP_STEPS = bu.pick(100, 10)
F_ROUNDS = bu.pick(20, 2)  # rounds of the single vector-field call (the fwd limit)


def _lib(name):
    return graphode if name == "graphode" else torchdiffeq


class MLP3(torch.nn.Module):
    """The MLP field 64 -> 64 -> 64 -> 64 with tanh, counting evaluations."""

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


class Decay(torch.nn.Module):
    nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return -y


# --------------------------------------------------------------------------- workloads
_problems: dict = {}

TITLES = {
    "decay-rk4": f"rk4 (3/8 rule), {DECAY_STEPS} steps on [0, 1], state {ROWS}x16, f = -y (backprop)",
    "mlp-rk4": f"rk4, {MLP_STEPS} steps on [0, 1], MLP 64-64-64-64 tanh field, state {ROWS}x64 (backprop)",
    "mlp-dopri5": f"dopri5, rtol = atol = 1e-7 on [0, 1], the same MLP field and state (backprop)",
    "graph-adjoint": "odeint_adjoint rk4, 10 steps on [0, 1], f = tanh(A x W) - x, PubMed-sized power-law graph, "
                     "64 features",
}


def problem(w):
    """(field, y0, t, solve kwargs, adjoint?)"""
    if w not in _problems:
        t = torch.tensor([0.0, 1.0])
        if w == "decay-rk4":
            y0 = torch.randn(ROWS, 16, generator=torch.Generator().manual_seed(0))
            _problems[w] = (Decay(), y0, t, dict(method="rk4", options={"step_size": 1.0 / DECAY_STEPS}), False)
        elif w == "mlp-rk4":
            y0 = torch.randn(ROWS, 64, generator=torch.Generator().manual_seed(1))
            _problems[w] = (MLP3(), y0, t, dict(method="rk4", options={"step_size": 1.0 / MLP_STEPS}), False)
        elif w == "mlp-dopri5":
            y0 = torch.randn(ROWS, 64, generator=torch.Generator().manual_seed(1))
            _problems[w] = (MLP3(), y0, t, dict(method="dopri5", rtol=1e-7, atol=1e-7), False)
        else:
            n, e = bu.pick((19717, 69700), (300, 1500))
            g = graphode.power_law_graph(n, e, seed=1)
            y0 = torch.randn(g.num_nodes, 64, generator=torch.Generator().manual_seed(2))
            _problems[w] = (GraphField(g), y0, t, dict(method="rk4", options={"step_size": 0.1}), True)
    return _problems[w]


# --------------------------------------------------------------------------- torchode
def _torchode_rk4_class():
    from torchode.interpolation import ThirdOrderPolynomialInterpolation
    from torchode.single_step_methods.runge_kutta import ButcherTableau, ExplicitRungeKutta

    tab = TABLEAUX["rk4"]
    a = [[]] + [list(row) for row in tab.a]

    class RK4(ExplicitRungeKutta):
        """torchdiffeq's / graphode's ``rk4`` (Kutta's 3/8 rule) as a torchode method."""
        TABLEAU = ButcherTableau.from_lists(c=list(tab.c), a=a, b=list(tab.b), b_low_order=list(tab.b))

        def __init__(self, term=None):
            super().__init__(term, RK4.TABLEAU)

        def convergence_order(self):
            return 4

        def build_interpolation(self, data):
            return ThirdOrderPolynomialInterpolation.from_k(data.t0, data.dt, data.y0, data.y1, data.k)

    return RK4


def torchode_solve(f, y0, t, kw):
    """``y(t[-1])`` from torchode, the state flattened to one batch element."""
    shape = y0.shape
    term = torchode.ODETerm(lambda tt, y: f(tt, y.view(shape)).reshape(1, -1))
    prob = torchode.InitialValueProblem(y0=y0.reshape(1, -1), t_start=t[:1].double(), t_end=t[-1:].double())
    if kw["method"] == "rk4":
        step = _torchode_rk4_class()(term=term)
        solver = torchode.AutoDiffAdjoint(step, torchode.FixedStepController())
        # a hair above h: the last step is clipped to t_end instead of n rounding errors adding a tiny extra step
        h = kw["options"]["step_size"] * (1 + 1e-12)
        sol = solver.solve(prob, dt0=torch.tensor([h], dtype=torch.float64))
    else:
        step = torchode.Dopri5(term=term)
        ctrl = torchode.IntegralController(atol=kw["atol"], rtol=kw["rtol"], term=term)
        sol = torchode.AutoDiffAdjoint(step, ctrl).solve(prob)
    assert int(sol.status[0]) == 0, f"torchode: status {int(sol.status[0])}"
    return sol.ys[0, -1].view(shape)


def _available(w, lib):
    if lib == "torchode":
        if torchode is None:
            return "torchode is not installed"
        if problem(w)[4]:
            return "torchode's adjoint (BacksolveAdjoint) is not the same algorithm; not compared"
    return None


# --------------------------------------------------------------------------- cases
def _steps(w):
    """The accepted step sizes graphode takes (for the plain loop; the last one clipped to
    end at t[-1] where the solver stepped past it and interpolated), and its NFE."""
    key = ("steps", w)
    if key not in _problems:
        f, y0, t, kw, _ = problem(w)
        with torch.no_grad():
            r = solve(f, y0, t, **kw)
        steps = list(r.stats.step_sizes)
        steps[-1] = float(t[-1] - t[0]) - sum(steps[:-1])
        _problems[key] = (steps, r.stats.nfe)
    return _problems[key]


def plain_loop(f, y, t0, steps, method):
    """The same accepted steps as a plain torch loop over the method's tableau."""
    tab = TABLEAUX[method]
    s = len(tab.c)
    tt = float(t0)
    k_first = None
    for h in steps:
        ks = [k_first if k_first is not None else f(tt, y)]
        for i in range(1, s):
            yi = y
            for j, a in enumerate(tab.a[i - 1]):
                if a:
                    yi = yi + (h * a) * ks[j]
            ks.append(f(tt + tab.c[i] * h, yi))
        y_new = y
        for bi, k in zip(tab.b, ks):
            if bi:
                y_new = y_new + (h * bi) * k
        k_first = ks[-1] if tab.reuse_last_stage else None
        y, tt = y_new, tt + h
    return y


def make_case(w, lib, mode):
    """(run, prepare, field): ``run()`` returns the outputs compared with the reference."""
    f, y0, t, kw, adjoint = problem(w)
    params = list(f.parameters())

    if lib == "plain-loop":
        steps, _ = _steps(w)

        def solver(y):
            return plain_loop(f, y, t[0], steps, kw["method"])
    elif lib == "torchode":
        def solver(y):
            return torchode_solve(f, y, t, kw)
    else:
        L = _lib(lib)

        def solver(y):
            if adjoint:
                return L.odeint_adjoint(f, y, t, adjoint_params=tuple(params), **kw)[-1]
            return L.odeint(f, y, t, **kw)[-1]

    if mode == "fwd":
        def run():
            with torch.no_grad():
                return (solver(y0),)

        return run, None, f
    y = y0.detach().requires_grad_(True)
    inputs = [y] + params
    gy = torch.randn(y0.shape, generator=torch.Generator().manual_seed(3))
    if mode == "full":
        def run():
            yT = solver(y)
            return (yT.detach(), *torch.autograd.grad(yT, inputs, gy))

        return run, None, f
    state = {}

    def prepare():
        state["yT"] = solver(y)

    def run():
        return torch.autograd.grad(state["yT"], inputs, gy, retain_graph=True)

    return run, prepare, f


_truth: dict = {}


def truth(w):
    """torchdiffeq's output, gradients and forward NFE of one full forward + backward."""
    if w not in _truth:
        run, _, f = make_case(w, "torchdiffeq", "fwd")
        f.nfe = 0
        run()
        nfe = f.nfe
        run, _, f = make_case(w, "torchdiffeq", "full")
        _truth[w] = (run(), nfe)
    return _truth[w]


def _field_call(w, benchmark):
    """Median time of one vector-field call (fwd) and, for the adjoint, of one call with its VJP."""
    key = ("field", w)
    if key not in _problems:
        f, y0, t, kw, adjoint = problem(w)
        tt = t[0]
        with torch.no_grad():
            fwd = lambda: f(tt, y0)  # noqa: E731
            fwd()
            out = {"fwd_s": bu.summarize(bu.time_calls(fwd, F_ROUNDS))["median_s"]}
        if adjoint:
            y = y0.detach().requires_grad_(True)
            params = tuple(f.parameters())
            a = torch.randn_like(y0)

            def vjp():
                with torch.enable_grad():
                    return torch.autograd.grad(f(tt, y), (y,) + params, a)

            vjp()
            out["vjp_s"] = bu.summarize(bu.time_calls(vjp, F_ROUNDS))["median_s"]
        _problems[key] = out
    return _problems[key]


CASES = [(w, lib, m) for w in TITLES for m in MODES for lib in LIBS + ("plain-loop",)]


@pytest.mark.parametrize("workload,lib,mode", CASES, ids=[f"{w}-{m}-{lib}" for w, lib, m in CASES])
def test_solver(benchmark, workload, lib, mode):
    why = _available(workload, lib)
    if why:
        pytest.skip(why)
    if lib == "plain-loop" and (mode == "fwd" or problem(workload)[4]):
        pytest.skip("the plain loop is the limit of the backpropagated modes (fwd: NFE x one field call)")
    benchmark.group = f"solver {workload} {mode}"
    run, prepare, f = make_case(workload, lib, mode)
    ref, ref_nfe = truth(workload)
    f.nfe = 0
    if prepare:
        prepare()
    outs = run()  # correctness first (also the warm-up)
    nfe = f.nfe
    exp = {"fwd": ref[:1], "bwd": ref[1:], "full": ref}[mode]
    err = bu.check_close(outs, exp, rtol=1e-4, what=f"{workload} {mode} {lib} vs torchdiffeq")
    if workload == "decay-rk4" and mode != "bwd":
        bu.check_close(outs[0], problem(workload)[1] * math.exp(-1.0), rtol=2e-5, what="rk4 vs exp(-1) y0")
    identical = lib in ("graphode", "torchdiffeq") or problem(workload)[3]["method"] == "rk4"
    if mode == "fwd" and lib != "plain-loop" and identical:
        assert nfe == ref_nfe, f"{workload}: {lib} made {nfe} evaluations, torchdiffeq {ref_nfe}"
    st = bu.measure(benchmark, run, ROUNDS)
    row = dict(kind="moded", workload=workload, lib=lib, mode=mode, rounds=ROUNDS, nfe_first_call=nfe,
               nfe_torchdiffeq=ref_nfe, max_rel_err_vs_torchdiffeq=err, threads=torch.get_num_threads(),
               timed=st is not None)
    if st:
        row.update(min_s=st["min_s"], median_s=st["median_s"], times_s=st["times_s"])
    if lib == "graphode":
        row.update(field=_field_call(workload, benchmark), steps_nfe=_steps(workload)[1])
        if problem(workload)[4]:  # adjoint: the backward's evaluations
            row["nfe_backward"] = _adjoint_backward_nfe(workload)
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "times_s"})
    REPORT.add(**row)


def _adjoint_backward_nfe(w):
    key = ("adj_nfe", w)
    if key not in _problems:
        run, _, f = make_case(w, "graphode", "full")
        f.nfe = 0
        run()
        fwd_nfe = _steps(w)[1]
        _problems[key] = f.nfe - fwd_nfe
    return _problems[key]


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
                growth=large["peak_rss_bytes"] / small["peak_rss_bytes"], time_large_s=large["time_s"],
                rows=MEM_ROWS)
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
        st = bu.measure(benchmark, lambda: odeint(f, x0, t, **kw), bu.pick(3, 1))
    info = dict(case=case, rel_err=err, nfe=nfe, settings=repr(opts or {"rtol": tol}), newton=r.stats.n_newton,
                krylov=r.stats.n_linear, timed=st is not None)
    if st:
        info.update(min_s=st["min_s"], median_s=st["median_s"])
    benchmark.extra_info.update(info)
    REPORT.add(kind="stiff", **info)


REPORT = bu.Report("solvers", "Solvers: graphode vs torchdiffeq 0.2.5 and torchode, with the NFE limit",
                   command="python -m pytest bench/test_bench_solvers.py --benchmark-only", titles=TITLES,
                   rounds=ROUNDS, field_rounds=F_ROUNDS, torchode=getattr(torchode, "__version__", None),
                   torchdiffeq=torchdiffeq.__version__ if hasattr(torchdiffeq, "__version__") else "0.2.5",
                   mem_rows=MEM_ROWS, mem_steps=MEM_STEPS)
