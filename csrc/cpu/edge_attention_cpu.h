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

// grad_k[j,h] = scale sum_{e=j->i} ds(e, i, h) q[i,h] for every source j: the
// CSC pass of the backward kernels (prefetch(p) brings in what ds reads at CSC
// position p, kPrefetchDistance positions ahead).
template <class T, class Prefetch, class Ds>
inline void grad_k_pass(const GraphView& g, const T* q, int64_t H, int64_t D, T scale, T* grad_k, int nt, int& err,
                        Prefetch prefetch, Ds ds) {
  const int64_t N = g.num_nodes, E = g.num_edges, HD = H * D;
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
              prefetch(pp);
            }
            const int64_t e = g.csc_perm[p], i = g.csc_row[p];
            const T* qi = q + i * HD;
            for (int64_t h = 0; h < H; ++h) axpy(gk + h * D, ds(e, i, h), qi + h * D, D);
          }
          scale_to(gkj, scale, gk, HD);
        }
      });
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
  grad_k_pass(
      g, q, H, D, scale, grad_k, nt, err,
      [&](int64_t pp) {
        GRAPHODE_PREFETCH(attn + g.csc_perm[pp] * H);
        GRAPHODE_PREFETCH(grad_attn + g.csc_perm[pp] * H);
      },
      [&](int64_t e, int64_t i, int64_t h) { return attn[e * H + h] * (grad_attn[e * H + h] - r_all[i * H + h]); });
  return err;
}

// ================================================================ attention options
// The normalisations of the GRAND authors (graphode/ops/reference.py is the
// ground truth): the scores s = scale <q_i, k_j> of every edge e = j -> i are
// normalised within a group of edges, the in-edges of each target
// (over_source false) or the out-edges of each source (over_source true):
//   softmax:    a = exp(s - max_group s) / sum_group exp(...)
//   squareplus: s' = s - M with ONE M = max over all edges and heads;
//               u = (s' + sqrt(s'^2 + 4)) / 2;  a = u / (sum_group u + 1e-16)
// The default (softmax over targets) is edge_attention_forward above; these
// kernels run every other combination.  They write the scores into attn and
// normalise them in place (one row pass and one group pass); the backward
// keeps one [E, H] temporary (the score gradients).
enum AttentionNormalize : int { kSoftmax = 0, kSquareplus = 1 };
constexpr double kSquareplusEps = 1e-16;

struct AttentionOptions {
  int normalize = kSoftmax;
  bool over_source = false;
  bool is_default() const { return normalize == kSoftmax && !over_source; }
};

// Runs body(p0, p1, perm, scratch) over the groups of edges of opt: target i
// (positions p = rowptr[i].., edge p, perm null) or source j (CSC positions
// p = csc_ptr[j].., edge csc_perm[p]).  Returns kBadCscPerm if a group's edge
// ids are out of range (the group is skipped).
template <class MakeScratch, class Body>
inline int for_each_group(const GraphView& g, bool over_source, int nt, MakeScratch make_scratch, Body body) {
  const int64_t* ptr = over_source ? g.csc_ptr : g.rowptr;
  const int64_t* perm = over_source ? g.csc_perm : nullptr;
  int err = kOk;
  for_each_row_part(ptr, g.num_nodes, g.num_edges, nt, make_scratch, [&](int64_t r0, int64_t r1, auto& scratch) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p0 = ptr[r], p1 = ptr[r + 1];
      if (perm && !indices_ok(perm + p0, p1 - p0, g.num_edges)) {
        set_error(err, kBadCscPerm);
        continue;
      }
      body(p0, p1, perm, scratch);
    }
  });
  return err;
}

// s [E, H] = scale <q_i, k_j> for every edge (row pass).
template <class T>
inline int edge_scores(const GraphView& g, const T* q, const T* k, int64_t H, int64_t D, T scale, T* s, int nt) {
  const int64_t N = g.num_nodes;
  int err = kOk;
  for_each_row_part(
      g.rowptr, N, g.num_edges, nt, [] { return 0; },
      [&](int64_t r0, int64_t r1, int&) {
        const int64_t part_end = g.rowptr[r1];
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t e0 = g.rowptr[i], n = g.rowptr[i + 1] - e0;
          if (!indices_ok(g.col + e0, n, N)) {
            set_error(err, kBadCol);
            fill(s + e0 * H, T(0), n * H);
            continue;
          }
          block_scores(q + i * H * D, k, g.col + e0, n, H, D, scale, s + e0 * H, part_end - e0);
        }
      });
  return err;
}

// max over s [n] (the squareplus shift M).
template <class T>
inline T global_max(const T* s, int64_t n, int nt) {
  T m = neg_inf<T>();
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) reduction(max : m) if (nt > 1)
#endif
  for (int64_t t = 0; t < n; ++t) m = s[t] > m ? s[t] : m;
  return m;
}

template <class T>
GRAPHODE_INLINE T squareplus(T sp) {
  return (sp + std::sqrt(sp * sp + T(4))) / T(2);
}

/// attn [E, H] with the options opt (any but the default, see above).
template <class T>
int edge_attention_forward(const GraphView& g, const T* q, const T* k, int64_t H, int64_t D, double scale_d,
                           AttentionOptions opt, T* attn, Context ctx = {}) {
  if (opt.is_default()) return edge_attention_forward(g, q, k, H, D, scale_d, attn, ctx);
  int st = validate(g, true, opt.over_source);
  if (st != kOk) return st;
  const int64_t E = g.num_edges;
  if (E == 0 || H == 0) return kOk;
  const int nt = plan_threads(ctx.threads, E * H * (D + 8));
  int err = edge_scores(g, q, k, H, D, T(scale_d), attn, nt);
  const bool sp = opt.normalize == kSquareplus;
  const T M = sp ? global_max(attn, E * H, nt) : T(0);
  const int gerr = for_each_group(
      g, opt.over_source, nt, [&] { return std::vector<T>(2 * H); },
      [&](int64_t p0, int64_t p1, const int64_t* perm, std::vector<T>& buf) {
        T* m = buf.data();
        T* l = m + H;
        if (sp) {
          fill(l, T(0), H);
          for (int64_t p = p0; p < p1; ++p) {
            T* a = attn + (perm ? perm[p] : p) * H;
            for (int64_t h = 0; h < H; ++h) l[h] += (a[h] = squareplus(a[h] - M));
          }
          for (int64_t h = 0; h < H; ++h) l[h] = T(1) / (l[h] + T(kSquareplusEps));
        } else {
          fill(m, neg_inf<T>(), H);
          fill(l, T(0), H);
          for (int64_t p = p0; p < p1; ++p) {
            const T* a = attn + (perm ? perm[p] : p) * H;
            for (int64_t h = 0; h < H; ++h) m[h] = a[h] > m[h] ? a[h] : m[h];
          }
          for (int64_t p = p0; p < p1; ++p) {
            T* a = attn + (perm ? perm[p] : p) * H;
            for (int64_t h = 0; h < H; ++h) l[h] += (a[h] = std::exp(a[h] - m[h]));
          }
          for (int64_t h = 0; h < H; ++h) l[h] = T(1) / l[h];
        }
        for (int64_t p = p0; p < p1; ++p) {
          T* a = attn + (perm ? perm[p] : p) * H;
          for (int64_t h = 0; h < H; ++h) a[h] *= l[h];
        }
      });
  return err != kOk ? err : gerr;
}

/// Backward of the options forward for grad_attn [E, H]: with the score
/// gradients gs [E, H] (below), grad_q[i,h] = scale sum_{e=j->i} gs_eh k[j,h]
/// (row pass) and grad_k[j,h] = scale sum_{e=j->i} gs_eh q[i,h] (CSC pass).
///   softmax:    gs = a (ga - r_g),  r_g = sum_{e in g} a ga   (per head)
///   squareplus: gs' = (ga - r_g) / (S_g + 1e-16) * u / sqrt(s'^2 + 4),
///               S_g = sum_{e in g} u;  gs = gs' plus, on the edges and heads
///               where s = M, -sum(gs') split evenly among them (the gradient
///               through the global max, as torch's max()).
template <class T>
int edge_attention_backward(const GraphView& g, const T* grad_attn, const T* attn, const T* q, const T* k, int64_t H,
                            int64_t D, double scale_d, AttentionOptions opt, T* grad_q, T* grad_k,
                            Context ctx = {}) {
  if (opt.is_default()) return edge_attention_backward(g, grad_attn, attn, q, k, H, D, scale_d, grad_q, grad_k, ctx);
  const bool need_q = grad_q != nullptr, need_k = grad_k != nullptr;
  int st = validate(g, true, opt.over_source || need_k);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges, HD = H * D;
  if (N == 0 || HD == 0 || !(need_q || need_k)) return kOk;
  if (E == 0) {
    if (need_q) fill(grad_q, T(0), N * HD);
    if (need_k) fill(grad_k, T(0), N * HD);
    return kOk;
  }
  const T scale = T(scale_d);
  const int nt = plan_threads(ctx.threads, E * H * (D + 8));
  std::unique_ptr<T[]> gsbuf(new T[size_t(E * H)]);
  T* gs = gsbuf.get();
  int err = kOk;
  const bool sp = opt.normalize == kSquareplus;
  T M = T(0);
  std::vector<int64_t> ties;  // flat indices e * H + h with s = M
  if (sp) {
    err = edge_scores(g, q, k, H, D, scale, gs, nt);
    M = global_max(gs, E * H, nt);
    for (int64_t t = 0; t < E * H; ++t)
      if (gs[t] == M) ties.push_back(t);
  }
  const int gerr = for_each_group(
      g, opt.over_source, nt, [&] { return std::vector<T>(2 * H); },
      [&](int64_t p0, int64_t p1, const int64_t* perm, std::vector<T>& buf) {
        T* r = buf.data();
        T* S = r + H;
        fill(r, T(0), 2 * H);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t e = perm ? perm[p] : p;
          for (int64_t h = 0; h < H; ++h) {
            r[h] += attn[e * H + h] * grad_attn[e * H + h];
            if (sp) S[h] += squareplus(gs[e * H + h] - M);
          }
        }
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t e = perm ? perm[p] : p;
          for (int64_t h = 0; h < H; ++h) {
            const int64_t t = e * H + h;
            if (sp) {
              const T s1 = gs[t] - M;
              const T root = std::sqrt(s1 * s1 + T(4));
              gs[t] = (grad_attn[t] - r[h]) / (S[h] + T(kSquareplusEps)) * ((s1 + root) / (T(2) * root));
            } else {
              gs[t] = attn[t] * (grad_attn[t] - r[h]);
            }
          }
        }
      });
  if (sp && !ties.empty()) {
    T total = T(0);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : total) if (nt > 1)
#endif
    for (int64_t t = 0; t < E * H; ++t) total += gs[t];
    const T share = -total / T(ties.size());
    for (int64_t t : ties) gs[t] += share;
  }
  if (err == kOk) err = gerr;
  if (need_q) {
    for_each_row_part(
        g.rowptr, N, E, nt, [&] { return std::vector<T>(HD); },
        [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
          T* acc = buf.data();
          for (int64_t i = r0; i < r1; ++i) {
            const int64_t e0 = g.rowptr[i], e1 = g.rowptr[i + 1];
            T* gqi = grad_q + i * HD;
            if (!indices_ok(g.col + e0, e1 - e0, N)) {
              set_error(err, kBadCol);
              fill(gqi, T(0), HD);
              continue;
            }
            fill(acc, T(0), HD);
            for (int64_t e = e0; e < e1; ++e) {
              const T* kj = k + g.col[e] * HD;
              for (int64_t h = 0; h < H; ++h) axpy(acc + h * D, gs[e * H + h], kj + h * D, D);
            }
            scale_to(gqi, scale, acc, HD);
          }
        });
  }
  if (need_k)
    grad_k_pass(
        g, q, H, D, scale, grad_k, nt, err, [&](int64_t pp) { GRAPHODE_PREFETCH(gs + g.csc_perm[pp] * H); },
        [&](int64_t e, int64_t, int64_t h) { return gs[e * H + h]; });
  return err;
}

// The float and double instances are compiled once, in edge_attention_cpu.cpp.
#define GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(EXTERN, T) \
  EXTERN template int edge_attention_forward<T>(const GraphView&, const T*, const T*, int64_t, int64_t, double, T*, Context); \
  EXTERN template int edge_attention_backward<T>(const GraphView&, const T*, const T*, const T*, const T*, int64_t, int64_t, double, T*, T*, Context); \
  EXTERN template int edge_attention_forward<T>(const GraphView&, const T*, const T*, int64_t, int64_t, double, AttentionOptions, T*, Context); \
  EXTERN template int edge_attention_backward<T>(const GraphView&, const T*, const T*, const T*, const T*, int64_t, int64_t, double, AttentionOptions, T*, T*, Context);
#ifndef GRAPHODE_CPU_INSTANTIATE
GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(extern, float)
GRAPHODE_EDGE_ATTENTION_CPU_INSTANCES(extern, double)
#endif

}  // namespace cpu
}  // namespace graphode
