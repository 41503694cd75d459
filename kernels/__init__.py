"""graphode's Triton backend (installed as ``graphode.kernels``).

The backend interface used by :mod:`graphode.ops` (inputs already validated,
contiguous, one dtype, on the graph's device):

* ``spmm(graph, edge_weight, x)``
* ``edge_attention(graph, q, k, scale)``
* ``attention_diffusion(graph, q, k, x, scale)``

plus the raw launchers (``*_raw``: plain tensors in, tensors out, no autograd)
and the ``@triton.jit`` kernels (``*_kernel``).

Each calls a ``torch.ops.graphode_triton.*`` custom op (see ``_ops``) with the
graph's CSR/CSC arrays and its cached split plan for huge-degree rows (see
``_plan``), so all three are differentiable (the backward ops are Triton
kernels too) and pass ``torch.library.opcheck``.

Kernels run compiled on CUDA tensors; on CPU tensors they run in Triton's
interpreter, which requires ``TRITON_INTERPRET=1`` in the environment before
``triton`` is first imported (that is how the tests exercise them without a GPU).

float16/bfloat16 inputs accumulate in float32; float32 and float64 are exact
to their own precision (float64 accumulates in float64).
"""
from __future__ import annotations

import torch

from . import _ops  # noqa: F401  (registers torch.ops.graphode_triton.*)
from ._attention import (
    attention_diffusion_backward as attention_diffusion_backward_raw,
    attention_diffusion_forward as attention_diffusion_forward_raw,
    edge_attention_backward as edge_attention_backward_raw,
    edge_attention_forward as edge_attention_forward_raw,
)
from ._common import INTERPRET
from ._plan import build_plan, col_plan, get_split_edges, row_plan, set_split_edges
from ._spmm import spmm_backward as spmm_backward_raw
from ._spmm import spmm_forward as spmm_forward_raw

# The @triton.jit kernels themselves (see the module docstrings for their grids).
from ._attention import (  # noqa: E402
    _ad_bwd_cols_kernel as attention_diffusion_bwd_cols_kernel,
    _ad_bwd_rows_kernel as attention_diffusion_bwd_rows_kernel,
    _ad_fwd_kernel as attention_diffusion_fwd_kernel,
    _ea_bwd_cols_kernel as edge_attention_bwd_cols_kernel,
    _ea_bwd_rows_kernel as edge_attention_bwd_rows_kernel,
    _ea_fwd_kernel as edge_attention_fwd_kernel,
    _softmax_merge_kernel as softmax_merge_kernel,
)
from ._spmm import (  # noqa: E402
    _combine_sum_kernel as combine_sum_kernel,
    _sddmm_kernel as sddmm_kernel,
    _spmm_kernel as spmm_kernel,
)

__all__ = [
    "spmm",
    "edge_attention",
    "attention_diffusion",
    "attention_diffusion_lse",
    "graph_args",
    "INTERPRET",
    "build_plan",
    "get_split_edges",
    "set_split_edges",
    "spmm_forward_raw",
    "spmm_backward_raw",
    "edge_attention_forward_raw",
    "edge_attention_backward_raw",
    "attention_diffusion_forward_raw",
    "attention_diffusion_backward_raw",
    "spmm_kernel",
    "sddmm_kernel",
    "combine_sum_kernel",
    "edge_attention_fwd_kernel",
    "edge_attention_bwd_rows_kernel",
    "edge_attention_bwd_cols_kernel",
    "attention_diffusion_fwd_kernel",
    "attention_diffusion_bwd_rows_kernel",
    "attention_diffusion_bwd_cols_kernel",
    "softmax_merge_kernel",
]


def graph_args(graph, chunk: int | None = None):
    """The leading tensor arguments of every ``graphode_triton`` op for ``graph``:
    ``(rowptr, col, csc_ptr, csc_row, csc_perm, row_heavy, row_chunks, col_heavy, col_chunks)``
    and the split size they were planned with."""
    chunk = get_split_edges() if chunk is None else int(chunk)
    return (*graph.csr(), *row_plan(graph, chunk), *col_plan(graph, chunk)), chunk


def spmm(graph, edge_weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[i] = sum_{j -> i} w_e x[j]`` (``[N, F]``)."""
    args, chunk = graph_args(graph)
    return torch.ops.graphode_triton.spmm(*args, edge_weight, x, chunk)


def edge_attention(graph, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-target softmax of ``scale <q_i, k_j>`` over in-edges, ``[E, H]``."""
    args, chunk = graph_args(graph)
    return torch.ops.graphode_triton.edge_attention(*args, q, k, float(scale), chunk)


def attention_diffusion(graph, q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Fused ``(1/H) sum_h softmax(s_h) @ x`` over in-edges, ``[N, F]``; never builds ``[E, H]``/``[E, F]``."""
    return attention_diffusion_lse(graph, q, k, x, scale)[0]


def attention_diffusion_lse(graph, q, k, x, scale: float):
    """``(out [N, F], lse [N, H])``: the op's output and the per-row, per-head log-sum-exp it saves."""
    args, chunk = graph_args(graph)
    return torch.ops.graphode_triton.attention_diffusion(*args, q, k, x, float(scale), chunk)
