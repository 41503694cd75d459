"""Pure-PyTorch reference implementations of graphode's graph ops.

These are the ground truth for every backend, forward and backward (autograd
differentiates them directly).  They follow the "PyG recipe": gather per-edge
tensors, reduce with ``scatter_reduce`` / ``index_add_``.  They are simple and
correct but materialise ``[E, F]`` and ``[E, H, D]`` tensors, which is exactly
what the fused kernels avoid.

Shapes: ``q``, ``k`` ``[N, H, D]``; ``x`` ``[N, F]``; ``edge_weight`` ``[E]``;
attention ``[E, H]`` in the graph's stored (target, source) edge order.
"""
from __future__ import annotations

import torch

from ..graph import Graph

__all__ = ["spmm", "edge_attention", "attention_diffusion", "segment_softmax"]


def spmm(graph: Graph, edge_weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[i] = sum_{j -> i} w_e x[j]``.  ``edge_weight`` ``[E]``, ``x`` ``[N, F]`` -> ``[N, F]``."""
    msg = x.index_select(0, graph.col) * edge_weight.unsqueeze(-1)
    return x.new_zeros((graph.num_nodes, x.size(1))).index_add_(0, graph.row, msg)


def segment_softmax(graph: Graph, scores: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores`` ``[E, H]`` over each target's in-edges (max-shifted)."""
    N, H = graph.num_nodes, scores.size(1)
    idx = graph.row.unsqueeze(-1).expand_as(scores)
    smax = scores.new_full((N, H), float("-inf")).scatter_reduce(
        0, idx, scores, reduce="amax", include_self=True
    )
    # Detaching the shift is exact (softmax is shift invariant) and avoids
    # differentiating through amax.
    e = torch.exp(scores - smax.detach().index_select(0, graph.row))
    denom = scores.new_zeros((N, H)).index_add_(0, graph.row, e)
    return e / denom.index_select(0, graph.row)


def edge_attention(graph: Graph, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """``a[e, h] = softmax_{j -> i}(scale * <q[i, h], k[j, h]>)`` for edge e = j -> i.

    ``q``, ``k`` ``[N, H, D]`` -> ``[E, H]``; each target's in-edges sum to 1 per head.
    """
    scores = (q.index_select(0, graph.row) * k.index_select(0, graph.col)).sum(-1) * scale
    return segment_softmax(graph, scores)


def attention_diffusion(
    graph: Graph, q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, scale: float
) -> torch.Tensor:
    """``y[i] = (1/H) sum_h sum_{j -> i} a[e, h] x[j]``: heads averaged, then one SpMM.

    ``q``, ``k`` ``[N, H, D]``, ``x`` ``[N, F]`` -> ``[N, F]``.  A node with no
    in-edges gets 0.
    """
    a = edge_attention(graph, q, k, scale)
    return spmm(graph, a.mean(1), x)
