"""Models: thin layers that compose :mod:`graphode.ops` and :mod:`graphode.solvers`.

Every model is built from a dataset and a config dict by a builder in
:data:`MODELS` (``graphode train --model NAME`` uses the same table)::

    model = graphode.models.build("grand-l", dataset, config)
    logits = model(dataset.x)          # [N, C]

Builders are looked up lazily, so importing this package stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

__all__ = ["MODELS", "build", "register_model", "model_targets", "register_targets"]

# name -> "module:function"; function(dataset, config: dict) -> torch.nn.Module
MODELS: Dict[str, str] = {
    "grand-l": "graphode.models.grand:build_grand_l",
    "grand-nl": "graphode.models.grand:build_grand_nl",
    "grand-nl-rw": "graphode.models.grand:build_grand_nl_rw",
    "grand-laplacian": "graphode.models.grand:build_grand_laplacian",
    "gcn": "graphode.models.gcn:build_gcn",
}


def _add_baselines() -> None:
    # Deep-GCN comparison baselines (PyG layers, imported only when built).
    from .baselines import BASELINE_MODELS

    for name, target in BASELINE_MODELS.items():
        MODELS.setdefault(name, target)


_add_baselines()


def register_model(name: str, target: "str | Callable") -> None:
    """Add a builder (a callable, or a ``"module:function"`` string) under ``name``."""
    MODELS[name] = target


def model_targets(names) -> Dict[str, Any]:
    """The registry entries (``"module:function"`` or callables) of ``names``, to ship to
    another process, where :func:`register_targets` makes models registered at run time
    here resolve too."""
    return {n: MODELS[n] for n in names if n in MODELS}


def register_targets(targets: Dict[str, Any]) -> None:
    """Register the entries of :func:`model_targets` that this process's registry lacks
    (no-op where they are already there)."""
    for name, target in (targets or {}).items():
        if MODELS.get(name) is not target and MODELS.get(name) != target:
            register_model(name, target)


def _resolve(name: str) -> Callable:
    try:
        target = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}") from None
    if callable(target):
        return target
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def build(name: str, dataset, config: Dict[str, Any]):
    """Build model ``name`` for ``dataset`` (a :class:`graphode.datasets.NodeDataset`)."""
    return _resolve(name)(dataset, dict(config))


def __getattr__(name):
    # graphode.models.GRAND, graphode.models.GCN, ... are imported on first use.
    lazy = {
        "GRAND": "graphode.models.grand",
        "GCN": "graphode.models.gcn",
    }
    if name in lazy:
        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'graphode.models' has no attribute {name!r}")
