"""Partitioning a graph for distributed full-graph training.

:func:`partition_graph` assigns every node to one of ``P`` parts (METIS
through ``pymetis`` when it is installed, else, or on request, random or
contiguous parts), relabels the nodes so that each part is a contiguous range
of new ids, and builds, per part, what one rank needs and nothing more
(:class:`GraphPart`):

* the CSR rows of the nodes it owns (the in-edges of those nodes, so that
  every owned row is complete and the ops reduce over it locally);
* the halo: the source nodes of those edges owned by other parts, whose
  features the rank receives at every evaluation;
* the send map: which of its own nodes each other part needs, in the order
  that part expects them.

Local node ids of a part: its ``n_own`` owned nodes first (``0 .. n_own-1``,
in the order of their original ids), then its ``n_halo`` halo nodes, grouped
by owning part (ascending) and, within a part, by new id.  Edges are sorted by
(target, source) in these local ids, so the local graph is an ordinary
:class:`graphode.Graph` of ``n_own + n_halo`` nodes whose halo rows are empty.

Partitions are saved to a directory (:func:`save_partition`): ``meta.json``
plus one ``part-<r>.pt`` per part holding only tensors (read back with
``torch.load(weights_only=True)``, which never runs code from the file), so
that each rank reads only its own file (:func:`load_part`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..graph import Graph

__all__ = [
    "METHODS",
    "Partition",
    "GraphPart",
    "partition_graph",
    "assign_parts",
    "have_metis",
    "save_partition",
    "load_part",
    "load_meta",
]

METHODS = ("metis", "random", "contiguous")
FORMAT = "graphode.partition/1"


def have_metis() -> bool:
    """Whether ``pymetis`` is importable."""
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- assignment
def _symmetric_adjacency(graph: Graph):
    """``A + Aᵀ`` without self loops as int32/int64 CSR arrays (what METIS takes)."""
    import scipy.sparse as sp

    n = graph.num_nodes
    row, col = graph.row.cpu().numpy(), graph.col.cpu().numpy()
    keep = row != col
    a = sp.coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (row[keep], col[keep])), shape=(n, n)).tocsr()
    a = (a + a.T).tocsr()
    a.sum_duplicates()
    return a.indptr, a.indices


def assign_parts(graph: Graph, num_parts: int, method: str = "metis", seed: int = 0,
                 balance: str = "edges") -> torch.Tensor:
    """The part of every node, ``[N]`` int64 in ``[0, num_parts)``.

    Args:
        method: ``"metis"`` (k-way METIS on the symmetrised graph, through
            ``pymetis``; falls back to ``"random"`` with a warning when
            ``pymetis`` is not installed), ``"random"`` (a random permutation
            cut into equal parts) or ``"contiguous"`` (ranges of node ids).
        balance: ``"edges"`` balances the work, ``in-degree + 1`` per node
            (METIS vertex weights; contiguous ranges by cumulative weight);
            ``"nodes"`` balances node counts.  Random parts have equal node
            counts either way.
    """
    n = graph.num_nodes
    P = int(num_parts)
    if P < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if P > max(n, 1):
        raise ValueError(f"cannot cut a graph of {n} nodes into {P} parts")
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; choose one of {METHODS}")
    if balance not in ("edges", "nodes"):
        raise ValueError(f"balance must be 'edges' or 'nodes', got {balance!r}")
    if P == 1:
        return torch.zeros(n, dtype=torch.int64)
    weight = (graph.in_degree.cpu() + 1) if balance == "edges" else torch.ones(n, dtype=torch.int64)
    if method == "metis" and not have_metis():
        import warnings

        warnings.warn("pymetis is not installed (pip install pymetis): using random parts instead of METIS",
                      RuntimeWarning, stacklevel=2)
        method = "random"
    if method == "metis":
        import pymetis

        xadj, adjncy = _symmetric_adjacency(graph)
        opts = pymetis.Options(seed=int(seed))
        vw = weight.numpy().astype(np.int64) if balance == "edges" else None
        csr = getattr(pymetis, "CSRAdjacency", None)  # pymetis >= 2025; older ones take xadj/adjncy
        graph_arg = dict(adjacency=csr(xadj, adjncy)) if csr is not None else dict(xadj=xadj, adjncy=adjncy)
        _, parts = pymetis.part_graph(P, vweights=vw, options=opts, **graph_arg)
        out = torch.as_tensor(np.asarray(parts, dtype=np.int64))
        # METIS may leave a part empty on tiny or disconnected graphs; every rank needs a node.
        counts = torch.bincount(out, minlength=P)
        if bool((counts == 0).any()):
            raise ValueError(f"METIS left a part empty ({counts.tolist()} nodes per part); use fewer parts "
                             "or method='random'")
        return out
    if method == "random":
        gen = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(n, generator=gen)
        out = torch.empty(n, dtype=torch.int64)
        out[perm] = torch.arange(n) * P // n
        return out
    # contiguous: cut the cumulative weight into P equal ranges
    cum = torch.cumsum(weight.to(torch.float64), 0)
    total = float(cum[-1])
    bounds = torch.tensor([total * (r + 1) / P for r in range(P - 1)], dtype=torch.float64)
    parts = torch.bucketize(cum, bounds, right=False)  # number of bounds below each node's weight
    # each part must own at least one node
    counts = torch.bincount(parts, minlength=P)
    if bool((counts == 0).any()):
        parts = torch.arange(n) * P // n
    return parts


# --------------------------------------------------------------------------- parts
@dataclass
class GraphPart:
    """What one rank holds of a partitioned graph (see the module docstring).

    Attributes (all int64 tensors unless said otherwise):
        rank, num_parts: this part and the number of parts.
        num_nodes_global, num_edges_global: of the whole graph.
        rowptr: ``[n_own + 1]`` CSR row pointers of the owned rows.
        col: ``[E_r]`` local source ids (owned ``< n_own``, halo ``>= n_own``).
        nodes: ``[n_own]`` original ids of the owned nodes (local row ``i`` is
            original node ``nodes[i]``).
        halo: ``[n_halo]`` original ids of the halo nodes (local id ``n_own + k``).
        recv_counts: ``[P]`` halo nodes received from each part (0 from itself).
        send_index: ``[S]`` local ids of owned nodes to send, part after part.
        send_counts: ``[P]`` how many of them go to each part.
        edge_ids: ``[E_r]`` position of each local edge in the original graph's
            edge order (to slice per-edge tensors).
        edge_weight: ``[E_r]`` per-edge values, or None.
        node_data: per-owned-node tensors saved with the part (features, labels, masks).
    """

    rank: int
    num_parts: int
    num_nodes_global: int
    num_edges_global: int
    rowptr: torch.Tensor
    col: torch.Tensor
    nodes: torch.Tensor
    halo: torch.Tensor
    recv_counts: torch.Tensor
    send_index: torch.Tensor
    send_counts: torch.Tensor
    edge_ids: Optional[torch.Tensor] = None
    edge_weight: Optional[torch.Tensor] = None
    node_data: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_owned(self) -> int:
        return int(self.nodes.numel())

    @property
    def num_halo(self) -> int:
        return int(self.halo.numel())

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @property
    def num_cut_edges(self) -> int:
        """Local edges whose source is a halo node."""
        return int((self.col >= self.num_owned).sum())

    def local_graph(self) -> Graph:
        """The ``n_own + n_halo``-node :class:`Graph` of the local edges (halo rows empty)."""
        n_loc = self.num_owned + self.num_halo
        rowptr = torch.cat([self.rowptr, self.rowptr[-1:].expand(self.num_halo)])
        return Graph(rowptr, self.col, n_loc, validate=False)

    def tensors(self) -> Dict[str, torch.Tensor]:
        out = {k: getattr(self, k) for k in ("rowptr", "col", "nodes", "halo", "recv_counts", "send_index",
                                             "send_counts")}
        out["header"] = torch.tensor([self.rank, self.num_parts, self.num_nodes_global, self.num_edges_global])
        if self.edge_ids is not None:
            out["edge_ids"] = self.edge_ids
        if self.edge_weight is not None:
            out["edge_weight"] = self.edge_weight
        for k, v in self.node_data.items():
            out[f"node.{k}"] = v
        return out

    @classmethod
    def from_tensors(cls, d: Dict[str, torch.Tensor]) -> "GraphPart":
        rank, P, n, e = (int(v) for v in d["header"].tolist())
        return cls(rank, P, n, e, d["rowptr"], d["col"], d["nodes"], d["halo"], d["recv_counts"],
                   d["send_index"], d["send_counts"], d.get("edge_ids"), d.get("edge_weight"),
                   {k[5:]: v for k, v in d.items() if k.startswith("node.")})


class Partition:
    """A graph cut into parts: the assignment, the new numbering and the per-part halos.

    Built by :func:`partition_graph`.  ``part(r)`` builds :class:`GraphPart` ``r``
    (on demand, so that a large graph's parts need not all be in memory).

    Attributes:
        assignment: ``[N]`` part of every original node.
        offsets: ``[P + 1]``: part ``r`` owns new ids ``offsets[r]:offsets[r+1]``.
        new_id: ``[N]`` new id of every original node; ``order`` its inverse.
        halos: per part, the sorted new ids of its halo nodes.
        stats: :meth:`summary` (edge cut, halo sizes, ...).
    """

    def __init__(self, graph: Graph, assignment: torch.Tensor, method: str, seed: int):
        g = graph.to("cpu")
        self.graph = g
        self.method = method
        self.seed = int(seed)
        a = assignment.to(torch.int64).cpu()
        if a.shape != (g.num_nodes,):
            raise ValueError(f"assignment must have shape [{g.num_nodes}], got {list(a.shape)}")
        P = int(a.max()) + 1 if a.numel() else 1
        counts = torch.bincount(a, minlength=P)
        if bool((counts == 0).any()):
            raise ValueError(f"every part needs at least one node, got {counts.tolist()} nodes per part")
        self.num_parts = P
        self.assignment = a
        self.order = torch.sort(a, stable=True).indices  # new id -> original id
        self.new_id = torch.empty_like(self.order)
        self.new_id[self.order] = torch.arange(g.num_nodes)
        self.offsets = torch.zeros(P + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=self.offsets[1:])
        # halos: distinct sources of each part's edges that other parts own
        row_part = a[g.row]
        src_new = self.new_id[g.col]
        src_part = a[g.col]
        self.halos: List[torch.Tensor] = []
        self._cut = []
        self._edges = []
        for r in range(P):
            m = (row_part == r) & (src_part != r)
            self.halos.append(torch.unique(src_new[m]))
            self._cut.append(int(m.sum()))
            self._edges.append(int((row_part == r).sum()))

    # ------------------------------------------------------------------ statistics
    def summary(self) -> Dict[str, Any]:
        """Edge cut and halo sizes (plain Python values)."""
        g = self.graph
        loops = int((g.row == g.col).sum())
        cut = sum(self._cut)
        owned = torch.diff(self.offsets).tolist()
        return {
            "method": self.method,
            "num_parts": self.num_parts,
            "num_nodes": g.num_nodes,
            "num_edges": g.num_edges,
            "edge_cut": cut,
            "edge_cut_fraction": cut / max(g.num_edges - loops, 1),
            "owned_nodes": owned,
            "local_edges": list(self._edges),
            "halo_nodes": [int(h.numel()) for h in self.halos],
            "cut_edges": list(self._cut),
            "halo_fraction": sum(int(h.numel()) for h in self.halos) / max(g.num_nodes, 1),
        }

    # ------------------------------------------------------------------ parts
    def _owner(self, new_ids: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.offsets, new_ids, right=True) - 1

    def part(self, r: int, edge_weight: Optional[torch.Tensor] = None,
             node_data: Optional[Dict[str, torch.Tensor]] = None) -> GraphPart:
        """Build part ``r`` (``edge_weight`` ``[E]`` and ``node_data`` ``{name: [N, ...]}``
        are sliced to it)."""
        g, P = self.graph, self.num_parts
        if not 0 <= r < P:
            raise IndexError(f"part {r} out of range for {P} parts")
        lo, hi = int(self.offsets[r]), int(self.offsets[r + 1])
        nodes = self.order[lo:hi]  # original ids, ascending
        n_own = hi - lo
        halo_new = self.halos[r]
        n_halo = int(halo_new.numel())
        deg = g.rowptr[nodes + 1] - g.rowptr[nodes]
        rowptr = torch.zeros(n_own + 1, dtype=torch.int64)
        torch.cumsum(deg, 0, out=rowptr[1:])
        total = int(rowptr[-1])
        # positions of the owned rows' edges in the global CSR
        starts = torch.repeat_interleave(g.rowptr[nodes] - rowptr[:-1], deg)
        eid = torch.arange(total, dtype=torch.int64) + starts
        src_new = self.new_id[g.col[eid]]
        own = (src_new >= lo) & (src_new < hi)
        col = torch.empty(total, dtype=torch.int64)
        col[own] = src_new[own] - lo
        col[~own] = n_own + torch.searchsorted(halo_new, src_new[~own])
        # sort each row's edges by local source id
        row = torch.repeat_interleave(torch.arange(n_own), deg)
        perm = torch.sort(row * (n_own + n_halo) + col).indices
        col, eid = col[perm], eid[perm]
        # receive counts (halo grouped by owner) and the send map
        recv = torch.bincount(self._owner(halo_new), minlength=P) if n_halo else torch.zeros(P, dtype=torch.int64)
        send = []
        for q in range(P):
            hq = self.halos[q]
            if q == r or hq.numel() == 0:
                send.append(torch.zeros(0, dtype=torch.int64))
                continue
            a, b = torch.searchsorted(hq, torch.tensor([lo, hi])).tolist()
            send.append(hq[a:b] - lo)
        send_counts = torch.tensor([s.numel() for s in send], dtype=torch.int64)
        data = {k: v[nodes].contiguous() for k, v in (node_data or {}).items()}
        return GraphPart(
            rank=r, num_parts=P, num_nodes_global=g.num_nodes, num_edges_global=g.num_edges,
            rowptr=rowptr, col=col.contiguous(), nodes=nodes.contiguous(),
            halo=self.order[halo_new].contiguous(), recv_counts=recv, send_index=torch.cat(send),
            send_counts=send_counts, edge_ids=eid.contiguous(),
            edge_weight=None if edge_weight is None else edge_weight[eid].contiguous(), node_data=data)


def partition_graph(graph: Graph, num_parts: int, method: str = "metis", seed: int = 0,
                    balance: str = "edges", assignment: Optional[torch.Tensor] = None) -> Partition:
    """Cut ``graph`` into ``num_parts`` parts (see :func:`assign_parts` for ``method``
    and ``balance``; ``assignment`` ``[N]`` gives the parts directly)."""
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a graphode.Graph, got {type(graph).__name__}")
    if assignment is None:
        assignment = assign_parts(graph, num_parts, method=method, seed=seed, balance=balance)
        used = method if method != "metis" or have_metis() else "random"
    else:
        used = "given"
        if int(assignment.max()) + 1 != int(num_parts):
            raise ValueError(f"the assignment has {int(assignment.max()) + 1} parts, not {num_parts}")
    return Partition(graph, assignment, used, seed)


# --------------------------------------------------------------------------- files
def _atomic_torch_save(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_partition(partition: Partition, directory: str, edge_weight: Optional[torch.Tensor] = None,
                   node_data: Optional[Dict[str, torch.Tensor]] = None,
                   extra: Optional[Dict[str, Any]] = None, parts: Optional[Sequence[int]] = None) -> str:
    """Write ``meta.json`` and ``part-<r>.pt`` for every part (or those in ``parts``).

    Each part file is a flat ``{name: tensor}`` dict (loaded with
    ``weights_only=True``); ``node_data`` tensors are saved sliced to each part's
    owned nodes; ``extra`` (JSON-serialisable) goes into ``meta.json``.
    Files are written atomically (temporary file, then rename); ``meta.json`` last.
    """
    os.makedirs(directory, exist_ok=True)
    node_data = dict(node_data or {})
    for k, v in node_data.items():
        if not isinstance(v, torch.Tensor) or v.size(0) != partition.graph.num_nodes:
            raise ValueError(f"node_data[{k!r}] must be a tensor with {partition.graph.num_nodes} rows")
    for r in (range(partition.num_parts) if parts is None else parts):
        p = partition.part(r, edge_weight=edge_weight, node_data=node_data)
        _atomic_torch_save(p.tensors(), os.path.join(directory, f"part-{r}.pt"))
    meta = {"format": FORMAT, **partition.summary(), "seed": partition.seed,
            "node_data": sorted(node_data), "edge_weight": edge_weight is not None, "extra": extra or {}}
    tmp = os.path.join(directory, f"meta.json.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(directory, "meta.json"))
    return directory


def load_meta(directory: str) -> Dict[str, Any]:
    """``meta.json`` of a saved partition (clear errors for a missing or foreign directory)."""
    path = os.path.join(directory, "meta.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no partition at {directory} (missing {path}); create one with "
                                "graphode.distributed.save_partition or `graphode partition`")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a graphode partition (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def load_part(directory: str, rank: int) -> GraphPart:
    """Read part ``rank`` only (``torch.load(weights_only=True)``: no code runs from the file)."""
    meta = load_meta(directory)
    P = int(meta["num_parts"])
    if not 0 <= int(rank) < P:
        raise ValueError(f"the partition at {directory} has {P} parts; there is no part {rank} "
                         f"(start as many processes as parts)")
    path = os.path.join(directory, f"part-{int(rank)}.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"partition file {path} is missing")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: name it
        raise ValueError(f"cannot read partition file {path}: {e}") from None
    part = GraphPart.from_tensors(d)
    if part.rank != int(rank) or part.num_parts != P:
        raise ValueError(f"{path} holds part {part.rank} of {part.num_parts}, expected {rank} of {P}")
    return part
