// graphode CUDA kernels: raw-pointer launchers (no torch headers).
//
// Conventions (see graphode/graph.py and the SCHEMAS block of csrc/ops.cpp):
//   * the graph is CSR over targets: rowptr [N+1], col [E] (in-edges j -> i of
//     row i, sorted by (target, source)), and its transpose CSC: csc_ptr [N+1],
//     csc_row [E] (target of each out-edge of a source), csc_perm [E] (the CSR
//     edge id of each CSC position).  All int64, device pointers.
//   * q, k [N, H, D]; x [N, F]; weight [E]; attention [E, H]; all contiguous,
//     row-major, on the device, of one dtype T (float or double).
//   * accumulation is in T (float32 for float, float64 for double): the CUDA
//     backend supports float32 and float64 only (half types: use triton).
//   * lse [N, H] is of type T (float32 for float32, float64 for float64), -inf
//     for a row without in-edges.
//
// Every launcher enqueues its kernels on `stream` and returns cudaSuccess, the
// launch error (cudaGetLastError), or cudaErrorInvalidValue when a size is
// outside what the kernels support (H > kMaxHeads, shared memory too large);
// error_string() turns the code into a message.  Launchers never allocate: the
// workspaces they need are passed in (sizes documented per launcher), and they
// never synchronise.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace graphode {
namespace cuda {

// Heads per attention op supported by the CUDA kernels (registers hold one
// score per head and lane).
constexpr int kMaxHeads = 8;

inline const char* error_string(cudaError_t e) { return cudaGetErrorString(e); }

// ------------------------------------------------------------------ spmm
// y[i] = sum_{e = j -> i} w[e] x[j]                    y: [N, F]
template <typename T>
cudaError_t spmm_forward(const int64_t* rowptr, const int64_t* col, const T* w, const T* x, T* y, int64_t N,
                         int64_t F, cudaStream_t stream);

// grad_x[j] = sum_{e = j -> i} w[e] grad_out[i]       (CSC walk, no atomics)
template <typename T>
cudaError_t spmm_backward_x(const int64_t* csc_ptr, const int64_t* csc_row, const int64_t* csc_perm, const T* w,
                            const T* grad_out, T* grad_x, int64_t N, int64_t F, cudaStream_t stream);

// grad_w[e] = <grad_out[i], x[col[e]]>                 (SDDMM over CSR rows)
template <typename T>
cudaError_t spmm_backward_w(const int64_t* rowptr, const int64_t* col, const T* grad_out, const T* x, T* grad_w,
                            int64_t N, int64_t F, cudaStream_t stream);

// ------------------------------------------------------------------ edge attention
// attn[e, h] = softmax over the in-edges of i of scale <q[i,h], k[j,h]>     attn: [E, H]
template <typename T>
cudaError_t edge_attention_forward(const int64_t* rowptr, const int64_t* col, const T* q, const T* k, T* attn,
                                   int64_t N, int64_t H, int64_t D, double scale, cudaStream_t stream);

// grad_q, grad_k [N, H, D].  Workspace: dot [N * H] of T.
template <typename T>
cudaError_t edge_attention_backward(const T* grad_attn, const T* attn, const int64_t* rowptr, const int64_t* col,
                                    const int64_t* csc_ptr, const int64_t* csc_row, const int64_t* csc_perm,
                                    const T* q, const T* k, T* grad_q, T* grad_k, T* dot_workspace, int64_t N,
                                    int64_t H, int64_t D, double scale, cudaStream_t stream);

// ------------------------------------------------------------------ attention diffusion
// out[i] = (1/H) sum_h sum_{j -> i} attn[e,h] x[j]      out: [N, F], lse: [N, H]
template <typename T>
cudaError_t attention_diffusion_forward(const int64_t* rowptr, const int64_t* col, const T* q, const T* k,
                                        const T* x, T* out, T* lse, int64_t N, int64_t H, int64_t D, int64_t F,
                                        double scale, cudaStream_t stream);

// grad_q, grad_k [N, H, D] (written when need_qk), grad_x [N, F] (when need_x);
// pointers of outputs not asked for may be null.  Workspace: dterm [N * H]
// (needed when need_qk; may be null otherwise).
template <typename T>
cudaError_t attention_diffusion_backward(const T* grad_out, const T* lse, const int64_t* rowptr, const int64_t* col,
                                         const int64_t* csc_ptr, const int64_t* csc_row, const T* q, const T* k,
                                         const T* x, T* grad_q, T* grad_k, T* grad_x, T* dterm_workspace,
                                         int64_t N, int64_t H, int64_t D, int64_t F, double scale, bool need_qk,
                                         bool need_x, cudaStream_t stream);

}  // namespace cuda
}  // namespace graphode
