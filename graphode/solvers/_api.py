"""Public entry points: :func:`solve`, :func:`odeint`, :func:`odeint_event`."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch

from ._dynamics import Dynamics, SolverStats, flat_to_shape, real_dtype
from ._problem import Problem, handle_unused, prepare
from ._batched import BATCHED_OPTIONS, solve_batched
from ._event import EventGradient
from ._registry import METHODS

__all__ = ["solve", "odeint", "odeint_event", "SolveResult"]

TensorOrTuple = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


@dataclass
class SolveResult:
    """Solution of an initial value problem together with solver statistics.

    Attributes:
        ys: states at the output times, shape ``[len(t), *y0.shape]`` (a
            tuple of such for a tuple ``y0``); with an event function,
            ``[2, *y0.shape]``: the initial state and the state at the event.
        t: the output times as given.
        stats: :class:`SolverStats` (``nfe``, ``n_accepted``, ``n_rejected``,
            ``step_sizes``, Newton/Krylov counts).
        event_t: event time (tensor like ``t``) when ``event_fn`` was given.
        method: the method name used.
    """

    ys: TensorOrTuple
    t: torch.Tensor
    stats: SolverStats
    event_t: Optional[torch.Tensor] = None
    method: str = "dopri5"

    @property
    def nfe(self) -> int:
        return self.stats.nfe

    @property
    def step_sizes(self) -> torch.Tensor:
        """Accepted step sizes as a float64 tensor."""
        return torch.tensor(self.stats.step_sizes, dtype=torch.float64)


# ----------------------------------------------------------------- time grads
class _StartTimeGrad(torch.autograd.Function):
    """Identity on ``y0``; sends ``-<dL/dy0, f(t0, y0)>`` to ``t[0]`` (flow shift identity)."""

    @staticmethod
    def forward(ctx, y0, t, fn):
        ctx.fn = fn
        ctx.save_for_backward(y0, t)
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx, g):
        y0, t = ctx.saved_tensors
        with torch.no_grad():
            f0 = ctx.fn(t[0].to(real_dtype(y0)), y0)
            gt = torch.zeros_like(t)
            gt[0] = -torch.sum(g * f0).to(t.dtype)
        return g, gt, None


class _OutputTimeGrad(torch.autograd.Function):
    """Identity on the solution; sends ``<dL/dy_i, f(t_i, y_i)>`` to ``t[i]``."""

    @staticmethod
    def forward(ctx, ys, t, fn):
        ctx.fn = fn
        ctx.save_for_backward(ys, t)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, g):
        ys, t = ctx.saved_tensors
        with torch.no_grad():
            gt = torch.empty_like(t)
            dt = real_dtype(ys)
            for i in range(t.shape[0]):
                gt[i] = torch.sum(g[i] * ctx.fn(t[i].to(dt), ys[i])).to(t.dtype)
        return g, gt, None


# ------------------------------------------------------------------- running
def _build(p: Problem, stats: SolverStats):
    spec = METHODS[p.method]
    opts = dict(p.options)
    used = {k: v for k, v in opts.items() if k in spec.options}
    unused = {k: v for k, v in opts.items() if k not in spec.options and k != "norm"}
    handle_unused(p.method, unused)
    bad_cb = set(p.callbacks) - set(spec.callbacks)
    if bad_cb:
        warnings.warn(f"Solver '{p.method}' does not support callbacks {bad_cb}")
    dyn = Dynamics(p.fn, p.sign, real_dtype(p.y0), p.y0.device, stats,
                   {k: v for k, v in p.callbacks.items() if k in spec.callbacks},
                   None if p.shapes is None else p.to_user_state)
    return spec.factory(p, dyn, **used), dyn


def _event_tol(atol) -> float:
    if isinstance(atol, float):
        return atol
    return float(atol.min())


def run_problem(p: Problem):
    """Integrate a prepared problem; returns ``(ys_flat_stacked, event_t or None, stats)``."""
    stats = SolverStats()
    solver, dyn = _build(p, stats)
    if p.event_fn is None:
        ys = torch.stack(solver.integrate(), dim=0)
        return ys, None, stats
    tau_e, y_e = solver.integrate_until_event(p.event_fn, _event_tol(p.atol))
    ys = torch.stack([p.y0, y_e], dim=0)
    event_t = torch.as_tensor(p.sign * tau_e, dtype=torch.float64).to(p.t)
    return ys, event_t, stats


def _finish(p: Problem, ys):
    if p.shapes is not None:
        return flat_to_shape(ys, (ys.shape[0],), p.shapes)
    return ys


def solve(func: Callable, y0: TensorOrTuple, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: Optional[str] = None,
          options: Optional[dict] = None, event_fn: Optional[Callable] = None) -> SolveResult:
    """Solve ``dy/dt = func(t, y), y(t[0]) = y0`` and return the solution with statistics.

    Arguments and semantics are those of :func:`odeint`; the result is a
    :class:`SolveResult` (``.ys``, ``.stats.nfe``, ``.stats.n_accepted``,
    ``.stats.n_rejected``, ``.stats.step_sizes``, ``.event_t``).
    """
    if options is not None and options.get("batched"):
        return _solve_batched(func, y0, t, rtol, atol, method, options, event_fn)
    p = prepare(func, y0, t, rtol, atol, method, options, event_fn, METHODS)
    t_grad = torch.is_grad_enabled() and p.t.requires_grad
    if t_grad:
        p.y0 = _StartTimeGrad.apply(p.y0, p.t, p.fn)
    ys, event_t, stats = run_problem(p)
    if t_grad and event_fn is None:
        ys = _OutputTimeGrad.apply(ys, p.t, p.fn)
    return SolveResult(ys=_finish(p, ys), t=t, stats=stats, event_t=event_t, method=p.method)


def _solve_batched(func, y0, t, rtol, atol, method, options, event_fn) -> SolveResult:
    """``options={"batched": True}``: every sample of ``y0[B, ...]`` solved on its own (see :mod:`._batched`)."""
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise ValueError(f'Invalid method "{method}". Must be one of ' + "{" + ", ".join(f'"{m}"' for m in METHODS)
                         + "}.")
    tab = METHODS[method].tableau
    if tab is None or tab.implicit or not tab.adaptive:
        raise ValueError(f"options['batched'] needs an explicit adaptive Runge-Kutta method (e.g. dopri5, tsit5, "
                         f"bosh3), not {method!r}")
    if event_fn is not None:
        raise ValueError("options['batched'] does not support event_fn")
    if not isinstance(y0, torch.Tensor) or y0.dim() < 1:
        raise TypeError("options['batched'] needs y0 as one tensor of shape [B, ...]")
    if not torch.is_floating_point(y0):
        raise TypeError(f"`y0` must be a floating point Tensor but has dtype {y0.dtype}")
    if not isinstance(t, torch.Tensor) or not torch.is_floating_point(t):
        raise TypeError("`t` must be a floating point Tensor")
    B = y0.shape[0]
    if t.dim() == 1:
        t2 = t.unsqueeze(0).expand(B, -1)
    elif t.dim() == 2 and t.shape[0] == B:
        t2 = t
    else:
        raise ValueError(f"with options['batched'], `t` must have shape [T] or [B, T] = [{B}, T], got {tuple(t.shape)}")
    if t2.shape[1] > 1:
        d = t2[:, 1:] - t2[:, :-1]
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError("each row of `t` must be strictly increasing (or all strictly decreasing)")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("`y0` contains non-finite values (NaN or Inf)")
    opts = {k: v for k, v in options.items() if k not in ("batched", "norm", "dtype")}
    unused = {k: v for k, v in opts.items() if k not in BATCHED_OPTIONS}
    handle_unused(method, unused)
    opts = {k: v for k, v in opts.items() if k in BATCHED_OPTIONS}
    stats = SolverStats()
    ys = solve_batched(func, y0, t2, tab, _batched_tol(rtol, y0), _batched_tol(atol, y0), stats=stats, **opts)
    return SolveResult(ys=ys, t=t, stats=stats, method=method)


def _batched_tol(tol, y0):
    if isinstance(tol, torch.Tensor):
        return float(tol) if tol.numel() == 1 else tol.to(y0)
    return float(tol)


def odeint(func: Callable, y0: TensorOrTuple, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: Optional[str] = None,
           options: Optional[dict] = None, event_fn: Optional[Callable] = None):
    """Integrate ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` (drop-in for ``torchdiffeq.odeint``).

    Args:
        func: ``func(t, y) -> dy/dt``; ``t`` is a 0-dim tensor of ``y``'s
            dtype, ``y`` has ``y0``'s shape (or is a tuple like ``y0``).
            Optional attributes ``callback_step``, ``callback_accept_step``,
            ``callback_reject_step`` are called as ``cb(t0, y0, dt)``.
        y0: initial state, a floating tensor of shape ``S`` or a tuple of them.
        t: 1-D floating tensor of output times, strictly increasing or
            strictly decreasing; ``t[0]`` is the initial time.
        rtol, atol: relative/absolute tolerances (floats, tensors, or one per
            tuple component).  Adaptive methods keep the RMS of
            ``err / (atol + rtol·max(|y0|,|y1|))`` below one per step.
        method: one of :data:`METHODS` (default ``"dopri5"``).
        options: method options (torchdiffeq's names: ``step_size``,
            ``grid_constructor``, ``perturb``, ``first_step``,
            ``max_num_steps``, ``norm``, ``jump_t``, ``step_t``, ``safety``,
            ``ifactor``, ``dfactor``, ``max_order``, ``max_iters``, …).
            Options the method does not use are ignored with a warning.
            graphode's own: ``controller`` (a :class:`PIController`),
            ``adaptive`` (implicit methods with an embedded estimate), and
            ``batched=True``: ``y0[B, ...]`` with ``t[T]`` or ``t[B, T]``,
            each sample solved on its own (own steps, accept/reject and
            finish; ``func`` gets ``t`` of shape ``[B]``); see
            :mod:`graphode.solvers._batched`.
        event_fn: ``event_fn(t, y) -> tensor``; if given, ``len(t) == 2`` and
            integration stops where it changes sign.

    Returns:
        Tensor of shape ``[len(t), *S]`` (tuple for tuple ``y0``), or
        ``(event_t, solution)`` with ``solution`` of shape ``[2, *S]``.

    Raises:
        ValueError: unknown method, non-monotone ``t``, NaN/Inf in ``y0``.
        TypeError: non-floating ``y0`` or ``t``.
        StepSizeUnderflowError, MaxNumStepsError: adaptive step failures.
    """
    res = solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn)
    if event_fn is None:
        return res.ys
    return res.event_t, res.ys


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=odeint, **kwargs):
    """Integrate until ``event_fn(t, y) = 0``; the event time is differentiable.

    ``t0`` is a scalar tensor; returns ``(event_t, solution)`` where
    ``solution`` has shape ``[2, *y0.shape]`` (initial and event state).
    Gradients reach ``event_t`` and the event state through the implicit
    function theorem on ``event_fn(t*, y(t*)) = 0``.
    """
    t0r = t0.reshape(-1)
    if reverse_time:
        t = torch.cat([t0r, t0r.detach() - 1.0])
    else:
        t = torch.cat([t0r, t0r.detach() + 1.0])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    p = prepare(func, y0, t.detach(), 0.0, 0.0, None, None, event_fn, METHODS)
    if p.shapes is not None:
        state_t = torch.cat([s[-1].reshape(-1) for s in solution])
    else:
        state_t = solution[-1]
    event_t, state_t = EventGradient.apply(p.fn, p.event_fn, event_t, state_t)
    if p.shapes is not None:
        parts = flat_to_shape(state_t, (), p.shapes)
        solution = tuple(torch.cat([s[:-1], st[None]], dim=0) for s, st in zip(solution, parts))
    else:
        solution = torch.cat([solution[:-1], state_t[None]], dim=0)
    return event_t, solution
