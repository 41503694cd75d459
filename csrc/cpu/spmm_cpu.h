// graphode CPU kernels of spmm: SpMM over in-edges and its backward (header-only, no torch).
//
//   forward      y[i]      = sum_{e = j->i} w[e] x[j]            CSR row pass
//   grad weight  gw[e]     = <g[i], x[j]>      (SDDMM)           CSR row pass
//   grad x       gx[j]     = sum_{e = j->i} w[e] g[i]  (A^T g)   CSC column pass
//
// All passes are parallel over edge-balanced row (or column) ranges, write
// each output row from one thread and use no atomics; see common.h.
#pragma once

#include "cpu/common.h"

namespace graphode {
namespace cpu {

// Edges per block of the CSC pass (the gathered weights of one block are
// staged in a small per-thread buffer).
constexpr int64_t kSpmmBlock = 512;

/// y [N, F] = A x with A[i, j] = w[e] for e = j -> i.  w [E], x [N, F].
/// Rows without in-edges get 0.  Returns a Status code.
template <class T>
int spmm_forward(const GraphView& g, const T* w, const T* x, int64_t F, T* y, Context ctx = {}) {
  int st = validate(g, true, false);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges;
  if (N == 0 || F == 0) return kOk;
  const int nt = plan_threads(ctx.threads, (E + N) * F);
  int err = kOk;
  for_each_row_part(
      g.rowptr, N, E, nt, [] { return 0; },
      [&](int64_t r0, int64_t r1, int&) {
        const int64_t part_end = g.rowptr[r1];
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t e0 = g.rowptr[i], n = g.rowptr[i + 1] - e0;
          T* yi = y + i * F;
          if (!indices_ok(g.col + e0, n, N)) {
            set_error(err, kBadCol);
            fill(yi, T(0), F);
            continue;
          }
          gather_axpy(n, g.col + e0, w + e0, x, F, yi, /*accumulate=*/false, part_end - e0);
        }
      });
  return err;
}

/// Backward of spmm_forward for the upstream gradient g [N, F].
/// grad_w [E] (may be null: not needed): grad_w[e] = <g[i], x[j]>.
/// grad_x [N, F] (may be null): grad_x = A^T g, walked over the CSC arrays.
template <class T>
int spmm_backward(const GraphView& g, const T* grad, const T* w, const T* x, int64_t F, T* grad_w, T* grad_x,
                  Context ctx = {}) {
  const bool need_w = grad_w != nullptr, need_x = grad_x != nullptr;
  int st = validate(g, need_w, need_x);
  if (st != kOk) return st;
  const int64_t N = g.num_nodes, E = g.num_edges;
  int err = kOk;
  if (need_w && E > 0) {
    const int nt = plan_threads(ctx.threads, E * F);
    for_each_row_part(
        g.rowptr, N, E, nt, [] { return 0; },
        [&](int64_t r0, int64_t r1, int&) {
          for (int64_t i = r0; i < r1; ++i) {
            const int64_t e0 = g.rowptr[i], e1 = g.rowptr[i + 1];
            const T* gi = grad + i * F;
            if (!indices_ok(g.col + e0, e1 - e0, N)) {
              set_error(err, kBadCol);
              fill(grad_w + e0, T(0), e1 - e0);
              continue;
            }
            for (int64_t e = e0; e < e1; ++e) grad_w[e] = dot(gi, x + g.col[e] * F, F);
          }
        });
  }
  if (need_x && N > 0 && F > 0) {
    const int nt = plan_threads(ctx.threads, (E + N) * F);
    for_each_row_part(
        g.csc_ptr, N, E, nt, [] { return std::vector<T>(kSpmmBlock); },
        [&](int64_t c0, int64_t c1, std::vector<T>& wbuf) {
          T* wb = wbuf.data();
          const int64_t part_end = g.csc_ptr[c1];
          for (int64_t j = c0; j < c1; ++j) {
            const int64_t p0 = g.csc_ptr[j], p1 = g.csc_ptr[j + 1];
            T* gxj = grad_x + j * F;
            if (!indices_ok(g.csc_row + p0, p1 - p0, N)) {
              set_error(err, kBadCscRow);
              fill(gxj, T(0), F);
              continue;
            }
            if (!indices_ok(g.csc_perm + p0, p1 - p0, E)) {
              set_error(err, kBadCscPerm);
              fill(gxj, T(0), F);
              continue;
            }
            if (p0 == p1) fill(gxj, T(0), F);
            // Blocks of out-edges: stage w[perm[p]] contiguously, then one
            // register-tiled gather-reduce over the targets' gradient rows.
            for (int64_t b = p0; b < p1; b += kSpmmBlock) {
              const int64_t nb = std::min(kSpmmBlock, p1 - b);
              for (int64_t t = 0; t < nb; ++t) wb[t] = w[g.csc_perm[b + t]];
              gather_axpy(nb, g.csc_row + b, wb, grad, F, gxj, /*accumulate=*/b != p0, part_end - b);
            }
          }
        });
  }
  return err;
}

// The float and double instances are compiled once, in spmm_cpu.cpp.
#define GRAPHODE_SPMM_CPU_INSTANCES(EXTERN, T) \
  EXTERN template int spmm_forward<T>(const GraphView&, const T*, const T*, int64_t, T*, Context); \
  EXTERN template int spmm_backward<T>(const GraphView&, const T*, const T*, const T*, int64_t, T*, T*, Context);
#ifndef GRAPHODE_CPU_INSTANTIATE
GRAPHODE_SPMM_CPU_INSTANCES(extern, float)
GRAPHODE_SPMM_CPU_INSTANCES(extern, double)
#endif

}  // namespace cpu
}  // namespace graphode
