"""The C++/OpenMP ("cpu") backend of the graph ops against the pure-PyTorch reference.

Forward and backward of spmm, edge_attention and attention_diffusion in float32
and float64 on graphs with self loops, multi-degree rows, isolated nodes, one
huge-degree row (longer than the kernels' 256-edge row block) and a power-law
graph; H in {1, 4}; D and F that are not multiples of the vector width.  Plus
gradcheck, determinism across thread counts, numerical stability and the error
messages of bad inputs.
"""
import math

import pytest
import torch

import graphode
from graphode import Graph, ops
from graphode.ops import reference as ref

native = pytest.importorskip("graphode.ops._native", reason="graphode._C is not built")
P = torch.ops.graphode


# --------------------------------------------------------------------------- graphs
def random_graph(num_nodes, avg_deg, seed, isolated=(), hub=None, hub_degree=0, self_loops=True):
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


GRAPHS = {
    "small": lambda: random_graph(40, 3, 0, isolated=(0, 7, 39)),
    "hub": lambda: random_graph(6000, 2, 1, isolated=(5, 17), hub=3, hub_degree=5000),
    "powerlaw": lambda: graphode.power_law_graph(3000, 20000, seed=2),
}
_cache = {}


def get_graph(name):
    if name not in _cache:
        _cache[name] = GRAPHS[name]()
    return _cache[name]


def isolated_nodes(g):
    return (g.in_degree == 0).nonzero().view(-1)


def close(actual, expected, tol):
    """max |a - e| <= tol * max(1, max |e|): a relative criterion for whole tensors."""
    assert actual.shape == expected.shape
    err = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    scale = max(1.0, expected.double().abs().max().item() if expected.numel() else 0.0)
    assert err <= tol * scale, f"max abs error {err:.3e} > {tol:.0e} * {scale:.3e}"


TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def inputs(g, H, D, F, dtype, seed=0, qk_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    N, E = g.num_nodes, g.num_edges
    q = (torch.randn(N, H, D, generator=gen, dtype=torch.float64) * qk_scale).to(dtype)
    k = (torch.randn(N, H, D, generator=gen, dtype=torch.float64) * qk_scale).to(dtype)
    x = torch.randn(N, F, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.randn(E, generator=gen, dtype=torch.float64).to(dtype)
    return q, k, x, w


def run(fn, tensors, grad_seed=1):
    """fn(*tensors) and the grads of a fixed random cotangent w.r.t. all tensors."""
    ts = [t.detach().clone().requires_grad_(True) for t in tensors]
    y = fn(*ts)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad(y, ts, gy)
    return y.detach(), [gr.detach() for gr in grads]


def check_against_reference(fn_name, g, tensors, dtype, tol=None, **kw):
    fn = getattr(ops, fn_name)
    tensors = [t.to(dtype) for t in tensors]
    y, grads = run(lambda *t: fn(g, *t, **kw, backend="cpu"), tensors)
    # reference in float64 on the same (rounded) inputs: the truth the float32
    # kernels are compared with
    y_ref, grads_ref = run(lambda *t: fn(g, *t, **kw, backend="reference"), [t.double() for t in tensors])
    assert y.dtype == dtype
    tol = TOL[dtype] if tol is None else tol
    close(y, y_ref, tol)
    for gr, gr_ref in zip(grads, grads_ref):
        assert gr.dtype == dtype
        close(gr, gr_ref, tol)
    return y, grads


# --------------------------------------------------------------------------- forward + backward
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("F", [7, 64])
def test_spmm(graph, dtype, F):
    g = get_graph(graph)
    _, _, x, w = inputs(g, 1, 1, F, torch.float64)
    y, (gw, gx) = check_against_reference("spmm", g, [w, x], dtype)
    iso = isolated_nodes(g)
    assert len(iso) > 0 or graph == "powerlaw"
    assert (y[iso] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("H,D", [(1, 5), (4, 16), (4, 5)])
def test_edge_attention(graph, dtype, H, D):
    g = get_graph(graph)
    q, k, _, _ = inputs(g, H, D, 1, torch.float64)
    a, (gq, gk) = check_against_reference("edge_attention", g, [q, k], dtype, scale=0.7)
    # rows sum to one per head
    sums = torch.zeros(g.num_nodes, H, dtype=torch.float64).index_add_(0, g.row, a.double())
    has = g.in_degree > 0
    close(sums[has], torch.ones_like(sums[has]), TOL[dtype] * 10)
    iso = isolated_nodes(g)
    assert (gq[iso] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("H,D,F", [(1, 5, 7), (4, 16, 64), (4, 5, 7), (3, 8, 33)])
def test_attention_diffusion(graph, dtype, H, D, F):
    g = get_graph(graph)
    q, k, x, _ = inputs(g, H, D, F, torch.float64)
    y, (gq, gk, gx) = check_against_reference("attention_diffusion", g, [q, k, x], dtype, scale=0.5)
    iso = isolated_nodes(g)
    assert (y[iso] == 0).all()
    assert (gq[iso] == 0).all()  # no in-edges: q does not matter


def test_attention_diffusion_lse_and_empty_rows():
    g = get_graph("small")
    q, k, x, _ = inputs(g, 2, 3, 4, torch.float64)
    out, lse = P.attention_diffusion(*g.csr(), q, k, x, 0.3)
    scores = (q[g.row] * k[g.col]).sum(-1) * 0.3
    expect = torch.full((g.num_nodes, 2), -math.inf, dtype=torch.float64)
    for i in range(g.num_nodes):
        m = g.row == i
        if m.any():
            expect[i] = torch.logsumexp(scores[m], 0)
    iso = isolated_nodes(g)
    assert torch.isneginf(lse[iso]).all(), "rows without in-edges have lse = -inf"
    assert (out[iso] == 0).all()
    has = g.in_degree > 0
    close(lse[has], expect[has], 1e-12)


@pytest.mark.parametrize("deg", [255, 256, 257, 513])
def test_attention_row_block_boundaries(deg):
    """Rows of exactly one block, one block + 1 edge and several blocks (online softmax merge)."""
    g = random_graph(600, 1, 3, hub=0, hub_degree=deg, self_loops=False)
    assert int(g.in_degree[0]) >= deg
    q, k, x, _ = inputs(g, 4, 5, 7, torch.float64, qk_scale=2.0)
    check_against_reference("attention_diffusion", g, [q, k, x], torch.float64, scale=1.0)
    check_against_reference("edge_attention", g, [q, k], torch.float64, scale=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_stability_large_scores(dtype):
    """Scores of magnitude ~1e3 (and heads on very different scales) must not overflow:
    the kernels shift by the row max / lse, so every exp argument is <= 0."""
    g = get_graph("hub")
    q, k, x, _ = inputs(g, 2, 4, 5, torch.float64, qk_scale=12.0)
    q[:, 1] *= 1e-3  # head 1 tiny, head 0 huge
    # scores ~ 300 carry an absolute float32 rounding error ~ 3e-5 that the
    # softmax turns into relative errors of that size: a conditioning limit.
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    y, grads = check_against_reference("attention_diffusion", g, [q, k, x], dtype, tol=tol, scale=1.0)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in grads)
    a = ops.edge_attention(g, q.to(dtype), k.to(dtype), 1.0, backend="cpu")
    assert torch.isfinite(a).all()
    close(a, ops.edge_attention(g, q.to(dtype).double(), k.to(dtype).double(), 1.0, backend="reference"), tol)


@pytest.mark.parametrize("which", ["x", "qk", "q"])
def test_attention_diffusion_partial_grads(which):
    """need_qk / need_x paths of the backward."""
    g = get_graph("powerlaw")
    q, k, x, _ = inputs(g, 4, 5, 7, torch.float64)
    wants = {"x": (False, False, True), "qk": (True, True, False), "q": (True, False, False)}[which]
    res = {}
    for backend in ("cpu", "reference"):
        ts = [t.clone().requires_grad_(r) for t, r in zip((q, k, x), wants)]
        y = ops.attention_diffusion(g, *ts, scale=0.4, backend=backend)
        y.backward(torch.ones_like(y))
        res[backend] = [t.grad for t in ts]
    for a, b, r in zip(res["cpu"], res["reference"], wants):
        assert (a is None) == (not r)
        if r:
            close(a, b, 1e-12)


def test_spmm_partial_grads():
    g = get_graph("small")
    _, _, x, w = inputs(g, 1, 1, 5, torch.float64)
    gw, gx = P.spmm_backward(torch.ones(g.num_nodes, 5, dtype=torch.float64), *g.csr(), w, x, True, False)
    assert gx.numel() == 0 and gw.shape == (g.num_edges,)
    gw2, gx2 = P.spmm_backward(torch.ones(g.num_nodes, 5, dtype=torch.float64), *g.csr(), w, x, False, True)
    assert gw2.numel() == 0 and gx2.shape == x.shape


def test_zero_edges_and_zero_features():
    g = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 5)
    q, k, x, w = inputs(g, 2, 3, 4, torch.float32)
    assert (ops.spmm(g, w, x, backend="cpu") == 0).all()
    assert ops.edge_attention(g, q, k, backend="cpu").shape == (0, 2)
    out, lse = P.attention_diffusion(*g.csr(), q, k, x, 1.0)
    assert (out == 0).all() and torch.isneginf(lse).all()
    g2 = get_graph("small")
    y = ops.spmm(g2, torch.ones(g2.num_edges), torch.ones(g2.num_nodes, 0), backend="cpu")
    assert y.shape == (g2.num_nodes, 0)


# --------------------------------------------------------------------------- gradcheck
def _tiny():
    # 7 nodes: self loops, a multi-degree row, node 6 isolated
    ei = torch.tensor([[0, 1, 2, 3, 0, 4, 5, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5]])
    return Graph.from_edge_index(ei, 7)


def test_gradcheck_spmm():
    g = _tiny()
    _, _, x, w = inputs(g, 1, 1, 3, torch.float64)
    assert torch.autograd.gradcheck(
        lambda w, x: ops.spmm(g, w, x, backend="cpu"), (w.requires_grad_(), x.requires_grad_())
    )


def test_gradcheck_edge_attention():
    g = _tiny()
    q, k, _, _ = inputs(g, 2, 3, 1, torch.float64)
    assert torch.autograd.gradcheck(
        lambda q, k: ops.edge_attention(g, q, k, 0.8, backend="cpu"), (q.requires_grad_(), k.requires_grad_())
    )


def test_gradcheck_attention_diffusion():
    g = _tiny()
    q, k, x, _ = inputs(g, 2, 3, 4, torch.float64)
    assert torch.autograd.gradcheck(
        lambda q, k, x: ops.attention_diffusion(g, q, k, x, 0.8, backend="cpu"),
        (q.requires_grad_(), k.requires_grad_(), x.requires_grad_()),
    )


def test_double_backward_raises():
    g = _tiny()
    _, _, x, w = inputs(g, 1, 1, 3, torch.float64)
    w.requires_grad_()
    x.requires_grad_()
    y = ops.spmm(g, w, x, backend="cpu")
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(gx.pow(2).sum(), w)


# --------------------------------------------------------------------------- threads
def test_results_independent_of_thread_count():
    """Each output row is reduced by one thread in edge order: bitwise identical results."""
    g = graphode.power_law_graph(20000, 200000, seed=5)
    q, k, x, w = inputs(g, 4, 16, 32, torch.float32)
    old = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            o = [P.spmm(*g.csr(), w, x), P.edge_attention(*g.csr(), q, k, 0.25)]
            out, lse = P.attention_diffusion(*g.csr(), q, k, x, 0.25)
            o += [out, lse, *P.attention_diffusion_backward(x, lse, *g.csr(), q, k, x, 0.25, True, True)]
            o += list(P.spmm_backward(x, *g.csr(), w, x, True, True))
            outs.append(o)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- bad inputs
def _args():
    g = _tiny()
    q, k, x, w = inputs(g, 2, 3, 4, torch.float32)
    return g, q, k, x, w


def test_error_wrong_shapes():
    g, q, k, x, w = _args()
    with pytest.raises(RuntimeError, match=r"graphode::spmm: x must have shape \[N, F\]"):
        P.spmm(*g.csr(), w, x.view(-1))
    with pytest.raises(RuntimeError, match="q and k must have the same shape"):
        P.edge_attention(*g.csr(), q, k[:, :1].contiguous(), 1.0)
    with pytest.raises(RuntimeError, match=r"rowptr must have 9 entries"):
        P.spmm(*g.csr(), w, torch.zeros(8, 4))  # x with N+1 rows
    with pytest.raises(RuntimeError, match=r"x.size\(0\) must be 7"):
        P.attention_diffusion(*g.csr(), q, k, x[:5].contiguous(), 1.0)
    out, lse = P.attention_diffusion(*g.csr(), q, k, x, 1.0)
    with pytest.raises(RuntimeError, match=r"lse.size\(1\) must be 2"):
        P.attention_diffusion_backward(out, lse[:, :1].contiguous(), *g.csr(), q, k, x, 1.0, True, True)
    with pytest.raises(RuntimeError, match=r"grad_attn.size\(0\) must be"):
        a = P.edge_attention(*g.csr(), q, k, 1.0)
        P.edge_attention_backward(a[1:].contiguous(), a, *g.csr(), q, k, 1.0)


def test_error_dtype_mismatch():
    g, q, k, x, w = _args()
    with pytest.raises(RuntimeError, match="dtype mismatch: weight is Double but x is Float"):
        P.spmm(*g.csr(), w.double(), x)
    with pytest.raises(RuntimeError, match="dtype mismatch: k is Double but q is Float"):
        P.edge_attention(*g.csr(), q, k.double(), 1.0)
    with pytest.raises(RuntimeError, match="supports float32 and float64, got Half"):
        P.spmm(*g.csr(), w.half(), x.half())
    with pytest.raises(ValueError, match="dtype mismatch"):
        ops.attention_diffusion(g, q, k, x.double(), backend="cpu")


def test_error_edge_count():
    g, q, k, x, w = _args()
    with pytest.raises(RuntimeError, match=r"weight.size\(0\) must be 12 \(one value per edge"):
        P.spmm(*g.csr(), torch.ones(13), x)
    with pytest.raises(ValueError, match="edge_weight has 13 entries but the graph has 12 edges"):
        ops.spmm(g, torch.ones(13), x, backend="cpu")
    rowptr, col, cp, cr, cperm = g.csr()
    with pytest.raises(RuntimeError, match=r"csc_row must have 11 entries"):
        P.spmm(rowptr, col[:11], cp, cr, cperm, w[:11], x)


def test_error_non_contiguous():
    g, q, k, x, w = _args()
    xt = torch.randn(4, 7).t()
    assert not xt.is_contiguous()
    with pytest.raises(RuntimeError, match="x must be contiguous"):
        P.spmm(*g.csr(), w, xt)
    qt = torch.randn(3, 2, 7).permute(2, 1, 0)
    with pytest.raises(RuntimeError, match="q must be contiguous"):
        P.edge_attention(*g.csr(), qt, k, 1.0)
    rowptr, col, *rest = g.csr()
    col2 = torch.stack([col, col], 1)[:, 0]
    with pytest.raises(RuntimeError, match="col must be contiguous"):
        P.spmm(rowptr, col2, *rest, w, x)
    # graphode.ops makes its inputs contiguous before calling the op
    xn = torch.randn(4, 7).t()
    close(ops.spmm(g, w, xn, backend="cpu"), ops.spmm(g, w, xn, backend="reference"), 1e-5)


def test_error_index_dtype_and_values():
    g, q, k, x, w = _args()
    rowptr, col, cp, cr, cperm = g.csr()
    with pytest.raises(RuntimeError, match=r"rowptr must be an int64 \(torch.long\) tensor, got Int"):
        P.spmm(rowptr.int(), col, cp, cr, cperm, w, x)
    with pytest.raises(RuntimeError, match="csc_perm must be an int64"):
        P.spmm_backward(x, rowptr, col, cp, cr, cperm.float(), w, x, True, True)
    bad = col.clone()
    bad[3] = 7
    with pytest.raises(RuntimeError, match=r"col contains a node index outside \[0, N\)"):
        P.spmm(rowptr, bad, cp, cr, cperm, w, x)
    bad[3] = -1
    with pytest.raises(RuntimeError, match=r"col contains a node index outside"):
        P.attention_diffusion(rowptr, bad, cp, cr, cperm, q, k, x, 1.0)
    rp = rowptr.clone()
    rp[-1] = 11
    with pytest.raises(RuntimeError, match="rowptr is not a valid CSR pointer array"):
        P.edge_attention(rp, col, cp, cr, cperm, q, k, 1.0)
    rp = rowptr.clone()
    rp[2] = 100  # decreasing afterwards
    with pytest.raises(RuntimeError, match="rowptr is not a valid CSR pointer array"):
        P.spmm(rp, col, cp, cr, cperm, w, x)
    badr = cr.clone()
    badr[0] = 99
    with pytest.raises(RuntimeError, match="csc_row contains a node index outside"):
        P.spmm_backward(x, rowptr, col, cp, badr, cperm, w, x, False, True)
    badp = cperm.clone()
    badp[0] = 12
    with pytest.raises(RuntimeError, match="csc_perm contains an edge index outside"):
        P.spmm_backward(x, rowptr, col, cp, cr, badp, w, x, False, True)


def test_error_scale_and_devices():
    g, q, k, x, w = _args()
    with pytest.raises(RuntimeError, match="scale must be finite"):
        P.edge_attention(*g.csr(), q, k, float("nan"))
    with pytest.raises(ValueError, match="on meta but q is on cpu"):
        ops.attention_diffusion(g, q, k.to("meta"), x, backend="cpu")
