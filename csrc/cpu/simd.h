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
#include <cstring>

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
#else
#define GRAPHODE_INLINE inline
#define GRAPHODE_PREFETCH(p) ((void)0)
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

GRAPHODE_INLINE float exp_scalar(float x) {
  Simd<float>::vec v = Simd<float>::set1(x);
  return exp_vec(v)[0];
}
GRAPHODE_INLINE double exp_scalar(double x) { return std::exp(x); }

}  // namespace cpu
}  // namespace graphode
