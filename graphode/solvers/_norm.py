"""Error norms of the step-size controller.

A norm is any callable ``norm(x) -> 0-dim tensor`` on the (flat) scaled
error ``x = err / (atol + rtol · max(|y0|, |y1|))``; a step is accepted when
``norm(x) <= 1``.  It must return the same value wherever the decision is
made: for a state sharded over processes, the norm reduces across them.

:class:`RMSNorm` is the default (torchdiffeq's ``sqrt(mean(x²))``).  Its
``all_reduce`` hook makes it a distributed norm without changing any solver:
the local ``[Σ x², n]`` pair is handed to ``all_reduce(pair)`` (which must
sum it in place over the ranks, e.g. ``torch.distributed.all_reduce``) before
the square root, so every rank accepts and rejects the same steps.  Fused
kernels that produce ``Σ x²`` directly call :meth:`RMSNorm.from_sumsq`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

__all__ = ["RMSNorm", "rms_norm", "max_rms_norm"]


class RMSNorm:
    """Root-mean-square norm ``sqrt(Σ x² / n)``, optionally reduced across processes.

    Args:
        all_reduce: ``None`` (one process), or a function that sums a 1-D
            float64 tensor ``[Σ x², n]`` in place over all ranks (for
            ``torch.distributed``: ``lambda t: dist.all_reduce(t)``).
    """

    __slots__ = ("all_reduce",)

    def __init__(self, all_reduce: Optional[Callable[[torch.Tensor], object]] = None):
        self.all_reduce = all_reduce

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.all_reduce is None:
            n = x.numel()
            if n == 0:
                return x.new_zeros(())
            return torch.linalg.vector_norm(x) * (1.0 / math.sqrt(n))
        return self.from_sumsq(torch.linalg.vector_norm(x).square(), x.numel())

    def from_sumsq(self, sumsq: torch.Tensor, n: int) -> torch.Tensor:
        """The norm from a local sum of squares over ``n`` elements."""
        if self.all_reduce is None:
            return (sumsq * (1.0 / max(n, 1))).sqrt()
        pair = torch.stack([sumsq.reshape(()).to(torch.float64),
                            torch.tensor(float(n), dtype=torch.float64, device=sumsq.device)])
        self.all_reduce(pair)
        return (pair[0] / pair[1].clamp_min(1.0)).sqrt().to(sumsq.dtype)

    def __repr__(self):
        return "RMSNorm()" if self.all_reduce is None else f"RMSNorm(all_reduce={self.all_reduce!r})"


#: the default norm (one process)
rms_norm = RMSNorm()


def max_rms_norm(sizes: Sequence[int], base: Callable = rms_norm) -> Callable:
    """``max_i base(x_i)`` over consecutive pieces of the given sizes (tuple states)."""
    sizes = list(sizes)

    def norm(x):
        return max(base(p) for p in torch.split(x, sizes))

    return norm
