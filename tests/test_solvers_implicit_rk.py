"""Implicit Runge–Kutta methods from tableaux: stability, IFT gradients, adaptive stiff solving.

Orders of convergence: tests/test_solvers_convergence.py (linear, against
expm) and test_order_on_nonlinear_problem below (against scipy's DOP853).
"""
import math

import numpy as np
import pytest
import torch

from graphode.solvers import METHODS, TABLEAUX, odeint, solve

pytestmark = pytest.mark.usefixtures("one_thread")

IMPLICIT = ["implicit_euler", "implicit_midpoint", "trapezoid", "radauIIA3", "gl4", "radauIIA5", "gl6", "sdirk2",
            "trbdf2"]
L_STABLE = ["implicit_euler", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2"]
#: A-stable but not L-stable: |R(-∞)| = 1 (Gauss methods, the trapezoidal rule)
NOT_L_STABLE = ["implicit_midpoint", "trapezoid", "gl4", "gl6"]
ADAPTIVE_IMPLICIT = ["radauIIA5", "sdirk2", "trbdf2"]
F64 = torch.float64


def test_every_newest_torchdiffeq_name_is_registered():
    for m in IMPLICIT + ["tsit5", "crank_nicolson"]:
        assert m in METHODS
    assert METHODS["crank_nicolson"].tableau is METHODS["trapezoid"].tableau


# ----------------------------------------------------------------- stability
@pytest.mark.parametrize("name", IMPLICIT)
def test_a_stable_stability_function(name):
    """|R(z)| <= 1 on the closed left half-plane (a grid, the imaginary axis included)."""
    tab = TABLEAUX[name]
    worst = 0.0
    for x in [0.0, -1e-3, -0.1, -1.0, -10.0, -1e3, -1e6]:
        for y in [0.0, 0.1, 1.0, 3.0, 10.0, 100.0, 1e4]:
            worst = max(worst, abs(tab.stability_function(complex(x, y))))
    assert worst <= 1.0 + 1e-12, (name, worst)


@pytest.mark.parametrize("name", IMPLICIT)
def test_l_stability(name):
    r = abs(TABLEAUX[name].stability_function(-1e9))
    if name in L_STABLE:
        assert r < 1e-8, (name, r)
    else:
        assert r == pytest.approx(1.0, abs=1e-7), (name, r)


def _stiff_linear():
    """Block diagonal: a -1e6 decay and a damped rotation (-1 ± 1000i): a normal matrix."""
    M = torch.zeros(3, 3, dtype=F64)
    M[0, 0] = -1e6
    M[1:, 1:] = torch.tensor([[-1.0, 1000.0], [-1000.0, -1.0]], dtype=F64)
    return M


@pytest.mark.parametrize("name", IMPLICIT)
def test_stiff_linear_problem(name):
    """On y' = My with h·λ up to -1e5: no growth (A-stability); the stiff mode is damped after one
    step by the L-stable methods and not by the others."""
    M = _stiff_linear()
    y0 = torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    ts = torch.linspace(0.0, 1.0, 11, dtype=F64)
    ys = odeint(lambda t, y: M @ y, y0, ts, method=name, options={"step_size": 0.1}, rtol=1e-10, atol=1e-12)
    norms = ys.norm(dim=1)
    assert torch.all(norms[1:] <= norms[:-1] * (1 + 1e-9)), norms
    if name in L_STABLE:
        assert float(ys[1, 0].abs()) < 1e-4
    else:
        assert float(ys[1, 0].abs()) > 0.9        # |R(-1e5)| ~ 1: the stiff mode is not damped
    # the slow rotation is approximated at the method's accuracy (h = 0.1 with |λ| = 1000 is
    # far outside the asymptotic range, so only boundedness is checked)
    assert torch.isfinite(ys).all()


# ------------------------------------------------------------------- orders
def _pendulum(t, y):
    return torch.stack([y[1], -torch.sin(y[0]) - 0.1 * y[1] + 0.3 * torch.cos(t)])


_REF = {}


def _pendulum_ref(T):
    if T not in _REF:
        from scipy.integrate import solve_ivp
        sol = solve_ivp(lambda t, y: [y[1], -np.sin(y[0]) - 0.1 * y[1] + 0.3 * np.cos(t)], (0.0, T), [1.2, 0.0],
                        method="DOP853", rtol=1e-13, atol=1e-14)
        _REF[T] = torch.tensor(sol.y[:, -1], dtype=F64)
    return _REF[T]


@pytest.mark.parametrize("name", IMPLICIT)
def test_order_on_nonlinear_problem(name):
    """Nonlinear, time-dependent: Newton iterates, every stage time matters (forced pendulum)."""
    tab = TABLEAUX[name]
    hs = [1 / 2, 1 / 3, 1 / 4, 1 / 6] if tab.order >= 5 else [1 / 8, 1 / 12, 1 / 16, 1 / 24]
    y0 = torch.tensor([1.2, 0.0], dtype=F64)
    errs = []
    for h in hs:
        ys = odeint(_pendulum, y0, torch.tensor([0.0, 3.0], dtype=F64), method=name,
                    options={"step_size": h, "jvp": "fd"}, rtol=1e-13, atol=1e-15)
        errs.append(float((ys[-1] - _pendulum_ref(3.0)).abs().max()))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert tab.order - 0.3 < slope < tab.order + 0.5, (name, slope, errs)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["radauIIA5", "gl4", "trbdf2", "sdirk2"])
def test_gradcheck(name):
    """IFT gradients of coupled (Radau, Gauss) and sequential (ESDIRK, SDIRK) stage solves vs finite differences."""
    g = torch.Generator().manual_seed(3)
    P = (torch.randn(2, 2, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    x0 = torch.randn(2, generator=g, dtype=F64).requires_grad_(True)

    def fn(x0, P):
        return odeint(lambda t, x: torch.tanh(P @ x) * torch.cos(t) - x, x0, torch.tensor([0.0, 0.6], dtype=F64),
                      method=name, options={"step_size": 0.3}, rtol=1e-13, atol=1e-15)

    assert torch.autograd.gradcheck(fn, (x0, P), eps=1e-6, atol=1e-6, rtol=1e-4)


def _graph_nodes(t):
    seen, stack = set(), [t.grad_fn]
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        stack.extend(nf for nf, _ in n.next_functions)
    return len(seen)


def test_gradient_memory_independent_of_newton_iterations():
    """The autograd graph of a step is the same whatever the number of Newton/Krylov iterations."""
    P = (torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5).requires_grad_(True)
    x0 = torch.ones(4, dtype=F64)
    f = lambda t, x: torch.tanh(P @ x) - x  # noqa: E731
    counts, iters = [], []
    for tol in (1e-3, 1e-13):
        r = solve(f, x0, torch.tensor([0.0, 1.0], dtype=F64), method="radauIIA5", options={"step_size": 0.5},
                  rtol=tol, atol=tol)
        counts.append(_graph_nodes(r.ys))
        iters.append(r.stats.n_newton)
    assert iters[1] > iters[0]
    assert counts[0] == counts[1]


# ----------------------------------------------------------------- adaptive
def _vdp(mu):
    def f(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])
    return f


def _scipy_ref(rhs, y0, T, method="Radau"):
    from scipy.integrate import solve_ivp
    sol = solve_ivp(rhs, (0.0, T), y0, method=method, rtol=1e-12, atol=1e-13)
    return torch.tensor(sol.y[:, -1], dtype=F64)


@pytest.mark.parametrize("name", ADAPTIVE_IMPLICIT)
def test_adaptive_van_der_pol_stiff(name):
    mu, T = 1000.0, 1.0
    ref = _scipy_ref(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], [2.0, 0.0], T)
    errs, nfes = [], []
    for tol in (1e-4, 1e-7):
        r = solve(_vdp(mu), torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, T], dtype=F64), method=name,
                  rtol=tol, atol=tol, options={"adaptive": True})
        errs.append(float((r.ys[-1] - ref).abs().max()))
        nfes.append(r.stats.nfe)
        assert r.stats.njvp > 0 and r.stats.n_linear > 0 and r.stats.n_newton > 0
        assert errs[-1] < 30 * tol, (name, tol, errs[-1])
        # an explicit method needs ~T·|λ| / 3 steps (|λ| ~ 3000 here); the implicit one far fewer
        assert r.stats.n_accepted < 300
    assert errs[1] < errs[0]


def test_adaptive_robertson():
    """Robertson's chemical kinetics (stiffness ~1e4 at start, growing): all three species to 1e-6."""
    def rhs(t, y):
        a, b, c = y[0], y[1], y[2]
        return torch.stack([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b])

    T = 40.0
    ref = _scipy_ref(lambda t, y: [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                                   3e7 * y[1] ** 2], [1.0, 0.0, 0.0], T)
    for name in ("radauIIA5", "trbdf2"):
        r = solve(rhs, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, T], dtype=F64), method=name,
                  rtol=1e-6, atol=1e-10, options={"adaptive": True})
        rel = ((r.ys[-1] - ref).abs() / (ref.abs() + 1e-10)).max()
        assert float(rel) < 1e-4, (name, float(rel))
        assert float(r.ys[-1].sum()) == pytest.approx(1.0, abs=1e-9)     # mass is conserved


@pytest.mark.parametrize("name", ADAPTIVE_IMPLICIT)
def test_adaptive_stiff_decay_takes_large_steps(name):
    """y' = -1e6 (y - cos t): after the transient the step follows the smooth solution, not 1/|λ|.

    The steps grow to O(1), so the outputs are stepped on (``step_t``): inside such a step the
    dense output is only as accurate as the stage order (as in scipy's Radau, whose interpolated
    values here are off by ~4e-4)."""
    f = lambda t, y: -1e6 * (y - torch.cos(t))  # noqa: E731
    ts = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=F64)
    r = solve(f, torch.zeros(1, dtype=F64), ts, method=name, rtol=1e-6, atol=1e-8,
              options={"adaptive": True, "step_t": ts})
    exact = torch.cos(ts) + 1e-6 * torch.sin(ts)          # the slow manifold, to O(1e-12)
    assert torch.allclose(r.ys[1:, 0], exact[1:], atol=2e-7)
    assert r.stats.n_accepted < (2000 if name == "sdirk2" else 200)
    assert max(r.stats.step_sizes) > 0.4


def test_adaptive_dense_output_and_controller_options():
    f = _vdp(5.0)
    ts = torch.linspace(0.0, 4.0, 9, dtype=F64)
    ref = solve(f, torch.tensor([2.0, 0.0], dtype=F64), ts, method="dopri5", rtol=1e-11, atol=1e-12).ys
    for name in ("radauIIA5", "trbdf2"):
        r = solve(f, torch.tensor([2.0, 0.0], dtype=F64), ts, method=name, rtol=1e-7, atol=1e-9,
                  options={"adaptive": True, "pcoeff": 0.3, "icoeff": 0.4, "max_step": 0.5})
        assert max(r.stats.step_sizes) <= 0.5
        assert float((r.ys - ref).abs().max()) < 5e-5, name


def test_adaptive_gradient():
    """Backprop through adaptive radauIIA5 equals a fine fixed-grid solve's gradient."""
    W = torch.tensor([[-2.0, 1.0], [-1.0, -30.0]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    f = lambda t, y: torch.tanh(W @ y)  # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=F64)
    a = odeint(f, y0, t, method="radauIIA5", rtol=1e-9, atol=1e-11, options={"adaptive": True})
    b = odeint(f, y0, t, method="dopri5", rtol=1e-11, atol=1e-13)
    ga = torch.autograd.grad(a[-1].square().sum(), (y0, W))
    gb = torch.autograd.grad(b[-1].square().sum(), (y0, W))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-6, atol=1e-8)


def test_adaptive_needs_an_embedded_estimate():
    with pytest.raises(ValueError, match="'gl4' has no embedded error estimate.*radauIIA5"):
        odeint(_pendulum, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="gl4",
               options={"adaptive": True})
    with pytest.warns(UserWarning, match="'step_size'"):
        odeint(_pendulum, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="radauIIA5",
               options={"adaptive": True, "step_size": 0.1})
    with pytest.warns(UserWarning, match="'first_step'"):
        odeint(_pendulum, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="radauIIA5",
               options={"step_size": 0.5, "first_step": 0.1})


# ------------------------------------------------------------ semi-implicit
@pytest.mark.parametrize("name", ["sdirk2", "radauIIA5"])
def test_semi_implicit_operator_any_tableau(name):
    """options['operator'] freezes L = Ā(x_k) - I per step; the block systems are linear: a dense check."""
    g = torch.Generator().manual_seed(5)
    n, d = 8, 2
    Wq = (torch.randn(d, d, generator=g, dtype=F64) * 0.5).requires_grad_(True)
    x0 = torch.randn(n, d, generator=g, dtype=F64)

    def lmat(x):
        return torch.softmax((x @ Wq) @ x.T, dim=1) - torch.eye(n, dtype=F64)

    tau = 1.5
    res = solve(lambda t, x: lmat(x) @ x, x0, torch.tensor([0.0, 2 * tau], dtype=F64), method=name,
                options={"step_size": tau, "operator": lambda t, xk: (lambda v, _L=lmat(xk): _L @ v)},
                rtol=1e-12, atol=1e-14)
    tab = TABLEAUX[name]
    s = tab.stages
    A = torch.tensor(tab.A, dtype=F64)
    b = torch.tensor(tab.b, dtype=F64)
    x = x0
    for _ in range(2):
        L = lmat(x)
        # (I - tau A ⊗ L) K = 1 ⊗ (L x)
        big = torch.eye(s * n, dtype=F64) - tau * torch.kron(A, L)
        K = torch.linalg.solve(big, torch.cat([L @ x] * s)).reshape(s, n, d)
        x = x + tau * torch.einsum("s,snd->nd", b, K)
    assert torch.allclose(res.ys[-1], x, rtol=1e-9, atol=1e-11)
    ga = torch.autograd.grad(res.ys[-1].square().sum(), Wq)[0]
    gb = torch.autograd.grad(x.square().sum(), Wq)[0]
    assert torch.allclose(ga, gb, rtol=1e-6, atol=1e-9)
