// The two devices of the compiled ops, as the torch wrappers of csrc/<op>.cpp
// see them.  Each op's wrapper is one template over a device policy:
//
//   template <class Dev> Tensor spmm_op(...) {
//     ... shared argument checks ...
//     typename Dev::Guard guard(x.device());
//     dispatch_float(op, x, [&](auto t) {
//       using T = decltype(t);
//       Dev::check(op, spmm_forward(view(...), w.data_ptr<T>(), ..., Dev::context()));
//     });
//   }
//
// The kernel call is unqualified: the context argument (cpu::Context or
// cuda::Context) selects csrc/cpu/<op>_cpu.h or csrc/cuda/<op>_cuda.h by
// argument-dependent lookup, since both declare the same kernel names with
// the same arguments.  Registration instantiates the template per device:
//   TORCH_LIBRARY_IMPL(graphode, CPU, m) { m.impl("spmm", &spmm_op<Cpu>); }
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "checks.h"
#include "cpu/common.h"
#include "graph_view.h"

#ifdef GRAPHODE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/context.h"
#endif

namespace graphode {

// The five graph arrays of Graph.csr() as raw pointers (already checked).
inline GraphView view(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csc_ptr,
                      const at::Tensor& csc_row, const at::Tensor& csc_perm, int64_t N) {
  GraphView g;
  g.rowptr = rowptr.data_ptr<int64_t>();
  g.col = col.data_ptr<int64_t>();
  g.csc_ptr = csc_ptr.data_ptr<int64_t>();
  g.csc_row = csc_row.data_ptr<int64_t>();
  g.csc_perm = csc_perm.data_ptr<int64_t>();
  g.num_nodes = N;
  g.num_edges = col.size(0);
  return g;
}

// Calls fn(T{}) for float32 / float64 (the dtypes of both compiled backends), raises otherwise.
template <class Fn>
void dispatch_float(const char* op, const at::Tensor& t, Fn&& fn) {
  switch (t.scalar_type()) {
    case at::kFloat: fn(float{}); break;
    case at::kDouble: fn(double{}); break;
    default:
      TORCH_CHECK(false, op, ": the cpu and cuda backends support float32 and float64, got ", t.scalar_type(),
                  " (convert the inputs, or use backend='triton' or 'reference' for float16/bfloat16)");
  }
}

inline at::Tensor empty0(const at::Tensor& like) { return at::empty({0}, like.options()); }

struct Cpu {
  // The CPU kernels implement the attention options (csrc/cpu/edge_attention_cpu.h).
  static constexpr bool kAttentionOptions = true;
  struct Guard {
    explicit Guard(const at::Device&) {}
  };
  static cpu::Context context() { return {at::get_num_threads()}; }
  static void check(const char* op, int status) {
    TORCH_CHECK(status == kOk, op, ": invalid graph: ", status_message(status));
  }
  static void check_device(const char* op, const at::Tensor& t) {
    TORCH_CHECK(t.is_cpu(), op, ": the cpu backend needs CPU tensors, got a tensor on ", t.device());
  }
  static void check_heads(const char*, int64_t) {}
};

#ifdef GRAPHODE_WITH_CUDA
struct Cuda {
  static constexpr bool kAttentionOptions = false;
  using Guard = c10::cuda::CUDAGuard;
  // (c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream
  // re-exports; the c10 header avoids pulling in cuBLAS/cuSPARSE headers.)
  static cuda::Context context() { return {c10::cuda::getCurrentCUDAStream().stream()}; }
  static void check(const char* op, cudaError_t err) {
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cuda::error_string(err),
                err == cudaErrorInvalidValue
                    ? " (sizes outside what the CUDA kernels support: at most 8 heads and a shared-memory slice of "
                      "O(H*D + F) values per warp; use backend='triton')"
                    : "");
  }
  static void check_device(const char* op, const at::Tensor& t) {
    TORCH_CHECK(t.is_cuda(), op, ": the cuda backend needs CUDA tensors, got a tensor on ", t.device());
  }
  static void check_heads(const char* op, int64_t H) {
    TORCH_CHECK(H >= 1 && H <= cuda::kMaxHeads, op, ": the cuda backend supports 1 to ", cuda::kMaxHeads,
                " heads, got H = ", H, "; use backend='triton'");
  }
};
#endif

}  // namespace graphode
