"""graphode.graph.grid_graph: pixel-grid graphs checked against hand-counted edges."""
import pytest
import torch

from graphode.graph import grid_graph


def _pairs(g):
    return {(int(s), int(t)) for s, t in g.edge_index.t()}


def test_3x3_four_neighbourhood_by_hand():
    # 0 1 2
    # 3 4 5
    # 6 7 8
    g = grid_graph(3, 3, connectivity=4)
    assert g.num_nodes == 9 and g.num_edges == 24  # 12 undirected edges, both directions
    und = [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (0, 3), (3, 6), (1, 4), (4, 7), (2, 5), (5, 8)]
    assert _pairs(g) == {(a, b) for a, b in und} | {(b, a) for a, b in und}
    assert g.in_degree.tolist() == [2, 3, 2, 3, 4, 3, 2, 3, 2]
    assert torch.equal(g.in_degree, g.out_degree)
    assert not g.has_self_loops()


def test_3x3_eight_neighbourhood_by_hand():
    g = grid_graph(3, 3, connectivity=8)
    assert g.num_edges == 40  # 12 + 8 diagonals = 20 undirected edges
    assert g.in_degree.tolist() == [3, 5, 3, 5, 8, 5, 3, 5, 3]
    diag = {(0, 4), (4, 8), (2, 4), (4, 6), (1, 3), (1, 5), (3, 7), (5, 7)}
    assert diag <= _pairs(g) and {(b, a) for a, b in diag} <= _pairs(g)
    assert (0, 8) not in _pairs(g) and (0, 2) not in _pairs(g)


def test_rectangular_edge_count_and_row_major_ids():
    H, W = 2, 4
    g = grid_graph(H, W)
    assert g.num_edges == 2 * (H * (W - 1) + (H - 1) * W)
    # (0, 3) -- (1, 3) is a vertical edge, (0, 3) -- (1, 0) is not an edge (no wrap-around)
    assert (3, 7) in _pairs(g) and (3, 4) not in _pairs(g)


def test_batched_grids_are_disjoint_copies():
    one = grid_graph(3, 2, connectivity=8)
    g = grid_graph(3, 2, connectivity=8, num_grids=3)
    assert g.num_nodes == 18 and g.num_edges == 3 * one.num_edges
    expect = {(s + 6 * b, t + 6 * b) for b in range(3) for s, t in _pairs(one)}
    assert _pairs(g) == expect


def test_bad_arguments():
    with pytest.raises(ValueError):
        grid_graph(3, 3, connectivity=6)
    with pytest.raises(ValueError):
        grid_graph(0, 3)
