"""``edge_attention``: multi-head attention coefficients over each node's in-edges
(public op, autograd, fake kernels).

Its parts in every layer: ``reference.edge_attention``, ``csrc/edge_attention.cpp``
over ``csrc/cpu/edge_attention_cpu.h`` and ``csrc/cuda/edge_attention_cuda.cu``,
``kernels/edge_attention.py``, ``tests/ops/test_edge_attention.py`` and
``bench/test_bench_edge_attention.py``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..graph import Graph
from . import reference
from ._autograd import first_order_only
from ._checks import attention_args, check_attention_options, check_graph, check_qk, needs_grad, runs_ops_itself
from ._dispatch import backend_module, native_fake, resolve_backend

__all__ = ["edge_attention"]


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
    if runs_ops_itself(graph):
        return graph.edge_attention(q, k, scale, score=score, normalize=normalize, normalize_over=normalize_over,
                                    kernel_params=kernel_params, backend=backend)
    check_graph(graph)
    check_qk(graph, q, k)
    check_attention_options(graph, q, scale, score, normalize, normalize_over, kernel_params)
    q, k, s, opts, kw = attention_args(q, k, scale, score, normalize, normalize_over, kernel_params)
    name = resolve_backend(backend, q.device, opts, op="edge_attention")
    if name == "reference":
        return reference.edge_attention(graph, q, k, s, **kw)
    impl = backend_module(name)
    extra = option_args(opts)
    if needs_grad(q, k):
        return _EdgeAttention.apply(impl, graph, q, k, s, extra)
    return impl.run("edge_attention", graph, q, k, s, *extra)


def option_args(opts) -> tuple:
    """The trailing arguments of the custom ops for the non-default options ``opts``
    (``normalize``: 0 softmax, 1 squareplus; ``over_source``); none for the defaults,
    so that backends without the options keep their signature."""
    if not opts:
        return ()
    return (int(opts.get("normalize") == "squareplus"), opts.get("normalize_over") == "source")


class _EdgeAttention(torch.autograd.Function):
    """The autograd formula of edge_attention for every compiled backend."""

    @staticmethod
    def forward(ctx, impl, graph, q, k, scale, extra):
        attn = impl.run("edge_attention", graph, q, k, scale, *extra)
        ctx.impl, ctx.graph, ctx.scale, ctx.extra = impl, graph, scale, extra
        ctx.save_for_backward(q, k, attn)
        return attn

    @staticmethod
    @first_order_only("edge_attention")
    def backward(ctx, grad):
        q, k, attn = ctx.saved_tensors
        gq, gk = ctx.impl.run("edge_attention_backward", ctx.graph, grad.contiguous(), attn, q, k, ctx.scale,
                              *ctx.extra)
        return (None, None, gq if ctx.needs_input_grad[2] else None, gk if ctx.needs_input_grad[3] else None,
                None, None)


# --------------------------------------------------------------------------- fake kernels of graphode._C
@native_fake("edge_attention")
def _(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, scale, normalize=0, over_source=False):
    torch._check(q.dim() == 3, lambda: "graphode::edge_attention: q must be [N, H, D]")
    return q.new_empty((col.shape[0], q.shape[1]))


@native_fake("edge_attention_backward")
def _(rowptr, col, csc_ptr, csc_row, csc_perm, grad_attn, attn, q, k, scale, normalize=0, over_source=False):
    return q.new_empty(q.shape), k.new_empty(k.shape)
