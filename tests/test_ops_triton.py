"""The Triton backend (``graphode.kernels``) against the reference ops, on CPU
tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set here before
triton is imported).

The interpreter executes every program in Python, so the graphs are small
(N <= 32) and the block sizes are shrunk (``MAX_BLOCK_E``/``MAX_BLOCK_F``) so
that rows span several edge blocks and features several F blocks; the split
size of heavy rows is lowered so that the chunk-and-combine path runs too.
"""
import math
import os
import sys

_TRITON_PREIMPORTED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    import triton  # noqa: E402,F401
except ImportError as e:  # pragma: no cover - depends on the installation
    pytest.skip(f"triton is not importable ({e})", allow_module_level=True)

if _TRITON_PREIMPORTED or os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "triton was imported without TRITON_INTERPRET=1 before this module, so its kernels cannot run "
        "on CPU tensors in this process; run this file on its own (or export TRITON_INTERPRET=1)",
        allow_module_level=True,
    )

import graphode  # noqa: E402
import graphode.kernels as K  # noqa: E402
from graphode import Graph, ops  # noqa: E402
from graphode.kernels import _common  # noqa: E402
from graphode.ops import reference as ref  # noqa: E402

if not K.INTERPRET:  # pragma: no cover
    pytest.skip("graphode.kernels was imported without TRITON_INTERPRET=1 in this process", allow_module_level=True)

TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-11, rtol=1e-9)}
HUB = 3  # target with a huge in-degree
SRC_HUB = 7  # source with a huge out-degree
ISOLATED = (26, 27, 28, 29)  # no in-edges (27, 28 still have out-edges)


def _test_graph() -> Graph:
    """N=30: random edges, self loops, a hub row (in-degree 29), a hub column
    (out-degree 24), nodes without in-edges, one node without any edge."""
    gen = torch.Generator().manual_seed(0)
    N = 30
    src = torch.randint(0, 26, (70,), generator=gen)
    dst = torch.randint(0, 26, (70,), generator=gen)
    loops = torch.arange(0, 26, 3)
    hub_in = torch.arange(N)                      # every node -> HUB (incl. its self loop)
    hub_out = torch.arange(0, 24)                 # SRC_HUB -> 0..23
    extra = torch.tensor([27, 28])                # 27 -> 5, 28 -> 5: sources without in-edges
    s = torch.cat([src, loops, hub_in[hub_in != 29], torch.full((24,), SRC_HUB), extra])
    d = torch.cat([dst, loops, torch.full((N - 1,), HUB), hub_out, torch.tensor([5, 5])])
    return Graph.from_edge_index(torch.stack([s, d]), num_nodes=N)


G = _test_graph()


@pytest.fixture
def blocks(monkeypatch):
    """Small tiles so that the hub row spans several edge blocks and F several F blocks."""
    monkeypatch.setattr(_common, "MAX_BLOCK_E", 8)
    monkeypatch.setattr(_common, "MAX_BLOCK_F", 8)
    yield


@pytest.fixture(params=["rows", "split"])
def split(request):
    """'rows': every row by one program; 'split': rows over 8 edges are chunked and combined."""
    old = K.get_split_edges()
    K.set_split_edges(1024 if request.param == "rows" else 8)
    yield request.param
    K.set_split_edges(old)


def _inputs(dtype, H, D=5, F=13, seed=0, g=G):
    gen = torch.Generator().manual_seed(seed)
    N = g.num_nodes
    q = torch.randn(N, H, D, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    k = torch.randn(N, H, D, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    x = torch.randn(N, F, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    w = torch.randn(g.num_edges, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    return q, k, x, w


def _close(a, b, dtype, what):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def test_graph_has_the_cases():
    assert G.in_degree[HUB] == 29 and G.out_degree[SRC_HUB] >= 24
    assert all(G.in_degree[i] == 0 for i in ISOLATED)
    assert G.has_self_loops()


def test_split_plan():
    ptr = torch.tensor([0, 2, 2, 12, 13, 20])  # degrees 2, 0, 10, 1, 7
    heavy, chunks = K.build_plan(ptr, 4)
    assert heavy.tolist() == [[2, 4], [0, 3], [3, 2]]
    assert chunks.tolist() == [[2, 2, 2, 4, 4], [2, 6, 10, 13, 17], [6, 10, 12, 17, 20]]
    h, c = K.build_plan(ptr, 10)
    assert h.shape == (3, 0) and c.shape == (3, 0)


# --------------------------------------------------------------------------- spmm
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spmm(dtype, split, blocks):
    _, _, x, w = _inputs(dtype, 1)
    y = K.spmm(G, w, x)
    yr = ref.spmm(G, w, x)
    _close(y, yr, dtype, "spmm forward")
    assert (y[list(ISOLATED)] == 0).all()
    gy = torch.randn_like(y)
    gw, gx = torch.autograd.grad(y, (w, x), gy)
    gwr, gxr = torch.autograd.grad(yr, (w, x), gy)
    _close(gw, gwr, dtype, "spmm grad_w")
    _close(gx, gxr, dtype, "spmm grad_x")


def test_spmm_single_grad(split):
    _, _, x, w = _inputs(torch.float64, 1, F=3)
    y = K.spmm(G, w.detach(), x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gxr,) = torch.autograd.grad(ref.spmm(G, w.detach(), x).sum(), x)
    _close(gx, gxr, torch.float64, "grad_x only")


# --------------------------------------------------------------------------- edge_attention
@pytest.mark.parametrize("dtype,H", [(torch.float32, 4), (torch.float64, 1), (torch.float64, 4)])
def test_edge_attention(dtype, H, split, blocks):
    q, k, _, _ = _inputs(dtype, H, D=5)
    scale = 1 / math.sqrt(5)
    a = K.edge_attention(G, q, k, scale)
    ar = ref.edge_attention(G, q, k, scale)
    _close(a, ar, dtype, "edge_attention forward")
    ga = torch.randn_like(a)
    gq, gk = torch.autograd.grad(a, (q, k), ga)
    gqr, gkr = torch.autograd.grad(ar, (q, k), ga)
    _close(gq, gqr, dtype, "edge_attention grad_q")
    _close(gk, gkr, dtype, "edge_attention grad_k")


# --------------------------------------------------------------------------- attention_diffusion
@pytest.mark.parametrize("dtype,H", [(torch.float32, 4), (torch.float64, 1), (torch.float64, 4)])
def test_attention_diffusion(dtype, H, split, blocks):
    q, k, x, _ = _inputs(dtype, H, D=5, F=13)
    scale = 1 / math.sqrt(5)
    y, lse = K.attention_diffusion_lse(G, q, k, x, scale)
    yr = ref.attention_diffusion(G, q, k, x, scale)
    _close(y, yr, dtype, "attention_diffusion forward")
    assert (y[list(ISOLATED)] == 0).all()
    # lse [N, H] in the accumulator dtype, -inf exactly on rows without in-edges
    assert lse.shape == (G.num_nodes, H) and lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    s = (q[G.row] * k[G.col]).sum(-1).detach().double() * scale
    lse_r = torch.full((G.num_nodes, H), float("-inf"), dtype=torch.float64)
    lse_r = lse_r.scatter_reduce(0, G.row[:, None].expand_as(s), s, "amax")
    lse_r = lse_r + torch.zeros_like(lse_r).index_add_(0, G.row, (s - lse_r[G.row]).exp()).log()
    torch.testing.assert_close(lse.double(), lse_r, **TOL[dtype])
    gy = torch.randn_like(y)
    gq, gk, gx = torch.autograd.grad(y, (q, k, x), gy)
    gqr, gkr, gxr = torch.autograd.grad(yr, (q, k, x), gy)
    _close(gq, gqr, dtype, "attention_diffusion grad_q")
    _close(gk, gkr, dtype, "attention_diffusion grad_k")
    _close(gx, gxr, dtype, "attention_diffusion grad_x")


@pytest.mark.parametrize("which", ["x", "qk"])
def test_attention_diffusion_partial_grads(which):
    q, k, x, _ = _inputs(torch.float64, 2, D=3, F=6, seed=1)
    if which == "x":
        q, k = q.detach(), k.detach()
        inputs = (x,)
    else:
        x = x.detach()
        inputs = (q, k)
    g = K.attention_diffusion(G, q, k, x, 0.7)
    gr = ref.attention_diffusion(G, q, k, x, 0.7)
    gy = torch.randn_like(g)
    for a, b in zip(torch.autograd.grad(g, inputs, gy), torch.autograd.grad(gr, inputs, gy)):
        _close(a, b, torch.float64, f"grad wrt {which}")


def test_attention_diffusion_large_scores():
    # scores in the hundreds: exp would overflow without the running max
    q, k, x, _ = _inputs(torch.float32, 2, D=4, F=5, seed=2)
    q = (q.detach() * 12).requires_grad_()
    k = (k.detach() * 12).requires_grad_()
    y = K.attention_diffusion(G, q, k, x, 1.0)
    assert torch.isfinite(y).all()
    y64 = ref.attention_diffusion(G, q.double(), k.double(), x.double(), 1.0)
    torch.testing.assert_close(y.double(), y64, atol=1e-4, rtol=1e-4)
    gq, gk, gx = torch.autograd.grad(y, (q, k, x), torch.ones_like(y))
    assert all(torch.isfinite(t).all() for t in (gq, gk, gx))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_diffusion_half(dtype):
    # half inputs, float32 accumulation: compared with float64 on the same (rounded) inputs
    q, k, x, _ = _inputs(dtype, 2, D=4, F=6, seed=3)
    y = K.attention_diffusion(G, q, k, x, 0.5)
    assert y.dtype == dtype
    y64 = ref.attention_diffusion(G, q.double(), k.double(), x.double(), 0.5)
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    torch.testing.assert_close(y.double(), y64, atol=tol, rtol=tol)
    gq, gk, gx = torch.autograd.grad(y.float().sum(), (q, k, x))
    qd, kd, xd = (t.detach().double().requires_grad_() for t in (q, k, x))
    gr = torch.autograd.grad(ref.attention_diffusion(G, qd, kd, xd, 0.5).sum(), (qd, kd, xd))
    for a, b in zip((gq, gk, gx), gr):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, atol=5 * tol, rtol=5 * tol)


def test_graph_without_edges():
    g = Graph(torch.zeros(5, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 4)
    q, k, x, w = _inputs(torch.float64, 2, D=3, F=4, g=g)
    assert (K.attention_diffusion(g, q, k, x, 1.0) == 0).all()
    assert (K.spmm(g, w, x) == 0).all()
    assert K.edge_attention(g, q, k, 1.0).shape == (0, 2)
    gq, gk, gx = torch.autograd.grad(K.attention_diffusion(g, q, k, x, 1.0).sum(), (q, k, x))
    assert (gq == 0).all() and (gk == 0).all() and (gx == 0).all()


# --------------------------------------------------------------------------- opcheck
def _small_graph():
    # 8 nodes; node 2 has 6 in-edges and node 0 5 out-edges: with split size 3 both are chunked
    s = torch.tensor([0, 1, 3, 4, 5, 6, 0, 0, 0, 2, 7, 6])
    d = torch.tensor([2, 2, 2, 2, 2, 2, 1, 3, 4, 5, 6, 6])
    return Graph.from_edge_index(torch.stack([s, d]), num_nodes=8)


def _op_samples(name):
    g = _small_graph()
    out = []
    for dtype, grad, chunk in [(torch.float64, True, 3), (torch.float32, False, 1024)]:
        args, chunk = K.graph_args(g, chunk)
        q, k, x, w = _inputs(dtype, 2, D=3, F=5, seed=4, g=g)
        if not grad:
            q, k, x, w = (t.detach() for t in (q, k, x, w))
        if name == "spmm":
            out.append((*args, w, x, chunk))
        elif name == "edge_attention":
            out.append((*args, q, k, 0.6, chunk))
        elif name == "attention_diffusion":
            out.append((*args, q, k, x, 0.6, chunk))
        elif name == "spmm_backward":
            out.append((torch.randn_like(x).detach(), *args, w.detach(), x.detach(), chunk, True, grad))
        elif name == "edge_attention_backward":
            a = K.edge_attention(g, q, k, 0.6).detach()
            out.append((torch.randn_like(a), a, *args, q.detach(), k.detach(), 0.6, chunk))
        elif name == "attention_diffusion_backward":
            lse = K.attention_diffusion_lse(g, q, k, x, 0.6)[1].detach()
            out.append((torch.randn_like(x).detach(), lse, *args, q.detach(), k.detach(), x.detach(), 0.6, chunk,
                        True, grad))
    return out


@pytest.mark.parametrize("name", ["spmm", "edge_attention", "attention_diffusion"])
def test_opcheck(name):
    op = getattr(torch.ops.graphode_triton, name)
    for args in _op_samples(name):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("name", ["spmm_backward", "edge_attention_backward", "attention_diffusion_backward"])
def test_opcheck_backward_ops(name):
    op = getattr(torch.ops.graphode_triton, name)
    for args in _op_samples(name)[:1]:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


# --------------------------------------------------------------------------- dispatch
def test_dispatch_through_graphode_ops():
    q, k, x, w = _inputs(torch.float64, 2, D=3, F=4, seed=5)
    assert ops.resolve_backend("triton", torch.device("cpu")) == "triton"
    assert "triton" in ops.available_backends()
    y = ops.attention_diffusion(G, q, k, x, backend="triton")
    torch.testing.assert_close(y, ref.attention_diffusion(G, q, k, x, 1 / math.sqrt(3)), **TOL[torch.float64])
    with ops.use_backend("triton"):
        torch.testing.assert_close(ops.spmm(G, w, x), ref.spmm(G, w, x), **TOL[torch.float64])
        a = ops.edge_attention(G, q, k, scale=0.3)
    torch.testing.assert_close(a, ref.edge_attention(G, q, k, 0.3), **TOL[torch.float64])
    assert graphode.kernels is K


def test_dispatch_needs_interpreter_for_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET"):
        ops.resolve_backend("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ops.BackendUnavailableError):
        ops.resolve_backend("triton", torch.device("cpu"))


def test_cpu_launch_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.spmm(G, torch.ones(G.num_edges), torch.ones(G.num_nodes, 2))
