// Device helpers shared by the CUDA attention kernels (edge_attention_cuda.cu,
// attention_diffusion_cuda.cu).
//
// Notation: q, k [N, H, D], x [N, F]; for an edge j -> i (CSR row i, column j)
// s_ijh = scale <q_ih, k_jh>, a_ijh = softmax over the in-edges of i of s_ijh.
//
// Warp mapping
// ------------
// One warp per row (see common.cuh).  A row's edges are processed in blocks of
// 32, in two phases per block:
//   1. "lane per edge": lane t takes edge e0 + t and computes its H scores,
//      reading q_i (pre-scaled, staged once per row in the warp's shared-memory
//      slice; broadcast reads, no bank conflicts) against its own k_j row.  The
//      block's per-head max and the softmax terms come from butterfly
//      __shfl_xor_sync reductions (warp_max / warp_sum, 5 shuffles each).
//   2. "lane per feature": the block's 32 (neighbour, coefficient) pairs are
//      staged in shared memory, and lane l accumulates features f = l + 32c
//      (or, for gradients of q/k, entries idx = l + 32c of the H*D vector) over
//      the block's edges, so every gathered x / q / k row is read as coalesced
//      128-byte segments.  Each lane owns its own accumulator entries (registers
//      in the forward, the warp's shared-memory slice in the backward), hence
//      no atomics anywhere, and __syncwarp() only guards the staged block.
// The backward's transposed pass (grad_k, grad_x) is the same scheme over the
// CSC arrays: one warp per *source*, its out-edges in blocks of 32.
//
// Online softmax (numerical stability)
// ------------------------------------
// Per head the warp keeps the running max m (warp-uniform) and per lane a
// partial sum l = sum exp(s - m) over the edges that lane has seen, plus the
// accumulators acc[h][f] = sum exp(s - m) x[j, f].  For a new block with block
// max b: m' = max(m, b), every state is rescaled by alpha = exp(m - m') (0 on
// the first block, since m = -inf) and the block adds p = exp(s - m') <= 1.
// No exponential can overflow whatever the magnitude of the scores.  The lane
// partials of l are summed once at the end (a rescaling by the common alpha
// commutes with the sum).  Only lse = m + log(l) [N, H] is stored (-inf for a
// row without in-edges, whose output is 0); the backward recomputes
// a = exp(s - lse) <= 1 from q and k.  The backward uses the two-sweep form
// ds = a (t / H - D) with D computed first, which avoids the cancellation of
// the one-sweep sum(a t k)/H - D sum(a k).
//
// Limits: H <= kMaxHeads (one score per head and lane in registers); the
// per-warp shared-memory slice holds O(H*D + F) values (opt-in beyond 48 KiB).
#pragma once

#include <type_traits>

#include "cuda/common.cuh"

namespace graphode {
namespace cuda {
namespace detail {

// Bytes of one warp's shared-memory slice: 32 int64 neighbour ids followed by
// `values` scalars of T, rounded up to 16 bytes.
template <typename T>
inline size_t slice_bytes(int64_t values) {
  size_t b = kWarp * sizeof(int64_t) + static_cast<size_t>(values) * sizeof(T);
  return (b + 15) / 16 * 16;
}

template <typename T>
__device__ __forceinline__ void warp_slice(size_t bytes, int64_t*& nbr, T*& vals) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* base = smem_raw + static_cast<size_t>(threadIdx.x / kWarp) * bytes;
  nbr = reinterpret_cast<int64_t*>(base);
  vals = reinterpret_cast<T*>(base + kWarp * sizeof(int64_t));
}

// H scores of one edge: s[h] = <qs[h*D : (h+1)*D], kj[h*D : (h+1)*D]> (qs pre-scaled).
template <typename T, int MAXH>
__device__ __forceinline__ void edge_scores(T (&s)[MAXH], const T* qs, const T* __restrict__ kj, int H, int D) {
#pragma unroll
  for (int h = 0; h < MAXH; ++h) {
    T acc = T(0);
    if (h < H) {
      const T* a = qs + h * D;
      const T* b = kj + h * D;
      for (int d = 0; d < D; ++d) acc += a[d] * b[d];
    }
    s[h] = acc;
  }
}

// acc[idx] += sum_{t < n} coef[t * MAXH + idx / D] * src[nbr[t] * HD + idx] for the
// lane's entries idx = lane + 32c: the gradient of q (or k) from a staged block.
template <typename T, int MAXH>
__device__ __forceinline__ void accumulate_hd(T* acc, const T* coef, const int64_t* nbr, int n,
                                              const T* __restrict__ src, int HD, int D, int lane) {
  for (int idx = lane; idx < HD; idx += kWarp) {
    const int h = idx / D;
    T sum = T(0);
    for (int t = 0; t < n; ++t) sum += coef[t * MAXH + h] * src[nbr[t] * HD + idx];
    acc[idx] += sum;
  }
}

// Head buckets: MAXH in {1, 4, 8} (unused head slots are skipped by runtime
// guards inside unrolled loops; fewer instantiations keep nvcc time down).
inline int heads_bucket(int64_t H) { return H <= 1 ? 1 : H <= 4 ? 4 : H <= kMaxHeads ? 8 : 0; }

// Calls fn(std::integral_constant<int, MAXH>) for the smallest supported MAXH >= H.
template <typename Fn>
cudaError_t dispatch_heads(int64_t H, Fn&& fn) {
  switch (heads_bucket(H)) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    default: return cudaErrorInvalidValue;
  }
}

template <typename Kernel>
cudaError_t smem_ready(Kernel kernel, size_t slice) {
  return prepare_smem(kernel, slice * kWarpsPerBlock);
}

inline bool sizes_ok(int64_t H, int64_t D) {
  return H >= 1 && H <= kMaxHeads && D >= 1 && H * D <= (int64_t(1) << 20);
}

}  // namespace detail
}  // namespace cuda
}  // namespace graphode
