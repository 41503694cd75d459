"""Fixed-grid time stepping loop (shared by RK, Adams and implicit solvers).

Semantics follow torchdiffeq's fixed-grid solvers:

* the grid is ``t`` itself, or ``t[0] + k * step_size`` (the last point
  replaced by ``t[-1]``), or whatever ``grid_constructor(func, y0, t)``
  returns;
* outputs between grid points are linearly interpolated (``interp="cubic"``
  uses a cubic Hermite interpolant, at one extra evaluation per output);
* ``perturb=True`` evaluates the first stage one ulp after the step start
  and stages at the step end one ulp before it (for fields with jumps at
  grid points).
"""
from __future__ import annotations

import math
from typing import List

import torch

from ._dynamics import Dynamics
from ._errors import SolverError
from ._problem import Problem
from ._event import bisect_event, upcast
from ._interp import hermite_cubic, linear

__all__ = ["FixedGridSolver"]

_MAX_EVENT_STEPS = 20000


class FixedGridSolver:
    """Base class: subclasses implement :meth:`_step` (and optionally :meth:`_reset`)."""

    OPTIONS = frozenset({"step_size", "grid_constructor", "perturb", "interp", "norm"})
    CALLBACKS = frozenset({"callback_step"})
    order = 1

    def __init__(self, problem: Problem, dyn: Dynamics, step_size=None, grid_constructor=None,
                 perturb=False, interp="linear", norm=None):
        self.problem = problem
        self.dyn = dyn
        self.stats = dyn.stats
        self.y0 = problem.y0
        self.sign = problem.sign
        if step_size is not None and grid_constructor is not None:
            raise ValueError("step_size and grid_constructor are mutually exclusive arguments.")
        if step_size is not None:
            step = float(step_size)
            if not (step > 0 and math.isfinite(step)):
                raise ValueError(f"step_size must be a positive finite number, got {step_size}")
        self.step_size = step_size
        self.grid_constructor = grid_constructor
        self.perturb = bool(perturb)
        if interp not in ("linear", "cubic"):
            raise ValueError(f"Unknown interpolation method {interp!r} (expected 'linear' or 'cubic')")
        self.interp = interp

    # ------------------------------------------------------------------ grid
    def _grid(self) -> List[float]:
        p = self.problem
        taus = p.taus
        if self.step_size is None and self.grid_constructor is None:
            return list(taus)
        tn = p.t if p.sign > 0 else -p.t
        tn = tn.detach()
        if self.step_size is not None:
            step = self.step_size
            start, end = tn[0], tn[-1]
            n = int(torch.ceil((end - start) / step + 1).item())
            grid = torch.arange(0, n, dtype=tn.dtype, device=tn.device) * step + start
            grid[-1] = end
            grid = grid.double().tolist()
        else:
            g = self.grid_constructor(p.fn, p.y0, p.t)
            if not isinstance(g, torch.Tensor):
                g = torch.as_tensor(g)
            grid = [p.sign * v for v in g.detach().double().tolist()]
        if grid[0] != taus[0] or grid[-1] != taus[-1]:
            raise ValueError("the time grid must start at t[0] and end at t[-1]")
        for a, b in zip(grid[:-1], grid[1:]):
            if not b > a:
                raise ValueError("the time grid must be strictly monotone in the direction of t")
        return grid

    # ------------------------------------------------------------- stepping
    def _reset(self):
        pass

    def _step(self, t0: float, dt: float, t1: float, y0: torch.Tensor):
        """Return ``(y1, f0)``; ``f0`` (user-time derivative at ``t0``) may be None."""
        raise NotImplementedError

    def _interp(self, t0, y0, f0, t1, y1, t, f1=None):
        if self.interp == "linear":
            return linear(t0, y0, t1, y1, t)
        if t == t0:
            return y0
        if t == t1:
            return y1
        if f0 is None:
            f0 = self.dyn(t0, y0)
        if f1 is None:
            f1 = self.dyn(t1, y1)
        return hermite_cubic(t0, y0, f0, t1, y1, f1, t, self.sign)

    def integrate(self) -> List[torch.Tensor]:
        taus = self.problem.taus
        n_out = len(taus)
        y = self.y0
        out = [y]
        if n_out == 1:
            return out
        grid = self._grid()
        self._reset()
        dyn = self.dyn
        cb = dyn.cb_step is not None
        stats = self.stats
        sizes = stats.step_sizes
        j = 1
        for i in range(len(grid) - 1):
            t0 = grid[i]
            t1 = grid[i + 1]
            dt = t1 - t0
            if cb:
                dyn.callback_step(t0, y, dt)
            y1, f0 = self._step(t0, dt, t1, y)
            sizes.append(dt)
            while j < n_out and t1 >= taus[j]:
                out.append(self._interp(t0, y, f0, t1, y1, taus[j]))
                j += 1
            y = y1
        stats.n_accepted += len(grid) - 1
        return out

    # ---------------------------------------------------------------- events
    def integrate_until_event(self, event_fn, event_tol):
        if self.step_size is None:
            raise ValueError("Event handling for fixed step solvers currently requires `step_size` "
                             "to be provided in options.")
        dyn = self.dyn
        t0 = self.problem.taus[0]
        y0 = self.y0
        dt = float(self.step_size)
        self._reset()
        with torch.no_grad():
            sign0 = torch.sign(event_fn(dyn.time(t0), y0))
        for _ in range(_MAX_EVENT_STEPS):
            t1 = t0 + dt
            y1, f0 = self._step(t0, dt, t1, y0)
            self.stats.step_sizes.append(dt)
            self.stats.n_accepted += 1
            with torch.no_grad():
                sign1 = torch.sign(event_fn(dyn.time(t1), y1))
            if bool(sign1 != sign0):
                ta, ya, tb, yb = t0, y0, t1, y1
                fa = fb = None
                if self.interp == "cubic":       # the end derivatives once, in the state's dtype
                    fa = f0 if f0 is not None else dyn(t0, y0)
                    fb = dyn(t1, y1)
                interp = lambda tt: self._interp(ta, ya, fa, tb, yb, tt, fb)  # noqa: E731
                hi = upcast((ya, fa, yb, fb))
                interp_hi = lambda tt: self._interp(ta, hi[0], hi[1], tb, hi[2], tt, hi[3])  # noqa: E731
                return bisect_event(interp, dyn, sign0, t0, t1, event_fn, event_tol, interp_hi)
            t0, y0 = t1, y1
        raise SolverError(f"Reached maximum number of iterations {_MAX_EVENT_STEPS} without an event.")
