// graphode::spmm: schema, argument checks and the CPU / CUDA wrappers.
//
// ============================================================================
// SCHEMA (contract with graphode/ops/spmm.py; graph arrays first, as in every op)
// ----------------------------------------------------------------------------
// Graph arrays are those of Graph.csr(), all int64, contiguous:
//   rowptr [N+1], col [E]          CSR over targets (in-edges j -> i of row i)
//   csc_ptr [N+1], csc_row [E],    the transpose: out-edges of source j,
//   csc_perm [E]                   target and CSR edge id per CSC position
// Float tensors share one dtype (float32 or float64), are contiguous and on
// the graph's device.
//
// spmm(rowptr, col, csc_ptr, csc_row, csc_perm, weight[E], x[N,F]) -> y[N,F]
//     y[i] = sum_{e=j->i} weight[e] x[j]
// spmm_backward(rowptr, col, csc_ptr, csc_row, csc_perm, grad_out[N,F],
//               weight[E], x[N,F], bool need_weight, bool need_x)
//     -> (grad_weight[E] | empty, grad_x[N,F] | empty)
//     grad_weight[e] = <grad_out[i], x[j]>; grad_x = A^T grad_out
// "empty" is a 0-element tensor of the input dtype (an output not asked for).
// ============================================================================
#include <torch/library.h>

#include <tuple>

#include "cpu/spmm_cpu.h"
#include "device.h"
#ifdef GRAPHODE_WITH_CUDA
#include "cuda/spmm_cuda.h"
#endif

TORCH_LIBRARY_FRAGMENT(graphode, m) {
  m.def(
      "spmm(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor weight, Tensor x) "
      "-> Tensor");
  m.def(
      "spmm_backward(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor grad_out, "
      "Tensor weight, Tensor x, bool need_weight, bool need_x) -> (Tensor, Tensor)");
}

namespace graphode {
namespace {

using at::Tensor;
namespace ck = checks;

struct Sizes {
  int64_t N, E, F;
};

// The arguments shared by spmm and spmm_backward.
template <class Dev>
Sizes check_spmm(const char* op, const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                 const Tensor& csc_perm, const Tensor& weight, const Tensor& x) {
  ck::check_float(op, "x", x, 2, "[N, F]", x.device());
  Dev::check_device(op, x);
  const auto dev = x.device();
  const int64_t N = x.size(0), F = x.size(1);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  ck::check_float(op, "weight", weight, 1, "[E]", dev);
  ck::check_size(op, "weight", weight, 0, E, "one value per edge, E = col.size(0)");
  ck::check_same_dtype(op, "weight", weight, "x", x);
  return {N, E, F};
}

template <class Dev>
Tensor spmm_op(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
               const Tensor& csc_perm, const Tensor& weight, const Tensor& x) {
  const char* op = "graphode::spmm";
  const Sizes s = check_spmm<Dev>(op, rowptr, col, csc_ptr, csc_row, csc_perm, weight, x);
  typename Dev::Guard guard(x.device());
  Tensor y = at::empty({s.N, s.F}, x.options());
  dispatch_float(op, x, [&](auto t) {
    using T = decltype(t);
    Dev::check(op, spmm_forward(view(rowptr, col, csc_ptr, csc_row, csc_perm, s.N), weight.data_ptr<T>(),
                                x.data_ptr<T>(), s.F, y.data_ptr<T>(), Dev::context()));
  });
  return y;
}

template <class Dev>
std::tuple<Tensor, Tensor> spmm_backward_op(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                                            const Tensor& csc_row, const Tensor& csc_perm, const Tensor& grad_out,
                                            const Tensor& weight, const Tensor& x, bool need_weight, bool need_x) {
  const char* op = "graphode::spmm_backward";
  const Sizes s = check_spmm<Dev>(op, rowptr, col, csc_ptr, csc_row, csc_perm, weight, x);
  ck::check_float(op, "grad_out", grad_out, 2, "[N, F]", x.device());
  ck::check_size(op, "grad_out", grad_out, 0, s.N, "N");
  ck::check_size(op, "grad_out", grad_out, 1, s.F, "F = x.size(1)");
  ck::check_same_dtype(op, "grad_out", grad_out, "x", x);
  typename Dev::Guard guard(x.device());
  Tensor gw = need_weight ? at::empty({s.E}, x.options()) : empty0(x);
  Tensor gx = need_x ? at::empty({s.N, s.F}, x.options()) : empty0(x);
  if (!need_weight && !need_x) return {gw, gx};
  dispatch_float(op, x, [&](auto t) {
    using T = decltype(t);
    Dev::check(op, spmm_backward(view(rowptr, col, csc_ptr, csc_row, csc_perm, s.N), grad_out.data_ptr<T>(),
                                 weight.data_ptr<T>(), x.data_ptr<T>(), s.F,
                                 need_weight ? gw.data_ptr<T>() : nullptr, need_x ? gx.data_ptr<T>() : nullptr,
                                 Dev::context()));
  });
  return {gw, gx};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphode, CPU, m) {
  m.impl("spmm", &spmm_op<Cpu>);
  m.impl("spmm_backward", &spmm_backward_op<Cpu>);
}

// A plain kernel: graphode/ops/spmm.py differentiates it (its one
// autograd.Function), so autograd falls through and a direct call's outputs
// never require grad.
TORCH_LIBRARY_IMPL(graphode, Autograd, m) {
  m.impl("spmm", torch::CppFunction::makeFallthrough());
  m.impl("spmm_backward", torch::CppFunction::makeFallthrough());
}

#ifdef GRAPHODE_WITH_CUDA
TORCH_LIBRARY_IMPL(graphode, CUDA, m) {
  m.impl("spmm", &spmm_op<Cuda>);
  m.impl("spmm_backward", &spmm_backward_op<Cuda>);
}
#endif

}  // namespace graphode
