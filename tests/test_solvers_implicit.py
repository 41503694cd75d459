"""implicit_euler / crank_nicolson (tableaux of the implicit RK solver): Newton–Krylov forward, IFT backward."""
import pytest
import torch

from graphode.solvers import odeint, solve


pytestmark = pytest.mark.usefixtures("one_thread")


def _stochastic(n, seed):
    W = torch.rand(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return W / W.sum(1, keepdim=True)


T01 = torch.tensor([0.0, 2.0], dtype=torch.float64)


@pytest.mark.parametrize("solver", ["gmres", "bicgstab"])
def test_linear_field_one_newton_step(solver):
    A = _stochastic(20, 0)
    x0 = torch.randn(20, 2, dtype=torch.float64)
    res = solve(lambda t, x: A @ x - x, x0, T01, method="implicit_euler",
                options={"step_size": 0.5, "linear_solver": solver})
    assert res.stats.n_accepted == 4
    assert res.stats.n_newton == 4          # one Newton iteration per step
    assert res.stats.n_linear > 0 and res.stats.njvp > 0


def test_cg_when_declared_symmetric():
    g = torch.Generator().manual_seed(1)
    W = torch.rand(20, 20, generator=g, dtype=torch.float64)
    W = (W + W.T) / 2
    d = W.sum(1).rsqrt()
    S = d[:, None] * W * d[None, :]            # symmetric normalised adjacency
    x0 = torch.randn(20, 3, generator=g, dtype=torch.float64)
    tau = 5.0
    res = solve(lambda t, x: S @ x - x, x0, torch.tensor([0.0, 2 * tau], dtype=torch.float64),
                method="implicit_euler", options={"step_size": tau, "linear_solver": "cg", "symmetric": True},
                rtol=1e-10, atol=1e-12)
    M = (1 + tau) * torch.eye(20, dtype=torch.float64) - tau * S
    ref = torch.linalg.solve(M, torch.linalg.solve(M, x0))
    assert torch.allclose(res.ys[-1], ref, rtol=1e-8, atol=1e-10)
    assert res.stats.n_newton == 2


def _dense_implicit_euler(f, x, h, steps):
    """Reference: exact Newton with dense Jacobians; gradient via the IFT formula with a dense solve."""
    for _ in range(steps):
        xd = x.detach()
        y = xd.clone()
        G = lambda z: (z - xd - h * f(z)).reshape(-1)  # noqa: E731
        for _ in range(50):
            J = torch.autograd.functional.jacobian(G, y).reshape(y.numel(), -1)
            y = y - torch.linalg.solve(J, G(y)).reshape(y.shape)
        J = torch.autograd.functional.jacobian(G, y).reshape(y.numel(), -1)
        r = x + h * f(y.detach())
        x = y.detach() + torch.linalg.solve(J.detach(), (r - r.detach()).reshape(-1)).reshape(y.shape)
    return x


@pytest.mark.parametrize("linear", [True, False])
def test_backward_equals_dense_formula(linear):
    g = torch.Generator().manual_seed(2)
    n = 12
    P = (torch.randn(n, n, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    f = (lambda x: P @ x - x) if linear else (lambda x: torch.tanh(P @ x) - x)
    h, steps = 0.7, 3
    ys = odeint(lambda t, x: f(x), x0, torch.tensor([0.0, h * steps], dtype=torch.float64),
                method="implicit_euler", options={"step_size": h}, rtol=1e-11, atol=1e-13)
    ref = _dense_implicit_euler(f, x0, h, steps)
    assert torch.allclose(ys[-1], ref, rtol=1e-8, atol=1e-10)
    w = torch.randn(n, 2, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((ys[-1] * w).sum() + ys[-1].pow(2).sum(), (x0, P))
    gb = torch.autograd.grad((ref * w).sum() + ref.pow(2).sum(), (x0, P))
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), (a - b).abs().max()


def test_gradcheck_implicit_euler():
    g = torch.Generator().manual_seed(3)
    P = (torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.4).requires_grad_(True)
    x0 = torch.randn(4, generator=g, dtype=torch.float64).requires_grad_(True)

    def fn(x0, P):
        return odeint(lambda t, x: torch.tanh(P @ x) - x, x0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                      method="implicit_euler", options={"step_size": 0.5}, rtol=1e-12, atol=1e-14)

    assert torch.autograd.gradcheck(fn, (x0, P), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_finite_difference_jvp_option():
    A = _stochastic(15, 4)
    x0 = torch.randn(15, 2, dtype=torch.float64)
    f = lambda t, x: torch.tanh(A @ x) - x  # noqa: E731
    a = odeint(f, x0, T01, method="implicit_euler", options={"step_size": 0.5, "jvp": "forward"}, rtol=1e-10,
               atol=1e-12)
    b = odeint(f, x0, T01, method="implicit_euler", options={"step_size": 0.5, "jvp": "fd"}, rtol=1e-10, atol=1e-12)
    assert torch.allclose(a, b, rtol=1e-7, atol=1e-9)


def test_grand_semi_implicit_operator():
    """(I - τ Ā(x_k)) x_{k+1} = x_k with attention Ā(x) = softmax(x Wq (x Wk)ᵀ) - I frozen per step."""
    g = torch.Generator().manual_seed(5)
    n, d = 10, 3
    Wq = (torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)

    def abar(x):
        return torch.softmax((x @ Wq) @ x.T, dim=1) - torch.eye(n, dtype=torch.float64)

    def operator(t, xk):
        Ak = abar(xk)
        return lambda v: Ak @ v

    tau = 2.0
    f = lambda t, x: abar(x) @ x  # noqa: E731  (the full nonlinear field; unused by the operator form)
    res = solve(f, x0, torch.tensor([0.0, 3 * tau], dtype=torch.float64), method="implicit_euler",
                options={"step_size": tau, "operator": operator}, rtol=1e-11, atol=1e-13)
    x = x0
    for _ in range(3):
        x = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - tau * abar(x), x)
    assert torch.allclose(res.ys[-1], x, rtol=1e-8, atol=1e-10)
    assert res.stats.n_newton == 3          # one linear solve per step
    ga = torch.autograd.grad(res.ys[-1].pow(2).sum(), (x0, Wq))
    gb = torch.autograd.grad(x.pow(2).sum(), (x0, Wq))
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_crank_nicolson_second_order_and_stable():
    A = _stochastic(20, 6)
    x0 = torch.randn(20, 2, dtype=torch.float64)
    res = solve(lambda t, x: A @ x - x, x0, torch.tensor([0.0, 50.0], dtype=torch.float64),
                method="crank_nicolson", options={"step_size": 5.0})
    assert torch.isfinite(res.ys).all() and float(res.ys[-1].abs().max()) <= float(x0.abs().max()) + 1e-6
    assert res.stats.n_newton == 10


def test_newton_failure_warns():
    f = lambda t, x: -x ** 3 * 50  # noqa: E731
    x0 = torch.full((3,), 5.0, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="Newton iteration did not converge"):
        r = solve(f, x0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="implicit_euler",
                  options={"step_size": 1.0, "max_newton_iters": 1})
    assert r.stats.newton_failures == 1
