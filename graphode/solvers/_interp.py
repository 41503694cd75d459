"""Dense output: interpolation inside an accepted step, as weights on data.

All interpolants here are linear in the step data, so we evaluate them by
computing scalar weights in Python (double precision) and doing one fused
linear combination on the device.

* Quartic interpolant (adaptive RK, as torchdiffeq/Shampine): the degree-4
  polynomial ``p(θ)`` on ``θ ∈ [0, 1]`` with ``p(0)=y0, p(1)=y1,
  p(1/2)=y_mid, p'(0)=h f0, p'(1)=h f1``.  Because ``y1``, ``y_mid`` are
  themselves ``y0 + h Σ w_i k_i``, the interpolant is a continuous RK
  extension ``y(θ) = y0 + h Σ_i b_i(θ) k_i``; :func:`quartic_stage_weights`
  returns ``b_i(θ)``.
* Cubic Hermite and linear interpolation for fixed-grid solvers.
"""
from __future__ import annotations

from fractions import Fraction
from typing import List, Sequence, Tuple

import torch

from ._tableaux import polyval

__all__ = ["quartic_stage_weights", "hermite_cubic", "linear"]


def _solve_exact(m: List[List[Fraction]], rhs: List[List[Fraction]]) -> List[List[Fraction]]:
    n = len(m)
    aug = [row[:] + r[:] for row, r in zip(m, rhs)]
    for col in range(n):
        piv = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[piv] = aug[piv], aug[col]
        pv = aug[col][col]
        aug[col] = [x / pv for x in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [x - f * y for x, y in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


def _quartic_basis() -> Tuple[Tuple[float, ...], ...]:
    """Monomial coefficients of the 5 cardinal functions for (y0, hf0, y1, hf1, ymid)."""
    half = Fraction(1, 2)
    # Conditions on p(θ) = Σ_k c_k θ^k, k = 0..4.
    rows = [
        [Fraction(1) if k == 0 else Fraction(0) for k in range(5)],          # p(0)
        [Fraction(1) if k == 1 else Fraction(0) for k in range(5)],          # p'(0)
        [Fraction(1) for k in range(5)],                                     # p(1)
        [Fraction(k) for k in range(5)],                                     # p'(1)
        [half ** k for k in range(5)],                                       # p(1/2)
    ]
    ident = [[Fraction(int(i == j)) for j in range(5)] for i in range(5)]
    inv = _solve_exact(rows, ident)  # columns: cardinal function for each datum
    # inv[k][d] = coefficient of θ^k in the cardinal function of datum d
    return tuple(tuple(float(inv[k][d]) for k in range(5)) for d in range(5))


_QUARTIC = _quartic_basis()


def quartic_stage_weights(theta: float, b: Sequence[float], b_mid: Sequence[float]) -> List[float]:
    """Weights ``b_i(θ)`` with ``y(t0 + θh) = y0 + h Σ_i b_i(θ) k_i``.

    Uses ``f0 = k_0`` and ``f1 = k_{s-1}`` (the last stage, evaluated at the
    end of the step).
    """
    w_y0, w_f0, w_y1, w_f1, w_mid = (polyval(c, theta) for c in _QUARTIC)
    # w_y0 + w_y1 + w_mid == 1, so y0's total weight is exactly 1.
    out = [w_y1 * bi + w_mid * mi for bi, mi in zip(b, b_mid)]
    out[0] += w_f0
    out[-1] += w_f1
    return out


def hermite_cubic(t0: float, y0, f0, t1: float, y1, f1, t: float, sign: float = 1.0):
    """Cubic Hermite interpolation; ``f0, f1`` are user-time derivatives, ``sign`` maps to internal time.

    Written as ``y0 + increment`` (the basis functions of ``y0`` and ``y1`` sum to one).
    """
    h = t1 - t0
    x = (t - t0) / h
    h10 = x * (1 - x) ** 2
    h01 = x * x * (3 - 2 * x)
    h11 = x * x * (x - 1)
    inc = torch.sub(y1, y0).mul_(h01)
    inc.add_(f0, alpha=h10 * h * sign)
    inc.add_(f1, alpha=h11 * h * sign)
    return inc.add_(y0)


def linear(t0: float, y0, t1: float, y1, t: float):
    if t == t0:
        return y0
    if t == t1:
        return y1
    return torch.lerp(y0, y1, (t - t0) / (t1 - t0))
