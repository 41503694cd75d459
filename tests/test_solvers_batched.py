"""Per-sample batched solving (options={"batched": True}): each sample as if solved alone."""
import pytest
import torch

from graphode.solvers import solve

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
MU = torch.tensor([0.5, 1.0, 3.0, 8.0, 20.0], dtype=F64)      # mixed stiffness across the batch


def vdp_batched(t, y):
    return torch.stack([y[:, 1], MU * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1) * (1 + 0.1 * torch.cos(t))[:, None]


def vdp_one(i):
    def f(t, y):
        return torch.stack([y[1], MU[i] * (1 - y[0] ** 2) * y[1] - y[0]]) * (1 + 0.1 * torch.cos(t))
    return f


def _y0():
    return torch.stack([torch.linspace(1.0, 2.0, 5, dtype=F64), torch.zeros(5, dtype=F64)], 1)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("per_sample_t", [True, False])
def test_equals_each_sample_alone(method, per_sample_t):
    y0 = _y0()
    if per_sample_t:
        t = torch.stack([torch.linspace(0.0, 2.0 + i, 4 + i % 2, dtype=F64)[:4] for i in range(5)])
    else:
        t = torch.linspace(0.0, 3.0, 6, dtype=F64)
    r = solve(vdp_batched, y0, t, method=method, rtol=1e-7, atol=1e-9, options={"batched": True})
    assert r.ys.shape == (t.shape[-1], 5, 2)
    for i in range(5):
        ti = t[i] if per_sample_t else t
        ri = solve(vdp_one(i), y0[i], ti, method=method, rtol=1e-7, atol=1e-9)
        assert r.stats.per_sample["n_accepted"][i] == ri.stats.n_accepted
        assert r.stats.per_sample["n_rejected"][i] == ri.stats.n_rejected
        assert torch.allclose(r.ys[:, i], ri.ys, rtol=1e-10, atol=1e-12), (i, (r.ys[:, i] - ri.ys).abs().max())
    # each sample chose its own steps
    assert len(set(r.stats.per_sample["n_accepted"])) > 1


def test_reverse_time_and_controller_options():
    y0 = _y0()
    t = torch.linspace(2.0, 0.0, 5, dtype=F64)
    opts = dict(pcoeff=0.3, icoeff=0.4, max_step=0.2)
    r = solve(vdp_batched, y0, t, rtol=1e-6, atol=1e-8, options={"batched": True, **opts})
    for i in (0, 4):
        ri = solve(vdp_one(i), y0[i], t, rtol=1e-6, atol=1e-8, options=opts)
        assert r.stats.per_sample["n_accepted"][i] == ri.stats.n_accepted
        assert torch.allclose(r.ys[:, i], ri.ys, rtol=1e-10, atol=1e-12)


def test_gradients_equal_per_sample():
    W = torch.tensor([[0.0, 1.0], [-1.0, -0.3]], dtype=F64, requires_grad=True)
    y0 = _y0().requires_grad_(True)
    t = torch.stack([torch.linspace(0.0, 1.0 + 0.5 * i, 3, dtype=F64) for i in range(5)])
    r = solve(lambda t, y: torch.tanh(y @ W.T), y0, t, rtol=1e-8, atol=1e-10, options={"batched": True})
    ga = torch.autograd.grad(r.ys[-1].square().sum(), (y0, W))
    gy = torch.zeros_like(y0)
    gW = torch.zeros_like(W)
    for i in range(5):
        yi = y0[i].detach().requires_grad_(True)
        ri = solve(lambda t, y: torch.tanh(W @ y), yi, t[i], rtol=1e-8, atol=1e-10)
        g = torch.autograd.grad(ri.ys[-1].square().sum(), (yi, W))
        gy[i] = g[0]
        gW += g[1]
    assert torch.allclose(ga[0], gy, rtol=1e-8, atol=1e-10)
    assert torch.allclose(ga[1], gW, rtol=1e-8, atol=1e-10)


def test_batched_errors():
    y0 = _y0()
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    with pytest.raises(ValueError, match="explicit adaptive"):
        solve(vdp_batched, y0, t, method="rk4", options={"batched": True})
    with pytest.raises(ValueError, match=r"shape \[T\] or \[B, T\]"):
        solve(vdp_batched, y0, t.repeat(3, 1), options={"batched": True})
    with pytest.raises(ValueError, match="strictly increasing"):
        solve(vdp_batched, y0, torch.tensor([0.0, 1.0, 0.5], dtype=F64), options={"batched": True})
