// graphode CPU kernels: building blocks shared by the attention ops
// (edge_attention_cpu.h, attention_diffusion_cpu.h); header-only, no torch.
//
// Notation: q, k [N, H, D]; x [N, F]; for an edge e = j -> i (in-edge of
// target i), per head h:
//   s_ijh = scale <q[i,h], k[j,h]>
//   a_ijh = exp(s_ijh - lse_ih),   lse_ih = log sum_{j -> i} exp(s_ijh)
// so a is a softmax over the in-edges of each target, per head.
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

// ================================================================ row helpers of the fused kernels
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

}  // namespace cpu
}  // namespace graphode
