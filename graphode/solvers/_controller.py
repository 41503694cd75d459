"""The step-size controller: tolerances, error norm, accept/reject, step and jump clipping.

The adaptive loop (:mod:`._adaptive`) asks the controller four things per
step, and nothing else about step sizes:

1. :meth:`PIController.clip` — the step ``[t0, t0 + dt]`` to attempt, after
   clamping ``dt`` to ``[min_step, max_step]`` and stopping at the next
   ``step_t`` (a time the solver must step on) or ``jump_t`` (a
   discontinuity: the field is re-evaluated just after it);
2. :meth:`PIController.error_ratio` — ``r = norm(err / (atol + rtol ·
   max(|y0|, |y1|)))`` as a tensor (no host sync);
3. :meth:`PIController.decide` — accept (``r <= 1``, or the step is at the
   minimum size) or reject, and the next step size

   .. math::

       h_{n+1} = h_n \\cdot \\min\\Big(f_{max},\\;\\max\\big(f_{min},\\;
           \\sigma\\, r_n^{-(\\beta_I + \\beta_P)/q}\\, r_{n-1}^{\\beta_P/q}\\big)\\Big)

   with ``q`` the method's ``error_order``, ``σ = safety``, ``f_max =
   ifactor``, ``f_min = dfactor`` (``f_min = 1`` after an accepted step, so
   an accepted step is never followed by a smaller one) — the one host read
   of the step is ``float(r)`` before this;
4. :meth:`PIController.accepted` — move past a ``step_t``/``jump_t`` that
   the accepted step ended on.

The defaults ``safety=0.9, ifactor=10, dfactor=0.2, pcoeff=0, icoeff=1``
reproduce torchdiffeq's controller exactly; ``pcoeff > 0`` gives a
proportional–integral (PI) controller (e.g. ``pcoeff=0.4, icoeff=0.3``).

Pass one in with ``options={"controller": PIController(...)}``; its
``rtol``/``atol``/``norm`` default to the solve's (``None``), and a
controller object can be reused: each solve works on a bound copy
(:meth:`PIController.bind`).  For a state sharded over processes give it a
reducing norm, e.g. ``PIController(norm=RMSNorm(all_reduce=dist.all_reduce))``
(see :mod:`._norm`).
"""
from __future__ import annotations

import bisect
import copy
import math
from typing import List, Optional

import torch

from ._errors import StepSizeUnderflowError

__all__ = ["PIController", "CONTROLLER_OPTIONS", "make_controller"]

#: solver options that configure the controller (torchdiffeq's names, plus ``pcoeff``/``icoeff``)
CONTROLLER_OPTIONS = frozenset({"safety", "ifactor", "dfactor", "pcoeff", "icoeff", "min_step", "max_step",
                                "step_t", "jump_t"})

#: what :meth:`PIController.clip` stopped the step on
NO_STOP, STEP_T, JUMP_T = 0, 1, 2


class PIController:
    """Proportional–integral step-size controller on Python floats (no device syncs).

    Args:
        rtol, atol: tolerances (floats, or tensors broadcastable to the flat
            state); ``None``: the solve's.
        norm: ``norm(x) -> 0-dim tensor`` of the scaled error; ``None``: the
            solve's (RMS, or ``options["norm"]``).
        safety, ifactor, dfactor, pcoeff, icoeff: see the module docstring.
        min_step, max_step: bounds on ``|Δt|`` (a step at ``min_step`` is
            accepted whatever its error).
        step_t, jump_t: times (user time) to step on exactly; at a
            ``jump_t`` the field is evaluated again just after it.
        order: the error order ``q`` (``None``: the method's).
    """

    __slots__ = ("rtol", "atol", "norm", "order", "safety", "ifactor", "dfactor", "pcoeff", "icoeff",
                 "min_step", "max_step", "step_t", "jump_t", "_user_step_t", "_user_jump_t",
                 "_prev_ratio", "_expo_i", "_expo_p", "_step_i", "_jump_i", "_bound")

    def __init__(self, rtol=None, atol=None, norm=None, *, safety=0.9, ifactor=10.0, dfactor=0.2, pcoeff=0.0,
                 icoeff=1.0, min_step=0.0, max_step=math.inf, step_t=None, jump_t=None, order=None):
        self.rtol = rtol
        self.atol = atol
        self.norm = norm
        self.safety = float(safety)
        self.ifactor = float(ifactor)
        self.dfactor = float(dfactor)
        self.pcoeff = float(pcoeff)
        self.icoeff = float(icoeff)
        self.min_step = float(min_step)
        self.max_step = float(max_step)
        if not (self.safety > 0 and self.ifactor >= 1 and 0 < self.dfactor <= 1):
            raise ValueError(f"invalid controller factors safety={safety}, ifactor={ifactor}, dfactor={dfactor}")
        if self.min_step < 0 or self.max_step <= 0 or self.min_step > self.max_step:
            raise ValueError(f"invalid step bounds min_step={min_step}, max_step={max_step}")
        self._user_step_t = step_t
        self._user_jump_t = jump_t
        self.step_t: List[float] = []
        self.jump_t: List[float] = []
        self._step_i = 0
        self._jump_i = 0
        self._bound = False
        self.order = None
        self._expo_i = self._expo_p = None
        self._prev_ratio = 1.0
        if order is not None:
            self._set_order(order)

    def _set_order(self, order):
        self.order = float(order)
        self._expo_i = (self.icoeff + self.pcoeff) / self.order
        self._expo_p = self.pcoeff / self.order
        self._prev_ratio = 1.0

    # ------------------------------------------------------------------ set-up
    def bind(self, problem, error_order, norm=None) -> "PIController":
        """A copy configured for one solve: tolerances, norm, order, ``step_t``/``jump_t`` in internal time."""
        c = copy.copy(self)
        if c.rtol is None:
            c.rtol = problem.rtol
        if c.atol is None:
            c.atol = problem.atol
        if c.norm is None:
            c.norm = norm if norm is not None else problem.norm
        c._set_order(self.order if self.order is not None else error_order)
        c.step_t = c._tvals(self._user_step_t, problem)
        c.jump_t = c._tvals(self._user_jump_t, problem)
        if set(c.step_t) & set(c.jump_t):
            raise ValueError("`step_t` and `jump_t` must not have any repeated elements between them.")
        t0 = problem.taus[0]
        c._step_i = min(bisect.bisect(c.step_t, t0), len(c.step_t) - 1) if c.step_t else 0
        c._jump_i = min(bisect.bisect(c.jump_t, t0), len(c.jump_t) - 1) if c.jump_t else 0
        c._bound = True
        return c

    @staticmethod
    def _tvals(v, problem) -> List[float]:
        if v is None:
            return []
        v = torch.as_tensor(v).detach().reshape(-1).double().tolist()
        t0 = problem.taus[0]
        return sorted(x for x in (problem.sign * u for u in v) if x >= t0)

    def initial_step(self, dyn, t0: float, y0, f0, order: int) -> float:
        """Hairer, Nørsett & Wanner (Sec. II.4) starting step; one extra evaluation."""
        norm = self.norm
        with torch.no_grad():
            scale = torch.abs(y0) * self.rtol + self.atol
            d0 = float(norm(y0 / scale))
            d1 = float(norm(f0 / scale))
            if d0 < 1e-5 or d1 < 1e-5:
                h0 = 1e-6
            else:
                h0 = 0.01 * d0 / d1
            y1 = torch.add(y0, f0, alpha=dyn.sign * h0)
            f1 = dyn(t0 + h0, y1)
            d2 = abs(float(norm((f1 - f0) / scale)) / h0)
            if d1 <= 1e-15 and d2 <= 1e-15:
                h1 = max(1e-6, h0 * 1e-3)
            else:
                h1 = (0.01 / max(d1, d2)) ** (1.0 / float(order))
        return min(100.0 * h0, h1)

    # -------------------------------------------------------------------- step
    def clamp(self, dt: float) -> float:
        if not math.isfinite(dt):
            dt = self.min_step
        if dt < self.min_step:
            return self.min_step
        if dt > self.max_step:
            return self.max_step
        return dt

    def clip(self, t0: float, dt: float, sign: float = 1.0):
        """``(t1, dt, stop)``: the step to attempt from ``t0`` with proposed size ``dt``."""
        dt = self.clamp(dt)
        t1 = t0 + dt
        if not t1 > t0:
            raise StepSizeUnderflowError(
                f"underflow in dt {dt!r}: the step size became too small to advance from "
                f"t={sign * t0!r} (step size underflow; the problem may be stiff or the field "
                f"discontinuous — try an implicit method or looser tolerances)")
        stop = NO_STOP
        for kind, ts, i in ((STEP_T, self.step_t, self._step_i), (JUMP_T, self.jump_t, self._jump_i)):
            if ts and t0 < ts[i] < t1:
                stop, t1 = kind, ts[i]
                dt = t1 - t0
        return t1, dt, stop

    def tolerance(self, y0_abs: torch.Tensor, y1_abs: torch.Tensor) -> torch.Tensor:
        """``atol + rtol · max(|y0|, |y1|)``."""
        tol = torch.maximum(y0_abs, y1_abs)
        return tol.mul_(self.rtol).add_(self.atol)

    def error_ratio(self, err: torch.Tensor, y0_abs: torch.Tensor, y1_abs: torch.Tensor) -> torch.Tensor:
        """``norm(err / (atol + rtol · max(|y0|, |y1|)))`` (``err`` is overwritten; call without autograd)."""
        return self.norm(err.div_(self.tolerance(y0_abs, y1_abs)))

    def decide(self, dt: float, ratio: float):
        """``(accept, next_dt)`` after a step of size ``dt`` with error ratio ``ratio``."""
        accept = ratio <= 1.0
        if dt > self.max_step:
            accept = False
        if dt <= self.min_step:
            accept = True
        return accept, self.propose(dt, ratio, accept)

    def propose(self, dt: float, ratio: float, accepted: bool) -> float:
        """Next step size after a step of size ``dt`` with error ratio ``ratio``."""
        if self.order is None:
            raise ValueError("the controller has no error order: pass order= or bind it to a method")
        if ratio == 0.0:
            nxt = dt * self.ifactor
        elif not math.isfinite(ratio):
            nxt = dt * self.dfactor
        else:
            lo = 1.0 if ratio < 1.0 else self.dfactor
            fac = self.safety * ratio ** (-self._expo_i)
            if self._expo_p:
                fac *= self._prev_ratio ** self._expo_p
            nxt = dt * min(self.ifactor, max(fac, lo))
        if accepted and math.isfinite(ratio) and ratio > 0.0:
            self._prev_ratio = ratio
        return self.clamp(nxt)

    def accepted(self, stop: int) -> bool:
        """Move past the ``step_t``/``jump_t`` an accepted step ended on; true after a jump."""
        if stop == STEP_T:
            if self._step_i != len(self.step_t) - 1:
                self._step_i += 1
        elif stop == JUMP_T:
            if self._jump_i != len(self.jump_t) - 1:
                self._jump_i += 1
            return True
        return False

    def __repr__(self):
        return (f"PIController(rtol={self.rtol!r}, atol={self.atol!r}, norm={self.norm!r}, safety={self.safety}, "
                f"ifactor={self.ifactor}, dfactor={self.dfactor}, pcoeff={self.pcoeff}, icoeff={self.icoeff}, "
                f"min_step={self.min_step}, max_step={self.max_step})")


def make_controller(controller: Optional[PIController], options: dict, problem, norm, error_order) -> PIController:
    """The bound controller of one solve, from ``options["controller"]`` or the loose options."""
    if controller is None:
        controller = PIController(**options)
    else:
        if options:
            raise ValueError(f"options {sorted(options)} configure the step-size controller; with "
                             f"options['controller'] pass them to the controller instead")
        if not isinstance(controller, PIController):
            raise TypeError(f"options['controller'] must be a PIController, got {type(controller).__name__}")
        if controller.norm is not None and norm is not None:
            raise ValueError("options['norm'] and options['controller'].norm both given; pass one")
    return controller.bind(problem, error_order, norm)
