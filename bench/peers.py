"""The peers the benchmarks compare graphode with: what a competent PyTorch / PyG
user would write for the same work, each checked against the reference before
it is timed (the bench files do the checking).

Graph ops (each a function of the same differentiable inputs as graphode's op,
built from the same prebuilt graph arrays; transposes and other caches are built
outside the timing on both sides, as graphode's ``Graph`` caches its transpose):

* spmm ``y = A x`` with gradients for ``x`` *and* the edge values ``w``:
  - ``composition``: gather -> ``index_add_`` (``graphode.ops.reference``);
  - ``sparse.mm``: ``torch.sparse.mm`` on a CSR tensor built from (rowptr, col, w)
    inside the call, in a :class:`torch.autograd.Function` whose backward is
    ``torch.sparse.mm`` with the prebuilt CSR transpose for ``x`` and
    ``torch.sparse.sampled_addmm`` (SDDMM) for ``w``.  (torch's own autograd
    through a CSR or COO ``sparse.mm`` computes the value gradient as a dense
    ``[N, N]`` matrix: 40 GB at N = 100k, so it is no option.)
* edge_attention (softmax over each target's in-edges of ``scale <q_i, k_j>``):
  - ``composition``: gather, ``scatter_reduce`` softmax (``graphode.ops.reference``);
  - ``pyg-softmax``: gather, ``torch_geometric.utils.softmax`` (by index).
* attention_diffusion (heads averaged, then one SpMM):
  - ``composition``: ``graphode.ops.reference`` (gather, ``scatter_reduce`` softmax,
    head mean, gather -> ``index_add_``);
  - ``pyg-csr``: edge scores by gather, ``torch_geometric.utils.softmax`` with the CSR
    ``ptr``, head mean, then one CSR ``torch.sparse.mm`` (the ``sparse.mm`` spmm peer);
  - ``grand-authors``: the GRAND authors' formulation of their ODE function
    (``SpGraphTransAttentionLayer`` + ``ODEFuncAtt.sparse_multiply``): scores by gather,
    ``torch_geometric.utils.softmax`` over the target index, head mean, and
    ``torch_sparse.spmm`` (index-based: ``x[col] * w`` -> scatter-add into rows,
    written with native torch because torch-sparse is not installed here).
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, Tuple

import torch

from graphode import ops

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

#: providers per op, graphode's backend first
PEERS = {
    "spmm": ("composition", "sparse.mm"),
    "edge_attention": ("composition", "pyg-softmax"),
    "attention_diffusion": ("composition", "pyg-csr", "grand-authors"),
}
#: what each peer is, one line (for the tables)
DESCRIBE = {
    ("spmm", "composition"): "gather -> index_add_ (graphode.ops.reference, the PyG recipe)",
    "composition": "gather -> scatter_reduce softmax -> index_add_ (graphode.ops.reference, the PyG recipe)",
    "sparse.mm": "torch.sparse.mm on CSR; backward: sparse.mm with the prebuilt CSR transpose (x), "
                 "sampled_addmm (edge values)",
    "pyg-softmax": "gather scores, torch_geometric.utils.softmax (index)",
    "pyg-csr": "gather scores, torch_geometric.utils.softmax (CSR ptr), head mean, one CSR torch.sparse.mm",
    "grand-authors": "GRAND authors' ODE function: gather scores, PyG softmax (index), head mean, "
                     "index-based spmm (torch_sparse.spmm)",
}


class CSRTranspose:
    """The CSR transpose of a graph's adjacency pattern, built once (outside the timing):
    ``(colptr, row, perm)`` with ``perm`` mapping CSC positions to CSR edge ids, and the
    all-zeros CSR pattern that ``sampled_addmm`` samples on."""

    def __init__(self, g):
        self.n = g.num_nodes
        self.rowptr, self.col = g.rowptr, g.col
        # the same arrays graphode's Graph caches for its own backward
        self.colptr, self.row_t, self.perm = g.csc_ptr, g.csc_row, g.csc_perm
        self.pattern = torch.sparse_csr_tensor(g.rowptr, g.col, torch.zeros(g.num_edges, device=g.device),
                                               size=(self.n, self.n))

    def csr(self, w):
        return torch.sparse_csr_tensor(self.rowptr, self.col, w, size=(self.n, self.n))

    def csr_t(self, w):
        return torch.sparse_csr_tensor(self.colptr, self.row_t, w.index_select(0, self.perm), size=(self.n, self.n))


class _SparseMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, x, t: CSRTranspose):
        ctx.save_for_backward(w, x)
        ctx.t = t
        return torch.sparse.mm(t.csr(w.detach()), x.detach())

    @staticmethod
    def backward(ctx, gy):
        w, x = ctx.saved_tensors
        t = ctx.t
        gw = gx = None
        if ctx.needs_input_grad[1]:
            gx = torch.sparse.mm(t.csr_t(w), gy)
        if ctx.needs_input_grad[0]:
            pattern = t.pattern.to(gy.dtype) if t.pattern.dtype != gy.dtype else t.pattern
            gw = torch.sparse.sampled_addmm(pattern, gy.contiguous(), x.t(), beta=0.0).values()
        return gw, gx, None


def sparse_mm_spmm(t: CSRTranspose, w, x):
    """``y = A(w) x`` through ``torch.sparse.mm``, differentiable in ``w`` and ``x``."""
    if not (w.requires_grad or x.requires_grad):
        return torch.sparse.mm(t.csr(w), x)
    return _SparseMM.apply(w, x, t)


def _scores(g, q, k, scale):
    return (q.index_select(0, g.row) * k.index_select(0, g.col)).sum(-1) * scale


def pyg_edge_attention(g, q, k, scale, ptr: bool = False):
    from torch_geometric.utils import softmax

    s = _scores(g, q, k, scale)
    if ptr:
        return softmax(s, ptr=g.rowptr, num_nodes=g.num_nodes)
    return softmax(s, g.row, num_nodes=g.num_nodes)


def index_spmm(g, w, x):
    """``torch_sparse.spmm(index, value, m, n, x)``: ``x[col] * value`` scattered into ``row``."""
    msg = x.index_select(0, g.col) * w.unsqueeze(-1)
    return torch.zeros(g.num_nodes, x.size(1), dtype=x.dtype, device=x.device).index_add_(0, g.row, msg)


def make_op(op: str, provider: str, g, scale: float, backend: str = "cpu") -> Tuple[Callable, Tuple[str, ...]]:
    """``(fn, input names)``: ``fn(*inputs)`` computes ``op`` the provider's way.  ``provider``
    is ``"graphode"`` (``backend=``), or a peer of :data:`PEERS`.  Everything the provider
    caches (the CSR transpose) is built here, outside any timing."""
    if op == "spmm":
        names = ("w", "x")
        if provider == "graphode":
            return (lambda w, x: ops.spmm(g, w, x, backend=backend)), names
        if provider == "composition":
            return (lambda w, x: ops.spmm(g, w, x, backend="reference")), names
        if provider == "sparse.mm":
            t = CSRTranspose(g)
            return (lambda w, x: sparse_mm_spmm(t, w, x)), names
    elif op == "edge_attention":
        names = ("q", "k")
        if provider == "graphode":
            return (lambda q, k: ops.edge_attention(g, q, k, scale, backend=backend)), names
        if provider == "composition":
            return (lambda q, k: ops.edge_attention(g, q, k, scale, backend="reference")), names
        if provider == "pyg-softmax":
            return (lambda q, k: pyg_edge_attention(g, q, k, scale)), names
    elif op == "attention_diffusion":
        names = ("q", "k", "x")
        if provider == "graphode":
            return (lambda q, k, x: ops.attention_diffusion(g, q, k, x, scale, backend=backend)), names
        if provider == "composition":
            return (lambda q, k, x: ops.attention_diffusion(g, q, k, x, scale, backend="reference")), names
        if provider == "pyg-csr":
            t = CSRTranspose(g)
            return (lambda q, k, x: sparse_mm_spmm(t, pyg_edge_attention(g, q, k, scale, ptr=True).mean(1), x)), names
        if provider == "grand-authors":
            return (lambda q, k, x: index_spmm(g, pyg_edge_attention(g, q, k, scale).mean(1), x)), names
    raise ValueError(f"no provider {provider!r} for {op!r}")


def describe(op: str, peer: str) -> str:
    return DESCRIBE.get((op, peer)) or DESCRIBE[peer]


PROVIDER_ORDER: Dict[str, Tuple[str, ...]] = {op: ("graphode",) + peers for op, peers in PEERS.items()}
