"""The one adaptive time-stepping loop, for any embedded method (explicit or implicit).

A *stepper* knows how to take one step and estimate its error; the
*controller* (:class:`~._controller.PIController`) owns everything about
step sizes.  The loop only connects them::

    t1, dt, stop = controller.clip(t, dt)
    y1, err, k = stepper.step(dyn, t, dt, t1, y, f, h)       # err: no-grad tensor, or None: failed
    r = float(controller.error_ratio(err, |y|, |y1|))         # the one host sync of the step
    accept, dt = controller.decide(dt, r)

Stepper protocol (see :class:`~._rk.ExplicitRKStepper` and
:class:`~._implicit.ImplicitRKStepper`):

* ``order`` (for the initial step heuristic) and ``error_order`` (the
  controller's ``q``);
* ``step(dyn, t0, dt, t1, y0, f0, h) -> (y1, err, k)`` where ``f0`` is the
  derivative at ``(t0, y0)``, ``h = sign · dt`` and ``err`` the local error
  estimate (``None`` when the step failed, e.g. Newton did not converge: it
  is rejected and the step shrunk by ``dfactor``);
* ``next_f0(dyn, t1, y1, k) -> f1`` the derivative at the new point (FSAL
  methods reuse their last stage);
* ``dense(dyn, last, t) -> y(t)`` inside the last accepted step
  ``last = (t0, t1, y0, y1, k, h, f0)`` (without evaluating ``f``: event
  location calls it on float64 copies of this data);
* optionally ``set_tolerances(rtol, atol)`` (the controller's) and
  ``accepted(bool)`` (told after each decision).

Between two output times, steps are taken until the current time passes
the output time (steps are not clipped to output times, as in
torchdiffeq), and the output is read from the dense output of the last
accepted step.
"""
from __future__ import annotations

import math
from typing import List

import torch

from ._controller import CONTROLLER_OPTIONS, make_controller
from ._dynamics import Dynamics
from ._errors import MaxNumStepsError, NonFiniteError
from ._event import bisect_event, upcast
from ._problem import Problem

__all__ = ["AdaptiveSolver"]

_MAX_NONFINITE = 30


class AdaptiveSolver:
    """Adaptive integration of ``problem`` with an embedded ``stepper``."""

    OPTIONS = frozenset({"first_step", "max_num_steps", "norm", "dtype", "controller"}) | CONTROLLER_OPTIONS
    CALLBACKS = frozenset({"callback_step", "callback_accept_step", "callback_reject_step"})

    def __init__(self, problem: Problem, dyn: Dynamics, stepper, first_step=None, max_num_steps=2 ** 31 - 1,
                 norm=None, dtype=None, controller=None, **controller_options):
        self.problem = problem
        self.dyn = dyn
        self.stats = dyn.stats
        self.stepper = stepper
        self.y0 = problem.y0
        self.sign = problem.sign
        self.first_step = None if first_step is None else abs(float(first_step))
        self.max_num_steps = int(max_num_steps)
        self.controller = make_controller(controller, controller_options, problem, norm, stepper.error_order)
        if hasattr(stepper, "set_tolerances"):           # implicit steppers size their Newton tolerance by them
            stepper.set_tolerances(self.controller.rtol, self.controller.atol)
        self._tell = getattr(stepper, "accepted", None)

    # ------------------------------------------------------------------ setup
    def _begin(self):
        dyn = self.dyn
        t0 = self.problem.taus[0]
        y0 = self.y0
        f0 = dyn(t0, y0)
        if self.first_step is None:
            dt = self.controller.initial_step(dyn, t0, y0, f0, self.stepper.order)
        else:
            dt = self.first_step
        self.t = t0
        self.y = y0
        self.f = f0
        self.dt = dt
        with torch.no_grad():
            self.abs_y = y0.abs()
        self.last = None  # (t0, t1, y0, y1, k, h, f0) of the last accepted step
        self._nonfinite = 0

    # ------------------------------------------------------------------- step
    def _attempt(self) -> bool:
        dyn = self.dyn
        ctrl = self.controller
        t0, y0, f0 = self.t, self.y, self.f
        dyn.callback_step(t0, y0, ctrl.clamp(self.dt))
        t1, dt, stop = ctrl.clip(t0, self.dt, self.sign)
        h = self.sign * dt
        y1, err, k = self.stepper.step(dyn, t0, dt, t1, y0, f0, h)
        if err is None:
            ratio = math.inf
            a1 = None
        else:
            with torch.no_grad():
                a1 = y1.abs()
                ratio = float(ctrl.error_ratio(err, self.abs_y, a1))
        accept, self.dt = ctrl.decide(dt, ratio)
        if accept and err is None:
            accept = False
        if self._tell is not None:
            self._tell(accept)
        stats = self.stats
        if accept:
            dyn.callback_accept(t0, y0, dt)
            self.last = (t0, t1, y0, y1, k, h, f0)
            self.t = t1
            self.y = y1
            self.abs_y = a1
            if ctrl.accepted(stop):
                self.f = dyn(t1, y1, 1)
            else:
                self.f = self.stepper.next_f0(dyn, t1, y1, k)
            stats.n_accepted += 1
            stats.step_sizes.append(dt)
            self._nonfinite = 0
        else:
            dyn.callback_reject(t0, y0, dt)
            stats.n_rejected += 1
            if err is not None and not math.isfinite(ratio):
                self._nonfinite += 1
                if self._nonfinite > _MAX_NONFINITE:
                    raise NonFiniteError(
                        f"non-finite values (NaN/Inf) in the state or its derivative near "
                        f"t={dyn.sign * t0!r}; shrinking the step {self._nonfinite} times did not help")
        return accept

    def _dense(self, t: float):
        return self.stepper.dense(self.dyn, self.last, t)

    # ----------------------------------------------------------------- output
    def integrate(self) -> List[torch.Tensor]:
        taus = self.problem.taus
        out = [self.y0]
        self._begin()
        max_steps = self.max_num_steps
        for T in taus[1:]:
            n = 0
            while T > self.t:
                if n >= max_steps:
                    raise MaxNumStepsError(f"max_num_steps exceeded ({n}>={max_steps}) before reaching "
                                           f"t={self.dyn.sign * T!r}; increase options['max_num_steps'] "
                                           f"or loosen rtol/atol")
                self._attempt()
                n += 1
            out.append(self._dense(T))
        return out

    def integrate_until_event(self, event_fn, event_tol):
        self._begin()
        dyn = self.dyn
        with torch.no_grad():
            v = event_fn(dyn.time(self.t), self.y)
        if bool(v == 0):
            return self.t, self.y
        sign0 = torch.sign(v)
        n = 0
        while True:
            if n >= self.max_num_steps:
                raise MaxNumStepsError(f"max_num_steps exceeded ({n}>={self.max_num_steps}) "
                                       f"while looking for an event")
            accepted = self._attempt()
            n += 1
            if accepted:
                with torch.no_grad():
                    s = torch.sign(event_fn(dyn.time(self.t), self.y))
                if bool(s != sign0):
                    break
        t0, t1 = self.last[0], self.last[1]
        hi = upcast(self.last)
        interp_hi = lambda tt: self.stepper.dense(dyn, hi, tt)  # noqa: E731
        return bisect_event(self._dense, dyn, sign0, t0, t1, event_fn, event_tol, interp_hi)
