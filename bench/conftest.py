"""Shared benchmark fixtures."""
import os

import pytest
import torch

#: intra-op threads for the model/solver benchmarks (``GRAPHODE_BENCH_THREADS``, default 1:
#: stable numbers on a shared 2-core machine).  The op benchmarks set their own.
BENCH_THREADS = int(os.environ.get("GRAPHODE_BENCH_THREADS", "1"))


@pytest.fixture
def bench_threads():
    """Run the benchmark with ``BENCH_THREADS`` intra-op threads, then restore.
    Use with ``pytestmark = pytest.mark.usefixtures("bench_threads")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(BENCH_THREADS)
    yield
    torch.set_num_threads(n)
