"""Triton kernels of attention_diffusion: the fused (1/H) sum_h A_h x, forward
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
def attention_diffusion_forward_kernel(
    rowptr, col, q, k, x, out, lse, ws_m, ws_l, ws_acc, chunks, n_chunks, H, D, F, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_F: tl.constexpr, ACC: tl.constexpr,
):
    # out[i] = (1/H) sum_h sum_{j -> i} softmax_j(s_ijh) x[j], streamed:
    # per head a running (m, l) and an accumulator acc[h, f] = sum_j e^{s - m} x[j, f].
    # Grid: (rows or chunks, F blocks).  Programs of the same row but different
    # F blocks recompute the (cheap, D-long) scores; for F <= 128 there is one.
    # MODE 0: light row -> out, lse.  MODE 1: chunk -> (m, l, acc) partials.
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see launch_params)
    inv_h = tl.load(params + 1)
    pf = tl.program_id(1)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    f = pf * BLOCK_F + tl.arange(0, BLOCK_F)
    hm = h < H
    fm = f < F
    node, start, end, light = C.row_range(rowptr, chunks, n_chunks, pid, CHUNK, MODE)
    f_store = tl.where(light, F, 0)
    h_store = tl.where(light & (pf == 0), H, 0)
    HD = H * D
    qm = hm[:, None] & (d[None, :] < D)
    qi = tl.load(q + node * HD + h[:, None] * D + d[None, :], mask=qm, other=0.0).to(ACC) * scale
    m = tl.full([BLOCK_H], float("-inf"), dtype=ACC)
    l = tl.zeros([BLOCK_H], dtype=ACC)
    acc = tl.zeros([BLOCK_H, BLOCK_F], dtype=ACC)
    for e0 in range(start, end, BLOCK_E):
        offs = e0 + tl.arange(0, BLOCK_E)
        em = offs < end
        j = tl.load(col + offs, mask=em, other=0)
        kv = tl.load(k + j[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                     mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
        s = tl.sum(kv * qi[None, :, :], axis=2)                     # [BE, BH]
        s = tl.where(em[:, None], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))                    # finite: >= 1 real edge
        alpha = tl.exp(m - m_new)                                   # 0 on the first block
        p = tl.exp(s - m_new[None, :])                              # <= 1; 0 on masked edges
        xv = tl.load(x + j[:, None] * F + f[None, :], mask=em[:, None] & fm[None, :], other=0.0).to(ACC)
        l = l * alpha + tl.sum(p, axis=0)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * xv[:, None, :], axis=0)
        m = m_new
    if MODE == 0:
        has = l > 0
        o = tl.sum(tl.where(hm[:, None] & has[:, None], acc / tl.where(has, l, 1.0)[:, None], 0.0), axis=0) * inv_h
        tl.store(out + node * F + f, o.to(out.dtype.element_ty), mask=f < f_store)
        lse_v = tl.where(has, m + tl.log(tl.where(has, l, 1.0)), float("-inf"))
        tl.store(lse + node * H + h, lse_v.to(lse.dtype.element_ty), mask=h < h_store)
    else:
        tl.store(ws_acc + (pid * H + h[:, None]) * F + f[None, :], acc, mask=hm[:, None] & fm[None, :])
        if pf == 0:
            tl.store(ws_m + pid * H + h, m, mask=hm)
            tl.store(ws_l + pid * H + h, l, mask=hm)



@triton.jit
def attention_diffusion_backward_rows_kernel(
    rowptr, col, q, k, x, g, lse, dterm, gq, ws, chunks, n_chunks, H, D, F, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_F: tl.constexpr, ACC: tl.constexpr,
):
    # Row pass of the backward (one program per target i):
    #   a_ijh = exp(s_ijh - lse_ih),  t_ij = <g_i, x_j>,
    #   D_ih  = (1/H) sum_j a_ijh t_ij                         (sweep 1, kept in dterm)
    #   ds    = a (t/H - D),  grad_q_ih = scale sum_j ds_ijh k_jh   (sweep 2)
    # MODE 0: light row, both sweeps.  MODE 1: chunk, partial D -> ws [C, H].
    # MODE 2: chunk, partial grad_q with the merged D -> ws [C, H*D].
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see launch_params)
    inv_h = tl.load(params + 1)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    node, start, end, light = C.row_range(rowptr, chunks, n_chunks, pid, CHUNK, MODE)
    h_store = tl.where(light, H, 0)
    HD = H * D
    qm = hm[:, None] & (d[None, :] < D)
    qi = tl.load(q + node * HD + h[:, None] * D + d[None, :], mask=qm, other=0.0).to(ACC) * scale
    lse_i = tl.load(lse + node * H + h, mask=hm, other=0.0).to(ACC)
    if MODE != 2:
        Dv = tl.zeros([BLOCK_H], dtype=ACC)
        for e0 in range(start, end, BLOCK_E):
            offs = e0 + tl.arange(0, BLOCK_E)
            em = offs < end
            j = tl.load(col + offs, mask=em, other=0)
            kv = tl.load(k + j[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                         mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
            s = tl.sum(kv * qi[None, :, :], axis=2)
            av = tl.exp(tl.where(em[:, None] & hm[None, :], s - lse_i[None, :], float("-inf")))
            t = tl.zeros([BLOCK_E], dtype=ACC)
            for f0 in range(0, F, BLOCK_F):
                f = f0 + tl.arange(0, BLOCK_F)
                fm = f < F
                gv = tl.load(g + node * F + f, mask=fm, other=0.0).to(ACC)
                xv = tl.load(x + j[:, None] * F + f[None, :], mask=em[:, None] & fm[None, :], other=0.0).to(ACC)
                t += tl.sum(xv * gv[None, :], axis=1)
            Dv += tl.sum(av * t[:, None], axis=0)
        Dv = Dv * inv_h
        if MODE == 1:
            tl.store(ws + pid * H + h, Dv, mask=hm)
        else:
            tl.store(dterm + node * H + h, Dv, mask=h < h_store)
    else:
        Dv = tl.load(dterm + node * H + h, mask=hm, other=0.0)
    if MODE != 1:
        acc = tl.zeros([BLOCK_E, BLOCK_H, BLOCK_D], dtype=ACC)
        for e0 in range(start, end, BLOCK_E):
            offs = e0 + tl.arange(0, BLOCK_E)
            em = offs < end
            j = tl.load(col + offs, mask=em, other=0)
            kv = tl.load(k + j[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                         mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
            s = tl.sum(kv * qi[None, :, :], axis=2)
            av = tl.exp(tl.where(em[:, None] & hm[None, :], s - lse_i[None, :], float("-inf")))
            t = tl.zeros([BLOCK_E], dtype=ACC)
            for f0 in range(0, F, BLOCK_F):
                f = f0 + tl.arange(0, BLOCK_F)
                fm = f < F
                gv = tl.load(g + node * F + f, mask=fm, other=0.0).to(ACC)
                xv = tl.load(x + j[:, None] * F + f[None, :], mask=em[:, None] & fm[None, :], other=0.0).to(ACC)
                t += tl.sum(xv * gv[None, :], axis=1)
            ds = av * (t[:, None] * inv_h - Dv[None, :])
            acc += ds[:, :, None] * kv
        gqv = tl.sum(acc, axis=0) * scale
        hd = h[:, None] * D + d[None, :]
        if MODE == 0:
            tl.store(gq + node * HD + hd, gqv.to(gq.dtype.element_ty), mask=(h < h_store)[:, None] & qm)
        else:
            tl.store(ws + pid * HD + hd, gqv, mask=qm)



@triton.jit
def attention_diffusion_backward_cols_kernel(
    csc_ptr, csc_row, q, k, x, g, lse, dterm, gk, gx, ws_k, ws_x, chunks, n_chunks,
    H, D, F, params, CHUNK,
    MODE: tl.constexpr, NEED_QK: tl.constexpr, NEED_X: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_F: tl.constexpr,
    ACC: tl.constexpr,
):
    # Transposed pass (one program per source j, its out-edges j -> i from CSC):
    #   grad_k_jh = scale sum_i ds_ijh q_ih,   grad_x_j = (1/H) sum_i (sum_h a_ijh) g_i.
    # Grid: (sources or chunks, F blocks of grad_x).  t needs all of F, so each
    # program sweeps F for t and accumulates grad_x on its own block; grad_k is
    # written by the F-block-0 program.  MODE 0: light source.  MODE 1: chunk -> ws.
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see launch_params)
    inv_h = tl.load(params + 1)
    pf = tl.program_id(1)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    fo = pf * BLOCK_F + tl.arange(0, BLOCK_F)
    hm = h < H
    fom = fo < F
    node, start, end, light = C.row_range(csc_ptr, chunks, n_chunks, pid, CHUNK, MODE)
    f_store = tl.where(light, F, 0)
    h_store = tl.where(light & (pf == 0), H, 0)
    HD = H * D
    qm = hm[:, None] & (d[None, :] < D)
    kj = tl.load(k + node * HD + h[:, None] * D + d[None, :], mask=qm, other=0.0).to(ACC) * scale
    acc_k = tl.zeros([BLOCK_E, BLOCK_H, BLOCK_D], dtype=ACC)
    acc_x = tl.zeros([BLOCK_E, BLOCK_F], dtype=ACC)
    for p0 in range(start, end, BLOCK_E):
        offs = p0 + tl.arange(0, BLOCK_E)
        em = offs < end
        m2 = em[:, None] & hm[None, :]
        i = tl.load(csc_row + offs, mask=em, other=0)
        qv = tl.load(q + i[:, None, None] * HD + (h[:, None] * D + d[None, :])[None, :, :],
                     mask=em[:, None, None] & qm[None, :, :], other=0.0).to(ACC)
        s = tl.sum(qv * kj[None, :, :], axis=2)
        lse_i = tl.load(lse + i[:, None] * H + h[None, :], mask=m2, other=0.0).to(ACC)
        av = tl.exp(tl.where(m2, s - lse_i, float("-inf")))  # masked lanes: exactly 0, no overflow
        if NEED_QK:
            t = tl.zeros([BLOCK_E], dtype=ACC)
            for f0 in range(0, F, BLOCK_F):
                f = f0 + tl.arange(0, BLOCK_F)
                fm = f < F
                xv = tl.load(x + node * F + f, mask=fm, other=0.0).to(ACC)
                gv = tl.load(g + i[:, None] * F + f[None, :], mask=em[:, None] & fm[None, :], other=0.0).to(ACC)
                t += tl.sum(gv * xv[None, :], axis=1)
            Dv = tl.load(dterm + i[:, None] * H + h[None, :], mask=m2, other=0.0)
            ds = av * (t[:, None] * inv_h - Dv)
            acc_k += ds[:, :, None] * qv
        if NEED_X:
            abar = tl.sum(av, axis=1) * inv_h
            gv = tl.load(g + i[:, None] * F + fo[None, :], mask=em[:, None] & fom[None, :], other=0.0).to(ACC)
            acc_x += abar[:, None] * gv
    hd = h[:, None] * D + d[None, :]
    if NEED_QK:
        gkv = tl.sum(acc_k, axis=0) * scale
        if MODE == 0:
            tl.store(gk + node * HD + hd, gkv.to(gk.dtype.element_ty), mask=(h < h_store)[:, None] & qm)
        else:
            tl.store(ws_k + pid * HD + hd, gkv, mask=(h < h_store)[:, None] & qm)
    if NEED_X:
        gxv = tl.sum(acc_x, axis=0)
        if MODE == 0:
            tl.store(gx + node * F + fo, gxv.to(gx.dtype.element_ty), mask=fo < f_store)
        else:
            tl.store(ws_x + pid * F + fo, gxv, mask=fom)



# --------------------------------------------------------------------------- launchers
def attention_diffusion_forward(rowptr, col, row_plan, q, k, x, scale: float, chunk: int):
    """``(out [N, F], lse [N, H])``; lse is float32 (float64 for float64 inputs), ``-inf`` on empty rows."""
    C.check_launch(q)
    N, H, D = q.shape
    F = x.size(1)
    adt = C.acc_torch_dtype(q.dtype)
    out = torch.empty(N, F, dtype=x.dtype, device=x.device)
    lse = torch.empty(N, H, dtype=adt, device=q.device)
    if H == 0:
        out.zero_()
        return out, lse
    BE, BH, BD, BF = blocks(H, D, max(F, 1))
    ACC = C.acc_dtype(q.dtype)
    nf = triton.cdiv(max(F, 1), BF)
    nw = C.num_warps(BE * BH * max(BD, BF))
    params = launch_params(scale, H, q)
    heavy, chunks = row_plan
    nc = chunks.size(1)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, BLOCK_F=BF, ACC=ACC, num_warps=nw)
    attention_diffusion_forward_kernel[(N, nf)](rowptr, col, q, k, x, out, lse, lse, lse, lse, chunks, nc, H, D, F, params, chunk,
                            MODE=0, **kw)
    if nc:
        ws_m = torch.empty(nc, H, dtype=adt, device=q.device)
        ws_l = torch.empty(nc, H, dtype=adt, device=q.device)
        ws_acc = torch.empty(nc, H, max(F, 1), dtype=adt, device=q.device)
        attention_diffusion_forward_kernel[(nc, nf)](rowptr, col, q, k, x, out, lse, ws_m, ws_l, ws_acc, chunks, nc, H, D, F, params,
                                 chunk, MODE=1, **kw)
        R = heavy.size(1)
        softmax_merge_kernel[(R, nf)](ws_m, ws_l, ws_acc, out, lse, heavy, R, H, F, params,
                                       HAS_ACC=True, BLOCK_H=BH, BLOCK_F=BF, num_warps=C.num_warps(BH * BF))
    return out, lse


def attention_diffusion_backward(grad_out, lse, rowptr, col, csc_ptr, csc_row, row_plan, col_plan,
                                 q, k, x, scale: float, need_qk: bool, need_x: bool, chunk: int):
    """``(grad_q or None, grad_k or None, grad_x or None)``."""
    C.check_launch(q)
    N, H, D = q.shape
    F = x.size(1)
    g = grad_out.contiguous()
    adt = C.acc_torch_dtype(q.dtype)
    gq = gk = gx = None
    if not (need_qk or need_x):
        return gq, gk, gx
    BE, BH, BD, BF = blocks(H, D, max(F, 1))
    ACC = C.acc_dtype(q.dtype)
    nf = triton.cdiv(max(F, 1), BF)
    nw = C.num_warps(BE * BH * max(BD, BF))
    params = launch_params(scale, H, q)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, BLOCK_F=BF, ACC=ACC, num_warps=nw)
    dterm = lse  # placeholder when grad_q/grad_k are not needed
    if need_qk:
        gq = torch.empty_like(q)
        gk = torch.empty_like(k)
        dterm = torch.empty(N, H, dtype=adt, device=q.device)
        heavy, chunks = row_plan
        nc = chunks.size(1)
        attention_diffusion_backward_rows_kernel[(N,)](rowptr, col, q, k, x, g, lse, dterm, gq, dterm, chunks, nc, H, D, F, params,
                                  chunk, MODE=0, **kw)
        if nc:
            ws = torch.empty(nc, H, dtype=adt, device=q.device)
            attention_diffusion_backward_rows_kernel[(nc,)](rowptr, col, q, k, x, g, lse, dterm, gq, ws, chunks, nc, H, D, F, params,
                                       chunk, MODE=1, **kw)
            combine_sum(ws, dterm, heavy, H)
            ws = torch.empty(nc, H * D, dtype=adt, device=q.device)
            attention_diffusion_backward_rows_kernel[(nc,)](rowptr, col, q, k, x, g, lse, dterm, gq, ws, chunks, nc, H, D, F, params,
                                       chunk, MODE=2, **kw)
            combine_sum(ws, gq, heavy, H * D)
    if need_x:
        gx = torch.empty_like(x)
    heavy, chunks = col_plan
    nc = chunks.size(1)
    gk_arg = gk if gk is not None else lse
    gx_arg = gx if gx is not None else lse
    # Without grad_x, one F block suffices (grad_k is owned by block 0).
    grid_f = nf if need_x else 1
    attention_diffusion_backward_cols_kernel[(N, grid_f)](csc_ptr, csc_row, q, k, x, g, lse, dterm, gk_arg, gx_arg, lse, lse, chunks, nc,
                                     H, D, F, params, chunk, MODE=0, NEED_QK=need_qk, NEED_X=need_x, **kw)
    if nc:
        ws_k = torch.zeros(nc, H * D, dtype=adt, device=q.device) if need_qk else lse
        ws_x = torch.empty(nc, max(F, 1), dtype=adt, device=q.device) if need_x else lse
        attention_diffusion_backward_cols_kernel[(nc, grid_f)](csc_ptr, csc_row, q, k, x, g, lse, dterm, gk_arg, gx_arg, ws_k, ws_x, chunks,
                                          nc, H, D, F, params, chunk, MODE=1, NEED_QK=need_qk, NEED_X=need_x,
                                          **kw)
        if need_qk:
            combine_sum(ws_k, gk, heavy, H * D)
        if need_x:
            combine_sum(ws_x, gx, heavy, F)
    return gq, gk, gx

# =========================================================================== custom ops
# torch.ops.graphode_triton.attention_diffusion[_backward]: graph arrays first (the CSR/CSC
# arrays and the split plans of _plan), the split size ``chunk`` last.  No
# autograd here: graphode/ops/attention_diffusion.py holds the op's one autograd formula.
@torch.library.custom_op("graphode_triton::attention_diffusion", mutates_args=())
def attention_diffusion_op(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    q: Tensor, k: Tensor, x: Tensor, scale: float, chunk: int,
) -> Tuple[Tensor, Tensor]:
    """``(out [N, F], lse [N, H])``; lse is float32 (float64 for float64 inputs)."""
    return attention_diffusion_forward(rowptr, col, (row_heavy, row_chunks), q, k, x, scale, chunk)


@attention_diffusion_op.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks, q, k, x, scale, chunk):
    out = torch.empty_like(x)
    lse = q.new_empty((q.shape[0], q.shape[1]), dtype=C.acc_torch_dtype(q.dtype))
    return out, lse


@torch.library.custom_op("graphode_triton::attention_diffusion_backward", mutates_args=())
def attention_diffusion_backward_op(
    rowptr: Tensor, col: Tensor, csc_ptr: Tensor, csc_row: Tensor, csc_perm: Tensor,
    row_heavy: Tensor, row_chunks: Tensor, col_heavy: Tensor, col_chunks: Tensor,
    grad_out: Tensor, lse: Tensor, q: Tensor, k: Tensor, x: Tensor, scale: float, need_qk: bool, need_x: bool,
    chunk: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    gq, gk, gx = attention_diffusion_backward(
        grad_out, lse, rowptr, col, csc_ptr, csc_row, (row_heavy, row_chunks), (col_heavy, col_chunks),
        q, k, x, scale, need_qk, need_x, chunk,
    )
    return (
        gq if gq is not None else q.new_empty(0),
        gk if gk is not None else k.new_empty(0),
        gx if gx is not None else x.new_empty(0),
    )


@attention_diffusion_backward_op.register_fake
def _(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks,
      grad_out, lse, q, k, x, scale, need_qk, need_x, chunk):
    gq = torch.empty_like(q) if need_qk else q.new_empty(0)
    gk = torch.empty_like(k) if need_qk else k.new_empty(0)
    gx = torch.empty_like(x) if need_x else x.new_empty(0)
    return gq, gk, gx
