"""GDC rewiring (graphode.transforms) against dense closed forms and PyG's GDC."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from graphode import Graph
from graphode.transforms import GDC, diffusion_matrix_dense, gdc, gdc_edge_index


pytestmark = pytest.mark.usefixtures("one_thread")


def ring_graph(n=30, chords=12, seed=0):
    """A connected undirected graph: a ring plus random chords."""
    rng = np.random.default_rng(seed)
    src = list(range(n))
    dst = [(i + 1) % n for i in range(n)]
    for _ in range(chords):
        a, b = rng.choice(n, 2, replace=False)
        src.append(a)
        dst.append(b)
    ei = torch.tensor([src + dst, dst + src])
    return Graph.from_edge_index(ei, n)


def dense_sym_T(g: Graph, self_loop_weight=1.0):
    A = g.to_dense(dtype=torch.float64).numpy() + self_loop_weight * np.eye(g.num_nodes)
    d = A.sum(1)
    return A / np.sqrt(d[:, None] * d[None, :])


def dense_of(ei, w, n):
    S = np.zeros((n, n))
    S[ei[1].numpy(), ei[0].numpy()] = w.double().numpy()  # rows = targets
    return S


@pytest.mark.parametrize("k", [1, 5, 12])
def test_ppr_topk_matches_closed_form_and_keeps_k(k):
    g = ring_graph()
    n, alpha = g.num_nodes, 0.1
    T = dense_sym_T(g)
    S = alpha * np.linalg.inv(np.eye(n) - (1 - alpha) * T)
    np.testing.assert_allclose(diffusion_matrix_dense(g, "ppr", alpha=alpha), S, rtol=1e-12, atol=1e-14)
    # expected: top-k per row (target), then each row normalised to sum 1 ("col" in PyG's terms)
    E = np.zeros_like(S)
    for i in range(n):
        top = np.argsort(-S[i])[:k]
        E[i, top] = S[i, top]
    E = E / E.sum(1, keepdims=True)
    ei, w = gdc_edge_index(g, method="ppr", alpha=alpha, sparsification="topk", k=k, block_size=7)
    counts = torch.bincount(ei[1], minlength=n)
    assert torch.all(counts == k), counts
    np.testing.assert_allclose(dense_of(ei, w, n), E, rtol=1e-5, atol=1e-7)
    G = gdc(g, method="ppr", alpha=alpha, k=k)
    assert torch.all(G.in_degree == k)
    np.testing.assert_allclose(G.to_dense(dtype=torch.float64).numpy(), E, rtol=1e-5, atol=1e-7)


def test_topk_larger_than_n_keeps_everything():
    g = ring_graph(n=10, chords=3)
    ei, w = gdc_edge_index(g, k=64)
    assert torch.all(torch.bincount(ei[1], minlength=10) == 10)
    s = torch.zeros(10, dtype=torch.float64).index_add_(0, ei[1], w.double())
    assert torch.allclose(s, torch.ones(10, dtype=torch.float64), atol=1e-6)


def test_heat_and_threshold():
    g = ring_graph()
    n, t = g.num_nodes, 2.0
    T = dense_sym_T(g)
    H = scipy.linalg.expm(t * (T - np.eye(n)))
    np.testing.assert_allclose(diffusion_matrix_dense(g, "heat", t=t), H, rtol=1e-10, atol=1e-12)
    eps = 0.01
    ei, w = gdc_edge_index(g, method="heat", t=t, sparsification="threshold", eps=eps, normalization_out=None)
    E = np.where(H >= eps, H, 0.0)
    np.testing.assert_allclose(dense_of(ei, w, n), E, rtol=1e-5, atol=1e-7)
    # avg_degree picks eps so that N * avg_degree entries survive
    ei, _ = gdc_edge_index(g, method="heat", t=t, sparsification="threshold", avg_degree=4)
    assert ei.size(1) == 4 * n


def test_gdc_dataset_transform():
    from graphode.datasets import NodeDataset

    g = ring_graph(n=20, chords=5)
    ds = NodeDataset(name="ring", x=torch.randn(20, 3), y=torch.zeros(20, dtype=torch.long),
                     edge_index=g.edge_index, train_mask=torch.ones(20, dtype=torch.bool),
                     val_mask=torch.zeros(20, dtype=torch.bool), test_mask=torch.zeros(20, dtype=torch.bool),
                     num_classes=1)
    out = GDC(k=4)(ds)
    assert out.num_edges == 4 * 20 and torch.all(out.graph.in_degree == 4)
    assert out.graph.edge_weight is not None


def test_bad_arguments():
    g = ring_graph(n=8, chords=0)
    with pytest.raises(ValueError, match="sparsification"):
        gdc_edge_index(g, sparsification="bogus")
    with pytest.raises(ValueError, match="diffusion method"):
        gdc_edge_index(g, method="bogus")
    with pytest.raises(ValueError, match="eps or avg_degree"):
        gdc_edge_index(g, sparsification="threshold")


@pytest.mark.parametrize("kind", ["ppr-topk", "heat-threshold"])
def test_matches_pyg_gdc(kind):
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data
    from torch_geometric.transforms import GDC as PygGDC

    g = ring_graph(n=40, chords=25, seed=3)
    if kind == "ppr-topk":
        ours = dict(method="ppr", alpha=0.15, sparsification="topk", k=6)
        pyg = PygGDC(diffusion_kwargs=dict(method="ppr", alpha=0.15),
                     sparsification_kwargs=dict(method="topk", k=6, dim=0))
    else:
        ours = dict(method="heat", t=3.0, sparsification="threshold", eps=0.02)
        pyg = PygGDC(diffusion_kwargs=dict(method="heat", t=3.0),
                     sparsification_kwargs=dict(method="threshold", eps=0.02))
    ei, w = gdc_edge_index(g, **ours)
    d = pyg(Data(edge_index=g.edge_index, num_nodes=g.num_nodes))
    n = g.num_nodes
    np.testing.assert_allclose(dense_of(ei, w, n), dense_of(d.edge_index, d.edge_attr, n), rtol=1e-4, atol=1e-6)
