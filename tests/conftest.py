"""Shared test fixtures."""
import os
import sys

import pytest
import torch

# The Triton backend runs on CPU tensors only in Triton's interpreter, which
# must be chosen before triton is first imported; without a GPU, the whole
# session uses it (tests/ops run the "triton" backend on small graphs).
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: these tensors are small, and on a loaded
    2-core machine OpenMP synchronisation dominates (several times slower with 2).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
