"""Backend selection for graphode's graph ops.

Backends
--------
``"reference"``  pure PyTorch (``graphode.ops.reference``); always available.
``"cpu"``        C++/OpenMP kernels in ``graphode._C`` (CPU tensors).
``"triton"``     Triton kernels in ``graphode.kernels`` (CUDA tensors; CPU
                 tensors under ``TRITON_INTERPRET=1``, for tests).
``"cuda"``       CUDA C++ kernels in ``graphode._C`` (built only where torch has CUDA).

Automatic choice (``backend=None``): "cpu" for CPU tensors when ``_C`` is
built, "triton" for CUDA tensors when triton is importable (else "cuda"),
and "reference" otherwise; an automatically chosen backend that lacks the op
gives way to "reference" for that call.  The user overrides the choice per
call (``backend=``), per block (``with graphode.ops.use_backend("reference"):
...``), globally (``set_backend``) or through the environment variable
``GRAPHODE_BACKEND``; an explicitly requested backend that lacks the op
raises :class:`BackendUnavailableError`.

The compiled backends
---------------------
"cpu", "cuda" and "triton" are objects with two methods, used by the public
ops (``graphode/ops/<op>.py``) and nothing else:

* ``supports(op) -> bool``: whether the backend has kernels for ``op``;
* ``run(op, graph, *args)``: calls the backend's custom op ``op`` (e.g.
  ``"spmm"`` or ``"spmm_backward"``) with the graph's arrays and ``args``,
  without autograd (each public op owns its one autograd formula);
  ``bind(op, graph, *args)`` returns that custom op and its argument tuple.

So an op is added to a backend by defining its custom op there
(``csrc/<op>.cpp`` or ``kernels/<op>.py``); nothing here changes.

Attention options: a backend may declare what it implements of each attention
option (``score``, ``normalize``, ``normalize_over``), per op with a method
``attention_options(op) -> {option: values}`` or for every op with a
dictionary ``ATTENTION_OPTIONS``; without a declaration it implements the
defaults (:data:`DEFAULT_ATTENTION_OPTIONS`) only.  When the automatically chosen backend
lacks an option a call asks for, that call runs on "reference"; a backend the
user asked for (per call, per block, globally or by the environment) that lacks
it raises :class:`BackendUnavailableError` naming the option.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import Dict, Mapping, Optional, Tuple

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")

__all__ = [
    "BACKENDS",
    "DEFAULT_ATTENTION_OPTIONS",
    "backend_supports",
    "BackendUnavailableError",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "resolve_backend",
]


class BackendUnavailableError(RuntimeError):
    """Raised when a backend the user asked for is not built or not importable, or does
    not implement the op or an option the call asks for."""


#: What a backend without an ``ATTENTION_OPTIONS`` declaration implements.
DEFAULT_ATTENTION_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "score": ("scaled_dot",),
    "normalize": ("softmax",),
    "normalize_over": ("target",),
}


_state = threading.local()
_global_override: Optional[str] = None


def _check_name(name: Optional[str]) -> Optional[str]:
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS} or None (automatic)")
    return name


def set_backend(name: Optional[str]) -> None:
    """Force ``name`` for every op call without an explicit ``backend=`` (None: automatic)."""
    global _global_override
    _global_override = _check_name(name)


def get_backend() -> Optional[str]:
    """The override in force (block, global or ``GRAPHODE_BACKEND``), or None for automatic."""
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    if _global_override is not None:
        return _global_override
    env = os.environ.get("GRAPHODE_BACKEND") or None
    return _check_name(env)


@contextlib.contextmanager
def use_backend(name: Optional[str]):
    """Context manager: ops called inside use ``name`` unless they pass ``backend=``."""
    _check_name(name)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


# --------------------------------------------------------------------------- availability
_BUILD_HINT = (
    "build it with `pip install -e . --no-build-isolation` (or `make`) from the graphode "
    "source tree; a C++17 compiler with OpenMP is required"
)
_modules: Dict[str, object] = {}
_errors: Dict[str, str] = {}


def _load(name: str):
    """The backend object of ``name``, or None (the reason is kept for the error message)."""
    if name in _modules:
        return _modules[name]
    if name in _errors:
        return None
    try:
        if name == "reference":
            from . import reference as mod
        elif name in ("cpu", "cuda"):
            native = importlib.import_module("graphode.ops._native")
            mod = native.backend(name)
        elif name == "triton":
            mod = importlib.import_module("graphode.kernels")
        else:  # pragma: no cover - guarded by _check_name
            raise ValueError(name)
    except BackendUnavailableError as e:
        _errors[name] = str(e)
        return None
    except ImportError as e:
        if name == "triton":
            _errors[name] = (
                f"triton is not importable ({e}); install it with `pip install triton` "
                "(Linux), or use backend='cpu'/'reference'"
            )
        else:
            _errors[name] = f"the compiled extension graphode._C is missing ({e}); {_BUILD_HINT}"
        return None
    _modules[name] = mod
    return mod


def available_backends():
    """Names of the backends that can run on this installation."""
    return tuple(b for b in BACKENDS if _load(b) is not None)


def backend_module(name: str):
    """The backend object of ``name`` (raises :class:`BackendUnavailableError` when it cannot run here)."""
    mod = _load(name)
    if mod is None:
        raise BackendUnavailableError(f"graphode backend {name!r} is not available: {_errors[name]}")
    return mod


def _has_op(name: str, op: Optional[str]) -> bool:
    return op is None or name == "reference" or _load(name).supports(op)


#: The ops that take attention options.
ATTENTION_OPS = ("edge_attention", "attention_diffusion")


def _declared_options(mod, op: str) -> Mapping[str, Tuple[str, ...]]:
    per_op = getattr(mod, "attention_options", None)
    if per_op is not None:
        return per_op(op)
    return getattr(mod, "ATTENTION_OPTIONS", DEFAULT_ATTENTION_OPTIONS)


def backend_supports(name: str, options: Optional[Mapping[str, str]], op: Optional[str] = None) -> Optional[str]:
    """None when backend ``name`` (importable) implements every ``option=value`` in ``options``
    for ``op`` (None: for every attention op), else the first one it lacks, as ``"key='value'"``."""
    if not options or name == "reference":
        return None
    mod = backend_module(name)
    for o in (op,) if op in ATTENTION_OPS else ATTENTION_OPS:
        declared = _declared_options(mod, o)
        for key, value in options.items():
            if value not in declared.get(key, DEFAULT_ATTENTION_OPTIONS.get(key, ())):
                return f"{key}={value!r}"
    return None


def _triton_ok_on(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: Optional[str], device: torch.device, options: Optional[Mapping[str, str]] = None,
                    op: Optional[str] = None) -> str:
    """The backend name that a call of ``op`` (any op when None) with ``backend`` on ``device`` will use.

    ``options``: the attention options of the call (``{"normalize": "squareplus", ...}``);
    an automatically chosen backend that lacks the op or one of them gives way to
    "reference", an explicitly requested one raises :class:`BackendUnavailableError`."""
    name = _check_name(backend) if backend is not None else get_backend()
    if name is None:
        if device.type == "cpu":
            candidates = ("cpu",)
        elif device.type == "cuda":
            candidates = ("triton", "cuda")
        else:
            candidates = ()
        for cand in candidates:
            if _load(cand) is not None and _has_op(cand, op) and backend_supports(cand, options, op) is None:
                return cand
        return "reference"
    # An explicitly requested backend must exist, suit the device and have the op.
    mod = backend_module(name)
    if op is not None and name != "reference" and not mod.supports(op):
        raise BackendUnavailableError(f"graphode backend {name!r} has no kernels for {op!r}; use backend='reference'")
    if name == "cpu" and device.type != "cpu":
        raise BackendUnavailableError(f"backend 'cpu' needs CPU tensors, got tensors on {device}")
    if name == "cuda" and device.type != "cuda":
        raise BackendUnavailableError(f"backend 'cuda' needs CUDA tensors, got tensors on {device}")
    if name == "triton" and not _triton_ok_on(device):
        raise BackendUnavailableError(
            f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got {device}"
        )
    lacking = backend_supports(name, options, op)
    if lacking is not None:
        raise BackendUnavailableError(
            f"graphode backend {name!r} does not implement {lacking}{f' for {op}' if op else ''} yet; "
            "use backend='reference' "
            f"(or automatic selection, which falls back to 'reference' for this call)"
        )
    return name


def native_fake(op: str):
    """Decorator: the fake (meta) kernel of ``graphode::<op>`` of graphode._C, which
    lets it trace under ``torch.compile`` (a no-op when the extension is not built)."""
    from .._extension import load_extension

    if load_extension() is None:
        return lambda fn: fn
    return torch.library.register_fake(f"graphode::{op}")
