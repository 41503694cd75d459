// graphode::edge_attention: schema, argument checks and the CPU / CUDA wrappers.
//
// ============================================================================
// SCHEMA (contract with graphode/ops/edge_attention.py; graph arrays as in
// csrc/spmm.cpp, first)
// ----------------------------------------------------------------------------
// edge_attention(rowptr, col, csc_ptr, csc_row, csc_perm, q[N,H,D], k[N,H,D],
//                float scale, int normalize=0, bool over_source=False) -> attn[E,H]
//     attn[e,h] = softmax over the in-edges of i of scale <q[i,h], k[j,h]>
//     (the defaults); normalize 1 = squareplus with one global shift,
//     over_source: the groups are the out-edges of each source
//     (csrc/cpu/edge_attention_cpu.h, "attention options"; cpu kernels only)
// edge_attention_backward(rowptr, col, csc_ptr, csc_row, csc_perm,
//                         grad_attn[E,H], attn[E,H], q, k, float scale,
//                         int normalize=0, bool over_source=False)
//     -> (grad_q[N,H,D], grad_k[N,H,D])
// ============================================================================
#include <torch/library.h>

#include <tuple>

#include "cpu/edge_attention_cpu.h"
#include "device.h"
#ifdef GRAPHODE_WITH_CUDA
#include "cuda/edge_attention_cuda.h"
#endif

TORCH_LIBRARY_FRAGMENT(graphode, m) {
  m.def(
      "edge_attention(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor q, "
      "Tensor k, float scale, int normalize=0, bool over_source=False) -> Tensor");
  m.def(
      "edge_attention_backward(Tensor rowptr, Tensor col, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, "
      "Tensor grad_attn, Tensor attn, Tensor q, Tensor k, float scale, int normalize=0, bool over_source=False) "
      "-> (Tensor, Tensor)");
}

namespace graphode {
namespace {

using at::Tensor;
namespace ck = checks;

struct Sizes {
  int64_t N, E, H, D;
};

// The arguments shared by edge_attention and edge_attention_backward.
template <class Dev>
Sizes check_edge_attention(const char* op, const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                           const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q, const Tensor& k,
                           double scale) {
  ck::check_qk(op, q, k);
  Dev::check_device(op, q);
  const int64_t N = q.size(0), H = q.size(1), D = q.size(2);
  Dev::check_heads(op, H);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, q.device());
  ck::check_scale(op, scale);
  return {N, E, H, D};
}

// The attention options (the CPU kernels only; dispatch never sends others to cuda).
template <class Dev>
cpu::AttentionOptions check_options(const char* op, int64_t normalize, bool over_source) {
  TORCH_CHECK(normalize == cpu::kSoftmax || normalize == cpu::kSquareplus, op,
              ": normalize must be 0 (softmax) or 1 (squareplus), got ", normalize);
  cpu::AttentionOptions opt;
  opt.normalize = static_cast<int>(normalize);
  opt.over_source = over_source;
  TORCH_CHECK(Dev::kAttentionOptions || opt.is_default(), op,
              ": this backend implements normalize='softmax' over targets only; use backend='cpu' or 'reference'");
  return opt;
}

template <class Dev>
Tensor edge_attention_op(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                         const Tensor& csc_perm, const Tensor& q, const Tensor& k, double scale, int64_t normalize,
                         bool over_source) {
  const char* op = "graphode::edge_attention";
  const Sizes s = check_edge_attention<Dev>(op, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, scale);
  const cpu::AttentionOptions opt = check_options<Dev>(op, normalize, over_source);
  typename Dev::Guard guard(q.device());
  Tensor attn = at::empty({s.E, s.H}, q.options());
  dispatch_float(op, q, [&](auto t) {
    using T = decltype(t);
    const GraphView g = view(rowptr, col, csc_ptr, csc_row, csc_perm, s.N);
    if constexpr (Dev::kAttentionOptions) {
      Dev::check(op, edge_attention_forward(g, q.data_ptr<T>(), k.data_ptr<T>(), s.H, s.D, scale, opt,
                                            attn.data_ptr<T>(), Dev::context()));
    } else {
      Dev::check(op, edge_attention_forward(g, q.data_ptr<T>(), k.data_ptr<T>(), s.H, s.D, scale, attn.data_ptr<T>(),
                                            Dev::context()));
    }
  });
  return attn;
}

template <class Dev>
std::tuple<Tensor, Tensor> edge_attention_backward_op(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                                                      const Tensor& csc_row, const Tensor& csc_perm,
                                                      const Tensor& grad_attn, const Tensor& attn, const Tensor& q,
                                                      const Tensor& k, double scale, int64_t normalize,
                                                      bool over_source) {
  const char* op = "graphode::edge_attention_backward";
  const Sizes s = check_edge_attention<Dev>(op, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, scale);
  const cpu::AttentionOptions opt = check_options<Dev>(op, normalize, over_source);
  ck::check_matrix(op, "grad_attn", grad_attn, s.E, s.H, "[E, H]", q, "q");
  ck::check_matrix(op, "attn", attn, s.E, s.H, "[E, H]", q, "q");
  typename Dev::Guard guard(q.device());
  Tensor gq = at::empty({s.N, s.H, s.D}, q.options());
  Tensor gk = at::empty({s.N, s.H, s.D}, q.options());
  dispatch_float(op, q, [&](auto t) {
    using T = decltype(t);
    const GraphView g = view(rowptr, col, csc_ptr, csc_row, csc_perm, s.N);
    if constexpr (Dev::kAttentionOptions) {
      Dev::check(op, edge_attention_backward(g, grad_attn.data_ptr<T>(), attn.data_ptr<T>(), q.data_ptr<T>(),
                                             k.data_ptr<T>(), s.H, s.D, scale, opt, gq.data_ptr<T>(),
                                             gk.data_ptr<T>(), Dev::context()));
    } else {
      Dev::check(op, edge_attention_backward(g, grad_attn.data_ptr<T>(), attn.data_ptr<T>(), q.data_ptr<T>(),
                                             k.data_ptr<T>(), s.H, s.D, scale, gq.data_ptr<T>(), gk.data_ptr<T>(),
                                             Dev::context()));
    }
  });
  return {gq, gk};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphode, CPU, m) {
  m.impl("edge_attention", &edge_attention_op<Cpu>);
  m.impl("edge_attention_backward", &edge_attention_backward_op<Cpu>);
}

// A plain kernel: graphode/ops/edge_attention.py differentiates it (its one
// autograd.Function), so autograd falls through and a direct call's outputs
// never require grad.
TORCH_LIBRARY_IMPL(graphode, Autograd, m) {
  m.impl("edge_attention", torch::CppFunction::makeFallthrough());
  m.impl("edge_attention_backward", torch::CppFunction::makeFallthrough());
}

#ifdef GRAPHODE_WITH_CUDA
TORCH_LIBRARY_IMPL(graphode, CUDA, m) {
  m.impl("edge_attention", &edge_attention_op<Cuda>);
  m.impl("edge_attention_backward", &edge_attention_backward_op<Cuda>);
}
#endif

}  // namespace graphode
