"""``spmm``: sparse-dense product over in-edges (public op, autograd, fake kernels).

Its parts in every layer: ``reference.spmm`` (the ground truth), ``csrc/spmm.cpp``
(schema and torch wrappers) over ``csrc/cpu/spmm_cpu.h`` and
``csrc/cuda/spmm_cuda.cu``, ``kernels/spmm.py`` (Triton), ``tests/ops/test_spmm.py``
and ``bench/test_bench_spmm.py``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..graph import Graph
from . import reference
from ._autograd import first_order_only
from ._checks import check_edges, check_float, check_graph, check_nodes, check_same, needs_grad, runs_ops_itself
from ._dispatch import backend_module, native_fake, resolve_backend

__all__ = ["spmm"]


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
    if runs_ops_itself(graph):
        return graph.spmm(edge_weight, x, backend=backend)
    check_graph(graph)
    check_float("x", x, 2, "[N, F]")
    check_float("edge_weight", edge_weight, 1, "[E]")
    check_edges(graph, "edge_weight", edge_weight)
    check_same(graph, "x", x, edge_weight=edge_weight)
    check_nodes(graph, x=x)
    name = resolve_backend(backend, x.device, op="spmm")
    if name == "reference":
        return reference.spmm(graph, edge_weight, x)
    impl = backend_module(name)
    w, x = edge_weight.contiguous(), x.contiguous()
    if needs_grad(w, x):
        return _Spmm.apply(impl, graph, w, x)
    return impl.run("spmm", graph, w, x)


class _Spmm(torch.autograd.Function):
    """The autograd formula of spmm for every compiled backend (their custom ops
    ``spmm`` / ``spmm_backward`` are plain kernels)."""

    @staticmethod
    def forward(ctx, impl, graph, w, x):
        ctx.impl, ctx.graph = impl, graph
        ctx.save_for_backward(w, x)
        return impl.run("spmm", graph, w, x)

    @staticmethod
    @first_order_only("spmm")
    def backward(ctx, grad):
        w, x = ctx.saved_tensors
        need_w, need_x = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        gw, gx = ctx.impl.run("spmm_backward", ctx.graph, grad.contiguous(), w, x, need_w, need_x)
        return None, None, gw if need_w else None, gx if need_x else None


# --------------------------------------------------------------------------- fake kernels of graphode._C
@native_fake("spmm")
def _(rowptr, col, csc_ptr, csc_row, csc_perm, weight, x):
    torch._check(x.dim() == 2, lambda: "graphode::spmm: x must be [N, F]")
    return x.new_empty(x.shape)


@native_fake("spmm_backward")
def _(rowptr, col, csc_ptr, csc_row, csc_perm, grad_out, weight, x, need_weight, need_x):
    gw = weight.new_empty(weight.shape) if need_weight else weight.new_empty((0,))
    gx = x.new_empty(x.shape) if need_x else x.new_empty((0,))
    return gw, gx
