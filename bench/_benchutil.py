"""Shared machinery of the benchmark suite (``bench/``, ``make bench``) and of
``graphode bench --quick`` (``bench/_bench_quick.py``).  Lives in the checkout,
not in the installed package.

What lives here, once:

* timing: :func:`measure` (the one timing rule of the suite: the caller's
  correctness run is the warm-up, then ``rounds`` timed calls, the median is
  the statistic; nothing is timed under ``--benchmark-disable``),
  :func:`time_calls`, :func:`summarize`, :func:`best_time`;
* bandwidth: :func:`stream_triad_gbps` (a STREAM-like triad ``a = b + s*c``),
  :func:`gather_gbps` (a row gather in a graph's column order) and the one byte
  model of the graph ops, :func:`op_bytes`, shared by the CPU and GPU benches;
  :func:`machine_info` for report headers;
* correctness: :func:`check_close` (every benchmark compares its results with
  the reference before it is timed);
* peak memory: :class:`PeakRSS` (in-process, resets the kernel's high-water
  mark through ``/proc/self/clear_refs``) and :func:`run_worker`, which runs a
  benchmark function in a fresh subprocess under an address-space limit
  (``RLIMIT_AS``) and a timeout, so that an out-of-memory case fails with an
  allocation error (reported as ``"oom"``) instead of waking the machine's OOM
  killer, and a slow one is reported as ``"timeout"``;
* the size switch: ``GRAPHODE_BENCH_SIZE=smoke`` makes every bench file use its
  smallest sizes and rounds (:func:`smoke`);
* results: :class:`Report` collects rows during a pytest run; the bench
  conftest writes each report as ``bench/results/<name>.json`` (the raw rows and
  the run's facts; ``GRAPHODE_BENCH_RESULTS`` overrides the directory) when the
  session ends, and ``bench/report.py`` renders them (terminal, bench/README.md,
  docs/RESULTS.md through ``docs/generate.py``);
* cached benchmark graphs: :func:`power_law_graph_cached` (generating a
  10M-edge graph takes ~20 s; workers load it from disk instead).

Subprocess workers: ``run_worker("path/to/file.py:function", kwargs)`` runs
``function(emit, **kwargs)`` in ``python bench/_benchutil.py``; the function
reports results with ``emit({...})`` (one JSON line each, so that what was
measured before a crash or a timeout is kept).
"""
from __future__ import annotations

import datetime as _dt
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

HERE = os.path.dirname(os.path.abspath(__file__))  # bench/
ROOT = os.path.dirname(HERE)  # the repository root
_MARK = "@@GRAPHODE_BENCH "
_DONE = "@@GRAPHODE_BENCH_DONE"


# --------------------------------------------------------------------------- sizes
def bench_size() -> str:
    """``GRAPHODE_BENCH_SIZE``: ``"full"`` (default) or ``"smoke"`` (smallest sizes, for the test suite)."""
    s = os.environ.get("GRAPHODE_BENCH_SIZE", "full").strip().lower() or "full"
    if s not in ("full", "smoke"):
        raise ValueError(f"GRAPHODE_BENCH_SIZE must be 'full' or 'smoke', got {s!r}")
    return s


def smoke() -> bool:
    return bench_size() == "smoke"


def pick(full, smoke_value):
    """``full`` normally, ``smoke_value`` under ``GRAPHODE_BENCH_SIZE=smoke``."""
    return smoke_value if smoke() else full


# --------------------------------------------------------------------------- timing
def best_time(fn: Callable[[], object], repeat: int = 5, min_time: float = 0.2) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeat`` rounds (each >= one call;
    short calls are repeated within a round up to ``min_time / repeat``)."""
    fn()  # warm-up
    best = math.inf
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time / repeat or n >= 50:
                break
        best = min(best, dt / n)
    return best


def time_calls(fn: Callable[[], object], rounds: int) -> List[float]:
    """Wall time of each of ``rounds`` calls of ``fn()`` (no warm-up)."""
    out = []
    for _ in range(max(0, rounds)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summarize(times: Sequence[float]) -> Dict[str, Any]:
    ts = sorted(times)
    if not ts:
        return {"rounds": 0}
    n = len(ts)
    med = ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])
    return {"min_s": ts[0], "median_s": med, "mean_s": sum(ts) / n, "max_s": ts[-1], "rounds": n}


def benchmarking(benchmark) -> bool:
    """False under ``--benchmark-disable`` (or without the fixture): run each case once, time nothing."""
    return benchmark is not None and not getattr(benchmark, "disabled", False)


def mode_runner(fn: Callable, inputs: Sequence[torch.Tensor], cot: torch.Tensor, mode: str):
    """``(run, prepare)`` of one op call ``fn(*inputs)`` in ``mode``: ``fwd`` (under
    ``no_grad``), ``full`` (forward + gradients of all ``inputs`` for the cotangent ``cot``)
    or ``bwd`` (``prepare()`` runs the forward outside the timing, ``run()`` only the
    backward, ``retain_graph=True``).  ``run()`` returns the outputs (forward output and/or
    gradients in input order); ``prepare`` is None outside ``bwd``."""
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return (fn(*inputs),)

        return run, None
    args = [t.detach().requires_grad_(True) for t in inputs]
    if mode == "full":
        def run():
            y = fn(*args)
            return (y.detach(), *torch.autograd.grad(y, args, cot))

        return run, None
    state = {}

    def prepare():
        state["y"] = fn(*args)

    def run():
        return torch.autograd.grad(state["y"], args, cot, retain_graph=True)

    return run, prepare


def measure(benchmark, run: Callable[[], object], rounds: int) -> Optional[Dict[str, Any]]:
    """The suite's one timing rule, the same for graphode and every peer: the caller has
    already run ``run()`` once (its correctness check, which is also the warm-up); then
    ``rounds`` calls are timed one by one and summarised (:func:`summarize`: the median
    is the statistic of every ratio).  The times also go to pytest-benchmark (its table,
    saved JSON and ``--benchmark-compare``).  Returns None, timing nothing, under
    ``--benchmark-disable``."""
    if not benchmarking(benchmark):
        return None
    times = time_calls(run, rounds)
    record_external(benchmark, times)
    return dict(summarize(times), times_s=times)


def record_external(benchmark, times: Sequence[float]) -> None:
    """Give pytest-benchmark round times measured elsewhere (a subprocess worker),
    so that they appear in its table, its saved JSON and ``--benchmark-compare``.
    Uses pytest-benchmark's internal ``_make_stats`` (5.x); without it, the
    figures stay in ``extra_info`` only."""
    if not benchmarking(benchmark) or not times:
        return
    make = getattr(benchmark, "_make_stats", None)
    if make is None or getattr(benchmark, "_mode", None):
        benchmark.extra_info["external_times_s"] = list(times)
        return
    benchmark._mode = "external (subprocess worker)"
    stats = make(1)
    for t in times:
        stats.update(t)


# --------------------------------------------------------------------------- bandwidth
def stream_triad_gbps(n: int = 1 << 24, dtype=torch.float32, repeat: int = 5, min_time: float = 0.5) -> float:
    """Memory bandwidth (GB/s) of ``a = b + s*c`` on ``n``-element arrays (3 streams:
    2 reads + 1 write; ``torch.add(out=)`` writes in place, no allocation), on the
    current ``torch.get_num_threads()`` threads.  The default ``n`` (64 MiB per
    array) is well beyond the last-level cache."""
    b = torch.rand(n, dtype=dtype)
    c = torch.rand(n, dtype=dtype)
    a = torch.empty(n, dtype=dtype)
    t = best_time(lambda: torch.add(b, c, alpha=3.0, out=a), repeat=repeat, min_time=min_time)
    return 3 * n * b.element_size() / t / 1e9


def gather_gbps(g, F: int = 64, dtype=torch.float32, repeat: int = 5, min_time: float = 0.2) -> float:
    """Bandwidth (GB/s) of the access pattern the graph ops are bound by: gather the
    ``[N, F]`` rows of a node array in the graph's CSR column order
    (``torch.index_select`` into a preallocated ``[E, F]`` buffer; bytes = rows read +
    rows written), on the current threads and device.  The "gather limit" of an op is
    its :func:`op_bytes` moved at this bandwidth."""
    x = torch.randn(g.num_nodes, F, dtype=dtype, device=g.device)
    out = torch.empty(g.num_edges, F, dtype=dtype, device=g.device)
    col = g.col
    if x.is_cuda:  # pragma: no cover - GPU
        from triton.testing import do_bench

        t = do_bench(lambda: torch.index_select(x, 0, col, out=out), warmup=10, rep=50, return_mode="median") * 1e-3
    else:
        t = best_time(lambda: torch.index_select(x, 0, col, out=out), repeat=repeat, min_time=min_time)
    return 2 * g.num_edges * F * x.element_size() / t / 1e9


def op_bytes(op: str, mode: str, num_nodes: int, num_edges: int, H: int = 4, D: int = 16, F: int = 64,
             value_bytes: int = 4, index_bytes: int = 8) -> Dict[str, int]:
    """The byte model of one graph op, shared by the CPU and GPU benchmarks: what the
    fused design must move at the least, the same count for every provider of an op
    (so GB/s ratios are speed ratios).  ``{"stream": ..., "gather": ..., "total": ...}``:

    * ``stream``: arrays read or written once in order (CSR / CSC arrays, node arrays
      of the row being computed, outputs, per-edge values);
    * ``gather``: the neighbour rows gathered once per edge (``E * F`` for ``x`` or a
      gradient row, ``E * H * D`` for ``k`` or ``q``, ``E * H`` for per-node softmax
      statistics gathered along the transpose).  No credit for cache reuse.

    The backward (``bwd``) computes every gradient from the forward's saved state: a
    row pass over the CSR (gradients of the row-side inputs, edge values) and a column
    pass over the CSC transpose (gradients of the gathered inputs), as graphode's
    kernels do.  ``mode``: ``fwd``, ``bwd`` or ``full`` (= fwd + bwd)."""
    N, E, b, i = num_nodes, num_edges, value_bytes, index_bytes
    csr = i * (N + 1 + E)
    csc = i * (N + 1 + 2 * E)  # colptr, row ids, the permutation to CSR edge ids
    HD = H * D
    if op == "spmm":
        fwd = (csr + b * E + b * N * F, b * E * F)  # w, y; x rows
        # grad_x = A^T gy (CSC, w by perm, gy rows); grad_w = <gy_i, x_j> over the CSR (x rows)
        bwd = (csc + b * E + b * N * F + csr + b * N * F + b * E, b * E * F + b * E * F)
    elif op == "edge_attention":
        fwd = (csr + b * N * HD + b * E * H, b * E * HD)  # q, a; k rows
        # row pass: a, ga, grad_q (k rows); column pass: ds by perm, grad_k (q rows)
        bwd = (csr + 2 * b * E * H + b * N * HD + csc + b * N * HD, b * E * HD + b * E * H + b * E * HD)
    elif op == "attention_diffusion":
        fwd = (csr + b * N * HD + b * N * F + b * N * H, b * E * (HD + F))  # q, y, lse; k and x rows
        # row pass: q, gy, lse, delta, grad_q (k, x rows); column pass: k, grad_k, grad_x (q, gy rows,
        # lse and delta of the target)
        bwd = (csr + b * N * HD + b * N * F + 2 * b * N * H + b * N * HD + csc + b * N * HD + b * N * HD + b * N * F,
               b * E * (HD + F) + b * E * (HD + F + 2 * H))
    else:
        raise ValueError(f"unknown op {op!r}")
    if mode not in ("fwd", "bwd", "full"):
        raise ValueError(f"unknown mode {mode!r}")
    stream = {"fwd": fwd[0], "bwd": bwd[0], "full": fwd[0] + bwd[0]}[mode]
    gather = {"fwd": fwd[1], "bwd": bwd[1], "full": fwd[1] + bwd[1]}[mode]
    return {"stream": stream, "gather": gather, "total": stream + gather}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _proc_kib(path: str, key: str) -> Optional[int]:
    """The ``key:`` entry (given in kB) of a ``/proc`` key-value file, in bytes; None if absent."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _meminfo(key: str) -> Optional[int]:
    return _proc_kib("/proc/meminfo", key)


def machine_info() -> Dict[str, Any]:
    """Date, CPU, memory, torch and backends, for report headers."""
    from graphode import ops

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "mem_total_gb": round((_meminfo("MemTotal") or 0) / 2**30, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backends": list(ops.available_backends()),
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "bench_size": bench_size(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git": git_revision(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def git_revision() -> Optional[str]:
    """``<commit>`` of the checkout, with ``+dirty`` when tracked files differ from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- correctness
def check_close(got, expected, rtol: float = 1e-4, what: str = "") -> float:
    """Assert that tensors (or sequences of tensors) agree: max abs error <=
    ``rtol * max(1, max |expected|)`` for each pair.  Returns the largest
    relative error seen."""
    if isinstance(got, torch.Tensor):
        got, expected = (got,), (expected,)
    got, expected = tuple(got), tuple(expected)
    assert len(got) == len(expected), f"{what}: {len(got)} results, reference has {len(expected)}"
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, f"{what} [{i}]: shape {tuple(a.shape)} != reference {tuple(b.shape)}"
        a, b = a.detach().double(), b.detach().double()
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        err = (a - b).abs().max().item() if b.numel() else 0.0
        assert err <= rtol * scale, f"{what} [{i}]: max abs error {err:.3e} > {rtol * scale:.3e}"
        worst = max(worst, err / scale)
    return worst


# --------------------------------------------------------------------------- memory
def proc_status(key: str) -> Optional[int]:
    """A ``/proc/self/status`` entry in bytes (``VmRSS``, ``VmHWM``, ``VmPeak``...)."""
    return _proc_kib("/proc/self/status", key)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory of a block: ``with PeakRSS() as m: ...``, then
    ``m.extra`` (bytes above the RSS at entry) and ``m.peak`` (the process's
    peak RSS during the block).  Resets the kernel's high-water mark
    (``/proc/self/clear_refs`` <- 5) at entry; where that is not possible the
    peak is the process lifetime's (``ru_maxrss``) and ``m.exact`` is False.
    Freed memory only leaves the RSS if the allocator returns it: run workers
    with ``MALLOC_MMAP_THRESHOLD_`` small (:func:`run_worker` does)."""

    def __enter__(self):
        release_memory()
        self.before = proc_status("VmRSS") or 0
        self.exact = _reset_hwm()
        return self

    def __exit__(self, *exc):
        hwm = proc_status("VmHWM") if self.exact else None
        self.peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.extra = max(0, self.peak - self.before)
        return False


def set_malloc_mmap_threshold(nbytes: int) -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, nbytes)`` (and ``M_TRIM_THRESHOLD`` = 2x):
    small (64 KiB, as :func:`run_worker` starts its processes) for memory runs, so
    freed tensors leave the RSS and :class:`PeakRSS` sees each case's own peak;
    32 MiB (what glibc's dynamic threshold grows to) for timed runs, so that
    allocations are not page-faulted afresh on every call.  False where not glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, int(nbytes)) == 1  # M_MMAP_THRESHOLD
        libc.mallopt(-1, int(2 * nbytes))  # M_TRIM_THRESHOLD
        return ok
    except (OSError, AttributeError):
        return False


def release_memory() -> None:
    """``gc.collect()`` and glibc ``malloc_trim(0)``: return freed heap memory to
    the OS, so that the next block's peak is not hidden by reused free memory."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_limit_bytes(requested_gb: Optional[float] = None, headroom_gb: float = 2.0) -> int:
    """Address-space limit for memory-hungry workers: ``GRAPHODE_BENCH_MEM_LIMIT_GB``
    (default 16 GB), capped at what the machine has available now minus
    ``headroom_gb``, so that a case that runs out hits an allocation error
    in its own process before the machine runs short (other jobs run here)."""
    gb = float(os.environ.get("GRAPHODE_BENCH_MEM_LIMIT_GB", requested_gb if requested_gb is not None else 16.0))
    limit = int(gb * 2**30)
    avail = _meminfo("MemAvailable")
    if avail is not None:
        limit = min(limit, int(avail - headroom_gb * 2**30))
    return max(limit, 2**30)


_OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "not enough memory", "std::bad_alloc",
             "out of memory", "failed to allocate")


def is_oom_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, (RuntimeError, OSError)) and any(t in msg for t in _OOM_TEXT)


class WorkerResult:
    """What :func:`run_worker` saw: ``status`` is ``"ok"``, ``"oom"`` (an allocation
    failed under the limit, or the process was killed by SIGKILL), ``"timeout"``
    or ``"error"``; ``records`` the emitted dicts (kept even when it failed)."""

    def __init__(self, status, records, error, wall_s, limit_bytes, returncode):
        self.status, self.records, self.error = status, records, error
        self.wall_s, self.limit_bytes, self.returncode = wall_s, limit_bytes, returncode

    def __repr__(self):
        return (f"WorkerResult(status={self.status!r}, records={len(self.records)}, wall_s={self.wall_s:.1f}, "
                f"limit_gb={self.limit_bytes / 2**30 if self.limit_bytes else None})")


def run_worker(target: str, kwargs: Optional[dict] = None, *, threads: int = 2, mem_limit: Optional[int] = None,
               timeout: Optional[float] = None, env: Optional[dict] = None) -> WorkerResult:
    """Run ``function(emit, **kwargs)`` of ``target`` (``"path/to/file.py:function"`` or
    ``"package.module:function"``) in a fresh interpreter with ``threads`` intra-op
    threads, an address-space limit ``mem_limit`` (bytes, ``RLIMIT_AS``) and a
    wall-clock ``timeout`` (seconds); see :class:`WorkerResult`."""
    spec = {"target": target, "kwargs": kwargs or {}, "threads": threads}
    e = dict(os.environ)
    e.update(MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    e.pop("OMP_DYNAMIC", None)
    e["PYTHONPATH"] = os.pathsep.join([HERE, ROOT, e.get("PYTHONPATH", "")])
    if env:
        e.update(env)

    def preexec():
        os.setsid()  # own process group: a timeout kills its OpenMP/autograd threads' process and children
        if mem_limit:
            resource.setrlimit(resource.RLIMIT_AS, (int(mem_limit), int(mem_limit)))

    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "_benchutil.py"), json.dumps(spec)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=e, cwd=ROOT, preexec_fn=preexec)
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            p.kill()
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    records, done = [], False
    for line in out.splitlines():
        if line.startswith(_MARK):
            records.append(json.loads(line[len(_MARK):]))
        elif line.startswith(_DONE):
            done = True
    failed = [r for r in records if r.get("_status") in ("oom", "error")]
    if timed_out:
        status = "timeout"
    elif failed:
        status = failed[-1]["_status"]
    elif done and p.returncode == 0:
        status = "ok"
    elif p.returncode in (-signal.SIGKILL, 137) or any(t in err.lower() for t in _OOM_TEXT):
        status = "oom"
    else:
        status = "error"
    error = "" if status == "ok" else (failed[-1].get("error", "") if failed else err[-3000:])
    return WorkerResult(status, records, error, wall, mem_limit, p.returncode)


def _load_target(target: str):
    path, _, name = target.rpartition(":")
    if path.endswith(".py"):
        mod_name = "_graphode_bench_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(path)
    return getattr(mod, name)


def emit(record: dict) -> None:
    """Report one result from inside a worker (see :func:`run_worker`)."""
    sys.stdout.write(_MARK + json.dumps(record) + "\n")
    sys.stdout.flush()


def _worker_main(argv: List[str]) -> int:
    spec = json.loads(argv[0])
    torch.set_num_threads(int(spec.get("threads", 1)))
    try:
        fn = _load_target(spec["target"])
        fn(emit, **spec.get("kwargs", {}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        kind = "oom" if is_oom_error(exc) else "error"
        emit({"_status": kind, "error": f"{type(exc).__name__}: {str(exc)[:500]}",
              "traceback": traceback.format_exc()[-3000:], "peak_rss_bytes": proc_status("VmHWM")})
        return 0 if kind == "oom" else 1
    sys.stdout.write(_DONE + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- graphs
def cache_dir() -> str:
    d = os.environ.get("GRAPHODE_BENCH_CACHE", os.path.join(ROOT, ".benchmarks", "graph-cache"))
    os.makedirs(d, exist_ok=True)
    return d


def power_law_graph_cached(num_nodes: int, num_edges: int, seed: int = 0):
    """:func:`graphode.power_law_graph` (self loops included), cached on disk
    (``.benchmarks/graph-cache``; ``GRAPHODE_BENCH_CACHE`` overrides) for graphs
    of 1M edges and more, where generating takes seconds to tens of seconds."""
    from graphode.graph import Graph, power_law_graph

    if num_edges < 1_000_000:
        return power_law_graph(num_nodes, num_edges, seed=seed)
    path = os.path.join(cache_dir(), f"power_law_{num_nodes}_{num_edges}_{seed}.pt")
    if os.path.exists(path):
        try:
            d = torch.load(path, weights_only=True)  # a cache folder may be shared: never run code
            return Graph(d["rowptr"], d["col"], num_nodes, validate=False)
        except Exception:  # noqa: BLE001 - a torn or stale file: regenerate
            pass
    g = power_law_graph(num_nodes, num_edges, seed=seed)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save({"rowptr": g.rowptr, "col": g.col}, tmp)
    os.replace(tmp, path)
    return g


# --------------------------------------------------------------------------- formatting
def fmt_time(t: Optional[float]) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "n/a"
    if t < 0.01:
        return f"{t * 1e3:,.2f} ms"
    if t < 1:
        return f"{t * 1e3:,.1f} ms"
    if t < 10:
        return f"{t:.2f} s"
    return f"{t:,.1f} s"


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "n/a"
    if b >= 2**30:
        return f"{b / 2**30:,.2f} GiB"
    if b >= 2**20:
        return f"{b / 2**20:,.0f} MiB"
    return f"{b / 2**10:,.0f} KiB"


def fmt_ratio(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.1f}x" if x < 100 else f"{x:,.0f}x"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[bool] = ()) -> str:
    right = list(right) + [False] * (len(headers) - len(right))
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reports
def results_dir() -> str:
    d = os.environ.get("GRAPHODE_BENCH_RESULTS", os.path.join(HERE, "results"))
    os.makedirs(d, exist_ok=True)
    return d


#: session-wide facts every report carries (machine, triad bandwidth; set by the bench conftest)
META: Dict[str, Any] = {}
REPORTS: Dict[str, "Report"] = {}


class Report:
    """The rows of one benchmark file, written by :meth:`write` as
    ``<results_dir>/<name>.json``: ``{"meta": {...}, "rows": [...]}`` with the machine,
    load, bandwidths, git revision and command in ``meta``.  ``bench/report.py``
    renders it (and nothing else writes figures into the documents)."""

    def __init__(self, name: str, title: str, command: str = "", **facts):
        self.name, self.title, self.command = name, title, command
        self.facts = facts  # constant settings of the file (sizes, rounds...), stored in meta
        self.rows: List[dict] = []
        REPORTS[name] = self

    def add(self, **row) -> dict:
        self.rows.append(row)
        return row

    def data(self) -> dict:
        meta = dict(META)
        meta.setdefault("machine", machine_info())
        meta.update(name=self.name, title=self.title, command=self.command, facts=self.facts,
                    loadavg_1min_end=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                    written=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        return {"meta": meta, "rows": self.rows}

    def write(self, directory: Optional[str] = None) -> Optional[str]:
        """Write the JSON (atomically); returns its path, or None when there are no rows."""
        if not self.rows:
            return None
        path = os.path.join(directory or results_dir(), self.name + ".json")
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.data(), f, indent=1, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
        return path


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def write_reports(directory: Optional[str] = None) -> List[str]:
    """Write every report that has rows; returns the paths."""
    return [p for p in (r.write(directory) for r in REPORTS.values()) if p]


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
