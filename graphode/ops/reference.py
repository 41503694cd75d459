"""Pure-PyTorch reference implementations of graphode's graph ops.

These are the ground truth for every backend, forward and backward (autograd
differentiates them directly).  They follow the "PyG recipe": gather per-edge
tensors, reduce with ``scatter_reduce`` / ``index_add_``.  They are simple and
correct but materialise ``[E, F]`` and ``[E, H, D]`` tensors, which is exactly
what the fused kernels avoid.

Shapes: ``q``, ``k`` ``[N, H, D]``; ``x`` ``[N, F]``; ``edge_weight`` ``[E]``;
attention ``[E, H]`` in the graph's stored (target, source) edge order.

Attention options (the contract of ``notes/ATTENTION_OPTIONS.md``; edge
``e = j -> i``, ``i = graph.row[e]`` the target, ``j = graph.col[e]`` the
source, ``q`` belongs to the target and ``k`` to the source):

``score`` (:data:`SCORES`)
    * ``"scaled_dot"``: ``s = scale * <q_i, k_j>``;
    * ``"cosine"``: ``<q_i / max(|q_i|, 1e-5), k_j / max(|k_j|, 1e-5)>`` per head,
      what ``torch.nn.CosineSimilarity(eps=1e-5)`` computes in torch 2.x (each
      vector's norm clamped separately; torch 1.8 clamped the product
      ``|q_i|^2 |k_j|^2`` at ``eps^2`` instead: the two differ only when a norm
      is below ``eps``);
    * ``"pearson"``: ``"cosine"`` of ``q_i``, ``k_j`` centred over ``D``;
    * ``"exp_kernel"``: ``sigma^2 exp(-|q_i - k_j|^2 / (2 l^2))`` with
      ``(sigma, l) = kernel_params`` (a tensor ``[2]``, differentiable).

``normalize`` (:data:`NORMALIZE`)
    * ``"softmax"``: ``a = exp(s - max_group s) / sum_group exp(...)`` (the max
      shift is detached: softmax is shift invariant);
    * ``"squareplus"``: ``s' = s - M`` with one global ``M = max`` over all edges
      and heads (not detached: the gradient flows through ``M`` as through
      ``torch.max``, split evenly among ties; squareplus is not shift
      invariant, so ``M`` matters), ``u = (s' + sqrt(s'^2 + 4)) / 2``,
      ``a = u / (sum_group u + 1e-16)``.

``normalize_over`` (:data:`NORMALIZE_OVER`)
    * ``"target"``: groups are the in-edges of each target ``i`` (row-stochastic);
    * ``"source"``: groups are the out-edges of each source ``j``
      (column-stochastic: the diffusion conserves mass).

:func:`dropout` is the one op without a graph: inverted dropout whose mask is
Philox4x32-10 of (seed, element index), written here with int64 tensor
arithmetic (:func:`philox4x32_10`) as the twin of the compiled kernel.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..graph import Graph

__all__ = [
    "spmm",
    "edge_attention",
    "attention_diffusion",
    "edge_scores",
    "unit_qk",
    "segment_normalize",
    "segment_softmax",
    "SCORES",
    "NORMALIZE",
    "NORMALIZE_OVER",
    "COSINE_EPS",
    "SQUAREPLUS_EPS",
    "dropout",
    "dropout_mask",
    "philox4x32_10",
    "dropout_threshold",
]

SCORES = ("scaled_dot", "cosine", "pearson", "exp_kernel")
NORMALIZE = ("softmax", "squareplus")
NORMALIZE_OVER = ("target", "source")
#: eps of the cosine / Pearson scores (``torch.nn.CosineSimilarity(eps=1e-5)``).
COSINE_EPS = 1e-5
#: added to each group's squareplus sum (as the GRAND authors' ``squareplus``).
SQUAREPLUS_EPS = 1e-16


def spmm(graph: Graph, edge_weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[i] = sum_{j -> i} w_e x[j]``.  ``edge_weight`` ``[E]``, ``x`` ``[N, F]`` -> ``[N, F]``."""
    msg = x.index_select(0, graph.col) * edge_weight.unsqueeze(-1)
    return x.new_zeros((graph.num_nodes, x.size(1))).index_add_(0, graph.row, msg)


def _group_index(graph: Graph, normalize_over: str) -> torch.Tensor:
    if normalize_over == "target":
        return graph.row
    if normalize_over == "source":
        return graph.col
    raise ValueError(f"normalize_over must be one of {NORMALIZE_OVER}, got {normalize_over!r}")


def segment_normalize(graph: Graph, scores: torch.Tensor, normalize: str = "softmax",
                      normalize_over: str = "target") -> torch.Tensor:
    """Normalise ``scores`` ``[E, H]`` within each group of edges (see the module docstring)."""
    N, H = graph.num_nodes, scores.size(1)
    idx = _group_index(graph, normalize_over)
    if normalize == "softmax":
        gmax = scores.new_full((N, H), float("-inf")).scatter_reduce(
            0, idx.unsqueeze(-1).expand_as(scores), scores, reduce="amax", include_self=True
        )
        # Detaching the shift is exact (softmax is shift invariant) and avoids
        # differentiating through amax.
        u = torch.exp(scores - gmax.detach().index_select(0, idx))
        denom = scores.new_zeros((N, H)).index_add_(0, idx, u)
        return u / denom.index_select(0, idx)
    if normalize == "squareplus":
        if scores.numel() == 0:
            return scores.clone()
        s = scores - scores.max()  # one global shift, differentiated like torch.max()
        u = (s + torch.sqrt(s * s + 4.0)) / 2
        denom = scores.new_zeros((N, H)).index_add_(0, idx, u)
        return u / (denom.index_select(0, idx) + SQUAREPLUS_EPS)
    raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")


def segment_softmax(graph: Graph, scores: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores`` ``[E, H]`` over each target's in-edges (max-shifted)."""
    return segment_normalize(graph, scores, "softmax", "target")


def unit_qk(q: torch.Tensor, k: torch.Tensor, center: bool = False):
    """``q``, ``k`` ``[N, H, D]`` divided by their norms over ``D`` clamped at
    :data:`COSINE_EPS` (centred over ``D`` first when ``center``): the scaled-dot
    score of the results with scale 1 is the cosine (Pearson) score."""
    if center:
        q = q - q.mean(-1, keepdim=True)
        k = k - k.mean(-1, keepdim=True)
    qn = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(COSINE_EPS)
    kn = torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(COSINE_EPS)
    return q / qn, k / kn


def edge_scores(graph: Graph, q: torch.Tensor, k: torch.Tensor, scale: float = 1.0, score: str = "scaled_dot",
                kernel_params: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Raw scores ``[E, H]`` of ``score`` for every edge ``j -> i`` (``scale`` is used by
    ``"scaled_dot"`` only; ``kernel_params`` = ``(sigma, l)`` by ``"exp_kernel"`` only)."""
    if score in ("cosine", "pearson"):
        q, k = unit_qk(q, k, center=(score == "pearson"))
        score, scale = "scaled_dot", 1.0
    qi = q.index_select(0, graph.row)
    kj = k.index_select(0, graph.col)
    if score == "scaled_dot":
        return (qi * kj).sum(-1) * scale
    if score == "exp_kernel":
        if kernel_params is None:
            raise ValueError("score='exp_kernel' needs kernel_params = (sigma, lengthscale)")
        sigma, ell = kernel_params[0], kernel_params[1]
        return sigma ** 2 * torch.exp(-(qi - kj).pow(2).sum(-1) / (2 * ell ** 2))
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def edge_attention(graph: Graph, q: torch.Tensor, k: torch.Tensor, scale: float, *, score: str = "scaled_dot",
                   normalize: str = "softmax", normalize_over: str = "target",
                   kernel_params: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Attention ``[E, H]``: ``score`` per edge ``j -> i``, normalised by ``normalize`` over
    the edges of each ``normalize_over`` node (defaults: ``softmax_{j -> i}(scale <q_i, k_j>)``,
    each target's in-edges summing to 1 per head)."""
    s = edge_scores(graph, q, k, scale, score, kernel_params)
    return segment_normalize(graph, s, normalize, normalize_over)


def attention_diffusion(graph: Graph, q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, scale: float, *,
                        score: str = "scaled_dot", normalize: str = "softmax", normalize_over: str = "target",
                        kernel_params: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y[i] = (1/H) sum_h sum_{j -> i} a[e, h] x[j]``: heads averaged, then one SpMM.

    ``q``, ``k`` ``[N, H, D]``, ``x`` ``[N, F]`` -> ``[N, F]``.  A node with no
    in-edges gets 0.  ``a`` is :func:`edge_attention` with the same options.
    """
    a = edge_attention(graph, q, k, scale, score=score, normalize=normalize, normalize_over=normalize_over,
                       kernel_params=kernel_params)
    return spmm(graph, a.mean(1), x)


# --------------------------------------------------------------------------- dropout
_LO32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def _mulhilo32(a: torch.Tensor, b: int):
    """``(hi, lo)`` 32-bit halves of ``a * b`` for ``a`` int64 values in [0, 2^32) and a
    32-bit constant ``b``, from 16-bit partial products (no int64 overflow)."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    b_lo, b_hi = b & 0xFFFF, b >> 16
    ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (ll >> 16) + (lh & 0xFFFF) + (hl & 0xFFFF)
    lo = ((mid & 0xFFFF) << 16) | (ll & 0xFFFF)
    hi = (hh + (lh >> 16) + (hl >> 16) + (mid >> 16)) & _LO32
    return hi, lo


def philox4x32_10(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, key: int):
    """Philox4x32-10 (Salmon et al., SC'11) of the counters ``(c0, c1, c2, c3)`` (int64 tensors
    holding 32-bit values) under the 64-bit ``key`` (low word first).  Returns the four
    32-bit output words as int64 tensors."""
    k0, k1 = int(key) & _LO32, (int(key) >> 32) & _LO32
    for _ in range(10):
        hi0, lo0 = _mulhilo32(c0, _PHILOX_M[0])
        hi1, lo1 = _mulhilo32(c2, _PHILOX_M[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_W[0]) & _LO32, (k1 + _PHILOX_W[1]) & _LO32
    return c0, c1, c2, c3


def dropout_threshold(p: float) -> int:
    """The keep test of :func:`dropout_mask`: ``u >= floor(p * 2^32)`` (capped at 2^32 - 1)."""
    if not p > 0.0:
        return 0
    return min(int(p * 4294967296.0), _LO32)


def dropout_mask(n: int, p: float, seed: int, device=None) -> torch.Tensor:
    """The keep mask ``[n]`` (bool) of element ``i``: word ``i mod 4`` of Philox4x32-10 with
    counter ``(lo32(i // 4), hi32(i // 4), 0, 0)`` and key ``seed``, ``>= floor(p 2^32)``."""
    nb = (int(n) + 3) // 4
    b = torch.arange(nb, dtype=torch.int64, device=device)
    zero = torch.zeros_like(b)
    words = philox4x32_10(b & _LO32, b >> 32, zero, zero, int(seed) & ((1 << 64) - 1))
    u = torch.stack(words, dim=1).reshape(-1)[: int(n)]
    return u >= dropout_threshold(p)


def dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Inverted dropout ``x * (keep ? 1/(1-p) : 0)`` with the mask of :func:`dropout_mask`
    over ``x``'s elements in row-major order; ``1/(1-p)`` rounded to ``x``'s dtype."""
    keep = dropout_mask(x.numel(), p, seed, device=x.device).view(x.shape)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
    return x * torch.where(keep, scale, torch.zeros((), dtype=x.dtype, device=x.device))
