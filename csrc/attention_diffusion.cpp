// graphode::attention_diffusion: schema, argument checks and the CPU / CUDA wrappers.
//
// ============================================================================
// SCHEMA (contract with graphode/ops/attention_diffusion.py; graph arrays as in
// csrc/spmm.cpp, first)
// ----------------------------------------------------------------------------
// attention_diffusion(rowptr, col, csc_ptr, csc_row, csc_perm, q[N,H,D],
//                     k[N,H,D], x[N,F], float scale) -> (out[N,F], lse[N,H])
//     out[i] = (1/H) sum_h sum_{j->i} attn[e,h] x[j]  (attn: edge_attention's);
//     lse[i,h] = log sum_{j->i} exp(scale <q[i,h], k[j,h]>), of the input
//     dtype, -inf for a row without in-edges (whose out row is 0).  lse is not
//     differentiable.
// attention_diffusion_backward(rowptr, col, csc_ptr, csc_row, csc_perm,
//                              grad_out[N,F], lse[N,H], q, k, x, float scale,
//                              bool need_qk, bool need_x)
//     -> (grad_q | empty, grad_k | empty, grad_x | empty)
// "empty" is a 0-element tensor of the input dtype (an output not asked for).
// ============================================================================
#include <torch/library.h>

#include <tuple>

#include "cpu/attention_diffusion_cpu.h"
#include "device.h"
#ifdef GRAPHODE_WITH_CUDA
#include "cuda/attention_diffusion_cuda.h"
#endif

TORCH_LIBRARY_FRAGMENT(graphode, m) {
  m.def(
      "attention_diffusion(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor q, "
      "Tensor k, Tensor x, float scale) -> (Tensor, Tensor)");
  m.def(
      "attention_diffusion_backward(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, "
      "Tensor grad_out, Tensor lse, Tensor q, Tensor k, Tensor x, float scale, bool need_qk, bool need_x) "
      "-> (Tensor, Tensor, Tensor)");
}

namespace graphode {
namespace {

using at::Tensor;
namespace ck = checks;

struct Sizes {
  int64_t N, E, H, D, F;
};

// The arguments shared by attention_diffusion and attention_diffusion_backward.
template <class Dev>
Sizes check_attention_diffusion(const char* op, const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                                const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q, const Tensor& k,
                                const Tensor& x, double scale) {
  ck::check_qk(op, q, k);
  Dev::check_device(op, q);
  const int64_t N = q.size(0), H = q.size(1), D = q.size(2);
  Dev::check_heads(op, H);
  ck::check_float(op, "x", x, 2, "[N, F]", q.device());
  ck::check_size(op, "x", x, 0, N, "N = q.size(0)");
  ck::check_same_dtype(op, "x", x, "q", q);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, q.device());
  ck::check_scale(op, scale);
  return {N, E, H, D, x.size(1)};
}

template <class Dev>
std::tuple<Tensor, Tensor> attention_diffusion_op(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                                                  const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q,
                                                  const Tensor& k, const Tensor& x, double scale) {
  const char* op = "graphode::attention_diffusion";
  const Sizes s = check_attention_diffusion<Dev>(op, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale);
  typename Dev::Guard guard(q.device());
  Tensor out = at::empty({s.N, s.F}, x.options());
  Tensor lse = at::empty({s.N, s.H}, q.options());
  dispatch_float(op, q, [&](auto t) {
    using T = decltype(t);
    Dev::check(op, attention_diffusion_forward(view(rowptr, col, csc_ptr, csc_row, csc_perm, s.N), q.data_ptr<T>(),
                                               k.data_ptr<T>(), x.data_ptr<T>(), s.H, s.D, s.F, scale,
                                               out.data_ptr<T>(), lse.data_ptr<T>(), Dev::context()));
  });
  return {out, lse};
}

template <class Dev>
std::tuple<Tensor, Tensor, Tensor> attention_diffusion_backward_op(
    const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row, const Tensor& csc_perm,
    const Tensor& grad_out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& x, double scale,
    bool need_qk, bool need_x) {
  const char* op = "graphode::attention_diffusion_backward";
  const Sizes s = check_attention_diffusion<Dev>(op, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale);
  ck::check_matrix(op, "grad_out", grad_out, s.N, s.F, "[N, F]", x, "x");
  ck::check_matrix(op, "lse", lse, s.N, s.H, "[N, H]", q, "q");
  typename Dev::Guard guard(q.device());
  Tensor gq = need_qk ? at::empty({s.N, s.H, s.D}, q.options()) : empty0(q);
  Tensor gk = need_qk ? at::empty({s.N, s.H, s.D}, q.options()) : empty0(q);
  Tensor gx = need_x ? at::empty({s.N, s.F}, x.options()) : empty0(x);
  if (!need_qk && !need_x) return {gq, gk, gx};
  dispatch_float(op, q, [&](auto t) {
    using T = decltype(t);
    Dev::check(op, attention_diffusion_backward(
                       view(rowptr, col, csc_ptr, csc_row, csc_perm, s.N), grad_out.data_ptr<T>(),
                       lse.data_ptr<T>(), q.data_ptr<T>(), k.data_ptr<T>(), x.data_ptr<T>(), s.H, s.D, s.F, scale,
                       need_qk ? gq.data_ptr<T>() : nullptr, need_qk ? gk.data_ptr<T>() : nullptr,
                       need_x ? gx.data_ptr<T>() : nullptr, Dev::context()));
  });
  return {gq, gk, gx};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphode, CPU, m) {
  m.impl("attention_diffusion", &attention_diffusion_op<Cpu>);
  m.impl("attention_diffusion_backward", &attention_diffusion_backward_op<Cpu>);
}

// A plain kernel: graphode/ops/attention_diffusion.py differentiates it (its one
// autograd.Function), so autograd falls through and a direct call's outputs
// never require grad.
TORCH_LIBRARY_IMPL(graphode, Autograd, m) {
  m.impl("attention_diffusion", torch::CppFunction::makeFallthrough());
  m.impl("attention_diffusion_backward", torch::CppFunction::makeFallthrough());
}

#ifdef GRAPHODE_WITH_CUDA
TORCH_LIBRARY_IMPL(graphode, CUDA, m) {
  m.impl("attention_diffusion", &attention_diffusion_op<Cuda>);
  m.impl("attention_diffusion_backward", &attention_diffusion_backward_op<Cuda>);
}
#endif

}  // namespace graphode
