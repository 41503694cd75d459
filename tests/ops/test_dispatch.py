"""What every op shares: input validation of the public API, backend selection
(automatic, per call, per block, global, environment), the backends' capability
check, and the registration of graphode._C (its ops, fake kernels, module
attributes)."""
import math

import pytest
import torch

import graphode
from graphode import Graph, ops, power_law_graph
from graphode.ops import reference as ref
from graphode.ops._dispatch import backend_module

OPS = ["spmm", "edge_attention", "attention_diffusion"]


def _small():
    g = power_law_graph(30, 120, seed=0)
    N = g.num_nodes
    return g, torch.rand(g.num_edges), torch.randn(N, 4), torch.randn(N, 2, 3), torch.randn(N, 2, 3)


# --------------------------------------------------------------------------- validation
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


# --------------------------------------------------------------------------- backend selection
def test_public_ops_equal_reference_on_every_available_backend():
    g, w, x, q, k = _small()
    for b in ops.available_backends():
        if b == "cuda" or (b == "triton" and not graphode.kernels.INTERPRET):
            continue  # CUDA tensors (tests/ops run them where a GPU is present)
        assert torch.allclose(ops.spmm(g, w, x, backend=b), ref.spmm(g, w, x), atol=1e-5)
        assert torch.allclose(ops.attention_diffusion(g, q, k, x, backend=b),
                              ref.attention_diffusion(g, q, k, x, 1 / math.sqrt(3)), atol=1e-5)


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


class _NoOps:
    """A backend without kernels for any op."""

    name = "cpu"

    def supports(self, op):
        return False


def test_backend_without_the_op(monkeypatch):
    """An automatically chosen backend that lacks the op gives way to the reference;
    an explicitly requested one raises, naming the op."""
    from graphode.ops import _dispatch

    monkeypatch.setattr(_dispatch, "_modules", {"cpu": _NoOps()})
    monkeypatch.setattr(_dispatch, "_errors", {})
    cpu = torch.device("cpu")
    assert ops.resolve_backend(None, cpu, op="spmm") == "reference"
    assert ops.resolve_backend(None, cpu) == "cpu"
    with pytest.raises(ops.BackendUnavailableError, match="no kernels for 'spmm'"):
        ops.resolve_backend("cpu", cpu, op="spmm")
    g, w, x, q, k = _small()
    torch.testing.assert_close(ops.spmm(g, w, x), ref.spmm(g, w, x))  # served by the reference


def test_every_backend_supports_every_op():
    for b in ops.available_backends():
        if b != "reference":
            assert all(backend_module(b).supports(op) for op in OPS), b
            assert not backend_module(b).supports("no_such_op")


def test_package_imports_without_heavy_modules():
    import subprocess
    import sys

    code = "import sys, graphode; print(any(m in sys.modules for m in ('matplotlib', 'torch_geometric')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert "spmm" in dir(graphode.ops)


# --------------------------------------------------------------------------- graphode._C registration
native = pytest.mark.skipif("cpu" not in ops.available_backends(), reason="graphode._C is not built")


@native
def test_ops_are_listed():
    P = torch.ops.graphode
    for name in OPS + [f"{op}_backward" for op in OPS]:
        assert hasattr(P, name), f"torch.ops.graphode.{name} is not registered"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"graphode::{name}", "CPU")


@native
def test_extension_module_attributes():
    import graphode._C as C

    assert isinstance(C.WITH_CUDA, bool)
    assert C.omp_max_threads() >= 1
    info = graphode.extension_info()
    assert info["extension"] and "cpu" in info["backends"]


@native
def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    P = torch.ops.graphode
    g, w, x, q, k = _small()
    csr = g.csr()  # built outside the fake mode
    with FakeTensorMode() as mode:
        fcsr = [mode.from_tensor(t) for t in csr]
        fq, fk, fx, fw = (mode.from_tensor(t) for t in (q, k, x, w))
        assert P.spmm(*fcsr, fw, fx).shape == x.shape
        assert P.edge_attention(*fcsr, fq, fk, 1.0).shape == (g.num_edges, 2)
        out, lse = P.attention_diffusion(*fcsr, fq, fk, fx, 1.0)
        assert out.shape == x.shape and lse.shape == (g.num_nodes, 2) and lse.dtype == torch.float32
        gq, gk, gx = P.attention_diffusion_backward(*fcsr, fx, lse, fq, fk, fx, 1.0, False, True)
        assert gq.shape == (0,) and gx.shape == x.shape
        gw, gx = P.spmm_backward(*fcsr, fx, fw, fx, True, False)
        assert gw.shape == w.shape and gx.shape == (0,)


# --------------------------------------------------------------------------- the triton backend's plumbing
def test_graph_cases():
    from cases import SMALL_HUB, SMALL_ISOLATED, SMALL_SRC_HUB, get_graph

    g = get_graph("small")
    assert g.in_degree[SMALL_HUB] == 29 and g.out_degree[SMALL_SRC_HUB] >= 24
    assert all(g.in_degree[i] == 0 for i in SMALL_ISOLATED)
    assert g.has_self_loops()


triton_interp = pytest.mark.skipif(
    "triton" not in ops.available_backends() or not graphode.kernels.INTERPRET,
    reason="needs triton in interpreter mode (TRITON_INTERPRET=1, no GPU)",
)


@triton_interp
def test_triton_split_plan():
    import graphode.kernels as K

    ptr = torch.tensor([0, 2, 2, 12, 13, 20])  # degrees 2, 0, 10, 1, 7
    heavy, chunks = K.build_plan(ptr, 4)
    assert heavy.tolist() == [[2, 4], [0, 3], [3, 2]]
    assert chunks.tolist() == [[2, 2, 2, 4, 4], [2, 6, 10, 13, 17], [6, 10, 12, 17, 20]]
    h, c = K.build_plan(ptr, 10)
    assert h.shape == (3, 0) and c.shape == (3, 0)


@triton_interp
def test_triton_needs_interpreter_for_cpu_tensors(monkeypatch):
    from graphode.kernels import _common

    assert ops.resolve_backend("triton", torch.device("cpu")) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET"):
        ops.resolve_backend("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # a process whose triton was imported without the interpreter cannot launch on CPU tensors
    monkeypatch.setattr(_common, "INTERPRET", False)
    g, w, x, q, k = _small()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.spmm(g, w, x, backend="triton")
