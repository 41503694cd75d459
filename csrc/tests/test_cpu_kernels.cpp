// C++ tests of the CPU kernels (csrc/cpu/<op>_cpu.h), without torch.
//
// * forward of every kernel against naive double-precision loops that
//   materialise the per-edge scores (the definitions);
// * backward of the float64 kernels against central finite differences of
//   those naive forwards (directional derivatives of <g, op(...)>), so the
//   test does not trust any hand-derived gradient formula;
// * float32 kernels against float64 kernels; 1 and 2 threads bitwise equal;
// * invalid graph arrays give the documented status codes, never a crash.
//
// Graphs: random, with self loops, isolated nodes (no in-edges) and one hub
// row longer than the kernels' row block (several online-softmax blocks).
// H in {1, 3}, D = 5, F = 7 (not multiples of any vector width), and H = 4,
// D = 16, F = 64 (whole vectors).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention_diffusion_cpu.h"
#include "cpu/edge_attention_cpu.h"
#include "cpu/spmm_cpu.h"

using namespace graphode;
using namespace graphode::cpu;
using Vec = std::vector<double>;

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond, ...)                                      \
  do {                                                        \
    ++g_checks;                                               \
    if (!(cond)) {                                            \
      ++g_failures;                                           \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::printf(__VA_ARGS__);                               \
      std::printf("\n");                                      \
    }                                                         \
  } while (0)

// ------------------------------------------------------------------ graph
struct Graph {
  int64_t N = 0;
  std::vector<int64_t> rowptr, col, row, csc_ptr, csc_row, csc_perm;
  int64_t E() const { return int64_t(col.size()); }
  GraphView view() const {
    GraphView g;
    g.rowptr = rowptr.data();
    g.col = col.data();
    g.csc_ptr = csc_ptr.data();
    g.csc_row = csc_row.data();
    g.csc_perm = csc_perm.data();
    g.num_nodes = N;
    g.num_edges = E();
    return g;
  }
};

// Random duplicate-free graph: each node i (except `isolated`) gets a random
// number of distinct in-edges, node `hub` gets hub_deg of them; even nodes
// have a self loop.
static Graph make_graph(int64_t N, int max_deg, int64_t hub, int64_t hub_deg, std::vector<int64_t> isolated,
                        unsigned seed) {
  std::mt19937_64 rng(seed);
  Graph g;
  g.N = N;
  g.rowptr.assign(N + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    std::vector<char> used(N, 0);
    std::vector<int64_t> srcs;
    bool iso = false;
    for (auto v : isolated) iso |= v == i;
    if (!iso) {
      int64_t d = i == hub ? hub_deg : int64_t(rng() % (max_deg + 1));
      if (i % 2 == 0) {
        used[i] = 1;
        srcs.push_back(i);
      }
      while (int64_t(srcs.size()) < std::min(d, N)) {
        int64_t j = int64_t(rng() % N);
        if (!used[j]) {
          used[j] = 1;
          srcs.push_back(j);
        }
      }
      std::sort(srcs.begin(), srcs.end());
    }
    for (auto j : srcs) {
      g.col.push_back(j);
      g.row.push_back(i);
    }
    g.rowptr[i + 1] = int64_t(g.col.size());
  }
  // CSC: stable counting sort by source
  const int64_t E = g.E();
  g.csc_ptr.assign(N + 1, 0);
  for (auto j : g.col) g.csc_ptr[j + 1]++;
  for (int64_t j = 0; j < N; ++j) g.csc_ptr[j + 1] += g.csc_ptr[j];
  std::vector<int64_t> pos(g.csc_ptr.begin(), g.csc_ptr.end() - 1);
  g.csc_row.assign(E, 0);
  g.csc_perm.assign(E, 0);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t p = pos[g.col[e]]++;
    g.csc_row[p] = g.row[e];
    g.csc_perm[p] = e;
  }
  return g;
}

static Vec randn(size_t n, unsigned seed, double s = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  Vec v(n);
  for (auto& a : v) a = s * nd(rng);
  return v;
}

template <class T>
static std::vector<T> cast(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}

static double max_rel_err(const Vec& a, const Vec& b) {
  double err = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

template <class T>
static Vec to_d(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

// ------------------------------------------------------------------ naive definitions (double)
static Vec naive_spmm(const Graph& g, const Vec& w, const Vec& x, int64_t F) {
  Vec y(g.N * F, 0.0);
  for (int64_t e = 0; e < g.E(); ++e)
    for (int64_t f = 0; f < F; ++f) y[g.row[e] * F + f] += w[e] * x[g.col[e] * F + f];
  return y;
}

static Vec naive_attention(const Graph& g, const Vec& q, const Vec& k, int64_t H, int64_t D, double scale) {
  const int64_t E = g.E();
  Vec s(E * H), a(E * H);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t h = 0; h < H; ++h) {
      double v = 0;
      for (int64_t d = 0; d < D; ++d) v += q[(g.row[e] * H + h) * D + d] * k[(g.col[e] * H + h) * D + d];
      s[e * H + h] = scale * v;
    }
  for (int64_t i = 0; i < g.N; ++i)
    for (int64_t h = 0; h < H; ++h) {
      double m = -INFINITY, l = 0;
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) m = std::max(m, s[e * H + h]);
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) l += std::exp(s[e * H + h] - m);
      for (int64_t e = g.rowptr[i]; e < g.rowptr[i + 1]; ++e) a[e * H + h] = std::exp(s[e * H + h] - m) / l;
    }
  return a;
}

static Vec naive_diffusion(const Graph& g, const Vec& q, const Vec& k, const Vec& x, int64_t H, int64_t D, int64_t F,
                           double scale) {
  Vec a = naive_attention(g, q, k, H, D, scale), c(g.E(), 0.0);
  for (int64_t e = 0; e < g.E(); ++e)
    for (int64_t h = 0; h < H; ++h) c[e] += a[e * H + h] / double(H);
  return naive_spmm(g, c, x, F);
}

static double inner(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// <grad, v> against (L(p + eps v) - L(p - eps v)) / (2 eps) with L(p) = <g, f(p)>.
static void check_fd(const char* what, const std::function<Vec(const Vec&)>& f, const Vec& p, const Vec& g,
                     const Vec& grad, unsigned seed) {
  const Vec v = randn(p.size(), seed);
  const double eps = 1e-5;
  Vec pp(p), pm(p);
  for (size_t i = 0; i < p.size(); ++i) {
    pp[i] += eps * v[i];
    pm[i] -= eps * v[i];
  }
  const double fd = (inner(g, f(pp)) - inner(g, f(pm))) / (2 * eps);
  const double an = inner(grad, v);
  CHECK(std::fabs(fd - an) <= 1e-6 * std::max(1.0, std::fabs(fd)), "%s: finite difference %.12g vs analytic %.12g",
        what, fd, an);
}

// ------------------------------------------------------------------ one configuration
struct Case {
  const char* name;
  Graph g;
  int64_t H, D, F;
};

template <class T>
struct Outputs {
  std::vector<T> y, gw, gx, attn, eq, ek, out, lse, gq, gk, gxd;
};

template <class T>
static Outputs<T> run_all(const Case& c, const Vec& q_, const Vec& k_, const Vec& x_, const Vec& w_, const Vec& gy_,
                          const Vec& ga_, double scale, int nthreads) {
  const Graph& g = c.g;
  const int64_t N = g.N, E = g.E(), H = c.H, D = c.D, F = c.F;
  auto q = cast<T>(q_), k = cast<T>(k_), x = cast<T>(x_), w = cast<T>(w_), gy = cast<T>(gy_), ga = cast<T>(ga_);
  Outputs<T> o;
  o.y.assign(N * F, T(-7));  // garbage: kernels must overwrite every entry
  o.gw.assign(E, T(-7));
  o.gx.assign(N * F, T(-7));
  o.attn.assign(E * H, T(-7));
  o.eq.assign(N * H * D, T(-7));
  o.ek.assign(N * H * D, T(-7));
  o.out.assign(N * F, T(-7));
  o.lse.assign(N * H, T(-7));
  o.gq.assign(N * H * D, T(-7));
  o.gk.assign(N * H * D, T(-7));
  o.gxd.assign(N * F, T(-7));
  const GraphView gv = g.view();
  CHECK(spmm_forward<T>(gv, w.data(), x.data(), F, o.y.data(), nthreads) == kOk, "%s", c.name);
  CHECK(spmm_backward<T>(gv, gy.data(), w.data(), x.data(), F, o.gw.data(), o.gx.data(), nthreads) == kOk, "%s",
        c.name);
  CHECK(edge_attention_forward<T>(gv, q.data(), k.data(), H, D, scale, o.attn.data(), nthreads) == kOk, "%s",
        c.name);
  CHECK(edge_attention_backward<T>(gv, ga.data(), o.attn.data(), q.data(), k.data(), H, D, scale, o.eq.data(),
                                   o.ek.data(), nthreads) == kOk,
        "%s", c.name);
  CHECK(attention_diffusion_forward<T>(gv, q.data(), k.data(), x.data(), H, D, F, scale, o.out.data(),
                                       o.lse.data(), nthreads) == kOk,
        "%s", c.name);
  CHECK(attention_diffusion_backward<T>(gv, gy.data(), o.lse.data(), q.data(), k.data(), x.data(), H, D, F, scale,
                                        o.gq.data(), o.gk.data(), o.gxd.data(), nthreads) == kOk,
        "%s", c.name);
  return o;
}

static void test_case(const Case& c, unsigned seed) {
  const Graph& g = c.g;
  const int64_t N = g.N, E = g.E(), H = c.H, D = c.D, F = c.F;
  const double scale = 0.6;
  const Vec q = randn(N * H * D, seed + 1), k = randn(N * H * D, seed + 2), x = randn(N * F, seed + 3),
            w = randn(E, seed + 4), gy = randn(N * F, seed + 5), ga = randn(E * H, seed + 6);

  auto od = run_all<double>(c, q, k, x, w, gy, ga, scale, 2);
  // ---- forwards against the definitions
  CHECK(max_rel_err(od.y, naive_spmm(g, w, x, F)) < 1e-12, "%s spmm forward", c.name);
  const Vec a_ref = naive_attention(g, q, k, H, D, scale);
  CHECK(max_rel_err(od.attn, a_ref) < 1e-12, "%s edge_attention forward", c.name);
  CHECK(max_rel_err(od.out, naive_diffusion(g, q, k, x, H, D, F, scale)) < 1e-12, "%s diffusion forward", c.name);
  for (int64_t i = 0; i < N; ++i) {
    const bool empty = g.rowptr[i] == g.rowptr[i + 1];
    for (int64_t h = 0; h < H && empty; ++h) CHECK(std::isinf(od.lse[i * H + h]) && od.lse[i * H + h] < 0, "lse");
    for (int64_t f = 0; f < F && empty; ++f) CHECK(od.out[i * F + f] == 0.0 && od.y[i * F + f] == 0.0, "empty row");
  }
  // ---- backwards against finite differences of the definitions
  check_fd("spmm grad_w", [&](const Vec& p) { return naive_spmm(g, p, x, F); }, w, gy, od.gw, seed + 10);
  check_fd("spmm grad_x", [&](const Vec& p) { return naive_spmm(g, w, p, F); }, x, gy, od.gx, seed + 11);
  check_fd("edge_attention grad_q", [&](const Vec& p) { return naive_attention(g, p, k, H, D, scale); }, q, ga,
           od.eq, seed + 12);
  check_fd("edge_attention grad_k", [&](const Vec& p) { return naive_attention(g, q, p, H, D, scale); }, k, ga,
           od.ek, seed + 13);
  check_fd("diffusion grad_q", [&](const Vec& p) { return naive_diffusion(g, p, k, x, H, D, F, scale); }, q, gy,
           od.gq, seed + 14);
  check_fd("diffusion grad_k", [&](const Vec& p) { return naive_diffusion(g, q, p, x, H, D, F, scale); }, k, gy,
           od.gk, seed + 15);
  check_fd("diffusion grad_x", [&](const Vec& p) { return naive_diffusion(g, q, k, p, H, D, F, scale); }, x, gy,
           od.gxd, seed + 16);

  // ---- float32 against float64, and thread-count independence
  auto of = run_all<float>(c, q, k, x, w, gy, ga, scale, 2);
  auto of1 = run_all<float>(c, q, k, x, w, gy, ga, scale, 1);
  const double tol = 2e-5;
  CHECK(max_rel_err(to_d(of.y), od.y) < tol, "%s f32 spmm", c.name);
  CHECK(max_rel_err(to_d(of.gw), od.gw) < tol, "%s f32 spmm grad_w", c.name);
  CHECK(max_rel_err(to_d(of.gx), od.gx) < tol, "%s f32 spmm grad_x", c.name);
  CHECK(max_rel_err(to_d(of.attn), od.attn) < tol, "%s f32 attention", c.name);
  CHECK(max_rel_err(to_d(of.out), od.out) < tol, "%s f32 diffusion", c.name);
  CHECK(max_rel_err(to_d(of.gq), od.gq) < tol, "%s f32 diffusion grad_q", c.name);
  CHECK(max_rel_err(to_d(of.gk), od.gk) < tol, "%s f32 diffusion grad_k", c.name);
  CHECK(max_rel_err(to_d(of.gxd), od.gxd) < tol, "%s f32 diffusion grad_x", c.name);
  CHECK(of.out == of1.out && of.gq == of1.gq && of.gk == of1.gk && of.gxd == of1.gxd && of.y == of1.y &&
            of.gx == of1.gx && of.attn == of1.attn && of.ek == of1.ek,
        "%s: results differ between 1 and 2 threads", c.name);
}

// ------------------------------------------------------------------ invalid input
static void test_errors() {
  Graph g = make_graph(30, 4, 2, 10, {5}, 99);
  const int64_t N = g.N, E = g.E(), F = 3, H = 2, D = 2;
  std::vector<float> x(N * F, 1.f), w(E, 1.f), y(N * F), q(N * H * D, 1.f), out(N * F), lse(N * H), gx(N * F),
      gq(N * H * D), gk(N * H * D), attn(E * H);
  {
    Graph b = g;
    b.col[3] = N;  // out of range
    CHECK(spmm_forward<float>(b.view(), w.data(), x.data(), F, y.data()) == kBadCol, "bad col");
    CHECK(attention_diffusion_forward<float>(b.view(), q.data(), q.data(), x.data(), H, D, F, 1.0, out.data(),
                                             lse.data()) == kBadCol,
          "bad col (diffusion)");
    b.col[3] = -1;
    CHECK(edge_attention_forward<float>(b.view(), q.data(), q.data(), H, D, 1.0, attn.data()) == kBadCol,
          "negative col");
  }
  {
    Graph b = g;
    b.rowptr[N] = E + 5;
    CHECK(spmm_forward<float>(b.view(), w.data(), x.data(), F, y.data()) == kBadRowptr, "rowptr end");
    b = g;
    b.rowptr[4] = b.rowptr[6] + 1;  // decreasing
    CHECK(spmm_forward<float>(b.view(), w.data(), x.data(), F, y.data()) == kBadRowptr, "rowptr order");
    b = g;
    b.csc_ptr[0] = 1;
    CHECK(spmm_backward<float>(b.view(), x.data(), w.data(), x.data(), F, nullptr, gx.data()) == kBadCscPtr,
          "csc_ptr");
  }
  {
    Graph b = g;
    b.csc_perm[0] = E;
    CHECK(spmm_backward<float>(b.view(), x.data(), w.data(), x.data(), F, nullptr, gx.data()) == kBadCscPerm,
          "csc_perm");
    b = g;
    b.csc_row[1] = 1000;
    CHECK(attention_diffusion_backward<float>(b.view(), x.data(), lse.data(), q.data(), q.data(), x.data(), H, D, F,
                                              1.0, gq.data(), gk.data(), gx.data()) == kBadCscRow,
          "csc_row");
  }
  CHECK(std::string(status_message(kBadCol)).find("col") != std::string::npos, "message");
}

static void test_exp() {
  // exp_vec(float) against libm on [-90, 0] (what the kernels feed it) and edge cases
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -90.0f * float(i) / 200000.0f;
    const double ref = std::exp(double(x));
    const float got = exp_scalar(x);
    if (ref > 1.2e-38) worst = std::max(worst, std::fabs(got - ref) / ref);
  }
  CHECK(worst < 3e-7, "exp_vec max rel error %.3g", worst);
  CHECK(exp_scalar(-INFINITY) == 0.0f, "exp(-inf)");
  CHECK(exp_scalar(-1000.0f) == 0.0f, "exp(-1000)");
  CHECK(exp_scalar(0.0f) == 1.0f, "exp(0)");
  CHECK(std::isnan(exp_scalar(NAN)), "exp(nan)");
}

int main() {
  // Run every parallel path even on these small graphs (the production cutoff
  // would keep them on one thread).
  serial_work_threshold() = 0;
  test_exp();
  test_errors();
  std::vector<Case> cases;
  cases.push_back({"small H=1 D=5 F=7", make_graph(40, 4, -1, 0, {0, 7, 39}, 1), 1, 5, 7});
  cases.push_back({"hub H=3 D=5 F=7", make_graph(700, 3, 3, 600, {5, 17}, 2), 3, 5, 7});
  cases.push_back({"hub H=4 D=16 F=64", make_graph(700, 3, 10, 650, {1}, 3), 4, 16, 64});
  cases.push_back({"dense H=2 D=8 F=33", make_graph(120, 60, -1, 0, {}, 4), 2, 8, 33});
  unsigned seed = 100;
  for (const auto& c : cases) test_case(c, seed += 100);
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
