"""Shared fixtures and hooks of the benchmark suite (``make bench``).

* ``bench_threads``: run a model/solver benchmark on ``GRAPHODE_BENCH_THREADS``
  intra-op threads (default 1), then restore;
* ``triad`` (session, autouse): the machine's STREAM-triad bandwidth, measured
  once per run on the op benchmarks' thread count; every report carries it;
* at the end of the session every report with rows is written as
  ``bench/results/<name>.json`` (``GRAPHODE_BENCH_RESULTS`` overrides the
  directory) and rendered in the terminal summary by ``bench/report.py``.
  Runs that measure nothing comparable do not overwrite the committed results:
  under ``--benchmark-disable`` (every case runs once, untimed) or at smoke
  size the reports are written only where ``GRAPHODE_BENCH_RESULTS`` points.

``GRAPHODE_BENCH_SIZE=smoke`` makes every file use its smallest sizes and
rounds (``tests/test_bench_smoke.py`` runs the whole suite that way, under
``--benchmark-disable``).
"""
import os
import time

import pytest
import torch

import _benchutil as bu

#: intra-op threads for the model/solver benchmarks (``GRAPHODE_BENCH_THREADS``, default 1:
#: stable numbers on a shared 2-core machine).  The op benchmarks set their own (2).
BENCH_THREADS = int(os.environ.get("GRAPHODE_BENCH_THREADS", "1"))
#: threads of the op, scaling and scale benchmarks, and of the triad they are compared with
OP_THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))

_written = []
_t0 = time.time()


@pytest.fixture
def bench_threads():
    """Run the benchmark with ``BENCH_THREADS`` intra-op threads, then restore.
    Use with ``pytestmark = pytest.mark.usefixtures("bench_threads")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def triad(request):
    """STREAM-triad GB/s of this machine on ``OP_THREADS`` threads (measured once)."""
    n = torch.get_num_threads()
    torch.set_num_threads(OP_THREADS)
    try:
        gbps = bu.stream_triad_gbps(n=bu.pick(1 << 24, 1 << 20), repeat=bu.pick(5, 2),
                                    min_time=bu.pick(0.5, 0.05))
    finally:
        torch.set_num_threads(n)
    bu.META.update(triad_gbps=gbps, triad_threads=OP_THREADS, machine=bu.machine_info(),
                   benchmark_disabled=bool(request.config.getoption("benchmark_disable", False)),
                   session_start_unix=_t0)
    return gbps


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:Sparse CSR tensor support is in beta:UserWarning")
    config.addinivalue_line("filterwarnings", "ignore:Sparse invariant checks are implicitly disabled:UserWarning")
    # the suite times with _benchutil.measure and hands the times to pytest-benchmark (record_external)
    config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used at all")


def _should_write(config) -> bool:
    if os.environ.get("GRAPHODE_BENCH_RESULTS"):
        return True
    return not config.getoption("benchmark_disable", False) and not bu.smoke()


def pytest_sessionfinish(session, exitstatus):
    if not bu.REPORTS or not _should_write(session.config):
        return
    bu.META["session_wall_s"] = round(time.time() - _t0, 1)
    import report

    for path in bu.write_reports():
        _written.append(path)
        report.after_write(path)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not bu.REPORTS:
        return
    import report

    where = f"written to {bu.results_dir()}" if _written else "not written: see bench/conftest.py"
    terminalreporter.section(f"graphode benchmark reports ({where})")
    for r in bu.REPORTS.values():
        if r.rows:
            terminalreporter.write(report.render(r.data()) + "\n\n")
