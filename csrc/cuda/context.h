// graphode CUDA launchers: what every launcher header shares (no torch headers).
//
// Conventions (see graph_view.h and the schema block of each csrc/<op>.cpp):
//   * the graph is a GraphView of device pointers (CSR over targets and its
//     CSC transpose, all int64);
//   * q, k [N, H, D]; x [N, F]; weight [E]; attention [E, H]; all contiguous,
//     row-major, on the device, of one dtype T (float or double);
//   * accumulation is in T: the CUDA backend supports float32 and float64
//     only (half types: use triton);
//   * lse [N, H] is of type T, -inf for a row without in-edges.
//
// Every launcher has the signature of the CPU kernel of the same name
// (csrc/cpu/<op>_cpu.h) with a cuda::Context (the stream) in place of the
// cpu::Context.  It enqueues its kernels on the stream and returns
// cudaSuccess, the launch error (cudaGetLastError), or cudaErrorInvalidValue
// when a size is outside what the kernels support (H > kMaxHeads, shared
// memory too large); error_string() turns the code into a message.  Launchers
// never synchronise; the few that need a workspace take it from the stream's
// memory pool (cudaMallocAsync) and free it on the same stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "graph_view.h"

namespace graphode {
namespace cuda {

struct Context {
  cudaStream_t stream = nullptr;
};

// Heads per attention op supported by the CUDA kernels (registers hold one
// score per head and lane).
constexpr int kMaxHeads = 8;

inline const char* error_string(cudaError_t e) { return cudaGetErrorString(e); }

}  // namespace cuda
}  // namespace graphode
