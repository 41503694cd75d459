"""odeint_adjoint: gradients equal backprop; gradcheck; seminorm; time and event gradients."""
import pytest
import torch

from graphode.solvers import odeint, odeint_adjoint

pytestmark = pytest.mark.usefixtures("one_thread")



class MLPField(torch.nn.Module):
    def __init__(self, dim=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W1 = torch.nn.Parameter(torch.randn(dim, 8, generator=g, dtype=torch.float64) * 0.5)
        self.W2 = torch.nn.Parameter(torch.randn(8, dim, generator=g, dtype=torch.float64) * 0.5)
        self.b = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64) * 0.1)

    def forward(self, t, y):
        return torch.tanh(y @ self.W1) @ self.W2 + self.b * torch.sin(t)


def _grads(fn, f, y0, t, **kw):
    y0 = y0.detach().clone().requires_grad_(True)
    t = t.detach().clone().requires_grad_(True)
    ys = fn(f, y0, t, **kw)
    loss = (ys ** 2).sum() + ys[-1].sum()
    return torch.autograd.grad(loss, (y0, t, *f.parameters()))


@pytest.mark.parametrize("method,kw", [
    ("dopri5", {}),
    ("bosh3", {"rtol": 1e-8, "atol": 1e-8}),
    ("rk4", {"options": {"step_size": 0.01}}),
])
def test_adjoint_equals_backprop(method, kw):
    f = MLPField()
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.linspace(0.0, 1.5, 4, dtype=torch.float64)
    tol = dict(rtol=kw.pop("rtol", 1e-10), atol=kw.pop("atol", 1e-10))
    ga = _grads(odeint_adjoint, f, y0, t, method=method, **tol, **kw)
    gb = _grads(odeint, f, y0, t, method=method, **tol, **kw)
    close = 1e-5 if tol["rtol"] <= 1e-10 else 1e-3  # both are accurate to the solver tolerance
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=close, atol=close * 1e-2), (a - b).abs().max()


def test_adjoint_decreasing_time_and_tuple_state():
    f = MLPField()

    class TupleField(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = f

        def forward(self, t, y):
            a, b = y
            return self.f(t, a), -b * a.sum()

    y0a = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y0b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    g = TupleField()
    out = []
    for fn in (odeint_adjoint, odeint):
        ys = fn(g, (y0a, y0b), t, rtol=1e-10, atol=1e-10)
        loss = ys[0].pow(2).sum() + ys[1].sum()
        out.append(torch.autograd.grad(loss, (y0a, y0b, *f.parameters())))
    for a, b in zip(*out):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_adjoint_gradcheck_float64():
    f = MLPField(dim=2)
    params = tuple(f.parameters())
    t = torch.tensor([0.0, 0.4, 0.8], dtype=torch.float64)

    def fn(y0, W1, W2, b):
        class F(torch.nn.Module):
            def forward(self, t, y):
                return torch.tanh(y @ W1) @ W2 + b * torch.sin(t)

        return odeint_adjoint(F(), y0, t, rtol=1e-12, atol=1e-12, adjoint_params=(W1, W2, b))

    y0 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    inputs = (y0,) + tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_adjoint_seminorm_saves_steps_and_agrees():
    f = MLPField()
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)

    class Counter(MLPField):
        n = 0

        def forward(self, t, y):
            Counter.n += 1
            return super().forward(t, y)

    res = []
    for opts in (None, {"norm": "seminorm"}):
        c = Counter()
        c.load_state_dict(f.state_dict())
        y = y0.clone().requires_grad_(True)
        ys = odeint_adjoint(c, y, t, rtol=1e-6, atol=1e-8, adjoint_options=opts)
        Counter.n = 0
        g = torch.autograd.grad(ys.pow(2).sum(), (y, *c.parameters()))
        res.append((Counter.n, g))
    assert res[1][0] <= res[0][0]
    for a, b in zip(res[0][1], res[1][1]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_adjoint_requires_params():
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_adjoint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))
    # explicit empty params are fine
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    ys = odeint_adjoint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), adjoint_params=())
    (g,) = torch.autograd.grad(ys[-1].sum(), y0)
    assert torch.allclose(g, torch.exp(torch.tensor(-1.0, dtype=torch.float64)).expand(2), rtol=1e-6)


def test_adjoint_memory_is_flat_in_steps():
    """Forward pass keeps no graph: saved tensors do not grow with the number of steps."""
    f = MLPField()
    y0 = torch.randn(64, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sizes = []
    for n in (10, 100):
        saved = []

        def pack(x):
            saved.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            ys = odeint_adjoint(f, y0, t, method="rk4", options={"step_size": 1.0 / n})
        sizes.append(sum(saved))
        ys.sum().backward()
    assert sizes[0] == sizes[1]


def test_adjoint_with_event():
    from graphode.solvers import odeint_event

    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

        def forward(self, t, y):
            return -self.k * y

    f = Decay()
    y0 = torch.tensor([2.0], dtype=torch.float64)
    t0 = torch.tensor(0.0, dtype=torch.float64)
    # y(t) = 2 exp(-k t) hits 0.5 at t* = ln 4 / k; dt*/dk = -ln 4 / k^2
    et, sol = odeint_event(f, y0, t0, event_fn=lambda t, y: y[0] - 0.5, odeint_interface=odeint_adjoint,
                           rtol=1e-10, atol=1e-12)
    import math
    assert float(et.detach()) == pytest.approx(math.log(4) / 1.3, rel=1e-6)
    (gk,) = torch.autograd.grad(et, f.k)
    assert float(gk) == pytest.approx(-math.log(4) / 1.3 ** 2, rel=1e-4)
