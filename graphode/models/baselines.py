"""Baselines of the deep-GCN comparison tables (Tables 3, 4 and 6 of "Old can be
Gold"), built from PyTorch Geometric layers.  PyG is optional for graphode: it
is imported when a baseline is built, and a missing PyG raises an ImportError
that says how to install it.

Models (all ``forward(x) -> [N, C]`` logits; the graph is held by the model):

* :class:`TricksGCN` — a deep GCN with one of the "bag of tricks" (Chen et
  al., 2021, the benchmark the paper follows): ``skip`` in ``residual``,
  ``initial``, ``jumping``, ``dense`` (input ``Linear -> ReLU``, ``L`` GCN
  layers, output ``Linear`` or the jumping aggregation, as in that benchmark),
  ``norm`` in ``batch``, ``pair`` (after every hidden convolution) and
  ``drop_edge`` (DropEdge rate, resampled at every training forward).
* :class:`GCNII`, :class:`APPNPNet`, :class:`SGC`, :class:`JKNet`,
  :class:`GAT`: the models of Table 4 with ``num_layers`` propagation steps.

Builders ``build_*(dataset, config)`` read ``layers`` (default 2), ``hidden``
(64), ``dropout`` (0.6) and the model-specific keys documented on each.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GCN_BASELINES as BASELINES_SCHEMA

__all__ = [
    "TricksGCN",
    "GCNII",
    "APPNPNet",
    "SGC",
    "JKNet",
    "GAT",
    "SKIPS",
    "NORMS",
    "build_tricks_gcn",
    "build_gcn_residual",
    "build_gcn_initial",
    "build_gcn_jumping",
    "build_gcn_dense",
    "build_gcn_batchnorm",
    "build_gcn_pairnorm",
    "build_gcn_dropedge",
    "build_gcnii",
    "build_appnp",
    "build_sgc",
    "build_jknet",
    "build_gat",
    "BASELINE_MODELS",
]

SKIPS = (None, "residual", "initial", "jumping", "dense")
NORMS = (None, "batch", "pair")


def _pyg():
    try:
        import torch_geometric.nn as pygnn  # noqa: F401
        from torch_geometric import utils as pygutils  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the deep-GCN baselines are built from PyTorch Geometric layers; install it with "
            "`pip install torch-geometric` (or `pip install graphode[pyg]`)"
        ) from e
    return pygnn, pygutils


def _wd(config: Dict[str, Any], key: str) -> float:
    """The weight decay ``config[key]`` of a parameter group, else the config's ``weight_decay``."""
    v = config.get(key)
    return float(config.get("weight_decay", 5e-4) if v is None else v)


class _PyGModel(nn.Module):
    """Holds ``edge_index`` as a (non-persistent) buffer so ``.to(device)`` moves it.

    ``csr=True`` also builds the GCN-normalised ``Â = D̂^-1/2 (A + I) D̂^-1/2`` once,
    as a ``torch.sparse_csr`` ``adj_t`` (rows = targets), for convolutions built with
    ``normalize=False``: PyG then multiplies by the sparse matrix instead of
    gathering and scattering per edge (the same sums, ~3x faster on Cora's CPU
    runs; see :meth:`graph_arg`)."""

    def __init__(self, edge_index: torch.Tensor, csr: bool = False) -> None:
        super().__init__()
        self.register_buffer("edge_index", edge_index.clone(), persistent=False)
        self.csr = bool(csr)
        self._adj_t = None

    def graph_arg(self, x: torch.Tensor):
        """What the convolutions take as their graph: ``edge_index`` or the normalised CSR ``adj_t``."""
        if not self.csr:
            return self.edge_index
        if self._adj_t is None or self._adj_t.device != x.device or self._adj_t.dtype != x.dtype:
            _, pygutils = _pyg()
            from torch_geometric.nn.conv.gcn_conv import gcn_norm

            n = x.size(0)
            ei, w = gcn_norm(self.edge_index, None, n, add_self_loops=True, dtype=x.dtype)
            # adj_t[i, j] = weight of the edge j -> i (messages flow source -> target)
            adj = torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), w, (n, n)).coalesce()
            self._adj_t = adj.to_sparse_csr()
        return self._adj_t


class TricksGCN(_PyGModel):
    """Deep GCN (PyG ``GCNConv``) with one skip connection, normalisation or DropEdge.

    * no skip: ``L`` convolutions ``in -> hidden -> ... -> out`` with
      ``dropout -> conv -> [norm] -> ReLU`` (the vanilla GCN of the paper).
    * with a skip: ``Linear(in, hidden) -> ReLU``, then ``L`` hidden
      convolutions ``dropout -> conv -> [norm] -> ReLU -> skip``, then
      ``dropout -> Linear(hidden, out)`` (``jumping``: ``Linear`` of the
      concatenated layer outputs).  ``residual``: ``(1-a) h_l + a h_{l-1}``;
      ``initial``: ``(1-a) h_l + a h_0``; ``dense``: ``Linear(cat(h_0..h_l))``.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, edge_index: torch.Tensor,
                 skip: Optional[str] = None, norm: Optional[str] = None, drop_edge: float = 0.0,
                 dropout: float = 0.6, alpha: float = 0.1, pair_norm_scale: float = 1.0, csr: bool = False) -> None:
        # DropEdge renormalises a new edge set at every forward: no fixed adj_t for it
        super().__init__(edge_index, csr=csr and float(drop_edge) == 0.0)
        pygnn, _ = _pyg()
        if skip not in SKIPS:
            raise ValueError(f"unknown skip {skip!r}; choose one of {SKIPS}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        self.skip, self.norm_kind = skip, norm
        self.num_layers, self.dropout, self.alpha = int(num_layers), float(dropout), float(alpha)
        self.drop_edge = float(drop_edge)
        cached = self.drop_edge == 0.0 and not self.csr
        if skip is None:
            dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
            self.inp = None
        else:
            dims = [hidden] * (num_layers + 1)
            self.inp = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(pygnn.GCNConv(dims[i], dims[i + 1], cached=cached, normalize=not self.csr)
                                    for i in range(num_layers))
        n_norm = num_layers if skip is not None else num_layers - 1
        if norm == "batch":
            self.norms = nn.ModuleList(nn.BatchNorm1d(dims[i + 1]) for i in range(n_norm))
        elif norm == "pair":
            self.norms = nn.ModuleList(pygnn.PairNorm(scale=pair_norm_scale) for _ in range(n_norm))
        else:
            self.norms = None
        self.dense = None
        if skip == "dense":
            self.dense = nn.ModuleList(nn.Linear((i + 2) * hidden, hidden) for i in range(num_layers))
        if skip == "jumping":
            self.out = nn.Linear((num_layers + 1) * hidden, out_dim)
        elif skip is not None:
            self.out = nn.Linear(hidden, out_dim)
        else:
            self.out = None

    def _edges(self, x: torch.Tensor):
        if self.csr:
            return self.graph_arg(x)
        if self.training and self.drop_edge > 0:
            _, pygutils = _pyg()
            return pygutils.dropout_edge(self.edge_index, p=self.drop_edge, force_undirected=True)[0]
        return self.edge_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ei = self._edges(x)
        if self.skip is None:
            for l, conv in enumerate(self.layers):
                x = F.dropout(x, self.dropout, self.training)
                x = conv(x, ei)
                if l < self.num_layers - 1:
                    if self.norms is not None:
                        x = self.norms[l](x)
                    x = F.relu(x)
            return x
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.inp(x))
        hs: List[torch.Tensor] = [x]
        for l, conv in enumerate(self.layers):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, ei)
            if self.norms is not None:
                x = self.norms[l](x)
            x = F.relu(x)
            hs.append(x)
            if self.skip == "residual":
                x = (1 - self.alpha) * x + self.alpha * hs[-2]
            elif self.skip == "initial":
                x = (1 - self.alpha) * x + self.alpha * hs[0]
            elif self.skip == "dense":
                x = self.dense[l](torch.cat(hs, dim=-1))
        x = F.dropout(x, self.dropout, self.training)
        if self.skip == "jumping":
            return self.out(torch.cat(hs, dim=-1))
        return self.out(x)


class GCNII(_PyGModel):
    """GCNII (Chen et al., 2020): ``Linear -> L x GCN2Conv(alpha, theta, layer l) -> Linear``.

    ``optimizer_groups``: the convolutions with ``weight_decay_conv``, the two
    dense layers with ``weight_decay_dense`` (GCNII's own split, 0.01 / 5e-4 on
    Cora); both default to the config's ``weight_decay``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, edge_index: torch.Tensor,
                 alpha: float = 0.1, theta: float = 0.5, dropout: float = 0.6, csr: bool = False) -> None:
        super().__init__(edge_index, csr=csr)
        pygnn, _ = _pyg()
        self.dropout = float(dropout)
        self.inp = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(
            pygnn.GCN2Conv(hidden, alpha, theta, layer=l + 1, shared_weights=True, cached=not csr, normalize=not csr)
            for l in range(num_layers)
        )
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = x0 = F.relu(self.inp(x))
        g = self.graph_arg(x)
        for conv in self.layers:
            x = F.dropout(x, self.dropout, self.training)
            x = F.relu(conv(x, x0, g))
        x = F.dropout(x, self.dropout, self.training)
        return self.out(x)

    def optimizer_groups(self, config: Dict[str, Any]) -> List[Dict[str, Any]]:
        return [{"params": list(self.layers.parameters()), "weight_decay": _wd(config, "weight_decay_conv")},
                {"params": list(self.inp.parameters()) + list(self.out.parameters()),
                 "weight_decay": _wd(config, "weight_decay_dense")}]


class APPNPNet(_PyGModel):
    """APPNP (Klicpera et al., 2019): a 2-layer MLP, then ``K = num_layers`` steps of
    personalised-PageRank propagation with teleport ``alpha``.

    ``optimizer_groups``: the first layer with ``weight_decay_in``, the second
    with ``weight_decay_out`` (APPNP regularises the first only: 5e-3 / 0);
    both default to the config's ``weight_decay``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, edge_index: torch.Tensor,
                 alpha: float = 0.1, dropout: float = 0.6) -> None:
        super().__init__(edge_index)
        pygnn, _ = _pyg()
        self.dropout = float(dropout)
        self.lin1, self.lin2 = nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)
        self.layers = nn.ModuleList([self.lin1, self.lin2])
        self.prop = pygnn.APPNP(K=int(num_layers), alpha=alpha, cached=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.lin1(x))
        x = F.dropout(x, self.dropout, self.training)
        return self.prop(self.lin2(x), self.edge_index)

    def optimizer_groups(self, config: Dict[str, Any]) -> List[Dict[str, Any]]:
        return [{"params": list(self.lin1.parameters()), "weight_decay": _wd(config, "weight_decay_in")},
                {"params": list(self.lin2.parameters()), "weight_decay": _wd(config, "weight_decay_out")}]


class SGC(_PyGModel):
    """SGC (Wu et al., 2019): ``Â^K X W`` with ``K = num_layers`` (PyG ``SGConv``).

    ``dropout_after``: False (default) drops the raw features before the
    propagation; True drops the propagated ``Â^K X`` before the linear layer, as
    the "bag of tricks" benchmark's SGC does (with ``bias=False`` there)."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int, edge_index: torch.Tensor,
                 dropout: float = 0.0, bias: bool = True, dropout_after: bool = False) -> None:
        super().__init__(edge_index)
        pygnn, _ = _pyg()
        self.dropout = float(dropout)
        self.dropout_after = bool(dropout_after)
        self.conv = pygnn.SGConv(in_dim, out_dim, K=int(num_layers), cached=True, bias=bias)
        self.layers = nn.ModuleList([self.conv.lin])
        self._prop: Optional[tuple] = None  # (key of x, Â^K x) for dropout_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dropout_after:
            x = F.dropout(x, self.dropout, self.training)
            return self.conv(x, self.edge_index)
        key = (x.data_ptr(), x._version, tuple(x.shape))
        if self._prop is None or self._prop[0] != key:
            lin, self.conv.lin = self.conv.lin, nn.Identity()  # SGConv's propagation alone
            try:
                with torch.no_grad():
                    self.conv._cached_x = None
                    xk = self.conv(x, self.edge_index)
            finally:
                self.conv.lin = lin
                self.conv._cached_x = None
            self._prop = (key, xk)
        return self.conv.lin(F.dropout(self._prop[1], self.dropout, self.training))


class JKNet(_PyGModel):
    """JKNet (Xu et al., 2018): ``L`` GCN layers, jumping knowledge (``mode``:
    ``cat``/``max``/``lstm``) over their outputs, then a ``Linear``.

    ``dropout_after``: False (default) drops each layer's input and the jumping
    output; True drops each layer's output after its ReLU only (the "bag of
    tricks" benchmark's JKNet)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, edge_index: torch.Tensor,
                 mode: str = "cat", dropout: float = 0.6, dropout_after: bool = False, csr: bool = False) -> None:
        super().__init__(edge_index, csr=csr)
        pygnn, _ = _pyg()
        self.dropout = float(dropout)
        self.dropout_after = bool(dropout_after)
        self.layers = nn.ModuleList(
            pygnn.GCNConv(in_dim if l == 0 else hidden, hidden, cached=not csr, normalize=not csr)
            for l in range(num_layers)
        )
        self.jk = pygnn.JumpingKnowledge(mode, channels=hidden, num_layers=num_layers)
        self.out = nn.Linear(num_layers * hidden if mode == "cat" else hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hs = []
        g = self.graph_arg(x)
        if self.dropout_after:  # the benchmark's order: conv -> ReLU -> dropout, jumping over the dropped outputs
            for conv in self.layers:
                x = F.dropout(F.relu(conv(x, g)), self.dropout, self.training)
                hs.append(x)
            return self.out(self.jk(hs))
        for conv in self.layers:
            x = F.dropout(x, self.dropout, self.training)
            x = F.relu(conv(x, g))
            hs.append(x)
        x = F.dropout(self.jk(hs), self.dropout, self.training)
        return self.out(x)


class GAT(_PyGModel):
    """GAT (Velickovic et al., 2018): ``L`` ``GATConv`` layers, ``heads`` heads of
    ``hidden // heads`` channels (concatenated) with ELU, one head at the output."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, edge_index: torch.Tensor,
                 heads: int = 8, dropout: float = 0.6) -> None:
        super().__init__(edge_index)
        pygnn, _ = _pyg()
        self.dropout = float(dropout)
        per = max(1, hidden // heads)
        layers = []
        for l in range(num_layers):
            d_in = in_dim if l == 0 else per * heads
            if l == num_layers - 1:
                layers.append(pygnn.GATConv(d_in, out_dim, heads=1, dropout=dropout))
            else:
                layers.append(pygnn.GATConv(d_in, per, heads=heads, dropout=dropout))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for l, conv in enumerate(self.layers):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, self.edge_index)
            if l < len(self.layers) - 1:
                x = F.elu(x)
        return x


# ---------------------------------------------------------------------- builders
def _cfg(config, model: str) -> Dict[str, Any]:
    """``config`` with the defaults of the baselines' config schema (for ``model``)."""
    c = BASELINES_SCHEMA.with_defaults(config, model)
    if "layers" not in config and c["num_layers"] is not None:
        c["layers"] = c["num_layers"]
    return c


def _common(dataset, c):
    return (dataset.num_features, int(c["hidden"]), dataset.num_classes, int(c["layers"]), dataset.edge_index)


def build_tricks_gcn(dataset, config: Dict[str, Any], model: str = "gcn-tricks") -> TricksGCN:
    """``TricksGCN`` from config keys ``skip``, ``norm``, ``drop_edge``, ``alpha``,
    ``pair_norm_scale``, ``layers``, ``hidden``, ``dropout``, ``pyg_csr`` (not with DropEdge)
    (defaults: :data:`graphode.config.GCN_BASELINES`)."""
    c = _cfg(config, model)
    i, h, o, L, ei = _common(dataset, c)
    skip, norm = c["skip"], c["norm"]
    return TricksGCN(i, h, o, L, ei, skip=None if skip in (None, "none") else skip,
                     norm=None if norm in (None, "none") else norm,
                     drop_edge=float(c["drop_edge"]), dropout=float(c["dropout"]), alpha=float(c["alpha"]),
                     pair_norm_scale=float(c["pair_norm_scale"]), csr=bool(c["pyg_csr"]))


def _tricks(model: str, **fixed):
    def build(dataset, config: Dict[str, Any]) -> TricksGCN:
        return build_tricks_gcn(dataset, {**config, **fixed}, model)

    return build


build_gcn_residual = _tricks("gcn-residual", skip="residual")
build_gcn_initial = _tricks("gcn-initial", skip="initial")
build_gcn_jumping = _tricks("gcn-jumping", skip="jumping")
build_gcn_dense = _tricks("gcn-dense", skip="dense")
build_gcn_batchnorm = _tricks("gcn-batchnorm", norm="batch")
build_gcn_pairnorm = _tricks("gcn-pairnorm", norm="pair")
build_gcn_dropedge = _tricks("gcn-dropedge")  # DropEdge; its drop_edge default is 0.3


def _builder(cls, model: str, doc: str, hidden: bool = True, **args):
    """The builder of ``model``: ``cls(in, [hidden,] out, layers, edge_index, **kw)`` where
    ``args`` maps each keyword of ``cls`` to ``(config key, type)``."""

    def build(dataset, config: Dict[str, Any]):
        c = _cfg(config, model)
        i, h, o, L, ei = _common(dataset, c)
        return cls(*((i, h, o, L, ei) if hidden else (i, o, L, ei)),
                   **{arg: typ(c[key]) for arg, (key, typ) in args.items()})

    build.__name__ = build.__qualname__ = "build_" + model
    build.__doc__ = doc
    return build


build_gcnii = _builder(GCNII, "gcnii", "GCNII; keys ``alpha``, ``theta`` (GCNII's lambda), ``layers``, ``hidden``, "
                       "``dropout``; ``weight_decay_conv`` / ``weight_decay_dense`` (see :class:`GCNII`); "
                       "``pyg_csr`` (False: PyG's per-edge message passing; True: a normalised sparse CSR "
                       "``adj_t``).",
                       alpha=("alpha", float), theta=("theta", float), dropout=("dropout", float),
                       csr=("pyg_csr", bool))
build_appnp = _builder(APPNPNet, "appnp",
                       "APPNP; ``layers`` = propagation steps K, ``alpha``, ``hidden``, ``dropout``; "
                       "``weight_decay_in`` / ``weight_decay_out`` (see :class:`APPNPNet`).",
                       alpha=("alpha", float), dropout=("dropout", float))
build_sgc = _builder(SGC, "sgc", "SGC; ``layers`` = K, ``sgc_dropout`` (0.0: SGC has none), ``sgc_bias``, "
                     "``sgc_dropout_after`` (see :class:`SGC`).", hidden=False,
                     dropout=("sgc_dropout", float), bias=("sgc_bias", bool), dropout_after=("sgc_dropout_after", bool))
build_jknet = _builder(JKNet, "jknet", "JKNet; ``jk_mode`` (``cat``), ``layers``, ``hidden``, ``dropout``, "
                       "``jk_dropout_after`` (see :class:`JKNet`), ``pyg_csr`` (as :func:`build_gcnii`).",
                       mode=("jk_mode", str), dropout=("dropout", float), dropout_after=("jk_dropout_after", bool),
                       csr=("pyg_csr", bool))
build_gat = _builder(GAT, "gat", "GAT; ``heads``, ``layers``, ``hidden`` (total over heads), ``dropout``.",
                     heads=("heads", int), dropout=("dropout", float))


#: name -> "module:function" entries for :data:`graphode.models.MODELS`.
BASELINE_MODELS = {
    "gcn-residual": "graphode.models.baselines:build_gcn_residual",
    "gcn-initial": "graphode.models.baselines:build_gcn_initial",
    "gcn-jumping": "graphode.models.baselines:build_gcn_jumping",
    "gcn-dense": "graphode.models.baselines:build_gcn_dense",
    "gcn-batchnorm": "graphode.models.baselines:build_gcn_batchnorm",
    "gcn-pairnorm": "graphode.models.baselines:build_gcn_pairnorm",
    "gcn-dropedge": "graphode.models.baselines:build_gcn_dropedge",
    "gcn-tricks": "graphode.models.baselines:build_tricks_gcn",
    "gcnii": "graphode.models.baselines:build_gcnii",
    "appnp": "graphode.models.baselines:build_appnp",
    "sgc": "graphode.models.baselines:build_sgc",
    "jknet": "graphode.models.baselines:build_jknet",
    "gat": "graphode.models.baselines:build_gat",
}
