"""Triton kernels of spmm: SpMM over CSR/CSC, forward, transposed (grad_x)
and SDDMM (grad_w).

Tiling
------
* Grid axis 0 is a *row* (``MODE == 0``: a target's in-edges for the forward,
  a source's out-edges for the transposed product) or, for rows longer than
  the split size, a *chunk* of a heavy row (``MODE == 1``, see ``_plan``).
  Grid axis 1 is a block of ``BLOCK_F`` feature columns.
* A program streams its edges in blocks of ``BLOCK_E``: it loads ``BLOCK_E``
  column indices and weights, gathers the ``[BLOCK_E, BLOCK_F]`` tile of ``x``
  rows (each a contiguous, coalesced run of ``BLOCK_F`` values) and
  accumulates ``w * x`` into a ``[BLOCK_E, BLOCK_F]`` register accumulator,
  reduced over the edge axis once at the end (one tree reduction per program,
  not per block).
* Accumulation is float32 (float64 for float64 inputs); float16/bfloat16 are
  widened on load and rounded once when stored.
* The transposed product for ``grad_x`` is the same kernel run over the CSC
  arrays: ``csc_row`` plays ``col`` and the weight of position ``p`` is
  ``w[csc_perm[p]]`` (``HAS_PERM``); each ``grad_x`` row is owned by exactly
  one program, so no atomics are needed.
* The SDDMM ``grad_w[e] = <g[i], x[col[e]]>`` is row-parallel as well (one
  load of ``g[i]`` per feature block serves ``BLOCK_E`` edges); heavy rows are
  cut in chunks which write disjoint edge ranges, so they need no combine.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import _common as C
from ._plan import combine_sum


@triton.jit
def spmm_kernel(
    ptr, idx, perm, w, x, y, ws, chunks, n_chunks, F, CHUNK,
    HAS_PERM: tl.constexpr, MODE: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr, ACC: tl.constexpr,
):
    # y[node] = sum_{e in row(node)} w[e] * x[idx[e]]   (idx = col, or csc_row with perm)
    pid = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fm = f < F
    node, start, end, light = C.row_range(ptr, chunks, n_chunks, pid, CHUNK, MODE)  # heavy rows: no store
    f_store = tl.where(light, F, 0)
    acc = tl.zeros([BLOCK_E, BLOCK_F], dtype=ACC)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + tl.arange(0, BLOCK_E)
        em = offs < end
        j = tl.load(idx + offs, mask=em, other=0)
        if HAS_PERM:
            eid = tl.load(perm + offs, mask=em, other=0)
        else:
            eid = offs
        wv = tl.load(w + eid, mask=em, other=0.0).to(ACC)
        xv = tl.load(x + j[:, None] * F + f[None, :], mask=em[:, None] & fm[None, :], other=0.0).to(ACC)
        acc += wv[:, None] * xv
    out = tl.sum(acc, axis=0)
    if MODE == 0:
        tl.store(y + node * F + f, out.to(y.dtype.element_ty), mask=f < f_store)
    else:
        tl.store(ws + pid * F + f, out, mask=fm)



@triton.jit
def sddmm_kernel(
    rowptr, col, g, x, gw, chunks, n_chunks, F, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr, ACC: tl.constexpr,
):
    # gw[e] = <g[i], x[col[e]]> for the edges e of row i (or of one chunk of it)
    pid = tl.program_id(0).to(tl.int64)
    node, start, end, light = C.row_range(rowptr, chunks, n_chunks, pid, CHUNK, MODE)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + tl.arange(0, BLOCK_E)
        em = offs < end
        j = tl.load(col + offs, mask=em, other=0)
        acc = tl.zeros([BLOCK_E, BLOCK_F], dtype=ACC)
        for f0 in range(0, F, BLOCK_F):
            f = f0 + tl.arange(0, BLOCK_F)
            fm = f < F
            gv = tl.load(g + node * F + f, mask=fm, other=0.0).to(ACC)
            xv = tl.load(x + j[:, None] * F + f[None, :], mask=em[:, None] & fm[None, :], other=0.0).to(ACC)
            acc += xv * gv[None, :]
        tl.store(gw + offs, tl.sum(acc, axis=1).to(gw.dtype.element_ty), mask=em)



# --------------------------------------------------------------------------- launchers
def _rowwise_spmm(ptr, idx, perm, w, x, y, plan, chunk: int) -> None:
    """``y[n] = sum_{p in ptr[n]:ptr[n+1]} w[perm[p] or p] * x[idx[p]]`` for all n."""
    N, F = y.shape
    if N == 0 or F == 0:
        return
    heavy, chunks = plan
    BF = C.block_f(F)
    BE = C.block_e(BF)
    ACC = C.acc_dtype(x.dtype)
    has_perm = perm is not None
    perm_arg = perm if has_perm else idx
    nf = triton.cdiv(F, BF)
    nw = C.num_warps(BE * BF)
    n_chunks = chunks.size(1)
    spmm_kernel[(N, nf)](
        ptr, idx, perm_arg, w, x, y, y, chunks, n_chunks, F, chunk,
        HAS_PERM=has_perm, MODE=0, BLOCK_E=BE, BLOCK_F=BF, ACC=ACC, num_warps=nw,
    )
    if n_chunks:
        ws = torch.empty(n_chunks, F, dtype=C.acc_torch_dtype(x.dtype), device=x.device)
        spmm_kernel[(n_chunks, nf)](
            ptr, idx, perm_arg, w, x, y, ws, chunks, n_chunks, F, chunk,
            HAS_PERM=has_perm, MODE=1, BLOCK_E=BE, BLOCK_F=BF, ACC=ACC, num_warps=nw,
        )
        combine_sum(ws, y, heavy, F)


def spmm_forward(rowptr, col, row_plan, weight, x, chunk: int) -> torch.Tensor:
    """``y = A @ x`` with ``A[i, col[e]] = weight[e]`` (CSR over targets)."""
    C.check_launch(x)
    y = torch.empty_like(x)
    _rowwise_spmm(rowptr, col, None, weight, x, y, row_plan, chunk)
    return y


def spmm_backward(
    grad_out, rowptr, col, csc_ptr, csc_row, csc_perm, row_plan, col_plan, weight, x,
    need_weight: bool, need_x: bool, chunk: int,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(grad_weight [E] or None, grad_x [N, F] or None)``."""
    C.check_launch(x)
    g = grad_out.contiguous()
    gw = gx = None
    if need_x:
        # grad_x = A^T g: walk the out-edges of every source (CSC), one program
        # per source row, weights gathered through csc_perm.
        gx = torch.empty_like(x)
        _rowwise_spmm(csc_ptr, csc_row, csc_perm, weight, g, gx, col_plan, chunk)
    if need_weight:
        N, F = x.shape
        E = col.numel()
        gw = torch.empty(E, dtype=weight.dtype, device=weight.device)
        if E and F:
            heavy, chunks = row_plan
            BF = C.block_f(F)
            BE = C.block_e(BF)
            ACC = C.acc_dtype(x.dtype)
            nw = C.num_warps(BE * BF)
            n_chunks = chunks.size(1)
            sddmm_kernel[(N,)](rowptr, col, g, x, gw, chunks, n_chunks, F, chunk,
                                MODE=0, BLOCK_E=BE, BLOCK_F=BF, ACC=ACC, num_warps=nw)
            if n_chunks:
                sddmm_kernel[(n_chunks,)](rowptr, col, g, x, gw, chunks, n_chunks, F, chunk,
                                           MODE=1, BLOCK_E=BE, BLOCK_F=BF, ACC=ACC, num_warps=nw)
        elif E:
            gw.zero_()
    return gw, gx

# =========================================================================== custom ops
# torch.ops.graphode_triton.spmm[_backward]: graph arrays first (the CSR/CSC
# arrays and the split plans of _plan), the split size ``chunk`` last.  No
# autograd here: graphode/ops/spmm.py holds the op's one autograd formula.
@torch.library.custom_op("graphode_triton::spmm", mutates_args=())
def spmm_op(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    weight: Tensor, x: Tensor, chunk: int,
) -> Tensor:
    return spmm_forward(rowptr, col, (row_heavy, row_chunks), weight, x, chunk)


@spmm_op.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks, weight, x, chunk):
    return torch.empty_like(x)


@torch.library.custom_op("graphode_triton::spmm_backward", mutates_args=())
def spmm_backward_op(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    grad_out: Tensor, weight: Tensor, x: Tensor, need_weight: bool, need_x: bool, chunk: int,
) -> Tuple[Tensor, Tensor]:
    gw, gx = spmm_backward(
        grad_out, rowptr, col, csc_ptr, csc_row, csc_perm, (row_heavy, row_chunks), (col_heavy, col_chunks),
        weight, x, need_weight, need_x, chunk,
    )
    return (gw if gw is not None else weight.new_empty(0)), (gx if gx is not None else x.new_empty(0))


@spmm_backward_op.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks,
      grad_out, weight, x, need_weight, need_x, chunk):
    gw = torch.empty_like(weight) if need_weight else weight.new_empty(0)
    gx = torch.empty_like(x) if need_x else x.new_empty(0)
    return gw, gx
