// graphode CUDA launchers of edge_attention (no torch headers): the CPU kernels
// of csrc/cpu/edge_attention_cpu.h, same names and arguments, on device pointers.
#pragma once

#include "cuda/context.h"

namespace graphode {
namespace cuda {

// attn [E, H]: per target row and head, softmax over its in-edges of scale <q[i,h], k[j,h]>.
template <typename T>
cudaError_t edge_attention_forward(const GraphView& g, const T* q, const T* k, int64_t H, int64_t D, double scale,
                                   T* attn, Context ctx);

// Backward for grad_attn [E, H]: grad_q, grad_k [N, H, D].
template <typename T>
cudaError_t edge_attention_backward(const GraphView& g, const T* grad_attn, const T* attn, const T* q, const T* k,
                                    int64_t H, int64_t D, double scale, T* grad_q, T* grad_k, Context ctx);

}  // namespace cuda
}  // namespace graphode
