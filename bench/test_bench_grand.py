"""GRAND train step on Cora: graphode against the GRAND authors' model and the composition.

    .venv/bin/python -m pytest bench/test_bench_grand.py --benchmark-only -q

Models: GRAND-l and GRAND-nl with the authors' Cora settings (dopri5 at their
tolerances, T = 18.29, hidden 80, 8 heads, attention dim 128, self loops, source
term, input dropout 0.5): when the parity reference is in the checkout, the
authors' ``best_params_dict`` entry (``authors_opt("Cora")``, GRAND-l = their
laplacian function with the attention block, GRAND-nl = the transformer function
with the constant block) and graphode's config mapped from it
(``graphode_config``), else graphode's packaged Cora config
(``graphode/configs/grand/cora.yaml``, the same settings).  Providers, from
identical weights:

* ``graphode``: the automatic backend (graphode's C++ kernels when built);
* ``graphode-reference-ops``: the same model under
  ``graphode.ops.use_backend("reference")`` (the PyG recipe, for contrast);
* ``authors``: a faithful re-implementation of the authors' model on torchdiffeq
  + PyG (the parity reference of ``tests/parity``, issue #13), built with the
  same config and loaded with the same weights -- the peer of the goal.  Skipped,
  saying so, when that reference is not in this checkout.

Modes: ``fwd`` (a training-mode forward and the loss under ``no_grad``),
``bwd`` (the loss's gradients w.r.t. all parameters; forward outside the
timing, ``retain_graph=True``), ``full`` (one train step: forward,
cross-entropy on the 140 training nodes, backward, Adamax step).

Correctness first, before any optimizer step: graphode's first loss and
gradients agree with graphode-reference-ops' (same dropout draws; relative 1e-4
and 1e-3); the authors' model's loss and the gradients of every shared parameter
agree with graphode's with dropout off (their torchdiffeq differentiates its
first step size; that is switched off for the check only, as in the parity
suite).  The authors' model is timed as their code runs it.  Then, for every provider
alike: one warm-up call, ``ROUNDS`` timed calls, the median.  Peak memory: one
train step per provider in a fresh subprocess (peak RSS above the RSS before).
Goal (GRAND-l): train step >= 5x the authors' formulation with <= 1/2 of its
memory; ``GRAPHODE_BENCH_STRICT=1`` asserts it.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import _benchutil as bu
from graphode import ops

ROUNDS = int(os.environ.get("GRAPHODE_BENCH_ROUNDS", bu.pick("5", "1")))
STRICT = os.environ.get("GRAPHODE_BENCH_STRICT", "0") == "1"
MODELS = ("grand-l", "grand-nl")
PROVIDERS = ("graphode", "graphode-reference-ops", "authors")
MODES = ("fwd", "bwd", "full")
GOAL_SPEED, GOAL_MEM = 5.0, 2.0
MEM_TIMEOUT = float(os.environ.get("GRAPHODE_BENCH_MEM_TIMEOUT", "900"))

pytestmark = pytest.mark.usefixtures("bench_threads")


def _cora():
    from graphode.datasets import load_dataset

    return load_dataset("cora")


def _config(model):
    from graphode.train import load_config

    cfg = load_config(None, model, "cora")
    cfg["model"] = model  # the packaged Cora config is GRAND-l's; GRAND-nl runs with the same settings
    if bu.smoke():  # smallest: a short fixed-grid solve
        cfg.update(method="rk4", step_size=1.0, time=1.0)
    return cfg


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY = os.path.join(ROOT, "tests", "parity", "authors_grand.py")
#: graphode's GRAND variant -> the authors' ODE function and block
AUTHORS_VARIANT = {"grand-l": dict(function="laplacian", block="attention"),
                   "grand-nl": dict(function="transformer", block="constant")}
NO_AUTHORS = "the parity reference of the authors' model (tests/parity/authors_grand.py, issue #13) is not in this checkout"


def authors_module():
    """``tests/parity/authors_grand.py`` (the faithful re-implementation of the authors'
    GRAND on torchdiffeq), loaded by path, or None when this checkout has none."""
    name = "_graphode_parity_authors_grand"
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.exists(PARITY):
        return None
    spec = importlib.util.spec_from_file_location(name, PARITY)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _authors_opt(A, model):
    opt = A.authors_opt("Cora", **AUTHORS_VARIANT[model])
    if bu.smoke():
        opt.update(method="rk4", step_size=1.0, time=1.0)
    return opt


_setup: dict = {}
_check_copies: dict = {}


def setup(model):
    """(dataset, config, {provider: (model, optimizer, backend) or a reason to skip})."""
    if model not in _setup:
        from graphode.models import build
        from graphode.train import make_optimizer

        ds = _cora()
        A = authors_module()
        theirs = NO_AUTHORS
        if A is not None:
            opt = _authors_opt(A, model)
            cfg = A.graphode_config(opt)
            torch.manual_seed(0)
            net = A.AuthorsGNN(opt, ds.num_features, ds.num_classes, ds.graph.edge_index.flip(0), ds.num_nodes)
            net.set_data(dict(y=ds.y, train_mask=ds.train_mask, val_mask=ds.val_mask, test_mask=ds.test_mask))
            base = build(cfg["model"], ds, cfg)
            A.copy_weights(net, base)
            params = [p for p in net.parameters() if p.requires_grad]
            theirs = (net, A._optimizer(opt["optimizer"], params, opt["lr"], opt["decay"]), "authors")
            # copies with dropout off for the check, taken before any forward (a module that has
            # run holds non-leaf tensors, which deepcopy refuses)
            _check_copies[model] = (copy.deepcopy(net), copy.deepcopy(base))
        else:
            cfg = _config(model)
            torch.manual_seed(0)
            base = build(model, ds, cfg)
        out = {"graphode": (base, make_optimizer(base.parameters(), cfg), None)}
        ref = copy.deepcopy(base)
        out["graphode-reference-ops"] = (ref, make_optimizer(ref.parameters(), cfg), "reference")
        out["authors"] = theirs
        _setup[model] = (ds, cfg, out)
    return _setup[model]


def _loss(m, ds, backend):
    torch.manual_seed(0)  # same dropout draws for graphode's providers
    m.train()
    if backend == "authors":
        out = m(ds.x)
        return F.cross_entropy(out[ds.train_mask], ds.y[ds.train_mask])
    with ops.use_backend(backend):
        out = m(ds.x)
        return F.cross_entropy(out[ds.train_mask], ds.y[ds.train_mask])


def make_case(model, provider, mode):
    ds, cfg, provs = setup(model)
    m, opt, backend = provs[provider]
    params = [p for p in m.parameters() if p.requires_grad]
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return (_loss(m, ds, backend),)

        return run, None
    if mode == "full":
        def run():
            opt.zero_grad(set_to_none=True)
            loss = _loss(m, ds, backend)
            with ops.use_backend(None if backend == "authors" else backend):
                loss.backward()
            opt.step()
            return (loss.detach(),)

        return run, None
    state = {}

    def prepare():
        state["loss"] = _loss(m, ds, backend)

    def run():
        with ops.use_backend(None if backend == "authors" else backend):
            return torch.autograd.grad(state["loss"], params, retain_graph=True, allow_unused=True)

    return run, prepare


_checked: dict = {}


def _grads(m, ds, backend, params):
    loss = _loss(m, ds, backend)
    with ops.use_backend(None if backend == "authors" else backend):
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), [g if g is not None else torch.zeros_like(q) for g, q in zip(grads, params)]


def check_once(model):
    """Before any timing (and any optimizer step): graphode's loss and gradients equal the
    reference ops' (same dropout draws), and the authors' model equals graphode's with dropout
    off (loss and the gradient of every shared parameter)."""
    if model not in _checked:
        ds, cfg, provs = setup(model)
        go, ref = provs["graphode"][0], provs["graphode-reference-ops"][0]
        params = [q for q in go.parameters() if q.requires_grad]
        l_go, g_go = _grads(go, ds, None, params)
        nfe = getattr(go, "nfe", None)
        l_ref, g_ref = _grads(ref, ds, "reference", [q for q in ref.parameters() if q.requires_grad])
        bu.check_close(l_go, l_ref, rtol=1e-4, what=f"{model} loss, graphode vs reference ops")
        out = {"graphode": dict(grad_err=bu.check_close(g_go, g_ref, rtol=1e-3, what=f"{model} gradients"), nfe=nfe),
               "graphode-reference-ops": dict(grad_err=0.0, nfe=nfe)}
        if not isinstance(provs["authors"], str):
            A = authors_module()
            theirs, ours = _check_copies.pop(model)
            theirs.opt = dict(theirs.opt, input_dropout=0.0, dropout=0.0)
            ours.input_dropout = ours.dropout = 0.0
            pairs = A.parameter_pairs(theirs, ours)
            theirs.resetNFE()
            with A.first_step_without_grad():
                l_t, g_t = _grads(theirs, ds, "authors", [p for _, p, _ in pairs])
            nfe_t = theirs.getNFE()
            l_o, g_o = _grads(ours, ds, None, [q for _, _, q in pairs])
            bu.check_close(l_t, l_o, rtol=1e-4, what=f"{model} loss (dropout off), authors vs graphode")
            out["authors"] = dict(grad_err=bu.check_close(g_t, g_o, rtol=1e-3, what=f"{model} gradients, authors"),
                                  nfe=nfe_t)
        _checked[model] = out
    return _checked[model]


# --------------------------------------------------------------------------- memory (subprocess)
def memory_worker(emit, model, providers):
    for p in providers:
        v = setup(model)[2][p]
        if isinstance(v, str):
            continue
        run, _ = make_case(model, p, "full")
        run()  # warm-up
        with bu.PeakRSS() as m:
            run()
        emit(dict(provider=p, peak_extra_bytes=m.extra))


_mem: dict = {}


def peak_memory(model):
    if model not in _mem:
        r = bu.run_worker(f"{os.path.abspath(__file__)}:memory_worker", dict(model=model, providers=list(PROVIDERS)),
                          threads=torch.get_num_threads(), mem_limit=bu.memory_limit_bytes(), timeout=MEM_TIMEOUT)
        _mem[model] = {x["provider"]: x["peak_extra_bytes"] for x in r.records if "provider" in x}
        if r.status != "ok":
            _mem[model]["_error"] = f"{r.status}: {r.error[-300:]}"
    return _mem[model]


CASES = [(model, m, p) for model in MODELS for m in MODES for p in PROVIDERS]


@pytest.mark.parametrize("model,mode,provider", CASES, ids=[f"{a}-{m}-{p}" for a, m, p in CASES])
def test_grand(benchmark, model, mode, provider):
    if provider == "graphode" and ops.resolve_backend(None, torch.device("cpu")) == "reference":
        pytest.skip("no compiled backend (graphode._C) is built: nothing to compare")
    v = setup(model)[2][provider]
    if isinstance(v, str):
        pytest.skip(v)
    benchmark.group = f"{model} Cora train step: {mode}"
    chk = check_once(model)[provider]
    run, prepare = make_case(model, provider, mode)
    if prepare:
        prepare()
    run()  # warm-up: one call, as for every provider
    st = bu.measure(benchmark, run, ROUNDS)
    cfg = setup(model)[1]
    row = dict(model=model, mode=mode, provider=provider, rounds=ROUNDS, nfe=chk["nfe"], method=cfg["method"],
               T=cfg["time"], threads=torch.get_num_threads(), grad_max_rel_err=chk["grad_err"],
               backend=(ops.resolve_backend(None, torch.device("cpu")) if provider == "graphode" else
                        "reference" if provider == "graphode-reference-ops" else "torchdiffeq + PyG"),
               timed=st is not None)
    if mode == "full":
        mem = peak_memory(model)
        row.update(peak_extra_bytes=mem.get(provider), memory_error=mem.get("_error"))
    if st:
        row.update(min_s=st["min_s"], median_s=st["median_s"], times_s=st["times_s"])
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "times_s"})
    REPORT.add(**row)
    if STRICT and st and model == "grand-l" and mode == "full" and provider == PROVIDERS[-1]:
        res = {r["provider"]: r for r in REPORT.rows if r["model"] == model and r["mode"] == "full"}
        sp = res["authors"]["median_s"] / res["graphode"]["median_s"]
        assert sp >= GOAL_SPEED, f"GRAND-l train step {sp:.2f}x the authors' (goal >= {GOAL_SPEED}x)"


REPORT = bu.Report("grand", "GRAND on Cora: graphode vs the authors' model, train step",
                   command="python -m pytest bench/test_bench_grand.py --benchmark-only", rounds=ROUNDS,
                   goal_speedup=GOAL_SPEED, goal_memory_ratio=GOAL_MEM)
