// Fused dropout with a counter-based RNG (Philox4x32-10), header-only and
// torch-free (instantiated in dropout_cpu.cpp; the torch wrapper is csrc/dropout.cpp).
//
// The mask of element i of a call with seed s is a pure function of (s, i):
//   u_i = word (i mod 4) of Philox4x32-10(counter = (lo32(i/4), hi32(i/4), 0, 0),
//                                          key = (lo32(s), hi32(s)))
//   keep_i = u_i >= threshold,   threshold = min(floor(p * 2^32), 2^32 - 1)
//   out_i  = x_i * (keep_i ? scale : 0),   scale = 1 / (1 - p) in x's dtype
// so P(keep) = 1 - threshold / 2^32 (= 1 - p up to 2^-32), the mask needs no
// storage (the backward regenerates it from s), and the result does not depend
// on the thread count or the chunking.  Philox4x32-10 is Salmon et al., "Parallel
// random numbers: as easy as 1, 2, 3" (SC'11), the generator of cuRAND and
// Triton's tl.philox; graphode.ops.reference.philox4x32_10 is its torch twin.
#pragma once

#include <cstdint>

namespace graphode {
namespace cpu {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

// One Philox4x32-10 block, in place: counter c[4], key (k0, k1).
inline void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c[2];
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    c[1] = static_cast<uint32_t>(p1);
    c[3] = static_cast<uint32_t>(p0);
    c[0] = n0;
    c[2] = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// threshold of the keep test for a drop probability p in [0, 1].
inline uint32_t dropout_threshold(double p) {
  if (!(p > 0.0)) return 0u;
  const double t = p * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// Elements [4 * b_begin, min(n, 4 * b_end)) of the dropout of x (see above).
// The Philox rounds run on kBatch blocks at a time in 64-bit lanes, a loop
// the compiler vectorises.
template <typename T>
void dropout_blocks(const T* x, T* out, int64_t n, uint64_t seed, uint32_t threshold, T scale, int64_t b_begin,
                    int64_t b_end) {
  constexpr int64_t kBatch = 64;
  constexpr uint64_t kLo = 0xFFFFFFFFull;
  const uint64_t k0 = seed & kLo, k1 = seed >> 32;
  for (int64_t b0 = b_begin; b0 < b_end; b0 += kBatch) {
    const int64_t nb = (b_end - b0 < kBatch) ? b_end - b0 : kBatch;
    uint64_t c0[kBatch], c1[kBatch], c2[kBatch], c3[kBatch];
    for (int64_t j = 0; j < kBatch; ++j) {
      const uint64_t b = static_cast<uint64_t>(b0 + j);
      c0[j] = b & kLo;
      c1[j] = b >> 32;
      c2[j] = 0;
      c3[j] = 0;
    }
    uint64_t kk0 = k0, kk1 = k1;
    for (int r = 0; r < 10; ++r) {
      for (int64_t j = 0; j < kBatch; ++j) {
        const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * (c0[j] & kLo);
        const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * (c2[j] & kLo);
        const uint64_t n0 = (p1 >> 32) ^ c1[j] ^ kk0;
        const uint64_t n2 = (p0 >> 32) ^ c3[j] ^ kk1;
        c1[j] = p1 & kLo;
        c3[j] = p0 & kLo;
        c0[j] = n0;
        c2[j] = n2;
      }
      kk0 = (kk0 + kPhiloxW0) & kLo;
      kk1 = (kk1 + kPhiloxW1) & kLo;
    }
    uint32_t u[4 * kBatch];
    for (int64_t j = 0; j < kBatch; ++j) {
      u[4 * j] = static_cast<uint32_t>(c0[j]);
      u[4 * j + 1] = static_cast<uint32_t>(c1[j]);
      u[4 * j + 2] = static_cast<uint32_t>(c2[j]);
      u[4 * j + 3] = static_cast<uint32_t>(c3[j]);
    }
    const int64_t i0 = 4 * b0;
    const int64_t m = (n - i0 < 4 * nb) ? n - i0 : 4 * nb;
    const T zero = T(0);
    const T* xi = x + i0;
    T* oi = out + i0;
    for (int64_t j = 0; j < m; ++j) oi[j] = xi[j] * (u[j] >= threshold ? scale : zero);
  }
}

// Number of Philox blocks (4 elements each) of an n-element tensor.
inline int64_t dropout_num_blocks(int64_t n) { return (n + 3) / 4; }

}  // namespace cpu
}  // namespace graphode
