// CUDA kernels of attention_diffusion, forward and backward (warp mapping and
// the online softmax: attention_common.cuh).
#include "cuda/attention_common.cuh"
#include "cuda/attention_diffusion_cuda.h"

namespace graphode {
namespace cuda {
namespace detail {

template <typename T, int MAXH, int FT>
__global__ void __launch_bounds__(kThreads)
    attention_diffusion_forward_kernel(const int64_t* __restrict__ rowptr, const int64_t* __restrict__ col, const T* __restrict__ q,
                      const T* __restrict__ k, const T* __restrict__ x, T* __restrict__ out, T* __restrict__ lse,
                      int64_t N, int H, int D, int64_t F, T scale, size_t slice) {
  const int64_t row = warp_id();
  if (row >= N) return;
  const int lane = lane_id();
  const int HD = H * D;
  int64_t* nbr;
  T* qs;
  warp_slice(slice, nbr, qs);
  T* ps = qs + HD;  // [32][MAXH] softmax terms of the staged block
  for (int idx = lane; idx < HD; idx += kWarp) qs[idx] = q[row * HD + idx] * scale;
  __syncwarp();
  const int64_t start = rowptr[row], end = rowptr[row + 1];
  const T inv_h = T(1) / T(H);
  // Feature tiles of 32 * FT columns keep the accumulators in registers; the
  // scores are recomputed per tile (a single tile for F <= 128; one, fully
  // masked, for F = 0 so that lse is still written).
  const int64_t f_end = F > 0 ? F : 1;
  for (int64_t f0 = 0; f0 < f_end; f0 += kWarp * FT) {
    T m[MAXH], l[MAXH], acc[MAXH][FT];
#pragma unroll
    for (int h = 0; h < MAXH; ++h) {
      m[h] = neg_inf<T>();
      l[h] = T(0);
#pragma unroll
      for (int c = 0; c < FT; ++c) acc[h][c] = T(0);
    }
    for (int64_t e0 = start; e0 < end; e0 += kWarp) {
      const int64_t e = e0 + lane;
      const bool valid = e < end;
      const int64_t j = valid ? col[e] : 0;
      T s[MAXH];
      edge_scores<T, MAXH>(s, qs, k + j * HD, H, D);
#pragma unroll
      for (int h = 0; h < MAXH; ++h) {
        if (h < H) {
          const T b = warp_max(valid ? s[h] : neg_inf<T>());  // finite: lane 0 is a real edge
          const T mn = max(m[h], b);
          const T alpha = fast_exp(m[h] - mn);  // exp(-inf) = 0 on the first block
          const T p = valid ? fast_exp(s[h] - mn) : T(0);
          l[h] = l[h] * alpha + p;
#pragma unroll
          for (int c = 0; c < FT; ++c) acc[h][c] *= alpha;
          m[h] = mn;
          ps[lane * MAXH + h] = p;
        }
      }
      nbr[lane] = j;
      __syncwarp();
      const int n = static_cast<int>(end - e0 < kWarp ? end - e0 : kWarp);
      for (int t = 0; t < n; ++t) {
        const T* xr = x + nbr[t] * F + f0;
        T xv[FT];
#pragma unroll
        for (int c = 0; c < FT; ++c) {
          const int64_t f = lane + kWarp * c;
          xv[c] = (f0 + f < F) ? xr[f] : T(0);
        }
#pragma unroll
        for (int h = 0; h < MAXH; ++h) {
          if (h < H) {
            const T p = ps[t * MAXH + h];
#pragma unroll
            for (int c = 0; c < FT; ++c) acc[h][c] += p * xv[c];
          }
        }
      }
      __syncwarp();  // the next block overwrites ps / nbr
    }
    T o[FT];
#pragma unroll
    for (int c = 0; c < FT; ++c) o[c] = T(0);
#pragma unroll
    for (int h = 0; h < MAXH; ++h) {
      if (h < H) {
        const T L = warp_sum(l[h]);
        const T r = L > T(0) ? inv_h / L : T(0);
#pragma unroll
        for (int c = 0; c < FT; ++c) o[c] += acc[h][c] * r;
        if (f0 == 0 && lane == h) lse[row * H + h] = L > T(0) ? m[h] + log_(L) : neg_inf<T>();
      }
    }
#pragma unroll
    for (int c = 0; c < FT; ++c) {
      const int64_t f = f0 + lane + kWarp * c;
      if (f < F) out[row * F + f] = o[c];
    }
  }
}

// Row pass: D_ih = (1/H) sum_j a t (sweep 1) and grad_q_ih = scale sum_j ds k_jh (sweep 2).
template <typename T, int MAXH>
__global__ void __launch_bounds__(kThreads)
    attention_diffusion_backward_rows_kernel(const T* __restrict__ g, const T* __restrict__ lse, const int64_t* __restrict__ rowptr,
                            const int64_t* __restrict__ col, const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ x, T* __restrict__ gq, T* __restrict__ dterm, int64_t N, int H,
                            int D, int64_t F, T scale, size_t slice) {
  const int64_t row = warp_id();
  if (row >= N) return;
  const int lane = lane_id();
  const int HD = H * D;
  int64_t* nbr;
  T* qs;
  warp_slice(slice, nbr, qs);
  T* gs = qs + HD;               // g_i [F]
  T* dsm = gs + F;               // [32][MAXH]
  T* gacc = dsm + kWarp * MAXH;  // [HD] lane-owned accumulators
  for (int idx = lane; idx < HD; idx += kWarp) {
    qs[idx] = q[row * HD + idx] * scale;
    gacc[idx] = T(0);
  }
  for (int64_t f = lane; f < F; f += kWarp) gs[f] = g[row * F + f];
  __syncwarp();
  T lse_i[MAXH];
#pragma unroll
  for (int h = 0; h < MAXH; ++h) lse_i[h] = h < H ? lse[row * H + h] : T(0);
  const int64_t start = rowptr[row], end = rowptr[row + 1];
  const T inv_h = T(1) / T(H);

  T Dv[MAXH];
#pragma unroll
  for (int h = 0; h < MAXH; ++h) Dv[h] = T(0);
  for (int sweep = 0; sweep < 2; ++sweep) {
    for (int64_t e0 = start; e0 < end; e0 += kWarp) {
      const int64_t e = e0 + lane;
      const bool valid = e < end;
      const int64_t j = valid ? col[e] : 0;
      T s[MAXH];
      edge_scores<T, MAXH>(s, qs, k + j * HD, H, D);
      T t = T(0);
      if (valid) {
        const T* xj = x + j * F;
        for (int64_t f = 0; f < F; ++f) t += gs[f] * xj[f];
      }
      if (sweep == 0) {
#pragma unroll
        for (int h = 0; h < MAXH; ++h)
          if (h < H && valid) Dv[h] += fast_exp(s[h] - lse_i[h]) * t;
      } else {
#pragma unroll
        for (int h = 0; h < MAXH; ++h) {
          if (h < H) dsm[lane * MAXH + h] = valid ? fast_exp(s[h] - lse_i[h]) * (t * inv_h - Dv[h]) : T(0);
        }
        nbr[lane] = j;
        __syncwarp();
        const int n = static_cast<int>(end - e0 < kWarp ? end - e0 : kWarp);
        accumulate_hd<T, MAXH>(gacc, dsm, nbr, n, k, HD, D, lane);
        __syncwarp();
      }
    }
    if (sweep == 0) {
#pragma unroll
      for (int h = 0; h < MAXH; ++h) {
        if (h < H) {
          Dv[h] = warp_sum(Dv[h]) * inv_h;
          if (lane == h) dterm[row * H + h] = Dv[h];
        }
      }
    }
  }
  for (int idx = lane; idx < HD; idx += kWarp) gq[row * HD + idx] = gacc[idx] * scale;
}

// Transposed pass, one warp per source j over its out-edges j -> i:
//   grad_k_jh = scale sum_i ds_ijh q_ih,  grad_x_j = (1/H) sum_i (sum_h a_ijh) g_i.
template <typename T, int MAXH>
__global__ void __launch_bounds__(kThreads)
    attention_diffusion_backward_cols_kernel(const T* __restrict__ g, const T* __restrict__ lse, const int64_t* __restrict__ csc_ptr,
                            const int64_t* __restrict__ csc_row, const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ x, const T* __restrict__ dterm, T* __restrict__ gk,
                            T* __restrict__ gx, int64_t N, int H, int D, int64_t F, T scale, bool need_qk,
                            bool need_x, size_t slice) {
  const int64_t src = warp_id();
  if (src >= N) return;
  const int lane = lane_id();
  const int HD = H * D;
  int64_t* nbr;
  T* ks;
  warp_slice(slice, nbr, ks);
  T* xs = ks + HD;                 // x_j [F]
  T* cm = xs + F;                  // [32][MAXH] ds of the staged block
  T* ab = cm + kWarp * MAXH;       // [32] (1/H) sum_h a of the staged block
  T* kacc = ab + kWarp;            // [HD]
  T* xacc = kacc + HD;             // [F]
  for (int idx = lane; idx < HD; idx += kWarp) {
    ks[idx] = k[src * HD + idx] * scale;
    kacc[idx] = T(0);
  }
  for (int64_t f = lane; f < F; f += kWarp) {
    xs[f] = x[src * F + f];
    xacc[f] = T(0);
  }
  __syncwarp();
  const int64_t start = csc_ptr[src], end = csc_ptr[src + 1];
  const T inv_h = T(1) / T(H);
  for (int64_t p0 = start; p0 < end; p0 += kWarp) {
    const int64_t p = p0 + lane;
    const bool valid = p < end;
    const int64_t i = valid ? csc_row[p] : 0;
    T s[MAXH];
    edge_scores<T, MAXH>(s, ks, q + i * HD, H, D);  // <scale k_j, q_i>
    T t = T(0);
    if (need_qk && valid) {
      const T* gi = g + i * F;
      for (int64_t f = 0; f < F; ++f) t += xs[f] * gi[f];
    }
    T asum = T(0);
#pragma unroll
    for (int h = 0; h < MAXH; ++h) {
      if (h < H) {
        const T a = valid ? fast_exp(s[h] - lse[i * H + h]) : T(0);
        asum += a;
        if (need_qk) cm[lane * MAXH + h] = valid ? a * (t * inv_h - dterm[i * H + h]) : T(0);
      }
    }
    ab[lane] = asum * inv_h;
    nbr[lane] = i;
    __syncwarp();
    const int n = static_cast<int>(end - p0 < kWarp ? end - p0 : kWarp);
    if (need_qk) accumulate_hd<T, MAXH>(kacc, cm, nbr, n, q, HD, D, lane);
    if (need_x) {
      for (int64_t f = lane; f < F; f += kWarp) {
        T sum = T(0);
        for (int t2 = 0; t2 < n; ++t2) sum += ab[t2] * g[nbr[t2] * F + f];
        xacc[f] += sum;
      }
    }
    __syncwarp();
  }
  if (need_qk)
    for (int idx = lane; idx < HD; idx += kWarp) gk[src * HD + idx] = kacc[idx] * scale;
  if (need_x)
    for (int64_t f = lane; f < F; f += kWarp) gx[src * F + f] = xacc[f];
}

}  // namespace detail

template <typename T>
cudaError_t attention_diffusion_forward(const GraphView& g, const T* q, const T* k, const T* x, int64_t H, int64_t D,
                                        int64_t F, double scale, T* out, T* lse, Context ctx) {
  using namespace detail;
  const int64_t N = g.num_nodes;
  if (N <= 0) return cudaSuccess;
  if (!sizes_ok(H, D) || F < 0) return cudaErrorInvalidValue;
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const size_t slice = slice_bytes<T>(H * D + kWarp * MAXH);
    auto run = [&](auto kernel) -> cudaError_t {
      cudaError_t err = smem_ready(kernel, slice);
      if (err != cudaSuccess) return err;
      kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, ctx.stream>>>(
          g.rowptr, g.col, q, k, x, out, lse, N, static_cast<int>(H), static_cast<int>(D), F, static_cast<T>(scale),
          slice);
      return launch_status();
    };
    if (F <= kWarp) return run(attention_diffusion_forward_kernel<T, MAXH, 1>);
    if (F <= 2 * kWarp) return run(attention_diffusion_forward_kernel<T, MAXH, 2>);
    return run(attention_diffusion_forward_kernel<T, MAXH, 4>);
  });
}

template <typename T>
cudaError_t attention_diffusion_backward(const GraphView& g, const T* grad, const T* lse, const T* q, const T* k,
                                         const T* x, int64_t H, int64_t D, int64_t F, double scale, T* grad_q,
                                         T* grad_k, T* grad_x, Context ctx) {
  using namespace detail;
  const int64_t N = g.num_nodes;
  const bool need_qk = grad_q != nullptr && grad_k != nullptr, need_x = grad_x != nullptr;
  if (N <= 0 || !(need_qk || need_x)) return cudaSuccess;
  if (!sizes_ok(H, D) || F < 0) return cudaErrorInvalidValue;
  // D_ih of the row pass, read by the column pass
  StreamBuffer<T> dterm(need_qk ? size_t(N * H) : 0, ctx.stream);
  if (dterm.err() != cudaSuccess) return dterm.err();
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const int h = static_cast<int>(H), d = static_cast<int>(D);
    const T sc = static_cast<T>(scale);
    cudaError_t err;
    if (need_qk) {
      const size_t slice = slice_bytes<T>(2 * H * D + F + kWarp * MAXH);
      auto kernel = attention_diffusion_backward_rows_kernel<T, MAXH>;
      if ((err = smem_ready(kernel, slice)) != cudaSuccess) return err;
      kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, ctx.stream>>>(
          grad, lse, g.rowptr, g.col, q, k, x, grad_q, dterm.get(), N, h, d, F, sc, slice);
      if ((err = launch_status()) != cudaSuccess) return err;
    }
    const size_t slice = slice_bytes<T>(2 * H * D + 2 * F + kWarp * MAXH + kWarp);
    auto kernel = attention_diffusion_backward_cols_kernel<T, MAXH>;
    if ((err = smem_ready(kernel, slice)) != cudaSuccess) return err;
    kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, ctx.stream>>>(
        grad, lse, g.csc_ptr, g.csc_row, q, k, x, dterm.get(), grad_k, grad_x, N, h, d, F, sc, need_qk, need_x,
        slice);
    return launch_status();
  });
}

#define GRAPHODE_INSTANTIATE(T)                                                                                   \
  template cudaError_t attention_diffusion_forward<T>(const GraphView&, const T*, const T*, const T*, int64_t,    \
                                                      int64_t, int64_t, double, T*, T*, Context);                 \
  template cudaError_t attention_diffusion_backward<T>(const GraphView&, const T*, const T*, const T*, const T*,  \
                                                       const T*, int64_t, int64_t, int64_t, double, T*, T*, T*,   \
                                                       Context);

GRAPHODE_INSTANTIATE(float)
GRAPHODE_INSTANTIATE(double)
#undef GRAPHODE_INSTANTIATE

}  // namespace cuda
}  // namespace graphode
