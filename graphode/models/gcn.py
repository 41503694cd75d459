"""Deep vanilla GCN (Kipf & Welling) with the isometric initialisation and
gradient-guided rewiring of "Old can be Gold: Better Gradient Flow can make
Vanilla-GCNs Great Again".

Every layer is ``Â (X W) + b`` with ``Â = D̂^-1/2 (A + I) D̂^-1/2`` applied by
:func:`graphode.ops.spmm`; a hidden layer is ``dropout -> conv -> [skip] -> ReLU``
and the output layer ``dropout -> conv``.  The model is thin: it composes ops
and holds the state the callbacks act on, but no training logic: the
callbacks that act on it (:class:`graphode.callbacks.GradientGuidedRewiring`,
:class:`graphode.callbacks.TrainingMonitor`) are attached by whoever sets up the
training run (:func:`graphode.train.build_model` from the config's ``rewiring``
key, or ``fit(..., callbacks=[...])``).  Any model offering the interface works:

``model.layers``
    sequence of the ``L`` graph convolutions, each with a ``.weight`` parameter.
``model.add_skip(l, alpha) -> bool`` and ``model.skip_eligible(l) -> bool``
    permanently give layer ``l`` the skip ``alpha * h_0`` (``h_0`` = the first
    hidden layer's pre-ReLU output) added before its ReLU.  Layers ``1 .. L-2``
    are eligible (layer 0 *is* ``h_0``; the output layer has another width).
``model.record_hidden = True`` -> ``model.pre_activations``
    after each forward, a list of the ``L`` layers' detached outputs before
    their activation (the last one is the logits).
``model.graph``
    the graph (without the added self loops) the model convolves over.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..config import GCN as GCN_SCHEMA
from ..config import GCN_INITS
from ..graph import Graph
from ..nn.init import isometric_

__all__ = ["GraphConv", "GCN", "build_gcn", "dropout", "INITS", "DROPOUT_RNGS"]

INITS = GCN_INITS

#: ``dropout_rng`` choices: ``"philox"`` (:func:`graphode.ops.dropout`, one fused
#: pass, counter-based mask) or ``"torch"`` (``rand_like``: the random stream of
#: every run before the fused op existed; same distribution, different masks).
DROPOUT_RNGS = ("philox", "torch")


def dropout(x: torch.Tensor, p: float, training: bool, rng: str = "torch") -> torch.Tensor:
    """Inverted dropout.  ``rng="torch"``: drawn with ``rand_like`` (same distribution
    as ``F.dropout``; ``bernoulli_`` is several times slower on CPU); ``"philox"``:
    :func:`graphode.ops.dropout` (seeded from torch's generator)."""
    if not training or p == 0.0:
        return x
    if rng == "philox":
        return ops.dropout(x, p)
    if p >= 1.0:
        return torch.zeros_like(x)
    return x * torch.rand_like(x).ge_(p).div_(1.0 - p)


class _SparseInput:
    """The nonzeros of a sparse-ish input feature matrix, extracted once.

    Dropout on the input only has to be drawn on the nonzeros (a dropped zero
    stays zero), and the first layer's ``X W`` becomes a sparse-dense product:
    on Cora (1.3% nonzeros) this is ~8x cheaper than the dense path.
    """

    MAX_DENSITY = 0.1

    def __init__(self) -> None:
        self.key = None
        self.idx = None
        self.vals = None

    def get(self, x: torch.Tensor):
        key = (x.data_ptr(), x._version, tuple(x.shape), x.dtype, x.device)
        if key != self.key:
            self.key = key
            nnz = int(torch.count_nonzero(x))
            if nnz > self.MAX_DENSITY * x.numel():
                self.idx = self.vals = None
            else:
                self.idx = x.nonzero().t().contiguous()
                self.vals = x[self.idx[0], self.idx[1]]
        return self.idx, self.vals

    def __call__(self, x: torch.Tensor, p: float, training: bool, rng: str = "torch") -> torch.Tensor:
        if x.requires_grad or x.layout != torch.strided or x.dim() != 2:
            return dropout(x, p, training, rng)
        idx, vals = self.get(x)
        if idx is None:
            return dropout(x, p, training, rng)
        vals = dropout(vals, p, training, rng)
        return torch.sparse_coo_tensor(idx, vals, x.shape, is_coalesced=True, check_invariants=False)


class GraphConv(nn.Module):
    """``Â (X W) + b``.  ``weight`` is ``[in_dim, out_dim]`` (as in Kipf's code)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.weight = nn.Parameter(torch.empty(self.in_dim, self.out_dim))
        self.bias = nn.Parameter(torch.empty(self.out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, in_dim]`` (dense, or a sparse COO/CSR tensor) -> ``[N, out_dim]``."""
        xw = torch.sparse.mm(x, self.weight) if x.layout != torch.strided else x @ self.weight
        out = ops.spmm(graph, edge_weight, xw)
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, bias={self.bias is not None}"


class GCN(nn.Module):
    """An ``num_layers``-layer vanilla GCN.

    Args:
        in_dim, hidden, out_dim: widths (input features, hidden, classes).
        num_layers: number of graph convolutions ``L >= 1`` (``L - 1`` hidden).
        graph: :class:`graphode.Graph` to convolve over; ``Â`` is computed once.
        init: ``"glorot"`` (Xavier-uniform weights, zero biases), ``"isometric"``
            (eq. 14 of the paper, :func:`graphode.nn.init.isometric_`),
            ``"isometric-code"`` (the authors' code's bound, biases too) or
            ``"uniform"`` (Kipf's pygcn: ``U(±1/sqrt(C'))`` weights and biases).
        rewiring: deprecated (kept for one release): a callback stored in
            ``model.callbacks``, which the trainer runs.  Pass it to the trainer
            instead: ``fit(model, ds, config, callbacks=[rewiring])``.
        dropout: dropout probability before every convolution.
        skips: layers that get the permanent skip from the start.
        alpha: skip ratio used for ``skips``.
        bias: whether the convolutions have biases.
        sparse_input: when the input features are sparse (<= 10% nonzeros, as
            bag-of-words features), draw the input dropout on the nonzeros only
            and compute the first ``X W`` as a sparse-dense product (same
            distribution, ~8x cheaper on Cora).  False: always dense.
        dropout_rng: ``"philox"`` (default: :func:`graphode.ops.dropout`, the
            fused op) or ``"torch"`` (``rand_like`` masks, the random stream of
            the runs recorded before the fused op; see ``DROPOUT_RNGS``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        num_layers: int,
        graph: Graph,
        init: str = "glorot",
        rewiring: Any = None,
        dropout: float = 0.6,
        skips: Iterable[int] = (),
        alpha: float = 1.0,
        bias: bool = True,
        sparse_input: bool = True,
        dropout_rng: str = "philox",
    ) -> None:
        super().__init__()
        if dropout_rng not in DROPOUT_RNGS:
            raise ValueError(f"unknown dropout_rng {dropout_rng!r}; choose one of {DROPOUT_RNGS}")
        self.dropout_rng = dropout_rng
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not isinstance(graph, Graph) and getattr(graph, "__graphode_ops__", False) is not True:
            raise TypeError(f"graph must be a graphode.Graph (or a graphode.distributed.DistGraph), "
                            f"got {type(graph).__name__}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.init = init
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(GraphConv(dims[i], dims[i + 1], bias=bias) for i in range(num_layers))
        # alpha of the permanent skip of each layer (0 = none); saved in state_dict.
        self.register_buffer("skip_alpha", torch.zeros(num_layers))
        self.graph = graph
        self._norm: Optional[tuple] = None  # (Â graph, Â weights), built on first use
        self.record_hidden = False
        self.pre_activations: List[torch.Tensor] = []
        self._sparse_input = _SparseInput() if sparse_input else None
        if rewiring is not None:
            import warnings

            warnings.warn("GCN(rewiring=...) is deprecated: pass the callback to the trainer, "
                          "fit(model, dataset, config, callbacks=[rewiring])", DeprecationWarning, stacklevel=2)
            self.callbacks: List[Any] = [rewiring]  # the trainer runs a model's callbacks
        self.reset_parameters()
        for l in skips:
            if not self.add_skip(int(l), alpha):
                raise ValueError(f"layer {l} cannot take a skip (eligible: 1 .. {num_layers - 2})")

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        for conv in self.layers:
            conv.reset_parameters()
            if self.init == "isometric":
                isometric_(conv.weight, self.graph, variant="paper", bias=conv.bias)
            elif self.init == "isometric-code":
                isometric_(conv.weight, self.graph, variant="code", bias=conv.bias)
            elif self.init == "uniform":
                b = 1.0 / conv.out_dim ** 0.5
                with torch.no_grad():
                    conv.weight.uniform_(-b, b)
                    if conv.bias is not None:
                        conv.bias.uniform_(-b, b)

    # ------------------------------------------------------------------ skips
    def skip_eligible(self, l: int) -> bool:
        return 1 <= l <= self.num_layers - 2

    def add_skip(self, l: int, alpha: float = 1.0) -> bool:
        """Give layer ``l`` the permanent skip ``alpha * h_0``; False if not eligible."""
        if not self.skip_eligible(l):
            return False
        self.skip_alpha[l] = float(alpha)
        return True

    @property
    def skips(self) -> List[int]:
        """Layers that have a skip connection."""
        return [int(i) for i in torch.nonzero(self.skip_alpha).view(-1)]

    # ------------------------------------------------------------------ graph
    def normalized_graph(self, device=None):
        """``(graph with self loops, Â weights)``, cached (moved to ``device`` if needed)."""
        if self._norm is None:
            self._norm = self.graph.gcn_norm()
        g, w = self._norm
        if device is not None and g.device != torch.device(device):
            g, w = g.to(device), w.to(device)
            self.graph = self.graph.to(device)
            self._norm = (g, w)
        return g, w

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, w = self.normalized_graph(x.device)
        if w.dtype != x.dtype:
            w = w.to(x.dtype)
        record = self.record_hidden
        pre: List[torch.Tensor] = []
        alphas = self.skip_alpha.tolist()
        h0 = None
        L = self.num_layers
        for l, conv in enumerate(self.layers):
            if l == 0 and self._sparse_input is not None:
                x = self._sparse_input(x, self.dropout, self.training, self.dropout_rng)
            else:
                x = dropout(x, self.dropout, self.training, self.dropout_rng)
            h = conv(x, g, w)
            if l == L - 1:
                x = h
            else:
                if l == 0:
                    h0 = h
                elif alphas[l] != 0.0:
                    h = h + alphas[l] * h0
                x = F.relu(h)
            if record:
                pre.append(h.detach())
        self.pre_activations = pre
        return x


# ---------------------------------------------------------------------- builders
def build_gcn(dataset, config: Dict[str, Any]) -> GCN:
    """Builder for ``graphode train --model gcn``.

    Config keys (defaults: the ``gcn`` config schema's): ``layers`` (2), ``hidden``
    (64), ``init`` (``"glorot"``; also ``"isometric"``, ``"isometric-code"``,
    ``"uniform"``), ``dropout`` (0.6), ``skips`` (layers with a skip from the start,
    ``[]``; ``"all"``: every eligible layer ``1 .. L-2``, a fixed initial connection),
    ``alpha`` (1.0), ``bias`` (True), ``dropout_rng`` (``"philox"``; ``"torch"``: the
    stream of the earlier recorded runs).  The ``rewiring*`` keys are not the model's:
    whoever sets up the training run builds the rewiring callback from them
    (:func:`graphode.callbacks.from_config`, used by :func:`graphode.train.build_model`
    and ``graphode train``).
    """
    c = GCN_SCHEMA.with_defaults(config)  # defaults: the gcn config schema's
    layers = int(c["layers"] if "layers" in config or c["num_layers"] is None else c["num_layers"])
    skips = c["skips"] or ()
    if isinstance(skips, str):
        if skips != "all":
            raise ValueError(f"skips must be a list of layers or 'all', got {skips!r}")
        skips = range(1, layers - 1)
    return GCN(
        dataset.num_features,
        int(c["hidden"]),
        dataset.num_classes,
        layers,
        dataset.graph,
        init=str(c["init"]),
        dropout=float(c["dropout"]),
        skips=skips,
        alpha=float(c["alpha"]),
        bias=bool(c["bias"]),
        dropout_rng=str(c["dropout_rng"]),
    )
