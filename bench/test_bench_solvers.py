"""Solver benchmarks, graphode side by side with torchdiffeq (pytest-benchmark).

Run:  .venv/bin/python -m pytest bench/test_bench_solvers.py --benchmark-only -q
(not collected by the default ``pytest tests/`` run).  Each benchmark group
holds the graphode case next to its torchdiffeq case; NFE, accuracy and
memory figures go to ``extra_info`` (see ``--benchmark-json``).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import graphode
from graphode.solvers import solve

torchdiffeq = pytest.importorskip("torchdiffeq", reason="the benchmarks compare against torchdiffeq")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("bench_threads")


# ------------------------------------------------------------------ fixtures
class Counted(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.f(t, y)


class MLP3(torch.nn.Module):
    """Three-layer MLP vector field (64 -> 64 -> 64 -> 64, tanh)."""

    def __init__(self, dim=64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Tanh(), torch.nn.Linear(dim, dim),
                                       torch.nn.Tanh(), torch.nn.Linear(dim, dim))
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.net(y)


def _graph(n=2708, extra_edges=5000, seed=0):
    """Random sparse graph with Cora's node count, row-stochastic weights (COO)."""
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


def _run(benchmark, fn, rounds):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------ rk4, cheap f
RK4_Y0 = torch.randn(2708, 16, generator=torch.Generator().manual_seed(0))
RK4_T = torch.tensor([0.0, 1.0])
RK4_F = lambda t, y: -y  # noqa: E731  (cheap field: measures solver overhead)


@pytest.mark.benchmark(group="rk4 1000 fixed steps, 2708x16, f=-y")
@pytest.mark.parametrize("lib", ["graphode", "torchdiffeq"])
def test_rk4_fixed_steps(benchmark, lib):
    odeint = graphode.odeint if lib == "graphode" else torchdiffeq.odeint
    with torch.no_grad():
        ys = _run(benchmark, lambda: odeint(RK4_F, RK4_Y0, RK4_T, method="rk4", options={"step_size": 1e-3}), 10)
    exact = RK4_Y0 * math.exp(-1.0)
    benchmark.extra_info["max_abs_err"] = float((ys[-1] - exact).abs().max())


# ---------------------------------------------------------- dopri5, MLP field
MLP_Y0 = torch.randn(2708, 64, generator=torch.Generator().manual_seed(1))
MLP_T = torch.tensor([0.0, 5.0])


@pytest.mark.benchmark(group="dopri5 rtol=atol=1e-7, 3-layer MLP, 2708x64")
@pytest.mark.parametrize("lib", ["graphode", "torchdiffeq"])
def test_dopri5_mlp(benchmark, lib):
    f = MLP3()
    odeint = graphode.odeint if lib == "graphode" else torchdiffeq.odeint
    with torch.no_grad():
        f.nfe = 0
        ys = odeint(f, MLP_Y0, MLP_T, rtol=1e-7, atol=1e-7)
        nfe = f.nfe
        _run(benchmark, lambda: odeint(f, MLP_Y0, MLP_T, rtol=1e-7, atol=1e-7), 5)
    benchmark.extra_info["nfe"] = nfe
    benchmark.extra_info["y_norm"] = float(ys[-1].norm())


@pytest.mark.benchmark(group="dopri5 backprop (fwd+bwd), 3-layer MLP, 2708x64")
@pytest.mark.parametrize("lib", ["graphode", "torchdiffeq"])
def test_dopri5_mlp_backprop(benchmark, lib):
    f = MLP3()
    odeint = graphode.odeint if lib == "graphode" else torchdiffeq.odeint

    def step():
        ys = odeint(f, MLP_Y0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5)
        ys[-1].square().sum().backward()

    _run(benchmark, step, 5)


# ------------------------------------------------------ adjoint peak memory
_MEM_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    lib, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if lib == "graphode":
        import graphode as L
    else:
        import torchdiffeq as L
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))
    field = type("F", (torch.nn.Module,), {{"forward": lambda self, t, y: f(y)}})()
    field.f = f
    y0 = torch.randn(2708, 16, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    solver = L.odeint_adjoint if mode == "adjoint" else L.odeint
    def once(steps):
        ys = solver(field, y0, t, method="rk4", options={{"step_size": 1.0 / steps}})
        ys[-1].square().sum().backward()
    once(2)                                   # warm up allocator and imports
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    once(n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"peak_kb": peak, "growth_kb": peak - base}}))
""").format(root=ROOT)


def _peak_rss(lib, mode, n):
    out = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, lib, mode, str(n)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="odeint_adjoint rk4 peak memory, 10 vs 1000 steps (2708x16)")
@pytest.mark.parametrize("lib,mode", [("graphode", "adjoint"), ("torchdiffeq", "adjoint"), ("graphode", "backprop")])
def test_adjoint_memory(benchmark, lib, mode):
    small = _peak_rss(lib, mode, 10)
    large = _peak_rss(lib, mode, 1000)
    benchmark.extra_info.update({
        "peak_rss_mb_10": small["peak_kb"] / 1024, "peak_rss_mb_1000": large["peak_kb"] / 1024,
        "growth_ratio": large["peak_kb"] / small["peak_kb"],
        "extra_mb_1000": large["growth_kb"] / 1024,
    })
    # time one forward+backward at 1000 steps for the record
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))
    field = Counted(lambda t, y: f(y))
    field.add_module("net", f)
    y0 = torch.randn(2708, 16, requires_grad=True)
    L = graphode if lib == "graphode" else torchdiffeq
    solver = L.odeint_adjoint if mode == "adjoint" else L.odeint

    def step():
        ys = solver(field, y0, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 1e-3})
        ys[-1].square().sum().backward()

    _run(benchmark, step, 2)
    if lib == "graphode" and mode == "adjoint":
        assert large["peak_kb"] <= 1.2 * small["peak_kb"]


# ------------------------------------------- stiff graph diffusion accuracy
_G = None


def _stiff_problem():
    global _G
    if _G is None:
        import scipy.sparse
        import scipy.sparse.linalg

        A = _graph()
        kappa, T = 1000.0, 0.1
        x0 = torch.randn(2708, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        idx, val = A.indices().numpy(), A.values().numpy()
        As = scipy.sparse.csr_matrix((val, (idx[0], idx[1])), shape=A.shape)
        L = kappa * (As - scipy.sparse.identity(A.shape[0]))
        ref = torch.from_numpy(scipy.sparse.linalg.expm_multiply(L * T, x0.numpy()))
        _G = (A, kappa, T, x0, ref)
    return _G


def _stiff_field(A, kappa):
    return lambda t, x: kappa * (torch.sparse.mm(A, x) - x)


TARGET = 1e-3   # relative max error at T


def _rel_err(y, ref):
    return float((y - ref).abs().max() / ref.abs().max())


def _stiff_settings():
    A, kappa, T, x0, ref = _stiff_problem()
    f = _stiff_field(A, kappa)
    t = torch.tensor([0.0, T], dtype=torch.float64)
    cfg = {}
    for k in range(1, 12):
        h = T / 2 ** k
        r = solve(f, x0, t, method="implicit_euler", options={"step_size": h, "jvp": "fd"}, rtol=1e-4, atol=1e-6)
        if _rel_err(r.ys[-1], ref) <= TARGET:
            cfg["implicit_euler"] = ({"step_size": h, "jvp": "fd"}, 1e-4, r)
            break
    for tol in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        r = solve(f, x0, t, method="dopri5", rtol=tol, atol=tol * 1e-2)
        if _rel_err(r.ys[-1], ref) <= TARGET:
            cfg["dopri5"] = ({}, tol, r)
            break
    return cfg


_CFG = None


@pytest.mark.benchmark(group="stiff graph diffusion dx/dt=1000(A-I)x, T=0.1, 2708x8: time to 1e-3 rel. error")
@pytest.mark.parametrize("case", ["graphode implicit_euler", "graphode dopri5", "torchdiffeq dopri5"])
def test_stiff_time_to_accuracy(benchmark, case):
    global _CFG
    if _CFG is None:
        _CFG = _stiff_settings()
    A, kappa, T, x0, ref = _stiff_problem()
    t = torch.tensor([0.0, T], dtype=torch.float64)
    lib, method = case.split()
    opts, tol, r = _CFG[method]
    f = Counted(_stiff_field(A, kappa))
    odeint = graphode.odeint if lib == "graphode" else torchdiffeq.odeint
    kw = dict(method=method, options=dict(opts), rtol=tol, atol=tol * 1e-2)
    with torch.no_grad():
        ys = odeint(f, x0, t, **kw)
        nfe = f.nfe
        _run(benchmark, lambda: odeint(f, x0, t, **kw), 2)
    benchmark.extra_info.update({"rel_err": _rel_err(ys[-1], ref), "nfe": nfe, "settings": repr(opts or {"rtol": tol}),
                                 "newton": r.stats.n_newton, "krylov": r.stats.n_linear, "jvp": r.stats.njvp})
