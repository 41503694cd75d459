r"""Graph rewiring by graph diffusion (GDC, Klicpera et al., 2019), as GRAND-nl-rw uses it.

:func:`gdc` follows ``torch_geometric.transforms.GDC`` (exact variant) step by
step, with scipy sparse factorisations instead of a dense ``N x N`` inverse, so
memory stays ``O(N * block_size)``:

1. add self loops with weight ``self_loop_weight`` (if non-zero);
2. transition matrix ``T`` with ``normalization_in`` (``"sym"``:
   ``T = D^{-1/2} A D^{-1/2}``, ``D`` the weighted in-degree);
3. diffusion ``S``:

   * ``"ppr"`` (personalised PageRank): ``S = alpha (I - (1 - alpha) T)^{-1}``,
   * ``"heat"``: ``S = exp(t (T - I))``;

4. sparsification, per target node (PyG's ``dim=0``):

   * ``"topk"``: keep the ``k`` largest entries of every node's row of ``S``:
     exactly ``min(k, N)`` in-edges per node on a connected graph.  Unlike
     PyG, exact zeros (nodes in other connected components) are dropped, so a
     node of a component smaller than ``k`` keeps the whole component only;
   * ``"threshold"``: keep entries ``>= eps``; with ``avg_degree`` instead of
     ``eps``, ``eps`` is chosen so that ``N * avg_degree`` entries survive;

5. ``normalization_out`` of the kept weights (``"col"``: PyG's column
   normalisation, i.e. the in-edge weights of every target sum to 1, which is a
   row-stochastic matrix in graphode's CSR-over-targets layout; ``"row"``,
   ``"sym"`` or None as in PyG).

Orientation: graphode's matrices have rows = targets (``y = S x``), the
transpose of PyG's ``to_dense_adj``.  For the symmetric ``"sym"``
normalisation of an undirected graph the two coincide.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from ..graph import Graph

__all__ = ["gdc", "gdc_edge_index", "diffusion_matrix_dense", "transition_matrix", "GDC"]

_NORMS = ("sym", "col", "row", None)


def _to_scipy(graph: Graph, edge_weight: Optional[torch.Tensor]) -> sp.csr_matrix:
    w = edge_weight if edge_weight is not None else graph.edge_weight
    if w is None:
        w = torch.ones(graph.num_edges, dtype=torch.float64)
    return graph.to_scipy(w.detach().to(torch.float64).cpu())


def _add_self_loops(A: sp.csr_matrix, weight: float) -> sp.csr_matrix:
    """Set the diagonal to ``weight`` where it is missing (existing loops kept, like PyG's
    ``add_self_loops`` followed by ``coalesce``: a present loop gets ``w + weight``)."""
    if not weight:
        return A
    return (A + weight * sp.identity(A.shape[0], format="csr")).tocsr()


def transition_matrix(A: sp.spmatrix, normalization: Optional[str]) -> sp.csr_matrix:
    """Normalise a (rows = targets) sparse matrix like PyG's ``GDC.transition_matrix``.

    ``"sym"``: ``D^{-1/2} A D^{-1/2}`` with ``D`` the weighted in-degree (row sums here);
    ``"col"``: each target's in-weights sum to 1 (row sums here);
    ``"row"``: each source's out-weights sum to 1 (column sums here); None: unchanged.
    """
    if normalization not in _NORMS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {_NORMS}")
    A = sp.csr_matrix(A, dtype=np.float64)
    if normalization is None:
        return A
    with np.errstate(divide="ignore"):
        if normalization == "sym":
            d = np.asarray(A.sum(axis=1)).ravel()
            di = np.where(d > 0, d ** -0.5, 0.0)
            return sp.diags(di) @ A @ sp.diags(di)
        if normalization == "col":
            d = np.asarray(A.sum(axis=1)).ravel()
            return sp.diags(np.where(d != 0, 1.0 / d, 0.0)) @ A
        d = np.asarray(A.sum(axis=0)).ravel()
        return A @ sp.diags(np.where(d != 0, 1.0 / d, 0.0))


def diffusion_matrix_dense(
    graph: Graph,
    method: str = "ppr",
    alpha: float = 0.15,
    t: float = 5.0,
    self_loop_weight: float = 1.0,
    normalization_in: Optional[str] = "sym",
    edge_weight: Optional[torch.Tensor] = None,
) -> np.ndarray:
    """The dense diffusion matrix ``S`` ``[N, N]`` (rows = targets; small graphs / tests)."""
    T = transition_matrix(_add_self_loops(_to_scipy(graph, edge_weight), self_loop_weight), normalization_in)
    N = T.shape[0]
    if method == "ppr":
        return alpha * np.linalg.inv(np.eye(N) - (1.0 - alpha) * T.toarray())
    if method == "heat":
        import scipy.linalg

        return scipy.linalg.expm(t * (T.toarray() - np.eye(N)))
    raise ValueError(f"unknown diffusion method {method!r}; choose 'ppr' or 'heat'")


def _row_blocks(T: sp.csr_matrix, method: str, alpha: float, t: float, block_size: int):
    """Yield ``(start, X)`` with ``X[:, b] = S[start + b, :]`` (rows of S as columns), ``X`` ``[N, B]``."""
    N = T.shape[0]
    TT = sp.csc_matrix(T.T)
    if method == "ppr":
        M = (sp.identity(N, format="csc") - (1.0 - alpha) * TT).tocsc()
        lu = spla.splu(M)
        for s in range(0, N, block_size):
            e = min(N, s + block_size)
            E = np.zeros((N, e - s))
            E[np.arange(s, e), np.arange(e - s)] = alpha
            yield s, lu.solve(E)
    elif method == "heat":
        G = (t * (TT - sp.identity(N, format="csc"))).tocsc()
        for s in range(0, N, block_size):
            e = min(N, s + block_size)
            E = np.zeros((N, e - s))
            E[np.arange(s, e), np.arange(e - s)] = 1.0
            yield s, spla.expm_multiply(G, E)
    else:
        raise ValueError(f"unknown diffusion method {method!r}; choose 'ppr' or 'heat'")


def gdc_edge_index(
    graph: Graph,
    *,
    method: str = "ppr",
    alpha: float = 0.15,
    t: float = 5.0,
    sparsification: str = "topk",
    k: int = 64,
    eps: Optional[float] = None,
    avg_degree: Optional[int] = None,
    self_loop_weight: float = 1.0,
    normalization_in: Optional[str] = "sym",
    normalization_out: Optional[str] = "col",
    edge_weight: Optional[torch.Tensor] = None,
    block_size: int = 1024,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """GDC as ``(edge_index [2, E'], edge_weight [E'])`` (PyG convention, row 0 = source),
    sorted by (target, source).  See the module docstring for the steps."""
    if sparsification not in ("topk", "threshold"):
        raise ValueError(f"unknown sparsification {sparsification!r}; choose 'topk' or 'threshold'")
    if normalization_out not in _NORMS:
        raise ValueError(f"unknown normalization_out {normalization_out!r}; choose one of {_NORMS}")
    N = graph.num_nodes
    T = transition_matrix(_add_self_loops(_to_scipy(graph, edge_weight), self_loop_weight), normalization_in)
    rows, cols, vals = [], [], []
    if sparsification == "topk":
        kk = min(int(k), N)
        if kk < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        for s, X in _row_blocks(T, method, alpha, t, block_size):
            B = X.shape[1]
            if kk < N:
                idx = np.argpartition(-X, kk - 1, axis=0)[:kk]  # [k, B] sources
            else:
                idx = np.broadcast_to(np.arange(N)[:, None], (N, B))
            rows.append(np.repeat(np.arange(s, s + B)[None, :], kk, axis=0).ravel())
            cols.append(idx.ravel())
            vals.append(np.take_along_axis(X, idx, axis=0).ravel())
    else:
        if eps is None:
            if avg_degree is None:
                raise ValueError("threshold sparsification needs eps or avg_degree")
            m = int(avg_degree) * N
            cand = []
            for _, X in _row_blocks(T, method, alpha, t, block_size):
                flat = X.ravel()
                if flat.size > m + 1:
                    flat = flat[np.argpartition(-flat, m)[: m + 1]]
                cand.append(flat)
            allv = np.sort(np.concatenate(cand))[::-1]
            eps = -np.inf if m >= allv.size else float(allv[m - 1] + allv[m]) / 2.0
        for s, X in _row_blocks(T, method, alpha, t, block_size):
            src, tgt = np.nonzero(X >= eps)
            rows.append(tgt + s)
            cols.append(src)
            vals.append(X[src, tgt])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    v = np.concatenate(vals)
    S = sp.csr_matrix((v, (r, c)), shape=(N, N))
    S.sum_duplicates()
    S.eliminate_zeros()  # other components (PyG keeps them as zero-weight edges)
    S = transition_matrix(S, normalization_out)
    S.sort_indices()
    tgt = np.repeat(np.arange(N), np.diff(S.indptr))
    ei = torch.from_numpy(np.stack([S.indices.astype(np.int64), tgt.astype(np.int64)]))
    return ei, torch.from_numpy(S.data.astype(np.float32))


def gdc(graph: Graph, **kwargs) -> Graph:
    """GDC-rewired copy of ``graph`` carrying the diffusion weights in ``edge_weight``.

    Keyword arguments as :func:`gdc_edge_index` (``method`` "ppr"/"heat", ``alpha``,
    ``t``, ``sparsification`` "topk"/"threshold", ``k``, ``eps``, ``avg_degree``,
    ``self_loop_weight``, ``normalization_in``, ``normalization_out``).  With top-k,
    every node of a connected graph has exactly ``min(k, N)`` in-edges.
    """
    ei, w = gdc_edge_index(graph, **kwargs)
    g = Graph.from_edge_index(ei, num_nodes=graph.num_nodes, edge_weight=w)
    return g.to(graph.device)


class GDC:
    """Transform for :class:`graphode.datasets.NodeDataset`: returns a copy whose
    ``edge_index`` is the GDC-rewired graph (weights in ``info["gdc_edge_weight"]``
    and on the cached ``dataset.graph.edge_weight``)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, dataset):
        import dataclasses

        ei, w = gdc_edge_index(dataset.graph, **self.kwargs)
        out = dataclasses.replace(dataset, edge_index=ei, info={**dataset.info, "gdc": dict(self.kwargs)})
        out.__dict__["graph"] = Graph.from_edge_index(ei, num_nodes=dataset.num_nodes, edge_weight=w)
        out.info["gdc_edge_weight"] = w
        return out
