// graphode::dropout: schema, argument checks and the CPU wrapper (no CUDA kernel:
// on CUDA tensors graphode/ops/dropout.py uses the Triton kernel or the reference).
//
// ============================================================================
// SCHEMA (contract with graphode/ops/dropout.py; no graph arrays)
// ----------------------------------------------------------------------------
// dropout(x, float p, int seed) -> out (same shape and dtype as x)
//     out = x * (keep ? 1/(1-p) : 0), keep_i = Philox4x32-10 word of element i
//     >= floor(p 2^32) (csrc/cpu/dropout_cpu.h); p in [0, 1).  The mask is a
//     function of (seed, i) only: the backward is dropout(grad, p, seed).
// ============================================================================
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "checks.h"
#include "cpu/dropout_cpu.h"

TORCH_LIBRARY_FRAGMENT(graphode, m) { m.def("dropout(Tensor x, float p, int seed) -> Tensor"); }

namespace graphode {
namespace {

using at::Tensor;

Tensor dropout_cpu_op(const Tensor& x, double p, int64_t seed) {
  const char* op = "graphode::dropout";
  checks::check_defined(op, "x", x);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": the cpu backend supports float32 and float64, got ", x.scalar_type(),
              " (convert the input, or use backend='reference')");
  TORCH_CHECK(x.device().is_cpu(), op, ": the cpu backend needs a CPU tensor, got one on ", x.device());
  TORCH_CHECK(x.is_contiguous(), op, ": x must be contiguous (call .contiguous() first)");
  TORCH_CHECK(std::isfinite(p) && p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p);
  Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  const uint32_t threshold = cpu::dropout_threshold(p);
  const uint64_t s = static_cast<uint64_t>(seed);
  const int64_t nb = cpu::dropout_num_blocks(n);
  auto run = [&](auto t) {
    using T = decltype(t);
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    const T* xp = x.data_ptr<T>();
    T* outp = out.data_ptr<T>();
    // 16k blocks (64k elements) per task; the mask does not depend on the split.
    at::parallel_for(0, nb, 16384, [&](int64_t b, int64_t e) {
      cpu::dropout_blocks<T>(xp, outp, n, s, threshold, scale, b, e);
    });
  };
  if (x.scalar_type() == at::kFloat)
    run(float{});
  else
    run(double{});
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(graphode, CPU, m) { m.impl("dropout", &dropout_cpu_op); }

// A plain kernel: graphode/ops/dropout.py differentiates it (its one
// autograd.Function), so autograd falls through.
TORCH_LIBRARY_IMPL(graphode, Autograd, m) { m.impl("dropout", torch::CppFunction::makeFallthrough()); }

}  // namespace graphode
