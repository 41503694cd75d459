// graphode CUDA launchers of spmm (no torch headers): the CPU kernels of
// csrc/cpu/spmm_cpu.h, same names and arguments, on device pointers.
#pragma once

#include "cuda/context.h"

namespace graphode {
namespace cuda {

// y [N, F] = A x with A[i, j] = w[e] for e = j -> i.  Rows without in-edges get 0.
template <typename T>
cudaError_t spmm_forward(const GraphView& g, const T* w, const T* x, int64_t F, T* y, Context ctx);

// Backward for the upstream gradient grad [N, F]:
//   grad_w[e] = <grad[i], x[j]> (SDDMM over CSR rows; grad_w may be null: not needed),
//   grad_x = A^T grad (CSC walk, no atomics; grad_x may be null).
template <typename T>
cudaError_t spmm_backward(const GraphView& g, const T* grad, const T* w, const T* x, int64_t F, T* grad_w,
                          T* grad_x, Context ctx);

}  // namespace cuda
}  // namespace graphode
