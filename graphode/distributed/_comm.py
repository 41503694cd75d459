"""Process groups and the autograd-aware collectives of graphode.distributed.

Everything goes through ``torch.distributed`` (Gloo on CPU, NCCL on GPU); no
other transport.  Collectives time out after the process group's timeout
(``GRAPHODE_DIST_TIMEOUT`` seconds, default 300), so a rank that dies or hangs
ends the job with an error instead of a hang.
"""
from __future__ import annotations

import datetime
import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

__all__ = [
    "init_process_group",
    "is_distributed_env",
    "rank",
    "world_size",
    "HaloPlan",
    "halo_exchange",
    "all_reduce_grad",
    "share_grad",
    "all_reduce_sum",
    "all_reduce_max",
    "halo_reduce",
    "global_max",
]

DEFAULT_TIMEOUT_S = 300.0


def is_distributed_env() -> bool:
    """True inside a process started by ``torchrun`` or ``graphode train --nproc``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _timeout(seconds: Optional[float]) -> datetime.timedelta:
    if seconds is None:
        seconds = float(os.environ.get("GRAPHODE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    return datetime.timedelta(seconds=float(seconds))


def init_process_group(backend: Optional[str] = None, timeout: Optional[float] = None,
                       device: Optional[torch.device] = None) -> Tuple[int, int]:
    """Join the job described by the environment and return ``(rank, world_size)``.

    ``RANK`` and ``WORLD_SIZE`` come from ``torchrun`` (which also sets
    ``MASTER_ADDR``/``MASTER_PORT``: ``env://`` rendezvous) or from
    :func:`graphode.distributed.launch.run_local` (which sets
    ``GRAPHODE_DIST_INIT=file://...``, a file store: no port to pick).
    ``backend`` defaults to NCCL for CUDA devices, Gloo otherwise.  Does
    nothing (and returns the current values) when already initialised.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not is_distributed_env():
        raise RuntimeError("not started as a distributed job: RANK and WORLD_SIZE are not set (start the "
                           "processes with `torchrun` or `graphode train --nproc N`)")
    r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if backend is None:
        backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
    init = os.environ.get("GRAPHODE_DIST_INIT") or "env://"
    kw = {}
    if backend == "nccl" and device is not None:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, init_method=init, rank=r, world_size=w, timeout=_timeout(timeout), **kw)
    return r, w


def rank(group=None) -> int:
    return dist.get_rank(group) if dist.is_initialized() else 0


def world_size(group=None) -> int:
    return dist.get_world_size(group) if dist.is_initialized() else 1


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """In-place sum over ranks (a no-op outside a distributed job); returns ``t``."""
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def all_reduce_max(t: torch.Tensor, group=None) -> torch.Tensor:
    """In-place maximum over ranks (a no-op outside a distributed job); returns ``t``."""
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


# --------------------------------------------------------------------------- halo exchange
class HaloPlan:
    """Who sends which rows to whom (from a :class:`~graphode.distributed.partition.GraphPart`).

    ``send_index`` ``[S]``: local owned rows sent, part after part
    (``send_counts`` ``[P]``); the ``n_halo`` received rows arrive grouped by
    sender (``recv_counts`` ``[P]``), in the order of the local halo ids.
    ``stats`` counts exchanges and bytes (forward and backward separately).
    """

    def __init__(self, send_index: torch.Tensor, send_counts: Sequence[int], recv_counts: Sequence[int],
                 num_owned: int, group=None):
        self.send_index = send_index.to(torch.int64)
        self.send_counts = [int(c) for c in send_counts]
        self.recv_counts = [int(c) for c in recv_counts]
        self.num_owned = int(num_owned)
        self.num_halo = sum(self.recv_counts)
        self.num_send = sum(self.send_counts)
        if self.num_send != self.send_index.numel():
            raise ValueError(f"send_counts add up to {self.num_send} but send_index has {self.send_index.numel()}")
        self.group = group
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"forward_exchanges": 0, "forward_bytes_sent": 0, "forward_bytes_received": 0,
                      "backward_exchanges": 0, "backward_bytes_sent": 0, "backward_bytes_received": 0}

    def to(self, device) -> "HaloPlan":
        p = HaloPlan(self.send_index.to(device), self.send_counts, self.recv_counts, self.num_owned, self.group)
        p.stats = self.stats
        return p

    def _a2a(self, out: torch.Tensor, inp: torch.Tensor, out_splits: List[int], in_splits: List[int],
             phase: str) -> None:
        s = self.stats
        row = (inp.size(1) if inp.dim() > 1 else 1) * inp.element_size()
        s[f"{phase}_exchanges"] += 1
        s[f"{phase}_bytes_sent"] += row * inp.size(0)
        s[f"{phase}_bytes_received"] += row * out.size(0)
        if world_size(self.group) > 1:
            dist.all_to_all_single(out, inp, out_splits, in_splits, group=self.group)

    def gather_halo(self, xs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Forward: ``[x_own; x_halo]`` (``[n_own + n_halo, ...]``) for each owned ``x``.

        One ``all_to_all_single`` per tensor, received straight into the halo rows
        of the result (no receive buffer, no copies of it); only one tensor's send
        buffer ``[S, width]`` exists at a time."""
        n_own, n_halo = self.num_owned, self.num_halo
        out = []
        for x in xs:
            ext = x.new_empty((n_own + n_halo,) + tuple(x.shape[1:]))
            ext[:n_own].copy_(x)
            send = x.reshape(n_own, -1).index_select(0, self.send_index)
            self._a2a(ext.view(n_own + n_halo, -1)[n_own:], send, self.recv_counts, self.send_counts, "forward")
            del send
            out.append(ext)
        return out

    def scatter_halo_grad(self, grads: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Backward: each ``[n_own + n_halo, ...]`` gradient -> ``[n_own, ...]`` with the
        halo rows' gradients sent back to (and accumulated by) their owners."""
        n_own = self.num_owned
        out = []
        for g in grads:
            f = g.reshape(g.size(0), -1).contiguous()
            back = f.new_empty((self.num_send, f.size(1)))
            self._a2a(back, f[n_own:], self.send_counts, self.recv_counts, "backward")
            own = torch.index_add(f[:n_own], 0, self.send_index, back)
            del back
            out.append(own.view((n_own,) + tuple(g.shape[1:])))
        return out


    def reduce_halo(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``[n_own + n_halo, ...]`` per-local-node partial values -> ``[n_own, ...]``: each
        owner combines its own rows with the halo rows the other ranks hold of its nodes
        (``op``: ``"sum"`` or ``"amax"``; not differentiable, see :func:`halo_reduce`)."""
        if op == "sum":
            return self.scatter_halo_grad([t])[0]
        n_own = self.num_owned
        f = t.reshape(t.size(0), -1).contiguous()
        back = f.new_empty((self.num_send, f.size(1)))
        self._a2a(back, f[n_own:], self.send_counts, self.recv_counts, "backward")
        own = f[:n_own].clone().index_reduce_(0, self.send_index, back, op, include_self=True)
        return own.view((n_own,) + tuple(t.shape[1:]))


class _HaloReduce(torch.autograd.Function):
    """Sum of every node's partial values over the ranks that hold it (the transpose of
    the halo exchange: its backward is the exchange of the owners' gradients)."""

    @staticmethod
    def forward(ctx, plan: HaloPlan, t):
        ctx.plan = plan
        return plan.reduce_halo(t, "sum")

    @staticmethod
    def backward(ctx, g):
        return None, ctx.plan.gather_halo([g.contiguous()])[0]


def halo_reduce(plan: HaloPlan, t: torch.Tensor) -> torch.Tensor:
    """``[n_own + n_halo, ...]`` partial sums -> ``[n_own, ...]`` totals (differentiable)."""
    if t.size(0) != plan.num_owned + plan.num_halo:
        raise ValueError(f"halo_reduce: {t.size(0)} rows, expected {plan.num_owned + plan.num_halo}")
    if torch.is_grad_enabled() and t.requires_grad:
        return _HaloReduce.apply(plan, t)
    return plan.reduce_halo(t, "sum")


class _GlobalMax(torch.autograd.Function):
    """The maximum of a tensor over all its elements on all ranks; the gradient goes to
    the maximal elements, split evenly among them wherever they are (as ``torch.max()``)."""

    @staticmethod
    def forward(ctx, t, group):
        m = t.max() if t.numel() else t.new_full((), float("-inf"))
        m = all_reduce_max(m.reshape(1).clone(), group).reshape(())
        ctx.group = group
        ctx.save_for_backward(t, m)
        return m

    @staticmethod
    def backward(ctx, g):
        t, m = ctx.saved_tensors
        hit = t == m
        v = torch.stack([g.reshape(()).to(torch.float64), hit.sum().to(torch.float64)])
        all_reduce_sum(v, ctx.group)
        return (hit.to(t.dtype) * (v[0] / v[1]).to(t.dtype)), None


def global_max(t: torch.Tensor, group=None) -> torch.Tensor:
    """``max`` over every element of ``t`` on every rank (differentiable like ``torch.max()``)."""
    return _GlobalMax.apply(t, group)


class _HaloExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: HaloPlan, *xs):
        ctx.plan = plan
        ctx.meta = [(x.shape, x.dtype, x.device) for x in xs]
        return tuple(plan.gather_halo(xs))

    @staticmethod
    def backward(ctx, *grads):
        plan = ctx.plan
        n = plan.num_owned + plan.num_halo
        gs = [torch.zeros((n,) + tuple(s[1:]), dtype=dt, device=dev) if g is None else g
              for g, (s, dt, dev) in zip(grads, ctx.meta)]
        return (None,) + tuple(plan.scatter_halo_grad(gs))


def halo_exchange(plan: HaloPlan, *xs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """``[x; halo rows of x]`` for each owned ``x`` (an ``all_to_all_single`` each);
    differentiable: the backward sends the halo rows' gradients to their owners."""
    for x in xs:
        if x.size(0) != plan.num_owned:
            raise ValueError(f"halo_exchange: a tensor has {x.size(0)} rows but this rank owns {plan.num_owned} nodes")
    if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
        return _HaloExchange.apply(plan, *xs)
    return tuple(plan.gather_halo(xs))


# --------------------------------------------------------------------------- replicated parameters
class _AllReduceGrad(torch.autograd.Function):
    """Identity forward; the backward sums the gradients over ranks (one all_reduce)."""

    @staticmethod
    def forward(ctx, group, *ps):
        ctx.group = group
        ctx.meta = [(p.shape, p.dtype, p.device) for p in ps]
        return tuple(p.view_as(p) for p in ps)

    @staticmethod
    def backward(ctx, *grads):
        gs = [torch.zeros(s, dtype=dt, device=dev) if g is None else g for g, (s, dt, dev) in zip(grads, ctx.meta)]
        flat = torch.cat([g.reshape(-1) for g in gs])
        all_reduce_sum(flat, ctx.group)
        out, a = [], 0
        for g in gs:
            out.append(flat[a:a + g.numel()].view_as(g))
            a += g.numel()
        return (None,) + tuple(out)


class _ShareGrad(torch.autograd.Function):
    """Identity forward; the backward divides the gradient by the number of ranks."""

    @staticmethod
    def forward(ctx, world, *ps):
        ctx.world = float(world)
        return tuple(p.view_as(p) for p in ps)

    @staticmethod
    def backward(ctx, *grads):
        return (None,) + tuple(None if g is None else g / ctx.world for g in grads)


def all_reduce_grad(params: Sequence[torch.Tensor], group=None) -> Tuple[torch.Tensor, ...]:
    """Aliases of ``params`` whose gradients are summed over ranks when autograd computes them."""
    return _AllReduceGrad.apply(group, *params)


def share_grad(params: Sequence[torch.Tensor], world: int) -> Tuple[torch.Tensor, ...]:
    """Aliases of ``params`` whose gradients are divided by ``world`` on the way back."""
    return _ShareGrad.apply(world, *params)
