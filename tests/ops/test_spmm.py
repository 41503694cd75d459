"""spmm: the reference against hand-computed values, and every compiled backend
(tests/ops/conftest.py) against the reference, forward and backward; float64
gradcheck, opcheck of the custom ops, and the argument checks of graphode._C."""
import pytest
import torch

import graphode
from graphode import Graph, ops
from graphode.ops import reference as ref
from graphode.ops._dispatch import backend_module

from cases import TOL, check_against_reference, close, get_graph, gradcheck, inputs, isolated_nodes


# --------------------------------------------------------------------------- the reference
def test_reference_hand_computed():
    # 0 -> 1 (w=2), 2 -> 1 (w=3), 1 -> 0 (w=5); node 2 has no in-edges
    g = Graph.from_edge_index(torch.tensor([[1, 0, 2], [0, 1, 1]]), num_nodes=3)
    w = torch.tensor([5.0, 2.0, 3.0])
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    y = ref.spmm(g, w, x)
    assert y.tolist() == [[10.0, 100.0], [2 * 1 + 3 * 3.0, 2 * 10 + 3 * 30.0], [0.0, 0.0]]


def test_reference_matches_dense_product():
    g = get_graph("powerlaw")
    _, _, x, w = inputs(g, 1, 1, 5)
    A = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.float64)
    A[g.row, g.col] = w
    close(ref.spmm(g, w, x), A @ x, 1e-12)


def test_reference_gradcheck():
    g = graphode.power_law_graph(12, 40, seed=7)
    w = torch.rand(g.num_edges, dtype=torch.float64, requires_grad=True)
    x = torch.randn(g.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, x: ref.spmm(g, w, x), (w, x))


# --------------------------------------------------------------------------- backends against the reference
@pytest.mark.split_path
@pytest.mark.graphs("small", "hub", "powerlaw")
@pytest.mark.not_interpreted(lambda p: p["F"] == 64)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("F", [7, 64])
def test_matches_reference(backend, graph, dtype, F):
    _, _, x, w = inputs(graph, 1, 1, F)
    y, _ = check_against_reference("spmm", backend.name, graph, [w, x], dtype)
    assert (y[isolated_nodes(graph)] == 0).all()


@pytest.mark.split_path
@pytest.mark.parametrize("which", ["w", "x"])
def test_partial_grads(backend, which):
    g = get_graph("small", backend.device)
    _, _, x, w = inputs(g, 1, 1, 5)
    check_against_reference("spmm", backend.name, g, [w, x], torch.float64, wants=(which == "w", which == "x"))


def test_gradcheck(backend):
    g = get_graph("tiny", backend.device)
    _, _, x, w = inputs(g, 1, 1, 3)
    assert gradcheck(backend, lambda w, x: ops.spmm(g, w, x, backend=backend.name), (w, x))


def test_double_backward_raises(backend):
    g = get_graph("tiny", backend.device)
    _, _, x, w = inputs(g, 1, 1, 3)
    w.requires_grad_()
    x.requires_grad_()
    y = ops.spmm(g, w, x, backend=backend.name)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="do not support double backward"):
        torch.autograd.grad(gx.pow(2).sum(), w)


def test_zero_edges_and_zero_features(backend):
    g = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 5).to(backend.device)
    _, _, x, w = inputs(g, 1, 1, 4)
    assert (ops.spmm(g, w, x, backend=backend.name) == 0).all()
    g2 = get_graph("small", backend.device)
    y = ops.spmm(g2, torch.ones(g2.num_edges, device=g2.device), torch.ones(g2.num_nodes, 0, device=g2.device),
                 backend=backend.name)
    assert y.shape == (g2.num_nodes, 0)


@pytest.mark.split_path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(backend, dtype):
    """torch.library.opcheck of the backend's spmm and spmm_backward custom ops."""
    g = get_graph("tiny", backend.device)
    _, _, x, w = inputs(g, 1, 1, 5, dtype)
    impl = backend_module(backend.name)
    torch.library.opcheck(*impl.bind("spmm", g, w, x))
    gy = torch.randn_like(x)
    for need in [(True, True), (True, False), (False, True)]:
        torch.library.opcheck(*impl.bind("spmm_backward", g, gy, w, x, *need))


def test_custom_ops_are_plain_kernels(backend):
    """The custom ops carry no autograd (graphode.ops.spmm owns the formula)."""
    g = get_graph("tiny", backend.device)
    _, _, x, w = inputs(g, 1, 1, 3)
    fn, args = backend_module(backend.name).bind("spmm", g, w.requires_grad_(), x)
    y = fn(*args)
    if backend.name == "triton":  # torch.library.custom_op: a clear error at backward
        with pytest.raises(RuntimeError, match="no autograd formula"):
            y.sum().backward()
    else:  # graphode._C: autograd falls through
        assert not y.requires_grad


# --------------------------------------------------------------------------- graphode._C argument checks


def _csr_args(device):
    g = get_graph("tiny", device)
    _, _, x, w = inputs(g, 2, 3, 4, torch.float32)
    return g, x, w


@pytest.mark.native
def test_error_shapes_and_counts(backend):
    P = torch.ops.graphode
    g, x, w = _csr_args(backend.device)
    with pytest.raises(RuntimeError, match=r"graphode::spmm: x must have shape \[N, F\]"):
        P.spmm(*g.csr(), w, x.view(-1))
    with pytest.raises(RuntimeError, match=r"rowptr must have 9 entries"):
        P.spmm(*g.csr(), w, torch.zeros(8, 4, device=x.device))  # x with N+1 rows
    with pytest.raises(RuntimeError, match=r"weight.size\(0\) must be 12 \(one value per edge"):
        P.spmm(*g.csr(), torch.ones(13, device=x.device), x)
    with pytest.raises(ValueError, match="edge_weight has 13 entries but the graph has 12 edges"):
        ops.spmm(g, torch.ones(13, device=x.device), x, backend=backend.name)
    rowptr, col, cp, cr, cperm = g.csr()
    with pytest.raises(RuntimeError, match=r"csc_row must have 11 entries"):
        P.spmm(rowptr, col[:11], cp, cr, cperm, w[:11], x)
    with pytest.raises(RuntimeError, match=r"grad_out.size\(1\) must be 4"):
        P.spmm_backward(*g.csr(), x[:, :3].contiguous(), w, x, True, True)


@pytest.mark.native
def test_error_dtypes(backend):
    P = torch.ops.graphode
    g, x, w = _csr_args(backend.device)
    with pytest.raises(RuntimeError, match="dtype mismatch: weight is Double but x is Float"):
        P.spmm(*g.csr(), w.double(), x)
    with pytest.raises(RuntimeError, match="support float32 and float64, got Half"):
        P.spmm(*g.csr(), w.half(), x.half())


@pytest.mark.native
def test_error_non_contiguous(backend):
    P = torch.ops.graphode
    g, x, w = _csr_args(backend.device)
    xt = torch.randn(4, 7, device=x.device).t()
    assert not xt.is_contiguous()
    with pytest.raises(RuntimeError, match="x must be contiguous"):
        P.spmm(*g.csr(), w, xt)
    rowptr, col, *rest = g.csr()
    col2 = torch.stack([col, col], 1)[:, 0]
    with pytest.raises(RuntimeError, match="col must be contiguous"):
        P.spmm(rowptr, col2, *rest, w, x)
    # graphode.ops makes its inputs contiguous before calling the op
    close(ops.spmm(g, w, xt, backend=backend.name), ops.spmm(g, w, xt, backend="reference"), TOL[torch.float32])


@pytest.mark.native
def test_error_index_dtype_and_values(backend):
    P = torch.ops.graphode
    g, x, w = _csr_args(backend.device)
    rowptr, col, cp, cr, cperm = g.csr()
    with pytest.raises(RuntimeError, match=r"rowptr must be an int64 \(torch.long\) tensor, got Int"):
        P.spmm(rowptr.int(), col, cp, cr, cperm, w, x)
    with pytest.raises(RuntimeError, match="csc_perm must be an int64"):
        P.spmm_backward(rowptr, col, cp, cr, cperm.float(), x, w, x, True, True)
    if backend.name != "cpu":
        return  # the CUDA launchers trust the index values (checked for shape, dtype and device)
    bad = col.clone()
    bad[3] = 7
    with pytest.raises(RuntimeError, match=r"col contains a node index outside \[0, N\)"):
        P.spmm(rowptr, bad, cp, cr, cperm, w, x)
    rp = rowptr.clone()
    rp[2] = 100  # decreasing afterwards
    with pytest.raises(RuntimeError, match="rowptr is not a valid CSR pointer array"):
        P.spmm(rp, col, cp, cr, cperm, w, x)
    badr = cr.clone()
    badr[0] = 99
    with pytest.raises(RuntimeError, match="csc_row contains a node index outside"):
        P.spmm_backward(rowptr, col, cp, badr, cperm, x, w, x, False, True)
    badp = cperm.clone()
    badp[0] = 12
    with pytest.raises(RuntimeError, match="csc_perm contains an edge index outside"):
        P.spmm_backward(rowptr, col, cp, cr, badp, x, w, x, False, True)


@pytest.mark.native
def test_partial_outputs_are_empty(backend):
    P = torch.ops.graphode
    g, x, w = _csr_args(backend.device)
    gy = torch.ones_like(x)
    gw, gx = P.spmm_backward(*g.csr(), gy, w, x, True, False)
    assert gx.numel() == 0 and gw.shape == (g.num_edges,)
    gw2, gx2 = P.spmm_backward(*g.csr(), gy, w, x, False, True)
    assert gw2.numel() == 0 and gx2.shape == x.shape


def test_results_independent_of_thread_count():
    """Each output row of the CPU kernels is reduced by one thread in edge order:
    bitwise identical results with 1 and 2 threads."""
    pytest.importorskip("graphode._C")
    P = torch.ops.graphode
    g = graphode.power_law_graph(20000, 200000, seed=5)
    _, _, x, w = inputs(g, 1, 1, 32, torch.float32)
    old = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            outs.append([P.spmm(*g.csr(), w, x), *P.spmm_backward(*g.csr(), x, w, x, True, True)])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)
