"""Weight initialisers for graph convolutions.

:func:`isometric_` is the topology-aware isometric initialisation of
"Old can be Gold: Better Gradient Flow can make Vanilla-GCNs Great Again"
(eq. 14): ``W ~ U(-b, b)`` with

.. math::  b = \\sqrt{\\frac{3 N^2}{C' \\sum_{i,j} (d_i + 1)(d_j + 1)}}
             = \\sqrt{\\frac{3}{C'}} \\, \\frac{N}{\\sum_i (d_i + 1)}

(the double sum factorises: ``sum_{i,j} a_i a_j = (sum_i a_i)^2``), where
``d_i`` is the integer degree of node ``i`` (self loops not counted), ``N`` the
number of nodes and ``C'`` the layer's output width.

The authors' public code (``variant="code"``) computes a different number:
``b = N / sqrt(3 * sum_{i,j} d_i d_j)`` with ``d_i = 1 + sum_j Â_ij`` the row
sums of the *normalised* adjacency ``Â = D̂^-1/2 (A + I) D̂^-1/2``, no ``C'``,
and the same bound for the biases.  On Cora: paper 0.0442 (``C' = 64``),
code 0.2999.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..graph import Graph

__all__ = ["isometric_bound", "isometric_", "ISOMETRIC_VARIANTS"]

ISOMETRIC_VARIANTS = ("paper", "code")


def _degrees(graph: Graph) -> torch.Tensor:
    """Integer in-degrees without self loops (float64, ``[N]``)."""
    row, col = graph.row, graph.col
    not_loop = row != col
    return torch.bincount(row[not_loop], minlength=graph.num_nodes).to(torch.float64)


def _total(graph, value: float) -> float:
    """``value`` summed over the parts of a distributed graph (``DistGraph.global_sum``);
    ``value`` itself for a :class:`Graph`."""
    return float(value) if isinstance(graph, Graph) else graph.global_sum(value)


def isometric_bound(graph: Graph, c_prime: Optional[int] = None, variant: str = "paper") -> float:
    """The bound ``b`` of :func:`isometric_` for ``graph`` (a Python float).

    Args:
        graph: the graph the layer convolves over (self loops, if any, are
            ignored for the degrees: ``A + I`` is what the layer uses).
        c_prime: output width ``C'`` of the layer; required for ``"paper"``,
            ignored by ``"code"``.
        variant: ``"paper"`` (eq. 14) or ``"code"`` (the authors' code).
    """
    if not isinstance(graph, Graph) and not callable(getattr(graph, "global_sum", None)):
        raise TypeError(f"expected a graphode.Graph, got {type(graph).__name__}")
    N = int(_total(graph, graph.num_nodes))
    if N == 0:
        raise ValueError("the graph is empty (0 nodes)")
    if variant == "paper":
        if c_prime is None or int(c_prime) <= 0:
            raise ValueError(f"variant 'paper' needs the output width c_prime > 0, got {c_prime}")
        s = _total(graph, float((_degrees(graph) + 1.0).sum()))  # sum_i (d_i + 1)
        return math.sqrt(3.0 * N * N / (int(c_prime) * s * s))
    if variant == "code":
        g, w = graph.gcn_norm(dtype=torch.float64)
        # sum_{i,j} d_i d_j with d_i = 1 + rowsum_i, d_j = 1 + colsum_j: both sums are
        # N + (sum of all entries of Â)
        total = N + _total(graph, float(w.sum()))
        return N / math.sqrt(3.0 * total * total)
    raise ValueError(f"unknown isometric variant {variant!r}; choose one of {ISOMETRIC_VARIANTS}")


@torch.no_grad()
def isometric_(
    weight: torch.Tensor,
    graph: Graph,
    variant: str = "paper",
    c_prime: Optional[int] = None,
    bias: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Fill ``weight`` in place with ``U(-b, b)``, ``b = isometric_bound(graph, C', variant)``.

    Args:
        weight: 2-D weight of a graph convolution.  ``C'`` defaults to its
            output width: ``weight.shape[1]`` for graphode's ``[in, out]``
            layout.  Pass ``c_prime`` for a ``[out, in]`` (``nn.Linear``) weight.
        graph: the graph the layer convolves over.
        variant: ``"paper"`` (default, eq. 14) or ``"code"``.
        c_prime: overrides the output width used by ``"paper"``.
        bias: with ``variant="code"`` it gets the same ``U(-b, b)`` (as in the
            authors' code); with ``"paper"`` it is set to zero (the paper does
            not initialise biases; zero keeps the layer's map linear at init).
    Returns:
        ``weight``.
    """
    if weight.dim() != 2:
        raise ValueError(f"isometric_ expects a 2-D weight, got shape {list(weight.shape)}")
    if c_prime is None:
        c_prime = weight.shape[1]
    b = isometric_bound(graph, c_prime=c_prime, variant=variant)
    weight.uniform_(-b, b, generator=generator)
    if bias is not None:
        if variant == "code":
            bias.uniform_(-b, b, generator=generator)
        else:
            bias.zero_()
    return weight
