"""``attention_diffusion``: the fused ``(1/H) sum_h A_h x`` with edge_attention's
``A_h`` (public op, autograd, fake kernels).

Its parts in every layer: ``reference.attention_diffusion``,
``csrc/attention_diffusion.cpp`` over ``csrc/cpu/attention_diffusion_cpu.h`` and
``csrc/cuda/attention_diffusion_cuda.cu``, ``kernels/attention_diffusion.py``,
``tests/ops/test_attention_diffusion.py`` and
``bench/test_bench_attention_diffusion.py``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..graph import Graph
from . import reference
from ._autograd import first_order_only
from ._checks import (attention_args, check_attention_options, check_float, check_graph, check_nodes, check_qk,
                      check_same, needs_grad, runs_ops_itself)
from ._dispatch import backend_module, native_fake, resolve_backend

__all__ = ["attention_diffusion"]


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
    if runs_ops_itself(graph):
        return graph.attention_diffusion(q, k, x, scale, score=score, normalize=normalize,
                                         normalize_over=normalize_over, kernel_params=kernel_params, backend=backend)
    check_graph(graph)
    check_qk(graph, q, k)
    check_float("x", x, 2, "[N, F]")
    check_same(graph, "q", q, x=x)
    check_nodes(graph, x=x)
    check_attention_options(graph, q, scale, score, normalize, normalize_over, kernel_params)
    q, k, s, opts, kw = attention_args(q, k, scale, score, normalize, normalize_over, kernel_params)
    name = resolve_backend(backend, x.device, opts, op="attention_diffusion")
    if name == "reference":
        return reference.attention_diffusion(graph, q, k, x, s, **kw)
    impl = backend_module(name)
    x = x.contiguous()
    if needs_grad(q, k, x):
        return _AttentionDiffusion.apply(impl, graph, q, k, x, s)
    return impl.run("attention_diffusion", graph, q, k, x, s)[0]


class _AttentionDiffusion(torch.autograd.Function):
    """The autograd formula of attention_diffusion for every compiled backend.

    The forward custom op also returns the per-row, per-head log-sum-exp
    ``lse [N, H]`` (float32 for half inputs); it is saved for the backward op
    and never leaves this Function."""

    @staticmethod
    def forward(ctx, impl, graph, q, k, x, scale):
        out, lse = impl.run("attention_diffusion", graph, q, k, x, scale)
        ctx.impl, ctx.graph, ctx.scale = impl, graph, scale
        ctx.save_for_backward(q, k, x, lse)
        return out

    @staticmethod
    @first_order_only("attention_diffusion")
    def backward(ctx, grad):
        q, k, x, lse = ctx.saved_tensors
        need_q, need_k, need_x = ctx.needs_input_grad[2:5]
        gq, gk, gx = ctx.impl.run(
            "attention_diffusion_backward", ctx.graph, grad.contiguous(), lse, q, k, x, ctx.scale,
            need_q or need_k, need_x,
        )
        return None, None, gq if need_q else None, gk if need_k else None, gx if need_x else None, None


# --------------------------------------------------------------------------- fake kernels of graphode._C
@native_fake("attention_diffusion")
def _(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale):
    torch._check(q.dim() == 3 and x.dim() == 2, lambda: "graphode::attention_diffusion: q [N, H, D], x [N, F]")
    return x.new_empty(x.shape), q.new_empty((q.shape[0], q.shape[1]))


@native_fake("attention_diffusion_backward")
def _(rowptr, col, csc_ptr, csc_row, csc_perm, grad_out, lse, q, k, x, scale, need_qk, need_x):
    gq = q.new_empty(q.shape) if need_qk else q.new_empty((0,))
    gk = k.new_empty(k.shape) if need_qk else k.new_empty((0,))
    gx = x.new_empty(x.shape) if need_x else x.new_empty((0,))
    return gq, gk, gx
