"""graphode.linalg: Krylov solvers against dense solves; implicit gradients against backprop."""
import numpy as np
import pytest
import torch

from graphode.linalg import SolveInfo, bicgstab, cg, gmres


pytestmark = pytest.mark.usefixtures("one_thread")


def _spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    return B @ B.T / n + torch.eye(n, dtype=torch.float64)


def _nonsym(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=g, dtype=torch.float64) / n ** 0.5 + 2 * torch.eye(n, dtype=torch.float64)


SOLVERS = [("cg", cg, _spd), ("bicgstab", bicgstab, _nonsym), ("gmres", gmres, _nonsym)]


@pytest.mark.parametrize("name,solver,make", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_matches_numpy(name, solver, make):
    A = make(30)
    b = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, info = solver(lambda v: A @ v, b, rtol=1e-12, return_info=True)
    ref = np.linalg.solve(A.numpy(), b.numpy())
    assert np.allclose(x.numpy(), ref, rtol=1e-9, atol=1e-10)
    assert isinstance(info, SolveInfo) and info.converged and info.iterations > 0
    assert info.residual_norm <= 1e-12 * float(b.norm()) * 1.01


@pytest.mark.parametrize("name,solver,make", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_matrix_rhs_shape_and_x0(name, solver, make):
    A = make(16, seed=2)
    B = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    # the system acts on a 16x3 tensor column-wise (one global Krylov space)
    x = solver(lambda V: A @ V, B, torch.ones_like(B), rtol=1e-12)
    assert x.shape == B.shape
    assert torch.allclose(x, torch.linalg.solve(A, B), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name,solver,make", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_gradients_match_dense_solve(name, solver, make):
    A0 = make(12, seed=4)
    b0 = torch.randn(12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w = torch.randn(12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = []
    for use_krylov in (True, False):
        A = A0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        if use_krylov:
            x = solver(lambda v: A @ v, b, rtol=1e-13)
        else:
            x = torch.linalg.solve(A, b)
        loss = (x * w).sum() + x.pow(3).sum()
        out.append(torch.autograd.grad(loss, (A, b)))
    for i, (a, r) in enumerate(zip(*out)):
        if name == "cg" and i == 0:  # CG assumes symmetry: compare the symmetric part of dL/dA
            a, r = (a + a.T) / 2, (r + r.T) / 2
        assert torch.allclose(a, r, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name,solver,make", SOLVERS, ids=[s[0] for s in SOLVERS])
def test_gradcheck(name, solver, make):
    A0 = make(6, seed=7)
    b = torch.randn(6, generator=torch.Generator().manual_seed(8), dtype=torch.float64, requires_grad=True)
    if name == "cg":
        L = torch.linalg.cholesky(A0).clone().requires_grad_(True)
        fn = lambda L, b: solver(lambda v: L @ (L.T @ v), b, rtol=1e-14)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (L, b))
    else:
        A = A0.clone().requires_grad_(True)
        fn = lambda A, b: solver(lambda v: A @ v, b, rtol=1e-14)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (A, b))


def test_explicit_rmatvec_and_preconditioner():
    A = _nonsym(20, seed=9)
    b = torch.randn(20, dtype=torch.float64, requires_grad=True)
    d = 1.0 / torch.diagonal(A)
    x = gmres(lambda v: A @ v, b, rtol=1e-12, M=lambda v: d * v, rmatvec=lambda v: A.T @ v)
    (g,) = torch.autograd.grad(x.sum(), b)
    assert torch.allclose(g, torch.linalg.solve(A.T, torch.ones(20, dtype=torch.float64)), rtol=1e-8)
    x2 = cg(lambda v: _spd(20) @ v, b.detach(), rtol=1e-12, M=lambda v: v / torch.diagonal(_spd(20)))
    assert torch.allclose(x2, torch.linalg.solve(_spd(20), b.detach()), rtol=1e-9)


def test_nonconvergence_reported():
    A = _nonsym(40, seed=10)
    b = torch.randn(40, dtype=torch.float64)
    x, info = gmres(lambda v: A @ v, b, rtol=1e-14, maxiter=3, restart=2, return_info=True)
    assert not info.converged and info.iterations == 3


def test_grand_semi_implicit_step_with_linalg():
    """(I - τ(A - I)) x_{k+1} = x_k via gmres on a row-stochastic A."""
    g = torch.Generator().manual_seed(11)
    W = torch.rand(25, 25, generator=g, dtype=torch.float64)
    A = W / W.sum(1, keepdim=True)
    x = torch.randn(25, 4, generator=g, dtype=torch.float64)
    tau = 10.0
    xn = gmres(lambda v: v - tau * (A @ v - v), x, rtol=1e-12)
    ref = torch.linalg.solve((1 + tau) * torch.eye(25, dtype=torch.float64) - tau * A, x)
    assert torch.allclose(xn, ref, rtol=1e-9, atol=1e-11)
    assert torch.all(xn.min(0).values >= x.min(0).values - 1e-9)


def test_input_validation():
    with pytest.raises(TypeError, match="floating point"):
        cg(lambda v: v, torch.ones(3, dtype=torch.int64))
