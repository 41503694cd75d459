// CUDA kernels of spmm: SpMM over CSR (forward), over CSC (grad_x, no atomics)
// and the SDDMM grad_w.
//
// Warp mapping (see common.cuh): one warp per row.  The warp first loads the
// column indices and weights of up to 32 edges with one coalesced load (lane t
// holds edge e0 + t), then walks them one by one: __shfl_sync broadcasts edge
// t's (j, w) from lane t to all lanes, and lane l accumulates features
// f = f0 + l + 32c (c < FT) of w * x[j], i.e. each x row is read as FT fully
// coalesced 128-byte (float) segments.  FT = 1, 2 or 4 is picked from F at
// launch so that the accumulators stay in registers; wider F is processed in
// tiles of 32 * FT columns.  Accumulation is in T (float or double).
//
// Huge-degree rows are walked serially by their warp; the Triton backend
// (kernels/) splits them into chunks, this backend does not (yet).
#include "cuda/common.cuh"
#include "cuda/spmm_cuda.h"

namespace graphode {
namespace cuda {
namespace detail {

template <typename T, int FT, bool PERM>
__global__ void __launch_bounds__(kThreads)
    spmm_rows_kernel(const int64_t* __restrict__ ptr, const int64_t* __restrict__ idx,
                     const int64_t* __restrict__ perm, const T* __restrict__ w, const T* __restrict__ x,
                     T* __restrict__ y, int64_t N, int64_t F) {
  const int64_t row = warp_id();
  if (row >= N) return;  // the whole warp leaves together
  const int lane = lane_id();
  const int64_t start = ptr[row], end = ptr[row + 1];
  for (int64_t f0 = 0; f0 < F; f0 += kWarp * FT) {
    T acc[FT];
#pragma unroll
    for (int c = 0; c < FT; ++c) acc[c] = T(0);
    for (int64_t e0 = start; e0 < end; e0 += kWarp) {
      const int64_t e = e0 + lane;
      int64_t my_j = 0;
      T my_w = T(0);
      if (e < end) {
        my_j = idx[e];
        my_w = w[PERM ? perm[e] : e];
      }
      const int n = static_cast<int>(end - e0 < kWarp ? end - e0 : kWarp);
#pragma unroll 4
      for (int t = 0; t < n; ++t) {
        const int64_t j = __shfl_sync(kFull, my_j, t);
        const T wt = __shfl_sync(kFull, my_w, t);
        const T* xr = x + j * F + f0;
#pragma unroll
        for (int c = 0; c < FT; ++c) {
          const int64_t f = lane + kWarp * c;
          if (f0 + f < F) acc[c] += wt * xr[f];
        }
      }
    }
#pragma unroll
    for (int c = 0; c < FT; ++c) {
      const int64_t f = f0 + lane + kWarp * c;
      if (f < F) y[row * F + f] = acc[c];
    }
  }
}

// grad_w[e] = <g[i], x[col[e]]>: per edge, each lane multiplies a strided
// slice of the two rows and a butterfly warp_sum reduces the 32 partials.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sddmm_kernel(const int64_t* __restrict__ rowptr, const int64_t* __restrict__ col, const T* __restrict__ g,
                 const T* __restrict__ x, T* __restrict__ gw, int64_t N, int64_t F) {
  const int64_t row = warp_id();
  if (row >= N) return;
  const int lane = lane_id();
  const int64_t start = rowptr[row], end = rowptr[row + 1];
  const T* gi = g + row * F;
  for (int64_t e = start; e < end; ++e) {
    const T* xj = x + col[e] * F;
    T part = T(0);
    for (int64_t f = lane; f < F; f += kWarp) part += gi[f] * xj[f];
    part = warp_sum(part);
    if (lane == 0) gw[e] = part;
  }
}

template <typename T, bool PERM>
cudaError_t launch_rows(const int64_t* ptr, const int64_t* idx, const int64_t* perm, const T* w, const T* x, T* y,
                        int64_t N, int64_t F, cudaStream_t stream) {
  if (N <= 0 || F <= 0) return cudaSuccess;
  const unsigned blocks = blocks_for_rows(N);
  if (F <= kWarp)
    spmm_rows_kernel<T, 1, PERM><<<blocks, kThreads, 0, stream>>>(ptr, idx, perm, w, x, y, N, F);
  else if (F <= 2 * kWarp)
    spmm_rows_kernel<T, 2, PERM><<<blocks, kThreads, 0, stream>>>(ptr, idx, perm, w, x, y, N, F);
  else
    spmm_rows_kernel<T, 4, PERM><<<blocks, kThreads, 0, stream>>>(ptr, idx, perm, w, x, y, N, F);
  return launch_status();
}

}  // namespace detail

template <typename T>
cudaError_t spmm_forward(const GraphView& g, const T* w, const T* x, int64_t F, T* y, Context ctx) {
  return detail::launch_rows<T, false>(g.rowptr, g.col, nullptr, w, x, y, g.num_nodes, F, ctx.stream);
}

template <typename T>
cudaError_t spmm_backward(const GraphView& g, const T* grad, const T* w, const T* x, int64_t F, T* grad_w,
                          T* grad_x, Context ctx) {
  const int64_t N = g.num_nodes;
  if (grad_x != nullptr) {
    // The transpose is the same row kernel over the CSC arrays: the "column"
    // of position p is its target csc_row[p] and its weight w[csc_perm[p]].
    cudaError_t err =
        detail::launch_rows<T, true>(g.csc_ptr, g.csc_row, g.csc_perm, w, grad, grad_x, N, F, ctx.stream);
    if (err != cudaSuccess) return err;
  }
  if (grad_w != nullptr && N > 0) {
    detail::sddmm_kernel<T><<<detail::blocks_for_rows(N), detail::kThreads, 0, ctx.stream>>>(g.rowptr, g.col, grad, x,
                                                                                            grad_w, N, F);
    return detail::launch_status();
  }
  return cudaSuccess;
}

#define GRAPHODE_INSTANTIATE_SPMM(T)                                                                        \
  template cudaError_t spmm_forward<T>(const GraphView&, const T*, const T*, int64_t, T*, Context);        \
  template cudaError_t spmm_backward<T>(const GraphView&, const T*, const T*, const T*, int64_t, T*, T*, \
                                        Context);

GRAPHODE_INSTANTIATE_SPMM(float)
GRAPHODE_INSTANTIATE_SPMM(double)
#undef GRAPHODE_INSTANTIATE_SPMM

}  // namespace cuda
}  // namespace graphode
