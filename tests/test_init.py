"""Topology-aware isometric initialisation (eq. 14 of "Old can be Gold") and the
authors' code variant, checked against hand-computed numbers."""
import math
import os

import pytest
import torch

from graphode import Graph
from graphode.nn.init import isometric_, isometric_bound

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "shared", "datasets")


def _hand_graph():
    # undirected edges 0-1, 1-2, 2-3, 1-3  ->  degrees d = [1, 3, 2, 2]
    und = [(0, 1), (1, 2), (2, 3), (1, 3)]
    ei = torch.tensor([[a for a, b in und] + [b for a, b in und], [b for a, b in und] + [a for a, b in und]])
    return Graph.from_edge_index(ei, 4)


def test_paper_bound_by_hand():
    g = _hand_graph()
    # sum_i (d_i + 1) = 2 + 4 + 3 + 3 = 12; N = 4; C' = 8
    # b = sqrt(3 N^2 / (C' (sum_i (d_i+1))^2)) = sqrt(48 / (8 * 144)) = sqrt(1/24)
    assert isometric_bound(g, c_prime=8) == pytest.approx(math.sqrt(1 / 24), rel=1e-12)
    # the double sum, written out, gives the same number
    d = [1, 3, 2, 2]
    double = sum((di + 1) * (dj + 1) for di in d for dj in d)
    assert double == 144
    assert isometric_bound(g, c_prime=5) == pytest.approx(math.sqrt(3 * 16 / (5 * double)), rel=1e-12)


def test_paper_bound_ignores_existing_self_loops():
    g = _hand_graph()
    assert isometric_bound(g.add_self_loops(), c_prime=8) == pytest.approx(isometric_bound(g, c_prime=8))


def test_code_bound_by_hand():
    g = _hand_graph()
    # Â = D̂^-1/2 (A+I) D̂^-1/2 with D̂ = d + 1 = [2, 4, 3, 3]; its row sums:
    s2, s3 = math.sqrt(2), math.sqrt(3)
    r0 = (1 / s2) * (1 / s2 + 1 / 2)
    r1 = (1 / 2) * (1 / s2 + 1 / 2 + 2 / s3)
    r2 = (1 / s3) * (1 / 2 + 2 / s3)
    r3 = r2
    S = sum(1 + r for r in (r0, r1, r2, r3))            # sum_i d_i with d_i = 1 + rowsum
    expected = 4 / math.sqrt(3 * S * S)                  # N / sqrt(3 sum_{i,j} d_i d_j)
    assert expected == pytest.approx(0.290669, abs=1e-6)
    assert isometric_bound(g, variant="code") == pytest.approx(expected, rel=1e-12)
    assert isometric_bound(g, c_prime=1000, variant="code") == pytest.approx(expected, rel=1e-12)  # no C'


def test_isometric_fills_uniform_range():
    g = _hand_graph()
    torch.manual_seed(0)
    w = torch.empty(300, 64)
    b = torch.empty(64)
    isometric_(w, g, bias=b)                              # C' = weight.shape[1] = 64
    bound = isometric_bound(g, c_prime=64)
    assert float(w.abs().max()) <= bound
    assert float(w.max()) > 0.98 * bound and float(w.min()) < -0.98 * bound
    # U(-b, b): mean 0, variance b^2 / 3
    assert float(w.mean()) == pytest.approx(0.0, abs=0.02 * bound)
    assert float(w.var()) == pytest.approx(bound ** 2 / 3, rel=0.03)
    assert torch.count_nonzero(b) == 0                    # paper variant: zero biases

    isometric_(w, g, variant="code", bias=b)
    cb = isometric_bound(g, variant="code")
    assert float(w.abs().max()) <= cb and float(w.abs().max()) > 0.98 * cb
    assert float(b.abs().max()) <= cb and torch.count_nonzero(b) == 64   # code: biases too


def test_isometric_c_prime_override_and_errors():
    g = _hand_graph()
    w = torch.empty(10, 3)
    isometric_(w, g, c_prime=12)
    assert float(w.abs().max()) <= isometric_bound(g, c_prime=12)
    with pytest.raises(ValueError):
        isometric_bound(g)                                # paper variant needs C'
    with pytest.raises(ValueError):
        isometric_bound(g, c_prime=4, variant="nope")
    with pytest.raises(ValueError):
        isometric_(torch.empty(3), g)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "planetoid")),
                    reason="shared Planetoid files (../shared/datasets/planetoid) not available")
def test_cora_bounds():
    from graphode.datasets import load_planetoid

    g = load_planetoid("cora", root=SHARED).graph
    assert g.num_nodes == 2708 and g.num_edges == 10556
    # paper: sqrt(3 * 2708^2 / (64 * (10556 + 2708)^2)) = 0.0442
    assert isometric_bound(g, c_prime=64) == pytest.approx(0.0442, abs=5e-5)
    # authors' code: 0.2999 ("≈ 0.30")
    assert isometric_bound(g, variant="code") == pytest.approx(0.2999, abs=5e-4)
