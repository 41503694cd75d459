"""The code paths of the fused attention_diffusion CPU kernels (csrc/cpu/attention.h).

The kernels have a fast path for H a power of two dividing the vector width
and D a multiple of it (transpose-sum scores, whole-vector softmax on rows
padded with -inf, H a template parameter) and a generic path for every other
shape; the backward writes per-edge records in its row pass and reads them
through csc_perm in its column pass.  Every path is checked here against the
float64 reference, forward and backward: the fast path with each H it
instantiates (1, 2, 4, 8, 16), D = 16 and 32, F with and without a vector
tail, rows longer than the 256-edge block, partial gradients, bitwise
independence of the thread count, and the generic path for shapes that just
miss the fast one (D = 8, H = 3, H = 32).  The vector width depends on the
build (-march=native), so which shapes are "fast" differs between machines;
the results must not.
"""
import pytest
import torch

import graphode
from graphode import Graph, ops

pytest.importorskip("graphode.ops._native", reason="graphode._C is not built")
P = torch.ops.graphode


def _graph(num_nodes, avg_deg, seed, hub_degree=0):
    gen = torch.Generator().manual_seed(seed)
    E = num_nodes * avg_deg
    src = torch.randint(0, num_nodes, (E,), generator=gen)
    dst = torch.randint(0, num_nodes, (E,), generator=gen)
    loops = torch.arange(num_nodes)
    ei = [torch.stack([src, dst]), torch.stack([loops, loops])]
    if hub_degree:
        hs = torch.randperm(num_nodes, generator=gen)[:hub_degree]
        ei.append(torch.stack([hs, torch.zeros_like(hs)]))  # node 0: a long row
        ei.append(torch.stack([torch.full_like(hs, 1), hs]))  # node 1: a long column (out-edges)
    # node num_nodes - 1 keeps no in-edges (an empty row), and no out-edges
    ei = torch.cat(ei, 1)
    keep = (ei[1] != num_nodes - 1) & (ei[0] != num_nodes - 1)
    return Graph.from_edge_index(ei[:, keep], num_nodes)


_G = {}


def graph(name):
    if name not in _G:
        _G[name] = {"small": lambda: _graph(300, 4, 0), "hub": lambda: _graph(1500, 3, 1, hub_degree=700)}[name]()
    return _G[name]


def _inputs(g, H, D, F, seed=0, qk_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    N = g.num_nodes
    q = torch.randn(N, H, D, generator=gen, dtype=torch.float64) * qk_scale
    k = torch.randn(N, H, D, generator=gen, dtype=torch.float64) * qk_scale
    x = torch.randn(N, F, generator=gen, dtype=torch.float64)
    gy = torch.randn(N, F, generator=gen, dtype=torch.float64)
    return q, k, x, gy


def _fwd_bwd(g, q, k, x, gy, backend, wants=(True, True, True), scale=0.3):
    ts = [t.clone().requires_grad_(w) for t, w in zip((q, k, x), wants)]
    y = ops.attention_diffusion(g, *ts, scale=scale, backend=backend)
    y.backward(gy)
    return [y.detach()] + [t.grad for t in ts]


def _close(a, b, tol):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), f"max abs error {err:.3e}"


TOL = {torch.float32: 3e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "H,D,F",
    [
        (8, 16, 80),  # GRAND-nl's Cora shape
        (4, 16, 64),  # the op benchmark's shape
        (1, 16, 16),
        (2, 32, 33),  # two vectors per head; F with a scalar tail
        (16, 16, 8),
        (8, 8, 20),  # D below the float32 AVX-512 width: generic there
        (3, 16, 24),  # H not a power of two: generic
        (32, 16, 12),  # H above the vector width: generic
    ],
)
@pytest.mark.parametrize("name", ["small", "hub"])
def test_against_reference(name, dtype, H, D, F):
    g = graph(name)
    q, k, x, gy = _inputs(g, H, D, F)
    got = _fwd_bwd(g, *(t.to(dtype) for t in (q, k, x, gy)), backend="cpu")
    ref = _fwd_bwd(g, *(t.to(dtype).double() for t in (q, k, x, gy)), backend="reference")
    for a, b in zip(got, ref):
        assert a.dtype == dtype
        _close(a, b, TOL[dtype])
    iso = (g.in_degree == 0).nonzero().view(-1)
    assert (got[0][iso] == 0).all() and (got[1][iso] == 0).all()


@pytest.mark.parametrize("H,D", [(8, 16), (3, 5)])
def test_lse_output(H, D):
    """lse (m + log l: a vector log on the fast path) against torch.logsumexp."""
    g = graph("hub")
    q, k, x, _ = _inputs(g, H, D, 4, qk_scale=3.0)
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-13)):
        _, lse = P.attention_diffusion(*g.csr(), q.to(dtype), k.to(dtype), x.to(dtype), 0.5)
        s = (q[g.row] * k[g.col]).sum(-1) * 0.5
        m = torch.full((g.num_nodes, H), float("-inf"), dtype=torch.float64).scatter_reduce(
            0, g.row[:, None].expand(-1, H), s, "amax")
        ex = torch.zeros(g.num_nodes, H, dtype=torch.float64).index_add_(0, g.row, (s - m[g.row]).exp())
        expect = m + ex.log()
        has = g.in_degree > 0
        _close(lse[has], expect[has], tol)
        assert torch.isneginf(lse[~has]).all()


@pytest.mark.parametrize("which", ["x", "qk", "q"])
def test_partial_grads_fast_path(which):
    g = graph("hub")
    q, k, x, gy = _inputs(g, 8, 16, 40)
    wants = {"x": (False, False, True), "qk": (True, True, False), "q": (True, False, False)}[which]
    got = _fwd_bwd(g, q, k, x, gy, "cpu", wants)
    ref = _fwd_bwd(g, q, k, x, gy, "reference", wants)
    for a, b, w in zip(got[1:], ref[1:], wants):
        assert (a is None) == (not w)
        if w:
            _close(a, b, 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_scores_fast_path(dtype):
    """Scores ~1e3 on the fast path: the max shift keeps every exp argument <= 0."""
    g = graph("hub")
    q, k, x, gy = _inputs(g, 4, 16, 16, qk_scale=8.0)
    q[:, 1] *= 1e-3
    got = _fwd_bwd(g, *(t.to(dtype) for t in (q, k, x, gy)), backend="cpu", scale=1.0)
    ref = _fwd_bwd(g, *(t.to(dtype).double() for t in (q, k, x, gy)), backend="reference", scale=1.0)
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        _close(a, b, 2e-3 if dtype == torch.float32 else 1e-9)


def test_gradcheck_fast_shape():
    ei = torch.tensor([[0, 1, 2, 3, 0, 4, 5, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5]])
    g = Graph.from_edge_index(ei, 7)
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randn(7, 2, 16, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2))
    x = torch.randn(7, 8, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda q, k, x: ops.attention_diffusion(g, q, k, x, 0.7, backend="cpu"), (q, k, x))


def test_thread_count_independent_fast_path():
    """Row and column passes reduce each output row in edge order on one thread: bitwise equal."""
    g = graphode.power_law_graph(20000, 150000, seed=7)
    q, k, x, gy = (t.float() for t in _inputs(g, 8, 16, 80))
    old = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            out, lse = P.attention_diffusion(*g.csr(), q, k, x, 0.25)
            outs.append([out, lse, *P.attention_diffusion_backward(gy, lse, *g.csr(), q, k, x, 0.25, True, True)])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_bad_csc_perm_is_reported():
    """The backward's column pass reads the records through csc_perm: a bad entry must
    raise, not read out of bounds."""
    g = graph("small")
    q, k, x, gy = (t.float() for t in _inputs(g, 8, 16, 16))
    rowptr, col, csc_ptr, csc_row, csc_perm = g.csr()
    _, lse = P.attention_diffusion(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, 0.25)
    bad = csc_perm.clone()
    bad[3] = g.num_edges + 5
    with pytest.raises(RuntimeError, match="csc_perm"):
        P.attention_diffusion_backward(gy, lse, rowptr, col, csc_ptr, csc_row, bad, q, k, x, 0.25, True, True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_far_prefetch_path(dtype):
    """Gathered arrays above 16 MiB switch the kernels to the "far" prefetch policy
    (prefetch into L2, twice as far ahead): same results as the reference."""
    g = graphode.power_law_graph(40000, 120000, seed=11)
    H, D, F = (2, 16, 32) if dtype == torch.float64 else (4, 16, 64)  # N (HD + F) * itemsize > 16 MiB
    assert g.num_nodes * (H * D + F) * torch.tensor([], dtype=dtype).element_size() > 16 * 2**20
    q, k, x, gy = _inputs(g, H, D, F)
    got = _fwd_bwd(g, *(t.to(dtype) for t in (q, k, x, gy)), backend="cpu")
    ref = _fwd_bwd(g, *(t.to(dtype).double() for t in (q, k, x, gy)), backend="reference")
    for a, b in zip(got, ref):
        _close(a, b, TOL[dtype])
