"""Graph ops: SpMM, edge attention and fused attention diffusion; and the fused
dropout with a counter-based RNG (``dropout``, no graph).

Every op takes a :class:`graphode.Graph` (CSR over targets, see its docstring)
and ``backend=None`` (automatic) or one of ``"reference"``, ``"cpu"``,
``"triton"``, ``"cuda"``.  Inputs are validated once, by the op, before any
backend runs (``_checks``); backends may assume contiguous tensors of one
dtype on the graph's device.

All ops are differentiable on every backend: autograd through the pure-torch
``reference``, and one ``torch.autograd.Function`` per op (in the op's module,
``graphode/ops/<op>.py``) over the compiled backends' forward and backward
kernels.  Where each op's parts live, and how to add one: ARCHITECTURE.md.
"""
from __future__ import annotations

from . import reference
from ._checks import set_check_finite
from ._dispatch import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    get_backend,
    resolve_backend,
    set_backend,
    use_backend,
)
from .attention_diffusion import attention_diffusion
from .dropout import dropout, dropout_seed
from .edge_attention import edge_attention
from .spmm import spmm

__all__ = [
    "spmm",
    "edge_attention",
    "attention_diffusion",
    "dropout",
    "dropout_seed",
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
