"""edge_attention: the reference against hand-computed values and a dense softmax,
and every compiled backend (tests/ops/conftest.py) against the reference, forward
and backward; float64 gradcheck, opcheck of the custom ops, numerical stability
and the argument checks of graphode._C."""
import math

import pytest
import torch

import graphode
from graphode import Graph, ops, power_law_graph
from graphode.ops import reference as ref
from graphode.ops._dispatch import backend_module

from cases import (TOL, check_against_reference, close, dense_attention, get_graph, gradcheck, inputs, isolated_nodes,
                   random_graph)


# --------------------------------------------------------------------------- the reference
def test_reference_hand_computed():
    # node 0 has in-edges from 1 and 2; one head, D=1
    g = Graph.from_edge_index(torch.tensor([[1, 2], [0, 0]]), num_nodes=3)
    q = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])
    k = torch.tensor([[[0.0]], [[1.0]], [[2.0]]])
    a = ref.edge_attention(g, q, k, scale=0.5)
    e1, e2 = math.exp(0.5), math.exp(1.0)
    assert torch.allclose(a[:, 0], torch.tensor([e1 / (e1 + e2), e2 / (e1 + e2)]))


@pytest.mark.parametrize("H", [1, 4])
def test_reference_matches_dense_softmax(H):
    torch.manual_seed(0)
    g = power_law_graph(60, 400, seed=4)
    q, k = torch.randn(g.num_nodes, H, 5, dtype=torch.float64), torch.randn(g.num_nodes, H, 5, dtype=torch.float64)
    a = ref.edge_attention(g, q, k, 1 / math.sqrt(5))
    assert torch.allclose(a, dense_attention(g, q, k, 1 / math.sqrt(5))[g.row, g.col], atol=1e-12)
    s = torch.zeros(g.num_nodes, H, dtype=torch.float64).index_add_(0, g.row, a)
    assert torch.allclose(s[g.in_degree > 0], torch.ones_like(s[g.in_degree > 0]))


def test_reference_is_stable_for_large_scores():
    g = Graph.from_edge_index(torch.tensor([[1, 2], [0, 0]]), num_nodes=3)
    q = torch.full((3, 1, 1), 1000.0)
    k = torch.tensor([[[0.0]], [[1.0]], [[1.001]]])
    a = ref.edge_attention(g, q, k, 1.0)
    assert torch.isfinite(a).all()
    assert torch.allclose(a.sum(0), torch.ones(1))


def test_reference_gradcheck():
    g = power_law_graph(12, 40, seed=7)
    q = torch.randn(g.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(g.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k: ref.edge_attention(g, q, k, 0.7), (q, k))


# --------------------------------------------------------------------------- backends against the reference
@pytest.mark.split_path
@pytest.mark.graphs("small", "hub", "powerlaw")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("H,D", [(1, 5), (4, 16), (4, 5)])
def test_matches_reference(backend, graph, dtype, H, D):
    q, k, _, _ = inputs(graph, H, D, 1)
    a, (gq, gk) = check_against_reference("edge_attention", backend.name, graph, [q, k], dtype, scale=0.7)
    # rows sum to one per head
    sums = torch.zeros(graph.num_nodes, H, dtype=torch.float64, device=a.device).index_add_(0, graph.row, a.double())
    has = graph.in_degree > 0
    close(sums[has], torch.ones_like(sums[has]), TOL[dtype] * 10)
    assert (gq[isolated_nodes(graph)] == 0).all()


@pytest.mark.parametrize("deg", [255, 256, 257, 513])
def test_row_block_boundaries(backend, deg):
    """Rows of exactly one CPU row block (256 edges), one block + 1 edge and several blocks."""
    if backend.interpreted:
        pytest.skip("a 600-node graph is too large for Triton's interpreter")
    g = random_graph(600, 1, 3, hub=0, hub_degree=deg, self_loops=False).to(backend.device)
    assert int(g.in_degree[0]) >= deg
    q, k, _, _ = inputs(g, 4, 5, 7, qk_scale=2.0)
    check_against_reference("edge_attention", backend.name, g, [q, k], torch.float64, scale=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_for_large_scores(backend, dtype):
    """Scores ~1e3 (and heads on very different scales) must not overflow: every exp
    argument is a score minus its row maximum, <= 0."""
    g = get_graph("small" if backend.interpreted else "hub", backend.device)
    q, k, _, _ = inputs(g, 2, 4, 1, qk_scale=12.0)
    q[:, 1] *= 1e-3  # head 1 tiny, head 0 huge
    # scores ~ 300 carry an absolute float32 rounding error ~ 3e-5 that the
    # softmax turns into relative errors of that size: a conditioning limit.
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    a, grads = check_against_reference("edge_attention", backend.name, g, [q, k], dtype, tol=tol, scale=1.0)
    assert torch.isfinite(a).all() and all(torch.isfinite(t).all() for t in grads)


def test_gradcheck(backend):
    g = get_graph("tiny", backend.device)
    q, k, _, _ = inputs(g, 2, 3, 1)
    assert gradcheck(backend, lambda q, k: ops.edge_attention(g, q, k, 0.8, backend=backend.name), (q, k))


@pytest.mark.split_path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(backend, dtype):
    """torch.library.opcheck of the backend's edge_attention and edge_attention_backward custom ops."""
    g = get_graph("tiny", backend.device)
    q, k, _, _ = inputs(g, 2, 3, 1, dtype)
    impl = backend_module(backend.name)
    torch.library.opcheck(*impl.bind("edge_attention", g, q, k, 0.7))
    attn = impl.run("edge_attention", g, q, k, 0.7)
    torch.library.opcheck(*impl.bind("edge_attention_backward", g, torch.randn_like(attn), attn, q, k, 0.7))


def test_zero_edges(backend):
    g = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 5).to(backend.device)
    q, k, _, _ = inputs(g, 2, 3, 1)
    assert ops.edge_attention(g, q, k, backend=backend.name).shape == (0, 2)


# --------------------------------------------------------------------------- graphode._C argument checks
@pytest.mark.native
def test_error_messages(backend):
    P = torch.ops.graphode
    g = get_graph("tiny", backend.device)
    q, k, _, _ = inputs(g, 2, 3, 1, torch.float32)
    with pytest.raises(RuntimeError, match="q and k must have the same shape"):
        P.edge_attention(*g.csr(), q, k[:, :1].contiguous(), 1.0)
    with pytest.raises(RuntimeError, match="dtype mismatch: k is Double but q is Float"):
        P.edge_attention(*g.csr(), q, k.double(), 1.0)
    a = P.edge_attention(*g.csr(), q, k, 1.0)
    with pytest.raises(RuntimeError, match=r"grad_attn.size\(0\) must be"):
        P.edge_attention_backward(*g.csr(), a[1:].contiguous(), a, q, k, 1.0)
    qt = torch.randn(3, 2, 7, device=q.device).permute(2, 1, 0)
    with pytest.raises(RuntimeError, match="q must be contiguous"):
        P.edge_attention(*g.csr(), qt, k, 1.0)
    with pytest.raises(RuntimeError, match="scale must be finite"):
        P.edge_attention(*g.csr(), q, k, float("nan"))
    if backend.name == "cpu":  # the CUDA launchers trust the index values
        rowptr, col, cp, cr, cperm = g.csr()
        rp = rowptr.clone()
        rp[-1] = 11
        with pytest.raises(RuntimeError, match="rowptr is not a valid CSR pointer array"):
            P.edge_attention(rp, col, cp, cr, cperm, q, k, 1.0)
        bad = col.clone()
        bad[3] = -1
        with pytest.raises(RuntimeError, match=r"col contains a node index outside"):
            P.edge_attention(rowptr, bad, cp, cr, cperm, q, k, 1.0)


def test_results_independent_of_thread_count():
    """One thread reduces each output row in edge order: bitwise equal with 1 and 2 threads."""
    pytest.importorskip("graphode._C")
    P = torch.ops.graphode
    g = graphode.power_law_graph(20000, 200000, seed=5)
    q, k, _, _ = inputs(g, 4, 16, 1, torch.float32)
    old = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            a = P.edge_attention(*g.csr(), q, k, 0.25)
            outs.append([a, *P.edge_attention_backward(*g.csr(), a, a, q, k, 0.25)])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- attention options
OPTIONS = [("squareplus", "target"), ("squareplus", "source"), ("softmax", "source")]


def _options_or_skip(backend, normalize, over):
    from graphode.ops._dispatch import backend_supports

    lacking = backend_supports(backend.name, {"normalize": normalize, "normalize_over": over}, "edge_attention")
    if lacking is not None:
        pytest.skip(f"{backend.name} does not implement {lacking} (automatic dispatch uses the reference)")


@pytest.mark.graphs("tiny", "small", "hub", "powerlaw")
@pytest.mark.parametrize("normalize,over", OPTIONS)
def test_options_match_reference_float64(backend, graph, normalize, over):
    """The GRAND authors' normalisations (squareplus with one global shift; groups of
    sources) against graphode.ops.reference at float64: values and both gradients."""
    _options_or_skip(backend, normalize, over)
    g = graph
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randn(g.num_nodes, 3, 4, generator=gen, dtype=torch.float64).to(g.device).requires_grad_()
            for _ in range(2))
    a = ops.edge_attention(g, q, k, normalize=normalize, normalize_over=over, backend=backend.name)
    r = ref.edge_attention(g, q, k, 0.5, normalize=normalize, normalize_over=over)
    ga = torch.randn_like(r)
    got = (a, *torch.autograd.grad(a, (q, k), ga))
    want = (r, *torch.autograd.grad(r, (q, k), ga))
    for x, y in zip(got, want):
        assert float((x - y).abs().max()) <= TOL[torch.float64] * max(1.0, float(y.abs().max()))


@pytest.mark.parametrize("normalize,over", OPTIONS)
def test_options_gradcheck_and_opcheck(backend, normalize, over):
    _options_or_skip(backend, normalize, over)
    g = get_graph("tiny", backend.device)
    gen = torch.Generator().manual_seed(4)
    q, k = (torch.randn(g.num_nodes, 2, 3, generator=gen, dtype=torch.float64).to(g.device).requires_grad_()
            for _ in range(2))
    assert torch.autograd.gradcheck(
        lambda q, k: ops.edge_attention(g, q, k, normalize=normalize, normalize_over=over, backend=backend.name),
        (q, k))
    impl = backend_module(backend.name)
    code, src = int(normalize == "squareplus"), over == "source"
    a = impl.run("edge_attention", g, q.detach(), k.detach(), 0.5, code, src)
    torch.library.opcheck(*impl.bind("edge_attention", g, q.detach(), k.detach(), 0.5, code, src))
    torch.library.opcheck(*impl.bind("edge_attention_backward", g, torch.randn_like(a), a, q.detach(), k.detach(),
                                     0.5, code, src))


def test_squareplus_gradient_through_tied_global_max(backend):
    """Equal scores everywhere: every edge and head ties for the global max, and the
    max's gradient is split evenly among them (as torch's max())."""
    _options_or_skip(backend, "squareplus", "target")
    g = get_graph("tiny", backend.device)
    q, k = (torch.ones(g.num_nodes, 2, 2, dtype=torch.float64, device=g.device, requires_grad=True)
            for _ in range(2))
    a = ops.edge_attention(g, q, k, normalize="squareplus", backend=backend.name)
    r = ref.edge_attention(g, q, k, 2 ** -0.5, normalize="squareplus")
    ga = torch.randn_like(r)
    for x, y in zip((a, *torch.autograd.grad(a, (q, k), ga)), (r, *torch.autograd.grad(r, (q, k), ga))):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.native
def test_options_argument_errors(backend):
    g = get_graph("tiny", backend.device)
    q = torch.randn(g.num_nodes, 2, 3, device=g.device)
    with pytest.raises(RuntimeError, match="normalize must be 0 \\(softmax\\) or 1 \\(squareplus\\), got 2"):
        torch.ops.graphode.edge_attention(*g.csr(), q, q, 0.5, 2, False)
