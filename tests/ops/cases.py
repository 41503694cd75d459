"""What every op test shares: the graphs, the inputs, the one tolerance table and
the comparison with the reference (``graphode.ops.reference``, float64).

Graphs (``GRAPHS``; "large" ones are skipped by backends that run in Triton's
interpreter, see conftest.py):

* ``tiny``: 7 nodes, self loops, a multi-degree row, node 6 isolated (gradcheck);
* ``small``: 30 nodes, random edges and self loops, a target with 29 in-edges,
  a source with 24 out-edges, 4 nodes without in-edges (2 of them with
  out-edges);
* ``hub``: 6000 nodes, one target with 5000 in-edges (longer than the CPU
  kernels' 256-edge row block), isolated nodes;
* ``powerlaw``: 3000 nodes, 20000 edges with power-law degrees.
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple

import torch

import graphode
from graphode import Graph, ops

# One tolerance table for every op and backend: max |actual - expected| <=
# TOL * max(1, max |expected|) against the float64 reference on the same
# (rounded) inputs.  Half types accumulate in float32 (triton only).
TOL = {torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float32: 2e-5, torch.float64: 1e-12}


def random_graph(num_nodes, avg_deg, seed, isolated=(), hub=None, hub_degree=0, self_loops=True) -> Graph:
    """Random duplicate-free graph; `isolated` nodes get no in-edges, `hub` gets
    `hub_degree` distinct in-edges (sources include itself when self_loops)."""
    gen = torch.Generator().manual_seed(seed)
    E = num_nodes * avg_deg
    src = torch.randint(0, num_nodes, (E,), generator=gen)
    dst = torch.randint(0, num_nodes, (E,), generator=gen)
    ei = [torch.stack([src, dst])]
    if self_loops:
        loops = torch.arange(0, num_nodes, 2)
        ei.append(torch.stack([loops, loops]))
    if hub is not None:
        hs = torch.randperm(num_nodes, generator=gen)[:hub_degree]
        ei.append(torch.stack([hs, torch.full_like(hs, hub)]))
    ei = torch.cat(ei, 1)
    if len(isolated):
        keep = ~torch.isin(ei[1], torch.tensor(list(isolated)))
        ei = ei[:, keep]
    return Graph.from_edge_index(ei, num_nodes)


def _tiny() -> Graph:
    ei = torch.tensor([[0, 1, 2, 3, 0, 4, 5, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5]])
    return Graph.from_edge_index(ei, 7)


SMALL_HUB, SMALL_SRC_HUB, SMALL_ISOLATED = 3, 7, (26, 27, 28, 29)


def _small() -> Graph:
    gen = torch.Generator().manual_seed(0)
    N = 30
    src = torch.randint(0, 26, (70,), generator=gen)
    dst = torch.randint(0, 26, (70,), generator=gen)
    loops = torch.arange(0, 26, 3)
    hub_in = torch.arange(N)  # every node -> SMALL_HUB (incl. its self loop), but 29
    hub_out = torch.arange(0, 24)  # SMALL_SRC_HUB -> 0..23
    extra = torch.tensor([27, 28])  # 27 -> 5, 28 -> 5: sources without in-edges
    s = torch.cat([src, loops, hub_in[hub_in != 29], torch.full((24,), SMALL_SRC_HUB), extra])
    d = torch.cat([dst, loops, torch.full((N - 1,), SMALL_HUB), hub_out, torch.tensor([5, 5])])
    return Graph.from_edge_index(torch.stack([s, d]), num_nodes=N)


class GraphCase(NamedTuple):
    build: Callable[[], Graph]
    large: bool


GRAPHS: Dict[str, GraphCase] = {
    "tiny": GraphCase(_tiny, False),
    "small": GraphCase(_small, False),
    "hub": GraphCase(lambda: random_graph(6000, 2, 1, isolated=(5, 17), hub=3, hub_degree=5000), True),
    "powerlaw": GraphCase(lambda: graphode.power_law_graph(3000, 20000, seed=2), True),
}
_cache: Dict[tuple, Graph] = {}


def get_graph(name: str, device="cpu") -> Graph:
    key = (name, str(device))
    if key not in _cache:
        if (name, "cpu") not in _cache:
            _cache[(name, "cpu")] = GRAPHS[name].build()
        g = _cache[(name, "cpu")]
        _cache[key] = g.to(device)
    return _cache[key]


def isolated_nodes(g: Graph) -> torch.Tensor:
    return (g.in_degree == 0).nonzero().view(-1)


def dense_attention(g: Graph, q, k, scale):
    """Dense [N, N, H] softmax over in-edges, masked (an independent formula)."""
    S = torch.einsum("ihd,jhd->ijh", q, k) * scale
    mask = g.to_dense(dtype=q.dtype) != 0
    S = S.masked_fill(~mask[..., None], float("-inf"))
    return torch.nan_to_num(torch.softmax(S, dim=1), nan=0.0)  # rows without in-edges -> 0


def close(actual, expected, tol, what=""):
    """max |a - e| <= tol * max(1, max |e|): a relative criterion for whole tensors."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    scale = max(1.0, expected.double().abs().max().item() if expected.numel() else 0.0)
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.0e} * {scale:.3e}"


def inputs(g: Graph, H, D, F, dtype=torch.float64, seed=0, qk_scale=1.0):
    """q, k [N, H, D], x [N, F] and w [E], standard normal (q, k times qk_scale)."""
    gen = torch.Generator().manual_seed(seed)
    N, E = g.num_nodes, g.num_edges
    q = torch.randn(N, H, D, generator=gen, dtype=torch.float64) * qk_scale
    k = torch.randn(N, H, D, generator=gen, dtype=torch.float64) * qk_scale
    x = torch.randn(N, F, generator=gen, dtype=torch.float64)
    w = torch.randn(E, generator=gen, dtype=torch.float64)
    return tuple(t.to(dtype=dtype, device=g.device) for t in (q, k, x, w))


def run(fn, tensors, grad_seed=1, wants=None):
    """fn(*tensors) and the grads of a fixed random cotangent w.r.t. the tensors
    (those with wants[i] True; None for the others)."""
    wants = wants or (True,) * len(tensors)
    ts = [t.detach().clone().requires_grad_(w) for t, w in zip(tensors, wants)]
    y = fn(*ts)
    gen = torch.Generator().manual_seed(grad_seed)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(dtype=y.dtype, device=y.device)
    need = [t for t in ts if t.requires_grad]
    grads = iter(torch.autograd.grad(y, need, gy))
    return y.detach(), [next(grads).detach() if t.requires_grad else None for t in ts]


def gradcheck(backend, fn, tensors) -> bool:
    """float64 ``torch.autograd.gradcheck`` of ``fn`` at ``tensors`` on ``backend``; under
    Triton's interpreter in fast mode (one random projection of the Jacobian)."""
    ts = tuple(t.detach().double().requires_grad_() for t in tensors)
    return torch.autograd.gradcheck(fn, ts, fast_mode=getattr(backend, "interpreted", False))


def check_against_reference(op: str, backend: str, g: Graph, tensors, dtype, tol=None, wants=None, **kw):
    """``graphode.ops.<op>`` on ``backend`` in ``dtype`` against the float64 reference on
    the same rounded inputs, forward and backward; returns (y, grads) of the backend."""
    fn = getattr(ops, op)
    tensors = [t.to(dtype) for t in tensors]
    y, grads = run(lambda *t: fn(g, *t, **kw, backend=backend), tensors, wants=wants)
    y_ref, grads_ref = run(lambda *t: fn(g, *t, **kw, backend="reference"), [t.double() for t in tensors],
                           wants=wants)
    assert y.dtype == dtype
    tol = TOL[dtype] if tol is None else tol
    close(y, y_ref, tol, f"{op} forward")
    for i, (gr, gr_ref) in enumerate(zip(grads, grads_ref)):
        assert (gr is None) == (gr_ref is None)
        if gr is not None:
            assert gr.dtype == dtype
            close(gr, gr_ref, tol, f"{op} grad {i}")
    return y, grads
