"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: these tensors are small, and on a loaded
    2-core machine OpenMP synchronisation dominates (several times slower with 2).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
