"""Registration of graphode's compiled ops through torch.library.

* ``torch.ops.graphode`` lists the six ops (three forward, three backward);
* ``torch.library.opcheck`` (schema, autograd registration, fake tensor,
  AOT dispatch) passes on every op with float32 and float64 samples;
* fake-tensor shape propagation works without torch.compile;
* automatic dispatch picks the "cpu" backend for CPU tensors.
"""
import pytest
import torch

import graphode
from graphode import Graph, ops

native = pytest.importorskip("graphode.ops._native", reason="graphode._C is not built")
P = torch.ops.graphode

OPS = [
    "spmm",
    "spmm_backward",
    "edge_attention",
    "edge_attention_backward",
    "attention_diffusion",
    "attention_diffusion_backward",
]


def _graph():
    ei = torch.tensor([[0, 1, 2, 3, 0, 4, 5, 1, 2, 3, 4, 5, 2], [0, 0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 5]])
    return Graph.from_edge_index(ei, 7)  # node 6 has no in-edges


def _samples(dtype, requires_grad):
    g = _graph()
    gen = torch.Generator().manual_seed(0)
    N, E, H, D, F = g.num_nodes, g.num_edges, 2, 3, 5

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)

    return g, r(N, H, D), r(N, H, D), r(N, F), r(E)


def test_ops_are_listed():
    import graphode._C  # noqa: F401

    listed = set(dir(P))
    for name in OPS:
        assert name in listed, f"torch.ops.graphode.{name} is not registered"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"graphode::{name}", "CPU")


def test_extension_module_attributes():
    import graphode._C as C

    assert isinstance(C.WITH_CUDA, bool)
    assert C.omp_max_threads() >= 1
    info = graphode.extension_info()
    assert info["extension"] and "cpu" in info["backends"]


def test_auto_dispatch_picks_cpu():
    assert ops.resolve_backend(None, torch.device("cpu")) == "cpu"
    assert "cpu" in ops.available_backends()
    g, q, k, x, w = _samples(torch.float32, False)
    with ops.use_backend(None):
        y = ops.spmm(g, w, x)
    torch.testing.assert_close(y, ops.spmm(g, w, x, backend="reference"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward_ops(dtype, requires_grad):
    g, q, k, x, w = _samples(dtype, requires_grad)
    csr = g.csr()
    torch.library.opcheck(P.spmm.default, (*csr, w, x))
    torch.library.opcheck(P.edge_attention.default, (*csr, q, k, 0.7))
    torch.library.opcheck(P.attention_diffusion.default, (*csr, q, k, x, 0.7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_backward_ops(dtype):
    g, q, k, x, w = _samples(dtype, False)
    csr = g.csr()
    gy = torch.randn_like(x)
    for need in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(P.spmm_backward.default, (gy, *csr, w, x, *need))
    attn = P.edge_attention(*csr, q, k, 0.7)
    torch.library.opcheck(P.edge_attention_backward.default, (torch.randn_like(attn), attn, *csr, q, k, 0.7))
    _, lse = P.attention_diffusion(*csr, q, k, x, 0.7)
    for need in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(P.attention_diffusion_backward.default, (gy, lse, *csr, q, k, x, 0.7, *need))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    g, q, k, x, w = _samples(torch.float32, False)
    csr = g.csr()  # built outside the fake mode
    with FakeTensorMode() as mode:
        fcsr = [mode.from_tensor(t) for t in csr]
        fq, fk, fx, fw = (mode.from_tensor(t) for t in (q, k, x, w))
        assert P.spmm(*fcsr, fw, fx).shape == x.shape
        assert P.edge_attention(*fcsr, fq, fk, 1.0).shape == (g.num_edges, 2)
        out, lse = P.attention_diffusion(*fcsr, fq, fk, fx, 1.0)
        assert out.shape == x.shape and lse.shape == (g.num_nodes, 2) and lse.dtype == torch.float32
        gq, gk, gx = P.attention_diffusion_backward(fx, lse, *fcsr, fq, fk, fx, 1.0, False, True)
        assert gq.shape == (0,) and gx.shape == x.shape
        gw, gx = P.spmm_backward(fx, *fcsr, fw, fx, True, False)
        assert gw.shape == w.shape and gx.shape == (0,)


def test_lse_is_not_differentiable():
    g, q, k, x, w = _samples(torch.float64, True)
    out, lse = P.attention_diffusion(*g.csr(), q, k, x, 0.5)
    assert out.requires_grad and not lse.requires_grad
