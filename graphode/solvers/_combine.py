"""Stage combinations ``base + Σ_j α_j x_j``: the inner loop of every Runge–Kutta method.

The increment ``Σ_j α_j x_j`` is summed first and added to ``base`` once, so
the rounding error of a step is one rounding at the state's magnitude, not
one per term (in float32 this keeps e.g. event times and long fixed-grid
solves as precise as summing the increment separately, as torchdiffeq
does).  This is the one place a fused kernel plugs in.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch

__all__ = ["combine", "lincomb"]


def lincomb(terms: Iterable[Tuple[float, torch.Tensor]]) -> Optional[torch.Tensor]:
    """``Σ_j α_j x_j`` over the non-zero ``α_j`` (a new tensor), or ``None`` if there are none."""
    out = None
    for alpha, x in terms:
        if alpha == 0.0:
            continue
        if out is None:
            out = torch.mul(x, alpha)
        else:
            out.add_(x, alpha=alpha)
    return out


def combine(base: torch.Tensor, terms) -> torch.Tensor:
    """``base + Σ_j α_j x_j`` for ``terms = [(α_j, x_j)]`` (zeros skipped; ``base`` itself if none)."""
    terms = [(a, x) for a, x in terms if a != 0.0]
    if not terms:
        return base
    if len(terms) == 1:
        a, x = terms[0]
        return torch.add(base, x, alpha=a)
    return lincomb(terms).add_(base)
