// graphode CPU kernels: shared building blocks (header-only, no torch).
//
// Everything under csrc/cpu/*.h works on raw pointers and needs nothing but a
// C++17 compiler (OpenMP optional).  The torch-facing wrappers
// (csrc/cpu/ops_cpu.cpp) only check tensors and call these templates, and the
// CMake build compiles the same headers into a plain C++ library with C++
// tests (csrc/tests/) without Torch.
//
// Graph layout (see graphode/graph.py): CSR over *targets*.
//   rowptr [N+1], col [E]        in-edges j -> i of target i are
//                                e = rowptr[i] .. rowptr[i+1]-1, source col[e]
//   csc_ptr [N+1], csc_row [E],  out-edges of source j are the CSC positions
//   csc_perm [E]                 p = csc_ptr[j] .. csc_ptr[j+1]-1, with target
//                                csc_row[p] and CSR edge id csc_perm[p].
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

#ifdef _OPENMP
#include <omp.h>
#endif

namespace graphode {
namespace cpu {

// ---------------------------------------------------------------- status codes
// Kernels never throw and never read out of bounds: they validate the pointer
// arrays up front (O(N)) and every gathered index as they go (one compare per
// edge, in registers) and report the first problem as a non-zero code.
enum Status : int {
  kOk = 0,
  kBadRowptr = 1,    // rowptr[0] != 0, rowptr[N] != E or rowptr decreasing
  kBadCscPtr = 2,    // same for csc_ptr
  kBadCol = 3,       // col[e] outside [0, N)
  kBadCscRow = 4,    // csc_row[p] outside [0, N)
  kBadCscPerm = 5,   // csc_perm[p] outside [0, E)
  kBadSize = 6,      // negative sizes
};

inline const char* status_message(int status) {
  switch (status) {
    case kOk: return "ok";
    case kBadRowptr:
      return "rowptr is not a valid CSR pointer array: it must start at 0, end at E = col.size(0) and be non-decreasing";
    case kBadCscPtr:
      return "csc_ptr is not a valid pointer array: it must start at 0, end at E = csc_row.size(0) and be non-decreasing";
    case kBadCol: return "col contains a node index outside [0, N)";
    case kBadCscRow: return "csc_row contains a node index outside [0, N)";
    case kBadCscPerm: return "csc_perm contains an edge index outside [0, E)";
    case kBadSize: return "negative size";
    default: return "unknown error";
  }
}

// ---------------------------------------------------------------- graph view
struct GraphView {
  const int64_t* rowptr = nullptr;    // [N+1]
  const int64_t* col = nullptr;       // [E]
  const int64_t* csc_ptr = nullptr;   // [N+1] (may be null for row-only ops)
  const int64_t* csc_row = nullptr;   // [E]
  const int64_t* csc_perm = nullptr;  // [E]
  int64_t num_nodes = 0;
  int64_t num_edges = 0;
};

// ---------------------------------------------------------------- threading
constexpr int64_t kPartsPerThread = 8;
// Below this many scalar multiply-adds, a parallel region costs more than it saves.
constexpr int64_t kSerialWork = int64_t(1) << 15;

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int plan_threads(int nthreads, int64_t work) {
  if (nthreads <= 0) nthreads = max_threads();
  if (work < kSerialWork) return 1;
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

// Checks ptr[0] == 0, ptr[N] == E and monotonicity (O(N), parallel for large N).
inline bool valid_ptr(const int64_t* ptr, int64_t N, int64_t E, int nthreads) {
  if (ptr == nullptr || ptr[0] != 0 || ptr[N] != E) return false;
  int bad = 0;
  const int nt = N > (int64_t(1) << 16) ? (nthreads <= 0 ? max_threads() : nthreads) : 1;
#pragma omp parallel for num_threads(nt) reduction(| : bad) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < N; ++i) bad |= int(ptr[i] > ptr[i + 1]);
  return bad == 0;
}

inline int validate(const GraphView& g, bool need_csr, bool need_csc, int nthreads) {
  if (g.num_nodes < 0 || g.num_edges < 0) return kBadSize;
  if (need_csr && !valid_ptr(g.rowptr, g.num_nodes, g.num_edges, nthreads)) return kBadRowptr;
  if (need_csc && !valid_ptr(g.csc_ptr, g.num_nodes, g.num_edges, nthreads)) return kBadCscPtr;
  return kOk;
}

// True when all n indices lie in [0, bound).  Vectorisable; the unsigned
// compare also catches negatives.
inline bool indices_ok(const int64_t* idx, int64_t n, int64_t bound) {
  uint64_t bad = 0;
  const uint64_t ub = uint64_t(bound);
#pragma omp simd reduction(| : bad)
  for (int64_t t = 0; t < n; ++t) bad |= uint64_t(uint64_t(idx[t]) >= ub);
  return bad == 0;
}

// Records an error code from inside a parallel region (first writer wins is
// not needed: any non-zero code makes the call fail).
inline void set_error(int& flag, int code) {
#pragma omp atomic write
  flag = code;
}

// ---------------------------------------------------------------- math
// exp for the softmax.  Every argument the kernels pass is <= 0 (a score minus
// its row maximum or its log-sum-exp), so the result lies in [0, 1].
//
// float: a branch-free Cephes-style expf that GCC vectorises inside
// `omp simd` loops (glibc's expf is a scalar call there): x = n ln2 + r with
// |r| <= ln2/2, e^r by a degree-6 polynomial (max rel. error ~1.5e-7, i.e. ~1
// ulp), 2^n built in the exponent bits.  Arguments below -87.3 (results below
// FLT_MIN) return exactly 0, so denormals never appear.
inline float exp_approx(float x) {
  const float lo = -87.33654475f, hi = 88.37626266f;
  const bool under = x < lo;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  float fx = xc * 1.44269504088896341f + 0.5f;
  fx = std::floor(fx);
  float r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  const int32_t n = int32_t(fx) + 127;
  int32_t bits = n << 23;
  float pow2n;
  std::memcpy(&pow2n, &bits, sizeof(float));
  y = y * pow2n;
  y = under ? 0.0f : y;
  return x != x ? x : y;  // NaN in, NaN out
}
// double: the exact libm exp (the float64 path is for accuracy, e.g. gradcheck).
inline double exp_approx(double x) { return std::exp(x); }

template <class T>
inline T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// ---------------------------------------------------------------- vector loops
// The inner loops run over F (features) or D (head dim), contiguous in memory;
// `omp simd` vectorises them (AVX2/AVX-512 with -march=native), including
// tails when F or D is not a multiple of the vector width.
template <class T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t f = 0; f < n; ++f) s += a[f] * b[f];
  return s;
}

template <class T>
inline void axpy(T* __restrict y, T a, const T* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f) y[f] += a * x[f];
}

template <class T>
inline void scale_to(T* __restrict out, T a, const T* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f) out[f] = a * x[f];
}

template <class T>
inline void fill(T* y, T v, int64_t n) {
#pragma omp simd
  for (int64_t f = 0; f < n; ++f) y[f] = v;
}

// Register tile of the gathered row reductions, in elements: 16 AVX2 / 8
// AVX-512 float vectors (64 floats, 256 bytes = one x row at F=64 in float).
template <class T>
struct Tile {
  static constexpr int64_t value = 256 / sizeof(T);
};

// y[0:F] (+)= sum_{t < n} coef[t] * x[idx[t], 0:F]
//
// The gather-reduce at the heart of SpMM (weights = edge values), of the
// attention diffusion (weights = head-averaged attention) and of the
// transposed passes.  F is cut into register tiles of Tile<T> elements whose
// partial sums stay in vector registers for the whole edge list, so each
// edge costs F/W loads + F/W FMAs and the output row is written once.
// accumulate=false overwrites y (no separate zeroing pass).
template <class T>
inline void gather_axpy(int64_t n, const int64_t* __restrict idx, const T* __restrict coef, const T* __restrict x,
                        int64_t F, T* __restrict y, bool accumulate) {
  constexpr int64_t W = Tile<T>::value;
  int64_t f0 = 0;
  for (; f0 + W <= F; f0 += W) {
    T acc[W];
    if (accumulate) {
      for (int64_t f = 0; f < W; ++f) acc[f] = y[f0 + f];
    } else {
      for (int64_t f = 0; f < W; ++f) acc[f] = T(0);
    }
    const T* xf = x + f0;
    for (int64_t t = 0; t < n; ++t) {
      const T c = coef[t];
      const T* __restrict xr = xf + idx[t] * F;
#pragma omp simd
      for (int64_t f = 0; f < W; ++f) acc[f] += c * xr[f];
    }
    for (int64_t f = 0; f < W; ++f) y[f0 + f] = acc[f];
  }
  const int64_t rem = F - f0;
  if (rem > 0) {
    T* __restrict yr = y + f0;
    if (!accumulate) fill(yr, T(0), rem);
    const T* xf = x + f0;
    for (int64_t t = 0; t < n; ++t) axpy(yr, coef[t], xf + idx[t] * F, rem);
  }
}

}  // namespace cpu
}  // namespace graphode
