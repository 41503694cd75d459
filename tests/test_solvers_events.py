"""Event handling against analytic event times."""
import math

import pytest
import torch

from graphode.solvers import odeint, odeint_event


def test_odeint_event_fn_adaptive():
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    et, sol = odeint(lambda t, y: -y, y0, t, event_fn=lambda t, y: y[0] - 0.25, rtol=1e-10, atol=1e-12)
    assert float(et) == pytest.approx(math.log(4.0), abs=1e-8)
    assert sol.shape == (2, 2)
    assert torch.allclose(sol[1], y0 * 0.25, rtol=1e-7)


def test_projectile_hits_ground():
    # h'' = -g, h(0) = 0, v(0) = 10: lands at 2 v0 / g; event at t0 itself is skipped by sign logic
    g = 9.81

    def f(t, y):
        h, v = y
        return v, torch.full_like(v, -g)

    y0 = (torch.tensor(1e-9, dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64))
    et, (hs, vs) = odeint_event(f, y0, torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, y: y[0],
                                rtol=1e-10, atol=1e-12)
    assert float(et) == pytest.approx(20.0 / g, rel=1e-6)
    assert float(vs[-1]) == pytest.approx(-10.0, rel=1e-6)


def test_fixed_step_event_and_reverse_time():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    et, sol = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk4",
                     options={"step_size": 0.01, "interp": "cubic"}, event_fn=lambda t, y: y[0] - 0.5,
                     atol=1e-10)
    assert float(et) == pytest.approx(math.log(2.0), abs=1e-7)
    # backwards in time: y' = -y from y(0)=1 backwards grows; hits 2 at t = -ln 2
    et, sol = odeint_event(lambda t, y: -y, y0, torch.tensor(0.0, dtype=torch.float64),
                           event_fn=lambda t, y: y[0] - 2.0, reverse_time=True, rtol=1e-10, atol=1e-12)
    assert float(et) == pytest.approx(-math.log(2.0), abs=1e-8)


def test_multiple_event_functions_first_wins():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    ev = lambda t, y: torch.stack([y[0] - 0.5, y[0] - 0.8])  # noqa: E731
    et, _ = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 5.0], dtype=torch.float64), event_fn=ev,
                   rtol=1e-10, atol=1e-12)
    assert float(et) == pytest.approx(math.log(1 / 0.8), abs=1e-8)


def test_event_time_gradient():
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    et, sol = odeint_event(lambda t, y: -k * y, y0, torch.tensor(0.0, dtype=torch.float64),
                           event_fn=lambda t, y: y[0] - 1.0, rtol=1e-10, atol=1e-12)
    # t* = ln(y0) / k
    gk, gy = torch.autograd.grad(et, (k, y0))
    assert float(gk) == pytest.approx(-math.log(3.0) / 0.7 ** 2, rel=1e-5)
    assert float(gy) == pytest.approx(1.0 / (3.0 * 0.7), rel=1e-5)
