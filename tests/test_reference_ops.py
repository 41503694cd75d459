"""Reference ops against hand-computed cases and dense formulas; float64 gradcheck;
dispatch and input validation of the public ``graphode.ops`` API."""
import math

import pytest
import torch

import graphode
from graphode import Graph, ops, power_law_graph
from graphode.ops import reference as ref


def _dense_attention(g, q, k, scale):
    """Dense [N, N, H] softmax over in-edges, masked (independent formula)."""
    N, H, _ = q.shape
    S = torch.einsum("ihd,jhd->ijh", q, k) * scale
    mask = g.to_dense(dtype=torch.bool if False else q.dtype) != 0
    S = S.masked_fill(~mask[..., None], float("-inf"))
    A = torch.softmax(S, dim=1)
    return torch.nan_to_num(A, nan=0.0)  # rows without in-edges -> 0


def test_spmm_hand_computed():
    # 0 -> 1 (w=2), 2 -> 1 (w=3), 1 -> 0 (w=5); node 2 has no in-edges
    g = Graph.from_edge_index(torch.tensor([[1, 0, 2], [0, 1, 1]]), num_nodes=3)
    w = torch.tensor([5.0, 2.0, 3.0])
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    y = ref.spmm(g, w, x)
    assert y.tolist() == [[10.0, 100.0], [2 * 1 + 3 * 3.0, 2 * 10 + 3 * 30.0], [0.0, 0.0]]


def test_edge_attention_hand_computed():
    # node 0 has in-edges from 1 and 2; one head, D=1
    g = Graph.from_edge_index(torch.tensor([[1, 2], [0, 0]]), num_nodes=3)
    q = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])
    k = torch.tensor([[[0.0]], [[1.0]], [[2.0]]])
    a = ref.edge_attention(g, q, k, scale=0.5)
    e1, e2 = math.exp(0.5), math.exp(1.0)
    assert torch.allclose(a[:, 0], torch.tensor([e1 / (e1 + e2), e2 / (e1 + e2)]))


@pytest.mark.parametrize("H", [1, 4])
def test_attention_matches_dense_formula(H):
    torch.manual_seed(0)
    g = power_law_graph(60, 400, seed=4)
    N, D, F = g.num_nodes, 5, 7
    q, k = torch.randn(N, H, D, dtype=torch.float64), torch.randn(N, H, D, dtype=torch.float64)
    x = torch.randn(N, F, dtype=torch.float64)
    scale = 1 / math.sqrt(D)
    A = _dense_attention(g, q, k, scale)  # [N, N, H]
    a = ref.edge_attention(g, q, k, scale)
    assert torch.allclose(a, A[g.row, g.col], atol=1e-12)
    y = ref.attention_diffusion(g, q, k, x, scale)
    assert torch.allclose(y, A.mean(-1) @ x, atol=1e-12)
    # each row with in-edges sums to one per head
    s = torch.zeros(N, H, dtype=torch.float64).index_add_(0, g.row, a)
    assert torch.allclose(s[g.in_degree > 0], torch.ones_like(s[g.in_degree > 0]))


def test_isolated_nodes_output_zero():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), num_nodes=4)
    q = k = torch.randn(4, 2, 3)
    y = ops.attention_diffusion(g, q, k, torch.randn(4, 5), backend="reference")
    assert torch.equal(y[2:], torch.zeros(2, 5))


def test_softmax_is_stable_for_large_scores():
    g = Graph.from_edge_index(torch.tensor([[1, 2], [0, 0]]), num_nodes=3)
    q = torch.full((3, 1, 1), 1000.0)
    k = torch.tensor([[[0.0]], [[1.0]], [[1.001]]])
    a = ref.edge_attention(g, q, k, 1.0)
    assert torch.isfinite(a).all()
    assert torch.allclose(a.sum(0), torch.ones(1))


def test_gradcheck_reference_float64():
    g = power_law_graph(12, 40, seed=7)
    N = g.num_nodes
    dt = torch.float64
    w = torch.rand(g.num_edges, dtype=dt, requires_grad=True)
    x = torch.randn(N, 3, dtype=dt, requires_grad=True)
    q = torch.randn(N, 2, 3, dtype=dt, requires_grad=True)
    k = torch.randn(N, 2, 3, dtype=dt, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: ref.spmm(g, w, x), (w, x))
    assert torch.autograd.gradcheck(lambda q, k: ref.edge_attention(g, q, k, 0.7), (q, k))
    assert torch.autograd.gradcheck(lambda q, k, x: ref.attention_diffusion(g, q, k, x, 0.7), (q, k, x))


# ----------------------------------------------------------------------------- public API


def _small():
    g = power_law_graph(30, 120, seed=0)
    N = g.num_nodes
    return g, torch.rand(g.num_edges), torch.randn(N, 4), torch.randn(N, 2, 3), torch.randn(N, 2, 3)


def test_public_ops_equal_reference_on_every_available_backend():
    g, w, x, q, k = _small()
    for b in ops.available_backends():
        if b in ("triton", "cuda"):
            continue  # need CUDA tensors (triton has its own interpreter tests)
        assert torch.allclose(ops.spmm(g, w, x, backend=b), ref.spmm(g, w, x), atol=1e-5)
        assert torch.allclose(ops.attention_diffusion(g, q, k, x, backend=b),
                              ref.attention_diffusion(g, q, k, x, 1 / math.sqrt(3)), atol=1e-5)


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda g, w, x, q, k: ops.spmm(g, w[:-1], x), ValueError, "edges"),
        (lambda g, w, x, q, k: ops.spmm(g, w, x[:-1]), ValueError, "rows but the graph has"),
        (lambda g, w, x, q, k: ops.spmm(g, w.double(), x), ValueError, "dtype mismatch"),
        (lambda g, w, x, q, k: ops.spmm(g, w, x[0]), ValueError, r"shape \[N, F\]"),
        (lambda g, w, x, q, k: ops.spmm(g, w, x.long()), ValueError, "floating"),
        (lambda g, w, x, q, k: ops.spmm(g.edge_index, w, x), TypeError, "graphode.Graph"),
        (lambda g, w, x, q, k: ops.edge_attention(g, q, k[:, :1]), ValueError, "same shape"),
        (lambda g, w, x, q, k: ops.attention_diffusion(g, q, k, x.double()), ValueError, "dtype mismatch"),
        (lambda g, w, x, q, k: ops.edge_attention(g, q, k, scale=float("nan")), ValueError, "finite"),
        (lambda g, w, x, q, k: ops.spmm(g, w, x, backend="gpu"), ValueError, "unknown backend"),
    ],
)
def test_bad_input_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(*_small())


def test_empty_graph_is_an_error():
    g = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), num_nodes=0)
    with pytest.raises(ValueError, match="empty"):
        ops.spmm(g, torch.zeros(0), torch.zeros(0, 3))


def test_nan_check_opt_in():
    g, w, x, q, k = _small()
    x[0, 0] = float("nan")
    ops.set_check_finite(True)
    try:
        with pytest.raises(ValueError, match="NaN or Inf"):
            ops.spmm(g, w, x)
    finally:
        ops.set_check_finite(False)


def test_backend_override_and_errors(monkeypatch):
    cpu = torch.device("cpu")
    with ops.use_backend("reference"):
        assert ops.resolve_backend(None, cpu) == "reference"
        assert ops.resolve_backend("reference", cpu) == "reference"
    monkeypatch.setenv("GRAPHODE_BACKEND", "reference")
    assert ops.resolve_backend(None, cpu) == "reference"
    monkeypatch.delenv("GRAPHODE_BACKEND")
    auto = ops.resolve_backend(None, cpu)
    assert auto == ("cpu" if "cpu" in ops.available_backends() else "reference")
    with pytest.raises(ops.BackendUnavailableError, match="'cuda'"):
        ops.resolve_backend("cuda", cpu)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ops.BackendUnavailableError, match="triton"):
        ops.resolve_backend("triton", cpu)


def test_missing_extension_message(monkeypatch):
    from graphode.ops import _dispatch

    monkeypatch.setattr(_dispatch, "_modules", {})
    monkeypatch.setattr(_dispatch, "_errors", {"cpu": "the compiled extension graphode._C is missing (x); build it with ..."})
    with pytest.raises(ops.BackendUnavailableError, match="graphode._C is missing"):
        ops.resolve_backend("cpu", torch.device("cpu"))
    # automatic dispatch falls back to the reference
    assert ops.resolve_backend(None, torch.device("cpu")) == "reference"


def test_package_imports_without_heavy_modules():
    import subprocess
    import sys

    code = "import sys, graphode; print(any(m in sys.modules for m in ('matplotlib', 'torch_geometric')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert "spmm" in dir(graphode.ops)
