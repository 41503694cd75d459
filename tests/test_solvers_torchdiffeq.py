"""Drop-in agreement with torchdiffeq 0.2.5: same results, same NFE, same API semantics."""
import warnings

import pytest
import torch

import graphode
from graphode.solvers import METHODS, odeint, solve

torchdiffeq = pytest.importorskip("torchdiffeq", reason="torchdiffeq is needed for the agreement tests")

ADAPTIVE = ["dopri5", "bosh3", "dopri8", "fehlberg2", "adaptive_heun"]
FIXED = ["euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams"]

pytestmark = pytest.mark.usefixtures("one_thread")



class Field(torch.nn.Module):
    """Nonlinear, time-dependent field with an NFE counter."""

    def __init__(self, dim=4, seed=0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(dim, dim, generator=g, dtype=dtype) * 0.6)
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return torch.tanh(y @ self.W.T) * torch.cos(t) - 0.3 * y


def _y0(dtype=torch.float64, shape=(3, 4)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(7), dtype=dtype)


def _both(method, y0, t, **kw):
    f1, f2 = Field(dtype=y0.dtype), Field(dtype=y0.dtype)
    with torch.no_grad():
        ours = odeint(f1, y0, t, method=method, **kw)
        ref = torchdiffeq.odeint(f2, y0, t, method=method, **{k: (dict(v) if isinstance(v, dict) else v)
                                                                  for k, v in kw.items()})
    return ours, ref, f1.nfe, f2.nfe


def test_public_names():
    assert graphode.odeint is odeint
    assert callable(graphode.odeint_adjoint) and callable(graphode.odeint_event) and callable(graphode.solve)
    for m in ADAPTIVE + FIXED + ["scipy_solver", "implicit_euler", "crank_nicolson"]:
        assert m in METHODS


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_adaptive_agreement_and_nfe(method, tol):
    y0 = _y0()
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    ours, ref, n1, n2 = _both(method, y0, t, rtol=tol, atol=tol)
    assert abs(n1 - n2) <= 0.05 * n2, (n1, n2)
    if method in ("dopri5", "bosh3"):
        assert n1 == n2
    assert float((ours - ref).abs().max()) < 50 * tol


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_float32_same_nfe(method):
    y0 = _y0(torch.float32)
    t = torch.tensor([0.0, 2.0])
    ours, ref, n1, n2 = _both(method, y0, t, rtol=1e-6, atol=1e-6)
    assert n1 == n2
    assert ours.dtype == torch.float32
    assert float((ours - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("method", FIXED)
def test_fixed_agreement(method):
    y0 = _y0()
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    ours, ref, n1, n2 = _both(method, y0, t, options={"step_size": 0.05})
    assert n1 == n2
    assert float((ours - ref).abs().max()) < 1e-10


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_fixed_grid_interp_and_grid_constructor(interp):
    y0 = _y0()
    t = torch.tensor([0.0, 0.33, 0.71, 1.0], dtype=torch.float64)
    ours, ref, n1, n2 = _both("rk4", y0, t, options={"step_size": 0.1, "interp": interp})
    # (cubic: torchdiffeq also evaluates f at outputs that coincide with grid points; we do not)
    assert n2 - 1 <= n1 <= n2 and float((ours - ref).abs().max()) < 1e-12
    gc = lambda f, y0, t: torch.linspace(float(t[0]), float(t[-1]), 17, dtype=t.dtype)  # noqa: E731
    ours, ref, n1, n2 = _both("midpoint", y0, t, options={"grid_constructor": gc})
    assert n1 == n2 and float((ours - ref).abs().max()) < 1e-12


def test_perturb_option_matches():
    f = lambda t, y: torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y))  # noqa: E731
    y0 = torch.zeros(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ours = odeint(f, y0, t, method="rk4", options={"step_size": 0.25, "perturb": True})
    ref = torchdiffeq.odeint(f, y0, t, method="rk4", options={"step_size": 0.25, "perturb": True})
    assert torch.allclose(ours, ref)


def test_decreasing_time():
    y0 = _y0()
    t = torch.linspace(2.0, -1.0, 6, dtype=torch.float64)
    for method, kw in [("dopri5", {}), ("rk4", {"options": {"step_size": 0.1}}), ("bosh3", {})]:
        ours, ref, n1, n2 = _both(method, y0, t, **kw)
        assert n1 == n2
        assert float((ours - ref).abs().max()) < 1e-9


def test_tuple_state_and_tuple_tolerances():
    def f(t, y):
        a, b = y
        return b, -a * torch.cos(t)

    y0 = (torch.tensor([1.0, 0.5], dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)[0])
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    ours = odeint(f, y0, t, rtol=(1e-8, 1e-6), atol=1e-9)
    ref = torchdiffeq.odeint(f, y0, t, rtol=(1e-8, 1e-6), atol=1e-9)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, ref):
        assert a.shape == (5, 2)
        assert float((a - b).abs().max()) < 1e-12


def test_step_t_jump_t():
    f = lambda t, y: torch.where(t < 1.0, y, -y)  # noqa: E731
    y0 = torch.ones(3, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    for opt in ({"jump_t": torch.tensor([1.0], dtype=torch.float64)},
                {"step_t": torch.tensor([0.5, 1.0], dtype=torch.float64)}):
        n_o = solve(f, y0, t, options=opt).stats.nfe

        class C:
            n = 0

        def g(t, y):
            C.n += 1
            return f(t, y)

        ref = torchdiffeq.odeint(g, y0, t, options=dict(opt))
        ours = odeint(f, y0, t, options=opt)
        assert n_o == C.n
        assert float((ours - ref).abs().max()) < 1e-10


def test_options_first_step_max_step_safety():
    y0 = _y0()
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    opts = {"first_step": 0.01, "max_step": 0.2, "safety": 0.8, "ifactor": 5.0, "dfactor": 0.3}
    ours, ref, n1, n2 = _both("dopri5", y0, t, options=opts)
    assert n1 == n2 and float((ours - ref).abs().max()) < 1e-9
    r = solve(Field(), y0, t, options=opts)
    assert max(r.stats.step_sizes) <= 0.2 + 1e-15


def test_custom_norm():
    y0 = _y0()
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    norm = lambda x: x.abs().max()  # noqa: E731
    ours, ref, n1, n2 = _both("dopri5", y0, t, options={"norm": norm})
    assert n1 == n2 and float((ours - ref).abs().max()) < 1e-9


def test_callbacks_called_like_torchdiffeq():
    class CB(Field):
        def __init__(self):
            super().__init__()
            self.log = []

        def callback_step(self, t0, y0, dt):
            self.log.append(("step", float(t0.detach()), float(dt.detach())))

        def callback_accept_step(self, t0, y0, dt):
            self.log.append(("accept", float(t0.detach()), float(dt.detach())))

        def callback_reject_step(self, t0, y0, dt):
            self.log.append(("reject", float(t0.detach()), float(dt.detach())))

    y0 = _y0() * 5
    t = torch.tensor([0.0, 4.0], dtype=torch.float64)
    a, b = CB(), CB()
    odeint(a, y0, t, rtol=1e-4, atol=1e-6)
    torchdiffeq.odeint(b, y0, t, rtol=1e-4, atol=1e-6)
    assert [e[0] for e in a.log] == [e[0] for e in b.log]
    assert any(e[0] == "reject" for e in a.log) or len(a.log) > 4
    for x, y in zip(a.log, b.log):
        assert x[1] == pytest.approx(y[1], rel=1e-6, abs=1e-12)
    # fixed solvers support callback_step only: others warn
    c = CB()
    with pytest.warns(UserWarning, match="does not support callbacks"):
        odeint(c, y0, t, method="euler", options={"step_size": 0.5})
    assert sum(e[0] == "step" for e in c.log) == 8


def test_unused_option_warns_and_runs():
    y0 = _y0()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match="step_size"):
        ys = odeint(Field(), y0, t, method="dopri5", options={"step_size": 0.1})
    assert torch.isfinite(ys).all()
    with pytest.warns(UserWarning, match="max_order"):
        odeint(Field(), y0, t, method="rk4", options={"step_size": 0.1, "max_order": 3})


def test_no_warning_for_known_options():
    y0 = _y0()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint(Field(), y0, t, method="dopri5", options={"first_step": 0.1, "max_num_steps": 1000, "dtype": torch.float64})
        odeint(Field(), y0, t, method="implicit_adams", options={"step_size": 0.1, "max_iters": 6, "max_order": 6})


@torch.no_grad()
def test_scipy_solver():
    pytest.importorskip("scipy")
    y0 = _y0()
    t = torch.linspace(0.0, 2.0, 4, dtype=torch.float64)
    for solver in ("RK45", "LSODA"):
        ours = odeint(Field(), y0, t, method="scipy_solver", options={"solver": solver}, rtol=1e-9, atol=1e-10)
        ref = odeint(Field(), y0, t, rtol=1e-10, atol=1e-12)
        assert float((ours - ref).abs().max()) < 1e-6
    ours = odeint(Field(), y0, t.flip(0), method="scipy_solver", options={"solver": "RK45"}, rtol=1e-9, atol=1e-10)
    ref = odeint(Field(), y0, t.flip(0), rtol=1e-10, atol=1e-12)
    assert float((ours - ref).abs().max()) < 1e-6


def test_solve_reports_stats():
    y0 = _y0()
    t = torch.linspace(0.0, 3.0, 4, dtype=torch.float64)
    f = Field()
    r = solve(f, y0, t, rtol=1e-6, atol=1e-8)
    assert r.stats.nfe == f.nfe
    # dopri5 is FSAL: 2 evaluations to start, 6 per step attempt
    assert r.stats.nfe == 2 + 6 * (r.stats.n_accepted + r.stats.n_rejected)
    assert len(r.stats.step_sizes) == r.stats.n_accepted
    assert sum(r.stats.step_sizes) >= 3.0
    assert r.step_sizes.dtype == torch.float64
    assert r.ys.shape == (4, 3, 4)


def test_backprop_through_solver_matches_torchdiffeq():
    y0 = _y0().requires_grad_(True)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    f1, f2 = Field(), Field()
    g1 = torch.autograd.grad(odeint(f1, y0, t).pow(2).sum(), (y0, f1.W))
    g2 = torch.autograd.grad(torchdiffeq.odeint(f2, y0, t).pow(2).sum(), (y0, f2.W))
    # torchdiffeq also differentiates through its (tensor) step sizes, which
    # depend on y0 via the initial-step heuristic; that term is O(tolerance).
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_time_gradient_matches_torchdiffeq_adjoint():
    y0 = _y0()
    t1 = torch.tensor([0.2, 0.7, 1.5], dtype=torch.float64, requires_grad=True)
    t2 = t1.detach().clone().requires_grad_(True)
    f = Field()
    (ga,) = torch.autograd.grad(odeint(f, y0, t1, rtol=1e-10, atol=1e-10).pow(2).sum(), t1)
    (gb,) = torch.autograd.grad(torchdiffeq.odeint_adjoint(f, y0, t2, rtol=1e-10, atol=1e-10).pow(2).sum(), t2)
    assert torch.allclose(ga, gb, rtol=1e-6, atol=1e-8)
