"""``dropout``: inverted dropout with a counter-based (Philox4x32-10) mask (public op,
autograd, fake kernel).

Its parts in every layer: ``reference.dropout`` (the ground truth, and
``reference.philox4x32_10`` / ``dropout_mask`` / ``dropout_threshold``),
``csrc/dropout.cpp`` (schema and the CPU wrapper) over ``csrc/cpu/dropout_cpu.h``,
``kernels/dropout.py`` (Triton), ``tests/ops/test_dropout.py`` and
``tests/ops/test_dropout_triton.py``.  No CUDA kernel: on CUDA tensors the
automatic choice is Triton (else the reference).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import reference
from ._dispatch import backend_module, native_fake, resolve_backend

__all__ = ["dropout", "dropout_seed"]

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def dropout_seed(generator: Optional[torch.Generator] = None) -> int:
    """A 63-bit dropout seed drawn from ``generator`` (default: torch's global CPU
    generator), so that ``torch.manual_seed`` / ``seed_everything`` make runs
    reproducible and a checkpoint's RNG state resumes them."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64, generator=generator))


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, seed: Optional[int] = None,
            backend: Optional[str] = None) -> torch.Tensor:
    r"""Inverted dropout in one pass: ``x * (keep ? 1/(1-p) : 0)``.

    Same distribution as ``torch.nn.functional.dropout`` (each element kept with
    probability ``1 - p``, to within 2^-32), but the mask is a pure function of
    ``(seed, element index)``: word ``i mod 4`` of Philox4x32-10 with counter
    ``i // 4`` and key ``seed``, kept when ``>= floor(p 2^32)``.  The kernel
    draws and applies it in one pass, and the backward regenerates it instead
    of storing it.  Every backend gives the same mask for the same seed
    (``graphode.ops.reference.dropout`` is the ground truth).

    Args:
        x: any floating tensor (the cpu kernel: float32 / float64, contiguous).
        p: drop probability in [0, 1].
        training: False returns ``x`` unchanged.
        seed: the mask's key (an int, taken modulo 2^64); None draws one with
            :func:`dropout_seed`.
        backend: None (automatic) or a name from ``BACKENDS``; ``"cuda"`` has
            no kernel for this op (use ``"triton"`` or ``"reference"``).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT:
        raise ValueError(f"x must be a floating tensor, got {x.dtype}")
    p = float(p)
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if seed is None:
        seed = dropout_seed()
    seed = int(seed) % 2**64  # the key is 64 bits
    if seed >= 2**63:  # the op's int argument is int64: the same 64 bits, signed
        seed -= 2**64
    name = resolve_backend(backend, x.device, op="dropout")
    if name == "reference":
        return reference.dropout(x, p, seed)
    impl, x = backend_module(name), x.contiguous()
    if torch.is_grad_enabled() and x.requires_grad:
        return _Dropout.apply(impl, x, p, seed)
    return impl.run("dropout", None, x, p, seed)


class _Dropout(torch.autograd.Function):
    """The autograd formula of dropout for every compiled backend: the backward is the
    same op on the gradient with the same seed (the mask regenerated, never stored),
    itself differentiable, so every order of derivative is available."""

    @staticmethod
    def forward(ctx, impl, x, p, seed):
        ctx.impl, ctx.p, ctx.seed = impl, p, seed
        return impl.run("dropout", None, x, p, seed)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        if torch.is_grad_enabled() and grad.requires_grad:
            g = _Dropout.apply(ctx.impl, grad, ctx.p, ctx.seed)
        else:
            g = ctx.impl.run("dropout", None, grad, ctx.p, ctx.seed)
        return None, g, None, None


# --------------------------------------------------------------------------- fake kernel of graphode._C
@native_fake("dropout")
def _(x, p, seed):
    return torch.empty_like(x)
