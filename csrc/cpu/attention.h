// graphode CPU kernels: multi-head edge attention and the fused attention
// diffusion, forward and backward (header-only, no torch).
//
// Notation: q, k [N, H, D]; x [N, F]; for an edge e = j -> i (in-edge of
// target i), per head h:
//   s_ijh = scale <q[i,h], k[j,h]>
//   a_ijh = exp(s_ijh - lse_ih),   lse_ih = log sum_{j -> i} exp(s_ijh)
// so a is a softmax over the in-edges of each target, per head.
//
// edge_attention           attn [E, H] = a (in CSR edge order).
// attention_diffusion      out[i] = (1/H) sum_h sum_{j->i} a_ijh x[j]   [N, F]
//                          and lse [N, H].  The forward never materialises
//                          an [E,*] array; the backward keeps one [E, 1+H]
//                          temporary of per-edge records (c, ds), which makes
//                          its column pass a pure gather-reduce (see there).
//
// Per-row buffers are per-thread scratch of at most kAttnBlock edges, so the
// scratch footprint is O(threads * kAttnBlock * H) whatever the degrees are.
#pragma once

#include <memory>

#include "cpu/common.h"

namespace graphode {
namespace cpu {

// Edges per block of a row: scores of one block live in per-thread scratch.
// Rows with at most kAttnBlock in-edges (nearly all rows of real graphs) are
// done in one sweep; longer rows stream block by block (see the forward).
constexpr int64_t kAttnBlock = 256;

// ---------------------------------------------------------------- per-head helpers
// Per-row quantities are [n, H] row-major (edge-major, head fastest).  To keep
// the loops over them vectorised for any H, they run over the flat array in
// chunks of HR elements, HR a common multiple of H and of the vector width
// (~64 elements), against "replicated" per-head vectors rep[u] = v[u % H];
// chunk starts are multiples of H, so element u of a chunk is head u % H.
template <class T>
struct HeadRep {
  int64_t H, HR;
  explicit HeadRep(int64_t H_) : H(H_) {
    const int64_t W = Simd<T>::W;
    int64_t a = std::max<int64_t>(H_, 1), b = W;
    while (b) {
      const int64_t r = a % b;
      a = b;
      b = r;
    }
    const int64_t lcm = std::max<int64_t>(H_, 1) / a * W;
    HR = lcm * std::max<int64_t>(1, 64 / lcm);
  }
};

// Calls vop(i, u) for whole vectors (flat index i, replicated index u) and
// sop(i, u) for the scalar tail of a flat [n, H] array.
template <class T, class VecOp, class ScalarOp>
GRAPHODE_INLINE void flat_chunks(int64_t total, int64_t HR, VecOp vop, ScalarOp sop) {
  constexpr int64_t W = Simd<T>::W;
  int64_t c = 0;
  for (; c + HR <= total; c += HR)
    for (int64_t u = 0; u < HR; u += W) vop(c + u, u);
  int64_t u = 0;
  for (; c + u + W <= total; u += W) vop(c + u, u);
  for (; c + u < total; ++u) sop(c + u, u);
}

// rep[u] = v[u % H] for u < used (default HR; HR and used are multiples of H,
// so no division is needed).
template <class T>
inline void rep_fill(const HeadRep<T>& hr, const T* v, T* rep, int64_t used = -1) {
  if (used < 0) used = hr.HR;
  for (int64_t u0 = 0; u0 < used; u0 += hr.H)
    for (int64_t h = 0; h < hr.H; ++h) rep[u0 + h] = v[h];
}

// The reductions below only touch the first `used` = min(HR, n H) entries of
// their rep scratch (a multiple of H); the folds read just those.
template <class T>
inline int64_t rep_used(const HeadRep<T>& hr, int64_t n) {
  return std::min(hr.HR, n * hr.H);
}

template <class T>
inline void rep_fold_max(const HeadRep<T>& hr, const T* rep, int64_t used, T* m) {
  for (int64_t h = 0; h < hr.H; ++h) m[h] = neg_inf<T>();
  for (int64_t u0 = 0; u0 < used; u0 += hr.H)
    for (int64_t h = 0; h < hr.H; ++h) m[h] = std::max(m[h], rep[u0 + h]);
}

template <class T>
inline void rep_fold_sum(const HeadRep<T>& hr, const T* rep, int64_t used, T* m) {
  for (int64_t h = 0; h < hr.H; ++h) m[h] = T(0);
  for (int64_t u0 = 0; u0 < used; u0 += hr.H)
    for (int64_t h = 0; h < hr.H; ++h) m[h] += rep[u0 + h];
}

// m[h] = max_t s[t, h]   (rep: HR scratch)
template <class T>
inline void heads_max(const HeadRep<T>& hr, const T* __restrict s, int64_t n, T* __restrict rep, T* m) {
  using S = Simd<T>;
  const int64_t used = rep_used(hr, n);
  fill(rep, neg_inf<T>(), used);
  flat_chunks<T>(
      n * hr.H, hr.HR,
      [&](int64_t i, int64_t u) {
        const typename S::vec a = S::load(s + i), r = S::load(rep + u);
        S::store(rep + u, a > r ? a : r);
      },
      [&](int64_t i, int64_t u) { rep[u] = s[i] > rep[u] ? s[i] : rep[u]; });
  rep_fold_max(hr, rep, used, m);
}

// s[t, h] = exp(s[t, h] - subrep[h]);  if sum: sum[h] = sum_t s[t, h]
template <class T>
inline void heads_exp(const HeadRep<T>& hr, T* __restrict s, int64_t n, const T* __restrict subrep,
                      T* __restrict rep, T* sum) {
  using S = Simd<T>;
  const int64_t used = rep_used(hr, n);
  if (sum) fill(rep, T(0), used);
  flat_chunks<T>(
      n * hr.H, hr.HR,
      [&](int64_t i, int64_t u) {
        const typename S::vec v = exp_vec(S::load(s + i) - S::load(subrep + u));
        S::store(s + i, v);
        if (sum) S::store(rep + u, S::load(rep + u) + v);
      },
      [&](int64_t i, int64_t u) {
        const T v = exp_scalar(s[i] - subrep[u]);
        s[i] = v;
        if (sum) rep[u] += v;
      });
  if (sum) rep_fold_sum(hr, rep, used, sum);
}

// s[t, h] *= mulrep[h]
template <class T>
inline void heads_mul(const HeadRep<T>& hr, T* __restrict s, int64_t n, const T* __restrict mulrep) {
  using S = Simd<T>;
  flat_chunks<T>(
      n * hr.H, hr.HR, [&](int64_t i, int64_t u) { S::store(s + i, S::load(s + i) * S::load(mulrep + u)); },
      [&](int64_t i, int64_t u) { s[i] *= mulrep[u]; });
}

// sum[h] = sum_t a[t, h] b[t, h]
template <class T>
inline void heads_dot(const HeadRep<T>& hr, const T* __restrict a, const T* __restrict b, int64_t n,
                      T* __restrict rep, T* sum) {
  using S = Simd<T>;
  const int64_t used = rep_used(hr, n);
  fill(rep, T(0), used);
  flat_chunks<T>(
      n * hr.H, hr.HR,
      [&](int64_t i, int64_t u) { S::store(rep + u, S::load(rep + u) + S::load(a + i) * S::load(b + i)); },
      [&](int64_t i, int64_t u) { rep[u] += a[i] * b[i]; });
  rep_fold_sum(hr, rep, used, sum);
}

// Prefetches a row of `bytes` bytes (a gathered k, x, q or gradient row).
template <bool Far = false>
GRAPHODE_INLINE void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) prefetch_line<Far>(c + b);
}

// s[t, h] = scale <q_i[h], k[idx[t], h]> for the n edges of a block.
// Prefetches k rows (and the rows of x2 [N, F2], used next by the caller)
// kPrefetchDistance edges ahead, across row ends up to idx[npf - 1].
template <class T>
inline void block_scores(const T* __restrict qi, const T* __restrict k, const int64_t* __restrict idx, int64_t n,
                         int64_t H, int64_t D, T scale, T* __restrict s, int64_t npf, const T* x2 = nullptr,
                         int64_t F2 = 0) {
  const int64_t HD = H * D;
  for (int64_t t = 0; t < n; ++t) {
    if (t + kPrefetchDistance < npf) {
      const int64_t jp = idx[t + kPrefetchDistance];
      prefetch_row(k + jp * HD, HD * int64_t(sizeof(T)));
      if (x2) prefetch_row(x2 + jp * F2, F2 * int64_t(sizeof(T)));
    }
    const T* kj = k + idx[t] * HD;
    for (int64_t h = 0; h < H; ++h) s[t * H + h] = scale * dot(qi + h * D, kj + h * D, D);
  }
}

// tt[t] = <g, x[idx[t]]> for the n edges of a block.
template <class T>
inline void block_dots(const T* __restrict gi, const T* __restrict x, const int64_t* __restrict idx, int64_t n,
                       int64_t F, T* __restrict tt, int64_t npf) {
  for (int64_t t = 0; t < n; ++t) {
    if (t + kPrefetchDistance < npf) prefetch_row(x + idx[t + kPrefetchDistance] * F, F * int64_t(sizeof(T)));
    tt[t] = dot(gi, x + idx[t] * F, F);
  }
}

// c[t] = sum_h s[t, h] * w[h]   (the head-averaged attention of each edge)
template <class T>
inline void heads_combine(const T* __restrict s, int64_t n, int64_t H, const T* __restrict w, T* __restrict c) {
  if (H == 1) {
    scale_to(c, w[0], s, n);
    return;
  }
  for (int64_t t = 0; t < n; ++t) {
    T v = T(0);
    for (int64_t h = 0; h < H; ++h) v += s[t * H + h] * w[h];
    c[t] = v;
  }
}

// In-place exp of a small array of n values (padded to whole vectors).
template <class T>
GRAPHODE_INLINE void exp_inplace(T* v, int64_t n) {
  using S = Simd<T>;
  for (int64_t h = 0; h < n; h += S::W) S::store(v + h, exp_vec(S::load(v + h)));
}

// Size of a per-head scratch array rounded up to whole vectors.
template <class T>
inline int64_t padded(int64_t n) {
  const int64_t W = Simd<T>::W;
  return (n + W - 1) / W * W;
}

// ================================================================ edge_attention
/// attn [E, H]: per target row and head, softmax over its in-edges of
/// scale <q[i,h], k[j,h]>.  Scores and softmax are computed in one visit of
/// the row: scores are written straight into the row's (contiguous) slice of
/// attn, then max-shifted exp, sum and normalisation run in place on it while
/// it is in L1/L2.
template <class T>
int edge_attention_forward(const GraphView& g, const T* q, const T* k, int64_t H, int64_t D, double scale_d, T* attn,
                           int nthreads = 0) {
  int st = validate(g, true, false, nthreads);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges;
  if (E == 0 || H == 0) return kOk;
  const T scale = T(scale_d);
  const HeadRep<T> hr(H);
  const int nt = plan_threads(nthreads, E * H * (D + 8));
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
                            int64_t D, double scale_d, T* grad_q, T* grad_k, int nthreads = 0) {
  const bool need_q = grad_q != nullptr, need_k = grad_k != nullptr;
  int st = validate(g, need_q || need_k, need_k, nthreads);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges, HD = H * D;
  if (N == 0 || HD == 0 || !(need_q || need_k)) return kOk;
  const T scale = T(scale_d);
  const HeadRep<T> hr(H);
  int err = kOk;
  // [N, H] temporary, fully written by the row pass: no value-initialisation.
  std::unique_ptr<T[]> rbuf(need_k ? new T[size_t(N * H)] : nullptr);
  T* r_all = rbuf.get();
  const int nt = plan_threads(nthreads, E * H * (D + 2));
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

// ================================================================ attention_diffusion: row helpers
// The attention_diffusion kernels spend their time on small per-edge pieces:
// H dot products of length D (the scores), a softmax over a handful of edges
// per row (Cora averages 5 in-edges with self loops, the 100k-node power-law
// graph 11), a log per head and row, and short gathers.  With runtime H and D
// those pieces are loops of one or two iterations with a horizontal sum per
// head and scalar tails, and they cost far more than the arithmetic.
//
// Fast path (Heads<T, HH> with HH = H > 0), for H a power of two up to the
// vector width W and D a multiple of W (float32 on AVX-512: H in {1, 2, 4, 8,
// 16}, D in {16, 32, ...}; the benchmarks' H = 4 and 8 with D = 16):
//   * D % W == 0: every head is whole vectors, so a head's dot product is
//     whole-vector FMAs and no vector straddles two heads;
//   * W % H == 0: the heads tile a vector, so in a flat [n, H] array starting
//     at a multiple of W, lane l of every vector is head l % H.  The per-head
//     softmax steps (max, exp, sums, the head average, D and ds of the
//     backward) run on whole vectors against one tiled per-head vector, with
//     rows padded to whole vectors by -inf scores (exp -> 0: neutral for max
//     and sums), so there are no scalar tails.  Per-edge values (the head
//     average c, t = <g_i, x_j>) move between [n] and [n, H] layouts with one
//     constant shuffle per vector (group_sum / lane_spread, simd.h).
//   * scores G = W / H edges at a time: the W per-(edge, head) product
//     vectors go through one transpose_sum (simd.h), whose result is already
//     s[t0 .. t0 + G, 0 .. H] in row-major order: one store.
//   * lse = m + log(l) for all heads of a row in one log_vec.
// H is a template parameter there, so every loop over heads is unrolled.
// Other shapes (Heads<T, 0>) use the generic HeadRep helpers above; both
// paths compute the same quantities in the same order per edge and agree to
// rounding.  Scratch arrays of [n] or [n, H] values get W entries of slack.

template <class T>
inline bool fast_heads(int64_t H, int64_t D) {
  constexpr int64_t W = Simd<T>::W;
  return H > 0 && D > 0 && D % W == 0 && W % H == 0;
}

// s[t, h] = scale <q_i[h], k[idx[t], h]> for t < n, G = W / HH edges per
// transpose_sum; writes whole vectors, so s gets roundup(n, G) * HH values
// (padding edges score 0; the caller overwrites them).  Prefetches k rows (and
// rows of x2 [N, F2], used next by the caller) kPrefetchDistance edges ahead,
// across the row end up to idx[npf - 1].
template <class T, int HH, bool Far>
inline void block_scores_fast(const T* __restrict qi, const T* __restrict k, const int64_t* __restrict idx, int64_t n,
                              int64_t D, T scale, T* __restrict s, int64_t npf, const T* x2, int64_t F2) {
  using S = Simd<T>;
  using V = typename S::vec;
  constexpr int W = int(S::W), G = W / HH;
  const int64_t HD = HH * D, DV = D / W;
  const V sv = S::set1(scale);
  for (int64_t t0 = 0; t0 < n; t0 += G) {
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      const int64_t tp = t0 + g + prefetch_distance<Far>();
      if (tp < npf) {
        prefetch_row<Far>(k + idx[tp] * HD, HD * int64_t(sizeof(T)));
        if (x2) prefetch_row<Far>(x2 + idx[tp] * F2, F2 * int64_t(sizeof(T)));
      }
    }
    V p[W];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      if (t0 + g < n) {
        const T* kj = k + idx[t0 + g] * HD;
#pragma GCC unroll 16
        for (int h = 0; h < HH; ++h) {
          V acc = S::load(qi + h * D) * S::load(kj + h * D);
          for (int64_t c = 1; c < DV; ++c) acc += S::load(qi + h * D + c * W) * S::load(kj + h * D + c * W);
          p[g * HH + h] = acc;
        }
      } else {
#pragma GCC unroll 16
        for (int h = 0; h < HH; ++h) p[g * HH + h] = S::zero();
      }
    }
    S::store(s + t0 * HH, sv * transpose_sum<T>(p));
  }
}

// y[0:HD] (+)= sum_t coef_t[f / D] src[idx[t], f] over one register tile of NV
// vectors starting at f0 (D % W == 0: a vector lies in one head), where
// coef_t = coef + t * cs, or coef + cidx[t] * cs when Indirect (the CSC pass
// reads the records of the edges in place).  The per-head gather-reduce of
// grad_q (src = k) and grad_k (src = q).
template <class T, int NV, bool Indirect, bool Far>
GRAPHODE_INLINE void gather_axpy_heads_tile(int64_t n, const int64_t* __restrict idx, const T* __restrict coef,
                                            int64_t cs, const int64_t* __restrict cidx, const T* __restrict src,
                                            int64_t HD, int64_t D, int64_t f0, T* __restrict y, bool accumulate,
                                            int64_t npf) {
  using S = Simd<T>;
  constexpr int64_t W = S::W;
  constexpr int64_t kLineElems = 64 / sizeof(T);
  typename S::vec acc[NV];
  int64_t hv[NV];
  // head of each vector of the tile (no division when a head is one vector)
  const int64_t DV = D / W;
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    acc[v] = accumulate ? S::load(y + f0 + v * W) : S::zero();
    hv[v] = DV == 1 ? f0 / W + v : (f0 + v * W) / D;
  }
  const T* sf = src + f0;
  for (int64_t t = 0; t < n; ++t) {
    constexpr int64_t dist = prefetch_distance<Far>();
    if (t + dist < npf) {
      const T* pr = sf + idx[t + dist] * HD;
#pragma GCC unroll 16
      for (int64_t l = 0; l < NV * W; l += kLineElems) prefetch_line<Far>(pr + l);
    }
    const T* __restrict cr = coef + (Indirect ? cidx[t] : t) * cs;
    const T* __restrict sr = sf + idx[t] * HD;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] += S::set1(cr[hv[v]]) * S::load(sr + v * W);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) S::store(y + f0 + v * W, acc[v]);
}

template <class T, int K, bool Indirect, bool Far>
GRAPHODE_INLINE void gather_axpy_heads_rest(int64_t nvec, int64_t n, const int64_t* idx, const T* coef, int64_t cs,
                                            const int64_t* cidx, const T* src, int64_t HD, int64_t D, int64_t f0,
                                            T* y, bool accumulate, int64_t npf) {
  if constexpr (K >= 1) {
    if (nvec == K)
      gather_axpy_heads_tile<T, K, Indirect, Far>(n, idx, coef, cs, cidx, src, HD, D, f0, y, accumulate, npf);
    else
      gather_axpy_heads_rest<T, K - 1, Indirect, Far>(nvec, n, idx, coef, cs, cidx, src, HD, D, f0, y, accumulate,
                                                      npf);
  }
}

/// Prefetch policy (common.h) of the attention kernels' gathers: "far" when
/// the gathered arrays (rows of N nodes x row_elems values) exceed
/// far_bytes.  The forward uses 16 MiB (about half a server's last-level
/// cache): its q, k and x were usually just computed and sit in L2/L3.  The
/// backward uses 1 MiB: in training its q, k, x and lse were saved by the
/// forward pass long before (GRAND-nl: 16 evaluations and their GEMMs
/// earlier), so its gathers come from DRAM even on Cora (measured with the
/// caches flushed between calls: far is ~10% faster there).
template <class T>
inline bool attention_prefetch_far(int64_t N, int64_t row_elems, double far_bytes) {
  return double(N) * double(row_elems) * double(sizeof(T)) > far_bytes;
}

// Register tile of the attention kernels' gathers: 8 vectors (a 128-float q/k
// row or an 80-float feature row of float32 on AVX-512 in one sweep).
constexpr int kAttnTile = 8;

/// y[h*D : (h+1)*D] (+)= sum_{t < n} coef_t[h] src[idx[t], h*D : (h+1)*D] for
/// all heads h < H (src rows [H, D]); coef_t = coef + t * cs (or coef +
/// cidx[t] * cs when cidx is given).  Register-tiled when D % W == 0,
/// per-head axpy otherwise.  npf as in gather_axpy (0: no prefetching).
template <class T, bool Far = false>
inline void gather_axpy_heads(int64_t n, const int64_t* __restrict idx, const T* __restrict coef, int64_t cs,
                              const int64_t* __restrict cidx, const T* __restrict src, int64_t H, int64_t D,
                              T* __restrict y, bool accumulate, int64_t npf) {
  constexpr int64_t W = Simd<T>::W;
  const int64_t HD = H * D;
  if (D % W != 0) {
    if (!accumulate) fill(y, T(0), HD);
    for (int64_t t = 0; t < n; ++t) {
      if (t + prefetch_distance<Far>() < npf)
        prefetch_row<Far>(src + idx[t + prefetch_distance<Far>()] * HD, HD * int64_t(sizeof(T)));
      const T* sr = src + idx[t] * HD;
      const T* cr = coef + (cidx ? cidx[t] : t) * cs;
      for (int64_t h = 0; h < H; ++h) axpy(y + h * D, cr[h], sr + h * D, D);
    }
    return;
  }
  auto run = [&](auto indirect) {
    constexpr bool I = decltype(indirect)::value;
    int64_t f0 = 0;
    for (; f0 + kAttnTile * W <= HD; f0 += kAttnTile * W)
      gather_axpy_heads_tile<T, kAttnTile, I, Far>(n, idx, coef, cs, cidx, src, HD, D, f0, y, accumulate, npf);
    gather_axpy_heads_rest<T, kAttnTile - 1, I, Far>((HD - f0) / W, n, idx, coef, cs, cidx, src, HD, D, f0, y,
                                                     accumulate, npf);
  };
  if (cidx)
    run(std::true_type{});
  else
    run(std::false_type{});
}

/// Per-row head operations on flat [n, H] arrays: HH = H > 0 is the fast
/// path (see above), HH = 0 the generic one (runtime H; rep and mrep: [HR]
/// scratch each).
template <class T, int HH, bool Far = false>
struct Heads {
  using S = Simd<T>;
  using V = typename S::vec;
  static constexpr int W = int(S::W);
  static constexpr bool kFast = HH > 0;
  static constexpr int G = kFast ? W / HH : 1;  // edges per vector (fast path)
  static_assert(HH == 0 || W % HH == 0, "fast path needs H | W");
  HeadRep<T> hr;
  int64_t H, D;
  T* rep = nullptr;
  T* mrep = nullptr;

  Heads(int64_t H_, int64_t D_) : hr(H_), H(kFast ? HH : H_), D(D_) {}

  static constexpr auto lanes() { return std::make_index_sequence<std::size_t(W)>{}; }

  // Entries of a flat [n, H] array that the ops touch (whole vectors on the fast path).
  int64_t len(int64_t n) const {
    if constexpr (kFast) return (n * HH + W - 1) / W * W;
    return n * H;
  }

  // Per-head v [H] tiled over a vector (fast path).
  static V tile(const T* v) {
    T l[W];
#pragma GCC unroll 16
    for (int u = 0; u < W; ++u) l[u] = v[u % (kFast ? HH : 1)];
    return S::load(l);
  }

  // Lanes g H (g < G) of v moved to lanes g: the per-edge values of a vector
  // of G edges, ready for a (whole-vector, slack-covered) store.
  static V compact(V v) {
    if constexpr (HH <= 1) {
      return v;
    } else {
      return compact_(v, lanes());
    }
  }
  template <std::size_t... L>
  static V compact_(V v, std::index_sequence<L...>) {
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    return __builtin_shufflevector(v, v, ((int(L) * (kFast ? HH : 1)) % W)...);
#else
    typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type I;
    typedef I ivec __attribute__((vector_size(GRAPHODE_VBYTES)));
    return __builtin_shuffle(v, ivec{I((int(L) * (kFast ? HH : 1)) % W)...});
#endif
  }

  // Per-edge values t[t0 .. t0 + G) spread over the G H lanes of their edges.
  static V spread(const T* t) {
    if constexpr (HH <= 1) return S::load(t);
    else return lane_spread<T, (kFast ? HH : 1)>(S::load(t), lanes());
  }

  // Fold lanes of v by head: out[h] = op over lanes l = h (mod H).
  template <class Op>
  static void fold(V v, T* out, Op op) {
    T l[W];
    S::store(l, v);
#pragma GCC unroll 16
    for (int h = 0; h < (kFast ? HH : 1); ++h) out[h] = l[h];
#pragma GCC unroll 16
    for (int u = (kFast ? HH : 1); u < W; ++u) out[u % (kFast ? HH : 1)] = op(out[u % (kFast ? HH : 1)], l[u]);
  }

  // ---- fast path, rows of one block: per-head quantities stay in registers
  // as tiled vectors (lane l holds head l % H), so no per-head scalar loops,
  // no store-to-load forwarding stalls through small arrays.

  // v[l % H] in lane l: a per-head vector in lanes 0..H-1, tiled.
  static V tile_lanes(V v) {
    if constexpr (G == 1) return v;
    else return tile_lanes_(v, lanes());
  }
  template <std::size_t... L>
  static V tile_lanes_(V v, std::index_sequence<L...>) {
    constexpr int h = kFast ? HH : 1;
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    return __builtin_shufflevector(v, v, (int(L) % h)...);
#else
    typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type I;
    typedef I ivec __attribute__((vector_size(GRAPHODE_VBYTES)));
    return __builtin_shuffle(v, ivec{I(int(L) % h)...});
#endif
  }

  // Every lane l gets op over the lanes = l (mod H): log2(G) rotate+op steps.
  template <int k, class Op>
  static V fold_all_(V v, Op op) {
    if constexpr (k < W) return fold_all_<2 * k>(op(v, lane_rotate<T, k>(v, lanes())), op);
    else return v;
  }
  template <class Op>
  static V fold_all(V v, Op op) {
    return fold_all_<(kFast ? HH : W)>(v, op);
  }
  static V vmax(V a, V b) { return a > b ? a : b; }
  static V vadd(V a, V b) { return a + b; }

  // The H values at p as a tile; reads W values when wide_ok (in bounds).
  static V load_tile(const T* p, bool wide_ok) { return wide_ok ? tile_lanes(S::load(p)) : tile(p); }

  static void store_heads(T* out, V v) {
    T l[W];
    S::store(l, v);
#pragma GCC unroll 16
    for (int h = 0; h < (kFast ? HH : 1); ++h) out[h] = l[h];
  }

  /// Forward of a one-block row whose scores s (padded) are in scratch:
  /// lse[h] = m_h + log l_h, c[t] = (1/H) sum_h e^(s[t,h] - lse_h) (c: W slack).
  void row_forward(T* s, int64_t n, T invH, T* lsei, T* c) const {
    const int64_t e = len(n);
    V mv = S::load(s);
    for (int64_t u = W; u < e; u += W) mv = vmax(mv, S::load(s + u));
    mv = fold_all(mv, vmax);  // max shift: every exp argument <= 0
    V lv = S::zero();
    for (int64_t u = 0; u < e; u += W) {
      const V v = exp_vec(S::load(s + u) - mv);
      S::store(s + u, v);
      lv += v;
    }
    lv = fold_all(lv, vadd);  // >= 1: the max term is e^0
    store_heads(lsei, mv + log_vec(lv));
    const V wv = S::set1(invH) / lv;
    for (int64_t u = 0, t0 = 0; u < e; u += W, t0 += G)
      S::store(c + t0, compact(group_sum<T, (kFast ? HH : 1)>(S::load(s + u) * wv)));
  }

  /// Backward of a one-block row: a = exp(s - lse) in place (s padded in
  /// scratch); with tt (t_ij, zero slack): ds = scale a (t/H - D) into ds,
  /// D_h = (1/H) sum_t a[t,h] t[t]; with c: c[t] = (1/H) sum_h a[t,h].
  void row_backward(T* a, const T* tt, int64_t n, V lsev, T scale, T invH, T* ds, T* c) const {
    const int64_t e = len(n);
    V dv = S::zero();
    for (int64_t u = 0, t0 = 0; u < e; u += W, t0 += G) {
      const V v = exp_vec(S::load(a + u) - lsev);
      S::store(a + u, v);
      if (tt) dv += v * spread(tt + t0);
    }
    if (tt) dv = fold_all(dv, vadd) * invH;
    for (int64_t u = 0, t0 = 0; u < e; u += W, t0 += G) {
      const V av = S::load(a + u);
      if (tt) S::store(ds + u, scale * (av * (spread(tt + t0) * invH - dv)));
      if (c) S::store(c + t0, invH * compact(group_sum<T, (kFast ? HH : 1)>(av)));
    }
  }

  /// s[t, h] = scale <q_i[h], k[idx[t], h]>; fast path: padded with -inf.
  void scores(const T* qi, const T* k, const int64_t* idx, int64_t n, T scale, T* s, int64_t npf, const T* x2,
              int64_t F2) const {
    if constexpr (kFast) {
      block_scores_fast<T, HH, Far>(qi, k, idx, n, D, scale, s, npf, x2, F2);
      for (int64_t u = n * HH, e = len(n); u < e; ++u) s[u] = neg_inf<T>();
    } else {
      block_scores(qi, k, idx, n, H, D, scale, s, npf, x2, F2);
    }
  }

  /// m[h] = max_t s[t, h]  (n >= 1)
  void max(const T* s, int64_t n, T* m) const {
    if constexpr (kFast) {
      V acc = S::load(s);
      for (int64_t u = W, e = len(n); u < e; u += W) {
        const V a = S::load(s + u);
        acc = a > acc ? a : acc;
      }
      fold(acc, m, [](T a, T b) { return b > a ? b : a; });
    } else {
      heads_max(hr, s, n, rep, m);
    }
  }

  /// s[t, h] = exp(s[t, h] - sub[h]) in place; if sum: sum[h] = sum_t s[t, h].
  void exp_sub(T* s, int64_t n, const T* sub, T* sum) const {
    if constexpr (kFast) {
      const V sv = tile(sub);
      V acc = S::zero();
      for (int64_t u = 0, e = len(n); u < e; u += W) {
        const V v = exp_vec(S::load(s + u) - sv);
        S::store(s + u, v);
        acc += v;
      }
      if (sum) fold(acc, sum, [](T a, T b) { return a + b; });
    } else {
      rep_fill(hr, sub, mrep, rep_used(hr, n));
      heads_exp(hr, s, n, mrep, rep, sum);
    }
  }

  /// out[h] = m[h] + log(l[h])
  void lse(const T* m, const T* l, T* out) const {
    if constexpr (kFast) {
      T r[W];
      S::store(r, tile(m) + log_vec(tile(l)));
      for (int h = 0; h < HH; ++h) out[h] = r[h];
    } else {
      for (int64_t h = 0; h < H; ++h) out[h] = T(m[h] + std::log(l[h]));
    }
  }

  /// c[t] = sum_h s[t, h] w[h]  (c: W slack)
  void combine(const T* s, int64_t n, const T* w, T* c) const {
    if constexpr (kFast) {
      const V wv = tile(w);
      for (int64_t u = 0, t0 = 0, e = len(n); u < e; u += W, t0 += G)
        S::store(c + t0, compact(group_sum<T, HH>(S::load(s + u) * wv)));
    } else {
      heads_combine(s, n, H, w, c);
    }
  }

  /// acc[h] += sum_t a[t, h] tt[t]  (tt: zero slack after n)
  void dsum(const T* a, const T* tt, int64_t n, T* acc) const {
    if constexpr (kFast) {
      V v = S::zero();
      for (int64_t u = 0, t0 = 0, e = len(n); u < e; u += W, t0 += G) v += S::load(a + u) * spread(tt + t0);
      T part[HH];
      fold(v, part, [](T x, T y) { return x + y; });
      for (int h = 0; h < HH; ++h) acc[h] += part[h];
    } else {
      for (int64_t t = 0; t < n; ++t)
        for (int64_t h = 0; h < H; ++h) acc[h] += a[t * H + h] * tt[t];
    }
  }

  /// ds[t, h] = scale a[t, h] (tt[t] / H - Dh[h]) and, if c, c[t] = (1/H) sum_h a[t, h]
  /// (tt: zero slack after n; ds, c: W slack; tt null: c only).
  void ds_c(const T* a, const T* tt, int64_t n, const T* Dh, T scale, T invH, T* ds, T* c) const {
    if constexpr (kFast) {
      const V dv = tile(Dh);
      for (int64_t u = 0, t0 = 0, e = len(n); u < e; u += W, t0 += G) {
        const V av = S::load(a + u);
        if (tt) S::store(ds + u, scale * (av * (spread(tt + t0) * invH - dv)));
        if (c) S::store(c + t0, invH * compact(group_sum<T, HH>(av)));
      }
    } else {
      for (int64_t t = 0; t < n; ++t) {
        const T* at = a + t * H;
        if (tt) {
          const T th = tt[t] * invH;
          for (int64_t h = 0; h < H; ++h) ds[t * H + h] = scale * (at[h] * (th - Dh[h]));
        }
        if (c) {
          T cs = T(0);
          for (int64_t h = 0; h < H; ++h) cs += at[h];
          c[t] = invH * cs;
        }
      }
    }
  }
};

// ================================================================ attention_diffusion
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
                                     int64_t F, double scale_d, T* out, T* lse, int nthreads) {
  const int64_t N = g.num_nodes, E = g.num_edges, H = HH > 0 ? HH : H_, HD = H * D;
  constexpr int64_t W = Simd<T>::W;
  const T scale = T(scale_d), invH = T(1) / T(H);
  const int nt = plan_threads(nthreads, E * (HD + F + 8 * H) + N * F);
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

// Calls body(std::integral_constant<int, HH>{}, std::bool_constant<Far>{})
// with HH = H on the fast path (fast_heads(H, D)), HH = 0 otherwise, and Far
// = far (the generic path always prefetches "near").
template <class T, class Body>
inline int dispatch_heads(int64_t H, int64_t D, bool far, Body body) {
  constexpr int64_t W = Simd<T>::W;
  auto with_far = [&](auto hh) {
    return far ? body(hh, std::true_type{}) : body(hh, std::false_type{});
  };
  if (fast_heads<T>(H, D)) {
    switch (H) {
      case 1: return with_far(std::integral_constant<int, 1>{});
      case 2: if constexpr (W % 2 == 0) return with_far(std::integral_constant<int, 2>{}); break;
      case 4: if constexpr (W % 4 == 0) return with_far(std::integral_constant<int, 4>{}); break;
      case 8: if constexpr (W % 8 == 0) return with_far(std::integral_constant<int, 8>{}); break;
      case 16: if constexpr (W % 16 == 0) return with_far(std::integral_constant<int, 16>{}); break;
      default: break;
    }
  }
  return body(std::integral_constant<int, 0>{}, std::false_type{});
}

template <class T>
int attention_diffusion_forward(const GraphView& g, const T* q, const T* k, const T* x, int64_t H, int64_t D,
                                int64_t F, double scale_d, T* out, T* lse, int nthreads = 0) {
  int st = validate(g, true, false, nthreads);
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
                                                                                            out, lse, nthreads);
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
                                      T* grad_k, T* grad_x, int nthreads) {
  const bool need_qk = grad_q != nullptr && grad_k != nullptr, need_x = grad_x != nullptr;
  const int64_t N = g.num_nodes, E = g.num_edges, H = HH > 0 ? HH : H_, HD = H * D;
  constexpr int64_t W = Simd<T>::W;
  const T scale = T(scale_d), invH = T(1) / T(H);
  int err = kOk;
  const int nt = plan_threads(nthreads, E * (2 * HD + 2 * F + 8 * H) + N * F);
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
                                 int nthreads = 0) {
  const bool need_qk = grad_q != nullptr && grad_k != nullptr, need_x = grad_x != nullptr;
  int st = validate(g, need_qk || need_x, need_qk || need_x, nthreads);
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
        g, grad, lse, q, k, x, H, D, F, scale_d, grad_q, grad_k, grad_x, nthreads);
  });
}

}  // namespace cpu
}  // namespace graphode
