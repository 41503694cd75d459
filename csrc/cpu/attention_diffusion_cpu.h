// graphode CPU kernels of attention_diffusion: the fused attention diffusion
// out[i] = (1/H) sum_h sum_{j->i} a_ijh x[j], forward and backward
// (header-only, no torch).  Notation and row helpers: attention_common.h.
//
// The forward never materialises an [E,*] array and keeps lse [N, H]; the
// backward keeps one [E, 1+H] temporary of per-edge records (c, ds), which
// makes its column pass a pure gather-reduce (see there).
#pragma once

#include "cpu/attention_common.h"

namespace graphode {
namespace cpu {

/// Fused forward: out [N, F] = (1/H) sum_h sum_{j->i} a_ijh x[j];
/// lse [N, H] = log sum_{j->i} exp(s_ijh).  A row without in-edges gets
/// out = 0 and lse = -inf (the log of an empty sum).
///
/// Streaming (online) softmax per row and head, FlashAttention-style, but with
/// the feature accumulation done once per edge instead of once per edge and
/// head.  For each row:
///   pass 1, per block of <= kAttnBlock in-edges: scores s [nb, H] into
///     scratch; block max per head; running (m_h, l_h) merged as
///       m' = max(m, max_block s),  l' = l e^(m - m') + sum_block e^(s - m')
///     so every exp argument is <= 0 (no overflow) and l stays >= 1 once a
///     row has an edge; lse_h = m_h + log l_h.
///   pass 2: the weight of x[j] is the head average c_ij = (1/H) sum_h
///     e^(s_ijh - lse_ih), and out[i] = sum_j c_ij x[j] is one register-tiled
///     gather-reduce over F (gather_axpy, tiles of kAttnTile vectors).  When
///     the row fits one block (the common case) the block's e^(s - m) are
///     still in scratch and c needs no recomputation; longer rows recompute
///     their block scores (D-work only, which is cheaper than keeping H
///     separate, rescaled F-accumulators).
/// Memory: lse plus O(kAttnBlock * H) scratch per thread; x and k rows are
/// gathered once per edge (twice for k on rows longer than kAttnBlock), and
/// prefetched by the score loop kPrefetchDistance edges ahead.
template <class T, int HH, bool Far>
int attention_diffusion_forward_impl(const GraphView& g, const T* q, const T* k, const T* x, int64_t H_, int64_t D,
                                     int64_t F, double scale_d, T* out, T* lse, Context ctx) {
  const int64_t N = g.num_nodes, E = g.num_edges, H = HH > 0 ? HH : H_, HD = H * D;
  constexpr int64_t W = Simd<T>::W;
  const T scale = T(scale_d), invH = T(1) / T(H);
  const int nt = plan_threads(ctx.threads, E * (HD + F + 8 * H) + N * F);
  int err = kOk;
  const int64_t HR = HeadRep<T>(H).HR;
  const int64_t scratch_size = kAttnBlock * H + W + kAttnBlock + W + 2 * HR + 4 * H;
  for_each_row_part(
      g.rowptr, N, E, nt, [&] { return std::vector<T>(scratch_size); },
      [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
        const int64_t part_end = g.rowptr[r1];
        Heads<T, HH, Far> rh(H, D);
        T* s = buf.data();                // [kAttnBlock H + W] scores, then exps
        T* c = s + kAttnBlock * H + W;    // [kAttnBlock + W] head-averaged weights
        rh.rep = c + kAttnBlock + W;      // [HR] reduction scratch (generic path)
        rh.mrep = rh.rep + HR;            // [HR]
        T* m = rh.mrep + HR;              // [H] running max
        T* l = m + H;                     // [H] running sum of exp(s - m)
        T* bm = l + H;                    // [H] block max / block sum
        T* w = bm + H;                    // [H] per-head weights of combine
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t e0 = g.rowptr[i], e1 = g.rowptr[i + 1], n = e1 - e0;
          T* yi = out + i * F;
          T* lsei = lse + i * H;
          if (n == 0 || !indices_ok(g.col + e0, n, N)) {
            if (n != 0) set_error(err, kBadCol);
            fill(yi, T(0), F);
            fill(lsei, neg_inf<T>(), H);
            continue;
          }
          const T* qi = q + i * HD;
          if (n <= kAttnBlock) {
            // one block: max, exp and sum over the scores in scratch, then one gather
            rh.scores(qi, k, g.col + e0, n, scale, s, part_end - e0, x, F);
            if constexpr (HH > 0) {
              rh.row_forward(s, n, invH, lsei, c);
            } else {
              rh.max(s, n, m);  // max shift: every exp argument <= 0
              rh.exp_sub(s, n, m, l);
              rh.lse(m, l, lsei);
              for (int64_t h = 0; h < H; ++h) w[h] = invH / l[h];
              rh.combine(s, n, w, c);
            }
            // the x rows were prefetched by the score loop: npf = 0
            gather_axpy<T, kAttnTile, Far>(n, g.col + e0, c, x, F, yi, /*accumulate=*/false, 0);
            continue;
          }
          // ---- pass 1: online softmax statistics over blocks
          fill(m, neg_inf<T>(), H);
          fill(l, T(0), H);
          for (int64_t b = e0; b < e1; b += kAttnBlock) {
            const int64_t nb = std::min(kAttnBlock, e1 - b);
            rh.scores(qi, k, g.col + b, nb, scale, s, part_end - b, nullptr, 0);
            rh.max(s, nb, bm);
            for (int64_t h = 0; h < H; ++h) {
              const T mn = std::max(m[h], bm[h]);
              // rescale the running sum to the new max (l = 0 before the first block)
              if (l[h] != T(0)) l[h] *= exp_scalar(m[h] - mn);
              m[h] = mn;
            }
            rh.exp_sub(s, nb, m, bm);
            for (int64_t h = 0; h < H; ++h) l[h] += bm[h];
          }
          rh.lse(m, l, lsei);
          // ---- pass 2: out[i] = sum_j c_ij x[j], block by block
          fill(w, invH, H);
          for (int64_t b = e0; b < e1; b += kAttnBlock) {
            const int64_t nb = std::min(kAttnBlock, e1 - b);
            rh.scores(qi, k, g.col + b, nb, scale, s, part_end - b, x, F);
            rh.exp_sub(s, nb, lsei, nullptr);
            rh.combine(s, nb, w, c);
            gather_axpy<T, kAttnTile, Far>(nb, g.col + b, c, x, F, yi, /*accumulate=*/b != e0, 0);
          }
        }
      });
  return err;
}


template <class T>
int attention_diffusion_forward(const GraphView& g, const T* q, const T* k, const T* x, int64_t H, int64_t D,
                                int64_t F, double scale_d, T* out, T* lse, Context ctx = {}) {
  int st = validate(g, true, false);
  if (st != kOk) return st;
  if (g.num_nodes == 0) return kOk;
  if (H == 0) {
    fill(out, T(0), g.num_nodes * F);
    return kOk;
  }
  // the forward gathers k and x rows
  const bool far = attention_prefetch_far<T>(g.num_nodes, H * D + F, 16.0 * (1 << 20));
  return dispatch_heads<T>(H, D, far, [&](auto hh, auto fr) {
    return attention_diffusion_forward_impl<T, decltype(hh)::value, decltype(fr)::value>(g, q, k, x, H, D, F, scale_d,
                                                                                            out, lse, ctx);
  });
}

/// Fused backward for the upstream gradient g [N, F] and the forward's lse.
/// With a_ijh = exp(s_ijh - lse_ih) recomputed from q, k, lse, and the
/// head-shared t_ij = <g[i], x[j]>:
///   D_ih        = (1/H) sum_j a_ijh t_ij
///   ds_ijh      = a_ijh (t_ij / H - D_ih)
///   grad_q[i,h] = scale sum_j ds_ijh k[j,h]
///   grad_k[j,h] = scale sum_i ds_ijh q[i,h]
///   grad_x[j]   = sum_i c_ij g[i],   c_ij = (1/H) sum_h a_ijh
///
/// Two passes, each output row written by one thread, no atomics:
///   1. row pass over targets i (CSR): scores, a, t, D_i, ds and grad_q[i];
///      it also writes, per edge e (in CSR order, so sequentially), a record
///      rec[e] = (c_e, scale ds_e0, ..., scale ds_e,H-1): an [E, 1 + H]
///      temporary;
///   2. column pass over sources j (CSC): two register-tiled gather-reduces
///      over j's out-edges p, grad_x[j] = sum_p c g[i_p] and grad_k[j] =
///      sum_p ds q[i_p], with c and ds read from rec[csc_perm[p]].
/// The records cost E (1 + H) values of memory and about one gathered cache
/// line per edge in pass 2 (in place of the per-target (lse, D) line that a
/// recomputing pass 2 needs); in exchange pass 2 recomputes nothing (no
/// scores, exp, or t = <g_i, x_j>) and is pure gather-reduce.  That halved
/// the backward on Cora, where it was compute-bound.
/// The row pass sweeps a row twice only when it is longer than kAttnBlock
/// (first D, then ds/grad_q; the difference t/H - D is formed per edge,
/// which avoids the cancellation of the expanded form); shorter rows keep a
/// and t in scratch.  Rows without in-edges get grad_q = 0.
/// grad_q and grad_k are both null or both non-null; grad_x may be null.
template <class T, int HH, bool Far>
int attention_diffusion_backward_impl(const GraphView& g, const T* grad, const T* lse, const T* q, const T* k,
                                      const T* x, int64_t H_, int64_t D, int64_t F, double scale_d, T* grad_q,
                                      T* grad_k, T* grad_x, Context ctx) {
  const bool need_qk = grad_q != nullptr && grad_k != nullptr, need_x = grad_x != nullptr;
  const int64_t N = g.num_nodes, E = g.num_edges, H = HH > 0 ? HH : H_, HD = H * D;
  constexpr int64_t W = Simd<T>::W;
  const T scale = T(scale_d), invH = T(1) / T(H);
  int err = kOk;
  const int nt = plan_threads(ctx.threads, E * (2 * HD + 2 * F + 8 * H) + N * F);
  // Per-edge records: [c] if need_x, then [scale * ds_h, h < H] if need_qk.
  const int64_t RS = (need_x ? 1 : 0) + (need_qk ? H : 0), ods = need_x ? 1 : 0;
  // Fully written by the row pass (rows with bad indices zero theirs): no value-initialisation.
  std::unique_ptr<T[]> rec_buf(E > 0 ? new T[size_t(E * RS)] : nullptr);
  T* rec = rec_buf.get();
  const int64_t HR = HeadRep<T>(H).HR;

  // ---- pass 1: rows (targets i): grad_q[i] and the records of i's in-edges
  {
    const int64_t scratch_size = 2 * (kAttnBlock * H + W) + 2 * (kAttnBlock + W) + 2 * HR + H;
    for_each_row_part(
        g.rowptr, N, E, nt, [&] { return std::vector<T>(scratch_size); },
        [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
          const int64_t part_end = g.rowptr[r1];
          Heads<T, HH, Far> rh(H, D);
          T* a = buf.data();                  // [kAttnBlock H + W] attention of the block
          T* dsb = a + kAttnBlock * H + W;    // [kAttnBlock H + W] scale * ds of the block
          T* tt = dsb + kAttnBlock * H + W;   // [kAttnBlock + W] t_ij (zero slack)
          T* cb = tt + kAttnBlock + W;        // [kAttnBlock + W] c_ij
          rh.rep = cb + kAttnBlock + W;       // [HR] (generic path)
          rh.mrep = rh.rep + HR;              // [HR]
          T* Dh = rh.mrep + HR;               // [H]
          int64_t i = 0;
          const T* gi = nullptr;
          const T* lsei = nullptr;
          // a = exp(scale <q_i, k_j> - lse_i) and t = <g_i, x_j> for edges b .. b + nb
          auto block = [&](int64_t b, int64_t nb) {
            rh.scores(q + i * HD, k, g.col + b, nb, scale, a, part_end - b, need_qk ? x : nullptr, F);
            rh.exp_sub(a, nb, lsei, nullptr);
            if (need_qk) {
              for (int64_t t = 0; t < nb; ++t) tt[t] = dot(gi, x + g.col[b + t] * F, F);
              fill(tt + nb, T(0), W);  // the fast path reads whole vectors
            }
          };
          // records of edges b .. b + nb from cb and dsb
          auto write_records = [&](int64_t b, int64_t nb) {
            T* r = rec + b * RS;
            for (int64_t t = 0; t < nb; ++t, r += RS) {
              if (need_x) r[0] = cb[t];
              if (need_qk)
                for (int64_t h = 0; h < H; ++h) r[ods + h] = dsb[t * H + h];
            }
          };
          // records of edges b .. b + nb, and their grad_q contribution
          auto finish = [&](int64_t b, int64_t nb, T* gqi) {
            rh.ds_c(a, need_qk ? tt : nullptr, nb, Dh, scale, invH, dsb, need_x ? cb : nullptr);
            write_records(b, nb);
            // the k rows are still in cache from the scores: npf = 0
            if (need_qk)
              gather_axpy_heads<T, Far>(nb, g.col + b, dsb, H, static_cast<const int64_t*>(nullptr), k, H, D, gqi,
                                /*accumulate=*/b != g.rowptr[i], 0);
          };
          for (i = r0; i < r1; ++i) {
            const int64_t e0 = g.rowptr[i], e1 = g.rowptr[i + 1], n = e1 - e0;
            T* gqi = need_qk ? grad_q + i * HD : nullptr;
            if (n == 0 || !indices_ok(g.col + e0, n, N)) {
              if (n != 0) {
                set_error(err, kBadCol);
                fill(rec + e0 * RS, T(0), n * RS);
              }
              if (need_qk) fill(gqi, T(0), HD);
              continue;
            }
            gi = grad + i * F;
            lsei = lse + i * H;
            fill(Dh, T(0), H);
            if constexpr (HH > 0) {
              if (n <= kAttnBlock) {
                // one block, fast path: a, D, ds and c without leaving registers per head
                rh.scores(q + i * HD, k, g.col + e0, n, scale, a, part_end - e0, need_qk ? x : nullptr, F);
                if (need_qk) {
                  for (int64_t t = 0; t < n; ++t) tt[t] = dot(gi, x + g.col[e0 + t] * F, F);
                  Simd<T>::store(tt + n, Simd<T>::zero());  // zero slack: whole vectors are read
                }
                rh.row_backward(a, need_qk ? tt : nullptr, n, rh.load_tile(lsei, (i + 1) * H + W <= N * H), scale,
                                invH, dsb, need_x ? cb : nullptr);
                write_records(e0, n);
                if (need_qk)
                  gather_axpy_heads<T, Far>(n, g.col + e0, dsb, H, static_cast<const int64_t*>(nullptr), k, H, D,
                                            gqi,
                                    /*accumulate=*/false, 0);
                continue;
              }
            }
            if (n <= kAttnBlock) {
              block(e0, n);
              if (need_qk) rh.dsum(a, tt, n, Dh);
              for (int64_t h = 0; h < H; ++h) Dh[h] *= invH;
              finish(e0, n, gqi);
              continue;
            }
            // long row: sweep 1 for D, sweep 2 recomputes each block for ds
            if (need_qk) {
              for (int64_t b = e0; b < e1; b += kAttnBlock) {
                const int64_t nb = std::min(kAttnBlock, e1 - b);
                block(b, nb);
                rh.dsum(a, tt, nb, Dh);
              }
              for (int64_t h = 0; h < H; ++h) Dh[h] *= invH;
            }
            for (int64_t b = e0; b < e1; b += kAttnBlock) {
              const int64_t nb = std::min(kAttnBlock, e1 - b);
              block(b, nb);
              finish(b, nb, gqi);
            }
          }
        });
  }

  // ---- pass 2: columns (sources j): grad_k[j], grad_x[j] from the records
  for_each_row_part(
      g.csc_ptr, N, E, nt, [&] { return std::vector<T>(kAttnBlock); },
      [&](int64_t c0, int64_t c1, std::vector<T>& buf) {
        const int64_t part_end = g.csc_ptr[c1];
        T* cb = buf.data();  // [kAttnBlock] c of the block's edges
        for (int64_t j = c0; j < c1; ++j) {
          const int64_t p0 = g.csc_ptr[j], p1 = g.csc_ptr[j + 1], n = p1 - p0;
          T* gxj = need_x ? grad_x + j * F : nullptr;
          T* gkj = need_qk ? grad_k + j * HD : nullptr;
          const bool rows_ok = indices_ok(g.csc_row + p0, n, N);
          if (n == 0 || !rows_ok || !indices_ok(g.csc_perm + p0, n, E)) {
            if (n != 0) set_error(err, rows_ok ? kBadCscPerm : kBadCscRow);
            if (need_x) fill(gxj, T(0), F);
            if (need_qk) fill(gkj, T(0), HD);
            continue;
          }
          for (int64_t b = p0; b < p1; b += kAttnBlock) {
            const int64_t nb = std::min(kAttnBlock, p1 - b);
            // the records are random lines: prefetched ahead across sources
            for (int64_t t = 0; t < nb; ++t) {
              if (b + t + prefetch_distance<Far>() < part_end) {
                const T* rp = rec + g.csc_perm[b + t + prefetch_distance<Far>()] * RS;
                prefetch_line<Far>(rp);
                prefetch_line<Far>(rp + RS - 1);
              }
              if (need_x) cb[t] = rec[g.csc_perm[b + t] * RS];
            }
            if (need_x)
              gather_axpy<T, kAttnTile, Far>(nb, g.csc_row + b, cb, grad, F, gxj, b != p0, part_end - b);
            if (need_qk)
              gather_axpy_heads<T, Far>(nb, g.csc_row + b, rec + ods, RS, g.csc_perm + b, q, H, D, gkj, b != p0,
                                        part_end - b);
          }
        }
      });
  return err;
}

template <class T>
int attention_diffusion_backward(const GraphView& g, const T* grad, const T* lse, const T* q, const T* k, const T* x,
                                 int64_t H, int64_t D, int64_t F, double scale_d, T* grad_q, T* grad_k, T* grad_x,
                                 Context ctx = {}) {
  const bool need_qk = grad_q != nullptr && grad_k != nullptr, need_x = grad_x != nullptr;
  int st = validate(g, need_qk || need_x, need_qk || need_x);
  if (st != kOk) return st;
  if (g.num_nodes == 0 || !(need_qk || need_x)) return kOk;
  if (H == 0) {
    if (need_x) fill(grad_x, T(0), g.num_nodes * F);
    return kOk;
  }
  // pass 1 gathers k and x rows, pass 2 q and g rows (and the records)
  const bool far = attention_prefetch_far<T>(g.num_nodes, H * D + F, 1.0 * (1 << 20));
  return dispatch_heads<T>(H, D, far, [&](auto hh, auto fr) {
    return attention_diffusion_backward_impl<T, decltype(hh)::value, decltype(fr)::value>(
        g, grad, lse, q, k, x, H, D, F, scale_d, grad_q, grad_k, grad_x, ctx);
  });
}

// The float and double instances are compiled once, in attention_diffusion_cpu.cpp.
#define GRAPHODE_ATTENTION_DIFFUSION_CPU_INSTANCES(EXTERN, T) \
  EXTERN template int attention_diffusion_forward<T>(const GraphView&, const T*, const T*, const T*, int64_t, int64_t, int64_t, double, T*, T*, Context); \
  EXTERN template int attention_diffusion_backward<T>(const GraphView&, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, double, T*, T*, T*, Context);
#ifndef GRAPHODE_CPU_INSTANTIATE
GRAPHODE_ATTENTION_DIFFUSION_CPU_INSTANCES(extern, float)
GRAPHODE_ATTENTION_DIFFUSION_CPU_INSTANCES(extern, double)
#endif

}  // namespace cpu
}  // namespace graphode
