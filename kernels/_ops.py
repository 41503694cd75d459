"""``torch.library`` registration of the Triton kernels (namespace ``graphode_triton``).

The namespace ``graphode`` belongs to the C++ extension (``graphode._C``); the
Triton ops live in their own namespace so that both can be loaded at once.

Every op takes the graph as its CSR/CSC arrays plus the split plans of
``_plan`` (``[3, R]`` heavy rows and ``[3, C]`` chunks, for the CSR rows and the
CSC columns) and the split size ``chunk`` the plans were built with.  Each op
has a fake (meta) implementation, so it traces under ``torch.compile`` as an
opaque call, and an autograd formula that calls the matching ``*_backward``
op.  Outputs that a backward call was not asked for are returned as empty
``[0]`` tensors (a custom op must return tensors, never None).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import _attention as A
from . import _common as C
from . import _spmm as S

_NS = "graphode_triton"


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


# =========================================================================== spmm
@torch.library.custom_op(f"{_NS}::spmm", mutates_args=())
def spmm(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    weight: Tensor, x: Tensor, chunk: int,
) -> Tensor:
    return S.spmm_forward(rowptr, col, (row_heavy, row_chunks), weight, x, chunk)


@spmm.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks, weight, x, chunk):
    return torch.empty_like(x)


@torch.library.custom_op(f"{_NS}::spmm_backward", mutates_args=())
def spmm_backward(
    grad_out: Tensor, rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    weight: Tensor, x: Tensor, chunk: int, need_weight: bool, need_x: bool,
) -> Tuple[Tensor, Tensor]:
    gw, gx = S.spmm_backward(
        grad_out, rowptr, col, csc_ptr, csc_row, csc_perm, (row_heavy, row_chunks), (col_heavy, col_chunks),
        weight, x, need_weight, need_x, chunk,
    )
    return (gw if gw is not None else _empty(weight)), (gx if gx is not None else _empty(x))


@spmm_backward.register_fake
def _(grad_out, rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks,
      weight, x, chunk, need_weight, need_x):
    gw = torch.empty_like(weight) if need_weight else _empty(weight)
    gx = torch.empty_like(x) if need_x else _empty(x)
    return gw, gx


def _spmm_setup(ctx, inputs, output):
    (rowptr, col, csc_ptr, csc_row, csc_perm, rh, rc, ch, cc, weight, x, chunk) = inputs
    ctx.save_for_backward(rowptr, col, csc_ptr, csc_row, csc_perm, rh, rc, ch, cc, weight, x)
    ctx.chunk = chunk


def _spmm_bwd(ctx, grad):
    saved = ctx.saved_tensors
    need_w, need_x = ctx.needs_input_grad[9], ctx.needs_input_grad[10]
    if not (need_w or need_x):
        return (None,) * 12
    gw, gx = torch.ops.graphode_triton.spmm_backward(grad, *saved, ctx.chunk, need_w, need_x)
    return (None,) * 9 + (gw if need_w else None, gx if need_x else None, None)


spmm.register_autograd(_spmm_bwd, setup_context=_spmm_setup)


# =========================================================================== edge_attention
@torch.library.custom_op(f"{_NS}::edge_attention", mutates_args=())
def edge_attention(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    q: Tensor, k: Tensor, scale: float, chunk: int,
) -> Tensor:
    return A.edge_attention_forward(rowptr, col, (row_heavy, row_chunks), q, k, scale, chunk)


@edge_attention.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks, q, k, scale, chunk):
    return q.new_empty((col.shape[0], q.shape[1]))


@torch.library.custom_op(f"{_NS}::edge_attention_backward", mutates_args=())
def edge_attention_backward(
    grad_attn: Tensor, attn: Tensor, rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor,
    csc_perm: Tensor, row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    q: Tensor, k: Tensor, scale: float, chunk: int,
) -> Tuple[Tensor, Tensor]:
    return A.edge_attention_backward(
        grad_attn, attn, rowptr, col, csc_ptr, csc_row, csc_perm, (row_heavy, row_chunks), (col_heavy, col_chunks),
        q, k, scale, chunk,
    )


@edge_attention_backward.register_fake
def _(grad_attn, attn, rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks,
      q, k, scale, chunk):
    return torch.empty_like(q), torch.empty_like(k)


def _ea_setup(ctx, inputs, output):
    (rowptr, col, csc_ptr, csc_row, csc_perm, rh, rc, ch, cc, q, k, scale, chunk) = inputs
    ctx.save_for_backward(output, rowptr, col, csc_ptr, csc_row, csc_perm, rh, rc, ch, cc, q, k)
    ctx.scale, ctx.chunk = scale, chunk


def _ea_bwd(ctx, grad):
    attn, *rest = ctx.saved_tensors
    need_q, need_k = ctx.needs_input_grad[9], ctx.needs_input_grad[10]
    if not (need_q or need_k):
        return (None,) * 13
    gq, gk = torch.ops.graphode_triton.edge_attention_backward(grad, attn, *rest, ctx.scale, ctx.chunk)
    return (None,) * 9 + (gq if need_q else None, gk if need_k else None, None, None)


edge_attention.register_autograd(_ea_bwd, setup_context=_ea_setup)


# =========================================================================== attention_diffusion
@torch.library.custom_op(f"{_NS}::attention_diffusion", mutates_args=())
def attention_diffusion(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    q: Tensor, k: Tensor, x: Tensor, scale: float, chunk: int,
) -> Tuple[Tensor, Tensor]:
    """``(out [N, F], lse [N, H])``; lse is float32 (float64 for float64 inputs)."""
    return A.attention_diffusion_forward(rowptr, col, (row_heavy, row_chunks), q, k, x, scale, chunk)


@attention_diffusion.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks, q, k, x, scale, chunk):
    out = torch.empty_like(x)
    lse = q.new_empty((q.shape[0], q.shape[1]), dtype=C.acc_torch_dtype(q.dtype))
    return out, lse


@torch.library.custom_op(f"{_NS}::attention_diffusion_backward", mutates_args=())
def attention_diffusion_backward(
    grad_out: Tensor, lse: Tensor, rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor,
    csc_perm: Tensor, row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    q: Tensor, k: Tensor, x: Tensor, scale: float, chunk: int, need_qk: bool, need_x: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    gq, gk, gx = A.attention_diffusion_backward(
        grad_out, lse, rowptr, col, csc_ptr, csc_row, (row_heavy, row_chunks), (col_heavy, col_chunks),
        q, k, x, scale, need_qk, need_x, chunk,
    )
    return (
        gq if gq is not None else _empty(q),
        gk if gk is not None else _empty(k),
        gx if gx is not None else _empty(x),
    )


@attention_diffusion_backward.register_fake
def _(grad_out, lse, rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks,
      q, k, x, scale, chunk, need_qk, need_x):
    gq = torch.empty_like(q) if need_qk else _empty(q)
    gk = torch.empty_like(k) if need_qk else _empty(k)
    gx = torch.empty_like(x) if need_x else _empty(x)
    return gq, gk, gx


def _ad_setup(ctx, inputs, output):
    (rowptr, col, csc_ptr, csc_row, csc_perm, rh, rc, ch, cc, q, k, x, scale, chunk) = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(lse, rowptr, col, csc_ptr, csc_row, csc_perm, rh, rc, ch, cc, q, k, x)
    ctx.scale, ctx.chunk = scale, chunk


def _ad_bwd(ctx, grad_out, grad_lse):
    # lse is an auxiliary, non-differentiable output (saved for the backward).
    lse, *rest = ctx.saved_tensors
    need_q, need_k, need_x = ctx.needs_input_grad[9], ctx.needs_input_grad[10], ctx.needs_input_grad[11]
    need_qk = need_q or need_k
    if not (need_qk or need_x):
        return (None,) * 14
    if grad_out is None:
        grad_out = torch.zeros_like(rest[-1])
    gq, gk, gx = torch.ops.graphode_triton.attention_diffusion_backward(
        grad_out, lse, *rest, ctx.scale, ctx.chunk, need_qk, need_x
    )
    return (None,) * 9 + (gq if need_q else None, gk if need_k else None, gx if need_x else None, None, None)


attention_diffusion.register_autograd(_ad_bwd, setup_context=_ad_setup)
