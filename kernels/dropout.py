"""Triton dropout with the Philox4x32-10 mask of ``graphode.ops.dropout``.

The mask is the one of the CPU kernel (``csrc/cpu/dropout_cpu.h``) and of the
reference (``graphode.ops.reference.dropout``): element ``i`` is kept when
word ``i mod 4`` of Philox4x32-10(counter = (lo32(i // 4), hi32(i // 4), 0, 0),
key = (lo32(seed), hi32(seed))) is ``>= threshold``.  One program handles
``BLOCK`` Philox blocks (``4 * BLOCK`` elements); the rounds are written out
with ``tl.umulhi`` so that the words do not depend on how a Triton version
lays out ``tl.randint4x``'s counter.  The backward is the same kernel on the
gradient (same seed): the mask is regenerated, never stored (the op's
autograd formula is ``graphode/ops/dropout.py``'s).

``scale = 1/(1-p)`` is passed as a one-element tensor of ``x``'s dtype (a
Python float argument would be rounded to float32), so float64 matches the
reference bit for bit.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common as C

BLOCK = 256  # Philox blocks per program (1024 elements)


@triton.jit
def _dropout_kernel(x, out, scale_ptr, n, k0_in, k1_in, threshold, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    c0 = (b & 0xFFFFFFFF).to(tl.uint32)
    c1 = (b >> 32).to(tl.uint32)
    c2 = tl.zeros_like(c0)
    c3 = tl.zeros_like(c0)
    k0 = k0_in.to(tl.uint32)
    k1 = k1_in.to(tl.uint32)
    M0: tl.constexpr = 0xD2511F53
    M1: tl.constexpr = 0xCD9E8D57
    for _ in tl.static_range(10):
        m0 = tl.full(c0.shape, M0, tl.uint32)
        m1 = tl.full(c0.shape, M1, tl.uint32)
        hi0 = tl.umulhi(m0, c0)
        lo0 = m0 * c0
        hi1 = tl.umulhi(m1, c2)
        lo1 = m1 * c2
        c0 = hi1 ^ c1 ^ k0
        c2 = hi0 ^ c3 ^ k1
        c1 = lo1
        c3 = lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    thr = threshold.to(tl.uint32)
    scale = tl.load(scale_ptr)
    base = 4 * b
    for j, u in ((0, c0), (1, c1), (2, c2), (3, c3)):  # unrolled at trace time
        idx = base + j
        m = idx < n
        v = tl.load(x + idx, mask=m, other=0.0)
        keep = u >= thr
        tl.store(out + idx, v * tl.where(keep, scale, tl.zeros_like(scale)), mask=m)


def _threshold(p: float) -> int:
    """The keep test ``u >= floor(p * 2^32)`` (capped at 2^32 - 1), as the CPU kernel computes it;
    the backend does not import graphode.ops (kernels sit below ops; the reference's
    ``dropout_threshold`` is the ground truth the tests compare with)."""
    return 0 if not p > 0.0 else min(int(p * 4294967296.0), 0xFFFFFFFF)


def dropout_raw(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``x * (keep ? 1/(1-p) : 0)`` (no autograd); ``x`` contiguous, ``seed`` any int (mod 2^64)."""
    C.check_launch(x)
    out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    s = int(seed) % 2**64
    scale = torch.full((1,), 1.0 / (1.0 - float(p)), dtype=x.dtype, device=x.device)
    nb = (n + 3) // 4
    grid = (triton.cdiv(nb, BLOCK),)
    _dropout_kernel[grid](x, out, scale, n, s & 0xFFFFFFFF, s >> 32, _threshold(p), BLOCK=BLOCK)
    return out


@torch.library.custom_op("graphode_triton::dropout", mutates_args=())
def dropout_op(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``torch.ops.graphode_triton.dropout``: a plain kernel (``graphode/ops/dropout.py``
    differentiates it: the backward is this op on the gradient, same seed)."""
    return dropout_raw(x, p, seed)


@dropout_op.register_fake
def _(x, p, seed):
    return torch.empty_like(x)
