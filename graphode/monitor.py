"""Training diagnostics for deep GNNs: gradient flow and Dirichlet energy.

* :func:`gradient_flow` — per-layer gradient norms ``||dL/dW_l||_p`` and their
  mean ``GF_p`` (eq. 3-4 of "Old can be Gold", p = 2 in the paper).
* :func:`dirichlet_energy` — ``E(X) = Tr(X^T L̃ X)`` with the augmented
  normalised Laplacian ``L̃ = I - D̃^-1/2 (A + I) D̃^-1/2`` (eq. 17-18), or the
  plain ``L = I - D^-1/2 A D^-1/2`` that the authors' code uses (PyG's
  ``get_laplacian(..., "sym")``), computed as a sum over edges, never as an
  ``N x N`` matrix.
* :class:`TrainingMonitor` — a trainer callback logging both per layer and
  epoch; :func:`plot_heatmap` draws a layer x epoch heatmap (Figures 1, 4, 5).

Models are seen through ``model.layers`` (modules with a ``.weight``; see
:mod:`graphode.models.gcn`), or, when absent, through their modules that own
a 2-D ``weight`` parameter, in registration order.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .graph import Graph

__all__ = [
    "model_layers",
    "layer_grad_norms",
    "gradient_flow",
    "dirichlet_energy",
    "layer_dirichlet_energies",
    "TrainingMonitor",
    "plot_heatmap",
]


def model_layers(model: nn.Module) -> List[nn.Module]:
    """The layers a monitor sees: ``model.layers`` or the modules with a 2-D ``weight``."""
    layers = getattr(model, "layers", None)
    if layers is not None:
        return list(layers)
    out = []
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() == 2 and m is not model:
            out.append(m)
    if not out:
        raise TypeError(
            f"{type(model).__name__} exposes no layers: give it a `layers` list of modules with a `.weight`"
        )
    return out


def layer_grad_norms(model: nn.Module, p: float = 2.0) -> List[float]:
    """``[||dL/dW_l||_p for each layer]`` (the flattened weight gradient; 0 when it has none)."""
    out = []
    for layer in model_layers(model):
        g = layer.weight.grad
        out.append(0.0 if g is None else float(torch.linalg.vector_norm(g.detach(), ord=p)))
    return out


def gradient_flow(model: nn.Module, p: float = 2.0) -> Tuple[List[float], float]:
    """Per-layer gradient norms and ``GF_p = (1/L) sum_l ||g_l||_p`` (eq. 3-4).

    Call it after ``loss.backward()``.  Returns ``(norms, gf)``.
    """
    norms = layer_grad_norms(model, p)
    return norms, (sum(norms) / len(norms) if norms else 0.0)


#: ``laplacian=`` choices of :func:`dirichlet_energy`.
LAPLACIANS = ("augmented", "sym")


def _energy_terms(graph: Graph, laplacian: str = "augmented"):
    """``(src, dst, w, dinv_sqrt, isolated)`` for the off-diagonal entries of ``A`` (cached on the graph).

    ``isolated`` (``laplacian="sym"`` only, else empty): the nodes without edges,
    whose diagonal entry of ``L`` is 1 with nothing to cancel it."""
    keys = tuple(f"dirichlet_{laplacian}_{k}" for k in ("src", "dst", "w", "dinv", "isolated"))
    if all(k in graph._cache for k in keys):
        return tuple(graph._cache[k] for k in keys)
    row, col = graph.row, graph.col
    off = row != col
    w = graph.edge_weight
    w = torch.ones(graph.num_edges, device=graph.device) if w is None else w.to(torch.float32)
    dst, src, w = row[off], col[off], w[off]
    # augmented: D̃ = 1 + sum of the off-diagonal in-edge weights (the degree of A + I);
    # sym: D = that sum (the degree of A), isolated nodes kept apart.
    base = 1.0 if laplacian == "augmented" else 0.0
    deg = torch.full((graph.num_nodes,), base, dtype=torch.float64, device=graph.device).index_add_(0, dst, w.double())
    isolated = torch.nonzero(deg == 0).view(-1) if laplacian == "sym" else torch.zeros(0, dtype=torch.long,
                                                                                          device=graph.device)
    deg = torch.where(deg == 0, torch.ones_like(deg), deg)
    hit = (src, dst, w, deg.rsqrt(), isolated)
    graph._cache.update(zip(keys, hit))  # tensors only: Graph.to() moves its cache
    return hit


def dirichlet_energy(x: torch.Tensor, graph: Graph, chunk_edges: Optional[int] = None,
                     laplacian: str = "augmented") -> torch.Tensor:
    """Dirichlet energy ``Tr(X^T L̃ X) = 1/2 sum_{(i,j) in E} ||x_i/sqrt(1+d_i) - x_j/sqrt(1+d_j)||^2``.

    Args:
        x: ``[N]`` or ``[N, F]`` node signals (a vector field ``X``, one row per node).
        graph: the graph; ``A`` is its edge set without self loops (they cancel
            in ``L̃``), weighted by ``graph.edge_weight`` when present.  For an
            undirected graph (both directions stored) the edge sum equals
            ``Tr(X^T L̃ X)``; a directed graph gets the edge formula.
        chunk_edges: bound on the edges processed at once (memory
            ``chunk_edges x F``); default: about 2^22 values per chunk.
        laplacian: ``"augmented"`` (the paper's eq. 17-18, ``L̃`` of ``A + I``)
            or ``"sym"`` (``L = I - D^-1/2 A D^-1/2``, what the authors' code
            measures: ``1/sqrt(d_i)`` in the edge sum, plus ``||x_i||^2`` for
            each isolated node, as PyG's ``get_laplacian(..., "sym")`` keeps
            their diagonal 1).

    Returns:
        a scalar tensor (differentiable in ``x``); the sum is kept in float64 for
        float32 inputs (the energy of a collapsed layer is many orders below ``||X||^2``).
    """
    if x.dim() == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.size(0) != graph.num_nodes:
        raise ValueError(f"x must be [N] or [N, F] with N = {graph.num_nodes}, got {list(x.shape)}")
    if laplacian not in LAPLACIANS:
        raise ValueError(f"unknown laplacian {laplacian!r}; choose one of {LAPLACIANS}")
    src, dst, w, dinv, isolated = _energy_terms(graph, laplacian)
    if src.device != x.device:
        src, dst, w, dinv = src.to(x.device), dst.to(x.device), w.to(x.device), dinv.to(x.device)
    acc_dtype = torch.float64 if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else x.dtype
    xs = x * dinv.to(x.dtype).unsqueeze(-1)
    E = src.numel()
    if chunk_edges is None:
        chunk_edges = max(1, (1 << 22) // max(1, x.size(1)))
    total = x.new_zeros((), dtype=acc_dtype)
    for s in range(0, E, chunk_edges):
        e = slice(s, s + chunk_edges)
        d = xs.index_select(0, dst[e]) - xs.index_select(0, src[e])
        total = total + (d.pow(2).sum(-1).to(acc_dtype) * w[e].to(acc_dtype)).sum()
    total = 0.5 * total
    if isolated.numel():
        total = total + x.index_select(0, isolated.to(x.device)).to(acc_dtype).pow(2).sum()
    return total


@torch.no_grad()
def layer_dirichlet_energies(model: nn.Module, graph: Optional[Graph] = None,
                             laplacian: str = "augmented") -> List[float]:
    """Energies of the outputs the model recorded (``model.pre_activations``) in its last forward.

    Set ``model.record_hidden = True`` before the forward.  ``laplacian``: see
    :func:`dirichlet_energy`.
    """
    graph = graph if graph is not None else getattr(model, "graph", None)
    if graph is None:
        raise ValueError("pass the graph (the model has no `graph` attribute)")
    hs = getattr(model, "pre_activations", None)
    if not hs:
        raise RuntimeError("the model recorded no outputs: set `model.record_hidden = True` and run a forward")
    return [float(dirichlet_energy(h, graph, laplacian=laplacian)) for h in hs]


def trainer_graph(trainer, model) -> Optional[Graph]:
    g = getattr(model, "graph", None)
    if g is None:
        ds = getattr(trainer, "dataset", None)
        g = getattr(ds, "graph", None)
    return g


class TrainingMonitor:
    """Trainer callback recording, every epoch, each layer's gradient norm and the
    Dirichlet energy of each layer's pre-activation output (training forward).

    ``history`` holds lists indexed ``[epoch][layer]`` under ``"grad_norm"`` and
    ``"dirichlet_energy"`` and the per-epoch ``"gradient_flow"`` (GF_p);
    :meth:`array` returns a ``[layer, epoch]`` numpy array for :func:`plot_heatmap`.

    Args:
        p: the norm of the gradient flow (2 in the paper).
        energy: also record Dirichlet energies (needs a model that records its
            pre-activations, ``model.record_hidden``).
        every: record every ``every`` epochs.
    """

    def __init__(self, p: float = 2.0, energy: bool = True, every: int = 1, graph: Optional[Graph] = None) -> None:
        self.p = float(p)
        self.energy = bool(energy)
        self.every = max(1, int(every))
        self.graph = graph
        self.history: Dict[str, list] = {"epoch": [], "grad_norm": [], "gradient_flow": [], "dirichlet_energy": []}

    # callback protocol -------------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        model = trainer.model
        if self.energy and hasattr(model, "record_hidden"):
            model.record_hidden = True
        if self.graph is None:
            self.graph = trainer_graph(trainer, model)

    def on_after_backward(self, trainer, epoch: int) -> None:
        if epoch % self.every:
            return
        model = trainer.model
        norms, gf = gradient_flow(model, self.p)
        self.history["epoch"].append(int(epoch))
        self.history["grad_norm"].append(norms)
        self.history["gradient_flow"].append(gf)
        if self.energy and getattr(model, "pre_activations", None):
            self.history["dirichlet_energy"].append(layer_dirichlet_energies(model, self.graph))

    def on_epoch_end(self, trainer, epoch: int, logs: Dict[str, float]) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}

    # results ------------------------------------------------------------------
    def array(self, key: str = "grad_norm"):
        """``[layer, epoch]`` numpy array of ``"grad_norm"`` or ``"dirichlet_energy"``."""
        import numpy as np

        v = self.history[key]
        return np.asarray(v, dtype=np.float64).T if v else np.zeros((0, 0))


def plot_heatmap(
    values,
    path,
    title: str = "",
    log: bool = False,
    xlabel: str = "epoch",
    ylabel: str = "layer",
    cbar_label: str = "",
    figsize: Sequence[float] = (6.0, 2.8),
    dpi: int = 90,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
) -> str:
    """Save a layer x epoch heatmap of ``values`` ``[layer, epoch]`` as a PNG.

    ``log=True`` plots ``log10`` (zeros and negatives floored at the smallest
    positive value / 10).  ``vmin`` / ``vmax`` fix the colour range (in plotted
    units, i.e. log10 when ``log``) so that several heatmaps share one scale.
    Uses matplotlib's Agg canvas without touching the global backend.
    Returns ``str(path)``.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be [layer, epoch], got shape {v.shape}")
    if log:
        pos = v[v > 0]
        floor = (pos.min() / 10.0) if pos.size else 1e-12
        v = np.log10(np.where(v > 0, v, floor))
    fig = Figure(figsize=tuple(figsize), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(v, aspect="auto", interpolation="nearest", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax,
                   extent=(-0.5, v.shape[1] - 0.5, 0.5, v.shape[0] + 0.5))
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(cbar_label or ("log10" if log else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))
    return str(path)
