"""What the Triton attention kernels share (kernels/edge_attention.py,
kernels/attention_diffusion.py): their tiling, their numerics, the softmax
merge of split rows and the launch parameters.

Shapes: ``q``, ``k`` ``[N, H, D]``; ``x`` ``[N, F]``; scores ``s_ijh = scale
<q_ih, k_jh>`` for an edge j -> i; ``a = softmax`` of ``s`` over the in-edges of
i, per head.

Tiling
------
* One program per target row (grid axis 0; CSR) or per source row (CSC, for
  the transposed passes), optionally times a block of ``BLOCK_F`` features
  (grid axis 1).  Rows longer than the split size are skipped by the row
  kernels and handled chunk-wise (``MODE != 0``) with a deterministic combine,
  see ``_plan``.
* The edge loop loads ``BLOCK_E`` neighbour indices and gathers a
  ``[BLOCK_E, BLOCK_H, BLOCK_D]`` tile of ``k`` (or ``q``): each neighbour's
  ``H * D`` values are one contiguous run, so all heads are read in one
  coalesced sweep, and the scores of all heads come out of one reduction over
  the D axis.  ``BLOCK_H``/``BLOCK_D`` are H and D rounded up to powers of two
  (masked lanes load 0, so they add nothing to the dot products).
* Features are gathered as a ``[BLOCK_E, BLOCK_F]`` tile of ``x`` rows; the
  per-head accumulator is ``[BLOCK_H, BLOCK_F]``, updated with the
  ``[BLOCK_E, BLOCK_H, BLOCK_F]`` broadcast product reduced over edges (heads
  are few, so this beats padding them to a 16-wide ``tl.dot``).
* ``BLOCK_E`` is chosen so that the largest tile stays around 4096 elements.

Numerical stability
-------------------
* Online softmax (as FlashAttention): per head a running max ``m`` and sum
  ``l = sum exp(s - m)``.  For each edge block, ``m' = max(m, max s)``, the old
  state is rescaled by ``alpha = exp(m - m')`` (exactly 0 on the first block,
  where ``m = -inf``) and the block adds ``p = exp(s - m')`` <= 1.  No
  exponential ever overflows, whatever the scale of the scores.  Every loop
  block contains at least one real edge, so ``m'`` is finite inside the loop;
  masked edges get ``s = -inf`` and hence ``p = 0``.  Padded head lanes have
  ``q = k = 0`` and therefore finite scores; they are never stored.
* Only ``lse = m + log l`` ``[N, H]`` is kept (``-inf`` for a row without
  in-edges, whose output is 0).  The backward recomputes ``a = exp(s - lse)``,
  which is <= 1 up to rounding, from q and k.
* Chunks of a heavy row are merged with the same rescaling: ``M = max m_c``,
  ``L = sum l_c exp(m_c - M)``, ``acc = sum acc_c exp(m_c - M)``.
* All accumulation is float32 (float64 for float64 inputs).
* The backward uses the two-pass form ``ds = a (t/H - D)`` (``D`` computed in
  a first sweep over the row) instead of the one-pass
  ``sum(a t k)/H - D sum(a k)``, which cancels catastrophically when the
  keys share a large common component.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import triton
import triton.language as tl

from . import _common as C


@triton.jit
def softmax_merge_kernel(ws_m, ws_l, ws_acc, out, lse, heavy, n_heavy, H, F, params,
                          HAS_ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_F: tl.constexpr):
    # Merge the (m, l[, acc]) states of the chunks of one heavy row:
    #   M = max_c m_c,  L = sum_c l_c e^{m_c - M},  A = sum_c acc_c e^{m_c - M}
    # done online in chunk order.  Writes lse[node] (program 0 of axis 1) and,
    # with HAS_ACC, out[node, f-block] = (1/H) sum_h A_h / L_h.
    r = tl.program_id(0).to(tl.int64)
    inv_h = tl.load(params + 1)
    pf = tl.program_id(1)
    h = tl.arange(0, BLOCK_H)
    hm = h < H
    f = pf * BLOCK_F + tl.arange(0, BLOCK_F)
    fm = f < F
    node = tl.load(heavy + r)
    first = tl.load(heavy + n_heavy + r)
    n = tl.load(heavy + 2 * n_heavy + r)
    M = tl.full([BLOCK_H], float("-inf"), dtype=ws_m.dtype.element_ty)
    L = tl.zeros([BLOCK_H], dtype=ws_m.dtype.element_ty)
    A = tl.zeros([BLOCK_H, BLOCK_F], dtype=ws_m.dtype.element_ty)
    for c in range(first, first + n):
        mc = tl.load(ws_m + c * H + h, mask=hm, other=0.0)
        lc = tl.load(ws_l + c * H + h, mask=hm, other=0.0)
        Mn = tl.maximum(M, mc)
        a_old = tl.exp(M - Mn)
        a_new = tl.exp(mc - Mn)
        L = L * a_old + lc * a_new
        if HAS_ACC:
            ac = tl.load(ws_acc + (c * H + h[:, None]) * F + f[None, :], mask=hm[:, None] & fm[None, :], other=0.0)
            A = A * a_old[:, None] + ac * a_new[:, None]
        M = Mn
    if pf == 0:
        tl.store(lse + node * H + h, (M + tl.log(L)).to(lse.dtype.element_ty), mask=hm)
    if HAS_ACC:
        o = tl.sum(tl.where(hm[:, None], A / L[:, None], 0.0), axis=0) * inv_h
        tl.store(out + node * F + f, o.to(out.dtype.element_ty), mask=fm)


_PARAMS: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def launch_params(scale: float, H: int, like: torch.Tensor) -> torch.Tensor:
    """``[scale, 1/H]`` as a 2-element device tensor in the accumulator dtype.

    Triton passes Python floats as float32 scalars, which would round ``scale``
    and ``1/H`` (e.g. 1/3) for float64 inputs; the kernels load them from this
    tensor instead.  Cached per (scale, H, dtype, device), so a steady-state call
    costs no host-to-device copy.
    """
    adt = C.acc_torch_dtype(like.dtype)
    key = (float(scale), int(H), adt, like.device)
    t = _PARAMS.get(key)
    if t is None:
        t = torch.tensor([float(scale), 1.0 / H], dtype=adt).to(like.device)
        _PARAMS[key] = t
        if len(_PARAMS) > 256:
            _PARAMS.popitem(last=False)
    else:
        _PARAMS.move_to_end(key)
    return t


def blocks(H: int, D: int, F: int = 0):
    """``(BLOCK_E, BLOCK_H, BLOCK_D, BLOCK_F)`` for the attention kernels."""
    BH, BD = C.next_pow2(H), C.next_pow2(D)
    BF = C.block_f(F) if F else 1
    BE = C.block_e(BH, max(BD, BF))
    return BE, BH, BD, BF

