"""Triton kernels of edge_attention: the [E, H] attention coefficients, forward
and backward (tiling and numerics: _attention_common)."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import _common as C
from ._attention_common import blocks, launch_params, softmax_merge_kernel
from ._plan import combine_sum


@triton.jit
def edge_attention_forward_kernel(
    rowptr, col, q, k, out, lse_buf, ws_m, ws_l, chunks, n_chunks, H, D, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    # MODE 0: a light row, both passes (statistics, then a = exp(s - lse) stores).
    # MODE 1: a chunk of a heavy row, statistics (m, l) only -> ws_m, ws_l.
    # MODE 2: a chunk of a heavy row, writes a with the merged lse_buf[node].
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see launch_params)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    node, start, end, light = C.row_range(rowptr, chunks, n_chunks, pid, CHUNK, MODE)
    HD = H * D
    qm = hm[:, None] & (d[None, :] < D)
    qi = tl.load(q + node * HD + h[:, None] * D + d[None, :], mask=qm, other=0.0).to(ACC) * scale
    if MODE != 2:
        m = tl.full([BLOCK_H], float("-inf"), dtype=ACC)
        l = tl.zeros([BLOCK_H], dtype=ACC)
        for e0 in range(start, end, BLOCK_E):
            offs = e0 + tl.arange(0, BLOCK_E)
            em = offs < end
            j = tl.load(col + offs, mask=em, other=0)
            kv = tl.load(k + j[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                         mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
            s = tl.sum(kv * qi[None, :, :], axis=2)
            s = tl.where(em[:, None], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=0))
            l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[None, :]), axis=0)
            m = m_new
        if MODE == 1:
            tl.store(ws_m + pid * H + h, m, mask=hm)
            tl.store(ws_l + pid * H + h, l, mask=hm)
        lse = m + tl.log(tl.where(l > 0, l, 1.0))
    else:
        lse = tl.load(lse_buf + node * H + h, mask=hm, other=0.0)
    if MODE != 1:
        for e0 in range(start, end, BLOCK_E):
            offs = e0 + tl.arange(0, BLOCK_E)
            em = offs < end
            j = tl.load(col + offs, mask=em, other=0)
            kv = tl.load(k + j[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                         mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
            s = tl.sum(kv * qi[None, :, :], axis=2)
            a = tl.exp(tl.where(em[:, None], s - lse[None, :], float("-inf")))
            tl.store(out + offs[:, None] * H + h[None, :], a.to(out.dtype.element_ty),
                     mask=em[:, None] & hm[None, :])



@triton.jit
def edge_attention_backward_rows_kernel(
    rowptr, col, k, a, ga, gq, dot_buf, ws, chunks, n_chunks, H, D, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    # With ds = a (ga - dot_i), dot_i = sum_e a ga (per head):
    #   grad_q_i = scale * sum_e ds_e k_{col e}.
    # MODE 0: light row, dot then grad_q (dot also kept in dot_buf for the CSC pass).
    # MODE 1: chunk of a heavy row, partial dot -> ws [C, H].
    # MODE 2: chunk of a heavy row, partial grad_q with the merged dot -> ws [C, H*D].
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see launch_params)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    node, start, end, light = C.row_range(rowptr, chunks, n_chunks, pid, CHUNK, MODE)
    h_store = tl.where(light, H, 0)
    HD = H * D
    qm = hm[:, None] & (d[None, :] < D)
    if MODE != 2:
        dot = tl.zeros([BLOCK_H], dtype=ACC)
        for e0 in range(start, end, BLOCK_E):
            offs = e0 + tl.arange(0, BLOCK_E)
            m2 = (offs < end)[:, None] & hm[None, :]
            av = tl.load(a + offs[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
            gv = tl.load(ga + offs[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
            dot += tl.sum(av * gv, axis=0)
        if MODE == 1:
            tl.store(ws + pid * H + h, dot, mask=hm)
        else:
            tl.store(dot_buf + node * H + h, dot, mask=h < h_store)
    else:
        dot = tl.load(dot_buf + node * H + h, mask=hm, other=0.0)
    if MODE != 1:
        acc = tl.zeros([BLOCK_E, BLOCK_H, BLOCK_D], dtype=ACC)
        for e0 in range(start, end, BLOCK_E):
            offs = e0 + tl.arange(0, BLOCK_E)
            em = offs < end
            m2 = em[:, None] & hm[None, :]
            j = tl.load(col + offs, mask=em, other=0)
            av = tl.load(a + offs[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
            gv = tl.load(ga + offs[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
            ds = av * (gv - dot[None, :])
            kv = tl.load(k + j[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                         mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
            acc += ds[:, :, None] * kv
        g = tl.sum(acc, axis=0) * scale
        hd = h[:, None] * D + d[None, :]
        if MODE == 0:
            tl.store(gq + node * HD + hd, g.to(gq.dtype.element_ty), mask=(h < h_store)[:, None] & qm)
        else:
            tl.store(ws + pid * HD + hd, g, mask=qm)



@triton.jit
def edge_attention_backward_cols_kernel(
    csc_ptr, csc_row, csc_perm, q, a, ga, dot_buf, gk, ws, chunks, n_chunks, H, D, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    # grad_k_j = scale * sum over out-edges e = j -> i of a_e (ga_e - dot_i) q_i,
    # one program per source j (CSC), so every grad_k row has a single writer.
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see launch_params)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    node, start, end, light = C.row_range(csc_ptr, chunks, n_chunks, pid, CHUNK, MODE)
    h_store = tl.where(light, H, 0)
    HD = H * D
    qm = hm[:, None] & (d[None, :] < D)
    acc = tl.zeros([BLOCK_E, BLOCK_H, BLOCK_D], dtype=ACC)
    for p0 in range(start, end, BLOCK_E):
        offs = p0 + tl.arange(0, BLOCK_E)
        em = offs < end
        m2 = em[:, None] & hm[None, :]
        i = tl.load(csc_row + offs, mask=em, other=0)
        e = tl.load(csc_perm + offs, mask=em, other=0)
        av = tl.load(a + e[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
        gv = tl.load(ga + e[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
        dv = tl.load(dot_buf + i[:, None] * H + h[None, :], mask=m2, other=0.0)
        ds = av * (gv - dv)
        qv = tl.load(q + i[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                     mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
        acc += ds[:, :, None] * qv
    g = tl.sum(acc, axis=0) * scale
    hd = h[:, None] * D + d[None, :]
    if MODE == 0:
        tl.store(gk + node * HD + hd, g.to(gk.dtype.element_ty), mask=(h < h_store)[:, None] & qm)
    else:
        tl.store(ws + pid * HD + hd, g, mask=qm)




# --------------------------------------------------------------------------- launchers
def edge_attention_forward(rowptr, col, row_plan, q, k, scale: float, chunk: int) -> torch.Tensor:
    """``[E, H]`` attention, softmax over each target's in-edges."""
    C.check_launch(q)
    N, H, D = q.shape
    E = col.numel()
    out = torch.empty(E, H, dtype=q.dtype, device=q.device)
    if E == 0 or H == 0:
        return out
    heavy, chunks = row_plan
    nc = chunks.size(1)
    BE, BH, BD, _ = blocks(H, D)
    ACC = C.acc_dtype(q.dtype)
    nw = C.num_warps(BE * BH * BD)
    params = launch_params(scale, H, q)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, ACC=ACC, num_warps=nw)
    edge_attention_forward_kernel[(N,)](rowptr, col, q, k, out, out, out, out, chunks, nc, H, D, params, chunk, MODE=0, **kw)
    if nc:
        adt = C.acc_torch_dtype(q.dtype)
        ws_m = torch.empty(nc, H, dtype=adt, device=q.device)
        ws_l = torch.empty(nc, H, dtype=adt, device=q.device)
        lse = torch.empty(N, H, dtype=adt, device=q.device)
        edge_attention_forward_kernel[(nc,)](rowptr, col, q, k, out, lse, ws_m, ws_l, chunks, nc, H, D, params, chunk, MODE=1, **kw)
        R = heavy.size(1)
        softmax_merge_kernel[(R, 1)](ws_m, ws_l, ws_m, lse, lse, heavy, R, H, 1, params,
                                      HAS_ACC=False, BLOCK_H=BH, BLOCK_F=1, num_warps=1)
        edge_attention_forward_kernel[(nc,)](rowptr, col, q, k, out, lse, ws_m, ws_l, chunks, nc, H, D, params, chunk, MODE=2, **kw)
    return out


def edge_attention_backward(grad_attn, attn, rowptr, col, csc_ptr, csc_row, csc_perm, row_plan, col_plan,
                            q, k, scale: float, chunk: int):
    """``(grad_q, grad_k)``."""
    C.check_launch(q)
    N, H, D = q.shape
    ga = grad_attn.contiguous()
    gq = torch.zeros_like(q)
    gk = torch.zeros_like(k)
    if col.numel() == 0 or H == 0 or D == 0:
        return gq, gk
    BE, BH, BD, _ = blocks(H, D)
    ACC = C.acc_dtype(q.dtype)
    adt = C.acc_torch_dtype(q.dtype)
    nw = C.num_warps(BE * BH * BD)
    params = launch_params(scale, H, q)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, ACC=ACC, num_warps=nw)
    dot = torch.empty(N, H, dtype=adt, device=q.device)
    heavy, chunks = row_plan
    nc = chunks.size(1)
    edge_attention_backward_rows_kernel[(N,)](rowptr, col, k, attn, ga, gq, dot, dot, chunks, nc, H, D, params, chunk, MODE=0, **kw)
    if nc:
        ws = torch.empty(nc, H, dtype=adt, device=q.device)
        edge_attention_backward_rows_kernel[(nc,)](rowptr, col, k, attn, ga, gq, dot, ws, chunks, nc, H, D, params, chunk, MODE=1, **kw)
        combine_sum(ws, dot, heavy, H)
        ws = torch.empty(nc, H * D, dtype=adt, device=q.device)
        edge_attention_backward_rows_kernel[(nc,)](rowptr, col, k, attn, ga, gq, dot, ws, chunks, nc, H, D, params, chunk, MODE=2, **kw)
        combine_sum(ws, gq, heavy, H * D)
    heavy, chunks = col_plan
    nc = chunks.size(1)
    edge_attention_backward_cols_kernel[(N,)](csc_ptr, csc_row, csc_perm, q, attn, ga, dot, gk, gk, chunks, nc, H, D, params, chunk,
                              MODE=0, **kw)
    if nc:
        ws = torch.empty(nc, H * D, dtype=adt, device=q.device)
        edge_attention_backward_cols_kernel[(nc,)](csc_ptr, csc_row, csc_perm, q, attn, ga, dot, gk, ws, chunks, nc, H, D, params,
                                   chunk, MODE=1, **kw)
        combine_sum(ws, gk, heavy, H * D)
    return gq, gk

# =========================================================================== custom ops
# torch.ops.graphode_triton.edge_attention[_backward]: graph arrays first (the CSR/CSC
# arrays and the split plans of _plan), the split size ``chunk`` last.  No
# autograd here: graphode/ops/edge_attention.py holds the op's one autograd formula.
@torch.library.custom_op("graphode_triton::edge_attention", mutates_args=())
def edge_attention_op(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    q: Tensor, k: Tensor, scale: float, chunk: int,
) -> Tensor:
    return edge_attention_forward(rowptr, col, (row_heavy, row_chunks), q, k, scale, chunk)


@edge_attention_op.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks, q, k, scale, chunk):
    return q.new_empty((col.shape[0], q.shape[1]))


@torch.library.custom_op("graphode_triton::edge_attention_backward", mutates_args=())
def edge_attention_backward_op(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    grad_attn: Tensor, attn: Tensor, q: Tensor, k: Tensor, scale: float, chunk: int,
) -> Tuple[Tensor, Tensor]:
    return edge_attention_backward(
        grad_attn, attn, rowptr, col, csc_ptr, csc_row, csc_perm, (row_heavy, row_chunks), (col_heavy, col_chunks),
        q, k, scale, chunk,
    )


@edge_attention_backward_op.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks,
      grad_attn, attn, q, k, scale, chunk):
    return torch.empty_like(q), torch.empty_like(k)
