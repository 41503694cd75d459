"""Split plans for huge-degree rows ("edge-balanced" work units).

Every kernel maps one *row* (a target's in-edges in CSR, or a source's
out-edges in CSC) to one program, which streams the row's edges in blocks of
``BLOCK_E``.  That is ideal for the bulk of a power-law graph, whose rows have
a handful of edges, but a single row with 40k in-edges (N=100k, E=1M, Zipf
in-degrees) would then be walked by one program while the rest of the GPU
idles: the heavy row becomes the critical path.

So rows with more than ``chunk`` edges are *heavy*: the row kernel skips them
(a masked no-op), and they are cut into chunks of at most ``chunk`` edges, one
program per chunk.  Each chunk writes a partial result (a partial sum, or the
running ``(max, sum-exp, accumulator)`` triple of an online softmax) to a small
workspace, and a combine kernel with one program per heavy row merges its
chunks in order: deterministic, no atomics (``combine_sum`` for additive
results; the attention ops merge softmax states with their own kernel).

A plan for a pointer array ``ptr`` (``rowptr`` or ``csc_ptr``) is two int64 tensors:

* ``heavy`` ``[3, R]``: per heavy row ``(node, first chunk, number of chunks)``;
* ``chunks`` ``[3, C]``: per chunk ``(node, edge start, edge end)``, the chunks
  of one row contiguous and in edge order.

Building a plan needs the sizes R and C on the host (one device sync), so it is
done once per graph and cached in the graph's cache (as plain tensors, so that
``Graph.to`` moves them along).
"""
from __future__ import annotations

import os
from typing import Tuple

import torch
import triton
import triton.language as tl

from . import _common as C

#: Rows with more edges than this are split into chunks of this many edges.
_split_edges = int(os.environ.get("GRAPHODE_TRITON_SPLIT", "1024"))


def get_split_edges() -> int:
    return _split_edges


def set_split_edges(n: int) -> None:
    """Change the chunk size of heavy rows (tests use tiny values to exercise the split path)."""
    global _split_edges
    n = int(n)
    if n < 1:
        raise ValueError(f"split size must be >= 1, got {n}")
    _split_edges = n


def build_plan(ptr: torch.Tensor, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(heavy [3, R], chunks [3, C])`` for the rows of ``ptr`` with more than ``chunk`` edges."""
    dev = ptr.device
    deg = ptr[1:] - ptr[:-1]
    heavy_nodes = torch.nonzero(deg > chunk).view(-1)  # syncs: R becomes known
    if heavy_nodes.numel() == 0:
        e = torch.zeros(3, 0, dtype=torch.int64, device=dev)
        return e, e.clone()
    hdeg = deg[heavy_nodes]
    nch = torch.div(hdeg + chunk - 1, chunk, rounding_mode="floor")
    first = torch.cumsum(nch, 0) - nch
    C = int(nch.sum())
    cnode = torch.repeat_interleave(heavy_nodes, nch, output_size=C)
    local = torch.arange(C, device=dev) - torch.repeat_interleave(first, nch, output_size=C)
    start = ptr[cnode] + local * chunk
    end = torch.minimum(start + chunk, ptr[cnode + 1])
    heavy = torch.stack([heavy_nodes, first, nch]).contiguous()
    chunks = torch.stack([cnode, start, end]).contiguous()
    return heavy, chunks


def row_plan(graph, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plan over the CSR rows (in-edges of each target)."""
    h = f"triton_row_heavy_{chunk}"
    c = f"triton_row_chunks_{chunk}"
    if h not in graph._cache or c not in graph._cache:
        graph._cache[h], graph._cache[c] = build_plan(graph.rowptr, chunk)
    return graph._cache[h], graph._cache[c]


def col_plan(graph, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plan over the CSC columns (out-edges of each source)."""
    h = f"triton_col_heavy_{chunk}"
    c = f"triton_col_chunks_{chunk}"
    if h not in graph._cache or c not in graph._cache:
        graph._cache[h], graph._cache[c] = build_plan(graph.csc_ptr, chunk)
    return graph._cache[h], graph._cache[c]


@triton.jit
def combine_sum_kernel(ws, y, heavy, n_heavy, W, BLOCK: tl.constexpr):
    # y[node, :W] = sum over the node's chunks c of ws[c, :W], in chunk order
    # (deterministic).  Shared by every additive split reduction.
    r = tl.program_id(0).to(tl.int64)
    o = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    om = o < W
    node = tl.load(heavy + r)
    first = tl.load(heavy + n_heavy + r)
    n = tl.load(heavy + 2 * n_heavy + r)
    acc = tl.zeros([BLOCK], dtype=ws.dtype.element_ty)
    for c in range(first, first + n):
        acc += tl.load(ws + c * W + o, mask=om, other=0.0)
    tl.store(y + node * W + o, acc.to(y.dtype.element_ty), mask=om)



def combine_sum(ws: torch.Tensor, out: torch.Tensor, heavy: torch.Tensor, W: int) -> None:
    """``out.view(N, W)[node] = sum of ws[chunks of node]`` for every heavy node."""
    R = heavy.size(1)
    if R == 0:
        return
    B = min(C.next_pow2(W), 256)
    combine_sum_kernel[(R, triton.cdiv(W, B))](ws, out, heavy, R, W, BLOCK=B, num_warps=2)

