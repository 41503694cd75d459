"""graphode: graph neural ODEs in PyTorch.

Fast ODE solvers with a drop-in ``torchdiffeq`` API, fused graph kernels
(SpMM, edge attention, attention diffusion) on C++/OpenMP, Triton and CUDA
backends, and GRAND / deep-GCN models built from them.

>>> import graphode
>>> from graphode import odeint, odeint_adjoint      # drop-in for torchdiffeq
>>> g = graphode.Graph.from_edge_index(edge_index)   # CSR over targets
>>> y = graphode.ops.spmm(g, w, x)                    # y[i] = sum_{j->i} w x[j]
"""
from __future__ import annotations

import importlib

from . import ops
from . import _extension
from .graph import Graph, grid_graph, power_law_graph

__version__ = "0.1.0"

# Submodules and names loaded on first use, so that `import graphode` stays
# light (no scipy/yaml/matplotlib at import time).
_LAZY = {
    "odeint": ("graphode.solvers", "odeint"),
    "odeint_adjoint": ("graphode.solvers", "odeint_adjoint"),
    "odeint_event": ("graphode.solvers", "odeint_event"),
    "solve": ("graphode.solvers", "solve"),
    "solvers": ("graphode.solvers", None),
    "linalg": ("graphode.linalg", None),
    "datasets": ("graphode.datasets", None),
    "models": ("graphode.models", None),
    "nn": ("graphode.nn", None),
    "monitor": ("graphode.monitor", None),
    "train": ("graphode.train", None),
    "kernels": ("graphode.kernels", None),
    "transforms": ("graphode.transforms", None),
    "regularizers": ("graphode.regularizers", None),
    "sweep": ("graphode.sweep", None),
}

__all__ = ["Graph", "grid_graph", "power_law_graph", "ops", "extension_info", "__version__", *_LAZY]


def extension_info() -> dict:
    """What the installation provides: the compiled extension, its CUDA kernels,
    triton, and the backends that can run."""
    C = _extension.load_extension()
    try:
        import triton  # noqa: F401

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "extension": C is not None,
        "extension_error": _extension.extension_error(),
        "cuda_kernels": bool(C is not None and getattr(C, "WITH_CUDA", False)),
        "openmp_threads": (C.omp_max_threads() if C is not None and hasattr(C, "omp_max_threads") else None),
        "triton": triton_version,
        "backends": ops.available_backends(),
    }


def __getattr__(name):
    try:
        mod_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'graphode' has no attribute {name!r}") from None
    mod = importlib.import_module(mod_name)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
