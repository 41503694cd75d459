"""attention_diffusion: the reference against a dense formula, and every compiled
backend (tests/ops/conftest.py) against the reference, forward and backward;
the saved log-sum-exp, partial gradients, float64 gradcheck, opcheck of the
custom ops, numerical stability, half precision (triton), the code paths of the
fused CPU kernels and the argument checks of graphode._C."""
import math

import pytest
import torch

import graphode
from graphode import Graph, ops, power_law_graph
from graphode.ops import reference as ref
from graphode.ops._dispatch import backend_module

from cases import (TOL, check_against_reference, close, dense_attention, get_graph, gradcheck, inputs, isolated_nodes,
                   random_graph)


def lse_reference(g, q, k, scale):
    """[N, H] log-sum-exp of each row's scores (-inf for rows without in-edges)."""
    s = (q[g.row] * k[g.col]).sum(-1).double() * scale
    H = s.size(1)
    m = torch.full((g.num_nodes, H), float("-inf"), dtype=torch.float64, device=s.device).scatter_reduce(
        0, g.row[:, None].expand(-1, H), s, "amax")
    ex = torch.zeros(g.num_nodes, H, dtype=torch.float64, device=s.device).index_add_(0, g.row, (s - m[g.row]).exp())
    return m + ex.log()


# --------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("H", [1, 4])
def test_reference_matches_dense_formula(H):
    torch.manual_seed(0)
    g = power_law_graph(60, 400, seed=4)
    N, D, F = g.num_nodes, 5, 7
    q, k = torch.randn(N, H, D, dtype=torch.float64), torch.randn(N, H, D, dtype=torch.float64)
    x = torch.randn(N, F, dtype=torch.float64)
    A = dense_attention(g, q, k, 1 / math.sqrt(D))
    assert torch.allclose(ref.attention_diffusion(g, q, k, x, 1 / math.sqrt(D)), A.mean(-1) @ x, atol=1e-12)


def test_reference_isolated_nodes_output_zero():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), num_nodes=4)
    q = k = torch.randn(4, 2, 3)
    y = ops.attention_diffusion(g, q, k, torch.randn(4, 5), backend="reference")
    assert torch.equal(y[2:], torch.zeros(2, 5))


def test_reference_gradcheck():
    g = power_law_graph(12, 40, seed=7)
    q, k = (torch.randn(g.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    x = torch.randn(g.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, x: ref.attention_diffusion(g, q, k, x, 0.7), (q, k, x))


# --------------------------------------------------------------------------- backends against the reference
@pytest.mark.split_path
@pytest.mark.graphs("small", "hub", "powerlaw")
@pytest.mark.not_interpreted(lambda p: p["F"] == 64 or (p["F"] == 33 and p["backend"].split))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("H,D,F", [(1, 5, 7), (4, 16, 64), (4, 5, 7), (3, 8, 33)])
def test_matches_reference(backend, graph, dtype, H, D, F):
    q, k, x, _ = inputs(graph, H, D, F)
    y, (gq, gk, gx) = check_against_reference("attention_diffusion", backend.name, graph, [q, k, x], dtype, scale=0.5)
    iso = isolated_nodes(graph)
    assert (y[iso] == 0).all()
    assert (gq[iso] == 0).all()  # no in-edges: q does not matter


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saved_lse(backend, dtype):
    """The forward custom op's second output: the per-row, per-head log-sum-exp,
    -inf on rows without in-edges (in the accumulator dtype)."""
    g = get_graph("small", backend.device)
    q, k, x, _ = inputs(g, 2, 3, 4, dtype, qk_scale=3.0)
    out, lse = backend_module(backend.name).run("attention_diffusion", g, q, k, x, 0.3)
    assert lse.dtype == dtype
    iso = isolated_nodes(g)
    assert torch.isneginf(lse[iso]).all() and (out[iso] == 0).all()
    has = g.in_degree > 0
    close(lse[has], lse_reference(g, q, k, 0.3)[has], TOL[dtype])


@pytest.mark.parametrize("deg", [255, 256, 257, 513])
def test_row_block_boundaries(backend, deg):
    """Rows of exactly one CPU row block (256 edges), one block + 1 edge and several
    blocks (the online softmax merge)."""
    if backend.interpreted:
        pytest.skip("a 600-node graph is too large for Triton's interpreter")
    g = random_graph(600, 1, 3, hub=0, hub_degree=deg, self_loops=False).to(backend.device)
    q, k, x, _ = inputs(g, 4, 5, 7, qk_scale=2.0)
    check_against_reference("attention_diffusion", backend.name, g, [q, k, x], torch.float64, scale=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_for_large_scores(backend, dtype):
    """Scores ~1e3 (and heads on very different scales) must not overflow: the kernels
    shift by the row max / lse, so every exp argument is <= 0."""
    g = get_graph("small" if backend.interpreted else "hub", backend.device)
    q, k, x, _ = inputs(g, 2, 4, 5, qk_scale=12.0)
    q[:, 1] *= 1e-3
    tol = 1e-3 if dtype == torch.float32 else 1e-10  # float32 scores ~300: a conditioning limit
    y, grads = check_against_reference("attention_diffusion", backend.name, g, [q, k, x], dtype, tol=tol, scale=1.0)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in grads)


@pytest.mark.split_path
@pytest.mark.parametrize("which", ["x", "qk", "q"])
def test_partial_grads(backend, which):
    g = get_graph("small" if backend.interpreted else "powerlaw", backend.device)
    q, k, x, _ = inputs(g, 4, 5, 7)
    wants = {"x": (False, False, True), "qk": (True, True, False), "q": (True, False, False)}[which]
    check_against_reference("attention_diffusion", backend.name, g, [q, k, x], torch.float64, wants=wants, scale=0.4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(backend, dtype):
    """Half inputs accumulate in float32 (triton; the compiled C++ backends reject them)."""
    g = get_graph("small", backend.device)
    q, k, x, _ = inputs(g, 2, 4, 6, seed=3)
    if backend.name != "triton":
        with pytest.raises(RuntimeError, match="float32 and float64"):
            ops.attention_diffusion(g, q.to(dtype), k.to(dtype), x.to(dtype), backend=backend.name)
        return
    check_against_reference("attention_diffusion", backend.name, g, [q, k, x], dtype, scale=0.5)


def test_gradcheck(backend):
    g = get_graph("tiny", backend.device)
    q, k, x, _ = inputs(g, 2, 3, 4)
    assert gradcheck(backend, lambda q, k, x: ops.attention_diffusion(g, q, k, x, 0.8, backend=backend.name), (q, k, x))


@pytest.mark.split_path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(backend, dtype):
    """torch.library.opcheck of the attention_diffusion and attention_diffusion_backward custom ops."""
    g = get_graph("tiny", backend.device)
    q, k, x, _ = inputs(g, 2, 3, 5, dtype)
    impl = backend_module(backend.name)
    torch.library.opcheck(*impl.bind("attention_diffusion", g, q, k, x, 0.7))
    _, lse = impl.run("attention_diffusion", g, q, k, x, 0.7)
    gy = torch.randn_like(x)
    for need in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(*impl.bind("attention_diffusion_backward", g, gy, lse, q, k, x, 0.7, *need))


def test_zero_edges(backend):
    g = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 5).to(backend.device)
    q, k, x, _ = inputs(g, 2, 3, 4)
    q, k, x = (t.requires_grad_() for t in (q, k, x))
    y = ops.attention_diffusion(g, q, k, x, backend=backend.name)
    assert (y == 0).all()
    gq, gk, gx = torch.autograd.grad(y.sum(), (q, k, x))
    assert (gq == 0).all() and (gk == 0).all() and (gx == 0).all()


# --------------------------------------------------------------------------- the fused CPU kernels' code paths
# The CPU kernels have a fast path for H a power of two dividing the vector
# width and D a multiple of it (transpose-sum scores, whole-vector softmax on
# rows padded with -inf, H a template parameter) and a generic path for every
# other shape; the backward writes per-edge records in its row pass and reads
# them through csc_perm in its column pass.  The vector width depends on the
# build (-march=native), so which shapes are "fast" differs between machines;
# the results must not.  (Run on the CUDA backend too, where built.)
_PATH_GRAPHS = {}


def _path_graph(name, device):
    def build(num_nodes, avg_deg, seed, hub_degree=0):
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

    if (name, device) not in _PATH_GRAPHS:
        g = {"paths-small": lambda: build(300, 4, 0), "paths-hub": lambda: build(1500, 3, 1, hub_degree=700)}[name]()
        _PATH_GRAPHS[(name, device)] = g.to(device)
    return _PATH_GRAPHS[(name, device)]


@pytest.mark.native
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
@pytest.mark.parametrize("name", ["paths-small", "paths-hub"])
def test_kernel_paths(backend, name, dtype, H, D, F):
    if backend.name == "cuda" and H > 8:
        pytest.skip("the CUDA kernels support at most 8 heads")
    g = _path_graph(name, backend.device)
    q, k, x, _ = inputs(g, H, D, F)
    y, (gq, _, _) = check_against_reference("attention_diffusion", backend.name, g, [q, k, x], dtype, scale=0.3,
                                            tol=3e-5 if dtype == torch.float32 else None)
    iso = isolated_nodes(g)
    assert (y[iso] == 0).all() and (gq[iso] == 0).all()


@pytest.mark.native
@pytest.mark.parametrize("H,D", [(8, 16), (3, 5)])
def test_kernel_paths_lse(backend, H, D):
    """lse (m + log l: a vector log on the fast path) against torch.logsumexp."""
    g = _path_graph("paths-hub", backend.device)
    q, k, x, _ = inputs(g, H, D, 4, qk_scale=3.0)
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-13)):
        _, lse = backend_module(backend.name).run("attention_diffusion", g, q.to(dtype), k.to(dtype), x.to(dtype),
                                                  0.5)
        expect = lse_reference(g, q, k, 0.5)
        has = g.in_degree > 0
        close(lse[has], expect[has], tol)
        assert torch.isneginf(lse[~has]).all()


@pytest.mark.native
@pytest.mark.parametrize("which", ["x", "qk", "q"])
def test_kernel_paths_partial_grads(backend, which):
    g = _path_graph("paths-hub", backend.device)
    q, k, x, _ = inputs(g, 8, 16, 40)
    wants = {"x": (False, False, True), "qk": (True, True, False), "q": (True, False, False)}[which]
    check_against_reference("attention_diffusion", backend.name, g, [q, k, x], torch.float64, wants=wants, scale=0.3)


@pytest.mark.native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_paths_large_scores(backend, dtype):
    """Scores ~1e3 on the fast path: the max shift keeps every exp argument <= 0."""
    g = _path_graph("paths-hub", backend.device)
    q, k, x, _ = inputs(g, 4, 16, 16, qk_scale=8.0)
    q[:, 1] *= 1e-3
    y, grads = check_against_reference("attention_diffusion", backend.name, g, [q, k, x], dtype, scale=1.0,
                                       tol=2e-3 if dtype == torch.float32 else 1e-9)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in grads)


@pytest.mark.native
def test_kernel_paths_gradcheck_fast_shape(backend):
    g = get_graph("tiny", backend.device)
    q, k, x, _ = inputs(g, 2, 16, 8, seed=3)
    assert torch.autograd.gradcheck(
        lambda q, k, x: ops.attention_diffusion(g, q, k, x, 0.7, backend=backend.name),
        (q.requires_grad_(), k.requires_grad_(), x.requires_grad_()),
    )


@pytest.mark.native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_paths_far_prefetch(backend, dtype):
    """Gathered arrays above 16 MiB switch the CPU kernels to the "far" prefetch policy
    (prefetch into L2, twice as far ahead): same results as the reference."""
    g = graphode.power_law_graph(40000, 120000, seed=11).to(backend.device)
    H, D, F = (2, 16, 32) if dtype == torch.float64 else (4, 16, 64)  # N (HD + F) * itemsize > 16 MiB
    assert g.num_nodes * (H * D + F) * torch.tensor([], dtype=dtype).element_size() > 16 * 2**20
    q, k, x, _ = inputs(g, H, D, F)
    check_against_reference("attention_diffusion", backend.name, g, [q, k, x], dtype, scale=0.3,
                            tol=3e-5 if dtype == torch.float32 else None)


@pytest.mark.parametrize("graph_kind", ["powerlaw", "fast"])
def test_results_independent_of_thread_count(graph_kind):
    """Row and column passes reduce each output row in edge order on one thread:
    bitwise equal results with 1 and 2 threads (generic and fast CPU paths)."""
    pytest.importorskip("graphode._C")
    P = torch.ops.graphode
    if graph_kind == "powerlaw":
        g = graphode.power_law_graph(20000, 200000, seed=5)
        q, k, x, _ = inputs(g, 4, 16, 32, torch.float32)
    else:
        g = graphode.power_law_graph(20000, 150000, seed=7)
        q, k, x, _ = inputs(g, 8, 16, 80, torch.float32)
    old = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            out, lse = P.attention_diffusion(*g.csr(), q, k, x, 0.25)
            outs.append([out, lse, *P.attention_diffusion_backward(*g.csr(), x, lse, q, k, x, 0.25, True, True)])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- graphode._C argument checks
@pytest.mark.native
def test_error_messages(backend):
    P = torch.ops.graphode
    g = get_graph("tiny", backend.device)
    q, k, x, _ = inputs(g, 2, 3, 4, torch.float32)
    with pytest.raises(RuntimeError, match=r"x.size\(0\) must be 7"):
        P.attention_diffusion(*g.csr(), q, k, x[:5].contiguous(), 1.0)
    out, lse = P.attention_diffusion(*g.csr(), q, k, x, 1.0)
    with pytest.raises(RuntimeError, match=r"lse.size\(1\) must be 2"):
        P.attention_diffusion_backward(*g.csr(), out, lse[:, :1].contiguous(), q, k, x, 1.0, True, True)
    with pytest.raises(ValueError, match="dtype mismatch"):
        ops.attention_diffusion(g, q, k, x.double(), backend=backend.name)
    with pytest.raises(ValueError, match="on meta but q is on"):
        ops.attention_diffusion(g, q, k.to("meta"), x, backend=backend.name)
    if backend.name == "cpu":  # the CUDA launchers trust the index values
        rowptr, col, cp, cr, cperm = g.csr()
        bad = col.clone()
        bad[3] = -1
        with pytest.raises(RuntimeError, match=r"col contains a node index outside"):
            P.attention_diffusion(rowptr, bad, cp, cr, cperm, q, k, x, 1.0)
        badp = cperm.clone()
        badp[3] = g.num_edges + 5
        with pytest.raises(RuntimeError, match="csc_perm"):  # read by the backward's column pass
            P.attention_diffusion_backward(rowptr, col, cp, cr, badp, x, lse, q, k, x, 0.25, True, True)
