"""Graph diffusion dx/dt = (A - I) x with A row-stochastic (GRAND, Chamberlain et al. 2021)."""
import pytest
import torch

from graphode.solvers import odeint, solve


pytestmark = pytest.mark.usefixtures("one_thread")


def random_graph(n=40, p=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    adj = (torch.rand(n, n, generator=g) < p).double()
    adj = ((adj + adj.T) > 0).double()
    adj.fill_diagonal_(0)
    adj[torch.arange(n), (torch.arange(n) + 1) % n] = 1.0  # no isolated nodes
    return adj / adj.sum(1, keepdim=True)


def bipartite_graph(n=20, seed=0):
    """Row-stochastic A of a connected bipartite graph: eigenvalue -1, so A - I has eigenvalue -2."""
    g = torch.Generator().manual_seed(seed)
    h = n // 2
    blk = (torch.rand(h, h, generator=g) < 0.4).double()
    blk[torch.arange(h), torch.arange(h)] = 1.0
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj[:h, h:] = blk
    adj[h:, :h] = blk.T
    return adj / adj.sum(1, keepdim=True)


def _x0(n, seed=1):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _diffusion(A):
    return lambda t, x: A @ x - x


@pytest.mark.parametrize("tau", [0.25, 0.5, 0.9])
def test_explicit_euler_stable_below_one(tau):
    A = bipartite_graph()
    x0 = _x0(A.shape[0])
    ys = odeint(_diffusion(A), x0, torch.tensor([0.0, 200 * tau], dtype=torch.float64), method="euler",
                options={"step_size": tau})
    lo, hi = x0.min(0).values, x0.max(0).values
    assert torch.all(ys[-1] >= lo - 1e-12) and torch.all(ys[-1] <= hi + 1e-12)
    assert float(ys[-1].abs().max()) <= float(x0.abs().max()) + 1e-12


def test_explicit_euler_diverges_for_large_tau():
    A = bipartite_graph()
    assert float(torch.linalg.eigvals(A - torch.eye(A.shape[0], dtype=torch.float64)).real.min()) == \
        pytest.approx(-2.0, abs=1e-9)
    x0 = _x0(A.shape[0])
    ys = odeint(_diffusion(A), x0, torch.tensor([0.0, 60.0], dtype=torch.float64), method="euler",
                options={"step_size": 3.0})
    assert float(ys[-1].abs().max()) > 1e6 * float(x0.abs().max())


@pytest.mark.parametrize("tau", [10.0, 100.0])
@pytest.mark.parametrize("graph", ["random", "bipartite"])
def test_implicit_euler_stable_and_maximum_principle(tau, graph):
    A = random_graph() if graph == "random" else bipartite_graph()
    x0 = _x0(A.shape[0])
    res = solve(_diffusion(A), x0, torch.tensor([0.0, 5 * tau], dtype=torch.float64), method="implicit_euler",
                options={"step_size": tau}, rtol=1e-9, atol=1e-10)
    ys = res.ys
    lo, hi = x0.min(0).values, x0.max(0).values
    slack = 1e-7
    assert torch.all(ys[-1] >= lo - slack) and torch.all(ys[-1] <= hi + slack)
    # converges to consensus for a connected non-bipartite graph
    if graph == "random":
        spread = ys[-1].max(0).values - ys[-1].min(0).values
        assert float(spread.max()) < 1e-2 * float((hi - lo).max())
    # linear field: exactly one Newton iteration per step
    assert res.stats.n_newton == res.stats.n_accepted == 5
    assert res.stats.newton_failures == 0


def test_maximum_principle_adaptive():
    A = random_graph(seed=3)
    x0 = _x0(A.shape[0], seed=4)
    t = torch.linspace(0, 10, 21, dtype=torch.float64)
    ys = odeint(_diffusion(A), x0, t, method="dopri5", rtol=1e-8, atol=1e-10)
    lo, hi = x0.min(0).values, x0.max(0).values
    assert torch.all(ys >= lo - 1e-7) and torch.all(ys <= hi + 1e-7)
    # mass-like quantity: the spread is non-increasing in time
    spread = (ys.max(1).values - ys.min(1).values).max(-1).values
    assert torch.all(spread[1:] <= spread[:-1] + 1e-7)


def test_implicit_matches_dense_solve():
    A = random_graph(n=25, seed=5)
    x0 = _x0(25)
    tau = 10.0
    ys = odeint(_diffusion(A), x0, torch.tensor([0.0, 3 * tau], dtype=torch.float64), method="implicit_euler",
                options={"step_size": tau}, rtol=1e-10, atol=1e-12)
    M = (1 + tau) * torch.eye(25, dtype=torch.float64) - tau * A
    x = x0
    for _ in range(3):
        x = torch.linalg.solve(M, x)
    assert torch.allclose(ys[-1], x, rtol=1e-8, atol=1e-10)
