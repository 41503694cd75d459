"""The step-size controller as a component: defaults, PI formula, passing one in, norms."""
import math

import pytest
import torch

from graphode.solvers import PIController, RMSNorm, odeint, rms_norm, solve

pytestmark = pytest.mark.usefixtures("one_thread")


def _field(t, y):
    return torch.stack([y[1], -y[0] * (1 + 0.5 * torch.sin(t))]) - 0.1 * y


Y0 = torch.tensor([1.0, 0.3], dtype=torch.float64)
T = torch.linspace(0.0, 6.0, 5, dtype=torch.float64)


def test_controller_defaults_are_torchdiffeqs():
    c = PIController(order=5)
    assert (c.safety, c.ifactor, c.dfactor) == (0.9, 10.0, 0.2)
    assert c.propose(1.0, 0.0, True) == 10.0             # zero error: grow by ifactor
    assert c.propose(1.0, 1e-12, True) == 10.0           # capped
    assert c.propose(1.0, 0.99, True) == 1.0             # accepted steps never shrink
    assert c.propose(1.0, 0.5, True) == pytest.approx(0.9 * 0.5 ** (-1 / 5))
    assert c.propose(1.0, 1e6, False) == pytest.approx(0.2)  # capped by dfactor
    r = 2.0
    assert c.propose(1.0, r, False) == pytest.approx(0.9 * r ** (-1 / 5))
    assert c.propose(1.0, float("nan"), False) == pytest.approx(0.2)


def test_pi_controller_uses_previous_ratio():
    c = PIController(order=4, pcoeff=0.4, icoeff=0.3)
    c.propose(1.0, 0.5, True)
    got = c.propose(1.0, 0.25, True)
    assert got == pytest.approx(0.9 * 0.25 ** (-0.7 / 4) * 0.5 ** (0.4 / 4))


def test_decide_accepts_at_min_step_and_rejects_above_max_step():
    c = PIController(order=2, min_step=0.1, max_step=1.0)
    assert c.decide(0.1, 50.0)[0] is True           # at the minimum size: accepted whatever the error
    assert c.decide(2.0, 0.5)[0] is False           # larger than max_step: rejected
    acc, nxt = c.decide(0.5, 2.0)
    assert not acc and 0.1 <= nxt < 0.5


def test_passed_controller_equals_loose_options():
    opts = dict(safety=0.8, ifactor=5.0, dfactor=0.3, pcoeff=0.3, icoeff=0.4, max_step=0.7)
    a = solve(_field, Y0, T, rtol=1e-6, atol=1e-8, options=dict(opts))
    ctrl = PIController(**opts)
    b = solve(_field, Y0, T, rtol=1e-6, atol=1e-8, options={"controller": ctrl})
    assert a.stats.step_sizes == b.stats.step_sizes and a.stats.nfe == b.stats.nfe
    assert torch.equal(a.ys, b.ys)
    assert max(b.stats.step_sizes) <= 0.7
    # the object is not changed by a solve: the same controller serves again, identically
    c = solve(_field, Y0, T, rtol=1e-6, atol=1e-8, options={"controller": ctrl})
    assert c.stats.step_sizes == b.stats.step_sizes
    assert ctrl.rtol is None and ctrl.norm is None


def test_controller_tolerances_take_precedence():
    loose = solve(_field, Y0, T, rtol=1e-4, atol=1e-6)
    tight = solve(_field, Y0, T, rtol=1e-4, atol=1e-6, options={"controller": PIController(rtol=1e-9, atol=1e-11)})
    ref = solve(_field, Y0, T, rtol=1e-9, atol=1e-11)
    assert tight.stats.step_sizes == ref.stats.step_sizes
    assert tight.stats.nfe > 2 * loose.stats.nfe


def test_controller_step_and_jump_times():
    f = lambda t, y: torch.where(t < 1.0, y, -y)  # noqa: E731
    y0 = torch.ones(3, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    jt = torch.tensor([1.0], dtype=torch.float64)
    a = solve(f, y0, t, options={"jump_t": jt})
    b = solve(f, y0, t, options={"controller": PIController(jump_t=jt)})
    assert a.stats.step_sizes == b.stats.step_sizes
    # a step ends exactly on t = 1
    ends = torch.tensor(b.stats.step_sizes, dtype=torch.float64).cumsum(0)
    assert float((ends - 1.0).abs().min()) < 1e-15
    assert float(b.ys[-1][0]) == pytest.approx(math.e * math.exp(-1.0), rel=1e-6)


def test_conflicting_controller_options_named():
    with pytest.raises(ValueError, match=r"\['safety'\] configure the step-size controller"):
        odeint(_field, Y0, T, options={"controller": PIController(), "safety": 0.5})
    with pytest.raises(ValueError, match="norm.*both given"):
        odeint(_field, Y0, T, options={"controller": PIController(norm=rms_norm), "norm": rms_norm})
    with pytest.raises(TypeError, match="must be a PIController"):
        odeint(_field, Y0, T, options={"controller": object()})


def test_controller_norm_is_used():
    calls = []

    def maxnorm(x):
        calls.append(x.numel())
        return x.abs().max()

    a = solve(_field, Y0, T, options={"norm": maxnorm})
    n = len(calls)
    b = solve(_field, Y0, T, options={"controller": PIController(norm=maxnorm)})
    assert len(calls) == 2 * n > 0
    assert a.stats.step_sizes == b.stats.step_sizes


def test_rms_norm_all_reduce_hook():
    """A reducing norm (as across ranks): each rank holds half the state and sums [Σx², n]."""
    x = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    other = x[5:]                                 # the "other rank"'s half
    seen = []

    def all_reduce(pair):
        seen.append(pair.clone())
        pair += torch.stack([other.square().sum(), torch.tensor(float(other.numel()), dtype=torch.float64)])

    got = RMSNorm(all_reduce=all_reduce)(x[:5])
    assert float(got) == pytest.approx(float(rms_norm(x)), rel=1e-14)
    assert seen[0].tolist() == pytest.approx([float(x[:5].square().sum()), 5.0])
    # and a solve uses it for every accept/reject decision
    calls = []
    ident = RMSNorm(all_reduce=lambda p: calls.append(1))
    a = solve(_field, Y0, T, options={"norm": ident})
    b = solve(_field, Y0, T)
    assert len(a.stats.step_sizes) == len(b.stats.step_sizes) and a.stats.n_rejected == b.stats.n_rejected
    assert a.stats.step_sizes == pytest.approx(b.stats.step_sizes, rel=1e-6)   # only rounding differs
    assert len(calls) == a.stats.n_steps + 3     # every step, and three times in the initial step selection


def test_adjoint_with_controller():
    from graphode.solvers import odeint_adjoint
    W = torch.tensor([[0.0, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    f = lambda t, y: W @ y  # noqa: E731
    y0 = Y0.clone().requires_grad_(True)
    kw = dict(rtol=1e-9, atol=1e-11, adjoint_params=(W,))
    g1 = torch.autograd.grad(odeint_adjoint(f, y0, T, **kw)[-1].sum(), (y0, W))
    ctrl = PIController(pcoeff=0.3, icoeff=0.4)
    g2 = torch.autograd.grad(odeint_adjoint(f, y0, T, options={"controller": ctrl},
                                            adjoint_options={"controller": ctrl}, **kw)[-1].sum(), (y0, W))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)
