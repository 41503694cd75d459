// Multi-head edge attention and fused attention diffusion, forward and backward.
//
// Notation: q, k [N, H, D], x [N, F]; for an edge j -> i (CSR row i, column j)
// s_ijh = scale <q_ih, k_jh>, a_ijh = softmax over the in-edges of i of s_ijh.
//
// Warp mapping
// ------------
// One warp per row (see common.cuh).  A row's edges are processed in blocks of
// 32, in two phases per block:
//   1. "lane per edge": lane t takes edge e0 + t and computes its H scores,
//      reading q_i (pre-scaled, staged once per row in the warp's shared-memory
//      slice; broadcast reads, no bank conflicts) against its own k_j row.  The
//      block's per-head max and the softmax terms come from butterfly
//      __shfl_xor_sync reductions (warp_max / warp_sum, 5 shuffles each).
//   2. "lane per feature": the block's 32 (neighbour, coefficient) pairs are
//      staged in shared memory, and lane l accumulates features f = l + 32c
//      (or, for gradients of q/k, entries idx = l + 32c of the H*D vector) over
//      the block's edges, so every gathered x / q / k row is read as coalesced
//      128-byte segments.  Each lane owns its own accumulator entries (registers
//      in the forward, the warp's shared-memory slice in the backward), hence
//      no atomics anywhere, and __syncwarp() only guards the staged block.
// The backward's transposed pass (grad_k, grad_x) is the same scheme over the
// CSC arrays: one warp per *source*, its out-edges in blocks of 32.
//
// Online softmax (numerical stability)
// ------------------------------------
// Per head the warp keeps the running max m (warp-uniform) and per lane a
// partial sum l = sum exp(s - m) over the edges that lane has seen, plus the
// accumulators acc[h][f] = sum exp(s - m) x[j, f].  For a new block with block
// max b: m' = max(m, b), every state is rescaled by alpha = exp(m - m') (0 on
// the first block, since m = -inf) and the block adds p = exp(s - m') <= 1.
// No exponential can overflow whatever the magnitude of the scores.  The lane
// partials of l are summed once at the end (a rescaling by the common alpha
// commutes with the sum).  Only lse = m + log(l) [N, H] is stored (-inf for a
// row without in-edges, whose output is 0); the backward recomputes
// a = exp(s - lse) <= 1 from q and k.  The backward uses the two-sweep form
// ds = a (t / H - D) with D computed first, which avoids the cancellation of
// the one-sweep sum(a t k)/H - D sum(a k).
//
// Limits: H <= kMaxHeads (one score per head and lane in registers); the
// per-warp shared-memory slice holds O(H*D + F) values (opt-in beyond 48 KiB).
#include <type_traits>

#include "common.cuh"

namespace graphode {
namespace cuda {
namespace detail {

// Bytes of one warp's shared-memory slice: 32 int64 neighbour ids followed by
// `values` scalars of T, rounded up to 16 bytes.
template <typename T>
inline size_t slice_bytes(int64_t values) {
  size_t b = kWarp * sizeof(int64_t) + static_cast<size_t>(values) * sizeof(T);
  return (b + 15) / 16 * 16;
}

template <typename T>
__device__ __forceinline__ void warp_slice(size_t bytes, int64_t*& nbr, T*& vals) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* base = smem_raw + static_cast<size_t>(threadIdx.x / kWarp) * bytes;
  nbr = reinterpret_cast<int64_t*>(base);
  vals = reinterpret_cast<T*>(base + kWarp * sizeof(int64_t));
}

// H scores of one edge: s[h] = <qs[h*D : (h+1)*D], kj[h*D : (h+1)*D]> (qs pre-scaled).
template <typename T, int MAXH>
__device__ __forceinline__ void edge_scores(T (&s)[MAXH], const T* qs, const T* __restrict__ kj, int H, int D) {
#pragma unroll
  for (int h = 0; h < MAXH; ++h) {
    T acc = T(0);
    if (h < H) {
      const T* a = qs + h * D;
      const T* b = kj + h * D;
      for (int d = 0; d < D; ++d) acc += a[d] * b[d];
    }
    s[h] = acc;
  }
}

// acc[idx] += sum_{t < n} coef[t * MAXH + idx / D] * src[nbr[t] * HD + idx] for the
// lane's entries idx = lane + 32c: the gradient of q (or k) from a staged block.
template <typename T, int MAXH>
__device__ __forceinline__ void accumulate_hd(T* acc, const T* coef, const int64_t* nbr, int n,
                                              const T* __restrict__ src, int HD, int D, int lane) {
  for (int idx = lane; idx < HD; idx += kWarp) {
    const int h = idx / D;
    T sum = T(0);
    for (int t = 0; t < n; ++t) sum += coef[t * MAXH + h] * src[nbr[t] * HD + idx];
    acc[idx] += sum;
  }
}

// =========================================================================== attention diffusion
template <typename T, int MAXH, int FT>
__global__ void __launch_bounds__(kThreads)
    ad_forward_kernel(const int64_t* __restrict__ rowptr, const int64_t* __restrict__ col, const T* __restrict__ q,
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
    ad_backward_rows_kernel(const T* __restrict__ g, const T* __restrict__ lse, const int64_t* __restrict__ rowptr,
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
    ad_backward_cols_kernel(const T* __restrict__ g, const T* __restrict__ lse, const int64_t* __restrict__ csc_ptr,
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

// =========================================================================== edge attention
template <typename T, int MAXH>
__global__ void __launch_bounds__(kThreads)
    ea_forward_kernel(const int64_t* __restrict__ rowptr, const int64_t* __restrict__ col, const T* __restrict__ q,
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
    ea_backward_rows_kernel(const T* __restrict__ ga, const T* __restrict__ a, const int64_t* __restrict__ rowptr,
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
    ea_backward_cols_kernel(const T* __restrict__ ga, const T* __restrict__ a, const int64_t* __restrict__ csc_ptr,
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

// --------------------------------------------------------------------------- dispatch helpers
// Head buckets: MAXH in {1, 4, 8} (unused head slots are skipped by runtime
// guards inside unrolled loops; fewer instantiations keep nvcc time down).
inline int heads_bucket(int64_t H) { return H <= 1 ? 1 : H <= 4 ? 4 : H <= kMaxHeads ? 8 : 0; }

// Calls fn(std::integral_constant<int, MAXH>) for the smallest supported MAXH >= H.
template <typename Fn>
cudaError_t dispatch_heads(int64_t H, Fn&& fn) {
  switch (heads_bucket(H)) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    default: return cudaErrorInvalidValue;
  }
}

template <typename Kernel>
cudaError_t smem_ready(Kernel kernel, size_t slice) {
  return prepare_smem(kernel, slice * kWarpsPerBlock);
}

inline bool sizes_ok(int64_t H, int64_t D) {
  return H >= 1 && H <= kMaxHeads && D >= 1 && H * D <= (int64_t(1) << 20);
}

}  // namespace detail

// =========================================================================== launchers
template <typename T>
cudaError_t attention_diffusion_forward(const int64_t* rowptr, const int64_t* col, const T* q, const T* k,
                                        const T* x, T* out, T* lse, int64_t N, int64_t H, int64_t D, int64_t F,
                                        double scale, cudaStream_t stream) {
  using namespace detail;
  if (N <= 0) return cudaSuccess;
  if (!sizes_ok(H, D) || F < 0) return cudaErrorInvalidValue;
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const size_t slice = slice_bytes<T>(H * D + kWarp * MAXH);
    auto run = [&](auto kernel) -> cudaError_t {
      cudaError_t err = smem_ready(kernel, slice);
      if (err != cudaSuccess) return err;
      kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, stream>>>(
          rowptr, col, q, k, x, out, lse, N, static_cast<int>(H), static_cast<int>(D), F, static_cast<T>(scale),
          slice);
      return launch_status();
    };
    if (F <= kWarp) return run(ad_forward_kernel<T, MAXH, 1>);
    if (F <= 2 * kWarp) return run(ad_forward_kernel<T, MAXH, 2>);
    return run(ad_forward_kernel<T, MAXH, 4>);
  });
}

template <typename T>
cudaError_t attention_diffusion_backward(const T* grad_out, const T* lse, const int64_t* rowptr, const int64_t* col,
                                         const int64_t* csc_ptr, const int64_t* csc_row, const T* q, const T* k,
                                         const T* x, T* grad_q, T* grad_k, T* grad_x, T* dterm_workspace,
                                         int64_t N, int64_t H, int64_t D, int64_t F, double scale, bool need_qk,
                                         bool need_x, cudaStream_t stream) {
  using namespace detail;
  if (N <= 0 || !(need_qk || need_x)) return cudaSuccess;
  if (!sizes_ok(H, D) || F < 0) return cudaErrorInvalidValue;
  if ((need_qk && (!grad_q || !grad_k || !dterm_workspace)) || (need_x && !grad_x)) return cudaErrorInvalidValue;
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const int h = static_cast<int>(H), d = static_cast<int>(D);
    const T sc = static_cast<T>(scale);
    cudaError_t err;
    if (need_qk) {
      const size_t slice = slice_bytes<T>(2 * H * D + F + kWarp * MAXH);
      auto kernel = ad_backward_rows_kernel<T, MAXH>;
      if ((err = smem_ready(kernel, slice)) != cudaSuccess) return err;
      kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, stream>>>(
          grad_out, lse, rowptr, col, q, k, x, grad_q, dterm_workspace, N, h, d, F, sc, slice);
      if ((err = launch_status()) != cudaSuccess) return err;
    }
    const size_t slice = slice_bytes<T>(2 * H * D + 2 * F + kWarp * MAXH + kWarp);
    auto kernel = ad_backward_cols_kernel<T, MAXH>;
    if ((err = smem_ready(kernel, slice)) != cudaSuccess) return err;
    kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, stream>>>(
        grad_out, lse, csc_ptr, csc_row, q, k, x, dterm_workspace, grad_k, grad_x, N, h, d, F, sc, need_qk, need_x,
        slice);
    return launch_status();
  });
}

template <typename T>
cudaError_t edge_attention_forward(const int64_t* rowptr, const int64_t* col, const T* q, const T* k, T* attn,
                                   int64_t N, int64_t H, int64_t D, double scale, cudaStream_t stream) {
  using namespace detail;
  if (N <= 0) return cudaSuccess;
  if (!sizes_ok(H, D)) return cudaErrorInvalidValue;
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const size_t slice = slice_bytes<T>(H * D);
    auto kernel = ea_forward_kernel<T, MAXH>;
    cudaError_t err = smem_ready(kernel, slice);
    if (err != cudaSuccess) return err;
    kernel<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, stream>>>(
        rowptr, col, q, k, attn, N, static_cast<int>(H), static_cast<int>(D), static_cast<T>(scale), slice);
    return launch_status();
  });
}

template <typename T>
cudaError_t edge_attention_backward(const T* grad_attn, const T* attn, const int64_t* rowptr, const int64_t* col,
                                    const int64_t* csc_ptr, const int64_t* csc_row, const int64_t* csc_perm,
                                    const T* q, const T* k, T* grad_q, T* grad_k, T* dot_workspace, int64_t N,
                                    int64_t H, int64_t D, double scale, cudaStream_t stream) {
  using namespace detail;
  if (N <= 0) return cudaSuccess;
  if (!sizes_ok(H, D)) return cudaErrorInvalidValue;
  return dispatch_heads(H, [&](auto mh) -> cudaError_t {
    constexpr int MAXH = decltype(mh)::value;
    const int h = static_cast<int>(H), d = static_cast<int>(D);
    const T sc = static_cast<T>(scale);
    const size_t slice = slice_bytes<T>(H * D + kWarp * MAXH);
    cudaError_t err;
    auto rows = ea_backward_rows_kernel<T, MAXH>;
    if ((err = smem_ready(rows, slice)) != cudaSuccess) return err;
    rows<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, stream>>>(grad_attn, attn, rowptr, col, k, grad_q,
                                                                            dot_workspace, N, h, d, sc, slice);
    if ((err = launch_status()) != cudaSuccess) return err;
    auto cols = ea_backward_cols_kernel<T, MAXH>;
    if ((err = smem_ready(cols, slice)) != cudaSuccess) return err;
    cols<<<blocks_for_rows(N), kThreads, slice * kWarpsPerBlock, stream>>>(
        grad_attn, attn, csc_ptr, csc_row, csc_perm, q, dot_workspace, grad_k, N, h, d, sc, slice);
    return launch_status();
  });
}

#define GRAPHODE_INSTANTIATE_ATTENTION(T)                                                                          \
  template cudaError_t attention_diffusion_forward<T>(const int64_t*, const int64_t*, const T*, const T*,          \
                                                      const T*, T*, T*, int64_t, int64_t, int64_t, int64_t, double, \
                                                      cudaStream_t);                                               \
  template cudaError_t attention_diffusion_backward<T>(                                                            \
      const T*, const T*, const int64_t*, const int64_t*, const int64_t*, const int64_t*, const T*, const T*,      \
      const T*, T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t, double, bool, bool, cudaStream_t);             \
  template cudaError_t edge_attention_forward<T>(const int64_t*, const int64_t*, const T*, const T*, T*, int64_t,  \
                                                 int64_t, int64_t, double, cudaStream_t);                          \
  template cudaError_t edge_attention_backward<T>(const T*, const T*, const int64_t*, const int64_t*,              \
                                                  const int64_t*, const int64_t*, const int64_t*, const T*,        \
                                                  const T*, T*, T*, T*, int64_t, int64_t, int64_t, double,         \
                                                  cudaStream_t);

GRAPHODE_INSTANTIATE_ATTENTION(float)
GRAPHODE_INSTANTIATE_ATTENTION(double)
#undef GRAPHODE_INSTANTIATE_ATTENTION

}  // namespace cuda
}  // namespace graphode
