"""The compiled backends ("cpu" and "cuda"): ``torch.ops.graphode.*`` from ``graphode._C``.

Importing this module loads the extension (which registers the operators, see
``csrc/ops.cpp`` for their schemas) and adds, through ``torch.library``:

* fake (meta) implementations of all six ops, so they work under
  ``torch.compile`` / FakeTensor tracing;
* autograd for the three forward ops, whose backward calls the matching
  ``*_backward`` op.  The backward ops are not differentiable themselves:
  differentiating a gradient (double backward, e.g. ``create_graph=True``
  followed by a second ``backward``) raises a ``RuntimeError`` instead of
  returning silently wrong values.  Use ``backend="reference"`` for that.

Backend interface (inputs already validated and made contiguous by
:mod:`graphode.ops`):

* ``spmm(graph, edge_weight [E], x [N, F]) -> [N, F]``
* ``edge_attention(graph, q [N, H, D], k [N, H, D], scale) -> [E, H]``
* ``attention_diffusion(graph, q, k, x [N, F], scale) -> [N, F]``
* ``has_cuda()``: whether ``_C`` holds CUDA kernels.

The fused ``attention_diffusion`` op also returns the per-row, per-head
log-sum-exp ``lse [N, H]`` (float32 for half inputs, -inf for nodes without
in-edges); it is saved for the backward pass and is not differentiable.
"""
from __future__ import annotations

import torch

from .._extension import extension_error, load_extension

_C = load_extension()
if _C is None:  # dispatch turns this into "backend unavailable, how to build"
    raise ImportError(extension_error() or "graphode._C could not be imported")

__all__ = ["spmm", "edge_attention", "attention_diffusion", "has_cuda"]

_ops = torch.ops.graphode
_HALF = (torch.float16, torch.bfloat16)


def has_cuda() -> bool:
    """True when ``graphode._C`` was compiled with its CUDA kernels."""
    if not bool(getattr(_C, "WITH_CUDA", False)):
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key("graphode::attention_diffusion", "CUDA"))
    except Exception:  # pragma: no cover - private API moved: trust the build flag
        return True


# --------------------------------------------------------------------------- fake impls
def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


@torch.library.register_fake("graphode::spmm")
def _spmm_fake(rowptr, col, csc_ptr, csc_row, csc_perm, weight, x):
    torch._check(x.dim() == 2, lambda: "graphode::spmm: x must be [N, F]")
    return x.new_empty(x.shape)


@torch.library.register_fake("graphode::spmm_backward")
def _spmm_backward_fake(grad_out, rowptr, col, csc_ptr, csc_row, csc_perm, weight, x, need_weight, need_x):
    gw = weight.new_empty(weight.shape) if need_weight else weight.new_empty((0,))
    gx = x.new_empty(x.shape) if need_x else x.new_empty((0,))
    return gw, gx


@torch.library.register_fake("graphode::edge_attention")
def _edge_attention_fake(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, scale):
    torch._check(q.dim() == 3, lambda: "graphode::edge_attention: q must be [N, H, D]")
    return q.new_empty((col.shape[0], q.shape[1]))


@torch.library.register_fake("graphode::edge_attention_backward")
def _edge_attention_backward_fake(grad_attn, attn, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape)


@torch.library.register_fake("graphode::attention_diffusion")
def _attention_diffusion_fake(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale):
    torch._check(q.dim() == 3 and x.dim() == 2, lambda: "graphode::attention_diffusion: q [N, H, D], x [N, F]")
    out = x.new_empty(x.shape)
    lse = q.new_empty((q.shape[0], q.shape[1]), dtype=_lse_dtype(q.dtype))
    return out, lse


@torch.library.register_fake("graphode::attention_diffusion_backward")
def _attention_diffusion_backward_fake(
    grad_out, lse, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale, need_qk, need_x
):
    gq = q.new_empty(q.shape) if need_qk else q.new_empty((0,))
    gk = k.new_empty(k.shape) if need_qk else k.new_empty((0,))
    gx = x.new_empty(x.shape) if need_x else x.new_empty((0,))
    return gq, gk, gx


# --------------------------------------------------------------------------- autograd
# Inputs of the forward ops: the five graph arrays come first (never differentiable).
_NG = 5


def _spmm_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _spmm_backward(ctx, grad):
    *graph, weight, x = ctx.saved_tensors
    need_w, need_x = ctx.needs_input_grad[_NG], ctx.needs_input_grad[_NG + 1]
    if not (need_w or need_x):
        return (None,) * (_NG + 2)
    gw, gx = _ops.spmm_backward(grad.contiguous(), *graph, weight, x, need_w, need_x)
    return (None,) * _NG + (gw if need_w else None, gx if need_x else None)


def _edge_attention_setup(ctx, inputs, output):
    *graph, q, k, scale = inputs
    ctx.scale = scale
    ctx.save_for_backward(*graph, q, k, output)


def _edge_attention_backward(ctx, grad):
    *graph, q, k, attn = ctx.saved_tensors
    if not (ctx.needs_input_grad[_NG] or ctx.needs_input_grad[_NG + 1]):
        return (None,) * (_NG + 3)
    gq, gk = _ops.edge_attention_backward(grad.contiguous(), attn, *graph, q, k, ctx.scale)
    return (None,) * _NG + (
        gq if ctx.needs_input_grad[_NG] else None,
        gk if ctx.needs_input_grad[_NG + 1] else None,
        None,
    )


def _attention_diffusion_setup(ctx, inputs, output):
    *graph, q, k, x, scale = inputs
    out, lse = output
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(*graph, q, k, x, lse)


def _attention_diffusion_backward(ctx, grad_out, grad_lse):
    *graph, q, k, x, lse = ctx.saved_tensors
    need_qk = ctx.needs_input_grad[_NG] or ctx.needs_input_grad[_NG + 1]
    need_x = ctx.needs_input_grad[_NG + 2]
    if grad_out is None or not (need_qk or need_x):
        return (None,) * (_NG + 4)
    gq, gk, gx = _ops.attention_diffusion_backward(
        grad_out.contiguous(), lse, *graph, q, k, x, ctx.scale, need_qk, need_x
    )
    return (None,) * _NG + (
        gq if ctx.needs_input_grad[_NG] else None,
        gk if ctx.needs_input_grad[_NG + 1] else None,
        gx if need_x else None,
        None,
    )


torch.library.register_autograd("graphode::spmm", _spmm_backward, setup_context=_spmm_setup)
torch.library.register_autograd(
    "graphode::edge_attention", _edge_attention_backward, setup_context=_edge_attention_setup
)
torch.library.register_autograd(
    "graphode::attention_diffusion", _attention_diffusion_backward, setup_context=_attention_diffusion_setup
)


def _no_double_backward(name):
    def setup(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(
            f"graphode::{name} is not differentiable: the compiled backends do not support double "
            "backward (differentiating a gradient). Use backend='reference' for higher-order gradients."
        )

    torch.library.register_autograd(f"graphode::{name}", backward, setup_context=setup)


for _name in ("spmm_backward", "edge_attention_backward", "attention_diffusion_backward"):
    _no_double_backward(_name)


# --------------------------------------------------------------------------- backend interface
def spmm(graph, edge_weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y [N, F] = sum_{j -> i} w_e x[j]`` with ``edge_weight`` ``[E]``, ``x`` ``[N, F]``."""
    return _ops.spmm(*graph.csr(), edge_weight, x)


def edge_attention(graph, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """``[E, H]`` softmax over each target's in-edges of ``scale <q[i,h], k[j,h]>``."""
    return _ops.edge_attention(*graph.csr(), q, k, float(scale))


class _AttentionDiffusion(torch.autograd.Function):
    """The autograd of ``graphode::attention_diffusion`` for the backend interface.

    Same forward and backward ops and the same gradients as the
    ``torch.library.register_autograd`` registration above (which stays: it
    makes the op itself differentiable, e.g. for ``opcheck`` and direct
    ``torch.ops.graphode`` calls), with less Python per call: the
    registration's generic wrapper costs ~0.1 ms per forward+backward, which
    GRAND-nl pays at every evaluation of its vector field (16 per RK4 epoch
    at T = 4; the Cora kernels themselves take ~2 ms)."""

    @staticmethod
    def forward(ctx, rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale):
        out, lse = _ops.attention_diffusion(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, scale)
        ctx.scale = scale
        ctx.save_for_backward(rowptr, col, csc_ptr, csc_row, csc_perm, q, k, x, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _attention_diffusion_backward(ctx, grad_out, None)


def attention_diffusion(graph, q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """``[N, F]``: ``y[i] = (1/H) sum_h sum_{j -> i} a_ijh x[j]`` (fused; lse kept for backward)."""
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or x.requires_grad):
        return _AttentionDiffusion.apply(*graph.csr(), q, k, x, float(scale))
    out, _ = _ops.attention_diffusion(*graph.csr(), q, k, x, float(scale))
    return out
