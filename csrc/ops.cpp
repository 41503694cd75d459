// graphode._C: operator schemas (TORCH_LIBRARY) and the Python module.
//
// ============================================================================
// SCHEMAS (contract with csrc/cuda and graphode/ops/_native.py)
// ----------------------------------------------------------------------------
// Graph arrays are those of Graph.csr(), all int64, contiguous:
//   rowptr [N+1], col [E]          CSR over targets (in-edges j -> i of row i)
//   csc_ptr [N+1], csc_row [E],    the transpose: out-edges of source j,
//   csc_perm [E]                   target and CSR edge id per CSC position
// Float tensors share one dtype, are contiguous and on the graph's device.
//
// spmm(rowptr, col, csc_ptr, csc_row, csc_perm, weight[E], x[N,F]) -> y[N,F]
//     y[i] = sum_{e=j->i} weight[e] x[j]
// spmm_backward(grad_out[N,F], rowptr, col, csc_ptr, csc_row, csc_perm,
//               weight[E], x[N,F], bool need_weight, bool need_x)
//     -> (grad_weight[E] | empty, grad_x[N,F] | empty)
//     grad_weight[e] = <grad_out[i], x[j]>; grad_x = A^T grad_out
// edge_attention(rowptr, col, csc_ptr, csc_row, csc_perm, q[N,H,D], k[N,H,D],
//                float scale) -> attn[E,H]
//     attn[e,h] = softmax over the in-edges of i of scale <q[i,h], k[j,h]>
// edge_attention_backward(grad_attn[E,H], attn[E,H], rowptr, col, csc_ptr,
//                         csc_row, csc_perm, q, k, float scale)
//     -> (grad_q[N,H,D], grad_k[N,H,D])
// attention_diffusion(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x[N,F],
//                     float scale) -> (out[N,F], lse[N,H])
//     out[i] = (1/H) sum_h sum_{j->i} attn[e,h] x[j];
//     lse[i,h] = log sum_{j->i} exp(scale <q[i,h], k[j,h]>), dtype float32 for
//     float16/bfloat16 inputs, else the input dtype; -inf for a row without
//     in-edges (whose out row is 0).  lse is not differentiable.
// attention_diffusion_backward(grad_out[N,F], lse[N,H], rowptr, col, csc_ptr,
//                              csc_row, csc_perm, q, k, x, float scale,
//                              bool need_qk, bool need_x)
//     -> (grad_q | empty, grad_k | empty, grad_x | empty)
// "empty" is a 0-element tensor of the input dtype (an output not asked for).
// ============================================================================
#include <torch/library.h>

#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(graphode, m) {
  m.def(
      "spmm(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor weight, Tensor x) "
      "-> Tensor");
  m.def(
      "spmm_backward(Tensor grad_out, Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, "
      "Tensor weight, Tensor x, bool need_weight, bool need_x) -> (Tensor, Tensor)");
  m.def(
      "edge_attention(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor q, "
      "Tensor k, float scale) -> Tensor");
  m.def(
      "edge_attention_backward(Tensor grad_attn, Tensor attn, Tensor rowptr, Tensor col, Tensor csc_ptr, "
      "Tensor csc_row, Tensor csc_perm, Tensor q, Tensor k, float scale) -> (Tensor, Tensor)");
  m.def(
      "attention_diffusion(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor q, "
      "Tensor k, Tensor x, float scale) -> (Tensor, Tensor)");
  m.def(
      "attention_diffusion_backward(Tensor grad_out, Tensor lse, Tensor rowptr, Tensor col, Tensor csc_ptr, "
      "Tensor csc_row, Tensor csc_perm, Tensor q, Tensor k, Tensor x, float scale, bool need_qk, bool need_x) "
      "-> (Tensor, Tensor, Tensor)");
}

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _C
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "graphode compiled kernels; importing registers torch.ops.graphode.*";
#ifdef GRAPHODE_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
#ifdef _OPENMP
  m.attr("WITH_OPENMP") = true;
#else
  m.attr("WITH_OPENMP") = false;
#endif
  m.def(
      "omp_max_threads",
      []() {
#ifdef _OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
      },
      "Number of OpenMP threads the CPU kernels may use (they follow torch.get_num_threads()).");
}
