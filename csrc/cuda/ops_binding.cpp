// CUDA implementations of the graphode ops: TORCH_LIBRARY_IMPL(graphode, CUDA).
//
// The op schemas are defined in csrc/ops.cpp (TORCH_LIBRARY(graphode), see its
// "SCHEMAS (contract with csrc/cuda)" block); autograd and fake kernels are
// registered in Python (graphode/ops/_native.py).  This file only checks the
// tensors, allocates outputs and workspaces, and calls the raw-pointer
// launchers of graphode_cuda.h on the current CUDA stream.  It is compiled only
// when torch has CUDA (setup.py picks up csrc/cuda/*_binding.cpp then).
//
// Supported: float32 and float64 (float16/bfloat16: use backend="triton"),
// at most graphode::cuda::kMaxHeads heads.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "graphode_cuda.h"

namespace graphode {
namespace {

using at::Tensor;
namespace ck = checks;

// at::cuda::getCurrentCUDAStream() is this very function (ATen/cuda/CUDAContext.h
// re-exports c10::cuda); the c10 header avoids pulling in cuBLAS/cuSPARSE headers.
c10::cuda::CUDAStream current_stream() { return c10::cuda::getCurrentCUDAStream(); }

Tensor empty0(const Tensor& like) { return at::empty({0}, like.options()); }

void check_cuda_tensor(const char* op, const Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": the cuda backend needs CUDA tensors, got a tensor on ", t.device());
}

void check_status(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cuda::error_string(err),
              err == cudaErrorInvalidValue
                  ? " (sizes outside what the CUDA kernels support: at most 8 heads and a shared-memory slice of "
                    "O(H*D + F) values per warp; use backend='triton')"
                  : "");
}

void check_heads(const char* op, int64_t H) {
  TORCH_CHECK(H >= 1 && H <= cuda::kMaxHeads, op, ": the cuda backend supports 1 to ", cuda::kMaxHeads,
              " heads, got H = ", H, "; use backend='triton'");
}

// Calls fn(T{}) for float32 / float64, raises otherwise.
template <typename Fn>
void dispatch_float(const char* op, const Tensor& t, Fn&& fn) {
  switch (t.scalar_type()) {
    case at::kFloat: fn(float{}); break;
    case at::kDouble: fn(double{}); break;
    default:
      TORCH_CHECK(false, op, ": the cuda backend supports float32 and float64, got ", t.scalar_type(),
                  " (use backend='triton' for float16/bfloat16)");
  }
}

const int64_t* ip(const Tensor& t) { return t.data_ptr<int64_t>(); }

// q, k [N, H, D] of one dtype on one CUDA device; returns (H, D).
std::pair<int64_t, int64_t> check_qk(const char* op, const Tensor& q, const Tensor& k) {
  check_cuda_tensor(op, q);
  ck::check_float(op, "q", q, 3, "[N, H, D]", q.device());
  ck::check_float(op, "k", k, 3, "[N, H, D]", q.device());
  ck::check_same_dtype(op, "k", k, "q", q);
  TORCH_CHECK(q.sizes() == k.sizes(), op, ": q and k must have the same shape [N, H, D], got ", q.sizes(), " and ",
              k.sizes());
  check_heads(op, q.size(1));
  return {q.size(1), q.size(2)};
}

// ------------------------------------------------------------------ spmm
Tensor spmm_cuda(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                 const Tensor& csc_perm, const Tensor& weight, const Tensor& x) {
  const char* op = "graphode::spmm";
  check_cuda_tensor(op, x);
  ck::check_float(op, "x", x, 2, "[N, F]", x.device());
  const auto dev = x.device();
  const int64_t N = x.size(0), F = x.size(1);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  ck::check_float(op, "weight", weight, 1, "[E]", dev);
  ck::check_size(op, "weight", weight, 0, E, "one value per edge, E = col.size(0)");
  ck::check_same_dtype(op, "weight", weight, "x", x);
  c10::cuda::CUDAGuard guard(dev);
  Tensor y = at::empty({N, F}, x.options());
  cudaStream_t stream = current_stream().stream();
  dispatch_float(op, x, [&](auto tag) {
    using T = decltype(tag);
    check_status(op, cuda::spmm_forward<T>(ip(rowptr), ip(col), weight.data_ptr<T>(), x.data_ptr<T>(),
                                           y.data_ptr<T>(), N, F, stream));
  });
  return y;
}

std::tuple<Tensor, Tensor> spmm_backward_cuda(const Tensor& grad_out, const Tensor& rowptr, const Tensor& col,
                                              const Tensor& csc_ptr, const Tensor& csc_row, const Tensor& csc_perm,
                                              const Tensor& weight, const Tensor& x, bool need_weight, bool need_x) {
  const char* op = "graphode::spmm_backward";
  check_cuda_tensor(op, x);
  ck::check_float(op, "x", x, 2, "[N, F]", x.device());
  const auto dev = x.device();
  const int64_t N = x.size(0), F = x.size(1);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  ck::check_float(op, "weight", weight, 1, "[E]", dev);
  ck::check_size(op, "weight", weight, 0, E, "one value per edge");
  ck::check_float(op, "grad_out", grad_out, 2, "[N, F]", dev);
  ck::check_size(op, "grad_out", grad_out, 0, N, "N");
  ck::check_size(op, "grad_out", grad_out, 1, F, "F");
  ck::check_same_dtype(op, "weight", weight, "x", x);
  ck::check_same_dtype(op, "grad_out", grad_out, "x", x);
  c10::cuda::CUDAGuard guard(dev);
  Tensor gw = need_weight ? at::empty({E}, weight.options()) : empty0(weight);
  Tensor gx = need_x ? at::empty({N, F}, x.options()) : empty0(x);
  cudaStream_t stream = current_stream().stream();
  dispatch_float(op, x, [&](auto tag) {
    using T = decltype(tag);
    if (need_weight)
      check_status(op, cuda::spmm_backward_w<T>(ip(rowptr), ip(col), grad_out.data_ptr<T>(), x.data_ptr<T>(),
                                                gw.data_ptr<T>(), N, F, stream));
    if (need_x)
      check_status(op, cuda::spmm_backward_x<T>(ip(csc_ptr), ip(csc_row), ip(csc_perm), weight.data_ptr<T>(),
                                                grad_out.data_ptr<T>(), gx.data_ptr<T>(), N, F, stream));
  });
  return {gw, gx};
}

// ------------------------------------------------------------------ edge attention
Tensor edge_attention_cuda(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                           const Tensor& csc_perm, const Tensor& q, const Tensor& k, double scale) {
  const char* op = "graphode::edge_attention";
  auto [H, D] = check_qk(op, q, k);
  ck::check_scale(op, scale);
  const auto dev = q.device();
  const int64_t N = q.size(0);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  c10::cuda::CUDAGuard guard(dev);
  Tensor attn = at::empty({E, H}, q.options());
  cudaStream_t stream = current_stream().stream();
  dispatch_float(op, q, [&](auto tag) {
    using T = decltype(tag);
    check_status(op, cuda::edge_attention_forward<T>(ip(rowptr), ip(col), q.data_ptr<T>(), k.data_ptr<T>(),
                                                     attn.data_ptr<T>(), N, H, D, scale, stream));
  });
  return attn;
}

std::tuple<Tensor, Tensor> edge_attention_backward_cuda(const Tensor& grad_attn, const Tensor& attn,
                                                        const Tensor& rowptr, const Tensor& col,
                                                        const Tensor& csc_ptr, const Tensor& csc_row,
                                                        const Tensor& csc_perm, const Tensor& q, const Tensor& k,
                                                        double scale) {
  const char* op = "graphode::edge_attention_backward";
  auto [H, D] = check_qk(op, q, k);
  ck::check_scale(op, scale);
  const auto dev = q.device();
  const int64_t N = q.size(0);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"attn", &attn}, {"grad_attn", &grad_attn}}) {
    ck::check_float(op, name, *t, 2, "[E, H]", dev);
    ck::check_size(op, name, *t, 0, E, "E");
    ck::check_size(op, name, *t, 1, H, "H");
    ck::check_same_dtype(op, name, *t, "q", q);
  }
  c10::cuda::CUDAGuard guard(dev);
  Tensor gq = at::empty_like(q);
  Tensor gk = at::empty_like(k);
  Tensor dot = at::empty({N, H}, q.options());  // workspace: per-row sum_e a * grad_a
  cudaStream_t stream = current_stream().stream();
  dispatch_float(op, q, [&](auto tag) {
    using T = decltype(tag);
    check_status(op, cuda::edge_attention_backward<T>(
                         grad_attn.data_ptr<T>(), attn.data_ptr<T>(), ip(rowptr), ip(col), ip(csc_ptr),
                         ip(csc_row), ip(csc_perm), q.data_ptr<T>(), k.data_ptr<T>(), gq.data_ptr<T>(),
                         gk.data_ptr<T>(), dot.data_ptr<T>(), N, H, D, scale, stream));
  });
  return {gq, gk};
}

// ------------------------------------------------------------------ attention diffusion
std::tuple<Tensor, Tensor> attention_diffusion_cuda(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                                                    const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q,
                                                    const Tensor& k, const Tensor& x, double scale) {
  const char* op = "graphode::attention_diffusion";
  auto [H, D] = check_qk(op, q, k);
  ck::check_scale(op, scale);
  const auto dev = q.device();
  const int64_t N = q.size(0);
  ck::check_float(op, "x", x, 2, "[N, F]", dev);
  ck::check_size(op, "x", x, 0, N, "N, the number of nodes of q");
  ck::check_same_dtype(op, "x", x, "q", q);
  const int64_t F = x.size(1);
  ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  c10::cuda::CUDAGuard guard(dev);
  Tensor out = at::empty({N, F}, x.options());
  Tensor lse = at::empty({N, H}, q.options());  // float32/float64 inputs: lse has the input dtype
  cudaStream_t stream = current_stream().stream();
  dispatch_float(op, q, [&](auto tag) {
    using T = decltype(tag);
    check_status(op, cuda::attention_diffusion_forward<T>(ip(rowptr), ip(col), q.data_ptr<T>(), k.data_ptr<T>(),
                                                          x.data_ptr<T>(), out.data_ptr<T>(), lse.data_ptr<T>(), N,
                                                          H, D, F, scale, stream));
  });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> attention_diffusion_backward_cuda(
    const Tensor& grad_out, const Tensor& lse, const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
    const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q, const Tensor& k, const Tensor& x, double scale,
    bool need_qk, bool need_x) {
  const char* op = "graphode::attention_diffusion_backward";
  auto [H, D] = check_qk(op, q, k);
  ck::check_scale(op, scale);
  const auto dev = q.device();
  const int64_t N = q.size(0);
  ck::check_float(op, "x", x, 2, "[N, F]", dev);
  ck::check_size(op, "x", x, 0, N, "N");
  ck::check_same_dtype(op, "x", x, "q", q);
  const int64_t F = x.size(1);
  ck::check_float(op, "grad_out", grad_out, 2, "[N, F]", dev);
  ck::check_size(op, "grad_out", grad_out, 0, N, "N");
  ck::check_size(op, "grad_out", grad_out, 1, F, "F");
  ck::check_same_dtype(op, "grad_out", grad_out, "x", x);
  ck::check_float(op, "lse", lse, 2, "[N, H]", dev);
  ck::check_size(op, "lse", lse, 0, N, "N");
  ck::check_size(op, "lse", lse, 1, H, "H");
  ck::check_same_dtype(op, "lse", lse, "q", q);
  ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  c10::cuda::CUDAGuard guard(dev);
  Tensor gq = need_qk ? at::empty_like(q) : empty0(q);
  Tensor gk = need_qk ? at::empty_like(k) : empty0(k);
  Tensor gx = need_x ? at::empty_like(x) : empty0(x);
  Tensor dterm = need_qk ? at::empty({N, H}, q.options()) : empty0(q);  // workspace D_ih
  cudaStream_t stream = current_stream().stream();
  dispatch_float(op, q, [&](auto tag) {
    using T = decltype(tag);
    check_status(op, cuda::attention_diffusion_backward<T>(
                         grad_out.data_ptr<T>(), lse.data_ptr<T>(), ip(rowptr), ip(col), ip(csc_ptr), ip(csc_row),
                         q.data_ptr<T>(), k.data_ptr<T>(), x.data_ptr<T>(), need_qk ? gq.data_ptr<T>() : nullptr,
                         need_qk ? gk.data_ptr<T>() : nullptr, need_x ? gx.data_ptr<T>() : nullptr,
                         need_qk ? dterm.data_ptr<T>() : nullptr, N, H, D, F, scale, need_qk, need_x, stream));
  });
  return {gq, gk, gx};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphode, CUDA, m) {
  m.impl("spmm", &spmm_cuda);
  m.impl("spmm_backward", &spmm_backward_cuda);
  m.impl("edge_attention", &edge_attention_cuda);
  m.impl("edge_attention_backward", &edge_attention_backward_cuda);
  m.impl("attention_diffusion", &attention_diffusion_cuda);
  m.impl("attention_diffusion_backward", &attention_diffusion_backward_cuda);
}

}  // namespace graphode
