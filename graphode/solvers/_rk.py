"""The one generic explicit Runge–Kutta step, as a fixed-grid solver and as an adaptive stepper.

A step computes, for a tableau ``(c, a, b)`` and signed step ``h``,

.. math::

    k_0 = f(t_0, y_0),\\quad k_i = f\\big(t_0 + c_i Δt,\\; y_0 + h Σ_{j<i} a_{ij} k_j\\big),\\quad
    y_1 = y_0 + h Σ_i b_i k_i,

with each stage input built by :func:`~._combine.combine` over the non-zero
coefficients (increment first, then one add to ``y0``; coefficients are
precomputed Python floats, so there is no per-step coefficient tensor and
no device sync).  The adaptive stepper adds the error estimate
``h Σ e_i k_i`` (computed without autograd); the loop, the controller and
the one host read of the error ratio per step are in :mod:`._adaptive`.
"""
from __future__ import annotations

import torch

from ._dynamics import Dynamics
from ._fixed import FixedGridSolver
from ._combine import combine, lincomb
from ._interp import hermite_cubic, quartic_stage_weights
from ._tableaux import ButcherTableau, polyval

__all__ = ["RKPlan", "FixedRKSolver", "ExplicitRKStepper"]


class RKPlan:
    """Precomputed non-zero structure of a tableau, for the hot loop."""

    __slots__ = ("tableau", "rows", "b", "e", "fsal", "reuse_last", "b_full", "b_mid", "dense", "stages")

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
        self.dense = tableau.dense
        self.stages = tableau.stages

    def step(self, dyn: Dynamics, t0: float, dt: float, t1: float, y0, f0, h: float, perturb_end: bool):
        """One RK step from ``(t0, y0)`` with first stage ``f0``; returns ``(y1, k)``."""
        k = [f0]
        yi = y0
        for c, nz, at_end in self.rows:
            yi = combine(y0, [(a * h, k[j]) for j, a in nz])
            if at_end:
                k.append(dyn(t1, yi, -1 if perturb_end else 0))
            else:
                k.append(dyn(t0 + c * dt, yi))
        if self.fsal:
            return yi, k
        return combine(y0, [(w * h, k[j]) for j, w in self.b]), k

    def error(self, k, h: float):
        """``h Σ e_i k_i`` (call under ``torch.no_grad()``)."""
        return lincomb([(w * h, k[j]) for j, w in self.e])


# ---------------------------------------------------------------------- fixed
class FixedRKSolver(FixedGridSolver):
    """Fixed-grid explicit RK method given by a tableau.

    ``options={"compile": True}`` runs each step — all stages, the field and
    the stage combinations — as one ``torch.compile``d graph (compiled once per
    field and tableau, reused across steps and solves; times enter as
    tensors, so the grid does not cause recompilation).  Worth it where the
    per-step overhead dominates (small states); the first call pays the
    compilation.
    """

    OPTIONS = FixedGridSolver.OPTIONS | {"compile"}

    def __init__(self, problem, dyn: Dynamics, tableau: ButcherTableau, compile=False, **options):
        super().__init__(problem, dyn, **options)
        self.plan = RKPlan(tableau)
        self.order = tableau.order
        self._cstep = None
        if compile:
            if self.perturb:
                raise ValueError("options 'compile' and 'perturb' cannot be combined")
            self._cstep = compiled_step(problem, tableau, compile if isinstance(compile, dict) else {})
            self._tt = dict(dtype=dyn.dtype, device=dyn.device)

    def _step(self, t0, dt, t1, y0):
        dyn = self.dyn
        if self._cstep is not None:
            tt = self._tt
            y1, f0 = self._cstep(torch.tensor(self.sign * t0, **tt), torch.tensor(self.sign * dt, **tt),
                                 torch.tensor(self.sign * t1, **tt), y0)
            dyn.stats.nfe += self.plan.stages
            return y1, f0
        f0 = dyn(t0, y0, 1 if self.perturb else 0)
        y1, _ = self.plan.step(dyn, t0, dt, t1, y0, f0, self.sign * dt, self.perturb)
        return y1, f0


_COMPILED = {}


def compiled_step(problem, tableau: ButcherTableau, compile_kwargs: dict):
    """``(t0, h, t1, y0) -> (y1, f0)`` for one RK step, as one compiled graph (cached per field and tableau).

    ``t0``, ``t1`` are user times and ``h = t1 - t0`` (signed), all 0-dim
    tensors of the state's dtype.  The cache holds the user's field weakly.
    """
    import weakref

    fn, user = problem.fn, problem.user_func
    shapes = None if problem.shapes is None else tuple(tuple(s) for s in problem.shapes)
    key = (id(user), tableau, shapes, tuple(sorted(compile_kwargs.items())))
    hit = _COMPILED.get(key)
    if hit is not None and hit[0]() is user:
        return hit[1]
    rows = RKPlan(tableau).rows
    b = RKPlan(tableau).b

    def step(t0, h, t1, y0):
        k = [fn(t0, y0)]
        for c, nz, at_end in rows:
            yi = y0
            if nz:
                inc = k[nz[0][0]] * nz[0][1]
                for j, a in nz[1:]:
                    inc = inc + k[j] * a
                yi = y0 + h * inc
            k.append(fn(t1 if at_end else t0 + c * h, yi))
        inc = k[b[0][0]] * b[0][1]
        for j, w in b[1:]:
            inc = inc + k[j] * w
        return y0 + h * inc, k[0]

    kw = dict(fullgraph=True, dynamic=False)
    kw.update(compile_kwargs)
    compiled = torch.compile(step, **kw)
    try:
        ref = weakref.ref(user)
    except TypeError:                      # not weakly referable: keep it alive with the cache entry
        ref = (lambda f=user: f)
    _COMPILED[key] = (ref, compiled)
    return compiled


# ------------------------------------------------------------------- adaptive
class ExplicitRKStepper:
    """An embedded explicit RK pair as a stepper of :class:`~._adaptive.AdaptiveSolver`.

    Dense output: the tableau's continuous extension ``dense`` if it has one, else
    the quartic interpolant through the midpoint weights ``b_mid``, else
    cubic Hermite.
    """

    def __init__(self, tableau: ButcherTableau):
        if not tableau.adaptive:
            raise ValueError(f"tableau {tableau.name!r} has no embedded error estimate")
        self.tableau = tableau
        self.plan = RKPlan(tableau)
        self.order = tableau.order
        self.error_order = tableau.error_order

    def step(self, dyn, t0, dt, t1, y0, f0, h):
        plan = self.plan
        y1, k = plan.step(dyn, t0, dt, t1, y0, f0, h, True)
        with torch.no_grad():
            err = plan.error(k, h)
        return y1, err, k

    def next_f0(self, dyn, t1, y1, k):
        if self.plan.reuse_last:
            return k[-1]
        return dyn(t1, y1)

    def dense(self, dyn, last, t: float):
        t0, t1, y0, y1, k, h, _ = last
        if t == t1:
            return y1
        if t == t0:
            return y0
        theta = (t - t0) / (t1 - t0)
        plan = self.plan
        if plan.dense is not None:
            return combine(y0, [(polyval(p, theta) * h, ki) for p, ki in zip(plan.dense, k)])
        if plan.b_mid is not None:
            w = quartic_stage_weights(theta, plan.b_full, plan.b_mid)
            return combine(y0, [(wi * h, ki) for wi, ki in zip(w, k)])
        f1 = k[-1] if plan.fsal else dyn(t1, y1)
        return hermite_cubic(t0, y0, k[0], t1, y1, f1, t, dyn.sign)
