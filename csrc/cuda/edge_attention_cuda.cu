// CUDA kernels of edge_attention, forward and backward (warp mapping:
// attention_common.cuh).
#include "cuda/attention_common.cuh"
#include "cuda/edge_attention_cuda.h"

namespace graphode {
namespace cuda {
namespace detail {

template <typename T, int MAXH>
__global__ void __launch_bounds__(kThreads)
    edge_attention_forward_kernel(const int64_t* __restrict__ rowptr, const int64_t* __restrict__ col, const T* __restrict__ q,
                      const T* __restrict__ k, T* __restrict__ attn, int64_t N, int H, int D, T scale, size_t slice) {
  const int64_t row = warp_id();
  if (row >= N) return;
  const int lane = lane_id();
  const int HD = H * D;
  int64_t* nbr;
  T* qs;
  warp_slice(slice, nbr, qs);
  for (int idx = lane; idx < HD; idx += kWarp) qs[idx] = q[row * HD + idx] * scale;
  __syncwarp();
  const int64_t start = rowptr[row], end = rowptr[row + 1];
  T m[MAXH], l[MAXH];
#pragma unroll
  for (int h = 0; h < MAXH; ++h) {
    m[h] = neg_inf<T>();
    l[h] = T(0);
  }
  // Sweep 1: online (max, sum-exp) per head.
  for (int64_t e0 = start; e0 < end; e0 += kWarp) {
    const int64_t e = e0 + lane;
    const bool valid = e < end;
    T s[MAXH];
    edge_scores<T, MAXH>(s, qs, k + (valid ? col[e] : 0) * HD, H, D);
#pragma unroll
    for (int h = 0; h < MAXH; ++h) {
      if (h < H) {
        const T mn = max(m[h], warp_max(valid ? s[h] : neg_inf<T>()));
        l[h] = l[h] * fast_exp(m[h] - mn) + (valid ? fast_exp(s[h] - mn) : T(0));
        m[h] = mn;
      }
    }
  }
  T lse[MAXH];
#pragma unroll
  for (int h = 0; h < MAXH; ++h) lse[h] = h < H ? m[h] + log_(warp_sum(l[h])) : T(0);
  // Sweep 2: a = exp(s - lse) (recomputed scores; no [E, H] scratch).
  for (int64_t e0 = start; e0 < end; e0 += kWarp) {
    const int64_t e = e0 + lane;
    if (e >= end) continue;  // no shuffles below
    T s[MAXH];
    edge_scores<T, MAXH>(s, qs, k + col[e] * HD, H, D);
#pragma unroll
    for (int h = 0; h < MAXH; ++h)
      if (h < H) attn[e * H + h] = fast_exp(s[h] - lse[h]);
  }
}

// dot_ih = sum_e a ga (sweep 1, kept for the CSC pass); grad_q = scale sum_e a (ga - dot) k_j (sweep 2).
template <typename T, int MAXH>
__global__ void __launch_bounds__(kThreads)
    edge_attention_backward_rows_kernel(const T* __restrict__ ga, const T* __restrict__ a, const int64_t* __restrict__ rowptr,
                            const int64_t* __restrict__ col, const T* __restrict__ k, T* __restrict__ gq,
                            T* __restrict__ dot, int64_t N, int H, int D, T scale, size_t slice) {
  const int64_t row = warp_id();
  if (row >= N) return;
  const int lane = lane_id();
  const int HD = H * D;
  int64_t* nbr;
  T* dsm;
  warp_slice(slice, nbr, dsm);
  T* gacc = dsm + kWarp * MAXH;
  for (int idx = lane; idx < HD; idx += kWarp) gacc[idx] = T(0);
  const int64_t start = rowptr[row], end = rowptr[row + 1];
  T dv[MAXH];
#pragma unroll
  for (int h = 0; h < MAXH; ++h) dv[h] = T(0);
  for (int64_t e = start + lane; e < end; e += kWarp) {
#pragma unroll
    for (int h = 0; h < MAXH; ++h)
      if (h < H) dv[h] += a[e * H + h] * ga[e * H + h];
  }
#pragma unroll
  for (int h = 0; h < MAXH; ++h) {
    if (h < H) {
      dv[h] = warp_sum(dv[h]);
      if (lane == h) dot[row * H + h] = dv[h];
    }
  }
  for (int64_t e0 = start; e0 < end; e0 += kWarp) {
    const int64_t e = e0 + lane;
    const bool valid = e < end;
#pragma unroll
    for (int h = 0; h < MAXH; ++h)
      if (h < H) dsm[lane * MAXH + h] = valid ? a[e * H + h] * (ga[e * H + h] - dv[h]) : T(0);
    nbr[lane] = valid ? col[e] : 0;
    __syncwarp();
    const int n = static_cast<int>(end - e0 < kWarp ? end - e0 : kWarp);
    accumulate_hd<T, MAXH>(gacc, dsm, nbr, n, k, HD, D, lane);
    __syncwarp();
  }
  for (int idx = lane; idx < HD; idx += kWarp) gq[row * HD + idx] = gacc[idx] * scale;
}

// grad_k_j = scale sum over out-edges e = j -> i of a_e (ga_e - dot_i) q_i (CSC, one warp per source).
template <typename T, int MAXH>
__global__ void __launch_bounds__(kThreads)
    edge_attention_backward_cols_kernel(const T* __restrict__ ga, const T* __restrict__ a, const int64_t* __restrict__ csc_ptr,
                            const int64_t* __restrict__ csc_row, const int64_t* __restrict__ csc_perm,
                            const T* __restrict__ q, const T* __restrict__ dot, T* __restrict__ gk, int64_t N, int H,
                            int D, T scale, size_t slice) {
  const int64_t src = warp_id();
  if (src >= N) return;
  const int lane = lane_id();
  const int HD = H * D;
  int64_t* nbr;
  T* cm;
  warp_slice(slice, nbr, cm);
  T* kacc = cm + kWarp * MAXH;
  for (int idx = lane; idx < HD; idx += kWarp) kacc[idx] = T(0);
  const int64_t start = csc_ptr[src], end = csc_ptr[src + 1];
  for (int64_t p0 = start; p0 < end; p0 += kWarp) {
    const int64_t p = p0 + lane;
    const bool valid = p < end;
    const int64_t i = valid ? csc_row[p] : 0;
    const int64_t e = valid ? csc_perm[p] : 0;
#pragma unroll
    for (int h = 0; h < MAXH; ++h)
      if (h < H) cm[lane * MAXH + h] = valid ? a[e * H + h] * (ga[e * H + h] - dot[i * H + h]) : T(0);
    nbr[lane] = i;
    __syncwarp();
    const int n = static_cast<int>(end - p0 < kWarp ? end - p0 : kWarp);
    accumulate_hd<T, MAXH>(kacc, cm, nbr, n, q, HD, D, lane);
    __syncwarp();
  }
  for (int idx = lane; idx < HD; idx += kWarp) gk[src * HD + idx] = kacc[idx] * scale;
}

}  // namespace detail

template <typename T>
cudaError_t edge_attention_forward(const GraphView& g, const T* q, const T* k, int64_t H, int64_t D, double scale,
                                   T* attn, Context ctx) {
  using namespace detail;
  const int64_t N = g.num_nodes;
  if (N <= 0) return cudaSuccess;
  if (!sizes_ok(H, D)) return cudaErrorInvalidValue;
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const size_t slice = slice_bytes<T>(H * D);
    auto kernel = edge_attention_forward_kernel<T, MAXH>;
    cudaError_t err = smem_ready(kernel, slice);
    if (err != cudaSuccess) return err;
    kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, ctx.stream>>>(
        g.rowptr, g.col, q, k, attn, N, static_cast<int>(H), static_cast<int>(D), static_cast<T>(scale), slice);
    return launch_status();
  });
}

template <typename T>
cudaError_t edge_attention_backward(const GraphView& g, const T* grad_attn, const T* attn, const T* q, const T* k,
                                    int64_t H, int64_t D, double scale, T* grad_q, T* grad_k, Context ctx) {
  using namespace detail;
  const int64_t N = g.num_nodes;
  if (N <= 0) return cudaSuccess;
  if (!sizes_ok(H, D)) return cudaErrorInvalidValue;
  // per-row sum_e a ga of the row pass, read by the column pass
  StreamBuffer<T> dot(size_t(N * H), ctx.stream);
  if (dot.err() != cudaSuccess) return dot.err();
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const int h = static_cast<int>(H), d = static_cast<int>(D);
    const T sc = static_cast<T>(scale);
    const size_t slice = slice_bytes<T>(H * D + kWarp * MAXH);
    cudaError_t err;
    auto rows = edge_attention_backward_rows_kernel<T, MAXH>;
    if ((err = smem_ready(rows, slice)) != cudaSuccess) return err;
    rows<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, ctx.stream>>>(grad_attn, attn, g.rowptr, g.col, k,
                                                                                grad_q, dot.get(), N, h, d, sc, slice);
    if ((err = launch_status()) != cudaSuccess) return err;
    auto cols = edge_attention_backward_cols_kernel<T, MAXH>;
    if ((err = smem_ready(cols, slice)) != cudaSuccess) return err;
    cols<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, ctx.stream>>>(
        grad_attn, attn, g.csc_ptr, g.csc_row, g.csc_perm, q, dot.get(), grad_k, N, h, d, sc, slice);
    return launch_status();
  });
}

#define GRAPHODE_INSTANTIATE(T)                                                                                   \
  template cudaError_t edge_attention_forward<T>(const GraphView&, const T*, const T*, int64_t, int64_t, double,  \
                                                 T*, Context);                                                    \
  template cudaError_t edge_attention_backward<T>(const GraphView&, const T*, const T*, const T*, const T*,       \
                                                  int64_t, int64_t, double, T*, T*, Context);

GRAPHODE_INSTANTIATE(float)
GRAPHODE_INSTANTIATE(double)
#undef GRAPHODE_INSTANTIATE

}  // namespace cuda
}  // namespace graphode
