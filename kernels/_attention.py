"""Triton kernels for multi-head edge attention and fused attention diffusion.

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
from ._spmm import combine_sum


# =========================================================================== edge_attention
@triton.jit
def _ea_fwd_kernel(
    rowptr, col, q, k, out, lse_buf, ws_m, ws_l, chunks, n_chunks, H, D, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    # MODE 0: a light row, both passes (statistics, then a = exp(s - lse) stores).
    # MODE 1: a chunk of a heavy row, statistics (m, l) only -> ws_m, ws_l.
    # MODE 2: a chunk of a heavy row, writes a with the merged lse_buf[node].
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see _params)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    if MODE == 0:
        node = pid
        start = tl.load(rowptr + node)
        end = tl.load(rowptr + node + 1)
        end = tl.where((end - start) <= CHUNK, end, start)
    else:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
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
def _softmax_merge_kernel(ws_m, ws_l, ws_acc, out, lse, heavy, n_heavy, H, F, params,
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


@triton.jit
def _ea_bwd_rows_kernel(
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
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see _params)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    if MODE == 0:
        node = pid
        start = tl.load(rowptr + node)
        end = tl.load(rowptr + node + 1)
        light = (end - start) <= CHUNK
        end = tl.where(light, end, start)
        h_store = tl.where(light, H, 0)
    else:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
        h_store = H
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
def _ea_bwd_cols_kernel(
    csc_ptr, csc_row, csc_perm, q, a, ga, dot_buf, gk, ws, chunks, n_chunks, H, D, params, CHUNK,
    MODE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    # grad_k_j = scale * sum over out-edges e = j -> i of a_e (ga_e - dot_i) q_i,
    # one program per source j (CSC), so every grad_k row has a single writer.
    pid = tl.program_id(0).to(tl.int64)
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see _params)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    if MODE == 0:
        node = pid
        start = tl.load(csc_ptr + node)
        end = tl.load(csc_ptr + node + 1)
        light = (end - start) <= CHUNK
        end = tl.where(light, end, start)
        h_store = tl.where(light, H, 0)
    else:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
        h_store = H
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


# =========================================================================== attention_diffusion
@triton.jit
def _ad_fwd_kernel(
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
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see _params)
    inv_h = tl.load(params + 1)
    pf = tl.program_id(1)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    f = pf * BLOCK_F + tl.arange(0, BLOCK_F)
    hm = h < H
    fm = f < F
    if MODE == 0:
        node = pid
        start = tl.load(rowptr + node)
        end = tl.load(rowptr + node + 1)
        light = (end - start) <= CHUNK
        end = tl.where(light, end, start)
        f_store = tl.where(light, F, 0)
        h_store = tl.where(light & (pf == 0), H, 0)
    HD = H * D
    if MODE == 1:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
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
def _ad_bwd_rows_kernel(
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
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see _params)
    inv_h = tl.load(params + 1)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    hm = h < H
    if MODE == 0:
        node = pid
        start = tl.load(rowptr + node)
        end = tl.load(rowptr + node + 1)
        light = (end - start) <= CHUNK
        end = tl.where(light, end, start)
        h_store = tl.where(light, H, 0)
    else:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
        h_store = H
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
def _ad_bwd_cols_kernel(
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
    scale = tl.load(params)  # [scale, 1/H] in the accumulator dtype (see _params)
    inv_h = tl.load(params + 1)
    pf = tl.program_id(1)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    fo = pf * BLOCK_F + tl.arange(0, BLOCK_F)
    hm = h < H
    fom = fo < F
    if MODE == 0:
        node = pid
        start = tl.load(csc_ptr + node)
        end = tl.load(csc_ptr + node + 1)
        light = (end - start) <= CHUNK
        end = tl.where(light, end, start)
        f_store = tl.where(light, F, 0)
        h_store = tl.where(light & (pf == 0), H, 0)
    else:
        node = tl.load(chunks + pid)
        start = tl.load(chunks + n_chunks + pid)
        end = tl.load(chunks + 2 * n_chunks + pid)
        f_store = F
        h_store = tl.where(pf == 0, H, 0)
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


# =========================================================================== launchers
_PARAMS: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def _params(scale: float, H: int, like: torch.Tensor) -> torch.Tensor:
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


def _blocks(H: int, D: int, F: int = 0):
    BH, BD = C.next_pow2(H), C.next_pow2(D)
    BF = C.block_f(F) if F else 1
    BE = C.block_e(BH, max(BD, BF))
    return BE, BH, BD, BF


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
    BE, BH, BD, _ = _blocks(H, D)
    ACC = C.acc_dtype(q.dtype)
    nw = C.num_warps(BE * BH * BD)
    params = _params(scale, H, q)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, ACC=ACC, num_warps=nw)
    _ea_fwd_kernel[(N,)](rowptr, col, q, k, out, out, out, out, chunks, nc, H, D, params, chunk, MODE=0, **kw)
    if nc:
        adt = C.acc_torch_dtype(q.dtype)
        ws_m = torch.empty(nc, H, dtype=adt, device=q.device)
        ws_l = torch.empty(nc, H, dtype=adt, device=q.device)
        lse = torch.empty(N, H, dtype=adt, device=q.device)
        _ea_fwd_kernel[(nc,)](rowptr, col, q, k, out, lse, ws_m, ws_l, chunks, nc, H, D, params, chunk, MODE=1, **kw)
        R = heavy.size(1)
        _softmax_merge_kernel[(R, 1)](ws_m, ws_l, ws_m, lse, lse, heavy, R, H, 1, params,
                                      HAS_ACC=False, BLOCK_H=BH, BLOCK_F=1, num_warps=1)
        _ea_fwd_kernel[(nc,)](rowptr, col, q, k, out, lse, ws_m, ws_l, chunks, nc, H, D, params, chunk, MODE=2, **kw)
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
    BE, BH, BD, _ = _blocks(H, D)
    ACC = C.acc_dtype(q.dtype)
    adt = C.acc_torch_dtype(q.dtype)
    nw = C.num_warps(BE * BH * BD)
    params = _params(scale, H, q)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, ACC=ACC, num_warps=nw)
    dot = torch.empty(N, H, dtype=adt, device=q.device)
    heavy, chunks = row_plan
    nc = chunks.size(1)
    _ea_bwd_rows_kernel[(N,)](rowptr, col, k, attn, ga, gq, dot, dot, chunks, nc, H, D, params, chunk, MODE=0, **kw)
    if nc:
        ws = torch.empty(nc, H, dtype=adt, device=q.device)
        _ea_bwd_rows_kernel[(nc,)](rowptr, col, k, attn, ga, gq, dot, ws, chunks, nc, H, D, params, chunk, MODE=1, **kw)
        combine_sum(ws, dot, heavy, H)
        ws = torch.empty(nc, H * D, dtype=adt, device=q.device)
        _ea_bwd_rows_kernel[(nc,)](rowptr, col, k, attn, ga, gq, dot, ws, chunks, nc, H, D, params, chunk, MODE=2, **kw)
        combine_sum(ws, gq, heavy, H * D)
    heavy, chunks = col_plan
    nc = chunks.size(1)
    _ea_bwd_cols_kernel[(N,)](csc_ptr, csc_row, csc_perm, q, attn, ga, dot, gk, gk, chunks, nc, H, D, params, chunk,
                              MODE=0, **kw)
    if nc:
        ws = torch.empty(nc, H * D, dtype=adt, device=q.device)
        _ea_bwd_cols_kernel[(nc,)](csc_ptr, csc_row, csc_perm, q, attn, ga, dot, gk, ws, chunks, nc, H, D, params,
                                   chunk, MODE=1, **kw)
        combine_sum(ws, gk, heavy, H * D)
    return gq, gk


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
    BE, BH, BD, BF = _blocks(H, D, max(F, 1))
    ACC = C.acc_dtype(q.dtype)
    nf = triton.cdiv(max(F, 1), BF)
    nw = C.num_warps(BE * BH * max(BD, BF))
    params = _params(scale, H, q)
    heavy, chunks = row_plan
    nc = chunks.size(1)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, BLOCK_F=BF, ACC=ACC, num_warps=nw)
    _ad_fwd_kernel[(N, nf)](rowptr, col, q, k, x, out, lse, lse, lse, lse, chunks, nc, H, D, F, params, chunk,
                            MODE=0, **kw)
    if nc:
        ws_m = torch.empty(nc, H, dtype=adt, device=q.device)
        ws_l = torch.empty(nc, H, dtype=adt, device=q.device)
        ws_acc = torch.empty(nc, H, max(F, 1), dtype=adt, device=q.device)
        _ad_fwd_kernel[(nc, nf)](rowptr, col, q, k, x, out, lse, ws_m, ws_l, ws_acc, chunks, nc, H, D, F, params,
                                 chunk, MODE=1, **kw)
        R = heavy.size(1)
        _softmax_merge_kernel[(R, nf)](ws_m, ws_l, ws_acc, out, lse, heavy, R, H, F, params,
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
    BE, BH, BD, BF = _blocks(H, D, max(F, 1))
    ACC = C.acc_dtype(q.dtype)
    nf = triton.cdiv(max(F, 1), BF)
    nw = C.num_warps(BE * BH * max(BD, BF))
    params = _params(scale, H, q)
    kw = dict(BLOCK_E=BE, BLOCK_H=BH, BLOCK_D=BD, BLOCK_F=BF, ACC=ACC, num_warps=nw)
    dterm = lse  # placeholder when grad_q/grad_k are not needed
    if need_qk:
        gq = torch.empty_like(q)
        gk = torch.empty_like(k)
        dterm = torch.empty(N, H, dtype=adt, device=q.device)
        heavy, chunks = row_plan
        nc = chunks.size(1)
        _ad_bwd_rows_kernel[(N,)](rowptr, col, q, k, x, g, lse, dterm, gq, dterm, chunks, nc, H, D, F, params,
                                  chunk, MODE=0, **kw)
        if nc:
            ws = torch.empty(nc, H, dtype=adt, device=q.device)
            _ad_bwd_rows_kernel[(nc,)](rowptr, col, q, k, x, g, lse, dterm, gq, ws, chunks, nc, H, D, F, params,
                                       chunk, MODE=1, **kw)
            combine_sum(ws, dterm, heavy, H)
            ws = torch.empty(nc, H * D, dtype=adt, device=q.device)
            _ad_bwd_rows_kernel[(nc,)](rowptr, col, q, k, x, g, lse, dterm, gq, ws, chunks, nc, H, D, F, params,
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
    _ad_bwd_cols_kernel[(N, grid_f)](csc_ptr, csc_row, q, k, x, g, lse, dterm, gk_arg, gx_arg, lse, lse, chunks, nc,
                                     H, D, F, params, chunk, MODE=0, NEED_QK=need_qk, NEED_X=need_x, **kw)
    if nc:
        ws_k = torch.zeros(nc, H * D, dtype=adt, device=q.device) if need_qk else lse
        ws_x = torch.empty(nc, max(F, 1), dtype=adt, device=q.device) if need_x else lse
        _ad_bwd_cols_kernel[(nc, grid_f)](csc_ptr, csc_row, q, k, x, g, lse, dterm, gk_arg, gx_arg, ws_k, ws_x, chunks,
                                          nc, H, D, F, params, chunk, MODE=1, NEED_QK=need_qk, NEED_X=need_x,
                                          **kw)
        if need_qk:
            combine_sum(ws_k, gk, heavy, H * D)
        if need_x:
            combine_sum(ws_x, gx, heavy, F)
    return gq, gk, gx
