"""Trainer callbacks: the protocol of :func:`graphode.train.fit` and the callbacks
graphode ships.

* :class:`Callback` — the hooks the trainer calls (:mod:`graphode.callbacks._protocol`).
* :class:`GradientGuidedRewiring`, :func:`probe_skips` — the deep GCN's skip connections
  added during training ("Old can be Gold", :mod:`graphode.callbacks.skip_rewiring`).
* :class:`TrainingMonitor` — per-layer gradient flow and Dirichlet energy per epoch
  (defined in :mod:`graphode.monitor`, with the measurements it records).
* :func:`from_config` — the callbacks a run's config asks for.

Layering: models never import this package.  A model offers an interface (a GCN:
``layers``, ``add_skip``); whoever sets up the training run attaches the callbacks
(:func:`graphode.train.build_model`, ``graphode train``, or the user's
``fit(..., callbacks=[...])``)::

    from graphode.callbacks import GradientGuidedRewiring
    from graphode.models import GCN
    from graphode.train import fit

    model = GCN(ds.num_features, 64, ds.num_classes, num_layers=32, graph=ds.graph, init="isometric-code")
    fit(model, ds, {"epochs": 1500, "lr": 0.005}, callbacks=[GradientGuidedRewiring(p=0.1)])
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..monitor import TrainingMonitor
from . import skip_rewiring
from ._protocol import Callback
from .skip_rewiring import CRITERIA, GradientGuidedRewiring, probe_skips

__all__ = ["Callback", "GradientGuidedRewiring", "probe_skips", "CRITERIA", "TrainingMonitor", "from_config"]


def from_config(model: Any, config: Dict[str, Any]) -> List[Any]:
    """The callbacks ``config`` asks for, for ``model``: the skip rewiring when
    ``config["rewiring"]`` names a criterion and the model can take skips (it has
    ``add_skip``; for other models, e.g. the deep-GCN baselines, whose configs carry the
    key at ``"none"``, the key has no effect).  Keys: :func:`skip_rewiring.from_config`."""
    out: List[Any] = []
    rewiring = skip_rewiring.from_config(config)
    if rewiring is not None and callable(getattr(model, "add_skip", None)):
        out.append(rewiring)
    return out
