"""The :class:`NodeDataset` container shared by every loader."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ["NodeDataset", "row_normalize"]


@dataclass(eq=False)
class NodeDataset:
    """A node-classification graph with one or several train/val/test splits.

    Shapes (``N`` nodes, ``F`` features, ``E`` directed edges, ``S`` splits):

    - ``x``: ``[N, F]`` float32 node features.
    - ``y``: ``[N]`` int64 labels in ``[0, num_classes)``.
    - ``edge_index``: ``[2, E]`` int64, PyG convention: row 0 = source,
      row 1 = target.  Edges are directed; an undirected graph stores both
      directions.  Edges are unique and sorted by (target, source), the CSR
      order of :class:`graphode.Graph`, so :attr:`graph` keeps the edge order
      and per-edge tensors stay aligned with it.  Self loops
      are present only when the source data has them (the geom-gcn WebKB and
      Actor files do; the Planetoid and npz graphs do not).
    - ``train_mask`` / ``val_mask`` / ``test_mask``: bool, ``[N]`` for a single
      split or ``[N, S]`` for ``S`` splits (column ``i`` is split ``i``; the
      geom-gcn datasets have ``S = 10``, random splits drawn for a list of
      seeds have one column per seed).  Use :meth:`split` to get a view with
      ``[N]`` masks for one split; :attr:`num_splits` gives ``S``.
    - ``num_classes``: number of classes (``int(y.max()) + 1`` of the full
      source dataset, even when a subgraph misses some class).
    - ``node_index``: ``[N]`` int64 ids of the nodes in the source graph when
      this graph is a subgraph of it (largest connected component), else ``None``.
    - ``info``: free-form provenance (source files, split kind, seeds, ...).

    :meth:`to` returns a copy on another device, :attr:`graph` a
    :class:`graphode.Graph` built from ``edge_index``.
    """

    name: str
    x: Tensor
    y: Tensor
    edge_index: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int
    node_index: Optional[Tensor] = None
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = torch.as_tensor(self.x)
        if not self.x.is_floating_point():
            self.x = self.x.to(torch.float32)
        self.y = torch.as_tensor(self.y).to(torch.int64)
        self.edge_index = torch.as_tensor(self.edge_index).to(torch.int64)
        if self.x.dim() != 2:
            raise ValueError(f"x must be [N, F], got shape {tuple(self.x.shape)}")
        n = self.x.size(0)
        if self.y.shape != (n,):
            raise ValueError(f"y must be [N] = [{n}], got shape {tuple(self.y.shape)}")
        if self.edge_index.dim() != 2 or self.edge_index.size(0) != 2:
            raise ValueError(f"edge_index must be [2, E], got shape {tuple(self.edge_index.shape)}")
        shapes = set()
        for key in ("train_mask", "val_mask", "test_mask"):
            m = torch.as_tensor(getattr(self, key)).to(torch.bool)
            if m.dim() not in (1, 2) or m.size(0) != n:
                raise ValueError(f"{key} must be [N] or [N, S] with N = {n}, got shape {tuple(m.shape)}")
            setattr(self, key, m)
            shapes.add(tuple(m.shape))
        if len(shapes) != 1:
            raise ValueError(f"train/val/test masks must have the same shape, got {sorted(shapes)}")
        if self.node_index is not None:
            self.node_index = torch.as_tensor(self.node_index).to(torch.int64)
        self.num_classes = int(self.num_classes)

    # ------------------------------------------------------------------ sizes
    @property
    def num_nodes(self) -> int:
        """``N``."""
        return int(self.x.size(0))

    @property
    def num_features(self) -> int:
        """``F``."""
        return int(self.x.size(1))

    @property
    def num_edges(self) -> int:
        """``E``, the number of directed edges (an undirected edge counts twice)."""
        return int(self.edge_index.size(1))

    @property
    def num_splits(self) -> int:
        """``S``: 1 for ``[N]`` masks, ``masks.size(1)`` for ``[N, S]`` masks."""
        return 1 if self.train_mask.dim() == 1 else int(self.train_mask.size(1))

    @property
    def device(self) -> torch.device:
        return self.x.device

    # ----------------------------------------------------------------- splits
    def split(self, i: int = 0) -> "NodeDataset":
        """This dataset with ``[N]`` masks holding split ``i``.

        Tensors other than the masks are shared, not copied.  For a dataset
        with a single split, ``split(0)`` returns ``self``.
        """
        s = self.num_splits
        if not -s <= i < s:
            raise IndexError(f"split index {i} out of range for {s} split(s)")
        if self.train_mask.dim() == 1:
            return self
        out = dataclasses.replace(
            self,
            train_mask=self.train_mask[:, i],
            val_mask=self.val_mask[:, i],
            test_mask=self.test_mask[:, i],
            info={**self.info, "split_index": i % s},
        )
        if "graph" in self.__dict__:  # share the cached Graph
            out.__dict__["graph"] = self.__dict__["graph"]
        return out

    def masks(self, i: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """``(train_mask, val_mask, test_mask)``; with ``i``, those of split ``i`` (each ``[N]``)."""
        ds = self if i is None else self.split(i)
        return ds.train_mask, ds.val_mask, ds.test_mask

    # ----------------------------------------------------------------- device
    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "NodeDataset":
        """A copy with every tensor moved to ``device`` (like :meth:`torch.Tensor.to`)."""

        def mv(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return dataclasses.replace(
            self,
            x=mv(self.x),
            y=mv(self.y),
            edge_index=mv(self.edge_index),
            train_mask=mv(self.train_mask),
            val_mask=mv(self.val_mask),
            test_mask=mv(self.test_mask),
            node_index=mv(self.node_index),
            info=dict(self.info),
        )

    # ------------------------------------------------------------------ graph
    @property
    def graph(self):
        """``graphode.Graph.from_edge_index(edge_index, num_nodes=N)``, built once and cached.

        The cache is per object: :meth:`to` builds a new one on the target device.
        """
        cached = self.__dict__.get("graph")
        if cached is None:
            from ..graph import Graph  # lazy: graphode.graph is optional for loading data

            cached = Graph.from_edge_index(self.edge_index, num_nodes=self.num_nodes)
            self.__dict__["graph"] = cached
        return cached

    # ------------------------------------------------------------------- misc
    def is_undirected(self) -> bool:
        """Whether every edge ``(i, j)`` has its reverse ``(j, i)``."""
        ei = self.edge_index
        n = max(self.num_nodes, 1)
        fwd = torch.sort(ei[0] * n + ei[1]).values
        bwd = torch.sort(ei[1] * n + ei[0]).values
        return bool(torch.equal(fwd, bwd))

    def __repr__(self) -> str:
        split = "" if self.num_splits == 1 else f", splits={self.num_splits}"
        if self.train_mask.dim() == 1:
            sizes = (
                f", train/val/test={int(self.train_mask.sum())}/{int(self.val_mask.sum())}"
                f"/{int(self.test_mask.sum())}"
            )
        else:
            sizes = ""
        return (
            f"NodeDataset(name={self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
            f"features={self.num_features}, classes={self.num_classes}{split}{sizes}, "
            f"device={self.device})"
        )


def row_normalize(x: Tensor) -> Tensor:
    """Divide each row of ``x`` (``[N, F]``) by its sum; all-zero rows stay zero.

    This is the feature preprocessing of Kipf & Welling's GCN code
    (``preprocess_features``) used by the deep-GCN paper.  For non-negative
    features with row sums 0 or >= 1 (all bag-of-words datasets here) it equals
    PyG's ``NormalizeFeatures``.
    """
    s = x.sum(dim=-1, keepdim=True)
    s = torch.where(s == 0, torch.ones_like(s), s)
    return x / s
