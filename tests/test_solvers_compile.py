"""torch.compile: a compiled fixed-step solve equals the eager one; graphode ops compile without graph breaks.

Compilation takes minutes on a loaded 2-core machine, so these are ``slow``
(run with ``make test-all`` or ``-m slow``); the speed-up is in
``bench/test_bench_compile.py``.
"""
import pytest
import torch

import graphode
from graphode import ops
from graphode.solvers import odeint, solve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(8, 8, generator=g) * 0.4)

    def forward(self, t, y):
        return torch.tanh(y @ self.W) * torch.cos(t) - 0.1 * y


def test_compiled_fixed_step_solve_equals_eager():
    f = Field()
    y0 = torch.randn(4, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.tensor([0.0, 0.35, 1.0])
    eager = solve(f, y0, t, method="rk4", options={"step_size": 0.05})
    comp = solve(f, y0, t, method="rk4", options={"step_size": 0.05, "compile": True})
    assert comp.stats.nfe == eager.stats.nfe
    assert torch.allclose(comp.ys, eager.ys, rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad(eager.ys[-1].sum(), (y0, f.W))
    gb = torch.autograd.grad(comp.ys[-1].sum(), (y0, f.W))
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # a second solve (other grid) reuses the compiled step: no recompilation
    import torch._dynamo.utils as du
    before = du.counters["stats"]["unique_graphs"]
    odeint(f, y0, torch.tensor([0.0, 2.0]), method="rk4", options={"step_size": 0.1, "compile": True})
    assert du.counters["stats"]["unique_graphs"] == before


def test_graphode_ops_compile_without_graph_breaks():
    g = graphode.power_law_graph(60, 300, seed=0)
    w = g.row_normalize()
    W = torch.randn(8, 8, generator=torch.Generator().manual_seed(2)) * 0.3
    Wq = torch.randn(8, 8, generator=torch.Generator().manual_seed(3)) * 0.3

    def field(t, x):
        a = ops.spmm(g, w, x)
        b = ops.attention_diffusion(g, (x @ Wq)[:, None], x[:, None], x)
        return torch.tanh(a @ W) + b - x

    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(4))
    # one eager call first: ops import their backend module on first use (importlib, which dynamo
    # does not trace); after that the dispatch is plain Python that dynamo traces through
    eager = field(torch.tensor(0.0), x)
    compiled = torch.compile(field, fullgraph=True)          # fails on any graph break
    assert torch.allclose(compiled(torch.tensor(0.0), x), eager, rtol=1e-5, atol=1e-6)
