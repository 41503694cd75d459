"""The one generic explicit Runge–Kutta stepper, and its fixed/adaptive drivers.

A step computes, for a tableau ``(c, a, b)`` and signed step ``h``,

.. math::

    k_0 = f(t_0, y_0),\\quad k_i = f\\big(t_0 + c_i Δt,\\; y_0 + h Σ_{j<i} a_{ij} k_j\\big),\\quad
    y_1 = y_0 + h Σ_i b_i k_i,

with each stage input built by one ``torch.add(..., alpha=)`` followed by
in-place ``add_(..., alpha=)`` over the non-zero coefficients (coefficients
are precomputed Python floats, so there is no per-step coefficient tensor
and no device sync).  Adaptive drivers add the error estimate
``h Σ e_i k_i`` (computed without autograd) and a single host read of the
error ratio per step for the accept/reject decision.
"""
from __future__ import annotations

import bisect
import math
from typing import List

import torch

from ._common import Dynamics, MaxNumStepsError, NonFiniteError, Problem, StepSizeUnderflowError
from ._controller import PIController
from ._event import bisect_event
from ._fixed import FixedGridSolver
from ._interp import combine, hermite_cubic, quartic_stage_weights
from ._tableaux import ButcherTableau

__all__ = ["RKPlan", "FixedRKSolver", "AdaptiveRKSolver", "select_initial_step"]


class RKPlan:
    """Precomputed non-zero structure of a tableau, for the hot loop."""

    __slots__ = ("tableau", "rows", "b", "e", "fsal", "reuse_last", "b_full", "b_mid", "stages")

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        rows = []
        for i, row in enumerate(tableau.a, start=1):
            nz = tuple((j, a) for j, a in enumerate(row) if a != 0.0)
            rows.append((tableau.c[i], nz, tableau.c[i] == 1.0))
        self.rows = tuple(rows)
        self.b = tuple((j, w) for j, w in enumerate(tableau.b) if w != 0.0)
        e = tableau.e
        self.e = None if e is None else tuple((j, w) for j, w in enumerate(e) if w != 0.0)
        self.fsal = tableau.fsal
        self.reuse_last = tableau.reuse_last_stage
        self.b_full = tableau.b
        self.b_mid = tableau.b_mid
        self.stages = tableau.stages

    def step(self, dyn: Dynamics, t0: float, dt: float, t1: float, y0, f0, h: float, perturb_end: bool):
        """One RK step from ``(t0, y0)`` with first stage ``f0``; returns ``(y1, k)``."""
        k = [f0]
        yi = y0
        for c, nz, at_end in self.rows:
            if nz:
                j, a = nz[0]
                yi = torch.add(y0, k[j], alpha=a * h)
                for j, a in nz[1:]:
                    yi.add_(k[j], alpha=a * h)
            else:
                yi = y0
            if at_end:
                k.append(dyn(t1, yi, -1 if perturb_end else 0))
            else:
                k.append(dyn(t0 + c * dt, yi))
        if self.fsal:
            return yi, k
        b = self.b
        j, w = b[0]
        y1 = torch.add(y0, k[j], alpha=w * h)
        for j, w in b[1:]:
            y1.add_(k[j], alpha=w * h)
        return y1, k

    def error(self, k, h: float):
        """``h Σ e_i k_i`` (call under ``torch.no_grad()``)."""
        e = self.e
        j, w = e[0]
        err = torch.mul(k[j], w * h)
        for j, w in e[1:]:
            err.add_(k[j], alpha=w * h)
        return err


# ---------------------------------------------------------------------- fixed
class FixedRKSolver(FixedGridSolver):
    """Fixed-grid explicit RK method given by a tableau."""

    def __init__(self, problem: Problem, dyn: Dynamics, tableau: ButcherTableau, **options):
        super().__init__(problem, dyn, **options)
        self.plan = RKPlan(tableau)
        self.order = tableau.order

    def _step(self, t0, dt, t1, y0):
        dyn = self.dyn
        f0 = dyn(t0, y0, 1 if self.perturb else 0)
        y1, _ = self.plan.step(dyn, t0, dt, t1, y0, f0, self.sign * dt, self.perturb)
        return y1, f0


# ------------------------------------------------------------------- adaptive
def select_initial_step(dyn: Dynamics, t0: float, y0, f0, order: int, rtol, atol, norm) -> float:
    """Hairer, Nørsett & Wanner (Sec. II.4) starting step; one extra evaluation."""
    with torch.no_grad():
        scale = torch.abs(y0) * rtol + atol
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


class AdaptiveRKSolver:
    """Embedded explicit RK pair with error control and quartic dense output.

    Between two output times, steps are taken until the current time passes
    the output time (steps are not clipped to output times, as in
    torchdiffeq), and the output is read from the dense output of the last
    accepted step.
    """

    OPTIONS = frozenset({"first_step", "max_num_steps", "norm", "dtype", "jump_t", "step_t", "safety",
                         "ifactor", "dfactor", "min_step", "max_step", "pcoeff", "icoeff"})
    CALLBACKS = frozenset({"callback_step", "callback_accept_step", "callback_reject_step"})

    def __init__(self, problem: Problem, dyn: Dynamics, tableau: ButcherTableau, first_step=None,
                 max_num_steps=2 ** 31 - 1, norm=None, dtype=None, jump_t=None, step_t=None, safety=0.9,
                 ifactor=10.0, dfactor=0.2, min_step=0.0, max_step=math.inf, pcoeff=0.0, icoeff=1.0):
        if not tableau.adaptive:
            raise ValueError(f"tableau {tableau.name!r} has no embedded error estimate")
        self.problem = problem
        self.dyn = dyn
        self.stats = dyn.stats
        self.plan = RKPlan(tableau)
        self.tableau = tableau
        self.y0 = problem.y0
        self.sign = problem.sign
        self.rtol = problem.rtol
        self.atol = problem.atol
        self.norm = norm if norm is not None else problem.norm
        self.first_step = None if first_step is None else abs(float(first_step))
        self.max_num_steps = int(max_num_steps)
        self.controller = PIController(tableau.error_order, safety=float(safety), ifactor=float(ifactor),
                                       dfactor=float(dfactor), pcoeff=pcoeff, icoeff=icoeff,
                                       min_step=float(min_step), max_step=float(max_step))
        self.step_t = self._tvals(step_t)
        self.jump_t = self._tvals(jump_t)
        if set(self.step_t) & set(self.jump_t):
            raise ValueError("`step_t` and `jump_t` must not have any repeated elements between them.")
        self._step_i = 0
        self._jump_i = 0

    def _tvals(self, v) -> List[float]:
        if v is None:
            return []
        v = torch.as_tensor(v).detach().reshape(-1).double().tolist()
        t0 = self.problem.taus[0]
        return sorted(x for x in (self.sign * u for u in v) if x >= t0)

    # ------------------------------------------------------------------ setup
    def _begin(self):
        dyn = self.dyn
        t0 = self.problem.taus[0]
        y0 = self.y0
        f0 = dyn(t0, y0)
        if self.first_step is None:
            dt = select_initial_step(dyn, t0, y0, f0, self.tableau.order, self.rtol, self.atol, self.norm)
        else:
            dt = self.first_step
        self.t = t0
        self.y = y0
        self.f = f0
        self.dt = dt
        with torch.no_grad():
            self.abs_y = y0.abs()
        self.last = None  # (t0, t1, y0, y1, k, h) of the last accepted step
        self._nonfinite = 0
        if self.step_t:
            self._step_i = min(bisect.bisect(self.step_t, t0), len(self.step_t) - 1)
        if self.jump_t:
            self._jump_i = min(bisect.bisect(self.jump_t, t0), len(self.jump_t) - 1)

    # ------------------------------------------------------------------- step
    def _attempt(self) -> bool:
        dyn = self.dyn
        ctrl = self.controller
        t0, y0, f0 = self.t, self.y, self.f
        dt = ctrl.clamp(self.dt)
        dyn.callback_step(t0, y0, dt)
        t1 = t0 + dt
        if not t1 > t0:
            raise StepSizeUnderflowError(
                f"underflow in dt {dt!r}: the step size became too small to advance from "
                f"t={dyn.sign * t0!r} (step size underflow; the problem may be stiff or the field "
                f"discontinuous — try an implicit method or looser tolerances)")
        on_step = on_jump = False
        if self.step_t:
            nxt = self.step_t[self._step_i]
            if t0 < nxt < t1:
                on_step = True
                t1 = nxt
                dt = t1 - t0
        if self.jump_t:
            nxt = self.jump_t[self._jump_i]
            if t0 < nxt < t1:
                on_step = False
                on_jump = True
                t1 = nxt
                dt = t1 - t0
        h = self.sign * dt
        y1, k = self.plan.step(dyn, t0, dt, t1, y0, f0, h, True)
        with torch.no_grad():
            err = self.plan.error(k, h)
            a1 = y1.abs()
            tol = torch.maximum(self.abs_y, a1)
            tol.mul_(self.rtol).add_(self.atol)
            ratio = float(self.norm(err.div_(tol)))
        accept = ratio <= 1.0
        if dt > ctrl.max_step:
            accept = False
        if dt <= ctrl.min_step:
            accept = True
        stats = self.stats
        if accept:
            dyn.callback_accept(t0, y0, dt)
            self.last = (t0, t1, y0, y1, k, h)
            self.t = t1
            self.y = y1
            self.abs_y = a1
            if on_step and self._step_i != len(self.step_t) - 1:
                self._step_i += 1
            if on_jump:
                if self._jump_i != len(self.jump_t) - 1:
                    self._jump_i += 1
                self.f = dyn(t1, y1, 1)
            elif self.plan.reuse_last:
                self.f = k[-1]
            else:
                self.f = dyn(t1, y1)
            stats.n_accepted += 1
            stats.step_sizes.append(dt)
            self._nonfinite = 0
        else:
            dyn.callback_reject(t0, y0, dt)
            stats.n_rejected += 1
            if not math.isfinite(ratio):
                self._nonfinite += 1
                if self._nonfinite > 30:
                    raise NonFiniteError(
                        f"non-finite values (NaN/Inf) in the state or its derivative near "
                        f"t={dyn.sign * t0!r}; shrinking the step {self._nonfinite} times did not help")
        self.dt = ctrl.propose(dt, ratio, accept)
        return accept

    # ----------------------------------------------------------------- output
    def _dense(self, t: float):
        t0, t1, y0, y1, k, h = self.last
        if t == t1:
            return y1
        if t == t0:
            return y0
        theta = (t - t0) / (t1 - t0)
        plan = self.plan
        if plan.b_mid is not None:
            w = quartic_stage_weights(theta, plan.b_full, plan.b_mid)
            return combine(y0, [(wi * h, ki) for wi, ki in zip(w, k)])
        f1 = k[-1] if plan.fsal else self.dyn(t1, y1)
        return hermite_cubic(t0, y0, k[0], t1, y1, f1, t, self.sign)

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
        return bisect_event(self._dense, dyn, sign0, t0, t1, event_fn, event_tol)
