"""The decorator of every public op's ``backward`` (one ``torch.autograd.Function`` per op).

The compiled backends' backward kernels are not differentiable themselves.
``torch.autograd.function.once_differentiable`` guards that only when the
incoming gradient requires grad, but a gradient such as ``grad_x = A^T g``
also depends on the saved inputs (here ``A``'s weights): differentiating it
would silently drop that dependence.  So under ``create_graph=True`` every
gradient returned here gets a node that raises when it is differentiated.
"""
from __future__ import annotations

import functools

import torch
from torch._C import _functions

__all__ = ["first_order_only"]


def first_order_only(op: str):
    """Decorates ``backward(ctx, *grads)`` of the autograd Function of ``graphode.ops.<op>``."""
    message = (
        f"graphode.ops.{op}: the compiled backends do not support double backward (differentiating a "
        "gradient); use backend='reference' for higher-order gradients"
    ).encode()

    def decorate(backward):
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            with torch.no_grad():
                outputs = backward(ctx, *grads)
            if not torch.is_grad_enabled():  # the usual case: create_graph=False
                return outputs
            # The error node takes the gradients AND every saved input or incoming
            # gradient that requires grad, so that differentiating a returned gradient
            # with respect to any of them reaches it (and raises).
            saved = [t for t in ctx.saved_tensors if t is not None and t.requires_grad]
            extra = saved + [g for g in grads if isinstance(g, torch.Tensor) and g.requires_grad]

            def fake_requires_grad(t):
                if t is not None:
                    t = t.detach()
                    t.requires_grad = True
                return t

            err_fn = _functions.DelayedError(message, len(outputs) + len(extra))
            return tuple(err_fn(*[fake_requires_grad(t) for t in outputs], *extra)[: len(outputs)])

        return wrapper

    return decorate
