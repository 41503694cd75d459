"""GPU benchmarks of the graph kernels: graphode ``triton`` and ``cuda`` side by
side with the composition (``graphode.ops.reference``: gather ->
``scatter_reduce`` softmax -> ``index_add_``, the PyG recipe) and, for spmm,
``torch.sparse.mm`` on CSR.  Skipped cleanly without a CUDA device.

    python -m pytest bench/test_bench_triton.py --benchmark-only -q

Size: a power-law graph with N = 100k nodes and E ~ 1M edges (plus self
loops), H = 4 heads, D = 16, F = 64, float32 (``GRAPHODE_BENCH_SIZE=smoke``:
2k nodes, 20k edges).  Modes ``fwd`` / ``bwd`` (the forward runs outside the
timing, then ``torch.autograd.grad(..., retain_graph=True)``) / ``full``.

Every case first checks its outputs and gradients against the reference
(relative 1e-3: the GPU kernels reduce in another order).  Timing:
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs, every
sample synchronised); all its samples go to pytest-benchmark (so the saved
JSON and ``--benchmark-compare`` see them).  Memory: ``max_memory_allocated``
after ``reset_peak_memory_stats``, minus what was allocated before.

Bandwidth ("useful bytes", the same for every provider of an op): each index
and node row read once, each *gathered* neighbour row counted once per edge
(E * F and E * H * D values; no credit for cache reuse), each output written
once; the backward adds the passes the fused kernels make (the attention
backward recomputes the scores: one row pass with two sweeps and one
transposed pass).  Reported as GB/s, as a fraction of the device's nominal
HBM peak (a table of known devices) and of a measured device triad
``a = b + s*c``.
"""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("GPU benchmarks: torch.cuda.is_available() is False", allow_module_level=True)

triton = pytest.importorskip("triton", reason="the timing uses triton.testing.do_bench")
from triton.testing import do_bench  # noqa: E402

from graphode import _benchutil as bu  # noqa: E402
from graphode import ops, power_law_graph  # noqa: E402

N, E = bu.pick((100_000, 1_000_000), (2_000, 20_000))
H, D, F = 4, 16, 64
DTYPE = torch.float32
IDX = 8  # bytes per int64 index
IMPLS = ("triton", "cuda", "reference", "torch.sparse")
MODES = ("fwd", "bwd", "full")

#: nominal HBM/GDDR bandwidth (GB/s) by device-name substring, first match wins
NOMINAL_GBPS = [("H200", 4800), ("H100 PCIe", 2000), ("H100", 3350), ("GH200", 4000), ("A100-SXM4-80GB", 2039),
                ("A100 80GB PCIe", 1935), ("A100", 1555), ("L40S", 864), ("L40", 864), ("L4", 300), ("A10G", 600),
                ("A10", 600), ("V100", 900), ("T4", 320), ("RTX 4090", 1008), ("RTX 3090", 936)]


def nominal_peak_gbps(name: str):
    return next((v for k, v in NOMINAL_GBPS if k in name), None)


@pytest.fixture(scope="module")
def device_bw():
    n = 1 << 26
    b, c = torch.rand(n, device="cuda"), torch.rand(n, device="cuda")
    a = torch.empty_like(b)
    ms = do_bench(lambda: torch.add(b, c, alpha=3.0, out=a), warmup=25, rep=100, return_mode="median")
    name = torch.cuda.get_device_name()
    info = dict(device=name, triad_gbps=3 * n * 4 / (ms * 1e-3) / 1e9, nominal_gbps=nominal_peak_gbps(name))
    bu.META.update(gpu=info)
    return info


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


def useful_bytes(op: str, mode: str, g) -> float:
    n, e, s = g.num_nodes, g.num_edges, torch.finfo(DTYPE).bits // 8
    graph = (n + 1 + e) * IDX
    if op == "spmm":
        fwd = graph + e * s + e * F * s + n * F * s
        grad_x = (n + 1 + 2 * e) * IDX + e * s + e * F * s + n * F * s  # CSC walk, w via csc_perm
        grad_w = graph + n * F * s + e * F * s + e * s  # SDDMM
        bwd = grad_x + grad_w
    else:
        HD = H * D
        fwd = graph + n * HD * s + e * HD * s + e * F * s + n * F * s + n * H * 4
        rows = graph + 2 * n * HD * s + n * F * s + n * H * 4 + 2 * (e * HD * s + e * F * s) + n * H * 4
        cols = (n + 1 + e) * IDX + 2 * n * HD * s + 2 * n * F * s + e * (HD * s + 2 * F * s + 2 * H * 4)
        bwd = rows + cols
    return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


def _fn(d, impl, op):
    """The op as a function of its differentiable inputs (names), or a skip reason."""
    g = d["g"]
    if impl in ("triton", "cuda"):
        if impl not in ops.available_backends():
            return f"backend {impl!r} is not available here"
        be = impl
    elif impl == "reference":
        be = "reference"
    else:  # torch.sparse
        if op != "spmm":
            return "torch.sparse.mm has no attention"
        A = d["A"]
        return (lambda x: torch.sparse.mm(A, x)), ("x",)  # gradient w.r.t. x only
    if op == "spmm":
        return (lambda x, w: ops.spmm(g, w, x, backend=be)), ("x", "w")
    return (lambda q, k, x: ops.attention_diffusion(g, q, k, x, 0.25, backend=be)), ("q", "k", "x")


def _case(d, impl, op, mode):
    """(run, prepare, input names) or a skip reason."""
    got = _fn(d, impl, op)
    if isinstance(got, str):
        return got
    f, names = got
    if mode == "fwd":
        args = [d[n] for n in names]

        def run():
            with torch.no_grad():
                return (f(*args),)

        return run, None, names
    args = [d[n].clone().requires_grad_(True) for n in names]
    if mode == "full":
        def run():
            y = f(*args)
            return (y.detach(), *torch.autograd.grad(y, args, d["gy"]))

        return run, None, names
    state = {}

    def prepare():
        state["y"] = f(*args)

    def run():
        return torch.autograd.grad(state["y"], args, d["gy"], retain_graph=True)

    return run, prepare, names


_truth: dict = {}


def _expected(d, op, mode, names):
    if op not in _truth:
        run, _, ref_names = _case(d, "reference", op, "full")
        out = run()
        _truth[op] = {"y": out[0], **dict(zip(ref_names, out[1:]))}
    t = _truth[op]
    return {"fwd": [t["y"]], "bwd": [t[n] for n in names], "full": [t["y"]] + [t[n] for n in names]}[mode]


CASES = [(impl, op, mode) for op in ("spmm", "attention_diffusion") for mode in MODES for impl in IMPLS]


@pytest.mark.parametrize("impl,op,mode", CASES, ids=[f"{o}-{m}-{i}" for i, o, m in CASES])
def test_bench_gpu(benchmark, data, device_bw, impl, op, mode):
    case = _case(data, impl, op, mode)
    if isinstance(case, str):
        pytest.skip(case)
    run, prepare, names = case
    benchmark.group = f"GPU {op} {mode} (N={N:,}, E~{E:,}, H={H}, D={D}, F={F})"
    if prepare:
        prepare()
    bu.check_close(run(), _expected(data, op, mode, names), rtol=1e-3, what=f"{impl} {op} {mode}")  # first
    torch.cuda.synchronize()
    times_ms = do_bench(run, warmup=25, rep=200, return_mode="all")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    ms = sorted(times_ms)[len(times_ms) // 2]
    gbs = useful_bytes(op, mode, data["g"]) / (ms * 1e-3) / 1e9
    bu.record_external(benchmark, [t * 1e-3 for t in times_ms])
    info = dict(impl=impl, op=op, mode=mode, median_ms=ms, min_ms=min(times_ms), gbps=gbs,
                fraction_of_nominal=gbs / device_bw["nominal_gbps"] if device_bw["nominal_gbps"] else None,
                fraction_of_triad=gbs / device_bw["triad_gbps"], peak_extra_bytes=extra,
                nodes=data["g"].num_nodes, edges=data["g"].num_edges, device=device_bw["device"])
    benchmark.extra_info.update(info)
    REPORT.add(**info)


def render(rows, meta):
    gpu = meta.get("gpu", {})
    head = (f"{gpu.get('device', '?')}: device triad {gpu.get('triad_gbps', 0):.0f} GB/s, nominal peak "
            f"{gpu.get('nominal_gbps') or '?'} GB/s.  N = {rows[0]['nodes']:,}, E = {rows[0]['edges']:,}, "
            f"H={H}, D={D}, F={F}, float32; times are do_bench medians.\n\n")
    table = []
    for r in rows:
        fn = r.get("fraction_of_nominal")
        table.append([r["op"], r["mode"], r["impl"], f"{r['median_ms']:.3f} ms", f"{r['gbps']:.0f}",
                      f"{100 * fn:.0f}%" if fn else "n/a", f"{100 * r['fraction_of_triad']:.0f}%",
                      bu.fmt_bytes(r["peak_extra_bytes"])])
    return head + bu.markdown_table(["op", "mode", "provider", "median", "GB/s", "% of nominal peak",
                                     "% of device triad", "peak extra mem"], table,
                                    right=[False, False, False, True, True, True, True, True])


REPORT = bu.Report("gpu", "Graph ops on the GPU: triton and cuda vs the composition and torch.sparse.mm", render,
                   command="python -m pytest bench/test_bench_triton.py --benchmark-only")
