// CPU implementations of the graphode ops (TORCH_LIBRARY_IMPL(graphode, CPU)).
//
// This file only checks tensors and calls the header-only kernels of
// csrc/cpu/*.h on raw pointers.  The kernels use torch.get_num_threads()
// OpenMP threads.  float32 and float64 are supported; other dtypes raise.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "cpu/kernels.h"

namespace graphode {
namespace {

using at::Tensor;
namespace ck = checks;

cpu::GraphView view(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                    const Tensor& csc_perm, int64_t N) {
  cpu::GraphView g;
  g.rowptr = rowptr.data_ptr<int64_t>();
  g.col = col.data_ptr<int64_t>();
  g.csc_ptr = csc_ptr.data_ptr<int64_t>();
  g.csc_row = csc_row.data_ptr<int64_t>();
  g.csc_perm = csc_perm.data_ptr<int64_t>();
  g.num_nodes = N;
  g.num_edges = col.size(0);
  return g;
}

void check_status(const char* op, int status) {
  TORCH_CHECK(status == cpu::kOk, op, ": invalid graph: ", cpu::status_message(status));
}

void check_cpu_dtype(const char* op, const Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
              ": the cpu backend supports float32 and float64, got ", t.scalar_type(),
              " (convert the inputs, or use backend='reference')");
}

int threads() { return at::get_num_threads(); }

Tensor empty0(const Tensor& like) { return at::empty({0}, like.options()); }

// ------------------------------------------------------------------ spmm
Tensor spmm_cpu(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                const Tensor& csc_perm, const Tensor& weight, const Tensor& x) {
  const char* op = "graphode::spmm";
  ck::check_float(op, "x", x, 2, "[N, F]", x.device());
  const auto dev = x.device();
  const int64_t N = x.size(0), F = x.size(1);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  ck::check_float(op, "weight", weight, 1, "[E]", dev);
  ck::check_size(op, "weight", weight, 0, E, "one value per edge, E = col.size(0)");
  ck::check_same_dtype(op, "weight", weight, "x", x);
  check_cpu_dtype(op, x);
  Tensor y = at::empty({N, F}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graphode_spmm_cpu", [&] {
    check_status(op, cpu::spmm_forward<scalar_t>(view(rowptr, col, csc_ptr, csc_row, csc_perm, N),
                                                 weight.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), F,
                                                 y.data_ptr<scalar_t>(), threads()));
  });
  return y;
}

std::tuple<Tensor, Tensor> spmm_backward_cpu(const Tensor& grad_out, const Tensor& rowptr, const Tensor& col,
                                             const Tensor& csc_ptr, const Tensor& csc_row, const Tensor& csc_perm,
                                             const Tensor& weight, const Tensor& x, bool need_weight, bool need_x) {
  const char* op = "graphode::spmm_backward";
  ck::check_float(op, "x", x, 2, "[N, F]", x.device());
  const auto dev = x.device();
  const int64_t N = x.size(0), F = x.size(1);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, dev);
  ck::check_float(op, "weight", weight, 1, "[E]", dev);
  ck::check_size(op, "weight", weight, 0, E, "one value per edge, E = col.size(0)");
  ck::check_float(op, "grad_out", grad_out, 2, "[N, F]", dev);
  ck::check_size(op, "grad_out", grad_out, 0, N, "N");
  ck::check_size(op, "grad_out", grad_out, 1, F, "F = x.size(1)");
  ck::check_same_dtype(op, "weight", weight, "x", x);
  ck::check_same_dtype(op, "grad_out", grad_out, "x", x);
  check_cpu_dtype(op, x);
  Tensor gw = need_weight ? at::empty({E}, x.options()) : empty0(x);
  Tensor gx = need_x ? at::empty({N, F}, x.options()) : empty0(x);
  if (!need_weight && !need_x) return {gw, gx};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graphode_spmm_backward_cpu", [&] {
    check_status(op, cpu::spmm_backward<scalar_t>(
                         view(rowptr, col, csc_ptr, csc_row, csc_perm, N), grad_out.data_ptr<scalar_t>(),
                         weight.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), F,
                         need_weight ? gw.data_ptr<scalar_t>() : nullptr,
                         need_x ? gx.data_ptr<scalar_t>() : nullptr, threads()));
  });
  return {gw, gx};
}

// ------------------------------------------------------------------ attention
// q, k: [N, H, D] of one dtype and shape; returns N.
int64_t check_qk(const char* op, const Tensor& q, const Tensor& k) {
  ck::check_float(op, "q", q, 3, "[N, H, D]", q.device());
  ck::check_float(op, "k", k, 3, "[N, H, D]", q.device());
  TORCH_CHECK(q.sizes() == k.sizes(), op, ": q and k must have the same shape [N, H, D], got ", q.sizes(), " and ",
              k.sizes());
  ck::check_same_dtype(op, "k", k, "q", q);
  check_cpu_dtype(op, q);
  return q.size(0);
}

Tensor edge_attention_cpu(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr, const Tensor& csc_row,
                          const Tensor& csc_perm, const Tensor& q, const Tensor& k, double scale) {
  const char* op = "graphode::edge_attention";
  const int64_t N = check_qk(op, q, k), H = q.size(1), D = q.size(2);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, q.device());
  ck::check_scale(op, scale);
  Tensor attn = at::empty({E, H}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphode_edge_attention_cpu", [&] {
    check_status(op, cpu::edge_attention_forward<scalar_t>(view(rowptr, col, csc_ptr, csc_row, csc_perm, N),
                                                           q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), H, D,
                                                           scale, attn.data_ptr<scalar_t>(), threads()));
  });
  return attn;
}

std::tuple<Tensor, Tensor> edge_attention_backward_cpu(const Tensor& grad_attn, const Tensor& attn,
                                                       const Tensor& rowptr, const Tensor& col,
                                                       const Tensor& csc_ptr, const Tensor& csc_row,
                                                       const Tensor& csc_perm, const Tensor& q, const Tensor& k,
                                                       double scale) {
  const char* op = "graphode::edge_attention_backward";
  const int64_t N = check_qk(op, q, k), H = q.size(1), D = q.size(2);
  const int64_t E = ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, q.device());
  for (auto&& [name, t] : {std::pair<const char*, const Tensor&>{"grad_attn", grad_attn}, {"attn", attn}}) {
    ck::check_float(op, name, t, 2, "[E, H]", q.device());
    ck::check_size(op, name, t, 0, E, "E = col.size(0)");
    ck::check_size(op, name, t, 1, H, "H = q.size(1)");
    ck::check_same_dtype(op, name, t, "q", q);
  }
  ck::check_scale(op, scale);
  Tensor gq = at::empty({N, H, D}, q.options());
  Tensor gk = at::empty({N, H, D}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphode_edge_attention_backward_cpu", [&] {
    check_status(op, cpu::edge_attention_backward<scalar_t>(
                         view(rowptr, col, csc_ptr, csc_row, csc_perm, N), grad_attn.data_ptr<scalar_t>(),
                         attn.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), H, D, scale,
                         gq.data_ptr<scalar_t>(), gk.data_ptr<scalar_t>(), threads()));
  });
  return {gq, gk};
}

std::tuple<Tensor, Tensor> attention_diffusion_cpu(const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
                                                   const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q,
                                                   const Tensor& k, const Tensor& x, double scale) {
  const char* op = "graphode::attention_diffusion";
  const int64_t N = check_qk(op, q, k), H = q.size(1), D = q.size(2);
  ck::check_float(op, "x", x, 2, "[N, F]", q.device());
  ck::check_size(op, "x", x, 0, N, "N = q.size(0)");
  ck::check_same_dtype(op, "x", x, "q", q);
  ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, q.device());
  ck::check_scale(op, scale);
  const int64_t F = x.size(1);
  Tensor out = at::empty({N, F}, x.options());
  Tensor lse = at::empty({N, H}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphode_attention_diffusion_cpu", [&] {
    check_status(op, cpu::attention_diffusion_forward<scalar_t>(
                         view(rowptr, col, csc_ptr, csc_row, csc_perm, N), q.data_ptr<scalar_t>(),
                         k.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), H, D, F, scale, out.data_ptr<scalar_t>(),
                         lse.data_ptr<scalar_t>(), threads()));
  });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> attention_diffusion_backward_cpu(
    const Tensor& grad_out, const Tensor& lse, const Tensor& rowptr, const Tensor& col, const Tensor& csc_ptr,
    const Tensor& csc_row, const Tensor& csc_perm, const Tensor& q, const Tensor& k, const Tensor& x, double scale,
    bool need_qk, bool need_x) {
  const char* op = "graphode::attention_diffusion_backward";
  const int64_t N = check_qk(op, q, k), H = q.size(1), D = q.size(2);
  ck::check_float(op, "x", x, 2, "[N, F]", q.device());
  ck::check_size(op, "x", x, 0, N, "N = q.size(0)");
  ck::check_same_dtype(op, "x", x, "q", q);
  const int64_t F = x.size(1);
  ck::check_float(op, "grad_out", grad_out, 2, "[N, F]", q.device());
  ck::check_size(op, "grad_out", grad_out, 0, N, "N");
  ck::check_size(op, "grad_out", grad_out, 1, F, "F = x.size(1)");
  ck::check_same_dtype(op, "grad_out", grad_out, "x", x);
  ck::check_float(op, "lse", lse, 2, "[N, H]", q.device());
  ck::check_size(op, "lse", lse, 0, N, "N");
  ck::check_size(op, "lse", lse, 1, H, "H = q.size(1)");
  ck::check_same_dtype(op, "lse", lse, "q", q);
  ck::check_graph(op, rowptr, col, csc_ptr, csc_row, csc_perm, N, q.device());
  ck::check_scale(op, scale);
  Tensor gq = need_qk ? at::empty({N, H, D}, q.options()) : empty0(q);
  Tensor gk = need_qk ? at::empty({N, H, D}, q.options()) : empty0(q);
  Tensor gx = need_x ? at::empty({N, F}, x.options()) : empty0(x);
  if (!need_qk && !need_x) return {gq, gk, gx};
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphode_attention_diffusion_backward_cpu", [&] {
    check_status(op, cpu::attention_diffusion_backward<scalar_t>(
                         view(rowptr, col, csc_ptr, csc_row, csc_perm, N), grad_out.data_ptr<scalar_t>(),
                         lse.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                         x.data_ptr<scalar_t>(), H, D, F, scale, need_qk ? gq.data_ptr<scalar_t>() : nullptr,
                         need_qk ? gk.data_ptr<scalar_t>() : nullptr, need_x ? gx.data_ptr<scalar_t>() : nullptr,
                         threads()));
  });
  return {gq, gk, gx};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphode, CPU, m) {
  m.impl("spmm", &spmm_cpu);
  m.impl("spmm_backward", &spmm_backward_cpu);
  m.impl("edge_attention", &edge_attention_cpu);
  m.impl("edge_attention_backward", &edge_attention_backward_cpu);
  m.impl("attention_diffusion", &attention_diffusion_cpu);
  m.impl("attention_diffusion_backward", &attention_diffusion_backward_cpu);
}

}  // namespace graphode
