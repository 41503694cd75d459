// graphode CUDA launchers of attention_diffusion (no torch headers): the CPU
// kernels of csrc/cpu/attention_diffusion_cpu.h, same names and arguments, on
// device pointers.
#pragma once

#include "cuda/context.h"

namespace graphode {
namespace cuda {

// out[i] = (1/H) sum_h sum_{j -> i} a_ijh x[j]  [N, F] and lse [N, H]
// (a: the softmax over the in-edges of i of scale <q[i,h], k[j,h]>).
template <typename T>
cudaError_t attention_diffusion_forward(const GraphView& g, const T* q, const T* k, const T* x, int64_t H, int64_t D,
                                        int64_t F, double scale, T* out, T* lse, Context ctx);

// Backward for the upstream gradient grad [N, F] and the forward's lse:
// grad_q, grad_k [N, H, D] (both null or both non-null), grad_x [N, F] (may be null).
template <typename T>
cudaError_t attention_diffusion_backward(const GraphView& g, const T* grad, const T* lse, const T* q, const T* k,
                                         const T* x, int64_t H, int64_t D, int64_t F, double scale, T* grad_q,
                                         T* grad_k, T* grad_x, Context ctx);

}  // namespace cuda
}  // namespace graphode
