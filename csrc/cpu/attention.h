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
//                          and lse [N, H]; never materialises [E,H] or [E,F].
//
// Per-row buffers are per-thread scratch of at most kAttnBlock edges, so the
// memory footprint is O(threads * kAttnBlock * H) whatever the degrees are.
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
GRAPHODE_INLINE void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) GRAPHODE_PREFETCH(c + b);
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
///     gather-reduce over F (gather_axpy).  When the row fits one block (the
///     common case) the block's e^(s - m) are still in scratch and c needs no
///     recomputation; longer rows recompute their block scores (D-work only,
///     which is cheaper than keeping H separate, rescaled F-accumulators).
/// Memory: lse plus O(kAttnBlock * H) scratch per thread; x and k rows are
/// gathered once per edge (twice for k on rows longer than kAttnBlock).
template <class T>
int attention_diffusion_forward(const GraphView& g, const T* q, const T* k, const T* x, int64_t H, int64_t D,
                                int64_t F, double scale_d, T* out, T* lse, int nthreads = 0) {
  int st = validate(g, true, false, nthreads);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges, HD = H * D;
  if (N == 0) return kOk;
  if (H == 0) {
    fill(out, T(0), N * F);
    return kOk;
  }
  const T scale = T(scale_d), invH = T(1) / T(H);
  const HeadRep<T> hr(H);
  const int nt = plan_threads(nthreads, E * (HD + F + 8 * H) + N * F);
  int err = kOk;
  const int64_t scratch_size = kAttnBlock * H + kAttnBlock + 3 * hr.HR + 4 * H;
  for_each_row_part(
      g.rowptr, N, E, nt, [&] { return std::vector<T>(scratch_size); },
      [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
        const int64_t part_end = g.rowptr[r1];
        T* s = buf.data();           // [kAttnBlock, H] scores, then exps
        T* c = s + kAttnBlock * H;   // [kAttnBlock] head-averaged weights
        T* rep = c + kAttnBlock;     // [HR] reduction scratch
        T* mrep = rep + hr.HR;       // [HR] replicated row max / lse
        T* lrep = mrep + hr.HR;      // [HR]
        T* m = lrep + hr.HR;         // [H] running max
        T* l = m + H;                // [H] running sum of exp(s - m)
        T* bm = l + H;               // [H] block max / block sum
        T* w = bm + H;               // [H] per-head weights of heads_combine
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
          // ---- pass 1: online softmax statistics
          fill(m, neg_inf<T>(), H);
          fill(l, T(0), H);
          for (int64_t b = e0; b < e1; b += kAttnBlock) {
            const int64_t nb = std::min(kAttnBlock, e1 - b);
            block_scores(qi, k, g.col + b, nb, H, D, scale, s, part_end - b, x, F);
            heads_max(hr, s, nb, rep, bm);
            for (int64_t h = 0; h < H; ++h) {
              const T mn = std::max(m[h], bm[h]);
              // rescale the running sum to the new max (l = 0 before the first block)
              if (l[h] != T(0)) l[h] *= exp_scalar(m[h] - mn);
              m[h] = mn;
            }
            rep_fill(hr, m, mrep, rep_used(hr, nb));
            heads_exp(hr, s, nb, mrep, rep, bm);
            for (int64_t h = 0; h < H; ++h) l[h] += bm[h];
          }
          for (int64_t h = 0; h < H; ++h) lsei[h] = T(m[h] + std::log(l[h]));
          // ---- pass 2: out[i] = sum_j c_ij x[j]
          if (n <= kAttnBlock) {
            for (int64_t h = 0; h < H; ++h) w[h] = invH / l[h];
            heads_combine(s, n, H, w, c);
            gather_axpy(n, g.col + e0, c, x, F, yi, /*accumulate=*/false, part_end - e0);
          } else {
            rep_fill(hr, lsei, mrep);
            fill(w, invH, H);
            for (int64_t b = e0; b < e1; b += kAttnBlock) {
              const int64_t nb = std::min(kAttnBlock, e1 - b);
              block_scores(qi, k, g.col + b, nb, H, D, scale, s, part_end - b, x, F);
              heads_exp(hr, s, nb, mrep, rep, static_cast<T*>(nullptr));
              heads_combine(s, nb, H, w, c);
              gather_axpy(nb, g.col + b, c, x, F, yi, /*accumulate=*/b != e0, part_end - b);
            }
          }
        }
      });
  return err;
}

/// Fused backward for the upstream gradient g [N, F] and the forward's lse.
/// With a_ijh = exp(s_ijh - lse_ih) recomputed from q, k, lse, and the
/// head-shared t_ij = <g[i], x[j]>:
///   D_ih        = (1/H) sum_j a_ijh t_ij                       (row pass)
///   ds_ijh      = a_ijh (t_ij / H - D_ih)
///   grad_q[i,h] = scale sum_j ds_ijh k[j,h]                    (row pass)
///   grad_k[j,h] = scale sum_i ds_ijh q[i,h]                    (CSC pass)
///   grad_x[j]   = sum_i ((1/H) sum_h a_ijh) g[i]               (CSC pass)
/// The row pass sweeps a row twice (first D, then grad_q: the difference
/// t/H - D is formed per edge, which avoids the cancellation of the expanded
/// form); rows up to kAttnBlock keep a and t in scratch between sweeps.  It
/// stores (lse_i, D_i) packed in an [N, 2H] temporary so that the CSC pass
/// finds both in one cache line per target.  No [E,*] tensor, no atomics.
/// grad_q and grad_k are both null or both non-null; grad_x may be null.
template <class T>
int attention_diffusion_backward(const GraphView& g, const T* grad, const T* lse, const T* q, const T* k, const T* x,
                                 int64_t H, int64_t D, int64_t F, double scale_d, T* grad_q, T* grad_k, T* grad_x,
                                 int nthreads = 0) {
  const bool need_qk = grad_q != nullptr && grad_k != nullptr, need_x = grad_x != nullptr;
  int st = validate(g, need_qk, need_qk || need_x, nthreads);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges, HD = H * D;
  if (N == 0 || !(need_qk || need_x)) return kOk;
  if (H == 0) {
    if (need_x) fill(grad_x, T(0), N * F);
    return kOk;
  }
  const T scale = T(scale_d), invH = T(1) / T(H);
  const HeadRep<T> hr(H);
  int err = kOk;
  const int nt = plan_threads(nthreads, E * (2 * HD + 2 * F + 8 * H) + N * F);
  const int64_t H2 = 2 * H;
  // [N, 2H] temporary, fully written by the row pass: no value-initialisation.
  std::unique_ptr<T[]> ld_buf(need_qk ? new T[size_t(N * H2)] : nullptr);
  T* ld = ld_buf.get();

  if (need_qk) {
    const int64_t scratch_size = kAttnBlock * H + kAttnBlock + HD + 2 * hr.HR + 2 * H;
    for_each_row_part(
        g.rowptr, N, E, nt, [&] { return std::vector<T>(scratch_size); },
        [&](int64_t r0, int64_t r1, std::vector<T>& buf) {
          const int64_t part_end = g.rowptr[r1];
          T* a = buf.data();             // [kAttnBlock, H] attention of the block
          T* tt = a + kAttnBlock * H;    // [kAttnBlock] t_ij
          T* gq = tt + kAttnBlock;       // [HD] grad_q accumulator
          T* rep = gq + HD;              // [HR]
          T* lrep = rep + hr.HR;         // [HR] replicated lse_i
          T* Dh = lrep + hr.HR;          // [H]
          T* tmp = Dh + H;               // [H]
          auto block = [&](int64_t i, int64_t b, int64_t nb) {
            // a = exp(scale <q_i, k_j> - lse_i), t = <g_i, x_j>
            block_scores(q + i * HD, k, g.col + b, nb, H, D, scale, a, part_end - b, x, F);
            heads_exp(hr, a, nb, lrep, rep, static_cast<T*>(nullptr));
            block_dots(grad + i * F, x, g.col + b, nb, F, tt, part_end - b);
          };
          for (int64_t i = r0; i < r1; ++i) {
            const int64_t e0 = g.rowptr[i], e1 = g.rowptr[i + 1], n = e1 - e0;
            T* ldi = ld + i * H2;
            std::copy(lse + i * H, lse + (i + 1) * H, ldi);
            T* gqi = grad_q + i * HD;
            if (n == 0 || !indices_ok(g.col + e0, n, N)) {
              if (n != 0) set_error(err, kBadCol);
              fill(gqi, T(0), HD);
              fill(ldi + H, T(0), H);
              continue;
            }
            rep_fill(hr, lse + i * H, lrep, rep_used(hr, n));
            // ---- sweep 1: D_ih = (1/H) sum_j a_ijh t_ij
            fill(Dh, T(0), H);
            for (int64_t b = e0; b < e1; b += kAttnBlock) {
              const int64_t nb = std::min(kAttnBlock, e1 - b);
              block(i, b, nb);
              for (int64_t t = 0; t < nb; ++t)
                for (int64_t h = 0; h < H; ++h) Dh[h] += a[t * H + h] * tt[t];
            }
            for (int64_t h = 0; h < H; ++h) Dh[h] *= invH;
            std::copy(Dh, Dh + H, ldi + H);
            // ---- sweep 2: grad_q_ih = scale sum_j a_ijh (t_ij/H - D_ih) k_jh
            fill(gq, T(0), HD);
            for (int64_t b = e0; b < e1; b += kAttnBlock) {
              const int64_t nb = std::min(kAttnBlock, e1 - b);
              if (n > kAttnBlock) block(i, b, nb);  // else a, tt still hold this (only) block
              for (int64_t t = 0; t < nb; ++t) {
                if (t + kPrefetchDistance < nb) prefetch_row(k + g.col[b + t + kPrefetchDistance] * HD, HD * sizeof(T));
                const T* kj = k + g.col[b + t] * HD;
                const T th = tt[t] * invH;
                for (int64_t h = 0; h < H; ++h) tmp[h] = a[t * H + h] * (th - Dh[h]);
                for (int64_t h = 0; h < H; ++h) axpy(gq + h * D, tmp[h], kj + h * D, D);
              }
            }
            scale_to(gqi, scale, gq, HD);
          }
        });
  }

  // ---- CSC pass over sources j: grad_k[j], grad_x[j]
  const int64_t Hp = padded<T>(H);
  for_each_row_part(
      g.csc_ptr, N, E, nt, [&] { return std::vector<T>(HD + 2 * Hp); },
      [&](int64_t c0, int64_t c1, std::vector<T>& buf) {
        const int64_t part_end = g.csc_ptr[c1];
        T* gk = buf.data();
        T* av = gk + HD;  // [Hp] a_ijh of the current edge (padded for exp_inplace)
        T* ds = av + Hp;  // [Hp]
        for (int64_t j = c0; j < c1; ++j) {
          const int64_t p0 = g.csc_ptr[j], p1 = g.csc_ptr[j + 1];
          T* gxj = need_x ? grad_x + j * F : nullptr;
          if (need_x) fill(gxj, T(0), F);
          if (need_qk) fill(gk, T(0), HD);
          if (!indices_ok(g.csc_row + p0, p1 - p0, N)) {
            set_error(err, kBadCscRow);
            if (need_qk) fill(grad_k + j * HD, T(0), HD);
            continue;
          }
          const T* kj = k + j * HD;
          const T* xj = x + j * F;
          for (int64_t p = p0; p < p1; ++p) {
            if (p + kPrefetchDistance < part_end) {
              const int64_t ip = g.csc_row[p + kPrefetchDistance];
              prefetch_row(q + ip * HD, HD * sizeof(T));
              prefetch_row(grad + ip * F, F * sizeof(T));
              GRAPHODE_PREFETCH(need_qk ? ld + ip * H2 : lse + ip * H);
            }
            const int64_t i = g.csc_row[p];
            const T* qi = q + i * HD;
            const T* li = need_qk ? ld + i * H2 : lse + i * H;
            const T* gi = grad + i * F;
            for (int64_t h = 0; h < H; ++h) av[h] = scale * dot(qi + h * D, kj + h * D, D) - li[h];
            exp_inplace(av, H);
            if (need_x) {
              T csum = T(0);
              for (int64_t h = 0; h < H; ++h) csum += av[h];
              axpy(gxj, csum * invH, gi, F);
            }
            if (need_qk) {
              const T th = dot(gi, xj, F) * invH;
              for (int64_t h = 0; h < H; ++h) ds[h] = av[h] * (th - li[H + h]);
              for (int64_t h = 0; h < H; ++h) axpy(gk + h * D, ds[h], qi + h * D, D);
            }
          }
          if (need_qk) scale_to(grad_k + j * HD, scale, gk, HD);
        }
      });
  return err;
}

}  // namespace cpu
}  // namespace graphode
