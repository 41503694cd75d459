r"""GRAND: Graph Neural Diffusion (Chamberlain et al., ICML 2021).

A thin layer over :mod:`graphode.ops` (the graph maths) and
:mod:`graphode.solvers` (the time integration); it has no numerics of its own.

Model (``N`` nodes, ``F`` input features, ``d`` hidden, ``C`` classes)::

    x [N, F] -> dropout(input_dropout) -> Linear(F, d) -> [BatchNorm] -> x0 [N, d]
             -> [zero augmentation: cat(x0, 0) [N, 2d]]
             -> x(T), the solution of  dx/dt = f(x),  x(0) = x0  on [0, T]
             -> [drop augmentation] -> ReLU -> dropout(dropout) -> Linear(d, C) -> [N, C]

Vector field (α, β learnable scalars initialised to 0; the source term is optional):

.. math::  f(x) = \sigma(\alpha)\,(\bar A\,x - x) + \beta\,x_0

``Ā`` is the head-average of multi-head attention over the graph with self loops,
``Ā_ij = (1/H) Σ_h a_h(i, j)``, the score of ``j -> i`` between ``W_Q^h x_i`` and
``W_K^h x_j`` normalised over a group of edges (:func:`graphode.ops.edge_attention`):

* ``attention_score``: ``"scaled_dot"`` (``<q_i, k_j> / sqrt(d_k)``), ``"cosine"``,
  ``"pearson"`` or ``"exp_kernel"`` (``σ² exp(-|q_i - k_j|² / 2ℓ²)``, σ and ℓ learnable);
* ``attention_normalize``: ``"softmax"`` or ``"squareplus"`` (one global shift
  by the max score, ``(s + sqrt(s² + 4)) / 2``, divided by the group sum);
* ``attention_normalize_over``: ``"target"`` (each node's in-edges sum to one:
  ``Ā`` row-stochastic) or ``"source"`` (each node's out-edges sum to one:
  column-stochastic, mass-conserving).

``d_k = attention_dim / heads``; ``W_Q``, ``W_K`` are ``Linear(d, attention_dim)``
with weights initialised to the constant 1e-5 and PyTorch's default biases, so
training starts from near-uniform diffusion.  The GRAND authors' published
Cora / CiteSeer runs used squareplus over sources (their ``square_plus: true``,
``attention_norm_idx: 1``); the packaged configs carry their values, and
``docs/RESULTS.md`` lists every difference from their code.

Variants (``variant=``):

* ``"l"`` (GRAND-l): ``Ā`` is computed once per forward from ``x(0)`` and kept
  fixed during the solve, which is then linear: ``Āx`` is one :func:`graphode.ops.spmm`.
* ``"nl"`` (GRAND-nl): ``Ā(x(t))`` is recomputed at every evaluation, fused
  with the SpMM: :func:`graphode.ops.attention_diffusion`.
* ``"nl-rw"`` (GRAND-nl-rw): the graph is first rewired by GDC
  (:mod:`graphode.transforms`), then GRAND-nl with hard attention (below).
* ``"laplacian"``: constant diffusion, ``Ā`` the normalised adjacency with self
  loops of weight ``self_loop_weight`` (no attention).

Hard attention (``hard_attention=True``; the authors' ``hard_attention`` block,
always on for ``"nl-rw"``): at each training forward the head-mean attention at
``x(0)``, computed without gradient, keeps the edges strictly above its
``1 - attention_keep`` quantile; GRAND-l diffuses with those values renormalised
over the kept edges' groups (+1e-16), GRAND-nl recomputes its attention on the
kept edges.  Evaluation uses every edge.

Evaluation past T (``eval_time_factor``, the authors' ``earlystopxT`` test
integrator, dopri5 or rk4): in ``eval()`` mode the solve runs to
``eval_time_factor · T`` (at most ``eval_max_steps`` step attempts) and returns
the state there; the logits after every step attempt are kept in
:attr:`GRAND.eval_trace`, and the callback :class:`BestIntegrationTime` (carried
by the model, run by :func:`graphode.train.fit`) lets the best-validation time
of each epoch compete with the end time, as the authors' training loop did.

Gradients with the adjoint method reach every parameter: the vector field's
own parameters, and (GRAND-l) the fixed attention ``Ā`` and ``x0`` are passed
to :func:`graphode.solvers.odeint_adjoint` as ``adjoint_params`` (through
autograd aliases), so ``W_Q``, ``W_K`` and the encoder receive the adjoint's
gradient too.  The authors' adjoint lost them (``adjoint_attention_grad=False``
reproduces that).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..config import GRAND as GRAND_SCHEMA
from ..config import GRAND_VARIANTS, grand_tolerances
from ..graph import Graph

__all__ = [
    "GRAND",
    "GRANDFunc",
    "GraphAttention",
    "BestIntegrationTime",
    "MaxNFEError",
    "build_grand",
    "build_grand_l",
    "build_grand_nl",
    "build_grand_nl_rw",
    "build_grand_laplacian",
    "grand_kwargs",
    "solver_functions",
    "distributed_support",
    "published_accuracy",
]

VARIANTS = GRAND_VARIANTS
ATTENTION_SCORES = ops.reference.SCORES
ATTENTION_NORMALIZE = ops.reference.NORMALIZE
ATTENTION_NORMALIZE_OVER = ops.reference.NORMALIZE_OVER
# GRAND's defaults, for the class and for configs alike, are the GRAND config schema's
# (graphode.config.GRAND); tolerances follow the authors' atol = tol_scale 1e-7,
# rtol = tol_scale 1e-9.
_D = GRAND_SCHEMA.defaults()
_DEFAULT_RTOL, _DEFAULT_ATOL = grand_tolerances(_D["tol_scale"])


def solver_functions(graph=None):
    """``(odeint, odeint_adjoint, METHODS)`` used by GRAND (graphode's own solvers).

    The single import point of the ODE solvers in this module.  A distributed
    graph (:class:`graphode.distributed.DistGraph`) supplies its own ``odeint``
    and ``odeint_adjoint``: the same solvers with the error norm reduced over
    its ranks."""
    from ..solvers import METHODS, odeint, odeint_adjoint

    own = getattr(graph, "solver_functions", None) if graph is not None and not isinstance(graph, Graph) else None
    if own is not None:
        odeint, odeint_adjoint = own()
    return odeint, odeint_adjoint, METHODS


def published_accuracy(model: str, dataset: str, split: str) -> Optional[Dict[str, Any]]:
    """The GRAND paper's test accuracy for ``model`` on ``dataset`` under the table that
    ``split`` corresponds to (``grand`` / ``public``: Table 1, ``random``: Table 2), read from
    ``graphode/configs/papers/grand.yaml``: ``{"mean", "std", "table", "protocol"}``, or None."""
    import os

    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "papers",
                        "grand.yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    table = doc["protocol_table"].get(split)
    if table is None:
        return None
    v = doc["tables"][table]["numbers"].get(model, {}).get(dataset)
    if v is None:
        return None
    return {"mean": float(v[0]), "std": float(v[1]), "table": doc["tables"][table]["title"],
            "protocol": doc["tables"][table]["protocol"]}


class MaxNFEError(RuntimeError):
    """The vector field was evaluated more than ``max_nfe`` times in one solve."""


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")
    return value


# --------------------------------------------------------------------------- attention
class GraphAttention(nn.Module):
    r"""Multi-head attention coefficients over a graph's edges.

    ``q = W_Q x``, ``k = W_K x`` reshaped to ``[N, H, d_k]`` (head ``h`` takes the
    features ``h d_k .. (h+1) d_k - 1``); the score of edge ``j -> i`` is
    ``score(q_i, k_j)``, normalised by ``normalize`` over the edges sharing the
    ``normalize_over`` end (:func:`graphode.ops.edge_attention`).

    Args:
        dim: input feature size ``d``.
        heads: ``H``.
        attention_dim: total projection size; ``d_k = attention_dim // heads``.
        score, normalize, normalize_over: the attention options (see the module docstring).
        init_constant: constant initial value of the ``W_Q``/``W_K`` weights (None:
            PyTorch's default initialisation).  Biases keep PyTorch's default.
        key_bias: give ``W_K`` a bias (the authors' layer has one; with a softmax over
            targets it cancels and gets no gradient).
    """

    def __init__(self, dim: int, heads: int = 8, attention_dim: int = 128, score: str = "scaled_dot",
                 normalize: str = "softmax", normalize_over: str = "target",
                 init_constant: Optional[float] = 1e-5, key_bias: bool = True):
        super().__init__()
        self.score = _choice("attention_score", score, ATTENTION_SCORES)
        self.normalize = _choice("attention_normalize", normalize, ATTENTION_NORMALIZE)
        self.normalize_over = _choice("attention_normalize_over", normalize_over, ATTENTION_NORMALIZE_OVER)
        if attention_dim % heads != 0:
            raise ValueError(f"attention_dim ({attention_dim}) must be divisible by heads ({heads})")
        self.heads = int(heads)
        self.d_k = attention_dim // heads
        if score == "exp_kernel":  # created before W_Q / W_K, as the authors' layer
            self.output_var = nn.Parameter(torch.ones(1))
            self.lengthscale = nn.Parameter(torch.ones(1))
        self.W_Q = nn.Linear(dim, attention_dim)
        self.W_K = nn.Linear(dim, attention_dim, bias=bool(key_bias))
        if init_constant is not None:
            nn.init.constant_(self.W_Q.weight, init_constant)
            nn.init.constant_(self.W_K.weight, init_constant)

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

    def _options(self) -> Dict[str, Any]:
        kw: Dict[str, Any] = dict(score=self.score, normalize=self.normalize, normalize_over=self.normalize_over)
        if self.score == "scaled_dot":
            kw["scale"] = 1.0 / math.sqrt(self.d_k)
        elif self.score == "exp_kernel":
            kw["kernel_params"] = torch.cat([self.output_var, self.lengthscale])
        return kw

    def edge_attention(self, graph: Graph, x: torch.Tensor) -> torch.Tensor:
        """Attention ``[E, H]`` in the graph's edge order."""
        q, k = self.qk(x)
        return ops.edge_attention(graph, q, k, **self._options())

    def diffuse(self, graph: Graph, x: torch.Tensor, features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``Ā(x) features`` ``[N, F]`` (``features`` defaults to ``x``): the fused
        :func:`graphode.ops.attention_diffusion`."""
        q, k = self.qk(x)
        return ops.attention_diffusion(graph, q, k, x if features is None else features, **self._options())


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
        with ops.use_backend(self.backend) if self.backend is not None else contextlib.nullcontext():
            if self.mode == "fixed":
                ax = ops.spmm(self.graph, self.weight, x)
            else:
                ax = self.attention.diffuse(self.graph, x)
        f = torch.sigmoid(self.alpha_train) * (ax - x)
        if self.beta_train is not None:
            f = f + self.beta_train * self.x0
        return f


def distributed_support(variant: str, kwargs: Dict[str, Any],
                        check_method: Optional[Callable[[str], Any]] = None) -> Optional[str]:
    """Why GRAND with these :class:`GRAND` keyword arguments cannot run on a distributed
    graph (:class:`graphode.distributed.DistGraph`), or None when it can: every reduction
    must be over a target's in-edges or the rank's own nodes.  ``check_method``: the
    distributed solvers' check of a method name (raises ``ValueError``), which the caller
    supplies (a ``DistGraph`` has it; models do not import graphode.distributed)."""
    get = kwargs.get
    if variant == "nl-rw" or get("hard_attention"):
        return "GRAND-nl-rw / hard attention (GDC and the attention quantile need the whole graph)"
    if get("batch_norm"):
        return "batch_norm (its statistics are over all nodes)"
    if get("kinetic_energy") or get("jacobian_norm2"):
        return "the kinetic-energy / Jacobian regularisers"
    if check_method is not None:
        try:
            check_method(get("method", _D["method"]))
            check_method(get("adjoint_method") or get("method", _D["method"]))
        except ValueError as e:
            return str(e)
    return None


class _StepRecorder:
    """The vector field with torchdiffeq-style step callbacks that record the state after
    every step attempt of an evaluation solve (the authors' early-stop test integrator
    evaluates ``rk_state.y1`` after each attempt: the new state when accepted, the
    unchanged one when rejected).

    For an FSAL method (dopri5) the last stage of an attempt is evaluated at the step's
    end point and its input is the new state ``y1`` itself, so the accepted state is the
    last input seen.  For fixed-grid methods every step is kept."""

    def __init__(self, func, adaptive: bool):
        self.func = func
        self.adaptive = adaptive
        self.states: List[Tuple[float, torch.Tensor]] = []
        self.current: Optional[Tuple[float, torch.Tensor]] = None
        self._last: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._started = False
        if adaptive:
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject
        else:
            self.callback_step = self._fixed_step

    def __call__(self, t, x):
        self._last = (t, x)
        return self.func(t, x)

    def _accept(self, t0, y0, dt):
        t1 = float(t0) + float(dt)
        lt, y1 = self._last
        tol = 8 * torch.finfo(lt.dtype).eps * max(1.0, abs(t1))  # times reach f in the state's dtype
        if abs(float(lt) - t1) > tol:  # pragma: no cover - a non-FSAL tableau
            raise RuntimeError("eval_time_factor needs an FSAL adaptive method (dopri5) or a fixed grid (rk4)")
        self.current = (t1, y1)
        self.states.append(self.current)

    def _reject(self, t0, y0, dt):
        self.current = (float(t0), y0)
        self.states.append(self.current)

    def _fixed_step(self, t0, y0, dt):
        if self._started:  # the state at the start of a step is the previous step's result
            self.states.append((float(t0), y0))
        self._started = True


class BestIntegrationTime:
    """Training callback (carried by :class:`GRAND` when ``eval_time_factor`` is set): after
    each epoch's evaluation, the accuracies of the logits after every step attempt of the
    evaluation solve (:attr:`GRAND.eval_trace`) are computed; the first step with the best
    validation accuracy replaces the trainer's best if strictly better (after the end
    time's accuracies had their turn), as the authors' ``run_GNN`` loop does with their
    ``EarlyStopInt``.  ``trainer.best`` then also holds the ``time`` it was found at."""

    works_across_ranks = True  # its accuracies come from trainer.count_correct

    def __init__(self, model: "GRAND"):
        object.__setattr__(self, "_model", model)  # no reference cycle through state_dict

    def on_epoch_end(self, trainer, epoch: int, logs: Dict[str, float]) -> None:
        trace = self._model.eval_trace
        if not trace:
            return
        best = None
        for t, logits in trace:
            # counts from the trainer: summed over ranks when training across processes
            accs = [c / max(n, 1) for c, n in trainer.count_correct(logits.argmax(-1))]
            if best is None or accs[1] > best[2]:
                best = (t, *accs)
        t, tr, va, te = best
        logs["step_val_acc"], logs["step_test_acc"], logs["step_time"] = va, te, t
        if va > trainer.best["val_acc"]:
            trainer.best = {"epoch": epoch, "val_acc": va, "test_acc": te, "train_acc": tr, "time": t}
            trainer._bad_epochs = 0


# --------------------------------------------------------------------------- the model
class GRAND(nn.Module):
    """GRAND for node classification (see the module docstring for the maths).

    Args:
        in_features, num_classes: ``F`` and ``C``.
        graph: :class:`graphode.Graph` of the dataset (self loops are added when
            ``self_loop_weight > 0``).
        variant: ``"l"``, ``"nl"``, ``"nl-rw"`` or ``"laplacian"``.
        hidden_dim: ``d``.
        time: integration time ``T``.
        method: any :data:`graphode.solvers.METHODS` name (dopri5, rk4,
            explicit_adams, implicit_adams, implicit_euler, ...).
        step_size: for fixed-grid methods.
        rtol, atol: forward tolerances (adaptive methods).
        adjoint: solve the gradients with :func:`graphode.solvers.odeint_adjoint`.
        adjoint_method, adjoint_rtol, adjoint_atol, adjoint_step_size: of the backward solve.
        adjoint_attention_grad: with the adjoint, pass GRAND-l's fixed attention (and
            ``x0``) to the adjoint so that ``W_Q``, ``W_K`` (and the encoder through the
            source term) get its gradient; False reproduces the authors' adjoint, which
            differentiates only the vector field's own parameters.
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
        heads, attention_dim: attention (see :class:`GraphAttention`).
        attention_score, attention_normalize, attention_normalize_over, key_bias: the
            attention options (see :class:`GraphAttention` and the module docstring).
        input_dropout, dropout: dropout before the encoder / before the decoder.
        self_loop_weight: > 0 adds self loops (attention, like the authors' code,
            uses only their presence; the Laplacian variant uses the weight).
        source_term: include ``β x0``.
        detach_source: use ``x0`` detached from the encoder in the source term, as the
            authors' code does (``x0.clone().detach()``); False: the encoder also gets
            the source term's gradient.
        augment: Anode zero augmentation (doubles the state with zeros, dropped
            after the solve; a no-op for this vector field, kept for fidelity).
        batch_norm: ``BatchNorm1d(d)`` after the encoder (the authors' ``bn_in``).
        hard_attention, attention_keep: the authors' hard-attention block (see the
            module docstring; ``attention_keep`` is their ``att_samp_pct``); always on
            for ``"nl-rw"``.
        laplacian_normalize_over: the ``"laplacian"`` variant's normalisation of the
            adjacency (``"source"``: the authors' ``get_rw_adj``, column-stochastic).
        eval_time_factor, eval_max_steps: evaluation past ``T`` (the authors'
            ``earlystopxT`` and ``max_test_steps``; None: evaluate at ``T``).
        kinetic_energy, jacobian_norm2: coefficients of the regularisers
            (:mod:`graphode.regularizers`); the penalty of the last training forward
            is :meth:`regularization_loss`.
        max_nfe: raise :class:`MaxNFEError` past this many evaluations in one solve.
        max_num_steps: adaptive-solver step budget (raises ``MaxNumStepsError``).
        gdc: GRAND-nl-rw: keyword arguments of :func:`graphode.transforms.gdc`
            (None: no GDC step).
        backend: force an ops backend inside the vector field (None: automatic;
            the Jacobian regulariser needs double backward and uses "reference").

    Attributes:
        nfe: function evaluations of the last forward solve.
        nfe_backward: evaluations during the last backward (adjoint) solve.
        eval_trace: with ``eval_time_factor``, ``[(t, logits [N, C])]`` after every step
            attempt of the last evaluation solve (else None).
        callbacks: training callbacks :func:`graphode.train.fit` runs (``[BestIntegrationTime]``
            with ``eval_time_factor``).
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
        adjoint_attention_grad: bool = _D["adjoint_attention_grad"],
        solver_options: Optional[Dict[str, Any]] = None,
        semi_implicit: bool = _D["semi_implicit"],
        detach_source: bool = _D["detach_source"],
        heads: int = _D["heads"],
        attention_dim: int = _D["attention_dim"],
        attention_score: str = _D["attention_score"],
        attention_normalize: str = _D["attention_normalize"],
        attention_normalize_over: str = _D["attention_normalize_over"],
        key_bias: bool = _D["key_bias"],
        input_dropout: float = _D["input_dropout"],
        dropout: float = _D["dropout"],
        self_loop_weight: float = _D["self_loop_weight"],
        source_term: bool = _D["source_term"],
        augment: bool = _D["augment"],
        batch_norm: bool = _D["batch_norm"],
        hard_attention: bool = _D["hard_attention"],
        attention_keep: float = _D["attention_keep"],
        laplacian_normalize_over: str = _D["laplacian_normalize_over"],
        eval_time_factor: Optional[float] = _D["eval_time_factor"],
        eval_max_steps: int = _D["eval_max_steps"],
        kinetic_energy: float = _D["kinetic_energy"],
        jacobian_norm2: float = _D["jacobian_norm2"],
        max_nfe: Optional[int] = None,
        max_num_steps: Optional[int] = None,
        gdc: Optional[Dict[str, Any]] = None,
        backend: Optional[str] = None,
    ):
        super().__init__()
        _choice("GRAND variant", variant, VARIANTS)
        _, _, METHODS = solver_functions()
        for m in (method, adjoint_method):
            if m is not None and m not in METHODS:
                raise ValueError(f"unknown ODE method {m!r}; choose one of {sorted(METHODS)}")
        if not 0.0 < float(attention_keep) <= 1.0:
            raise ValueError(f"attention_keep must lie in (0, 1], got {attention_keep!r}")
        if eval_time_factor is not None:
            if not float(eval_time_factor) > 0:
                raise ValueError(f"eval_time_factor must be positive, got {eval_time_factor!r}")
            if method not in ("dopri5", "rk4"):
                raise ValueError(f"eval_time_factor (evaluation past T) supports method dopri5 or rk4, "
                                 f"as the authors' test integrator; got {method!r}")
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
        self.adjoint_attention_grad = bool(adjoint_attention_grad)
        self.solver_options = dict(solver_options or {})
        self.semi_implicit = bool(semi_implicit)
        self.detach_source = bool(detach_source)
        self.input_dropout = float(input_dropout)
        self.dropout = float(dropout)
        self.augment = bool(augment)
        self.hard_attention = bool(hard_attention) or variant == "nl-rw"
        self.attention_keep = float(attention_keep)
        self.eval_time_factor = None if eval_time_factor is None else float(eval_time_factor)
        self.eval_max_steps = int(eval_max_steps)
        self.max_num_steps = max_num_steps
        self.reg_names = [n for n, c in (("kinetic_energy", kinetic_energy), ("jacobian_norm2", jacobian_norm2))
                          if c]
        self.reg_coeffs = [float(c) for c in (kinetic_energy, jacobian_norm2) if c]
        if backend is None and jacobian_norm2:
            backend = "reference"  # the compiled ops have no double backward
        state_dim = self.hidden_dim * (2 if self.augment else 1)

        # ---- graph: [GDC] + self loops
        g = graph
        distributed = not isinstance(graph, Graph)
        if distributed:
            if getattr(graph, "__graphode_ops__", False) is not True:
                raise TypeError(f"graph must be a graphode.Graph or a graphode.distributed.DistGraph, "
                                f"got {type(graph).__name__}")
            why = distributed_support(variant, dict(
                method=method, adjoint_method=adjoint_method, attention_normalize=attention_normalize,
                attention_normalize_over=attention_normalize_over, laplacian_normalize_over=laplacian_normalize_over,
                batch_norm=batch_norm, hard_attention=hard_attention, eval_time_factor=eval_time_factor,
                kinetic_energy=kinetic_energy, jacobian_norm2=jacobian_norm2),
                check_method=getattr(graph, "check_method", None))
            if why is not None:
                raise ValueError(f"not supported on a distributed graph: {why}")
        if variant == "nl-rw" and gdc:
            from ..transforms import gdc as _gdc

            # graphode's gdc gives S with rows = targets (in-edges per node); the authors
            # aggregate into PyG's edge_index[0], i.e. along S's transpose: flip it.
            g = _gdc(g, **gdc)
            g = Graph.from_edge_index(g.edge_index.flip(0), g.num_nodes)
        # attention uses the structure only (GDC weights, like the authors', are not used)
        g = g.structure() if distributed else Graph.from_edge_index(g.edge_index, g.num_nodes)
        g = g.remove_self_loops()
        if self_loop_weight and self_loop_weight > 0:
            g = g.add_self_loops()
        self.graph = g
        self.self_loop_weight = float(self_loop_weight or 0.0)
        self._pruned: Optional[Graph] = None

        # ---- layers, created in the authors' order (encoder, decoder, batch norm, attention)
        self.encoder = nn.Linear(in_features, self.hidden_dim)
        self.decoder = nn.Linear(self.hidden_dim, num_classes)
        self.bn_in = nn.BatchNorm1d(self.hidden_dim) if batch_norm else None
        if variant == "laplacian":
            self.attention = None
            w = torch.ones(g.num_edges)
            if self.self_loop_weight:
                w = torch.where(g.row == g.col, torch.full_like(w, self.self_loop_weight), w)
            w = g.normalize_weights(w, _choice("laplacian_normalize_over", laplacian_normalize_over,
                                                ATTENTION_NORMALIZE_OVER))
            self.register_buffer("laplacian_weight", w, persistent=False)
        else:
            self.attention = GraphAttention(state_dim, heads, attention_dim, attention_score, attention_normalize,
                                            attention_normalize_over, key_bias=key_bias)
        mode = "attention" if variant in ("nl", "nl-rw") else "fixed"
        self.odefunc = GRANDFunc(g, mode, self.attention, source_term=source_term, max_nfe=max_nfe,
                                 backend=backend)
        self.nfe = 0
        self._nfe_after_forward = 0
        self._reg_states: Optional[Sequence[torch.Tensor]] = None
        self.eval_trace: Optional[List[Tuple[float, torch.Tensor]]] = None
        self.callbacks = [BestIntegrationTime(self)] if self.eval_time_factor is not None else []

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
            self.odefunc.graph = self.graph
            self._pruned = None
        return out

    # ------------------------------------------------------------------ hard attention
    @torch.no_grad()
    def sample_edges(self, x0: torch.Tensor) -> Tuple[Graph, torch.Tensor]:
        """The authors' hard attention: ``(kept graph, kept head-mean attention renormalised
        over each kept group, + 1e-16)``; edges are kept where the head-mean attention at
        ``x0`` (no gradient) is strictly above its ``1 - attention_keep`` quantile."""
        g = self.graph
        a = self.attention.edge_attention(g, x0).mean(1)
        threshold = torch.quantile(a, 1.0 - self.attention_keep)
        keep = a > threshold
        kept = Graph.from_edge_index(g.edge_index[:, keep], g.num_nodes)  # sorted subset: order kept
        w = kept.normalize_weights(a[keep], self.attention.normalize_over, eps=1e-16)
        self._pruned = kept
        return kept, w

    def rewire(self, x0: torch.Tensor) -> Graph:
        """GRAND-nl-rw: the graph of :meth:`sample_edges` (kept for inspection)."""
        return self.sample_edges(x0)[0]

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

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """``decoder(dropout(relu(z)))`` of a solver state ``z`` (augmentation dropped)."""
        if self.augment:
            z = z[:, : self.hidden_dim]
        return self.decoder(F.dropout(F.relu(z), self.dropout, self.training))

    def _eval_past_t(self, x0: torch.Tensor, kw: Dict[str, Any]) -> torch.Tensor:
        """The authors' early-stop test integration: solve to ``eval_time_factor · T`` (at most
        ``eval_max_steps`` attempts), keep the logits after each attempt in ``eval_trace``."""
        from ..solvers import MaxNumStepsError

        odeint, _, _ = solver_functions(self.graph)
        rec = _StepRecorder(self.odefunc, adaptive=self.method != "rk4")
        t_end = self.eval_time_factor * self.time
        t = torch.tensor([0.0, t_end], dtype=x0.dtype, device=x0.device)
        kw = dict(kw)
        if rec.adaptive:
            kw["options"] = {**kw["options"], "max_num_steps": self.eval_max_steps}
        try:
            z = odeint(rec, x0, t, **kw)[1]
        except MaxNumStepsError:  # the authors stop there and return the current state
            z = rec.current[1] if rec.current is not None else x0
        states = list(rec.states)
        if not rec.adaptive:
            states.append((t_end, z))
        self.eval_trace = [(tt, self._decode(y)) for tt, y in states]
        return z

    def _solve(self, x0: torch.Tensor) -> torch.Tensor:
        odeint, odeint_adjoint, _ = solver_functions(self.graph)
        func = self.odefunc
        t = torch.tensor([0.0, self.time], dtype=x0.dtype, device=x0.device)
        training_regs = self.training and bool(self.reg_names)
        self.eval_trace = None
        # hard attention: a sampled graph (and, for GRAND-l, its detached weights) in training
        sampled = None
        if self.hard_attention and self.training and self.attention is not None:
            sampled = self.sample_edges(x0)
        func.graph = self.graph if sampled is None else sampled[0]
        # Aliases: the vector field sees views of x0 / Ā so that the adjoint's
        # vector-Jacobian products stop there and autograd carries on from them.
        x0_alias = x0.detach() if self.detach_source else x0.view_as(x0)
        func.set_x0(x0_alias)
        extra: list = []
        if func.mode == "fixed":
            if self.variant == "laplacian":
                w = self.laplacian_weight
            elif sampled is not None:
                w = sampled[1]
            else:
                w = self.attention.edge_attention(self.graph, x0).mean(1)
            w_alias = w.view_as(w)
            func.set_fixed(w_alias)
            extra.append(w_alias)
        if func.beta_train is not None and not self.detach_source:
            extra.append(x0_alias)
        if not self.adjoint_attention_grad:
            extra = []
        func.nfe = 0
        opts = self._options(self.method, self.step_size)
        kw = dict(method=self.method, rtol=self.rtol, atol=self.atol, options=opts)
        if self.eval_time_factor is not None and not self.training:
            z = self._eval_past_t(x0, kw)
            self.nfe = func.nfe
            self._nfe_after_forward = func.nfe
            self._reg_states = None
            return z
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
        if self.bn_in is not None:
            x0 = self.bn_in(x0)
        if self.augment:
            x0 = torch.cat([x0, torch.zeros_like(x0)], dim=1)
        return self._decode(self._solve(x0))


# --------------------------------------------------------------------------- builders
_GDC_KEYS = {"gdc_method": "method", "ppr_alpha": "alpha", "heat_time": "t", "gdc_sparsification": "sparsification",
             "gdc_k": "k", "gdc_threshold": "eps", "gdc_avg_degree": "avg_degree"}
#: the authors' attention_type names that differ from graphode's
_SCORE_ALIASES = {"cosine_sim": "cosine"}
#: GRAND keyword arguments read from the config key of the same name
_DIRECT = ("hidden_dim", "time", "method", "step_size", "adjoint", "adjoint_method", "adjoint_step_size",
           "adjoint_attention_grad", "solver_options", "semi_implicit", "detach_source", "heads", "attention_dim",
           "attention_normalize", "attention_normalize_over", "key_bias", "input_dropout", "dropout",
           "self_loop_weight", "augment", "batch_norm", "hard_attention", "attention_keep", "laplacian_normalize_over",
           "eval_time_factor", "eval_max_steps", "kinetic_energy", "jacobian_norm2", "max_nfe", "max_num_steps")


def grand_kwargs(config: Dict[str, Any]) -> Dict[str, Any]:
    """:class:`GRAND` keyword arguments from a flat config (the packaged YAML keys); keys
    left out take the defaults of the GRAND config schema (:data:`graphode.config.GRAND`).

    Tolerances: ``atol = tol_scale * 1e-7``, ``rtol = tol_scale * 1e-9`` (the
    authors' convention; ``tol_scale_adjoint`` likewise for the backward, else the
    forward's), unless ``atol`` / ``rtol`` are given.  ``add_source`` is an alias of
    ``source_term``; ``attention_score: cosine_sim`` (the authors' name) of ``cosine``.
    """
    for old, new in (("attention_type", "attention_score"), ("rewire_keep", "attention_keep"),
                     ("attention_threshold", "attention_keep")):
        if old in config:
            raise ValueError(f"GRAND config key {old!r} is now {new!r} (see graphode/configs/grand/cora.yaml)")
    c = GRAND_SCHEMA.with_defaults(config)
    rtol, atol = grand_tolerances(c["tol_scale"])
    source = config.get("source_term")
    if source is None:
        source = config.get("add_source")
    kw: Dict[str, Any] = {k: c[k] for k in _DIRECT}
    kw.update(
        rtol=float(c["rtol"]) if c["rtol"] is not None else rtol,
        atol=float(c["atol"]) if c["atol"] is not None else atol,
        attention_score=_SCORE_ALIASES.get(c["attention_score"], c["attention_score"]),
        source_term=bool(c["source_term"] if source is None else source),
        backend=c["ops_backend"],
    )
    if c["tol_scale_adjoint"] is not None:  # else the adjoint uses the forward's tolerances
        adj_rtol, adj_atol = grand_tolerances(c["tol_scale_adjoint"])
    else:
        adj_rtol = adj_atol = None
    kw["adjoint_rtol"] = float(c["adjoint_rtol"]) if c["adjoint_rtol"] is not None else adj_rtol
    kw["adjoint_atol"] = float(c["adjoint_atol"]) if c["adjoint_atol"] is not None else adj_atol
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
