// Device helpers shared by the graphode CUDA kernels (warp primitives, launch shapes).
//
// Warp mapping used throughout: one warp (32 lanes) owns one row, i.e. a
// target's in-edges (CSR) or a source's out-edges (CSC).  A block holds
// kWarpsPerBlock independent warps; warps never synchronise with each other,
// only with __syncwarp() around their own slice of shared memory.  A warp whose
// row index is >= N exits as a whole, so every __shfl_*_sync below runs with
// the full mask.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/context.h"

namespace graphode {
namespace cuda {
namespace detail {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarp * kWarpsPerBlock;

// Butterfly reductions: after log2(32) = 5 xor-shuffles every lane holds the
// result, so no broadcast is needed afterwards.
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}

__device__ __forceinline__ float fast_exp(float v) { return __expf(v); }
__device__ __forceinline__ double fast_exp(double v) { return exp(v); }
__device__ __forceinline__ float log_(float v) { return logf(v); }
__device__ __forceinline__ double log_(double v) { return log(v); }

// Global warp index of this thread and its lane.
__device__ __forceinline__ int64_t warp_id() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
}
__device__ __forceinline__ int lane_id() { return threadIdx.x & (kWarp - 1); }

inline unsigned blocks_for_rows(int64_t N) {
  return static_cast<unsigned>((N + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

inline cudaError_t launch_status() { return cudaGetLastError(); }

// A workspace of n values of T from the stream's memory pool, freed (in
// stream order) when it goes out of scope.  err() is the allocation status.
template <typename T>
class StreamBuffer {
 public:
  StreamBuffer(size_t n, cudaStream_t stream) : stream_(stream) {
    if (n > 0) err_ = cudaMallocAsync(reinterpret_cast<void**>(&p_), n * sizeof(T), stream);
  }
  ~StreamBuffer() {
    if (p_ != nullptr) cudaFreeAsync(p_, stream_);
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  T* get() const { return p_; }
  cudaError_t err() const { return err_; }

 private:
  T* p_ = nullptr;
  cudaStream_t stream_;
  cudaError_t err_ = cudaSuccess;
};

// Dynamic shared memory: kernels beyond the 48 KiB default must opt in.
template <typename Kernel>
inline cudaError_t prepare_smem(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

}  // namespace detail
}  // namespace cuda
}  // namespace graphode
