"""Graph structure: construction, coalescing, CSC cache, validation, helpers."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphode import Graph, power_law_graph


def test_csr_layout_hand_made():
    # edges (source -> target): 2->0, 0->1, 2->1, 1->2
    ei = torch.tensor([[2, 0, 2, 1], [0, 1, 1, 2]])
    g = Graph.from_edge_index(ei)
    assert g.num_nodes == 3 and g.num_edges == 4
    assert g.rowptr.tolist() == [0, 1, 3, 4]
    assert g.col.tolist() == [2, 0, 2, 1]
    assert g.row.tolist() == [0, 1, 1, 2]
    # already sorted by (target, source): order kept, edge_index round-trips
    assert torch.equal(g.edge_index, ei)
    # CSC: out-edges of source 0: edge 1 (0->1); source 1: edge 3 (1->2); source 2: edges 0, 2
    assert g.csc_ptr.tolist() == [0, 1, 2, 4]
    assert g.csc_perm.tolist() == [1, 3, 0, 2]
    assert g.csc_row.tolist() == [1, 2, 0, 1]
    assert g.in_degree.tolist() == [1, 2, 1]
    assert g.out_degree.tolist() == [1, 1, 2]


def test_coalesce_sorts_and_sums_duplicates():
    ei = torch.tensor([[1, 0, 1, 1], [2, 2, 2, 0]])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    g = Graph.from_edge_index(ei, num_nodes=3, edge_weight=w)
    assert g.edge_index.tolist() == [[1, 0, 1], [0, 2, 2]]
    assert g.edge_weight.tolist() == [4.0, 2.0, 4.0]
    dense = torch.zeros(3, 3)
    for (s, t), v in zip(ei.t().tolist(), w.tolist()):
        dense[t, s] += v
    assert torch.equal(g.to_dense(), dense)


def test_sorted_input_keeps_order_and_weights():
    g0 = power_law_graph(200, 1500, seed=3)
    w = torch.rand(g0.num_edges)
    g = Graph.from_edge_index(g0.edge_index, g0.num_nodes, edge_weight=w)
    assert torch.equal(g.col, g0.col) and torch.equal(g.rowptr, g0.rowptr)
    assert g.edge_weight is w


def test_csc_matches_transpose():
    g = power_law_graph(300, 3000, seed=1)
    A = g.to_dense()
    w = torch.rand(g.num_edges)
    Aw = g.to_dense(w)
    # walk the CSC arrays and rebuild the transpose
    At = torch.zeros_like(A)
    for j in range(g.num_nodes):
        for p in range(int(g.csc_ptr[j]), int(g.csc_ptr[j + 1])):
            At[j, int(g.csc_row[p])] = w[int(g.csc_perm[p])]
    assert torch.equal(At, Aw.t())
    # within a source block, targets ascend
    for j in range(g.num_nodes):
        r = g.csc_row[g.csc_ptr[j] : g.csc_ptr[j + 1]]
        assert bool((r[1:] > r[:-1]).all())


@pytest.mark.parametrize(
    "ei, n, msg",
    [
        (torch.tensor([[0, -1], [1, 0]]), None, "negative"),
        (torch.tensor([[0, 5], [1, 0]]), 3, "num_nodes is 3"),
        (torch.tensor([[0, 1, 2]]), None, "shape [2, E]"),
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), None, "integer dtype"),
    ],
)
def test_validation_errors(ei, n, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        Graph.from_edge_index(ei, num_nodes=n)


def test_edge_weight_length_checked():
    with pytest.raises(ValueError, match="one per edge"):
        Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), edge_weight=torch.ones(3))


def test_raw_csr_validation():
    with pytest.raises(ValueError, match="rowptr must have"):
        Graph(torch.tensor([0, 1]), torch.tensor([0]), num_nodes=3)
    with pytest.raises(ValueError, match="end at the number of edges"):
        Graph(torch.tensor([0, 1, 3]), torch.tensor([0]), num_nodes=2)
    with pytest.raises(ValueError, match="refers to node 7"):
        Graph(torch.tensor([0, 1, 1]), torch.tensor([7]), num_nodes=2)


def test_self_loops_and_gcn_norm_dense():
    ei = torch.tensor([[0, 1, 1, 2, 2, 2], [1, 0, 2, 1, 2, 0]])  # has one self loop (2->2)
    g = Graph.from_edge_index(ei)
    gl = g.add_self_loops()
    assert gl.num_edges == g.num_edges + 2
    assert bool((gl.to_dense().diagonal() == 1).all())
    gn, w = g.gcn_norm()
    A = g.to_dense()
    A_hat = A.clone()
    A_hat.fill_diagonal_(1.0)
    d = A_hat.sum(1)
    expect = A_hat / torch.sqrt(d[:, None] * d[None, :])
    assert torch.allclose(gn.to_dense(w), expect, atol=1e-6)
    assert not gl.remove_self_loops().has_self_loops()


def test_row_normalize_rows_sum_to_one():
    g = power_law_graph(100, 600, seed=2)
    w = g.row_normalize(torch.rand(g.num_edges, dtype=torch.float64))
    s = torch.zeros(g.num_nodes, dtype=torch.float64).index_add_(0, g.row, w)
    has = g.in_degree > 0
    assert torch.allclose(s[has], torch.ones_like(s[has]))


def test_scipy_round_trip_and_from_pyg_like():
    rng = np.random.default_rng(0)
    A = sp.random(50, 50, density=0.1, random_state=rng, format="csr")
    g = Graph.from_scipy(A)
    assert np.allclose(g.to_scipy().toarray(), A.toarray())
    assert np.allclose(g.to_dense(dtype=torch.float64).numpy(), A.toarray())

    class D:
        edge_index = torch.tensor([[0, 1], [1, 2]])
        num_nodes = 4
        edge_attr = torch.tensor([[2.0], [3.0]])

    gp = Graph.from_pyg(D())
    assert gp.num_nodes == 4 and gp.edge_weight.tolist() == [2.0, 3.0]


def test_torch_sparse_csr_agrees():
    g = power_law_graph(80, 500, seed=5)
    w = torch.rand(g.num_edges)
    x = torch.randn(80, 3)
    assert torch.allclose(g.to_torch_sparse_csr(w) @ x, g.to_dense(w) @ x, atol=1e-5)


def test_power_law_graph_is_heavy_tailed():
    g = power_law_graph(20000, 200000, seed=0, self_loops=False)
    deg = g.in_degree.float()
    assert g.num_edges > 150000
    # heavy tail: the max degree is far above the mean
    assert deg.max() > 20 * deg.mean()


def test_to_device_keeps_cache():
    g = power_law_graph(50, 300, seed=0)
    _ = g.csc_perm
    g2 = g.to("cpu")
    assert g2 is g
    g3 = Graph(g.rowptr, g.col, g.num_nodes)
    assert torch.equal(g3.csc_perm, g.csc_perm)
