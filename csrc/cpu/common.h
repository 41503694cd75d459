// graphode CPU kernels: shared building blocks (header-only, no torch).
//
// Everything under csrc/cpu/*.h works on raw pointers and needs nothing but a
// C++17 compiler (OpenMP optional).  The torch-facing wrapper of each op
// (csrc/<op>.cpp) only checks tensors and calls these templates, and the
// CMake build compiles the same kernels (csrc/cpu/<op>_cpu.cpp instantiates
// them) into a plain C++ library with C++ tests (csrc/tests/) without Torch.
//
// Graph layout: see graph_view.h (CSR over targets plus its CSC transpose).
// Row passes (forward, grad of targets) walk the CSR; column passes (grad of
// sources) walk the CSC, so every output row is written by exactly one thread
// and no atomics are needed.
//
// Work partitioning ("edge balanced"): graphs have power-law degrees, so
// splitting rows evenly would give one thread the hub rows.  The cost of a row
// is modelled as deg(i) + 1 (edges plus the per-row work of writing its
// output), whose prefix sum is simply P(i) = ptr[i] + i: non-decreasing, so the
// first row of a part that starts at cost c is found by binary search in ptr
// (O(log N) per part, no O(N) pre-pass).  We cut kPartsPerThread parts per
// thread and hand them out dynamically, which also absorbs the variation of
// gather latency between parts.  A single row is never split (its output is
// one contiguous reduction), so one row can at most take a whole part.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/simd.h"
#include "graph_view.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace graphode {
namespace cpu {

// Execution context of a CPU kernel: how many OpenMP threads it may use
// (<= 0: omp_get_max_threads()).  The CUDA launchers take a cuda::Context (the
// stream) in the same last position, so the torch wrappers call either
// kernel with one expression.
struct Context {
  int threads = 0;
  Context(int threads_ = 0) : threads(threads_) {}  // NOLINT: an int is a Context
};

// ---------------------------------------------------------------- threading
#ifndef GRAPHODE_PARTS_PER_THREAD
#define GRAPHODE_PARTS_PER_THREAD 8
#endif
constexpr int64_t kPartsPerThread = GRAPHODE_PARTS_PER_THREAD;
// Below this much work a call runs on the calling thread alone.  Each unit is
// about one multiply-add of an edge; 2^22 is ~0.5-1 ms of single-core work
// (a Cora-sized attention_diffusion forward).  On an idle machine a parallel
// region would save a fraction of that, but on a busy one (more runnable
// threads than cores) every region waits for its worker to be scheduled,
// which costs milliseconds (on such a machine torch.set_num_threads(1) is
// often just as fast).  Do not use OMP_DYNAMIC=true for that: it is fine
// for these kernels (parts are handed out dynamically), but torch 2.13's CSR
// torch.sparse.mm then silently skips rows (it assumes all requested threads
// run).
constexpr int64_t kSerialWork = int64_t(1) << 22;

// The cutoff in force (tests set it to 0 to run the parallel paths on small graphs).
inline int64_t& serial_work_threshold() {
  static int64_t value = kSerialWork;
  return value;
}

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int plan_threads(int nthreads, int64_t work) {
  if (nthreads <= 0) nthreads = max_threads();
  if (work < serial_work_threshold()) return 1;
  return nthreads;
}

inline int64_t plan_parts(int nthreads, int64_t rows) {
  if (nthreads <= 1) return rows > 0 ? 1 : 0;
  return std::max<int64_t>(1, std::min<int64_t>(rows, nthreads * kPartsPerThread));
}

// First row r in [0, N] with ptr[r] + r >= target.
inline int64_t split_row(const int64_t* ptr, int64_t N, int64_t target) {
  int64_t lo = 0, hi = N;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ptr[mid] + mid < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Rows [r0, r1) of part `part` out of `parts`, balanced by edges + rows.
inline void part_rows(const int64_t* ptr, int64_t N, int64_t E, int64_t part, int64_t parts, int64_t& r0,
                      int64_t& r1) {
  const double total = double(E + N);
  r0 = part == 0 ? 0 : split_row(ptr, N, int64_t(total * double(part) / double(parts)));
  r1 = part + 1 == parts ? N : split_row(ptr, N, int64_t(total * double(part + 1) / double(parts)));
}

// Runs body(r0, r1, scratch) over edge-balanced row ranges of `ptr`, with one
// scratch object per thread made by make_scratch() (so hot loops never allocate).
template <class MakeScratch, class Body>
inline void for_each_row_part(const int64_t* ptr, int64_t N, int64_t E, int nthreads, MakeScratch make_scratch,
                              Body body) {
  const int64_t parts = plan_parts(nthreads, N);
  if (parts == 0) return;
  if (nthreads <= 1 || parts == 1) {
    auto scratch = make_scratch();
    body(int64_t(0), N, scratch);
    return;
  }
#pragma omp parallel num_threads(nthreads)
  {
    auto scratch = make_scratch();
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < parts; ++p) {
      int64_t r0, r1;
      part_rows(ptr, N, E, p, parts, r0, r1);
      if (r0 < r1) body(r0, r1, scratch);
    }
  }
}

// Checks ptr[0] == 0, ptr[N] == E and monotonicity: O(N), serial and
// vectorised (~30 us at N = 100k; a parallel region would cost more than that
// on a busy machine).
inline bool valid_ptr(const int64_t* ptr, int64_t N, int64_t E) {
  if (ptr == nullptr || ptr[0] != 0 || ptr[N] != E) return false;
  uint64_t bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < N; ++i) bad |= uint64_t(ptr[i] > ptr[i + 1]);
  return bad == 0;
}

inline int validate(const GraphView& g, bool need_csr, bool need_csc) {
  if (g.num_nodes < 0 || g.num_edges < 0) return kBadSize;
  if (need_csr && !valid_ptr(g.rowptr, g.num_nodes, g.num_edges)) return kBadRowptr;
  if (need_csc && !valid_ptr(g.csc_ptr, g.num_nodes, g.num_edges)) return kBadCscPtr;
  return kOk;
}

// True when all n indices lie in [0, bound); the unsigned compare also
// catches negatives.  Called once per row with n ~ the degree (a handful), so
// it is an unrolled scalar OR-reduction: the compiler's vectorised version of
// this loop (masked epilogue, partial vectors spilled and reloaded) stalled on
// store forwarding and cost ~20% of the attention forward on Cora.
GRAPHODE_INLINE bool indices_ok(const int64_t* idx, int64_t n, int64_t bound) {
  const uint64_t ub = uint64_t(bound);
  uint64_t b0 = 0, b1 = 0, b2 = 0, b3 = 0;
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) {
    b0 |= uint64_t(uint64_t(idx[t]) >= ub);
    b1 |= uint64_t(uint64_t(idx[t + 1]) >= ub);
    b2 |= uint64_t(uint64_t(idx[t + 2]) >= ub);
    b3 |= uint64_t(uint64_t(idx[t + 3]) >= ub);
  }
  for (; t < n; ++t) b0 |= uint64_t(uint64_t(idx[t]) >= ub);
  return (b0 | b1 | b2 | b3) == 0;
}

// Records an error code from inside a parallel region (first writer wins is
// not needed: any non-zero code makes the call fail).
inline void set_error(int& flag, int code) {
#pragma omp atomic write
  flag = code;
}

template <class T>
inline T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// ---------------------------------------------------------------- vector loops
// The inner loops run over F (features) or D (head dim), contiguous in memory,
// as whole native vectors (simd.h) plus a scalar tail when F or D is not a
// multiple of the vector width.
template <class T>
GRAPHODE_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  using S = Simd<T>;
  constexpr int64_t W = S::W;
  int64_t f = 0;
  T s = T(0);
  if (n >= W) {
    typename S::vec acc0 = S::load(a) * S::load(b), acc1 = S::zero();
    f = W;
    for (; f + 2 * W <= n; f += 2 * W) {
      acc0 += S::load(a + f) * S::load(b + f);
      acc1 += S::load(a + f + W) * S::load(b + f + W);
    }
    if (f + W <= n) {
      acc0 += S::load(a + f) * S::load(b + f);
      f += W;
    }
    s = S::hsum(acc0 + acc1);
  }
  for (; f < n; ++f) s += a[f] * b[f];
  return s;
}

template <class T>
GRAPHODE_INLINE void axpy(T* __restrict y, T a, const T* __restrict x, int64_t n) {
  using S = Simd<T>;
  constexpr int64_t W = S::W;
  const typename S::vec av = S::set1(a);
  int64_t f = 0;
  for (; f + W <= n; f += W) S::store(y + f, S::load(y + f) + av * S::load(x + f));
  for (; f < n; ++f) y[f] += a * x[f];
}

template <class T>
GRAPHODE_INLINE void scale_to(T* __restrict out, T a, const T* __restrict x, int64_t n) {
  using S = Simd<T>;
  constexpr int64_t W = S::W;
  const typename S::vec av = S::set1(a);
  int64_t f = 0;
  for (; f + W <= n; f += W) S::store(out + f, av * S::load(x + f));
  for (; f < n; ++f) out[f] = a * x[f];
}

template <class T>
inline void fill(T* y, T v, int64_t n) {
  std::fill(y, y + n, v);
}

// How many edges ahead the gather loops prefetch their rows.  The gathers
// are latency bound (random rows of an array larger than the caches), and
// the out-of-order window alone keeps too few misses in flight.
#ifndef GRAPHODE_PREFETCH_DISTANCE
#define GRAPHODE_PREFETCH_DISTANCE 8
#endif
constexpr int64_t kPrefetchDistance = GRAPHODE_PREFETCH_DISTANCE;

// Prefetch policy of a gather loop: how many idx entries ahead, and into
// which level.  The default ("near": prefetcht0, kPrefetchDistance ahead)
// suits rows that mostly come from L2/L3.  Gathers from arrays much larger
// than the last-level cache wait on DRAM; there "far" (prefetcht1 into L2,
// twice as far ahead) keeps more misses in flight than L1's fill buffers
// can track.  Measured on the attention kernels: far is ~25% faster on a
// 100k-node graph (51 MB of gathered rows), near ~15% faster on a
// PubMed-sized one (10 MB).
// Far is a template parameter of the gather loops (a runtime flag tested at
// every prefetch cost ~7% on Cora).
template <bool Far>
constexpr int64_t prefetch_distance() {
  return Far ? 2 * kPrefetchDistance : kPrefetchDistance;
}

template <bool Far>
GRAPHODE_INLINE void prefetch_line(const void* p) {
  if constexpr (Far)
    GRAPHODE_PREFETCH_L2(p);
  else
    GRAPHODE_PREFETCH(p);
}

// One register tile of NV vectors (NV * W features starting at f0):
//   y[f0 : f0 + NV W] (+)= sum_t coef[t] x[idx[t], f0 : ...]
template <class T, int NV, bool Far = false>
GRAPHODE_INLINE void gather_axpy_tile(int64_t n, const int64_t* __restrict idx, const T* __restrict coef,
                                      const T* __restrict x, int64_t F, int64_t f0, T* __restrict y,
                                      bool accumulate, int64_t npf) {
  using S = Simd<T>;
  constexpr int64_t W = S::W;
  constexpr int64_t kLineElems = 64 / sizeof(T);
  typename S::vec acc[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) acc[v] = accumulate ? S::load(y + f0 + v * W) : S::zero();
  const T* xf = x + f0;
  for (int64_t t = 0; t < n; ++t) {
    constexpr int64_t dist = prefetch_distance<Far>();
    if (t + dist < npf) {
      const T* pr = xf + idx[t + dist] * F;
#pragma GCC unroll 16
      for (int64_t l = 0; l < NV * W; l += kLineElems) prefetch_line<Far>(pr + l);
    }
    const typename S::vec c = S::set1(coef[t]);
    const T* __restrict xr = xf + idx[t] * F;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] += c * S::load(xr + v * W);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) S::store(y + f0 + v * W, acc[v]);
}

// Register tile of the gathered row reductions: 256 bytes (4 AVX-512 or 8
// AVX2 vectors: one x row at F = 64 in float).
template <class T>
struct Tile {
  static constexpr int NV = int(256 / GRAPHODE_VBYTES);
};

// The remaining nvec (< NV) whole vectors of a row, as one tile of nvec vectors.
template <class T, int K, bool Far = false>
GRAPHODE_INLINE void gather_axpy_rest(int64_t nvec, int64_t n, const int64_t* idx, const T* coef, const T* x,
                                      int64_t F, int64_t f0, T* y, bool accumulate, int64_t npf) {
  if constexpr (K >= 1) {
    if (nvec == K)
      gather_axpy_tile<T, K, Far>(n, idx, coef, x, F, f0, y, accumulate, npf);
    else
      gather_axpy_rest<T, K - 1, Far>(nvec, n, idx, coef, x, F, f0, y, accumulate, npf);
  }
}

// y[0:F] (+)= sum_{t < n} coef[t] * x[idx[t], 0:F]
//
// The gather-reduce at the heart of SpMM (weights = edge values), of the
// attention diffusion (weights = head-averaged attention) and of the
// transposed passes.  F is cut into register tiles whose partial sums stay in
// vector registers over the whole edge list, so an edge costs F/W loads and
// F/W FMAs and the output row is written once; the next rows are prefetched.
// accumulate=false overwrites y (no separate zeroing pass).  Prefetching runs
// kPrefetchDistance entries ahead in idx, across the end of this row up to
// idx[npf - 1] (the end of the caller's part): most rows of power-law graphs
// are shorter than the prefetch distance.
//
// NV (vectors per register tile) defaults to Tile<T>::NV; the attention
// kernels use 8 (a whole F = 80 or 128-float row in one sweep of the edges).
// npf = 0 turns prefetching off (rows already touched by the caller).
template <class T, int NV = Tile<T>::NV, bool Far = false>
inline void gather_axpy(int64_t n, const int64_t* __restrict idx, const T* __restrict coef, const T* __restrict x,
                        int64_t F, T* __restrict y, bool accumulate, int64_t npf = -1) {
  if (npf < 0) npf = n;
  using S = Simd<T>;
  constexpr int64_t W = S::W;
  int64_t f0 = 0;
  for (; f0 + NV * W <= F; f0 += NV * W) gather_axpy_tile<T, NV, Far>(n, idx, coef, x, F, f0, y, accumulate, npf);
  gather_axpy_rest<T, NV - 1, Far>((F - f0) / W, n, idx, coef, x, F, f0, y, accumulate, npf);  // < NV vectors left
  f0 += (F - f0) / W * W;
  const int64_t rem = F - f0;  // scalar tail (< W features)
  if (rem > 0) {
    T acc[64];
    for (int64_t f = 0; f < rem; ++f) acc[f] = accumulate ? y[f0 + f] : T(0);
    const T* xf = x + f0;
    for (int64_t t = 0; t < n; ++t) {
      const T c = coef[t];
      const T* __restrict xr = xf + idx[t] * F;
      for (int64_t f = 0; f < rem; ++f) acc[f] += c * xr[f];
    }
    for (int64_t f = 0; f < rem; ++f) y[f0 + f] = acc[f];
  }
}

}  // namespace cpu
}  // namespace graphode
