r"""GRAND: Graph Neural Diffusion (Chamberlain et al., ICML 2021).

A thin layer over :mod:`graphode.ops` (the graph maths) and
:mod:`graphode.solvers` (the time integration); it has no numerics of its own.

Model (``N`` nodes, ``F`` input features, ``d`` hidden, ``C`` classes)::

    x [N, F] -> dropout(input_dropout) -> Linear(F, d) -> x0 [N, d]
             -> [zero augmentation: cat(x0, 0) [N, 2d]]
             -> x(T), the solution of  dx/dt = f(x),  x(0) = x0  on [0, T]
             -> [drop augmentation] -> ReLU -> dropout(dropout) -> Linear(d, C) -> [N, C]

Vector field (α, β learnable scalars initialised to 0; the source term is optional):

.. math::  f(x) = \sigma(\alpha)\,(\bar A\,x - x) + \beta\,x_0

``Ā`` is the head-average of row-normalised multi-head attention over the
graph with self loops:

.. math::  \bar A_{ij} = \frac1H \sum_h \operatorname{softmax}_{j \in N(i)}
           \frac{\langle W_Q^h x_i, W_K^h x_j\rangle}{\sqrt{d_k}}

(``d_k = attention_dim / heads``; ``W_Q``, ``W_K`` are ``Linear(d, attention_dim)``
with weights initialised to the constant 1e-5, so training starts from
near-uniform diffusion.  For scaled-dot scores ``W_K`` has no bias: it would
add ``<q_i, b_K>`` to all in-edges of ``i`` alike, which the softmax cancels.)

Variants (``variant=``):

* ``"l"`` (GRAND-l): ``Ā`` is computed once per forward from ``x(0)``
  (:func:`graphode.ops.edge_attention`, head mean) and kept fixed during the
  solve, which is then linear: ``Āx`` is one :func:`graphode.ops.spmm`.
* ``"nl"`` (GRAND-nl): ``Ā(x(t))`` is recomputed at every evaluation, fused
  with the SpMM: :func:`graphode.ops.attention_diffusion`.
* ``"nl-rw"`` (GRAND-nl-rw): the graph is first rewired by GDC
  (:mod:`graphode.rewiring`); then, at every training forward (i.e. at the
  start of each epoch), attention is evaluated at ``x(0)`` and the edges whose
  head-mean attention falls below the threshold are dropped (self loops are
  always kept); the solve is GRAND-nl on the pruned graph.
* ``"laplacian"``: constant diffusion, ``Ā`` the row-normalised adjacency with
  self loops of weight ``self_loop_weight`` (no attention).

Gradients with the adjoint method reach every parameter: the vector field's
own parameters, and (GRAND-l) the fixed attention ``Ā`` and ``x0`` are passed
to :func:`graphode.solvers.odeint_adjoint` as ``adjoint_params`` (through
autograd aliases), so ``W_Q``, ``W_K`` and the encoder receive the adjoint's
gradient too (the authors' code lost them).

Attention kinds (``attention_type``): ``"scaled_dot"`` (default; the only one
the fused kernels implement), and, as in the authors' code, ``"cosine_sim"``,
``"pearson"`` and ``"exp_kernel"`` (``σ² exp(-||q_i - k_j||² / 2ℓ²)`` with
learnable σ, ℓ), computed per edge in PyTorch then normalised with a segment
softmax.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..config import ATTENTION_TYPES, GRAND_VARIANTS, grand_tolerances
from ..config import GRAND as GRAND_SCHEMA
from ..graph import Graph

__all__ = [
    "GRAND",
    "GRANDFunc",
    "GraphAttention",
    "MaxNFEError",
    "build_grand",
    "build_grand_l",
    "build_grand_nl",
    "build_grand_nl_rw",
    "build_grand_laplacian",
    "grand_kwargs",
    "solver_functions",
]

VARIANTS = GRAND_VARIANTS
# GRAND's defaults, for the class and for configs alike, are the GRAND config schema's.
_D = GRAND_SCHEMA.defaults()
_DEFAULT_RTOL, _DEFAULT_ATOL = grand_tolerances(_D["tol_scale"])


def solver_functions():
    """``(odeint, odeint_adjoint, METHODS)`` used by GRAND (graphode's own solvers).

    The single import point of the ODE solvers in this module."""
    from ..solvers import METHODS, odeint, odeint_adjoint

    return odeint, odeint_adjoint, METHODS


class MaxNFEError(RuntimeError):
    """The vector field was evaluated more than ``max_nfe`` times in one solve."""


# --------------------------------------------------------------------------- attention
class GraphAttention(nn.Module):
    r"""Multi-head attention coefficients over a graph's in-edges.

    ``q = W_Q x``, ``k = W_K x`` reshaped to ``[N, H, d_k]``; the score of edge
    ``j -> i`` is ``kind(q_i, k_j)`` and is normalised by a softmax over the
    in-edges of ``i`` (per head).

    Args:
        dim: input feature size ``d``.
        heads: ``H``.
        attention_dim: total projection size; ``d_k = attention_dim // heads``.
        kind: one of :data:`ATTENTION_TYPES`.
        init_constant: constant initial value of ``W_Q``/``W_K`` weights (None:
            PyTorch's default initialisation).
    """

    def __init__(self, dim: int, heads: int = 8, attention_dim: int = 128, kind: str = "scaled_dot",
                 init_constant: Optional[float] = 1e-5):
        super().__init__()
        if kind not in ATTENTION_TYPES:
            raise ValueError(f"unknown attention_type {kind!r}; choose one of {ATTENTION_TYPES}")
        if attention_dim % heads != 0:
            raise ValueError(f"attention_dim ({attention_dim}) must be divisible by heads ({heads})")
        self.heads = int(heads)
        self.d_k = attention_dim // heads
        self.kind = kind
        self.W_Q = nn.Linear(dim, attention_dim)
        # With scaled-dot scores a key bias adds <q_i, b_K>, constant over the
        # in-edges of i, which the softmax cancels: it would be a parameter that
        # never gets a gradient, so it is left out.
        self.W_K = nn.Linear(dim, attention_dim, bias=(kind != "scaled_dot"))
        if init_constant is not None:
            nn.init.constant_(self.W_Q.weight, init_constant)
            nn.init.constant_(self.W_K.weight, init_constant)
        if kind == "exp_kernel":
            self.output_var = nn.Parameter(torch.ones(1))
            self.lengthscale = nn.Parameter(torch.ones(1))

    def qk(self, x: torch.Tensor):
        """``(q, k)``, each ``[N, H, d_k]``: two matrix products whose outputs are
        contiguous, so the reshapes are views and the ops copy nothing.

        (One product with the concatenated weights, sliced into q and k, costs
        more than it saves: each slice must be made contiguous for the ops, and
        autograd's slice backward zero-fills an ``[N, 2 attention_dim]`` gradient
        per slice and adds them; on Cora that was ~3 ms per evaluation, more
        than the attention kernel's forward.)"""
        N = x.size(0)
        q = self.W_Q(x).view(N, self.heads, self.d_k)
        k = self.W_K(x).view(N, self.heads, self.d_k)
        return q, k

    def edge_attention(self, graph: Graph, x: torch.Tensor) -> torch.Tensor:
        """Attention ``[E, H]`` (graph's edge order), each target's in-edges summing to 1."""
        q, k = self.qk(x)
        if self.kind == "scaled_dot":
            return ops.edge_attention(graph, q, k, 1.0 / math.sqrt(self.d_k))
        qi = q.index_select(0, graph.row)
        kj = k.index_select(0, graph.col)
        if self.kind == "pearson":
            qi = qi - qi.mean(-1, keepdim=True)
            kj = kj - kj.mean(-1, keepdim=True)
        if self.kind in ("cosine_sim", "pearson"):
            s = F.cosine_similarity(qi, kj, dim=-1, eps=1e-5)
        else:  # exp_kernel
            s = self.output_var ** 2 * torch.exp(-(qi - kj).pow(2).sum(-1) / (2 * self.lengthscale ** 2))
        return ops.reference.segment_softmax(graph, s)

    def diffuse(self, graph: Graph, x: torch.Tensor, features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``Ā(x) features`` ``[N, F]`` (``features`` defaults to ``x``): the fused
        :func:`graphode.ops.attention_diffusion` for scaled-dot attention."""
        v = x if features is None else features
        if self.kind == "scaled_dot":
            q, k = self.qk(x)
            return ops.attention_diffusion(graph, q, k, v, 1.0 / math.sqrt(self.d_k))
        return ops.spmm(graph, self.edge_attention(graph, x).mean(1), v)


# --------------------------------------------------------------------------- vector field
class GRANDFunc(nn.Module):
    r"""The vector field ``f(t, x) = σ(α)(Ā x − x) + β x0`` (``x`` ``[N, d]``).

    ``mode="fixed"``: ``Ā`` given as per-edge weights ``[E]`` by :meth:`set_fixed`
    (GRAND-l, Laplacian); ``mode="attention"``: ``Ā = Ā(x)`` from ``attention``
    at each call (GRAND-nl).  ``x0`` is set by :meth:`set_x0` before a solve.
    Counts evaluations in ``nfe`` and raises :class:`MaxNFEError` past ``max_nfe``.
    """

    def __init__(self, graph: Graph, mode: str, attention: Optional[GraphAttention] = None,
                 source_term: bool = True, max_nfe: Optional[int] = None, backend: Optional[str] = None):
        super().__init__()
        if mode not in ("fixed", "attention"):
            raise ValueError(f"unknown mode {mode!r}")
        self.graph = graph
        self.mode = mode
        # Not registered as a submodule: the model owns the attention (one copy of
        # its parameters in state_dict); own_parameters() lists them for the adjoint.
        object.__setattr__(self, "attention", attention if mode == "attention" else None)
        self.alpha_train = nn.Parameter(torch.tensor(0.0))
        self.beta_train = nn.Parameter(torch.tensor(0.0)) if source_term else None
        self.max_nfe = max_nfe
        self.backend = backend
        self.weight: Optional[torch.Tensor] = None
        self.x0: Optional[torch.Tensor] = None
        self.nfe = 0

    def set_fixed(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def set_x0(self, x0: torch.Tensor) -> None:
        self.x0 = x0

    def own_parameters(self):
        """The parameters used inside :meth:`forward` (the adjoint differentiates these)."""
        ps = [self.alpha_train]
        if self.beta_train is not None:
            ps.append(self.beta_train)
        if self.attention is not None:
            ps.extend(self.attention.parameters())
        return ps

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.max_nfe is not None and self.nfe > self.max_nfe:
            raise MaxNFEError(f"GRAND's vector field exceeded max_nfe={self.max_nfe} evaluations")
        with ops.use_backend(self.backend) if self.backend is not None else _nullcontext():
            if self.mode == "fixed":
                ax = ops.spmm(self.graph, self.weight, x)
            else:
                ax = self.attention.diffuse(self.graph, x)
        f = torch.sigmoid(self.alpha_train) * (ax - x)
        if self.beta_train is not None:
            f = f + self.beta_train * self.x0
        return f


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


# --------------------------------------------------------------------------- the model
class GRAND(nn.Module):
    """GRAND for node classification (see the module docstring for the maths).

    Args:
        in_features, num_classes: ``F`` and ``C``.
        graph: :class:`graphode.Graph` of the dataset (without self loops needed;
            they are added when ``self_loop_weight > 0``).
        variant: ``"l"``, ``"nl"``, ``"nl-rw"`` or ``"laplacian"``.
        hidden_dim: ``d``.
        time: integration time ``T``.
        method: any :data:`graphode.solvers.METHODS` name (dopri5, rk4,
            explicit_adams, implicit_adams, implicit_euler, ...).
        step_size: for fixed-grid methods.
        rtol, atol: forward tolerances (adaptive methods).
        adjoint: solve the gradients with :func:`graphode.solvers.odeint_adjoint`.
        adjoint_method, adjoint_rtol, adjoint_atol, adjoint_step_size: of the backward solve.
        solver_options: extra options for the method (e.g. ``{"linear_solver": "cg",
            "symmetric": True}`` for ``implicit_euler``; GMRES by default, as Ā is
            not symmetric).
        semi_implicit: for ``implicit_euler`` / ``crank_nicolson``, give the solver the
            linear operator ``L_k = σ(α)(Ā_k − I)`` (plus the source term, through the
            constant state ``x0``), so that each step is one Krylov solve of
            ``(I − τ L_k) x_{k+1} = x_k`` with exact matrix–vector products (the
            paper's scheme; for GRAND-nl ``Ā`` is frozen at ``x_k`` over the step).
            False: Newton–Krylov on ``f`` with JVPs (finite differences with the
            compiled ops, which lack forward-mode AD).  Regularisers use Newton–Krylov.
        heads, attention_dim, attention_type: attention (see :class:`GraphAttention`).
        input_dropout, dropout: dropout before the encoder / before the decoder.
        self_loop_weight: > 0 adds self loops (attention, like the authors' code,
            uses only their presence; the Laplacian variant uses the weight).
        source_term: include ``β x0``.
        detach_source: use ``x0`` detached from the encoder in the source term, as the
            authors' code does (``x0.clone().detach()``); default False (the encoder
            also gets the source term's gradient).
        augment: Anode zero augmentation (doubles the state with zeros, dropped
            after the solve; a no-op for this vector field, kept for fidelity).
        kinetic_energy, jacobian_norm2: coefficients of the regularisers
            (:mod:`graphode.regularizers`); the penalty of the last training forward
            is :meth:`regularization_loss`.
        max_nfe: raise :class:`MaxNFEError` past this many evaluations in one solve.
        max_num_steps: adaptive-solver step budget (raises ``MaxNumStepsError``).
        rewire_keep: GRAND-nl-rw: fraction of (non-self-loop) edges kept by attention
            thresholding (the threshold is the ``1 - rewire_keep`` quantile).
        attention_threshold: GRAND-nl-rw: absolute threshold instead of ``rewire_keep``.
        gdc: GRAND-nl-rw: keyword arguments of :func:`graphode.rewiring.gdc`
            (None: no GDC step).
        backend: force an ops backend inside the vector field (None: automatic;
            the Jacobian regulariser needs double backward and uses "reference").

    Attributes:
        nfe: function evaluations of the last forward solve.
        nfe_backward: evaluations during the last backward (adjoint) solve.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        graph: Graph,
        *,
        variant: str = _D["variant"],
        hidden_dim: int = _D["hidden_dim"],
        time: float = _D["time"],
        method: str = _D["method"],
        step_size: float = _D["step_size"],
        rtol: float = _DEFAULT_RTOL,
        atol: float = _DEFAULT_ATOL,
        adjoint: bool = _D["adjoint"],
        adjoint_method: Optional[str] = None,
        adjoint_rtol: Optional[float] = None,
        adjoint_atol: Optional[float] = None,
        adjoint_step_size: Optional[float] = None,
        solver_options: Optional[Dict[str, Any]] = None,
        semi_implicit: bool = _D["semi_implicit"],
        detach_source: bool = _D["detach_source"],
        heads: int = _D["heads"],
        attention_dim: int = _D["attention_dim"],
        attention_type: str = _D["attention_type"],
        input_dropout: float = _D["input_dropout"],
        dropout: float = _D["dropout"],
        self_loop_weight: float = _D["self_loop_weight"],
        source_term: bool = _D["source_term"],
        augment: bool = _D["augment"],
        kinetic_energy: float = _D["kinetic_energy"],
        jacobian_norm2: float = _D["jacobian_norm2"],
        max_nfe: Optional[int] = None,
        max_num_steps: Optional[int] = None,
        rewire_keep: float = _D["rewire_keep"],
        attention_threshold: Optional[float] = None,
        gdc: Optional[Dict[str, Any]] = None,
        backend: Optional[str] = None,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown GRAND variant {variant!r}; choose one of {VARIANTS}")
        _, _, METHODS = solver_functions()
        for m in (method, adjoint_method):
            if m is not None and m not in METHODS:
                raise ValueError(f"unknown ODE method {m!r}; choose one of {sorted(METHODS)}")
        self.variant = variant
        self.hidden_dim = int(hidden_dim)
        self.time = float(time)
        self.method = method
        self.step_size = float(step_size)
        self.rtol, self.atol = float(rtol), float(atol)
        self.adjoint = bool(adjoint)
        self.adjoint_method = adjoint_method or method
        self.adjoint_rtol = float(adjoint_rtol) if adjoint_rtol is not None else self.rtol
        self.adjoint_atol = float(adjoint_atol) if adjoint_atol is not None else self.atol
        self.adjoint_step_size = float(adjoint_step_size) if adjoint_step_size is not None else self.step_size
        self.solver_options = dict(solver_options or {})
        self.semi_implicit = bool(semi_implicit)
        self.detach_source = bool(detach_source)
        self.input_dropout = float(input_dropout)
        self.dropout = float(dropout)
        self.augment = bool(augment)
        self.max_num_steps = max_num_steps
        self.rewire_keep = float(rewire_keep)
        self.attention_threshold = attention_threshold
        self.reg_names = [n for n, c in (("kinetic_energy", kinetic_energy), ("jacobian_norm2", jacobian_norm2))
                          if c]
        self.reg_coeffs = [float(c) for c in (kinetic_energy, jacobian_norm2) if c]
        if backend is None and jacobian_norm2:
            backend = "reference"  # the compiled ops have no double backward
        state_dim = self.hidden_dim * (2 if self.augment else 1)

        # ---- graph: [GDC] + self loops
        g = graph
        if variant == "nl-rw" and gdc:
            from ..rewiring import gdc as _gdc

            g = _gdc(g, **gdc)
        # attention uses the structure only (GDC weights, like the authors', are not used)
        g = Graph.from_edge_index(g.edge_index, g.num_nodes).remove_self_loops()
        if self_loop_weight and self_loop_weight > 0:
            g = g.add_self_loops()
        self.graph = g
        self.self_loop_weight = float(self_loop_weight or 0.0)
        self._pruned: Optional[Graph] = None

        # ---- layers
        self.encoder = nn.Linear(in_features, self.hidden_dim)
        self.decoder = nn.Linear(self.hidden_dim, num_classes)
        if variant == "laplacian":
            self.attention = None
            w = torch.ones(g.num_edges)
            if self.self_loop_weight:
                w = torch.where(g.row == g.col, torch.full_like(w, self.self_loop_weight), w)
            self.register_buffer("laplacian_weight", g.row_normalize(w), persistent=False)
        else:
            self.attention = GraphAttention(state_dim, heads, attention_dim, attention_type)
        mode = "attention" if variant in ("nl", "nl-rw") else "fixed"
        self.odefunc = GRANDFunc(g, mode, self.attention, source_term=source_term, max_nfe=max_nfe,
                                 backend=backend)
        self.nfe = 0
        self._nfe_after_forward = 0
        self._reg_states: Optional[Sequence[torch.Tensor]] = None

    # ------------------------------------------------------------------ bookkeeping
    @property
    def nfe_backward(self) -> int:
        return self.odefunc.nfe - self._nfe_after_forward

    def regularization_loss(self) -> Optional[torch.Tensor]:
        """``Σ_k c_k mean(r_k(T))`` of the last training forward (None without regularisers)."""
        if not self.reg_names or self._reg_states is None:
            return None
        return sum(c * r.mean() for c, r in zip(self.reg_coeffs, self._reg_states))

    def _apply(self, fn, *args, **kwargs):
        # keep the graphs on the module's device
        out = super()._apply(fn, *args, **kwargs)
        dev = self.encoder.weight.device
        if self.graph.device != dev:
            self.graph = self.graph.to(dev)
            self.odefunc.graph = self.graph if self._pruned is None else self._pruned.to(dev)
            if self._pruned is not None:
                self._pruned = self._pruned.to(dev)
        return out

    # ------------------------------------------------------------------ rewiring
    @torch.no_grad()
    def rewire(self, x0: torch.Tensor) -> Graph:
        """GRAND-nl-rw: drop the edges whose head-mean attention at ``x0`` is below the
        threshold (self loops kept); returns and installs the pruned graph."""
        g = self.graph
        a = self.attention.edge_attention(g, x0).mean(1)
        loop = g.row == g.col
        if self.attention_threshold is not None:
            thr = float(self.attention_threshold)
            keep = a >= thr
        else:
            cand = a[~loop]
            if cand.numel() == 0 or self.rewire_keep >= 1.0:
                keep = torch.ones_like(loop)
            else:
                thr = torch.quantile(cand.float(), 1.0 - self.rewire_keep)
                keep = a >= thr
        keep = keep | loop
        ei = g.edge_index[:, keep]
        self._pruned = Graph.from_edge_index(ei, g.num_nodes)
        self.odefunc.graph = self._pruned
        return self._pruned

    # ------------------------------------------------------------------ solve
    def _options(self, method: str, step_size: float) -> Dict[str, Any]:
        _, _, METHODS = solver_functions()
        allowed = METHODS[method].options
        opts = {}
        if "step_size" in allowed:
            opts["step_size"] = step_size
        if self.max_num_steps is not None and "max_num_steps" in allowed:
            opts["max_num_steps"] = int(self.max_num_steps)
        if method in ("implicit_euler", "crank_nicolson") and self.odefunc.backend != "reference":
            # forward-mode AD is not implemented by the compiled ops: finite-difference JVPs
            if ops.resolve_backend(self.odefunc.backend, self.encoder.weight.device) != "reference":
                opts.setdefault("jvp", "fd")
        opts.update({k: v for k, v in self.solver_options.items() if k in allowed})
        return opts

    def _semi_implicit_operator(self, d: int, source: bool):
        """``L(t, y_k)`` for the θ-methods' operator form, on the state ``[x | s]``
        (``s = x0``, constant) when there is a source term:

        ``L_k [vx | vs] = [σ(α)(Ā_k vx − vx) + β vs | 0]``, with ``Ā_k`` the fixed
        attention (GRAND-l) or ``Ā(x_k)`` frozen over the step (GRAND-nl), so a step
        solves ``(I − τ L_k) y_{k+1} = y_k`` exactly: the paper's implicit scheme."""
        func = self.odefunc

        def operator(t, yk):
            if func.mode == "fixed":
                w = func.weight
            else:
                w = self.attention.edge_attention(func.graph, yk[:, :d]).mean(1)
            a = torch.sigmoid(func.alpha_train)

            def matvec(v):
                func.nfe += 1
                vx = v[:, :d]
                out = a * (ops.spmm(func.graph, w, vx) - vx)
                if source:
                    out = torch.cat([out + func.beta_train * v[:, d:], torch.zeros_like(vx)], dim=1)
                return out

            return matvec

        def field(t, y):  # the same vector field on [x | s] (for solver internals)
            if not source:
                return func(t, y)
            fx = func(t, y[:, :d])
            return torch.cat([fx, torch.zeros_like(fx)], dim=1)

        return operator, field

    def _solve(self, x0: torch.Tensor) -> torch.Tensor:
        odeint, odeint_adjoint, _ = solver_functions()
        func = self.odefunc
        t = torch.tensor([0.0, self.time], dtype=x0.dtype, device=x0.device)
        training_regs = self.training and bool(self.reg_names)
        # Aliases: the vector field sees views of x0 / Ā so that the adjoint's
        # vector-Jacobian products stop there and autograd carries on from them.
        x0_alias = x0.detach() if self.detach_source else x0.view_as(x0)
        func.set_x0(x0_alias)
        extra: list = []
        if func.mode == "fixed":
            if self.variant == "laplacian":
                w = self.laplacian_weight
            else:
                w = self.attention.edge_attention(self.graph, x0).mean(1)
            w_alias = w.view_as(w)
            func.set_fixed(w_alias)
            extra.append(w_alias)
        if func.beta_train is not None and not self.detach_source:
            extra.append(x0_alias)
        func.nfe = 0
        opts = self._options(self.method, self.step_size)
        kw = dict(method=self.method, rtol=self.rtol, atol=self.atol, options=opts)
        semi = (self.semi_implicit and self.method in ("implicit_euler", "crank_nicolson")
                and not training_regs)
        if semi:
            if self.adjoint and torch.is_grad_enabled():
                raise ValueError(
                    "adjoint=True with the semi-implicit operator form is not supported: the implicit "
                    "steps already differentiate by the implicit function theorem (set adjoint: false), "
                    "or set semi_implicit: false for Newton-Krylov steps")
            d = x0.size(1)
            source = func.beta_train is not None
            operator, field = self._semi_implicit_operator(d, source)
            opts["operator"] = operator
            opts.pop("jvp", None)
            y0 = torch.cat([x0, x0_alias], dim=1) if source else x0
            out = odeint(field, y0, t, **kw)
            z = out[1][:, :d]
            self.nfe = func.nfe
            self._nfe_after_forward = func.nfe
            self._reg_states = None
            return z
        if training_regs:
            from ..regularizers import RegularizedFunc

            f = RegularizedFunc(func, self.reg_names)
            f.new_probe(x0)
            y0 = f.initial_state(x0)
        else:
            f, y0 = func, x0
        if self.adjoint and torch.is_grad_enabled():
            params = [p for p in func.own_parameters()] + [e for e in extra if e.requires_grad]
            out = odeint_adjoint(
                f, y0, t, adjoint_params=tuple(params), adjoint_method=self.adjoint_method,
                adjoint_rtol=self.adjoint_rtol, adjoint_atol=self.adjoint_atol,
                adjoint_options=self._options(self.adjoint_method, self.adjoint_step_size), **kw)
        else:
            out = odeint(f, y0, t, **kw)
        self.nfe = func.nfe
        self._nfe_after_forward = func.nfe
        if training_regs:
            self._reg_states = [r[1] for r in out[1:]]
            return out[0][1]
        self._reg_states = None
        return out[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``Linear(dropout(x))`` ``[N, F] -> [N, d]``.

        Sparse inputs (at most 10% non-zeros, e.g. bag-of-words features that do
        not require grad) take a sparse path: dropout drawn on the non-zeros only
        (zeros stay zero either way, so ``dropout(x)`` has the same distribution)
        and a sparse-dense product, ~10x cheaper on Cora than dense dropout
        over all ``N x F`` entries plus a dense product."""
        sp = None if x.requires_grad else self._sparse_input(x)
        if sp is None:
            return self.encoder(F.dropout(x, self.input_dropout, self.training))
        idx, vals = sp
        if self.training and self.input_dropout > 0:
            vals = F.dropout(vals, self.input_dropout, True)
        S = torch.sparse_coo_tensor(idx, vals, x.shape, is_coalesced=True, check_invariants=False)
        return torch.sparse.mm(S, self.encoder.weight.t()) + self.encoder.bias

    def _sparse_input(self, x: torch.Tensor):
        key = (x.data_ptr(), x._version, tuple(x.shape), x.dtype, x.device)
        cache = self.__dict__.get("_sparse_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        sp = None
        if x.dim() == 2 and x.is_floating_point() and x.layout == torch.strided and x.numel():
            nz = x != 0
            if int(nz.sum()) <= 0.1 * x.numel():
                idx = nz.nonzero().t().contiguous()
                sp = (idx, x[idx[0], idx[1]])
        self.__dict__["_sparse_cache"] = (key, sp)
        return sp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, F]`` node features -> ``[N, C]`` logits."""
        x0 = self.encode(x)
        if self.augment:
            x0 = torch.cat([x0, torch.zeros_like(x0)], dim=1)
        if self.variant == "nl-rw" and (self.training or self._pruned is None):
            self.rewire(x0)
        z = self._solve(x0)
        if self.augment:
            z = z[:, : self.hidden_dim]
        z = F.relu(z)
        z = F.dropout(z, self.dropout, self.training)
        return self.decoder(z)


# --------------------------------------------------------------------------- builders
_GDC_KEYS = {"gdc_method": "method", "ppr_alpha": "alpha", "heat_time": "t", "gdc_sparsification": "sparsification",
             "gdc_k": "k", "gdc_threshold": "eps", "gdc_avg_degree": "avg_degree"}


def grand_kwargs(config: Dict[str, Any]) -> Dict[str, Any]:
    """:class:`GRAND` keyword arguments from a flat config (the packaged YAML keys); keys
    left out take the defaults of the GRAND config schema (:data:`graphode.config.GRAND`).

    Tolerances: ``atol = tol_scale * 1e-7``, ``rtol = tol_scale * 1e-9`` (the
    authors' convention; ``tol_scale_adjoint`` likewise for the backward), unless
    ``atol`` / ``rtol`` are given.  ``add_source`` is an alias of ``source_term``.
    """
    c = GRAND_SCHEMA.with_defaults(config)
    rtol, atol = grand_tolerances(c["tol_scale"])
    ts_adj = c["tol_scale_adjoint"] if c["tol_scale_adjoint"] is not None else c["tol_scale"]
    adj_rtol, adj_atol = grand_tolerances(ts_adj)
    source = config.get("source_term")
    if source is None:
        source = config.get("add_source")
    kw: Dict[str, Any] = {
        "hidden_dim": int(c["hidden_dim"]),
        "time": float(c["time"]),
        "method": c["method"],
        "step_size": float(c["step_size"]),
        "rtol": float(c["rtol"]) if c["rtol"] is not None else rtol,
        "atol": float(c["atol"]) if c["atol"] is not None else atol,
        "adjoint": bool(c["adjoint"]),
        "adjoint_method": c["adjoint_method"],
        "adjoint_rtol": float(c["adjoint_rtol"]) if c["adjoint_rtol"] is not None else adj_rtol,
        "adjoint_atol": float(c["adjoint_atol"]) if c["adjoint_atol"] is not None else adj_atol,
        "adjoint_step_size": c["adjoint_step_size"],
        "solver_options": c["solver_options"],
        "semi_implicit": bool(c["semi_implicit"]),
        "detach_source": bool(c["detach_source"]),
        "heads": int(c["heads"]),
        "attention_dim": int(c["attention_dim"]),
        "attention_type": c["attention_type"],
        "input_dropout": float(c["input_dropout"]),
        "dropout": float(c["dropout"]),
        "self_loop_weight": float(c["self_loop_weight"]),
        "source_term": bool(c["source_term"] if source is None else source),
        "augment": bool(c["augment"]),
        "kinetic_energy": float(c["kinetic_energy"]),
        "jacobian_norm2": float(c["jacobian_norm2"]),
        "max_nfe": c["max_nfe"],
        "max_num_steps": c["max_num_steps"],
        "rewire_keep": float(c["rewire_keep"]),
        "attention_threshold": c["attention_threshold"],
        "backend": c["ops_backend"],
    }
    if c["gdc"]:  # GDC rewiring (used by GRAND-nl-rw only); gdc: false turns it off
        kw["gdc"] = {v: c[k] for k, v in _GDC_KEYS.items() if c[k] is not None}
    else:
        kw["gdc"] = None
    return kw


def build_grand(dataset, config: Dict[str, Any], variant: Optional[str] = None) -> GRAND:
    """Build :class:`GRAND` for a :class:`graphode.datasets.NodeDataset` from a flat config.

    ``variant`` defaults to ``config["variant"]`` (``"l"``); the config's ``model``
    key, when present, must agree with it (no silent fallback to another model).
    """
    v = variant or config.get("variant") or _D["variant"]
    name = config.get("model")
    if name is not None and str(name).startswith("grand") and name != f"grand-{v}":
        raise ValueError(f"the config names model {name!r} but the builder makes 'grand-{v}'; "
                         f"set config['model'] to the model you mean to run")
    return GRAND(dataset.num_features, dataset.num_classes, dataset.graph, variant=v, **grand_kwargs(config))


def build_grand_l(dataset, config: Dict[str, Any]) -> GRAND:
    """GRAND-l (attention fixed from x(0))."""
    return build_grand(dataset, config, "l")


def build_grand_nl(dataset, config: Dict[str, Any]) -> GRAND:
    """GRAND-nl (attention recomputed at every evaluation)."""
    return build_grand(dataset, config, "nl")


def build_grand_nl_rw(dataset, config: Dict[str, Any]) -> GRAND:
    """GRAND-nl-rw (GDC rewiring, then attention thresholding each epoch)."""
    return build_grand(dataset, config, "nl-rw")


def build_grand_laplacian(dataset, config: Dict[str, Any]) -> GRAND:
    """Constant-Laplacian diffusion (no attention), the paper's baseline of Figure 4."""
    return build_grand(dataset, config, "laplacian")
