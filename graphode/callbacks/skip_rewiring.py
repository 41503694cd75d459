"""Gradient-guided dynamic rewiring ("Old can be Gold", section 2.4) as a trainer callback:
skip connections added to a deep GCN's layers during training.  (Not GDC, the graph
rewiring transform of GRAND-nl-rw, which changes the graph before training.)

The rule (eq. 15-16): layer ``l`` permanently receives the skip connection
``alpha * h_0`` (``h_0`` = the first hidden layer's output before its
activation, added before layer ``l``'s activation) from the epoch where its
signal falls below a fraction of its value at the start of training:

* ``criterion="gradient_flow"`` (the paper): ``GF_l = ||dL/dW_l||_2`` measured
  after each backward, flagged when ``GF_l < p * GF_l(first epoch)``;
* ``criterion="dirichlet_energy"`` (the authors' code): the Dirichlet energy of
  layer ``l``'s pre-activation output in the training forward, flagged when
  ``E_l < threshold * E_l(first epoch)`` (``threshold = 0.4`` in the code);
  ``laplacian="augmented"`` is the paper's eq. 17-18, ``"sym"`` the plain
  ``I - D^-1/2 A D^-1/2`` the code measures with.

A skip is never removed.  With ``probe_epochs=K`` the layers are only checked
during the first ``K`` epochs (the authors' code probes for 200 epochs; it
then trains a *fresh* model with the found skips fixed — for that protocol use
:func:`probe_skips` and build the model with ``skips=...``).

The model only offers the interface below; this callback decides when to add a
skip.  Whoever sets up the training run attaches it: ``fit(model, dataset, config,
callbacks=[rewiring])``, or :func:`from_config` (what :func:`graphode.train.build_model`
and ``graphode train --rewiring`` use).

Minimal model interface (see :mod:`graphode.models.gcn`):

* ``model.layers`` — the ``L`` layers, each with a ``.weight`` parameter;
* ``model.add_skip(l, alpha) -> bool`` — install the skip (False: layer not
  eligible); optional ``model.skip_eligible(l) -> bool`` to skip the check
  for layers that cannot take one;
* for ``"dirichlet_energy"`` only: ``model.record_hidden`` (set to True by the
  callback) and ``model.pre_activations`` (the layers' pre-activation outputs
  of the last forward), and ``model.graph`` or ``trainer.dataset.graph``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..config import GCN as _GCN_SCHEMA
from ..config import REWIRING_CRITERIA

__all__ = ["GradientGuidedRewiring", "probe_skips", "from_config", "CRITERIA"]

CRITERIA = REWIRING_CRITERIA


class GradientGuidedRewiring:
    """Trainer callback adding permanent skips to layers whose signal collapses.

    Args:
        p: gradient-flow drop threshold (criterion ``"gradient_flow"``):
            flag layer ``l`` when ``GF_l < p * GF_l(0)``.
        alpha: the skip ratio ``alpha`` of eq. 16.
        criterion: ``"gradient_flow"`` (paper) or ``"dirichlet_energy"`` (code).
        threshold: energy drop threshold (criterion ``"dirichlet_energy"``).
        probe_epochs: check only during the first ``probe_epochs`` epochs
            (None: every epoch of training).
        norm: the gradient norm (2 in the paper).
        record_history: keep the criterion's values per epoch in ``history``.
        apply: install the skips in the model (False: only record which layers
            would be rewired, as the authors' code's probe run does).
        laplacian: the Laplacian of the Dirichlet energy (criterion
            ``"dirichlet_energy"``): ``"augmented"`` (paper) or ``"sym"`` (code);
            see :func:`graphode.monitor.dirichlet_energy`.

    Attributes:
        skips: ``{layer: epoch it was rewired}``.
        initial: the reference value of each checked layer (first epoch).
        history: ``[epoch][layer]`` values of the criterion.
    """

    def __init__(
        self,
        p: float = 0.1,
        alpha: float = 1.0,
        criterion: str = "gradient_flow",
        threshold: float = 0.4,
        probe_epochs: Optional[int] = None,
        norm: float = 2.0,
        record_history: bool = False,
        apply: bool = True,
        laplacian: str = "augmented",
    ) -> None:
        from ..monitor import LAPLACIANS

        if criterion not in CRITERIA:
            raise ValueError(f"unknown rewiring criterion {criterion!r}; choose one of {CRITERIA}")
        if laplacian not in LAPLACIANS:
            raise ValueError(f"unknown laplacian {laplacian!r}; choose one of {LAPLACIANS}")
        if not p > 0 and criterion == "gradient_flow":
            raise ValueError(f"p must be > 0, got {p}")
        self.p = float(p)
        self.alpha = float(alpha)
        self.criterion = criterion
        self.threshold = float(threshold)
        self.probe_epochs = None if probe_epochs is None else int(probe_epochs)
        self.norm = float(norm)
        self.record_history = bool(record_history)
        self.apply = bool(apply)
        self.laplacian = laplacian
        self.initial: Dict[int, float] = {}
        self.skips: Dict[int, int] = {}
        self.history: List[List[float]] = []
        self._graph = None
        self.started = False  # set by on_train_begin (models warn when nobody calls it)

    def __repr__(self) -> str:
        ratio = (f"p={self.p}" if self.criterion == "gradient_flow"
                 else f"threshold={self.threshold}, laplacian={self.laplacian!r}")
        return (f"GradientGuidedRewiring(criterion={self.criterion!r}, {ratio}, alpha={self.alpha}, "
                f"probe_epochs={self.probe_epochs}, skips={sorted(self.skips)})")

    # ------------------------------------------------------------------ helpers
    def _check_model(self, model) -> None:
        if getattr(model, "layers", None) is None:
            raise TypeError(f"{type(model).__name__} has no `layers` (a list of modules with `.weight`)")
        if self.apply and not callable(getattr(model, "add_skip", None)):
            raise TypeError(f"{type(model).__name__} has no `add_skip(l, alpha)`; it cannot be rewired")

    def _values(self, model) -> List[float]:
        if self.criterion == "gradient_flow":
            from ..monitor import layer_grad_norms

            return layer_grad_norms(model, self.norm)
        from ..monitor import layer_dirichlet_energies

        return layer_dirichlet_energies(model, self._graph, laplacian=self.laplacian)

    # ------------------------------------------------------------------ the rule
    def update(self, model, epoch: int, values: Optional[List[float]] = None) -> List[int]:
        """Apply the rule for ``epoch`` to ``model`` (``values``: the criterion per
        layer, measured from the model when None).  Returns the layers rewired now."""
        if self.probe_epochs is not None and epoch >= self.probe_epochs:
            return []
        if values is None:
            values = self._values(model)
        if self.record_history:
            self.history.append(list(values))
        ratio = self.p if self.criterion == "gradient_flow" else self.threshold
        eligible = getattr(model, "skip_eligible", None)
        new = []
        for l, v in enumerate(values):
            if l in self.skips or (eligible is not None and not eligible(l)):
                continue
            if l not in self.initial:
                self.initial[l] = float(v)
                continue
            if v < ratio * self.initial[l]:
                if not self.apply or model.add_skip(l, self.alpha):
                    self.skips[l] = int(epoch)
                    new.append(l)
        return new

    # ------------------------------------------------------------------ callback protocol
    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        self._check_model(model)
        self.started = True
        if self.criterion == "dirichlet_energy":
            model.record_hidden = True
            from ..monitor import trainer_graph

            self._graph = trainer_graph(trainer, model)
        # skips restored from a checkpoint (load_state_dict before training) are re-applied
        if self.apply:
            for l in self.skips:
                model.add_skip(l, self.alpha)

    def on_after_backward(self, trainer, epoch: int) -> None:
        self.update(trainer.model, epoch)

    def on_epoch_end(self, trainer, epoch: int, logs: Dict[str, float]) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {
            "initial": {int(k): float(v) for k, v in self.initial.items()},
            "skips": {int(k): int(v) for k, v in self.skips.items()},
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.initial = {int(k): float(v) for k, v in state["initial"].items()}
        self.skips = {int(k): int(v) for k, v in state["skips"].items()}
        self.history = [list(h) for h in state.get("history", [])]


def probe_skips(model, dataset, rewiring: GradientGuidedRewiring, epochs: int = 200,
                lr: float = 0.005, weight_decay: float = 5e-4) -> List[int]:
    """The authors' code's protocol, step 1: train ``model`` for ``epochs`` with
    ``rewiring`` applied (Adam, full-batch cross-entropy on ``dataset.train_mask``)
    and return the layers it rewired.  Step 2 (the caller): build a fresh model
    with ``skips=<these layers>`` and train it normally.

    The code's probe model does not add the skips during the probe: use
    ``GradientGuidedRewiring(..., apply=False)`` for that.
    """
    import torch
    import torch.nn.functional as F

    class _T:  # the attributes callbacks read
        pass

    t = _T()
    t.model, t.dataset = model, dataset
    t.optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    t.config = {}
    rewiring.on_train_begin(t)
    mask = dataset.train_mask if dataset.train_mask.dim() == 1 else dataset.train_mask[:, 0]
    model.train()
    for epoch in range(epochs):
        t.optimizer.zero_grad()
        out = model(dataset.x)
        F.cross_entropy(out[mask], dataset.y[mask]).backward()
        rewiring.on_after_backward(t, epoch)
        t.optimizer.step()
    return sorted(rewiring.skips)


def from_config(config: Dict[str, Any]) -> Optional[GradientGuidedRewiring]:
    """The rewiring callback a config asks for: ``config["rewiring"]`` names the criterion
    (``"gradient_flow"`` or ``"dirichlet_energy"``; None / ``"none"``: no rewiring, returns
    None; a :class:`GradientGuidedRewiring` is returned as it is), the other keys are read
    with the ``gcn`` config schema's defaults: ``rewiring_p``, ``rewiring_alpha``,
    ``rewiring_threshold``, ``rewiring_probe_epochs``, ``rewiring_laplacian``."""
    kind = config.get("rewiring")
    if kind in (None, "none", "None", False):
        return None
    if isinstance(kind, GradientGuidedRewiring):
        return kind
    c = _GCN_SCHEMA.with_defaults(config)
    return GradientGuidedRewiring(
        p=float(c["rewiring_p"]),
        alpha=float(c["rewiring_alpha"]),
        criterion=str(kind),
        threshold=float(c["rewiring_threshold"]),
        probe_epochs=c["rewiring_probe_epochs"],
        laplacian=str(c["rewiring_laplacian"]),
    )
