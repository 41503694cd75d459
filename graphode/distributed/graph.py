"""``DistGraph``: one rank's share of a partitioned graph, with graphode's ops on it.

A rank owns ``n_own`` nodes and all their in-edges; the sources of those
edges owned by other ranks are its halo (see
:mod:`graphode.distributed.partition`).  Each op exchanges the halo rows of
its per-node inputs (``x``; ``k`` and ``x`` for attention) with
``all_to_all_single``, runs the ordinary op of :mod:`graphode.ops` (the fused
backends) on the local graph of ``n_own + n_halo`` nodes, and returns the
owned rows.  The backward sends the halo rows' gradients back to their owners,
which add them to their own.  Results equal the single-process ops on the
whole graph, forward and backward, up to the order of floating-point sums.

``graphode.ops.spmm(dist_graph, ...)`` (and ``edge_attention``,
``attention_diffusion``) dispatch here, so models written against the ops run
unchanged on a ``DistGraph``: their node tensors hold the owned rows only.

Attention whose groups or shift reach other ranks (normalised over each
source's out-edges, or squareplus with its one global maximum) is computed by
composition (:meth:`DistGraph._attention`): the per-source sums of halo
sources are added up by their owners and sent back, the maximum is reduced
over all ranks.

A ``DistGraph`` also offers the parts of :class:`graphode.Graph`'s interface
that models use, computed on the owned rows (``num_nodes`` is the number of
owned nodes, ``row``/``col`` are local ids, owned ids first so that a self
loop has ``row == col``): ``remove_self_loops``, ``add_self_loops``,
``row_normalize``, ``normalize_weights``, ``gcn_norm`` (exchanging degrees
with the halo), ``to``.
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Tuple

import torch

from .. import ops
from ..graph import Graph
from . import _comm
from .partition import GraphPart, load_part

__all__ = ["DistGraph"]


class DistGraph:
    """One rank's part of a partitioned graph (see the module docstring).

    Args:
        part: the :class:`~graphode.distributed.partition.GraphPart` of this rank.
        group: the ``torch.distributed`` process group (default: the world).
        device: where the local graph lives (default: CPU).

    Attributes:
        num_nodes: owned nodes (rows of every node tensor on this rank).
        num_halo: halo nodes received at each exchange.
        num_nodes_global: nodes of the whole graph.
        nodes: ``[num_nodes]`` original ids of the owned nodes.
        local: the local :class:`graphode.Graph` (``num_nodes + num_halo`` nodes).
        plan: the :class:`~graphode.distributed._comm.HaloPlan`; ``plan.stats``
            counts exchanges and bytes.
    """

    __graphode_ops__ = True  # graphode.ops hands its calls on this graph to the methods below

    def __init__(self, part: GraphPart, group=None, device=None):
        if _comm.world_size(group) != part.num_parts and _comm.world_size(group) > 1:
            raise ValueError(f"the partition has {part.num_parts} parts but the process group has "
                             f"{_comm.world_size(group)} ranks (start one process per part)")
        if _comm.world_size(group) > 1 and _comm.rank(group) != part.rank:
            raise ValueError(f"this process is rank {_comm.rank(group)} but was given part {part.rank}")
        self.part_meta = {"rank": part.rank, "num_parts": part.num_parts}
        self.group = group
        self.num_nodes = part.num_owned
        self.num_halo = part.num_halo
        self.num_nodes_global = part.num_nodes_global
        self.nodes = part.nodes
        self.halo_nodes = part.halo
        self.edge_ids = part.edge_ids
        local = part.local_graph()
        plan = _comm.HaloPlan(part.send_index, part.send_counts.tolist(), part.recv_counts.tolist(),
                              part.num_owned, group)
        w = part.edge_weight
        if device is not None:
            local, plan = local.to(device), plan.to(device)
            w = None if w is None else w.to(device)
        self.local = local
        self.plan = plan
        self.edge_weight = w

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, directory: str, rank: Optional[int] = None, group=None, device=None) -> "DistGraph":
        """Read this rank's part of a saved partition (only that file) and wrap it."""
        r = _comm.rank(group) if rank is None else int(rank)
        return cls(load_part(directory, r), group=group, device=device)

    def _derive(self, local: Graph, edge_weight=None, plan=None) -> "DistGraph":
        """The same ranks and halo on another local edge set (halo rows still empty)."""
        g = copy.copy(self)
        g.local, g.edge_weight, g.plan = local, edge_weight, plan or self.plan
        if local is not self.local:
            g.edge_ids = None
        return g

    # ------------------------------------------------------------------ Graph interface
    @property
    def device(self) -> torch.device:
        return self.local.device

    @property
    def rank(self) -> int:
        return self.part_meta["rank"]

    @property
    def num_parts(self) -> int:
        return self.part_meta["num_parts"]

    @property
    def num_edges(self) -> int:
        return self.local.num_edges

    @property
    def row(self) -> torch.Tensor:
        """Owned target (local id) of each local edge."""
        return self.local.row

    @property
    def col(self) -> torch.Tensor:
        """Local source id of each local edge (owned ``< num_nodes``, halo after)."""
        return self.local.col

    @property
    def in_degree(self) -> torch.Tensor:
        return self.local.in_degree[: self.num_nodes]

    def __repr__(self) -> str:
        return (f"DistGraph(rank={self.rank}/{self.num_parts}, owned={self.num_nodes}, halo={self.num_halo}, "
                f"edges={self.num_edges}, global_nodes={self.num_nodes_global}, device={self.device})")

    def to(self, device) -> "DistGraph":
        device = torch.device(device)
        if device == self.device:
            return self
        g = self._derive(self.local.to(device), None if self.edge_weight is None else self.edge_weight.to(device),
                         self.plan.to(device))
        g.edge_ids = None if self.edge_ids is None else self.edge_ids.to(device)
        return g

    def structure(self) -> "DistGraph":
        """The same edges without ``edge_weight``."""
        return self._derive(self.local, None)

    def has_self_loops(self) -> bool:
        has = torch.tensor([float((self.row == self.col).any())], device=self.device)
        return bool(self.all_reduce_sum(has).item() > 0)

    def remove_self_loops(self) -> "DistGraph":
        keep = self.row != self.col
        w = None if self.edge_weight is None else self.edge_weight[keep]
        g = Graph.from_edge_index(self.local.edge_index[:, keep], self.local.num_nodes)
        return self._derive(g, w)

    def add_self_loops(self, fill_value: float = 1.0) -> "DistGraph":
        """Every owned node gets the edge i -> i (existing loops keep their weight), as
        :meth:`graphode.Graph.add_self_loops`."""
        n = self.num_nodes
        has = torch.zeros(n, dtype=torch.bool, device=self.device)
        loops = self.row == self.col
        has[self.row[loops]] = True
        missing = (~has).nonzero().view(-1)
        ei = torch.cat([self.local.edge_index, missing.expand(2, -1)], dim=1)
        w = None
        if self.edge_weight is not None:
            fill = self.edge_weight.new_full((missing.numel(),) + tuple(self.edge_weight.shape[1:]), fill_value)
            w = torch.cat([self.edge_weight, fill])
        g = Graph.from_edge_index(ei, self.local.num_nodes, w)
        return self._derive(g, g.edge_weight)

    def row_normalize(self, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``w_e / sum of the row's w`` (every owned row is complete on its rank)."""
        w = weight if weight is not None else self.edge_weight
        return self.local.row_normalize(w)

    def normalize_weights(self, weight: torch.Tensor, over: str = "target", eps: float = 0.0) -> torch.Tensor:
        """:meth:`graphode.Graph.normalize_weights`: over each owned target's in-edges (all on
        this rank), or over each source's out-edges (``over="source"``: the sums of a halo
        source's edges are added up by its owner and sent back)."""
        if over == "target":
            return self.local.normalize_weights(weight, "target", eps)
        if over != "source":
            raise ValueError(f"over must be 'target' or 'source', got {over!r}")
        col = self.local.col
        part = weight.new_zeros((self.local.num_nodes,) + tuple(weight.shape[1:])).index_add(0, col, weight)
        (total,) = self.exchange(_comm.halo_reduce(self.plan, part))
        return weight / (total.index_select(0, col) + eps)

    def gcn_norm(self, add_self_loops: bool = True, dtype=torch.float32) -> Tuple["DistGraph", torch.Tensor]:
        """``D^-1/2 (A + I) D^-1/2`` as :meth:`graphode.Graph.gcn_norm`; the degrees of the
        halo nodes come from their owners (one halo exchange)."""
        g = self.add_self_loops() if add_self_loops else self
        w = g.edge_weight.to(dtype) if g.edge_weight is not None else torch.ones(
            g.num_edges, dtype=dtype, device=g.device)
        deg = torch.zeros(self.num_nodes, dtype=dtype, device=g.device).index_add_(0, g.row, w)
        (deg_ext,) = _comm.halo_exchange(self.plan, deg.unsqueeze(1))
        dinv = deg_ext.view(-1).pow(-0.5)
        dinv = torch.where(torch.isinf(dinv), torch.zeros_like(dinv), dinv)
        return g, dinv[g.row] * w * dinv[g.col]

    # ------------------------------------------------------------------ reductions
    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over ranks, in place."""
        return _comm.all_reduce_sum(t, self.group)

    def global_sum(self, value: float) -> float:
        """A Python float summed over ranks (float64)."""
        return float(self.all_reduce_sum(torch.tensor([float(value)], dtype=torch.float64, device=self.device)).item())

    def solver_functions(self):
        """``(odeint, odeint_adjoint)`` whose error norms are reduced over this graph's
        ranks (:mod:`graphode.distributed.solvers`); models solving on this graph use them."""
        from .solvers import solver_functions

        return solver_functions(self.group)

    @staticmethod
    def check_method(method) -> str:
        """The method name if the solvers on this graph can run it across ranks
        (:func:`graphode.distributed.solvers.check_method`), else ``ValueError``."""
        from .solvers import check_method

        return check_method(method)

    # ------------------------------------------------------------------ halo
    def exchange(self, *xs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``[x; halo rows]`` ``[num_nodes + num_halo, ...]`` for each owned ``x`` (differentiable)."""
        return _comm.halo_exchange(self.plan, *xs)

    def _pad(self, q: torch.Tensor) -> torch.Tensor:
        # targets are owned: the halo rows of q are never read, zeros keep the op's shapes
        return torch.cat([q, q.new_zeros((self.num_halo,) + tuple(q.shape[1:]))]) if self.num_halo else q

    def _check(self, name: str, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0 or t.size(0) != self.num_nodes:
            raise ValueError(f"{name} has {t.size(0) if t.dim() else 0} rows but rank {self.rank} owns "
                             f"{self.num_nodes} nodes (pass the owned rows only)")

    @staticmethod
    def _fused(options) -> bool:
        """Whether the attention groups and shifts are a target's in-edges (the fused ops
        on the local graph), else the composition of :meth:`_attention`."""
        return options.get("normalize_over", "target") == "target" and \
            options.get("normalize", "softmax") == "softmax"

    def _attention(self, q, k, scale=None, score="scaled_dot", normalize="softmax", normalize_over="target",
                   kernel_params=None, backend=None) -> torch.Tensor:
        """Edge attention ``[num_edges, H]`` whose groups or shift reach other ranks
        (``normalize_over="source"``: a source's out-edges lie on the ranks of their
        targets; ``normalize="squareplus"``: one maximum over all edges).  The scores
        and normalisation of :mod:`graphode.ops.reference` on the local edges, with the
        group sums (and softmax shifts) of halo sources reduced over the ranks that hold
        them and sent back, and the squareplus shift a maximum over all ranks."""
        from ..ops import reference as R

        if normalize not in R.NORMALIZE or normalize_over not in R.NORMALIZE_OVER:
            raise ValueError(f"unknown normalize={normalize!r} / normalize_over={normalize_over!r}")
        s_scale = (1.0 / math.sqrt(q.size(-1)) if scale is None else float(scale)) if score == "scaled_dot" else 1.0
        (k_ext,) = self.exchange(k)
        local = self.local
        s = R.edge_scores(local, self._pad(q), k_ext, s_scale, score, kernel_params)  # [E, H]
        H = s.size(1)
        idx = local.row if normalize_over == "target" else local.col
        n_loc = local.num_nodes
        if normalize == "softmax":
            with torch.no_grad():  # the shift cancels: detached, as in the reference
                gmax = s.new_full((n_loc, H), float("-inf")).scatter_reduce(
                    0, idx.unsqueeze(-1).expand_as(s), s, reduce="amax", include_self=True)
                if normalize_over == "source":
                    (gmax,) = self.exchange(self.plan.reduce_halo(gmax, "amax"))
            u = torch.exp(s - gmax.index_select(0, idx))
            eps = 0.0
        else:
            sp = s - _comm.global_max(s, self.group)
            u = (sp + torch.sqrt(sp * sp + 4.0)) / 2
            eps = R.SQUAREPLUS_EPS
        part = s.new_zeros((n_loc, H)).index_add(0, idx, u)
        if normalize_over == "source":  # totals of the owners, sent to every rank that holds the node
            (part,) = self.exchange(_comm.halo_reduce(self.plan, part))
        return u / (part.index_select(0, idx) + eps)

    # ------------------------------------------------------------------ ops    # ------------------------------------------------------------------ ops
    def spmm(self, edge_weight: torch.Tensor, x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
        """:func:`graphode.ops.spmm` over the owned rows (``edge_weight`` ``[num_edges]`` local)."""
        self._check("x", x)
        (x_ext,) = self.exchange(x)
        return ops.spmm(self.local, edge_weight, x_ext, backend=backend)[: self.num_nodes]

    def edge_attention(self, q: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None,
                       backend: Optional[str] = None, **options) -> torch.Tensor:
        """:func:`graphode.ops.edge_attention` of the local edges ``[num_edges, H]`` (``options``
        as there: ``score``, ``normalize``, ``normalize_over``, ``kernel_params``)."""
        self._check("q", q)
        self._check("k", k)
        if not self._fused(options):
            return self._attention(q, k, scale, backend=backend, **options)
        (k_ext,) = self.exchange(k)
        return ops.edge_attention(self.local, self._pad(q), k_ext, scale, backend=backend, **options)

    def attention_diffusion(self, q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, scale: Optional[float] = None,
                            backend: Optional[str] = None, **options) -> torch.Tensor:
        """:func:`graphode.ops.attention_diffusion` over the owned rows (``k`` and ``x``
        exchanged)."""
        self._check("q", q)
        self._check("k", k)
        self._check("x", x)
        if not self._fused(options):  # attention with groups across ranks, then the SpMM
            return self.spmm(self._attention(q, k, scale, backend=backend, **options).mean(1), x, backend=backend)
        k_ext, x_ext = self.exchange(k, x)
        y = ops.attention_diffusion(self.local, self._pad(q), k_ext, x_ext, scale, backend=backend, **options)
        return y[: self.num_nodes]
