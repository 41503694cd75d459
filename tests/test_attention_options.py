"""Attention options of ``edge_attention`` / ``attention_diffusion`` (notes contract, issue #13):
score kinds, softmax / squareplus, grouping by target or source, the validated public API
and dispatch's capability fallback.

The reference is checked against dense ``[N, N, H]`` formulas written independently here:
scores from ``einsum`` / ``torch.nn.CosineSimilarity`` / ``torch.cdist``, normalisation along
the dense axis of the group, squareplus shifted by ``torch.max`` over the masked entries.
"""
import math

import pytest
import torch

from graphode import Graph, ops, power_law_graph
from graphode.ops import reference as ref

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64


def _graph():
    # directed, with self loops and a node without in-edges / one without out-edges
    g = power_law_graph(24, 90, seed=3)
    ei = torch.cat([g.edge_index, torch.arange(20).repeat(2, 1)], dim=1)
    return Graph.from_edge_index(ei, num_nodes=g.num_nodes)


def _dense_scores(q, k, score, scale=None, kp=None):
    """S[i, j, h] = score(q_i, k_j) for every pair (i target, j source)."""
    N, H, D = q.shape
    if score == "scaled_dot":
        return torch.einsum("ihd,jhd->ijh", q, k) * scale
    if score in ("cosine", "pearson"):
        if score == "pearson":
            q = q - q.mean(-1, keepdim=True)
            k = k - k.mean(-1, keepdim=True)
        cos = torch.nn.CosineSimilarity(dim=-1, eps=1e-5)
        return cos(q[:, None, :, :].expand(N, N, H, D), k[None, :, :, :].expand(N, N, H, D))
    if score == "exp_kernel":
        d2 = torch.stack([torch.cdist(q[:, h], k[:, h]) ** 2 for h in range(H)], dim=-1)
        return kp[0] ** 2 * torch.exp(-d2 / (2 * kp[1] ** 2))
    raise AssertionError(score)


def _dense_attention(g, S, normalize, over):
    """Normalise the masked dense scores; returns a [E, H] in the graph's edge order."""
    mask = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.bool)
    mask[g.row, g.col] = True
    m = mask[..., None].expand_as(S)
    axis = 1 if over == "target" else 0  # target groups: a row i over its sources j
    if normalize == "softmax":
        A = torch.softmax(S.masked_fill(~m, float("-inf")), dim=axis)
    else:
        M = S[m].max()  # torch.max: gradient split among ties
        Sp = S - M
        U = torch.where(m, (Sp + torch.sqrt(Sp * Sp + 4)) / 2, torch.zeros_like(S))
        A = U / (U.sum(dim=axis, keepdim=True) + 1e-16)
    A = torch.nan_to_num(A, nan=0.0)
    return A[g.row, g.col]


def _inputs(seed=0, H=2, D=3):
    torch.manual_seed(seed)
    g = _graph()
    N = g.num_nodes
    q = torch.randn(N, H, D, dtype=DT)
    k = torch.randn(N, H, D, dtype=DT)
    x = torch.randn(N, 4, dtype=DT)
    kp = torch.tensor([1.3, 0.8], dtype=DT)
    return g, q, k, x, kp


@pytest.mark.parametrize("score", ref.SCORES)
@pytest.mark.parametrize("normalize", ref.NORMALIZE)
@pytest.mark.parametrize("over", ref.NORMALIZE_OVER)
def test_reference_matches_dense_formula_values_and_gradients(score, normalize, over):
    g, q, k, x, kp = _inputs()
    scale = 0.7 if score == "scaled_dot" else None
    kpar = kp if score == "exp_kernel" else None
    leaves = [t.clone().requires_grad_() for t in (q, k, x, kp)]
    ql, kl, xl, pl = leaves
    kw = dict(score=score, normalize=normalize, normalize_over=over,
              kernel_params=pl if score == "exp_kernel" else None)
    a = ops.edge_attention(g, ql, kl, scale, backend="reference", **kw)
    y = ops.attention_diffusion(g, ql, kl, xl, scale, backend="reference", **kw)
    a_d = _dense_attention(g, _dense_scores(ql, kl, score, scale, pl), normalize, over)
    torch.testing.assert_close(a, a_d, rtol=1e-12, atol=1e-13)
    y_d = ref.spmm(g, a_d.mean(1), xl)
    torch.testing.assert_close(y, y_d, rtol=1e-12, atol=1e-13)
    # groups sum to one (softmax) / to just below one (squareplus, + 1e-16)
    idx = g.row if over == "target" else g.col
    sums = torch.zeros(g.num_nodes, a.size(1), dtype=DT).index_add_(0, idx, a.detach())
    has = torch.zeros(g.num_nodes, dtype=torch.bool)
    has[idx] = True
    torch.testing.assert_close(sums[has], torch.ones_like(sums[has]))
    # gradients of a loss touching every output against the dense formula's
    w = torch.randn_like(a)
    gr = torch.autograd.grad((a * w).sum() + (y ** 2).sum(), leaves, allow_unused=True)
    gd = torch.autograd.grad((a_d * w).sum() + (y_d ** 2).sum(), leaves, allow_unused=True)
    for u, v in zip(gr, gd):
        if v is None:
            assert u is None or torch.count_nonzero(u) == 0
        else:
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)
    if score != "exp_kernel":
        assert gr[3] is None


@pytest.mark.parametrize("score", ref.SCORES)
@pytest.mark.parametrize("normalize", ref.NORMALIZE)
def test_reference_gradcheck_float64(score, normalize):
    g = power_law_graph(10, 30, seed=5)
    torch.manual_seed(1)
    N = g.num_nodes
    q = torch.randn(N, 2, 3, dtype=DT, requires_grad=True)
    k = torch.randn(N, 2, 3, dtype=DT, requires_grad=True)
    x = torch.randn(N, 2, dtype=DT, requires_grad=True)
    kp = torch.tensor([1.1, 0.9], dtype=DT, requires_grad=True)
    over = "source" if normalize == "squareplus" else "target"

    def f(q, k, x, kp):
        return ref.attention_diffusion(g, q, k, x, 0.6, score=score, normalize=normalize, normalize_over=over,
                                       kernel_params=kp if score == "exp_kernel" else None)

    assert torch.autograd.gradcheck(f, (q, k, x, kp))


def test_squareplus_shift_is_global_and_differentiated():
    """The shift M is one max over all edges and heads, and gradients flow through it:
    detaching it (as one may for softmax) changes the gradient."""
    g, q, k, x, _ = _inputs(seed=2)
    q.requires_grad_()
    s = ref.edge_scores(g, q, k, 0.5)
    a = ref.segment_normalize(g, s, "squareplus", "source")
    sp = s - s.detach().max()
    u = (sp + torch.sqrt(sp * sp + 4)) / 2
    den = torch.zeros(g.num_nodes, s.size(1), dtype=DT).index_add_(0, g.col, u)
    a_det = u / (den[g.col] + 1e-16)
    torch.testing.assert_close(a, a_det)  # same values
    w = torch.randn_like(a)
    g1 = torch.autograd.grad((a * w).sum(), q, retain_graph=True)[0]
    g2 = torch.autograd.grad((a_det * w).sum(), q)[0]
    assert (g1 - g2).abs().max() > 1e-6
    # a per-group max (the softmax recipe) gives other values: squareplus is not shift invariant
    per_group = ref.segment_normalize(g, s, "softmax", "source")
    assert not torch.allclose(a, per_group)


def test_cosine_matches_torch_cosine_similarity_per_edge():
    g, q, k, _, _ = _inputs(seed=4)
    s = ref.edge_scores(g, q, k, score="cosine")
    cos = torch.nn.CosineSimilarity(dim=-1, eps=1e-5)
    torch.testing.assert_close(s, cos(q[g.row], k[g.col]), rtol=1e-13, atol=1e-14)


def test_hand_computed_squareplus_over_sources():
    # edges 1->0, 2->0, 2->1 ; one head, D=1, scores s = q_i k_j
    g = Graph.from_edge_index(torch.tensor([[1, 2, 2], [0, 0, 1]]), num_nodes=3)
    q = torch.tensor([[[1.0]], [[2.0]], [[0.0]]], dtype=DT)
    k = torch.tensor([[[0.0]], [[1.0]], [[3.0]]], dtype=DT)
    a = ref.edge_attention(g, q, k, 1.0, normalize="squareplus", normalize_over="source")
    s = torch.tensor([1.0, 3.0, 6.0], dtype=DT) - 6.0  # edge order (target, source): (0,1), (0,2), (1,2)
    u = (s + torch.sqrt(s * s + 4)) / 2
    expect = torch.stack([u[0] / u[0], u[1] / (u[1] + u[2]), u[2] / (u[1] + u[2])])
    torch.testing.assert_close(a[:, 0], expect)


# --------------------------------------------------------------------------- public API, dispatch
def test_public_api_validates_options():
    g, q, k, x, kp = _inputs()
    with pytest.raises(ValueError, match="unknown score"):
        ops.edge_attention(g, q, k, score="dot")
    with pytest.raises(ValueError, match="unknown normalize 'sparsemax'"):
        ops.edge_attention(g, q, k, normalize="sparsemax")
    with pytest.raises(ValueError, match="unknown normalize_over"):
        ops.attention_diffusion(g, q, k, x, normalize_over="row")
    with pytest.raises(ValueError, match="scale applies to score='scaled_dot' only"):
        ops.edge_attention(g, q, k, 0.5, score="cosine")
    with pytest.raises(ValueError, match="needs kernel_params"):
        ops.edge_attention(g, q, k, score="exp_kernel")
    with pytest.raises(ValueError, match=r"kernel_params must have shape \[2\]"):
        ops.edge_attention(g, q, k, score="exp_kernel", kernel_params=torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="dtype mismatch"):
        ops.edge_attention(g, q, k, score="exp_kernel", kernel_params=kp.float())
    with pytest.raises(ValueError, match="kernel_params applies to score='exp_kernel' only"):
        ops.edge_attention(g, q, k, kernel_params=kp)
    with pytest.raises(TypeError):
        ops.edge_attention(g, q, k, 0.5, "reference")  # options and backend are keyword-only


def test_defaults_unchanged_on_every_cpu_backend():
    g, q, k, x, _ = _inputs()
    for b in ops.available_backends():
        if b in ("triton", "cuda"):
            continue
        torch.testing.assert_close(ops.attention_diffusion(g, q, k, x, backend=b),
                                   ref.attention_diffusion(g, q, k, x, 1 / math.sqrt(3)))


def test_automatic_dispatch_falls_back_to_reference_for_missing_options(monkeypatch):
    from graphode.ops import _dispatch

    g, q, k, x, _ = _inputs()
    cpu = torch.device("cpu")
    for b in ops.available_backends():
        if b in ("reference", "triton", "cuda"):
            continue  # triton / cuda need CUDA tensors here
        lacks = _dispatch.backend_supports(b, {"normalize": "squareplus", "normalize_over": "source"})
        if lacks is None:
            continue  # this backend already implements them: nothing to fall back from
        if b == "cpu":
            assert ops.resolve_backend(None, cpu, {"normalize": "squareplus"}) == "reference"
            y = ops.attention_diffusion(g, q, k, x, normalize="squareplus", normalize_over="source")
            torch.testing.assert_close(y, ref.attention_diffusion(
                g, q, k, x, 1 / math.sqrt(3), normalize="squareplus", normalize_over="source"))
            for ctx in (ops.use_backend("cpu"),):
                with ctx, pytest.raises(ops.BackendUnavailableError, match="normalize='squareplus'"):
                    ops.attention_diffusion(g, q, k, x, normalize="squareplus")
        with pytest.raises(ops.BackendUnavailableError, match=f"{b!r} does not implement"):
            ops.attention_diffusion(g, q, k, x, normalize_over="source", backend=b)
    # a backend module without a declaration implements the defaults only
    class Bare:
        pass

    monkeypatch.setitem(_dispatch._modules, "cpu", Bare())
    assert _dispatch.backend_supports("cpu", {}) is None
    assert _dispatch.backend_supports("cpu", {"score": "exp_kernel"}) == "score='exp_kernel'"
    assert ops.resolve_backend(None, cpu, {"score": "exp_kernel"}) == "reference"
    assert ops.resolve_backend(None, cpu, {}) == "cpu"


def test_cosine_and_pearson_run_as_scaled_dot_on_compiled_backends():
    """Cosine / Pearson are rewritten as scaled-dot scores of unit vectors before dispatch,
    so backends implementing only scaled_dot run them."""
    g, q, k, x, _ = _inputs()
    for b in ops.available_backends():
        if b in ("triton", "cuda"):
            continue
        for score in ("cosine", "pearson"):
            y = ops.attention_diffusion(g, q, k, x, score=score, backend=b)
            S = _dense_scores(q, k, score)
            torch.testing.assert_close(y, ref.spmm(g, _dense_attention(g, S, "softmax", "target").mean(1), x))
