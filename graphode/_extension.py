"""Loading of the compiled extension ``graphode._C`` (optional).

``import graphode._C`` registers the ``torch.ops.graphode`` operators
(``TORCH_LIBRARY(graphode, ...)``).  When it is missing, graphode still works
on the reference ops; asking for the "cpu" or "cuda" backend then raises an
error that says how to build it.
"""
from __future__ import annotations

from typing import Optional

_C = None
_error: Optional[str] = None


def load_extension():
    """Import ``graphode._C`` once; returns the module or None (see ``extension_error``)."""
    global _C, _error
    if _C is None and _error is None:
        try:
            from . import _C as mod  # noqa: F401  (registers torch.ops.graphode.*)

            _C = mod
        except ImportError as e:  # not built, or built against another torch
            _error = str(e)
    return _C


def extension_error() -> Optional[str]:
    load_extension()
    return _error
