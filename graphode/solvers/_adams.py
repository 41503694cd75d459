"""Adams–Bashforth / Adams–Bashforth–Moulton (PECE) fixed-grid solvers.

Coefficient tables are computed exactly (rational arithmetic) at import:
for ``k`` history values the Adams–Bashforth weights are

.. math::  β_j = \\int_0^1 \\prod_{m \\ne j} \\frac{s + m}{m - j}\\, ds,\\qquad j = 0..k-1,

(the Lagrange basis on nodes ``s = 0, -1, …, -(k-1)``) and the
Adams–Moulton weights use nodes ``s = 1, 0, …, -(k-2)``.

Stepping follows torchdiffeq's ``explicit_adams`` / ``implicit_adams``
(``fixed_adams``): the history holds ``f`` at past grid points (newest
first, at most ``max_order - 1`` values); while fewer than 3 are known a
3/8-rule RK4 step is taken; otherwise an ``order``-step AB predictor with
``order = min(len(history), max_order - 1)`` and, for the implicit
variant, up to ``max_iters`` fixed-point corrections with the
``order + 1``-value Adams–Moulton formula until
``|Δdy| <= atol + rtol·max(|dy_old|, |dy|)`` elementwise.
"""
from __future__ import annotations

import collections
import warnings
from fractions import Fraction
from functools import lru_cache
from typing import Tuple

import torch

from ._dynamics import Dynamics
from ._problem import Problem
from ._fixed import FixedGridSolver
from ._rk import RKPlan
from ._tableaux import RK4_38

__all__ = ["bashforth", "moulton", "AdamsSolver", "MAX_ORDER"]

MIN_ORDER = 4
MAX_ORDER = 12
MAX_ITERS = 4


def _polymul(p, q):
    r = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        if a:
            for j, b in enumerate(q):
                r[i + j] += a * b
    return r


def _quadrature_weights(nodes) -> Tuple[Fraction, ...]:
    """∫_0^1 ℓ_j(s) ds for the Lagrange basis ℓ_j on ``nodes``."""
    out = []
    for j, sj in enumerate(nodes):
        p = [Fraction(1)]
        for m, sm in enumerate(nodes):
            if m != j:
                d = sj - sm
                p = _polymul(p, [-sm / d, Fraction(1) / d])
        out.append(sum(c / (k + 1) for k, c in enumerate(p)))
    return tuple(out)


@lru_cache(maxsize=None)
def bashforth_exact(k: int) -> Tuple[Fraction, ...]:
    """Adams–Bashforth weights for ``k`` history values ``f_n, f_{n-1}, …`` (exact)."""
    if k < 1:
        raise ValueError("Adams-Bashforth needs at least one history value")
    return _quadrature_weights([Fraction(-m) for m in range(k)])


@lru_cache(maxsize=None)
def moulton_exact(k: int) -> Tuple[Fraction, ...]:
    """Adams–Moulton weights for ``f_{n+1}, f_n, …`` (``k`` values, exact)."""
    if k < 1:
        raise ValueError("Adams-Moulton needs at least one value")
    return _quadrature_weights([Fraction(1 - m) for m in range(k)])


@lru_cache(maxsize=None)
def bashforth(k: int) -> Tuple[float, ...]:
    return tuple(float(x) for x in bashforth_exact(k))


@lru_cache(maxsize=None)
def moulton(k: int) -> Tuple[float, ...]:
    return tuple(float(x) for x in moulton_exact(k))


def _validate_tables():
    for k in range(1, MAX_ORDER + 1):
        if sum(bashforth_exact(k)) != 1 or sum(moulton_exact(k)) != 1:
            raise AssertionError(f"Adams weights for k={k} do not sum to 1")


_validate_tables()


class AdamsSolver(FixedGridSolver):
    """Adams–Bashforth (``implicit=False``) or Adams–Bashforth–Moulton PECE."""

    OPTIONS = FixedGridSolver.OPTIONS | {"max_order", "max_iters"}

    def __init__(self, problem: Problem, dyn: Dynamics, implicit=True, max_order=MAX_ORDER,
                 max_iters=MAX_ITERS, **options):
        super().__init__(problem, dyn, **options)
        max_order = int(max_order)
        if max_order > MAX_ORDER:
            raise ValueError(f"max_order must be at most {MAX_ORDER}")
        if max_order < MIN_ORDER:
            warnings.warn(f"max_order is below {MIN_ORDER}, so the solver reduces to `rk4`.")
        self.implicit = bool(implicit)
        self.max_order = max_order
        self.max_iters = int(max_iters)
        self.rtol = problem.rtol
        self.atol = problem.atol
        self.rk4 = RKPlan(RK4_38)
        self.order = 4

    def _reset(self):
        self.hist = collections.deque(maxlen=max(self.max_order - 1, 1))
        self.hist_t = None

    def _push(self, t, f):
        if self.hist_t is None or self.hist_t != t:
            self.hist.appendleft(f)
            self.hist_t = t

    def _converged(self, old, new) -> bool:
        with torch.no_grad():
            tol = torch.maximum(old.abs(), new.abs()).mul_(self.rtol).add_(self.atol)
            return bool(((old - new).abs_() <= tol).all())

    def _step(self, t0, dt, t1, y0):
        dyn = self.dyn
        h = self.sign * dt
        f0 = dyn(t0, y0, 1 if self.perturb else 0)
        self._push(t0, f0)
        hist = self.hist
        order = min(len(hist), self.max_order - 1)
        if order < MIN_ORDER - 1:
            y1, _ = self.rk4.step(dyn, t0, dt, t1, y0, f0, h, self.perturb)
            return y1, f0
        beta = bashforth(order)
        dy = torch.mul(hist[0], beta[0] * h)
        for j in range(1, order):
            dy.add_(hist[j], alpha=beta[j] * h)
        if self.implicit:
            gamma = moulton(order + 1)
            delta = torch.mul(hist[0], gamma[1] * h)
            for j in range(1, order):
                delta.add_(hist[j], alpha=gamma[j + 1] * h)
            converged = False
            for _ in range(self.max_iters):
                old = dy
                f = dyn(t1, y0 + dy, -1 if self.perturb else 0)
                dy = torch.add(delta, f, alpha=gamma[0] * h)
                converged = self._converged(old, dy)
                if converged:
                    break
            if not converged:
                warnings.warn("Functional iteration did not converge. Solution may be incorrect.")
                hist.pop()
        return y0 + dy, f0
