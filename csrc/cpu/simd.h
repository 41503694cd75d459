// graphode CPU kernels: a tiny portable SIMD layer (GCC/Clang vector extensions).
//
// Why not `#pragma omp simd` everywhere: on the gather-reduce loops GCC 12
// vectorises the *outer* loop over edges (with hardware gathers) and keeps
// the accumulators in memory, which is 2-3x slower than the obvious code.
// Vector-extension types make the intended code explicit: one native vector
// register per W consecutive features, register-resident accumulators, plain
// unaligned loads, and tree-shaped horizontal sums.  The width follows the
// target (-march=native): 64 bytes with AVX-512, 32 with AVX, 16 otherwise,
// so the same source compiles anywhere GCC/Clang do.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <cstring>
#include <utility>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define GRAPHODE_VBYTES 64
#elif defined(__AVX__)
#define GRAPHODE_VBYTES 32
#else
#define GRAPHODE_VBYTES 16
#endif

#if defined(__GNUC__)
#define GRAPHODE_INLINE inline __attribute__((always_inline))
#define GRAPHODE_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 3)
#define GRAPHODE_PREFETCH_L2(p) __builtin_prefetch((const void*)(p), 0, 2)
#else
#define GRAPHODE_INLINE inline
#define GRAPHODE_PREFETCH(p) ((void)0)
#define GRAPHODE_PREFETCH_L2(p) ((void)0)
#endif

namespace graphode {
namespace cpu {

template <class T>
struct Simd {
  typedef T vec __attribute__((vector_size(GRAPHODE_VBYTES)));
  static constexpr int64_t W = GRAPHODE_VBYTES / sizeof(T);  // lanes

  static GRAPHODE_INLINE vec load(const T* p) {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static GRAPHODE_INLINE void store(T* p, vec v) { std::memcpy(p, &v, sizeof v); }
  static GRAPHODE_INLINE vec set1(T s) { return vec{} + s; }
  static GRAPHODE_INLINE vec zero() { return vec{}; }

  // Pairwise (tree) horizontal sum: log2(W) shuffle+add steps.
  static GRAPHODE_INLINE T hsum(vec v) {
    T lanes[W];
    std::memcpy(lanes, &v, sizeof v);
    for (int64_t w = W / 2; w >= 1; w /= 2)
      for (int64_t u = 0; u < w; ++u) lanes[u] += lanes[u + w];
    return lanes[0];
  }
};

#if defined(__AVX512F__)
template <>
GRAPHODE_INLINE float Simd<float>::hsum(vec v) {
  return _mm512_reduce_add_ps((__m512)v);
}
template <>
GRAPHODE_INLINE double Simd<double>::hsum(vec v) {
  return _mm512_reduce_add_pd((__m512d)v);
}
#elif defined(__AVX__)
template <>
GRAPHODE_INLINE float Simd<float>::hsum(vec v) {
  __m256 a = (__m256)v;
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
template <>
GRAPHODE_INLINE double Simd<double>::hsum(vec v) {
  __m256d a = (__m256d)v;
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}
#endif

// ---------------------------------------------------------------- transpose-sum
// W horizontal sums at once: r[l] = sum over the lanes of p[l], for W vectors
// p[0..W-1] (W = lanes).  One hsum per vector costs log2(W) shuffle+add steps
// on a dependency chain, so W of them cost W log2(W) shuffles; the butterfly
// below needs 2 (W - 1) shuffles and W - 1 adds in all and leaves the W sums
// in one vector, in natural order, ready for one store.
//
// Level w (w = W/2, W/4, ..., 1) pairs vector b with vector b + w (b < w):
//   lanes l with bit w clear take X[l] + X[l + w]      (X = p[b])
//   lanes l with bit w set   take Y[l - w] + Y[l]      (Y = p[b + w])
// Invariant after level w: vector b (b < w) holds, in lane l, a partial sum
// of p[(l & ~(w - 1)) | b]; after level 1, lane l of p[0] is the full sum of
// p[l].  Each level is two constant two-source shuffles (vshuff32x4,
// vshufps, vpermt2ps, ...) and one add per pair.
template <class T, int w, std::size_t... L>
GRAPHODE_INLINE typename Simd<T>::vec lane_combine(typename Simd<T>::vec X, typename Simd<T>::vec Y,
                                                   std::index_sequence<L...>) {
  constexpr int W = int(Simd<T>::W);
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  return __builtin_shufflevector(X, Y, ((int(L) & w) == 0 ? int(L) : W + int(L) - w)...) +
         __builtin_shufflevector(X, Y, ((int(L) & w) == 0 ? int(L) + w : W + int(L))...);
#else
  typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type I;
  typedef I ivec __attribute__((vector_size(GRAPHODE_VBYTES)));
  const ivec ma = {I((int(L) & w) == 0 ? int(L) : W + int(L) - w)...};
  const ivec mb = {I((int(L) & w) == 0 ? int(L) + w : W + int(L))...};
  return __builtin_shuffle(X, Y, ma) + __builtin_shuffle(X, Y, mb);
#endif
}

template <class T, int w>
GRAPHODE_INLINE void transpose_sum_level(typename Simd<T>::vec* p) {
  if constexpr (w >= 1) {
#pragma GCC unroll 32
    for (int b = 0; b < w; ++b)
      p[b] = lane_combine<T, w>(p[b], p[b + w], std::make_index_sequence<std::size_t(Simd<T>::W)>{});
    transpose_sum_level<T, w / 2>(p);
  }
}

/// r[l] = sum of the lanes of p[l] for the W vectors p (p is clobbered).
template <class T>
GRAPHODE_INLINE typename Simd<T>::vec transpose_sum(typename Simd<T>::vec* p) {
  transpose_sum_level<T, int(Simd<T>::W) / 2>(p);
  return p[0];
}

// ---------------------------------------------------------------- exp
// exp for the softmax.  Every argument the kernels pass is <= 0 (a score minus
// its row maximum or its log-sum-exp), so results lie in [0, 1].
//
// float: Cephes-style expf, branch-free so that it runs on whole vectors:
// x = n ln2 + r with n = round(x / ln2) (magic-number rounding), |r| <= ln2/2,
// e^r by a degree-6 polynomial (max rel. error ~1.5e-7, about 1 ulp), 2^n
// assembled in the exponent bits.  Arguments below -87.3 (results below
// FLT_MIN) give exactly 0, so no denormals appear; NaN propagates.
GRAPHODE_INLINE Simd<float>::vec exp_vec(Simd<float>::vec x) {
  using V = Simd<float>::vec;
  typedef int32_t VI __attribute__((vector_size(GRAPHODE_VBYTES)));
  const V lo = Simd<float>::set1(-87.33654475f), hi = Simd<float>::set1(88.37626266f);
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V magic = Simd<float>::set1(12582912.0f);  // 1.5 * 2^23: round to nearest
  const V tm = xc * 1.44269504088896341f + magic;  // n sits in the low mantissa bits
  const V fx = tm - magic;
  V r = xc - fx * 0.693359375f;
  r = r + fx * 2.12194440e-4f;
  const V z = r * r;
  V y = Simd<float>::set1(1.9875691500E-4f);
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  VI n;
  std::memcpy(&n, &tm, sizeof n);
  n = n - 0x4B400000 + 127;  // bits(tm) - bits(magic) = n, then the exponent bias
  const VI bits = n << 23;
  V pow2n;
  std::memcpy(&pow2n, &bits, sizeof pow2n);
  y = y * pow2n;
  y = x < lo ? Simd<float>::zero() : y;
  return x != x ? x : y;
}

// double: the exact libm exp per lane (the float64 path is for accuracy).
GRAPHODE_INLINE Simd<double>::vec exp_vec(Simd<double>::vec x) {
  for (int64_t u = 0; u < Simd<double>::W; ++u) x[u] = std::exp(x[u]);
  return x;
}

// ---------------------------------------------------------------- log
// log for the log-sum-exp of the attention rows: the arguments are softmax
// denominators, l >= 1 (a sum of exps whose largest term is e^0), so the
// float path only needs positive normal inputs.  Cephes-style logf on whole
// vectors: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log(m) = log(1 + f) by
// a degree-9 polynomial (max rel. error ~1e-7), plus e ln 2 in two parts.
// +inf and NaN propagate; zero, negative and denormal inputs are outside the
// contract (they give finite garbage, never a trap).
GRAPHODE_INLINE Simd<float>::vec log_vec(Simd<float>::vec x) {
  using V = Simd<float>::vec;
  typedef int32_t VI __attribute__((vector_size(GRAPHODE_VBYTES)));
  VI bits;
  std::memcpy(&bits, &x, sizeof bits);
  // exponent and mantissa in [1, 2)
  VI ei = ((bits >> 23) & 0xff) - 127;
  VI mb = (bits & 0x007fffff) | 0x3f800000;
  V m;
  std::memcpy(&m, &mb, sizeof m);
  V e = __builtin_convertvector(ei, V);
  // move m into [sqrt(1/2), sqrt(2)): m > sqrt(2) -> m / 2, e + 1
  const V big = m > 1.41421356237f ? Simd<float>::set1(1.0f) : Simd<float>::zero();
  m = m * (1.0f - 0.5f * big);
  e = e + big;
  const V f = m - 1.0f;
  const V z = f * f;
  V y = Simd<float>::set1(7.0376836292E-2f);
  y = y * f - 1.1514610310E-1f;
  y = y * f + 1.1676998740E-1f;
  y = y * f - 1.2420140846E-1f;
  y = y * f + 1.4249322787E-1f;
  y = y * f - 1.6668057665E-1f;
  y = y * f + 2.0000714765E-1f;
  y = y * f - 2.4999993993E-1f;
  y = y * f + 3.3333331174E-1f;
  y = y * f * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  V r = f + y;
  r = r + e * 0.693359375f;
  const V inf = Simd<float>::set1(__builtin_inff());
  r = x == inf ? inf : r;
  return x != x ? x : r;
}

// double: the exact libm log per lane.
GRAPHODE_INLINE Simd<double>::vec log_vec(Simd<double>::vec x) {
  for (int64_t u = 0; u < Simd<double>::W; ++u) x[u] = std::log(x[u]);
  return x;
}

// ---------------------------------------------------------------- lane helpers
// v[(l + k) % W] in lane l (a constant rotation).
template <class T, int k, std::size_t... L>
GRAPHODE_INLINE typename Simd<T>::vec lane_rotate(typename Simd<T>::vec v, std::index_sequence<L...>) {
  constexpr int W = int(Simd<T>::W);
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  return __builtin_shufflevector(v, v, ((int(L) + k) % W)...);
#else
  typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type I;
  typedef I ivec __attribute__((vector_size(GRAPHODE_VBYTES)));
  return __builtin_shuffle(v, ivec{I((int(L) + k) % W)...});
#endif
}

// v[l / G] in lane l: the first W / G lanes of v, each repeated G times.
template <class T, int G, std::size_t... L>
GRAPHODE_INLINE typename Simd<T>::vec lane_spread(typename Simd<T>::vec v, std::index_sequence<L...>) {
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  return __builtin_shufflevector(v, v, (int(L) / G)...);
#else
  typedef typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type I;
  typedef I ivec __attribute__((vector_size(GRAPHODE_VBYTES)));
  return __builtin_shuffle(v, ivec{I(int(L) / G)...});
#endif
}

// Sums of aligned groups of G consecutive lanes (G a power of two dividing W):
// lane g G of the result holds v[g G] + ... + v[g G + G - 1] (other lanes: partial sums).
template <class T, int G>
GRAPHODE_INLINE typename Simd<T>::vec group_sum(typename Simd<T>::vec v) {
  if constexpr (G > 1) {
    v = group_sum<T, G / 2>(v);
    v = v + lane_rotate<T, G / 2>(v, std::make_index_sequence<std::size_t(Simd<T>::W)>{});
  }
  return v;
}

GRAPHODE_INLINE float exp_scalar(float x) {
  Simd<float>::vec v = Simd<float>::set1(x);
  return exp_vec(v)[0];
}
GRAPHODE_INLINE double exp_scalar(double x) { return std::exp(x); }

}  // namespace cpu
}  // namespace graphode
