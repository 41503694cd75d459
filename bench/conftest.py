"""Shared fixtures and hooks of the benchmark suite (``make bench``).

* ``bench_threads``: run a model/solver benchmark on ``GRAPHODE_BENCH_THREADS``
  intra-op threads (default 1), then restore;
* ``triad`` (session, autouse): the machine's STREAM-triad bandwidth, measured
  once per run on the op benchmarks' thread count; every report shows it and
  the op tables give achieved GB/s as a fraction of it;
* at the end of the session every report with rows is written to
  ``bench/results/<name>.md`` and ``.json`` (``GRAPHODE_BENCH_RESULTS``
  overrides the directory) and printed in the terminal summary.

``GRAPHODE_BENCH_SIZE=smoke`` makes every file use its smallest sizes and
rounds (``tests/test_bench_smoke.py`` runs the whole suite that way).
"""
import os

import pytest
import torch

from graphode import _benchutil as bu

#: intra-op threads for the model/solver benchmarks (``GRAPHODE_BENCH_THREADS``, default 1:
#: stable numbers on a shared 2-core machine).  The op benchmarks set their own (2).
BENCH_THREADS = int(os.environ.get("GRAPHODE_BENCH_THREADS", "1"))
#: threads of the op, scaling and scale benchmarks, and of the triad they are compared with
OP_THREADS = int(os.environ.get("GRAPHODE_BENCH_OP_THREADS", "2"))

_written = []


@pytest.fixture
def bench_threads():
    """Run the benchmark with ``BENCH_THREADS`` intra-op threads, then restore.
    Use with ``pytestmark = pytest.mark.usefixtures("bench_threads")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def triad():
    """STREAM-triad GB/s of this machine on ``OP_THREADS`` threads (measured once)."""
    n = torch.get_num_threads()
    torch.set_num_threads(OP_THREADS)
    try:
        gbps = bu.stream_triad_gbps(n=bu.pick(1 << 24, 1 << 20), repeat=bu.pick(5, 2),
                                    min_time=bu.pick(0.5, 0.05))
    finally:
        torch.set_num_threads(n)
    bu.META.update(triad_gbps=gbps, triad_threads=OP_THREADS, machine=bu.machine_info())
    return gbps


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:Sparse CSR tensor support is in beta:UserWarning")


def pytest_sessionfinish(session, exitstatus):
    if bu.REPORTS:
        _written.extend(bu.write_reports())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _written:
        terminalreporter.section("graphode benchmark reports (also in %s)" % bu.results_dir())
        for text in _written:
            terminalreporter.write(text + "\n")
