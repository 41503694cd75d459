"""Graph ops: SpMM, edge attention and fused attention diffusion.

Every op takes a :class:`graphode.Graph` (CSR over targets, see its docstring)
and ``backend=None`` (automatic) or one of ``"reference"``, ``"cpu"``,
``"triton"``, ``"cuda"``.  Inputs are validated here, once, before any backend
runs; backends may assume contiguous tensors of one dtype on the graph's device.

All ops are differentiable on every backend (autograd through the reference,
``torch.library.register_autograd`` for the compiled ones).
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch

from ..graph import Graph
from . import reference
from ._dispatch import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    backend_module,
    get_backend,
    resolve_backend,
    set_backend,
    use_backend,
)

__all__ = [
    "spmm",
    "edge_attention",
    "attention_diffusion",
    "reference",
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "resolve_backend",
    "set_check_finite",
]

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_check_finite = os.environ.get("GRAPHODE_CHECK_FINITE", "0") == "1"


def set_check_finite(enabled: bool) -> None:
    """Make every op check its inputs for NaN/Inf (one extra pass; off by default,
    also enabled by ``GRAPHODE_CHECK_FINITE=1``)."""
    global _check_finite
    _check_finite = bool(enabled)


def _runs_ops_itself(graph) -> bool:
    """A graph object that implements the ops itself (``__graphode_ops__ = True``, e.g.
    :class:`graphode.distributed.DistGraph`, which exchanges halo rows and then calls
    these ops on its local :class:`Graph`)."""
    return not isinstance(graph, Graph) and getattr(graph, "__graphode_ops__", False) is True


def _check_graph(graph) -> None:
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a graphode.Graph, got {type(graph).__name__}")
    if graph.num_nodes == 0:
        raise ValueError("the graph is empty (0 nodes)")


def _check_float(name: str, t, ndim: int, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {list(t.shape)}")
    if t.dtype not in _FLOAT:
        raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")
    if _check_finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def _check_same(graph: Graph, ref_name: str, ref: torch.Tensor, **others) -> None:
    if ref.device != graph.device:
        raise ValueError(f"{ref_name} is on {ref.device} but the graph is on {graph.device}; use graph.to(...)")
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
        if t.dtype != ref.dtype:
            raise ValueError(f"dtype mismatch: {name} is {t.dtype} but {ref_name} is {ref.dtype}")


def _check_nodes(graph: Graph, **tensors) -> None:
    for name, t in tensors.items():
        if t.size(0) != graph.num_nodes:
            raise ValueError(f"{name} has {t.size(0)} rows but the graph has {graph.num_nodes} nodes")


def _check_qk(graph: Graph, q, k) -> None:
    _check_float("q", q, 3, "[N, H, D]")
    _check_float("k", k, 3, "[N, H, D]")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [N, H, D], got {list(q.shape)} and {list(k.shape)}")
    _check_same(graph, "q", q, k=k)
    _check_nodes(graph, q=q)


def _scale(scale: Optional[float], d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def spmm(graph: Graph, edge_weight: torch.Tensor, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    r"""Sparse-dense product over in-edges: ``y[i] = \sum_{j \to i} w_e x[j]``.

    Args:
        graph: :class:`Graph` with N nodes and E edges.
        edge_weight: ``[E]`` values in the graph's stored edge order.
        x: ``[N, F]`` node features.
        backend: None (automatic) or a name from ``BACKENDS``.

    Returns:
        ``[N, F]``.  Differentiable in ``edge_weight`` (an SDDMM,
        ``grad_w[e] = <grad_y[i], x[j]>``) and ``x`` (the transposed SpMM).
    """
    if _runs_ops_itself(graph):
        return graph.spmm(edge_weight, x, backend=backend)
    _check_graph(graph)
    _check_float("x", x, 2, "[N, F]")
    _check_float("edge_weight", edge_weight, 1, "[E]")
    if edge_weight.numel() != graph.num_edges:
        raise ValueError(f"edge_weight has {edge_weight.numel()} entries but the graph has {graph.num_edges} edges")
    _check_same(graph, "x", x, edge_weight=edge_weight)
    _check_nodes(graph, x=x)
    name = resolve_backend(backend, x.device)
    return backend_module(name).spmm(graph, edge_weight.contiguous(), x.contiguous())


def _check_options(graph: Graph, q: torch.Tensor, scale, score: str, normalize: str, normalize_over: str,
                   kernel_params) -> None:
    if score not in reference.SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {reference.SCORES}")
    if normalize not in reference.NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {reference.NORMALIZE}")
    if normalize_over not in reference.NORMALIZE_OVER:
        raise ValueError(f"unknown normalize_over {normalize_over!r}; choose one of {reference.NORMALIZE_OVER}")
    if scale is not None and score != "scaled_dot":
        raise ValueError(f"scale applies to score='scaled_dot' only, got scale={scale!r} with score={score!r}")
    if score == "exp_kernel":
        if kernel_params is None:
            raise ValueError("score='exp_kernel' needs kernel_params, a tensor [2] holding (sigma, lengthscale)")
        _check_float("kernel_params", kernel_params, 1, "[2] (sigma, lengthscale)")
        if kernel_params.numel() != 2:
            raise ValueError(f"kernel_params must have shape [2] (sigma, lengthscale), got {list(kernel_params.shape)}")
        _check_same(graph, "q", q, kernel_params=kernel_params)
    elif kernel_params is not None:
        raise ValueError(f"kernel_params applies to score='exp_kernel' only, got it with score={score!r}")


def _prepare(q, k, scale, score, normalize, normalize_over, kernel_params):
    """(q, k, scale, backend options, backend kwargs) after rewriting cosine / Pearson scores
    as scaled-dot scores (scale 1) of per-node unit vectors, which every backend runs."""
    if score in ("cosine", "pearson"):
        q, k = reference.unit_qk(q, k, center=(score == "pearson"))
        score, s = "scaled_dot", 1.0
    else:
        s = _scale(scale, q.size(-1)) if score == "scaled_dot" else 1.0
    opts = {}
    if score != "scaled_dot":
        opts["score"] = score
    if normalize != "softmax":
        opts["normalize"] = normalize
    if normalize_over != "target":
        opts["normalize_over"] = normalize_over
    kw = dict(opts)
    if kernel_params is not None:
        kw["kernel_params"] = kernel_params.contiguous()
    return q.contiguous(), k.contiguous(), s, opts, kw


def edge_attention(
    graph: Graph,
    q: torch.Tensor,
    k: torch.Tensor,
    scale: Optional[float] = None,
    *,
    score: str = "scaled_dot",
    normalize: str = "softmax",
    normalize_over: str = "target",
    kernel_params: Optional[torch.Tensor] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    r"""Multi-head attention coefficients ``a [E, H]`` of every edge ``e = j -> i``.

    Defaults: ``a[e, h] = softmax_{j -> i}(scale <q[i, h], k[j, h]>)``, a softmax over
    the in-edges of each target ``i``, per head.

    Args:
        q, k: ``[N, H, D]`` queries (of targets) and keys (of sources).
        scale: of ``score="scaled_dot"`` (the only score that takes one); defaults
            to ``1 / sqrt(D)``.
        score: ``"scaled_dot"``, ``"cosine"``, ``"pearson"`` or ``"exp_kernel"``
            (:mod:`graphode.ops.reference` gives each formula).
        normalize: ``"softmax"`` or ``"squareplus"`` (shifted by one global max over
            all edges and heads, then divided by the group sum + 1e-16).
        normalize_over: ``"target"`` (each target's in-edges sum to 1) or
            ``"source"`` (each source's out-edges sum to 1).
        kernel_params: ``[2]`` tensor ``(sigma, lengthscale)``, for ``"exp_kernel"`` only.
        backend: None (automatic; falls back to "reference" for options the automatic
            backend does not implement) or a name from ``BACKENDS`` (raises
            :class:`BackendUnavailableError` if it lacks an option).

    Returns:
        ``[E, H]`` in the graph's edge order.
    """
    if _runs_ops_itself(graph):
        return graph.edge_attention(q, k, scale, score=score, normalize=normalize, normalize_over=normalize_over,
                                    kernel_params=kernel_params, backend=backend)
    _check_graph(graph)
    _check_qk(graph, q, k)
    _check_options(graph, q, scale, score, normalize, normalize_over, kernel_params)
    q, k, s, opts, kw = _prepare(q, k, scale, score, normalize, normalize_over, kernel_params)
    name = resolve_backend(backend, q.device, opts)
    return backend_module(name).edge_attention(graph, q, k, s, **kw)


def attention_diffusion(
    graph: Graph,
    q: torch.Tensor,
    k: torch.Tensor,
    x: torch.Tensor,
    scale: Optional[float] = None,
    *,
    score: str = "scaled_dot",
    normalize: str = "softmax",
    normalize_over: str = "target",
    kernel_params: Optional[torch.Tensor] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    r"""Fused attention diffusion ``y[i] = (1/H) \sum_h \sum_{j \to i} a_{ijh} x[j]``.

    The attention ``a`` is :func:`edge_attention`'s with the same options (always
    aggregated into targets, whatever ``normalize_over`` groups).  The compiled
    forward never materialises an ``[E, H]`` or ``[E, F]`` tensor: it streams each
    row's in-edges with a max-subtracted softmax and keeps only the per-row,
    per-head log-sum-exp ``[N, H]`` for the backward pass.  The CPU backward
    uses one temporary per-edge record of ``E * (1 + H)`` values (the
    head-averaged attention and the scaled score gradients), written by its
    pass over targets and read by its pass over sources (no atomics); it is
    freed when the backward returns (~21 MB at E = 1M, H = 4).  Options a
    backend does not implement yet run on "reference" when the backend was
    chosen automatically.

    Args:
        q, k: ``[N, H, D]``; x: ``[N, F]``; scale, score, normalize,
        normalize_over, kernel_params, backend: as in :func:`edge_attention`.

    Returns:
        ``[N, F]``; a node with no in-edges gets 0.
    """
    if _runs_ops_itself(graph):
        return graph.attention_diffusion(q, k, x, scale, score=score, normalize=normalize,
                                         normalize_over=normalize_over, kernel_params=kernel_params, backend=backend)
    _check_graph(graph)
    _check_qk(graph, q, k)
    _check_float("x", x, 2, "[N, F]")
    _check_same(graph, "q", q, x=x)
    _check_nodes(graph, x=x)
    _check_options(graph, q, scale, score, normalize, normalize_over, kernel_params)
    q, k, s, opts, kw = _prepare(q, k, scale, score, normalize, normalize_over, kernel_params)
    name = resolve_backend(backend, x.device, opts)
    return backend_module(name).attention_diffusion(graph, q, k, x.contiguous(), s, **kw)
