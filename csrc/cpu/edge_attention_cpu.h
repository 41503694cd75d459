// graphode CPU kernels of edge_attention: the [E, H] attention coefficients,
// forward and backward (header-only, no torch).  Notation: attention_common.h.
#pragma once

#include "cpu/attention_common.h"

namespace graphode {
namespace cpu {

/// attn [E, H]: per target row and head, softmax over its in-edges of
/// scale <q[i,h], k[j,h]>.  Scores and softmax are computed in one visit of
/// the row: scores are written straight into the row's (contiguous) slice of
/// attn, then max-shifted exp, sum and normalisation run in place on it while
/// it is in L1/L2.
template <class T>
int edge_attention_forward(const GraphView& g, const T* q, const T* k, int64_t H, int64_t D, double scale_d, T* attn,
                           Context ctx = {}) {
  int st = validate(g, true, false);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges;
  if (E == 0 || H == 0) return kOk;
  const T scale = T(scale_d);
  const HeadRep<T> hr(H);
  const int nt = plan_threads(ctx.threads, E * H * (D + 8));
  int err = kOk;
  for_each_row_part(
      g.rowptr, N, E, nt, [&] { return std::vector<T>(3 * hr.HR + 2 * H); },
      [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
        const int64_t part_end = g.rowptr[r1];
        T* rep = buf.data();
        T* mrep = rep + hr.HR;
        T* lrep = mrep + hr.HR;
        T* m = lrep + hr.HR;
        T* l = m + H;
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t e0 = g.rowptr[i], n = g.rowptr[i + 1] - e0;
          if (n == 0) continue;
          T* a = attn + e0 * H;
          if (!indices_ok(g.col + e0, n, N)) {
            set_error(err, kBadCol);
            fill(a, T(0), n * H);
            continue;
          }
          block_scores(q + i * H * D, k, g.col + e0, n, H, D, scale, a, part_end - e0);
          heads_max(hr, a, n, rep, m);  // max shift: every exp argument <= 0
          rep_fill(hr, m, mrep, rep_used(hr, n));
          heads_exp(hr, a, n, mrep, rep, l);
          for (int64_t h = 0; h < H; ++h) l[h] = T(1) / l[h];
          rep_fill(hr, l, lrep, rep_used(hr, n));
          heads_mul(hr, a, n, lrep);
        }
      });
  return err;
}

/// Backward of edge_attention_forward for grad_attn [E, H].
/// With ds_eh = a_eh (ga_eh - r_ih), r_ih = sum_{e in row i} a_eh ga_eh:
///   grad_q[i,h] = scale sum_{e=j->i} ds_eh k[j,h]      (row pass)
///   grad_k[j,h] = scale sum_{e=j->i} ds_eh q[i,h]      (CSC pass; r kept as [N,H])
/// Either output may be null (not needed).
template <class T>
int edge_attention_backward(const GraphView& g, const T* grad_attn, const T* attn, const T* q, const T* k, int64_t H,
                            int64_t D, double scale_d, T* grad_q, T* grad_k, Context ctx = {}) {
  const bool need_q = grad_q != nullptr, need_k = grad_k != nullptr;
  int st = validate(g, need_q || need_k, need_k);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges, HD = H * D;
  if (N == 0 || HD == 0 || !(need_q || need_k)) return kOk;
  const T scale = T(scale_d);
  const HeadRep<T> hr(H);
  int err = kOk;
  // [N, H] temporary, fully written by the row pass: no value-initialisation.
  std::unique_ptr<T[]> rbuf(need_k ? new T[size_t(N * H)] : nullptr);
  T* r_all = rbuf.get();
  const int nt = plan_threads(ctx.threads, E * H * (D + 2));
  for_each_row_part(
      g.rowptr, N, E, nt, [&] { return std::vector<T>(HD + 2 * H + hr.HR); },
      [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
        const int64_t part_end = g.rowptr[r1];
        T* gq = buf.data();
        T* r = gq + HD;
        T* rep = r + H;
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t e0 = g.rowptr[i], n = g.rowptr[i + 1] - e0;
          const T* a = attn + e0 * H;
          const T* ga = grad_attn + e0 * H;
          heads_dot(hr, a, ga, n, rep, r);  // r_h = sum_t a[t,h] ga[t,h]
          if (need_k) std::copy(r, r + H, r_all + i * H);
          if (!need_q) continue;
          T* gqi = grad_q + i * HD;
          if (!indices_ok(g.col + e0, n, N)) {
            set_error(err, kBadCol);
            fill(gqi, T(0), HD);
            continue;
          }
          fill(gq, T(0), HD);
          for (int64_t t = 0; t < n; ++t) {
            if (e0 + t + kPrefetchDistance < part_end) prefetch_row(k + g.col[e0 + t + kPrefetchDistance] * HD, HD * sizeof(T));
            const T* kj = k + g.col[e0 + t] * HD;
            for (int64_t h = 0; h < H; ++h) {
              const T ds = a[t * H + h] * (ga[t * H + h] - r[h]);
              axpy(gq + h * D, ds, kj + h * D, D);
            }
          }
          scale_to(gqi, scale, gq, HD);
        }
      });
  if (!need_k) return err;
  for_each_row_part(
      g.csc_ptr, N, E, nt, [&] { return std::vector<T>(HD); },
      [&](int64_t c0, int64_t c1, std::vector<T>& buf) {
        const int64_t part_end = g.csc_ptr[c1];
        T* gk = buf.data();
        for (int64_t j = c0; j < c1; ++j) {
          const int64_t p0 = g.csc_ptr[j], p1 = g.csc_ptr[j + 1];
          T* gkj = grad_k + j * HD;
          if (!indices_ok(g.csc_row + p0, p1 - p0, N) || !indices_ok(g.csc_perm + p0, p1 - p0, E)) {
            set_error(err, indices_ok(g.csc_row + p0, p1 - p0, N) ? kBadCscPerm : kBadCscRow);
            fill(gkj, T(0), HD);
            continue;
          }
          fill(gk, T(0), HD);
          for (int64_t p = p0; p < p1; ++p) {
            if (p + kPrefetchDistance < part_end) {
              const int64_t pp = p + kPrefetchDistance;
              prefetch_row(q + g.csc_row[pp] * HD, HD * sizeof(T));
              GRAPHODE_PREFETCH(attn + g.csc_perm[pp] * H);
              GRAPHODE_PREFETCH(grad_attn + g.csc_perm[pp] * H);
            }
            const int64_t e = g.csc_perm[p], i = g.csc_row[p];
            const T* qi = q + i * HD;
            const T* ri = r_all + i * H;
            for (int64_t h = 0; h < H; ++h) {
              const T ds = attn[e * H + h] * (grad_attn[e * H + h] - ri[h]);
              axpy(gk + h * D, ds, qi + h * D, D);
            }
          }
          scale_to(gkj, scale, gk, HD);
        }
      });
  return err;
}

// The float and double instances are compiled once, in edge_attention_cpu.cpp.
#define GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(EXTERN, T) \
  EXTERN template int edge_attention_forward<T>(const GraphView&, const T*, const T*, int64_t, int64_t, double, T*, Context); \
  EXTERN template int edge_attention_backward<T>(const GraphView&, const T*, const T*, const T*, const T*, int64_t, int64_t, double, T*, T*, Context);
#ifndef GRAPHODE_CPU_INSTANTIATE
GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(extern, float)
GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(extern, double)
#endif

}  // namespace cpu
}  // namespace graphode
