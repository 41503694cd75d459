"""The CSR graph structure shared by every op, solver and model in graphode.

Conventions
-----------
* ``edge_index`` follows PyG's ``source_to_target`` flow: ``edge_index[0]`` is
  the *source* j and ``edge_index[1]`` the *target* i of an edge j -> i.
* The graph is stored as CSR over **targets**: row i lists the in-edges of
  node i, so an aggregation ``y[i] = sum_{j -> i} w_e x[j]`` is a row-parallel
  SpMM ``y = A @ x`` with ``A[i, j] = w_e``.
* Edges are sorted by (target, source) and duplicate-free.  ``graph.edge_index``
  returns the edges in this stored order, and every per-edge tensor
  (``edge_weight`` ``[E]``, attention ``[E, H]``) uses the same order.
* The transpose (CSC, i.e. out-edges per source) is computed once and cached:
  backward passes walk it so that they never need atomics on the CPU.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["Graph", "grid_graph", "power_law_graph"]

_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_index_tensor(edge_index: torch.Tensor) -> None:
    if not isinstance(edge_index, torch.Tensor):
        raise ValueError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dtype not in _INDEX_DTYPES:
        raise ValueError(f"edge_index must have an integer dtype, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")


class Graph:
    """A directed graph in CSR form (rows are targets), living on one device.

    Attributes
    ----------
    rowptr : LongTensor ``[N + 1]``
        ``rowptr[i]:rowptr[i+1]`` is the range of in-edges of node ``i``.
    col : LongTensor ``[E]``
        Source node of every edge, sorted within each row.
    num_nodes : int
        N.
    edge_weight : Tensor ``[E]`` or None
        Optional per-edge values carried along (e.g. a normalisation).  The
        ops take their edge values explicitly; this is only a convenient slot.

    Cached, lazily built (all LongTensor):

    * ``row`` ``[E]``: target of each edge.
    * ``csc_ptr`` ``[N + 1]``, ``csc_row`` ``[E]``, ``csc_perm`` ``[E]``: the
      transpose.  Out-edges of source j are the positions
      ``csc_ptr[j]:csc_ptr[j+1]``; at such a position p, ``csc_row[p]`` is the
      target and ``csc_perm[p]`` the edge id in CSR order.
    * ``in_degree`` / ``out_degree`` ``[N]``.
    """

    __slots__ = ("rowptr", "col", "num_nodes", "edge_weight", "_cache")

    def __init__(
        self,
        rowptr: torch.Tensor,
        col: torch.Tensor,
        num_nodes: int,
        edge_weight: Optional[torch.Tensor] = None,
        *,
        validate: bool = True,
    ) -> None:
        if validate:
            _validate_csr(rowptr, col, num_nodes)
        self.rowptr = rowptr.to(torch.int64).contiguous()
        self.col = col.to(torch.int64).contiguous()
        self.num_nodes = int(num_nodes)
        if edge_weight is not None and edge_weight.shape[0] != self.col.numel():
            raise ValueError(
                f"edge_weight has {edge_weight.shape[0]} entries but the graph has {self.col.numel()} edges"
            )
        self.edge_weight = edge_weight
        self._cache: dict = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edge_index(
        cls,
        edge_index: torch.Tensor,
        num_nodes: Optional[int] = None,
        edge_weight: Optional[torch.Tensor] = None,
        reduce: str = "sum",
    ) -> "Graph":
        """Build a graph from a PyG-style ``edge_index`` ``[2, E]`` (row 0 = source).

        Duplicate edges are coalesced (their ``edge_weight`` values combined with
        ``reduce``: ``"sum"``, ``"mean"``, ``"max"`` or ``"min"``).  When the input is
        already sorted by (target, source) and duplicate-free, the edge order is
        kept unchanged, so per-edge tensors of the caller stay aligned.

        Raises ``ValueError`` for a wrong shape or dtype, negative indices, indices
        ``>= num_nodes`` or a ``num_nodes`` smaller than the indices need.
        """
        _check_index_tensor(edge_index)
        device = edge_index.device
        ei = edge_index.to(torch.int64)
        E = ei.size(1)
        if E > 0:
            lo = int(ei.min())
            hi = int(ei.max())
            if lo < 0:
                raise ValueError(f"edge_index contains a negative node index ({lo})")
        else:
            hi = -1
        if num_nodes is None:
            num_nodes = hi + 1
        num_nodes = int(num_nodes)
        if num_nodes < 0:
            raise ValueError(f"num_nodes must be non-negative, got {num_nodes}")
        if hi >= num_nodes:
            raise ValueError(
                f"edge_index refers to node {hi} but num_nodes is {num_nodes} "
                f"(indices must lie in [0, num_nodes))"
            )
        if edge_weight is not None:
            if not isinstance(edge_weight, torch.Tensor) or edge_weight.shape[0] != E:
                raise ValueError(
                    f"edge_weight must be a tensor with {E} rows (one per edge), got "
                    f"{None if not isinstance(edge_weight, torch.Tensor) else list(edge_weight.shape)}"
                )
            if edge_weight.device != device:
                raise ValueError("edge_weight and edge_index are on different devices")
        src, dst = ei[0], ei[1]
        key = dst * max(num_nodes, 1) + src
        if E > 1 and bool((key[1:] > key[:-1]).all()):
            order_kept = True
        else:
            order_kept = E <= 1
        if order_kept:
            col, row, w = src, dst, edge_weight
        else:
            ukey, inverse = torch.unique(key, sorted=True, return_inverse=True)
            row = torch.div(ukey, max(num_nodes, 1), rounding_mode="floor")
            col = ukey - row * max(num_nodes, 1)
            w = None
            if edge_weight is not None:
                shape = (ukey.numel(),) + tuple(edge_weight.shape[1:])
                w = edge_weight.new_zeros(shape)
                idx = inverse.view(-1, *([1] * (edge_weight.dim() - 1))).expand_as(edge_weight)
                if reduce == "sum":
                    w.scatter_add_(0, idx, edge_weight)
                elif reduce in ("mean", "amax", "amin", "max", "min"):
                    r = {"max": "amax", "min": "amin"}.get(reduce, reduce)
                    w = w.scatter_reduce(0, idx, edge_weight, reduce=r, include_self=False)
                else:
                    raise ValueError(f"unknown reduce {reduce!r}; use sum, mean, max or min")
        counts = torch.bincount(row, minlength=num_nodes) if row.numel() else torch.zeros(
            num_nodes, dtype=torch.int64, device=device
        )
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, 0, out=rowptr[1:])
        g = cls(rowptr, col, num_nodes, w, validate=False)
        g._cache["row"] = row.contiguous()
        return g

    @classmethod
    def from_scipy(cls, A, device=None) -> "Graph":
        """Build from a scipy sparse matrix that the SpMM applies: ``y = A @ x``.

        ``A[i, j] != 0`` is an edge j -> i (row = target) whose value becomes
        ``graph.edge_weight``.  A PyG-style source-major matrix (as returned by
        ``torch_geometric.utils.to_scipy_sparse_matrix``) must be transposed first.
        """
        import numpy as np
        import scipy.sparse as sp

        if not sp.issparse(A):
            raise ValueError(f"from_scipy expects a scipy sparse matrix, got {type(A).__name__}")
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"adjacency must be square, got shape {A.shape}")
        A = sp.csr_matrix(A)
        A.sum_duplicates()
        A.sort_indices()
        rowptr = torch.from_numpy(A.indptr.astype(np.int64))
        col = torch.from_numpy(A.indices.astype(np.int64))
        w = torch.from_numpy(np.asarray(A.data))
        g = cls(rowptr, col, A.shape[0], w)
        return g.to(device) if device is not None else g

    @classmethod
    def from_pyg(cls, data) -> "Graph":
        """Build from a ``torch_geometric.data.Data`` (uses ``edge_index``, ``num_nodes``
        and ``edge_weight``/``edge_attr`` when it is one value per edge)."""
        w = getattr(data, "edge_weight", None)
        if w is None:
            ea = getattr(data, "edge_attr", None)
            if ea is not None and (ea.dim() == 1 or (ea.dim() == 2 and ea.size(1) == 1)):
                w = ea.view(-1)
        return cls.from_edge_index(data.edge_index, num_nodes=data.num_nodes, edge_weight=w)

    # ------------------------------------------------------------------ basic properties
    @property
    def device(self) -> torch.device:
        return self.rowptr.device

    @property
    def num_edges(self) -> int:
        return self.col.numel()

    def __repr__(self) -> str:
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, device={self.device})"

    def _cached(self, name, fn):
        v = self._cache.get(name)
        if v is None:
            v = fn()
            self._cache[name] = v
        return v

    @property
    def row(self) -> torch.Tensor:
        """Target node of each edge, ``[E]``."""
        return self._cached(
            "row",
            lambda: torch.repeat_interleave(
                torch.arange(self.num_nodes, device=self.device), self.rowptr.diff()
            ),
        )

    @property
    def edge_index(self) -> torch.Tensor:
        """``[2, E]`` (source, target) in the stored (target, source) order."""
        return torch.stack([self.col, self.row])

    @property
    def in_degree(self) -> torch.Tensor:
        return self._cached("in_degree", lambda: self.rowptr.diff())

    @property
    def out_degree(self) -> torch.Tensor:
        return self._cached("out_degree", lambda: self.csc_ptr.diff())

    def _build_csc(self):
        # Stable sort by source keeps targets ascending within each source block.
        perm = torch.sort(self.col, stable=True).indices
        counts = torch.bincount(self.col, minlength=self.num_nodes)
        ptr = torch.zeros(self.num_nodes + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        self._cache["csc_ptr"] = ptr
        self._cache["csc_row"] = self.row[perm].contiguous()
        self._cache["csc_perm"] = perm.contiguous()

    @property
    def csc_ptr(self) -> torch.Tensor:
        if "csc_ptr" not in self._cache:
            self._build_csc()
        return self._cache["csc_ptr"]

    @property
    def csc_row(self) -> torch.Tensor:
        if "csc_row" not in self._cache:
            self._build_csc()
        return self._cache["csc_row"]

    @property
    def csc_perm(self) -> torch.Tensor:
        if "csc_perm" not in self._cache:
            self._build_csc()
        return self._cache["csc_perm"]

    def csr(self) -> Tuple[torch.Tensor, ...]:
        """``(rowptr, col, csc_ptr, csc_row, csc_perm)``: what the fused kernels take."""
        return self.rowptr, self.col, self.csc_ptr, self.csc_row, self.csc_perm

    # ------------------------------------------------------------------ transforms
    def to(self, device) -> "Graph":
        """A copy on ``device`` (caches are moved too)."""
        device = torch.device(device)
        if device == self.device:
            return self
        g = Graph(
            self.rowptr.to(device),
            self.col.to(device),
            self.num_nodes,
            None if self.edge_weight is None else self.edge_weight.to(device),
            validate=False,
        )
        g._cache = {k: v.to(device) for k, v in self._cache.items()}
        return g

    def has_self_loops(self) -> bool:
        return bool((self.row == self.col).any())

    def remove_self_loops(self) -> "Graph":
        keep = self.row != self.col
        w = None if self.edge_weight is None else self.edge_weight[keep]
        return Graph.from_edge_index(self.edge_index[:, keep], self.num_nodes, w)

    def add_self_loops(self, fill_value: float = 1.0) -> "Graph":
        """Every node gets the edge i -> i.  Existing self loops are kept (with their
        weight); missing ones get ``fill_value`` in ``edge_weight`` (1 if the graph
        carries no weights, in which case the result carries none either)."""
        N = self.num_nodes
        has = torch.zeros(N, dtype=torch.bool, device=self.device)
        loops = self.row == self.col
        has[self.row[loops]] = True
        missing = (~has).nonzero().view(-1)
        ei = torch.cat([self.edge_index, missing.expand(2, -1)], dim=1)
        w = None
        if self.edge_weight is not None:
            fill = self.edge_weight.new_full((missing.numel(),) + tuple(self.edge_weight.shape[1:]), fill_value)
            w = torch.cat([self.edge_weight, fill])
        return Graph.from_edge_index(ei, N, w)

    def gcn_norm(self, add_self_loops: bool = True, dtype=torch.float32) -> Tuple["Graph", torch.Tensor]:
        """Symmetric normalisation ``D^-1/2 (A + I) D^-1/2`` (GCN's Â).

        Returns ``(graph, weight)`` where ``graph`` has self loops (if requested)
        and ``weight`` ``[E]`` holds ``1 / sqrt(d_i d_j)`` for edge j -> i, with
        ``d`` the in-degree of the (self-looped) graph.  Edge weights already on
        the graph are used as the entries of A.
        """
        g = self.add_self_loops() if add_self_loops else self
        w = g.edge_weight.to(dtype) if g.edge_weight is not None else torch.ones(
            g.num_edges, dtype=dtype, device=g.device
        )
        deg = torch.zeros(g.num_nodes, dtype=dtype, device=g.device).index_add_(0, g.row, w)
        dinv = deg.pow(-0.5)
        dinv = torch.where(torch.isinf(dinv), torch.zeros_like(dinv), dinv)
        return g, dinv[g.row] * w * dinv[g.col]

    def row_normalize(self, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Edge weights ``w_e / sum_{e' in row} w_e'`` (random-walk normalisation, ``[E]``)."""
        w = weight if weight is not None else (
            self.edge_weight if self.edge_weight is not None else torch.ones(self.num_edges, device=self.device)
        )
        s = torch.zeros(self.num_nodes, dtype=w.dtype, device=self.device).index_add_(0, self.row, w)
        return w / s[self.row].clamp_min(torch.finfo(w.dtype).tiny)

    def normalize_weights(self, weight: torch.Tensor, over: str = "target", eps: float = 0.0) -> torch.Tensor:
        """``w_e / (sum of w over e's group + eps)``, the group of edge ``j -> i`` being the
        in-edges of ``i`` (``over="target"``, row-stochastic) or the out-edges of ``j``
        (``over="source"``, column-stochastic).  ``weight`` ``[E]`` or ``[E, H]``."""
        if over == "target":
            idx = self.row
        elif over == "source":
            idx = self.col
        else:
            raise ValueError(f"over must be 'target' or 'source', got {over!r}")
        s = weight.new_zeros((self.num_nodes,) + tuple(weight.shape[1:])).index_add_(0, idx, weight)
        return weight / (s.index_select(0, idx) + eps)

    # ------------------------------------------------------------------ conversions
    def to_dense(self, edge_weight: Optional[torch.Tensor] = None, dtype=torch.float32) -> torch.Tensor:
        """Dense ``[N, N]`` matrix with ``A[i, j] = w`` for edge j -> i (tests only)."""
        w = edge_weight if edge_weight is not None else (
            self.edge_weight if self.edge_weight is not None else torch.ones(self.num_edges, dtype=dtype, device=self.device)
        )
        A = torch.zeros(self.num_nodes, self.num_nodes, dtype=w.dtype, device=self.device)
        A[self.row, self.col] = w
        return A

    def to_scipy(self, edge_weight: Optional[torch.Tensor] = None):
        import scipy.sparse as sp

        w = edge_weight if edge_weight is not None else (
            self.edge_weight if self.edge_weight is not None else torch.ones(self.num_edges)
        )
        return sp.csr_matrix(
            (w.detach().cpu().numpy(), self.col.cpu().numpy(), self.rowptr.cpu().numpy()),
            shape=(self.num_nodes, self.num_nodes),
        )

    def to_torch_sparse_csr(self, edge_weight: torch.Tensor) -> torch.Tensor:
        """``torch.sparse_csr_tensor`` of ``A`` (``A @ x`` equals ``ops.spmm``)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            return torch.sparse_csr_tensor(
                self.rowptr, self.col, edge_weight, size=(self.num_nodes, self.num_nodes),
                check_invariants=False,
            )


def _validate_csr(rowptr: torch.Tensor, col: torch.Tensor, num_nodes: int) -> None:
    for name, t in (("rowptr", rowptr), ("col", col)):
        if not isinstance(t, torch.Tensor) or t.dtype not in _INDEX_DTYPES or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D integer tensor")
    if rowptr.numel() != num_nodes + 1:
        raise ValueError(f"rowptr must have num_nodes + 1 = {num_nodes + 1} entries, got {rowptr.numel()}")
    if rowptr.device != col.device:
        raise ValueError("rowptr and col are on different devices")
    if int(rowptr[0]) != 0 or int(rowptr[-1]) != col.numel():
        raise ValueError(
            f"rowptr must start at 0 and end at the number of edges ({col.numel()}), "
            f"got {int(rowptr[0])} and {int(rowptr[-1])}"
        )
    if num_nodes and bool((rowptr.diff() < 0).any()):
        raise ValueError("rowptr must be non-decreasing")
    if col.numel():
        lo, hi = int(col.min()), int(col.max())
        if lo < 0:
            raise ValueError(f"col contains a negative node index ({lo})")
        if hi >= num_nodes:
            raise ValueError(f"col refers to node {hi} but num_nodes is {num_nodes}")


def power_law_graph(
    num_nodes: int,
    num_edges: int,
    exponent: float = 2.1,
    seed: int = 0,
    device=None,
    self_loops: bool = True,
) -> Graph:
    """A random directed graph with power-law in-degrees (for benchmarks and tests).

    Targets are drawn with probability ∝ rank^(-1/(exponent-1)) (a Zipf law, which
    yields a degree distribution with tail exponent ``exponent``), sources
    uniformly; duplicates are coalesced, so the result has at most ``num_edges``
    edges (plus N self loops when ``self_loops``).  Node ids are shuffled so that
    heavy rows are spread over the index range.
    """
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, num_nodes + 1, dtype=torch.float64)
    p = ranks.pow(-1.0 / max(exponent - 1.0, 1e-3))
    perm = torch.randperm(num_nodes, generator=gen)
    p = p[perm]
    dst = torch.multinomial(p.float(), num_edges, replacement=True, generator=gen)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    ei = torch.stack([src, dst])
    g = Graph.from_edge_index(ei, num_nodes)
    if self_loops:
        g = g.add_self_loops()
    return g.to(device) if device is not None else g


def grid_graph(height: int, width: int, connectivity: int = 4, num_grids: int = 1, device=None) -> Graph:
    """The pixel grid ``height x width`` as an undirected graph (both directions stored).

    Node ``g * height * width + r * width + c`` is pixel ``(r, c)`` of grid ``g``
    (row-major; ``num_grids`` disjoint copies, e.g. one per image of a batch),
    so a ``[B, H, W]`` image batch reshaped to ``[B * H * W]`` lines up with the
    nodes.  ``connectivity=4`` joins horizontal and vertical neighbours,
    ``connectivity=8`` also the diagonal ones.  No self loops.

    Returns a :class:`Graph` with ``N = num_grids * height * width`` nodes and,
    per grid, ``2 * (H (W - 1) + (H - 1) W)`` directed edges (4-connectivity;
    ``+ 4 (H - 1)(W - 1)`` with 8): interior pixels have in-degree 4 (8),
    border pixels fewer.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    H, W, B = int(height), int(width), int(num_grids)
    if H < 1 or W < 1 or B < 0:
        raise ValueError(f"need height, width >= 1 and num_grids >= 0, got {height}, {width}, {num_grids}")
    idx = torch.arange(H * W).view(H, W)
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    src, dst = [], []
    for dr, dc in offsets:  # each undirected pair once: (r, c) -- (r + dr, c + dc), dr >= 0
        a = idx[:H - dr, max(0, -dc):W - max(0, dc)]
        b = idx[dr:, max(0, dc):W + min(0, dc)]
        src += [a.reshape(-1), b.reshape(-1)]
        dst += [b.reshape(-1), a.reshape(-1)]
    ei = torch.stack([torch.cat(src), torch.cat(dst)])
    if B != 1:
        shift = (torch.arange(B) * (H * W)).repeat_interleave(ei.size(1))
        ei = ei.repeat(1, B) + shift
    g = Graph.from_edge_index(ei, B * H * W)
    return g.to(device) if device is not None else g
