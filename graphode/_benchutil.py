"""Shared machinery of the benchmark suite (``bench/``, ``make bench``) and of
``graphode bench --quick``.  Not part of the public API.

What lives here, once:

* timing: :func:`best_time` (best per-call time of a callable),
  :func:`time_calls` (a list of per-round times), :func:`summarize`;
* the machine's memory bandwidth: :func:`stream_triad_gbps` (a STREAM-like
  triad ``a = b + s*c``), and :func:`machine_info` for report headers;
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
  conftest writes each report as ``bench/results/<name>.json`` and ``<name>.md``
  (``GRAPHODE_BENCH_RESULTS`` overrides the directory) when the session ends;
* cached benchmark graphs: :func:`power_law_graph_cached` (generating a
  10M-edge graph takes ~20 s; workers load it from disk instead).

Subprocess workers: ``run_worker("path/to/file.py:function", kwargs)`` runs
``function(emit, **kwargs)`` in ``python -m graphode._benchutil``; the function
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def record_external(benchmark, times: Sequence[float]) -> None:
    """Give pytest-benchmark round times measured elsewhere (a subprocess worker),
    so that they appear in its table, its saved JSON and ``--benchmark-compare``.
    Uses pytest-benchmark's internal ``_make_stats`` (5.x); without it, the
    figures stay in ``extra_info`` only."""
    if benchmark is None or getattr(benchmark, "disabled", False) or not times:
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


def graph_op_bytes(op: str, mode: str, num_nodes: int, num_edges: int, H: int = 4, D: int = 16, F: int = 64,
                   value_bytes: int = 4, index_bytes: int = 8) -> int:
    """Compulsory bytes of one graph op: every input array read once and every
    output written once (CSR arrays; the CSC transpose in the backward; features,
    outputs, gradients).  The same count for every provider of an op, so GB/s
    ratios are speed ratios; a lower bound on what a kernel moves (each edge
    also gathers a source row).  ``mode``: ``fwd``, ``bwd`` or ``full``."""
    N, E, b, i = num_nodes, num_edges, value_bytes, index_bytes
    csr = i * (N + 1 + E)
    csc = i * (N + 1 + 2 * E)
    qk, nf = 2 * b * N * H * D, b * N * F
    if op == "spmm":
        fwd = csr + b * E + 2 * nf
        bwd = nf + csr + csc + b * E + nf + b * E + nf
    elif op == "edge_attention":
        fwd = csr + qk + b * E * H
        bwd = 2 * b * E * H + csr + csc + qk + qk
    elif op == "attention_diffusion":
        fwd = csr + qk + nf + nf + b * N * H
        bwd = nf + b * N * H + csr + csc + qk + nf + qk + nf
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


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
    from . import ops

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
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


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
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)

    def preexec():
        os.setsid()  # own process group: a timeout kills its OpenMP/autograd threads' process and children
        if mem_limit:
            resource.setrlimit(resource.RLIMIT_AS, (int(mem_limit), int(mem_limit)))

    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "graphode._benchutil", json.dumps(spec)], stdout=subprocess.PIPE,
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
    from .graph import Graph, power_law_graph

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
    d = os.environ.get("GRAPHODE_BENCH_RESULTS", os.path.join(ROOT, "bench", "results"))
    os.makedirs(d, exist_ok=True)
    return d


#: session-wide facts every report header shows (the triad bandwidth, set by the bench conftest)
META: Dict[str, Any] = {}
REPORTS: Dict[str, "Report"] = {}


class Report:
    """Rows of one benchmark file, rendered to markdown by ``render(rows, meta)``
    and written (``write``) as ``<results_dir>/<name>.json`` and ``<name>.md``.
    ``render`` may also write figures next to them (it gets the directory as
    ``meta["results_dir"]``)."""

    def __init__(self, name: str, title: str, render: Callable[[List[dict], dict], str], command: str = ""):
        self.name, self.title, self.render, self.command = name, title, render, command
        self.rows: List[dict] = []
        REPORTS[name] = self

    def add(self, **row) -> dict:
        self.rows.append(row)
        return row

    def header(self, meta: dict) -> str:
        m = meta.get("machine", {})
        triad = meta.get("triad_gbps")
        parts = [f"Measured {m.get('date', '?')} on {m.get('cpu', '?')} ({m.get('cpus', '?')} CPUs, "
                 f"{m.get('mem_total_gb', '?')} GB), torch {m.get('torch', '?')}"]
        if triad:
            parts.append(f"STREAM triad {triad:.1f} GB/s ({meta.get('triad_threads', '?')} threads)")
        if m.get("loadavg_1min") is not None:
            parts.append(f"1-min load average {m['loadavg_1min']} at the start, "
                         f"{os.getloadavg()[0]:.2f} at the end")
        if m.get("bench_size") == "smoke":
            parts.append("**smoke size (not a measurement)**")
        cmd = f"; `{self.command}`" if self.command else ""
        return ", ".join(parts) + cmd + "."

    def write(self, directory: Optional[str] = None) -> Optional[str]:
        if not self.rows:
            return None
        d = directory or results_dir()
        meta = dict(META, results_dir=d)
        meta.setdefault("machine", machine_info())
        text = f"### {self.title}\n\n{self.header(meta)}\n\n{self.render(self.rows, meta)}\n"
        with open(os.path.join(d, self.name + ".md"), "w") as f:
            f.write(text)
        with open(os.path.join(d, self.name + ".json"), "w") as f:
            json.dump({"meta": {k: v for k, v in meta.items() if k != "results_dir"}, "rows": self.rows}, f,
                      indent=1, default=str)
        return text


def write_reports(directory: Optional[str] = None) -> List[str]:
    """Write every report that has rows; returns the markdown texts."""
    return [t for t in (r.write(directory) for r in REPORTS.values()) if t]


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
