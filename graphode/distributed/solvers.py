"""ODE solving when the state is split over ranks (each rank holds its owned rows).

An adaptive solver accepts or rejects a step from the norm of the scaled
error estimate; every rank must take the same decision, and the same one as a
single process holding the whole state.  Here the norm is the solvers'
:class:`~graphode.solvers.RMSNorm` with its ``all_reduce`` hook (one
``all_reduce`` of a sum of squares and a count per norm), so step sizes,
accepted/rejected steps and NFE are those of the single-process solve (up to
the rounding of sums taken in another order).

:func:`odeint`, :func:`solve` and :func:`odeint_adjoint` take the arguments of
:mod:`graphode.solvers` plus ``group`` and hand the solving to it, the norm
given to the step-size controller (the ``controller`` option's, or the
``norm`` option it takes by default); there is no second solver loop.
Supported methods: the explicit Runge–Kutta family (adaptive and fixed grid),
whose only reductions over the state are the norms.

The adjoint state holds, besides ``y`` and ``a`` (split over ranks like ``y``),
the running gradients of the adjoint parameters.  A parameter of the model
(an ``nn.Parameter``, the same on every rank) gets a partial gradient from
each rank's nodes: inside the backward solve its vector-Jacobian product is
summed over ranks at every evaluation (one ``all_reduce`` for all such
parameters), so the adjoint state and its norm are those of one process; the
full gradient thus computed is handed back divided by the number of ranks, so
that summing the ranks' ``.grad`` (as data-parallel training does) gives it
once.  Adjoint parameters that are not ``nn.Parameter`` s (e.g. GRAND's
per-edge attention or ``x(0)``, views made before the solve) are per-rank
tensors: their norm is taken over all ranks' elements.
"""
from __future__ import annotations

import copy
import functools
from contextlib import contextmanager
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from .. import solvers as _solvers
from ..solvers import RMSNorm
from . import _comm

__all__ = ["global_rms_norm", "AdjointNorm", "odeint", "odeint_adjoint", "solve", "check_method",
           "solver_functions"]


# --------------------------------------------------------------------------- norms
def _sumsq(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dtype=torch.float64).square() if x.numel() else \
        torch.zeros((), dtype=torch.float64, device=x.device)


def global_rms_norm(group=None) -> RMSNorm:
    """The solvers' :class:`~graphode.solvers.RMSNorm` with its ``all_reduce`` hook summing
    ``[Σ x², n]`` over the ranks of ``group``: the RMS norm of the whole split state."""
    return RMSNorm(all_reduce=functools.partial(_comm.all_reduce_sum, group=group))


def _is_reducing(norm) -> bool:
    return isinstance(norm, RMSNorm) and norm.all_reduce is not None


class AdjointNorm:
    """The adjoint solve's norm over ``(s_t, y, a, *g_params)``, as graphode's default
    (``max`` of the RMS norms of the parts) with ``y``, ``a`` and the per-rank
    parameters' parts reduced over ranks; ``replicated[i]`` marks the parameters
    whose running gradient is already the same on every rank.  ``seminorm=True``
    leaves the parameters out (as ``adjoint_options={"norm": "seminorm"}``)."""

    def __init__(self, replicated: Sequence[bool], seminorm: bool = False, group=None):
        self.replicated = [bool(r) for r in replicated]
        self.seminorm = bool(seminorm)
        self.group = group

    def __call__(self, parts) -> torch.Tensor:
        tpart, y, a, *prm = parts
        if len(prm) != len(self.replicated):
            raise RuntimeError(f"adjoint norm: {len(prm)} parameter parts for {len(self.replicated)} flags")
        split = [y, a] + ([] if self.seminorm else [p for p, r in zip(prm, self.replicated) if not r])
        dev = y.device
        v = torch.stack([s for t in split for s in (_sumsq(t), torch.tensor(float(t.numel()),
                                                                              dtype=torch.float64, device=dev))])
        _comm.all_reduce_sum(v, self.group)
        out = tpart.abs().reshape(()).to(torch.float64)
        for i in range(len(split)):
            if float(v[2 * i + 1]):
                out = torch.maximum(out, (v[2 * i] / v[2 * i + 1]).sqrt())
        if not self.seminorm:
            for p, r in zip(prm, self.replicated):
                if r and p.numel():
                    out = torch.maximum(out, _solvers.rms_norm(p).to(torch.float64))  # same on every rank
        return out.to(y.dtype)


# --------------------------------------------------------------------------- checks
def check_method(method) -> str:
    """The method name if its only reductions over the state are norms (explicit RK)."""
    m = "dopri5" if method is None else method
    spec = _solvers.METHODS.get(m)
    if spec is None:
        raise ValueError(f'Invalid method "{m}". Must be one of {sorted(_solvers.METHODS)}')
    if spec.tableau is None or spec.tableau.implicit:
        ok = sorted(k for k, s in _solvers.METHODS.items() if s.tableau is not None and not s.tableau.implicit)
        raise ValueError(f"method {m!r} is not supported across ranks (its implicit or multistep iterations "
                         f"reduce over the state); use an explicit Runge-Kutta method: {', '.join(ok)}")
    return m


def _options(options, group) -> Dict[str, Any]:
    """The user's options with the error norm reduced over ``group`` (the controller's
    own norm, or the ``norm`` option the controller takes by default)."""
    opts = dict(options or {})
    norm = opts.pop("norm", None)
    if norm is not None and not _is_reducing(norm):
        raise ValueError("a custom norm is not supported across ranks: the error norm is the RMS over all "
                         "ranks' elements (graphode.distributed.solvers.global_rms_norm)")
    ctrl = opts.get("controller")
    if ctrl is not None and getattr(ctrl, "norm", None) is not None:
        if not _is_reducing(ctrl.norm):
            raise ValueError("the controller's norm must reduce over ranks (RMSNorm(all_reduce=...)); leave it "
                             "unset and graphode.distributed sets one")
    elif ctrl is not None:
        ctrl = copy.copy(ctrl)
        ctrl.norm = global_rms_norm(group)
        opts["controller"] = ctrl
    else:
        opts["norm"] = norm if norm is not None else global_rms_norm(group)
    return opts


def _check_state(y0, t, event_fn=None):
    if not isinstance(y0, torch.Tensor):
        raise TypeError("distributed solving supports a single tensor state y0 (the owned rows), not a tuple")
    if event_fn is not None:
        raise ValueError("event handling is not supported across ranks")
    if isinstance(t, torch.Tensor) and t.requires_grad:
        raise ValueError("gradients with respect to t are not supported across ranks")


# --------------------------------------------------------------------------- forward
def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None, group=None):
    """:func:`graphode.solvers.odeint` for a state split over ranks (same arguments, plus ``group``)."""
    _check_state(y0, t, event_fn)
    return _solvers.odeint(func, y0, t, rtol=rtol, atol=atol, method=check_method(method),
                           options=_options(options, group))


def solve(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, group=None):
    """:func:`graphode.solvers.solve` (solution and statistics) for a state split over ranks."""
    _check_state(y0, t)
    return _solvers.solve(func, y0, t, rtol=rtol, atol=atol, method=check_method(method),
                          options=_options(options, group))


# --------------------------------------------------------------------------- adjoint
def _param_slots(func, params: Sequence[torch.Tensor]) -> List[List[Tuple[nn.Module, str]]]:
    """Where each parameter sits in ``func``'s modules (registered or plain attributes)."""
    want = {id(p): i for i, p in enumerate(params)}
    slots: List[List[Tuple[nn.Module, str]]] = [[] for _ in params]
    roots = [func] if isinstance(func, nn.Module) else [v for v in getattr(func, "__dict__", {}).values()
                                                          if isinstance(v, nn.Module)]
    seen, stack = set(), list(roots)
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        for name, p in m._parameters.items():
            if p is not None and id(p) in want:
                slots[want[id(p)]].append((m, name))
        stack.extend(c for c in m._modules.values() if c is not None)
        stack.extend(v for v in vars(m).values() if isinstance(v, nn.Module))
    return slots


class _ReplicatedField:
    """``func`` with its replicated parameters replaced by aliases whose gradients are
    summed over ranks whenever autograd computes them (inside the adjoint's
    vector-Jacobian products)."""

    def __init__(self, func, slots, aliases, group):
        self.func = func
        self.slots = slots
        self.aliases = tuple(aliases)
        self.group = group

    @contextmanager
    def _swapped(self, tensors):
        saved = []
        try:
            for t, places in zip(tensors, self.slots):
                for m, name in places:
                    saved.append((m, name, m._parameters[name]))
                    m._parameters[name] = t
            yield
        finally:
            for m, name, p in reversed(saved):
                m._parameters[name] = p

    def __getattr__(self, name):
        # the solvers look for the field's callbacks (callback_step, ..._adjoint) on it
        if name.startswith("callback_"):
            return getattr(self.__dict__["func"], name)
        raise AttributeError(name)

    def __call__(self, t, y):
        if not self.aliases:
            return self.func(t, y)
        subs = _comm.all_reduce_grad(self.aliases, self.group) if torch.is_grad_enabled() else self.aliases
        with self._swapped(subs):
            return self.func(t, y)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None, group=None):
    """:func:`graphode.solvers.odeint_adjoint` for a state split over ranks (see the
    module docstring for how parameter gradients are reduced)."""
    _check_state(y0, t, event_fn)
    method = check_method(method)
    adjoint_method = check_method(adjoint_method if adjoint_method is not None else method)
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError("func must be an nn.Module to infer the adjoint parameters; pass adjoint_params")
        adjoint_params = _solvers.find_parameters(func)
    params = [p for p in adjoint_params if p.requires_grad]
    rep = [p for p in params if isinstance(p, nn.Parameter)]
    per_rank = [p for p in params if not isinstance(p, nn.Parameter)]
    slots = _param_slots(func, rep)
    missing = [tuple(p.shape) for p, s in zip(rep, slots) if not s]
    if missing:
        raise ValueError(f"adjoint parameters of shapes {missing} are not parameters of func's modules: across "
                         "ranks their gradients could not be reduced inside the backward solve")
    if adjoint_options is None:
        if adjoint_method != method and options:
            raise ValueError("If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. "
                             "So as `options` has been passed then `adjoint_options` must be passed as well.")
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    adjoint_options = dict(adjoint_options)
    user = adjoint_options.pop("norm", None)
    if user is not None and user != "seminorm":
        raise ValueError("a custom adjoint norm is not supported across ranks (use the default or 'seminorm')")
    actrl = adjoint_options.get("controller")
    if actrl is not None and getattr(actrl, "norm", None) is not None:
        raise ValueError("an adjoint controller with its own norm is not supported across ranks; leave its norm "
                         "unset")
    world = _comm.world_size(group)
    shares = _comm.share_grad(rep, world) if rep else ()
    field = _ReplicatedField(func, slots, shares, group)
    ordered = tuple(shares) + tuple(per_rank)
    adjoint_options["norm"] = AdjointNorm([True] * len(rep) + [False] * len(per_rank),
                                          seminorm=user == "seminorm", group=group)
    return _solvers.odeint_adjoint(field, y0, t, rtol=rtol, atol=atol, method=method,
                                   options=_options(options, group), adjoint_rtol=adjoint_rtol,
                                   adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
                                   adjoint_options=adjoint_options, adjoint_params=ordered)


def solver_functions(group=None):
    """``(odeint, odeint_adjoint)`` bound to ``group`` (what :class:`DistGraph` gives models)."""
    import functools

    return functools.partial(odeint, group=group), functools.partial(odeint_adjoint, group=group)

