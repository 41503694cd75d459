"""graphode's Triton backend (installed as ``graphode.kernels``).

One module per op (``spmm``, ``edge_attention``, ``attention_diffusion``, ``dropout``):
its ``@triton.jit`` kernels, their launchers and the custom ops
``torch.ops.graphode_triton.<op>`` and ``<op>_backward`` (with fake
implementations, so they trace under ``torch.compile``).  The custom ops take
the graph's CSR/CSC arrays, its cached split plan for huge-degree rows (see
``_plan``) and the split size; they are plain kernels, differentiated by the
public op's autograd formula (``graphode/ops/<op>.py``).

This package is the "triton" backend object of :mod:`graphode.ops`:

* ``supports(op)``: whether ``torch.ops.graphode_triton.<op>`` exists;
* ``run(op, graph, *args)``: calls it with the graph's arrays and plans
  (``bind`` returns the op and that argument tuple).

Kernels run compiled on CUDA tensors; on CPU tensors they run in Triton's
interpreter, which requires ``TRITON_INTERPRET=1`` in the environment before
``triton`` is first imported (that is how the tests exercise them without a GPU).

float16/bfloat16 inputs accumulate in float32; float32 and float64 are exact
to their own precision (float64 accumulates in float64).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from . import attention_diffusion, dropout, edge_attention, spmm  # noqa: F401  (register torch.ops.graphode_triton.*)
from ._common import INTERPRET
from ._plan import build_plan, col_plan, get_split_edges, row_plan, set_split_edges

__all__ = ["INTERPRET", "build_plan", "get_split_edges", "set_split_edges", "graph_args", "supports", "bind", "run"]

name = "triton"
_ops: Dict[str, Callable] = {}


def graph_args(graph, chunk: int | None = None):
    """The leading tensor arguments of every ``graphode_triton`` op for ``graph``:
    ``(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks)``
    and the split size they were planned with."""
    chunk = get_split_edges() if chunk is None else int(chunk)
    return (*graph.csr(), *row_plan(graph, chunk), *col_plan(graph, chunk)), chunk


def supports(op: str) -> bool:
    """Whether this backend has kernels for ``op``."""
    return hasattr(torch.ops.graphode_triton, op)


def bind(op: str, graph, *args):
    """``(torch.ops.graphode_triton.<op>.default, its full argument tuple)``: the graph's
    arrays and plans, ``args``, the split size (tests run opcheck on it); ``graph`` None
    (an op without a graph, ``dropout``): ``args`` alone."""
    fn = _ops.get(op)
    if fn is None:
        fn = _ops[op] = getattr(torch.ops.graphode_triton, op).default
    if graph is None:
        return fn, args
    lead, chunk = graph_args(graph)
    return fn, (*lead, *args, chunk)


def run(op: str, graph, *args):
    """Calls the op (no autograd)."""
    fn, full = bind(op, graph, *args)
    return fn(*full)
