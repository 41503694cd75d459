"""The compiled backends "cpu" and "cuda": the ``torch.ops.graphode`` ops of ``graphode._C``.

Importing this module loads the extension, which registers the operators
(one schema block per op in ``csrc/<op>.cpp``, with its CPU and, where built,
CUDA kernels).  Their fake (meta) implementations, which let them trace
under ``torch.compile`` / FakeTensor, are registered by each op's module
(``graphode/ops/<op>.py``) through :func:`graphode.ops._dispatch.native_fake`,
next to the op's autograd formula.

Importing fails (ImportError) when the extension is not built.  The custom
ops themselves are not differentiable: the public op calls them
inside its ``torch.autograd.Function`` (one formula for every compiled
backend), so differentiate ``graphode.ops.<op>``, not ``torch.ops.graphode.<op>``.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from .._extension import extension_error, load_extension
from ._dispatch import DEFAULT_ATTENTION_OPTIONS, BackendUnavailableError

_C = load_extension()
if _C is None:  # dispatch turns this into "backend unavailable, how to build"
    raise ImportError(extension_error() or "graphode._C could not be imported")

__all__ = ["backend", "has_cuda"]

_ops = torch.ops.graphode


def has_cuda() -> bool:
    """True when ``graphode._C`` was compiled with its CUDA kernels."""
    return bool(getattr(_C, "WITH_CUDA", False))


#: The attention options that graphode._C's kernels implement, per backend and op
#: (anything not listed: the defaults only; see _dispatch.backend_supports).
ATTENTION_OPTIONS = {
    ("cpu", "edge_attention"): {"score": ("scaled_dot",), "normalize": ("softmax", "squareplus"),
                                "normalize_over": ("target", "source")},
}


class NativeBackend:
    """The ops of ``graphode._C`` on one dispatch key ("CPU" or "CUDA")."""

    def __init__(self, name: str, key: str) -> None:
        self.name, self.key = name, key
        self._ops: Dict[str, Callable] = {}
        self._has: Dict[str, bool] = {}

    def attention_options(self, op: str):
        """What the kernels of ``op`` implement of each attention option."""
        return ATTENTION_OPTIONS.get((self.name, op), DEFAULT_ATTENTION_OPTIONS)

    def supports(self, op: str) -> bool:
        has = self._has.get(op)
        if has is None:
            has = self._has[op] = hasattr(_ops, op) and torch._C._dispatch_has_kernel_for_dispatch_key(
                f"graphode::{op}", self.key
            )
        return has

    def bind(self, op: str, graph, *args):
        """``(torch.ops.graphode.<op>.default, its full argument tuple)`` (tests run opcheck on it);
        ``graph`` None for an op without a graph (``dropout``)."""
        fn = self._ops.get(op)
        if fn is None:
            fn = self._ops[op] = getattr(_ops, op).default
        return fn, ((*graph.csr(), *args) if graph is not None else args)

    def run(self, op: str, graph, *args):
        fn, full = self.bind(op, graph, *args)
        return fn(*full)

    def __repr__(self) -> str:
        return f"<graphode backend {self.name!r} (graphode._C, {self.key} kernels)>"


_BACKENDS = {"cpu": NativeBackend("cpu", "CPU"), "cuda": NativeBackend("cuda", "CUDA")}


def backend(name: str) -> NativeBackend:
    """The backend object of "cpu" or "cuda" (:class:`BackendUnavailableError` for "cuda"
    when graphode._C was built without its CUDA kernels)."""
    if name == "cuda" and not has_cuda():
        raise BackendUnavailableError(
            "graphode._C was built without CUDA kernels (the installed torch has no CUDA, "
            "or GRAPHODE_WITH_CUDA=0); reinstall on a machine whose torch has CUDA"
        )
    return _BACKENDS[name]

