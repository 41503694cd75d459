"""Benchmarks of the graph ops on the CPU (pytest-benchmark; not part of `pytest tests/`).

    .venv/bin/python -m pytest bench/test_bench_ops.py --benchmark-only -q
    GRAPHODE_BENCH_REPORT=/tmp/ops.md ...   # also write the markdown table there

Side by side, in one run, on 2 threads (torch.set_num_threads(2); the
graphode kernels follow it):

* ``cpu``        graphode's C++/OpenMP kernels (torch.ops.graphode.*);
* ``composition`` the native-torch PyG recipe (gather -> scatter_reduce softmax
                 -> index_add_), which is exactly ``graphode.ops.reference``;
* ``sparse.mm``  ``torch.sparse.mm`` on a CSR tensor (spmm only; its fwd+bwd
                 differentiates x only: torch's gradient w.r.t. the CSR values
                 is a dense [N, N] tensor, 40 GB at N = 100k).

Graphs: a generated Cora-sized graph (2708 nodes, ~10.5k edges), a generated
PubMed-sized graph (19717 nodes, ~88.6k edges) and a power-law graph with
N = 100k, E ~ 1M (``graphode.power_law_graph``, with self loops).  H = 4,
D = 16, F = 64, float32.  Modes: ``fwd`` and ``fwd+bwd`` (gradients of all
float inputs: weight and x; q and k; q, k and x).

Every benchmark first checks its result (and gradients) against the
reference.  Reported per case:

* time: pytest-benchmark's statistics; the table gives min and median (on a
  shared machine the median includes preemption by other jobs, the min is
  closer to what the code does) and speed-ups of both, taken in the same run;
* peak extra memory: in a fresh subprocess per graph (``MALLOC_MMAP_THRESHOLD_``
  = 64 KiB so freed tensors go back to the OS), after building the inputs the
  kernel's peak-RSS counter is reset (``/proc/self/clear_refs``, "5") and the
  case is run once (every case ran once on a tiny graph first, so one-time
  runtime initialisation is not charged to the first one); extra = VmHWM - VmRSS before the run.  It counts every
  byte the op and autograd allocate (outputs, saved tensors, temporaries,
  gradients), but not the inputs;
* GB/s: compulsory bytes / time, where compulsory bytes = every input array
  read once plus every output written once (graph arrays, features, outputs,
  gradients).  The kernels really move more (each edge gathers a source row),
  so this is a lower bound on their bandwidth; it is the same byte count for
  every backend of an op, so GB/s ratios are speed ratios.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import graphode
from graphode import ops

torch.set_num_threads(2)
THREADS = 2
H, D, F = 4, 16, 64
DTYPE = torch.float32

try:
    import graphode.ops._native  # noqa: F401

    HAVE_CPU = True
except ImportError:  # pragma: no cover
    HAVE_CPU = False

SIZES = {
    # name: (builder source, rounds for the fast backends, rounds for the composition)
    "cora": ("graphode.power_law_graph(2708, 7950, seed=0)", 30, 10),  # 10,537 edges
    "pubmed": ("graphode.power_law_graph(19717, 69700, seed=1)", 15, 5),  # 88,627 edges
    "100k-1M": ("graphode.power_law_graph(100_000, 1_000_000, seed=0)", 5, 1),  # 1,080,760 edges
}

OPS = ("spmm", "edge_attention", "attention_diffusion")
BACKENDS = {"spmm": ("cpu", "composition", "sparse.mm"), "edge_attention": ("cpu", "composition"),
            "attention_diffusion": ("cpu", "composition")}
MODES = ("fwd", "fwd+bwd")

_graphs: dict = {}
_inputs: dict = {}
_truth: dict = {}
_memory: dict = {}
RESULTS: dict = {}


# --------------------------------------------------------------------------- inputs
def get_graph(size):
    if size not in _graphs:
        g = eval(SIZES[size][0], {"graphode": graphode})
        g.csr()  # build and cache the CSC arrays outside the timings
        _graphs[size] = g
    return _graphs[size]


def get_inputs(size):
    if size not in _inputs:
        g = get_graph(size)
        gen = torch.Generator().manual_seed(0)
        N, E = g.num_nodes, g.num_edges
        _inputs[size] = dict(
            q=torch.randn(N, H, D, generator=gen, dtype=DTYPE),
            k=torch.randn(N, H, D, generator=gen, dtype=DTYPE),
            x=torch.randn(N, F, generator=gen, dtype=DTYPE),
            w=torch.rand(E, generator=gen, dtype=DTYPE),
            gy=torch.randn(N, F, generator=gen, dtype=DTYPE),
            ga=torch.randn(E, H, generator=gen, dtype=DTYPE),
        )
    return _inputs[size]


def make_case(size, op, backend, mode):
    """A zero-argument callable running one (op, backend, mode), returning outputs."""
    g = get_graph(size)
    t = get_inputs(size)
    scale = 1.0 / D**0.5
    if op == "spmm":
        names, cot = ("w", "x"), t["gy"]
        if backend == "sparse.mm":
            # fwd+bwd: gradient w.r.t. x only (a fixed adjacency, as in GCN):
            # torch's backward w.r.t. the CSR values materialises a dense
            # [N, N] gradient (1.9 GB at PubMed size; 40 GB at 100k nodes).
            names = ("x",)
            A = torch.sparse_csr_tensor(g.rowptr, g.col, t["w"], size=(g.num_nodes, g.num_nodes))

            def fn(x):
                return torch.sparse.mm(A, x)
        else:
            be = "cpu" if backend == "cpu" else "reference"

            def fn(w, x):
                return ops.spmm(g, w, x, backend=be)
    elif op == "edge_attention":
        names, cot = ("q", "k"), t["ga"]
        be = "cpu" if backend == "cpu" else "reference"

        def fn(q, k):
            return ops.edge_attention(g, q, k, scale, backend=be)
    else:
        names, cot = ("q", "k", "x"), t["gy"]
        be = "cpu" if backend == "cpu" else "reference"

        def fn(q, k, x):
            return ops.attention_diffusion(g, q, k, x, scale, backend=be)

    if mode == "fwd":
        args = [t[n] for n in names]

        def run():
            with torch.no_grad():
                return (fn(*args),)
    else:
        args = [t[n].detach().requires_grad_(True) for n in names]

        def run():
            y = fn(*args)
            return (y.detach(), *torch.autograd.grad(y, args, cot))
    return run


def compulsory_bytes(size, op, mode):
    g = get_graph(size)
    N, E = g.num_nodes, g.num_edges
    b4, b8 = 4, 8
    csr = b8 * (N + 1 + E)
    csc = b8 * (N + 1 + 2 * E)
    qk, nf = 2 * b4 * N * H * D, b4 * N * F
    if op == "spmm":
        fwd = csr + b4 * E + 2 * nf
        bwd = nf + csr + csc + b4 * E + nf + b4 * E + nf
    elif op == "edge_attention":
        fwd = csr + qk + b4 * E * H
        bwd = 2 * b4 * E * H + csr + csc + qk + qk
    else:
        fwd = csr + qk + nf + nf + b4 * N * H
        bwd = nf + b4 * N * H + csr + csc + qk + nf + qk + nf
    return fwd if mode == "fwd" else fwd + bwd


def truth(size, op):
    """Reference outputs and gradients (computed once per graph and op)."""
    key = (size, op)
    if key not in _truth:
        _truth[key] = make_case(size, op, "composition", "fwd+bwd")()
    return _truth[key]


def check(size, op, mode, outs, backend):
    ref = truth(size, op)
    if backend == "sparse.mm" and mode == "fwd+bwd":
        ref = (ref[0], ref[2])  # output and grad x (no grad w, see make_case)
    for got, exp in zip(outs, ref):
        err = (got - exp).abs().max().item()
        tol = 1e-4 * max(1.0, exp.abs().max().item())
        assert err <= tol, f"{op} {size} {mode}: max abs error {err:.3e} > {tol:.3e}"


# --------------------------------------------------------------------------- memory (subprocess)
_MEM_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, torch
    sys.path.insert(0, {bench_dir!r})
    import test_bench_ops as B
    torch.set_num_threads({threads})
    size = {size!r}
    B.get_graph(size); B.get_inputs(size)
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    # Warm-up on a tiny graph: one-time initialisation (OpenMP and autograd
    # threads, lazy module state) must not be charged to the first case.
    B.SIZES["_warm"] = ("graphode.power_law_graph(300, 1000, seed=0)", 1, 1)
    for op, backends in B.BACKENDS.items():
        for backend in backends:
            if backend != "cpu" or B.HAVE_CPU:
                B.make_case("_warm", op, backend, "fwd+bwd")()
    gc.collect()
    out = {{}}
    for op, backends in B.BACKENDS.items():
        for backend in backends:
            if backend == "cpu" and not B.HAVE_CPU:
                continue
            run = B.make_case(size, op, backend, "fwd+bwd")
            gc.collect()
            before = status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            res = run()
            peak = status("VmHWM")
            del res
            out[op + "|" + backend] = peak - before
    print("MEM" + json.dumps(out))
    """
)


def peak_memory(size):
    """{op|backend: peak extra bytes of one fwd+bwd}, measured in a fresh subprocess."""
    if size not in _memory:
        script = _MEM_SCRIPT.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), threads=THREADS, size=size)
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(THREADS))
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("MEM")]
        _memory[size] = json.loads(line[0][3:]) if (p.returncode == 0 and line) else {"error": p.stderr[-2000:]}
    return _memory[size]


# --------------------------------------------------------------------------- benchmarks
CASES = [
    (size, op, backend, mode)
    for size in SIZES
    for op in OPS
    for backend in BACKENDS[op]
    for mode in MODES
]


@pytest.mark.parametrize(
    "size,op,backend,mode", CASES, ids=[f"{s}-{o}-{b}-{m}" for s, o, b, m in CASES]
)
def test_bench(benchmark, size, op, backend, mode):
    if backend == "cpu" and not HAVE_CPU:
        pytest.skip("graphode._C is not built")
    benchmark.group = f"{op} {mode} {size}"
    run = make_case(size, op, backend, mode)
    check(size, op, mode, run(), backend)  # correctness first (also a warm-up)
    rounds = SIZES[size][2] if backend == "composition" else SIZES[size][1]
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    median, tmin = benchmark.stats.stats.median, benchmark.stats.stats.min
    nbytes = compulsory_bytes(size, op, mode)
    g = get_graph(size)
    info = dict(
        nodes=g.num_nodes, edges=g.num_edges, threads=THREADS, median_s=median, min_s=tmin, rounds=rounds,
        gbps=nbytes / tmin / 1e9, compulsory_bytes=nbytes, loadavg_1min=os.getloadavg()[0],
    )
    if mode == "fwd+bwd":
        mem = peak_memory(size)
        info["peak_extra_bytes"] = mem.get(f"{op}|{backend}")
    benchmark.extra_info.update(info)
    RESULTS[(size, op, backend, mode)] = info


def _fmt_t(t):
    return f"{t * 1e3:,.2f} ms" if t < 0.01 else f"{t * 1e3:,.1f} ms" if t < 10 else f"{t:,.1f} s"


def _fmt_mem(b):
    return "n/a" if b is None else f"{b / 2**20:,.0f} MiB" if b >= 2**20 else f"{b / 2**10:,.0f} KiB"


def report() -> str:
    lines = []
    for size in SIZES:
        rows = [k for k in RESULTS if k[0] == size]
        if not rows:
            continue
        i0 = RESULTS[rows[0]]
        lines.append(f"\n#### {size}: N = {i0['nodes']:,}, E = {i0['edges']:,} (H={H}, D={D}, F={F}, float32, {THREADS} threads)\n")
        lines.append(
            "| op | mode | backend | min | median | GB/s (min) | peak extra mem (fwd+bwd) | cpu speed-up (min) "
            "| cpu speed-up (median) | mem ratio |"
        )
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for op in OPS:
            for mode in MODES:
                cpu = RESULTS.get((size, op, "cpu", mode))
                for backend in BACKENDS[op]:
                    r = RESULTS.get((size, op, backend, mode))
                    if r is None:
                        continue
                    t, tmed = r["min_s"], r["median_s"]
                    mem = r.get("peak_extra_bytes")
                    sp = spm = mr = ""
                    if cpu is not None and backend != "cpu":
                        sp = f"{t / cpu['min_s']:.1f}x"
                        spm = f"{tmed / cpu['median_s']:.1f}x"
                        cm = cpu.get("peak_extra_bytes")
                        if mem and cm:
                            mr = f"{mem / cm:.1f}x"
                    lines.append(
                        f"| {op} | {mode} | {backend} | {_fmt_t(t)} | {_fmt_t(tmed)} | {r['gbps']:.2f} | "
                        f"{_fmt_mem(mem) if mode == 'fwd+bwd' else ''} | {sp} | {spm} | {mr} |"
                    )
    return "\n".join(lines)


def test_zz_report(benchmark):
    """Prints (and with GRAPHODE_BENCH_REPORT=path writes) the markdown tables.
    (Takes the benchmark fixture only so that --benchmark-only runs it.)"""
    benchmark.group = "zz report"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    if not RESULTS:
        pytest.skip("no benchmark ran")
    text = report()
    loads = [r["loadavg_1min"] for r in RESULTS.values()]
    head = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{THREADS} threads, OMP_DYNAMIC={os.environ.get('OMP_DYNAMIC', 'unset')}, 1-min load average "
        f"{min(loads):.1f}-{max(loads):.1f} during the run; "
        "`python -m pytest bench/test_bench_ops.py --benchmark-only -q`\n"
    )
    print("\n" + head + text)
    path = os.environ.get("GRAPHODE_BENCH_REPORT")
    if path:
        with open(path, "w") as f:
            f.write(head + text + "\n")
