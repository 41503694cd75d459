"""Input validation shared by every public op (``graphode.ops.<op>``).

Ops validate once, here, before any backend runs; backends may then assume
contiguous tensors of one dtype on the graph's device.  Every error names the
argument and what was expected.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch

from ..graph import Graph
from . import reference

__all__ = ["set_check_finite", "runs_ops_itself", "check_graph", "check_float", "check_same", "check_nodes", "check_qk", "check_edges",
           "resolve_scale", "needs_grad", "check_attention_options", "attention_args"]

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_check_finite = os.environ.get("GRAPHODE_CHECK_FINITE", "0") == "1"


def set_check_finite(enabled: bool) -> None:
    """Make every op check its inputs for NaN/Inf (one extra pass; off by default,
    also enabled by ``GRAPHODE_CHECK_FINITE=1``)."""
    global _check_finite
    _check_finite = bool(enabled)


def runs_ops_itself(graph) -> bool:
    """A graph object that implements the ops itself (``__graphode_ops__ = True``, e.g.
    :class:`graphode.distributed.DistGraph`, which exchanges halo rows and then calls
    these ops on its local :class:`Graph`)."""
    return not isinstance(graph, Graph) and getattr(graph, "__graphode_ops__", False) is True


def check_graph(graph) -> None:
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a graphode.Graph, got {type(graph).__name__}")
    if graph.num_nodes == 0:
        raise ValueError("the graph is empty (0 nodes)")


def check_float(name: str, t, ndim: int, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {list(t.shape)}")
    if t.dtype not in _FLOAT:
        raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")
    if _check_finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def check_same(graph: Graph, ref_name: str, ref: torch.Tensor, **others) -> None:
    """``ref`` on the graph's device; ``others`` on ref's device with ref's dtype."""
    if ref.device != graph.device:
        raise ValueError(f"{ref_name} is on {ref.device} but the graph is on {graph.device}; use graph.to(...)")
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
        if t.dtype != ref.dtype:
            raise ValueError(f"dtype mismatch: {name} is {t.dtype} but {ref_name} is {ref.dtype}")


def check_nodes(graph: Graph, **tensors) -> None:
    for name, t in tensors.items():
        if t.size(0) != graph.num_nodes:
            raise ValueError(f"{name} has {t.size(0)} rows but the graph has {graph.num_nodes} nodes")


def check_edges(graph: Graph, name: str, t: torch.Tensor) -> None:
    if t.size(0) != graph.num_edges:
        raise ValueError(f"{name} has {t.size(0)} entries but the graph has {graph.num_edges} edges")


def check_qk(graph: Graph, q, k) -> None:
    check_float("q", q, 3, "[N, H, D]")
    check_float("k", k, 3, "[N, H, D]")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [N, H, D], got {list(q.shape)} and {list(k.shape)}")
    check_same(graph, "q", q, k=k)
    check_nodes(graph, q=q)


def resolve_scale(scale: Optional[float], d: int) -> float:
    """``scale``, or ``1 / sqrt(d)`` when it is None; must be finite."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether a call must go through the op's autograd Function."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def check_attention_options(graph: Graph, q: torch.Tensor, scale, score: str, normalize: str, normalize_over: str,
                            kernel_params) -> None:
    """The options of edge_attention / attention_diffusion (see ``graphode.ops.reference``)."""
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
        check_float("kernel_params", kernel_params, 1, "[2] (sigma, lengthscale)")
        if kernel_params.numel() != 2:
            raise ValueError(f"kernel_params must have shape [2] (sigma, lengthscale), got {list(kernel_params.shape)}")
        check_same(graph, "q", q, kernel_params=kernel_params)
    elif kernel_params is not None:
        raise ValueError(f"kernel_params applies to score='exp_kernel' only, got it with score={score!r}")


def attention_args(q, k, scale, score, normalize, normalize_over, kernel_params):
    """``(q, k, scale, options, kwargs)`` for the backends: cosine / Pearson scores are
    rewritten as scaled-dot scores (scale 1) of per-node unit vectors, which every
    backend runs; ``options`` holds the non-default options (for the capability check),
    ``kwargs`` those and ``kernel_params`` (for the reference)."""
    if score in ("cosine", "pearson"):
        q, k = reference.unit_qk(q, k, center=(score == "pearson"))
        score, s = "scaled_dot", 1.0
    else:
        s = resolve_scale(scale, q.size(-1)) if score == "scaled_dot" else 1.0
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
