"""GPU benchmarks of the graph ops: graphode's ``triton`` and ``cuda`` backends
against the peers of ``bench/peers.py`` (the composition, ``torch.sparse.mm``
with the prebuilt transpose, PyG softmax + CSR ``sparse.mm``, the GRAND authors'
formulation), on one CUDA device.  Skipped cleanly without one.

    python -m pytest bench/test_bench_gpu.py --benchmark-only -q      # or: make bench-gpu

Size: a power-law graph with N = 100k nodes and E ~ 1M edges (plus self
loops), H = 4, D = 16, F = 64, float32 (``GRAPHODE_BENCH_SIZE=smoke``: 2k
nodes, 20k edges).  Modes ``fwd`` / ``bwd`` (the forward runs outside the
timing, then ``torch.autograd.grad(..., retain_graph=True)``) / ``full``.

Every case first checks its outputs and gradients against the reference
(relative 1e-3: the GPU kernels reduce in another order).  Timing, the same for
every provider: ``triton.testing.do_bench`` (CUDA events, L2 flushed between
runs, every sample synchronised), the median of its samples; all samples go to
pytest-benchmark.  Memory: ``max_memory_allocated`` after
``reset_peak_memory_stats``, minus what was allocated before.  Bandwidth: the
byte model shared with the CPU benches (``_benchutil.op_bytes``: streamed arrays
plus the neighbour rows gathered once per edge) over the median time, against
the device's gather bandwidth for this graph (``_benchutil.gather_gbps``), its
triad and its nominal peak.
"""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("GPU benchmarks: torch.cuda.is_available() is False", allow_module_level=True)

triton = pytest.importorskip("triton", reason="the timing uses triton.testing.do_bench")
from triton.testing import do_bench  # noqa: E402

import _benchutil as bu  # noqa: E402
import peers  # noqa: E402
from graphode import ops, power_law_graph  # noqa: E402

N, E = bu.pick((100_000, 1_000_000), (2_000, 20_000))
H, D, F = 4, 16, 64
SCALE = 1.0 / D**0.5
DTYPE = torch.float32
OPS = ("spmm", "edge_attention", "attention_diffusion")
GRAPHODE = {"graphode-triton": "triton", "graphode-cuda": "cuda"}
MODES = ("fwd", "bwd", "full")

#: nominal HBM/GDDR bandwidth (GB/s) by device-name substring, first match wins
NOMINAL_GBPS = [("H200", 4800), ("H100 PCIe", 2000), ("H100", 3350), ("GH200", 4000), ("A100-SXM4-80GB", 2039),
                ("A100 80GB PCIe", 1935), ("A100", 1555), ("L40S", 864), ("L40", 864), ("L4", 300), ("A10G", 600),
                ("A10", 600), ("V100", 900), ("T4", 320), ("RTX 4090", 1008), ("RTX 3090", 936)]


def nominal_peak_gbps(name: str):
    return next((v for k, v in NOMINAL_GBPS if k in name), None)


@pytest.fixture(scope="module")
def device_bw(data):
    n = 1 << 26
    b, c = torch.rand(n, device="cuda"), torch.rand(n, device="cuda")
    a = torch.empty_like(b)
    ms = do_bench(lambda: torch.add(b, c, alpha=3.0, out=a), warmup=25, rep=100, return_mode="median")
    name = torch.cuda.get_device_name()
    info = dict(device=name, device_triad_gbps=3 * n * 4 / (ms * 1e-3) / 1e9, nominal_gbps=nominal_peak_gbps(name),
                gather_gbps=bu.gather_gbps(data["g"], F))
    bu.META.update(gpu=info)
    return info


@pytest.fixture(scope="module")
def data():
    g = power_law_graph(N, E, seed=0, device="cuda")
    g.csr()  # build and cache the transpose outside the timings
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, e = g.num_nodes, g.num_edges
    d = {
        "g": g,
        "x": torch.randn(n, F, device="cuda", dtype=DTYPE, generator=gen),
        "w": torch.rand(e, device="cuda", dtype=DTYPE, generator=gen),
        "q": torch.randn(n, H, D, device="cuda", dtype=DTYPE, generator=gen),
        "k": torch.randn(n, H, D, device="cuda", dtype=DTYPE, generator=gen),
        "gy": torch.randn(n, F, device="cuda", dtype=DTYPE, generator=gen),
        "ga": torch.randn(e, H, device="cuda", dtype=DTYPE, generator=gen),
    }
    if "triton" in ops.available_backends():
        import graphode.kernels as K

        K.graph_args(g)  # build and cache the split plans outside the timings
        if K.INTERPRET:
            pytest.skip("TRITON_INTERPRET=1 in this process: the Triton timings would be the interpreter's")
    return d


def _case(d, provider, op, mode):
    """(run, prepare) or a skip reason."""
    if provider in GRAPHODE:
        if GRAPHODE[provider] not in ops.available_backends():
            return f"backend {GRAPHODE[provider]!r} is not available here"
        fn, names = peers.make_op(op, "graphode", d["g"], SCALE, backend=GRAPHODE[provider])
    else:
        fn, names = peers.make_op(op, provider, d["g"], SCALE)
    cot = d["ga"] if op == "edge_attention" else d["gy"]
    return bu.mode_runner(fn, [d[n] for n in names], cot, mode)


_truth: dict = {}


def _expected(d, op, mode):
    if op not in _truth:
        _truth[op] = _case(d, "composition", op, "full")[0]()
    t = _truth[op]
    return {"fwd": t[:1], "bwd": t[1:], "full": t}[mode]


CASES = [(p, op, mode) for op in OPS for mode in MODES for p in tuple(GRAPHODE) + peers.PEERS[op]]


@pytest.mark.parametrize("provider,op,mode", CASES, ids=[f"{o}-{m}-{p}" for p, o, m in CASES])
def test_bench_gpu(benchmark, data, device_bw, provider, op, mode):
    case = _case(data, provider, op, mode)
    if isinstance(case, str):
        pytest.skip(case)
    run, prepare = case
    benchmark.group = f"GPU {op} {mode} (N={N:,}, E~{E:,}, H={H}, D={D}, F={F})"
    if prepare:
        prepare()
    err = bu.check_close(run(), _expected(data, op, mode), rtol=1e-3, what=f"{provider} {op} {mode}")  # first
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    g = data["g"]
    row = dict(provider=provider, op=op, mode=mode, nodes=g.num_nodes, edges=g.num_edges, H=H, D=D, F=F,
               max_rel_err=err, peak_extra_bytes=extra, bytes=bu.op_bytes(op, mode, g.num_nodes, g.num_edges, H, D, F),
               gather_gbps=device_bw["gather_gbps"], device=device_bw["device"], timed=bu.benchmarking(benchmark),
               size="gpu")
    if bu.benchmarking(benchmark):
        times_ms = do_bench(run, warmup=25, rep=200, return_mode="all")
        torch.cuda.synchronize()
        ts = sorted(t * 1e-3 for t in times_ms)
        bu.record_external(benchmark, ts)
        row.update(median_s=ts[len(ts) // 2], min_s=ts[0], rounds=len(ts))
    benchmark.extra_info.update(row)
    REPORT.add(**row)


REPORT = bu.Report("gpu", "Graph ops on the GPU: graphode triton and cuda vs the peers",
                   command="python -m pytest bench/test_bench_gpu.py --benchmark-only", N=N, E=E, H=H, D=D, F=F)
