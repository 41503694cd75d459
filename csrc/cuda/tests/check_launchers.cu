// Standalone check of the raw CUDA launchers (no torch): runs every launcher
// of csrc/cuda/<op>_cuda.h on small graphs and compares with plain CPU loops
// in double precision.  Exit status 0 when everything matches, 1 on a
// mismatch, 2 on a CUDA error (e.g. no device).
//
//   nvcc -std=c++17 -O2 -arch=sm_80 -I csrc csrc/cuda/tests/check_launchers.cu \
//        csrc/cuda/*_cuda.cu -o check_launchers && ./check_launchers
//
// The graph has self loops, nodes without in-edges, a target with more
// in-edges than a warp has lanes and a source with more out-edges than that,
// so every kernel walks several 32-edge blocks; the shapes cover H in
// {1, 3, 4, 8}, D and F that are not powers of two, and F > 128 (several
// feature tiles in the forward).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

#include "cuda/attention_diffusion_cuda.h"
#include "cuda/edge_attention_cuda.h"
#include "cuda/spmm_cuda.h"

namespace gc = graphode::cuda;

#define CHECK_CUDA(expr)                                                                              \
  do {                                                                                                \
    cudaError_t err_ = (expr);                                                                        \
    if (err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #expr, __FILE__, __LINE__, cudaGetErrorString(err_)); \
      std::exit(2);                                                                                   \
    }                                                                                                 \
  } while (0)

struct Graph {
  int64_t N = 0, E = 0;
  std::vector<int64_t> rowptr, col, csc_ptr, csc_row, csc_perm;
};

Graph make_graph(int64_t N, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<std::pair<int64_t, int64_t>> edges;  // (target, source)
  const int64_t with_in = N - 10;                  // the last 10 nodes get no in-edges
  std::uniform_int_distribution<int64_t> any(0, N - 1), tgt(0, with_in - 1);
  for (int64_t i = 0; i < 4 * N; ++i) edges.push_back({tgt(gen), any(gen)});
  for (int64_t i = 0; i < with_in; i += 3) edges.push_back({i, i});  // self loops
  for (int64_t j = 0; j < N; ++j) edges.push_back({0, j});           // hub target: N in-edges
  for (int64_t i = 0; i < with_in; ++i) edges.push_back({i, 1});     // hub source
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  Graph g;
  g.N = N;
  g.E = static_cast<int64_t>(edges.size());
  g.rowptr.assign(N + 1, 0);
  for (auto& e : edges) {
    g.rowptr[e.first + 1]++;
    g.col.push_back(e.second);
  }
  for (int64_t i = 0; i < N; ++i) g.rowptr[i + 1] += g.rowptr[i];
  std::vector<int64_t> perm(g.E);
  for (int64_t e = 0; e < g.E; ++e) perm[e] = e;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return g.col[a] < g.col[b]; });
  g.csc_ptr.assign(N + 1, 0);
  for (int64_t e = 0; e < g.E; ++e) g.csc_ptr[g.col[e] + 1]++;
  for (int64_t i = 0; i < N; ++i) g.csc_ptr[i + 1] += g.csc_ptr[i];
  for (int64_t p = 0; p < g.E; ++p) {
    g.csc_perm.push_back(perm[p]);
    g.csc_row.push_back(edges[perm[p]].first);
  }
  return g;
}

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    if (n) CHECK_CUDA(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit Dev(size_t count) : n(count) {
    CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    CHECK_CUDA(cudaMemset(p, 0xff, std::max<size_t>(n, 1) * sizeof(T)));  // NaN garbage: every entry must be written
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    if (n) CHECK_CUDA(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

int failures = 0;

template <typename T>
void compare(const char* what, const std::vector<T>& got, const std::vector<double>& want, double tol) {
  double worst = 0;
  size_t bad = got.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double g = static_cast<double>(got[i]), w = want[i];
    if (std::isinf(w) && std::isinf(g) && (w < 0) == (g < 0)) continue;
    const double err = std::fabs(g - w) / (1.0 + std::fabs(w));
    if (!(err <= tol)) ++bad;
    if (err > worst || std::isnan(err)) worst = std::isnan(err) ? INFINITY : err;
  }
  std::printf("  %-34s max rel err %.3e  %s\n", what, worst, bad ? "FAIL" : "ok");
  if (bad) ++failures;
}

template <typename T>
void run_case(const Graph& g, int64_t H, int64_t D, int64_t F, double tol, unsigned seed) {
  const int64_t N = g.N, E = g.E, HD = H * D;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd;
  auto randv = [&](size_t n) {
    std::vector<T> v(n);
    for (auto& a : v) a = static_cast<T>(nd(gen));
    return v;
  };
  std::vector<T> q = randv(N * HD), k = randv(N * HD), x = randv(N * F), w = randv(E), gy = randv(N * F),
                 ga = randv(E * H);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::printf("%s H=%lld D=%lld F=%lld (N=%lld, E=%lld)\n", sizeof(T) == 4 ? "float " : "double",
              (long long)H, (long long)D, (long long)F, (long long)N, (long long)E);

  Dev<int64_t> rowptr(g.rowptr), col(g.col), csc_ptr(g.csc_ptr), csc_row(g.csc_row), csc_perm(g.csc_perm);
  Dev<T> dq(q), dk(k), dx(x), dw(w), dgy(gy), dga(ga);
  graphode::GraphView gv;
  gv.rowptr = rowptr.p;
  gv.col = col.p;
  gv.csc_ptr = csc_ptr.p;
  gv.csc_row = csc_row.p;
  gv.csc_perm = csc_perm.p;
  gv.num_nodes = N;
  gv.num_edges = E;
  const gc::Context ctx{};  // the default stream

  // ---- CPU references (double)
  std::vector<double> y_ref(N * F, 0), gx_ref(N * F, 0), gw_ref(E, 0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) {
      const int64_t j = g.col[e];
      double dot = 0;
      for (int64_t f = 0; f < F; ++f) {
        y_ref[i * F + f] += double(w[e]) * x[j * F + f];
        gx_ref[j * F + f] += double(w[e]) * gy[i * F + f];
        dot += double(gy[i * F + f]) * x[j * F + f];
      }
      gw_ref[e] = dot;
    }
  std::vector<double> s(E * H), a(E * H), lse(N * H, -INFINITY);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t h = 0; h < H; ++h) {
      double m = -INFINITY, l = 0;
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) {
        double d = 0;
        for (int64_t c = 0; c < D; ++c) d += double(q[i * HD + h * D + c]) * k[g.col[e] * HD + h * D + c];
        s[e * H + h] = d * scale;
        m = std::max(m, d * scale);
      }
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) l += std::exp(s[e * H + h] - m);
      if (l > 0) lse[i * H + h] = m + std::log(l);
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) a[e * H + h] = std::exp(s[e * H + h] - lse[i * H + h]);
    }
  // attention diffusion forward / backward
  std::vector<double> out_ref(N * F, 0), gq_ref(N * HD, 0), gk_ref(N * HD, 0), gxa_ref(N * F, 0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) {
      const int64_t j = g.col[e];
      double abar = 0;
      for (int64_t h = 0; h < H; ++h) abar += a[e * H + h] / H;
      for (int64_t f = 0; f < F; ++f) {
        out_ref[i * F + f] += abar * x[j * F + f];
        gxa_ref[j * F + f] += abar * gy[i * F + f];
      }
    }
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> Dv(H, 0);
    std::vector<double> t(g.rowptr[i + 1] - g.rowptr[i]);
    for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) {
      double tt = 0;
      for (int64_t f = 0; f < F; ++f) tt += double(gy[i * F + f]) * x[g.col[e] * F + f];
      t[e - g.rowptr[i]] = tt;
      for (int64_t h = 0; h < H; ++h) Dv[h] += a[e * H + h] * tt / H;
    }
    for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) {
      const int64_t j = g.col[e];
      for (int64_t h = 0; h < H; ++h) {
        const double ds = a[e * H + h] * (t[e - g.rowptr[i]] / H - Dv[h]);
        for (int64_t c = 0; c < D; ++c) {
          gq_ref[i * HD + h * D + c] += scale * ds * k[j * HD + h * D + c];
          gk_ref[j * HD + h * D + c] += scale * ds * q[i * HD + h * D + c];
        }
      }
    }
  }
  // edge attention backward
  std::vector<double> eq_ref(N * HD, 0), ek_ref(N * HD, 0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t h = 0; h < H; ++h) {
      double dot = 0;
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) dot += a[e * H + h] * ga[e * H + h];
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) {
        const double ds = a[e * H + h] * (ga[e * H + h] - dot);
        for (int64_t c = 0; c < D; ++c) {
          eq_ref[i * HD + h * D + c] += scale * ds * k[g.col[e] * HD + h * D + c];
          ek_ref[g.col[e] * HD + h * D + c] += scale * ds * q[i * HD + h * D + c];
        }
      }
    }

  // ---- launchers
  {
    Dev<T> y(N * F), gx(N * F), gw(E);
    CHECK_CUDA(gc::spmm_forward<T>(gv, dw.p, dx.p, F, y.p, ctx));
    CHECK_CUDA(gc::spmm_backward<T>(gv, dgy.p, dw.p, dx.p, F, gw.p, gx.p, ctx));
    CHECK_CUDA(cudaDeviceSynchronize());
    compare("spmm forward", y.host(), y_ref, tol);
    compare("spmm grad_x", gx.host(), gx_ref, tol);
    compare("spmm grad_w", gw.host(), gw_ref, tol);
  }
  {
    Dev<T> attn(E * H), gq(N * HD), gk(N * HD);
    CHECK_CUDA(gc::edge_attention_forward<T>(gv, dq.p, dk.p, H, D, scale, attn.p, ctx));
    CHECK_CUDA(gc::edge_attention_backward<T>(gv, dga.p, attn.p, dq.p, dk.p, H, D, scale, gq.p, gk.p, ctx));
    CHECK_CUDA(cudaDeviceSynchronize());
    compare("edge_attention forward", attn.host(), a, tol);
    compare("edge_attention grad_q", gq.host(), eq_ref, tol);
    compare("edge_attention grad_k", gk.host(), ek_ref, tol);
  }
  {
    Dev<T> out(N * F), dl(N * H), gq(N * HD), gk(N * HD), gx(N * F);
    CHECK_CUDA(gc::attention_diffusion_forward<T>(gv, dq.p, dk.p, dx.p, H, D, F, scale, out.p, dl.p, ctx));
    CHECK_CUDA(gc::attention_diffusion_backward<T>(gv, dgy.p, dl.p, dq.p, dk.p, dx.p, H, D, F, scale, gq.p, gk.p,
                                                   gx.p, ctx));
    CHECK_CUDA(cudaDeviceSynchronize());
    compare("attention_diffusion forward", out.host(), out_ref, tol);
    compare("attention_diffusion lse", dl.host(), lse, tol);
    compare("attention_diffusion grad_q", gq.host(), gq_ref, tol);
    compare("attention_diffusion grad_k", gk.host(), gk_ref, tol);
    compare("attention_diffusion grad_x", gx.host(), gxa_ref, tol);
    Dev<T> gx_only(N * F);  // grad_x only: no grad_q/grad_k pointers
    CHECK_CUDA(gc::attention_diffusion_backward<T>(gv, dgy.p, dl.p, dq.p, dk.p, dx.p, H, D, F, scale, nullptr,
                                                   nullptr, gx_only.p, ctx));
    CHECK_CUDA(cudaDeviceSynchronize());
    compare("attention_diffusion grad_x only", gx_only.host(), gxa_ref, tol);
  }
  // unsupported sizes are reported, not run
  if (gc::attention_diffusion_forward<T>(gv, dq.p, dk.p, dx.p, gc::kMaxHeads + 1, 1, F, scale, nullptr, nullptr,
                                         ctx) != cudaErrorInvalidValue) {
    std::printf("  H > kMaxHeads was not rejected  FAIL\n");
    ++failures;
  }
}

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 2;
  }
  const Graph g = make_graph(70, 1);
  struct Shape {
    int64_t H, D, F;
  };
  for (Shape sh : {Shape{1, 3, 5}, Shape{3, 5, 70}, Shape{4, 16, 160}, Shape{8, 7, 33}}) {
    run_case<float>(g, sh.H, sh.D, sh.F, 2e-4, 7);
    run_case<double>(g, sh.H, sh.D, sh.F, 1e-10, 7);
  }
  std::printf(failures ? "FAILED: %d comparisons\n" : "all launchers match the CPU loops\n", failures);
  return failures ? 1 : 0;
}
