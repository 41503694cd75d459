"""GPU benchmarks of the graph kernels (pytest-benchmark): graphode "triton" and
"cuda" side by side with the reference composition (gather -> scatter_reduce
softmax -> index_add_, the PyG recipe) and, for spmm, ``torch.sparse.mm`` on CSR.

Only meaningful on CUDA: the module is skipped without a CUDA device.

Run:  python -m pytest bench/test_bench_triton.py --benchmark-only -q
      (--benchmark-json out.json keeps the figures in extra_info)

Size: a power-law graph with N = 100k nodes and E ~ 1M edges (plus self
loops), H = 4 heads, D = 16, F = 64, float32.  Each case is timed twice:
pytest-benchmark's wall clock around a synchronised call, and
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs) whose median
goes to ``extra_info["do_bench_ms"]`` together with the achieved bandwidth
``extra_info["GB/s"]``.

Bandwidth model ("useful bytes", the same for every implementation of an op, so
the GB/s are comparable): each index and node row read once, each *gathered*
neighbour row counted once per edge (E * F and E * H * D values; no credit for
cache reuse), each output written once.  fwd+bwd adds the backward's passes
as the fused kernels run them (the attention backward recomputes the scores:
one row pass with two sweeps and one transposed pass).
"""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("GPU benchmarks: torch.cuda.is_available() is False", allow_module_level=True)

triton = pytest.importorskip("triton", reason="the timing uses triton.testing.do_bench")
from triton.testing import do_bench  # noqa: E402

from graphode import ops, power_law_graph  # noqa: E402
from graphode.ops import reference as ref  # noqa: E402

N, E, H, D, F = 100_000, 1_000_000, 4, 16, 64
DTYPE = torch.float32
IDX = 8  # bytes per int64 index


@pytest.fixture(scope="module")
def data():
    g = power_law_graph(N, E, seed=0, device="cuda")
    g.csc_ptr  # build and cache the transpose outside the timings
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, e = g.num_nodes, g.num_edges
    d = {
        "g": g,
        "x": torch.randn(n, F, device="cuda", dtype=DTYPE, generator=gen),
        "w": torch.rand(e, device="cuda", dtype=DTYPE, generator=gen),
        "q": torch.randn(n, H, D, device="cuda", dtype=DTYPE, generator=gen),
        "k": torch.randn(n, H, D, device="cuda", dtype=DTYPE, generator=gen),
        "gy": torch.randn(n, F, device="cuda", dtype=DTYPE, generator=gen),
    }
    d["A"] = torch.sparse_csr_tensor(g.rowptr, g.col, d["w"], size=(n, n))
    if "triton" in ops.available_backends():
        import graphode.kernels as K

        K.graph_args(g)  # build and cache the split plans outside the timings
        if K.INTERPRET:
            pytest.skip("TRITON_INTERPRET=1 in this process: the Triton timings would be the interpreter's")
    return d


def _bytes(op: str, mode: str, g) -> float:
    n, e, s = g.num_nodes, g.num_edges, torch.finfo(DTYPE).bits // 8
    graph = (n + 1 + e) * IDX
    if op == "spmm":
        fwd = graph + e * s + e * F * s + n * F * s
        if mode == "fwd":
            return fwd
        grad_x = (n + 1 + 2 * e) * IDX + e * s + e * F * s + n * F * s  # CSC walk, w via csc_perm
        grad_w = graph + n * F * s + e * F * s + e * s  # SDDMM
        return fwd + grad_x + grad_w
    HD = H * D
    fwd = graph + n * HD * s + e * HD * s + e * F * s + n * F * s + n * H * 4
    if mode == "fwd":
        return fwd
    rows = graph + 2 * n * HD * s + n * F * s + n * H * 4 + 2 * (e * HD * s + e * F * s) + n * H * 4
    cols = (n + 1 + e) * IDX + 2 * n * HD * s + 2 * n * F * s + e * (HD * s + 2 * F * s + 2 * H * 4)
    return fwd + rows + cols


def _case(d, impl: str, op: str, mode: str):
    """A zero-argument callable running one case, or a skip reason."""
    g, x, w, q, k, gy = d["g"], d["x"], d["w"], d["q"], d["k"], d["gy"]
    need_grad = mode == "fwd+bwd"
    if impl in ("triton", "cuda"):
        if impl not in ops.available_backends():
            return f"backend {impl!r} is not available here"
        if op == "spmm":
            def f(xx, ww):
                return ops.spmm(g, ww, xx, backend=impl)
        else:
            def f(qq, kk, xx):
                return ops.attention_diffusion(g, qq, kk, xx, backend=impl)
    elif impl == "reference":
        if op == "spmm":
            def f(xx, ww):
                return ref.spmm(g, ww, xx)
        else:
            def f(qq, kk, xx):
                return ref.attention_diffusion(g, qq, kk, xx, 0.25)
    elif impl == "torch.sparse":
        if op != "spmm":
            return "torch.sparse.mm has no attention"
        A = d["A"]

        def f(xx, ww):  # gradient w.r.t. x only: sparse CSR values do not get one here
            return torch.sparse.mm(A, xx)
    else:  # pragma: no cover
        raise ValueError(impl)

    if op == "spmm":
        inputs = [x.clone().requires_grad_(need_grad), w.clone().requires_grad_(need_grad and impl != "torch.sparse")]
    else:
        inputs = [q.clone().requires_grad_(need_grad), k.clone().requires_grad_(need_grad),
                  x.clone().requires_grad_(need_grad)]
    if not need_grad:
        def run():
            with torch.no_grad():
                return f(*inputs)
        return run
    diff = [t for t in inputs if t.requires_grad]

    def run():
        y = f(*inputs)
        return torch.autograd.grad(y, diff, gy)
    return run


IMPLS = ["triton", "cuda", "reference", "torch.sparse"]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("op", ["spmm", "attention_diffusion"])
@pytest.mark.parametrize("impl", IMPLS)
def test_bench_gpu(benchmark, data, impl, op, mode):
    run = _case(data, impl, op, mode)
    if isinstance(run, str):
        pytest.skip(run)
    benchmark.group = f"{op} {mode} (N=100k, E~1M, H={H}, D={D}, F={F})"
    run()  # compile / warm up
    torch.cuda.synchronize()
    ms = do_bench(run, warmup=25, rep=200)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    gbs = _bytes(op, mode, data["g"]) / (ms * 1e-3) / 1e9

    def timed():
        run()
        torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=20, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update({
        "impl": impl,
        "do_bench_ms": round(ms, 4),
        "GB/s": round(gbs, 1),
        "peak_extra_MB": round(extra / 2**20, 1),
        "num_edges": data["g"].num_edges,
        "device": torch.cuda.get_device_name(),
    })
    print(f"\n{impl:>13} {op} {mode}: {ms:.3f} ms, {gbs:.0f} GB/s, +{extra / 2**20:.0f} MB")
