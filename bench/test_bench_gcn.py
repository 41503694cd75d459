"""Deep GCN on Cora: graphode against PyG, per mode.

    .venv/bin/python -m pytest bench/test_bench_gcn.py --benchmark-only -q

A 64-layer GCN (``GRAPHODE_BENCH_LAYERS``; 1433 -> 64 x 63 -> 7, ReLU, no
skips, dropout 0.6).  Providers, all from the same weights:

* ``graphode``: ``graphode.models.GCN`` (automatic backend: the C++ kernels
  when built; sparse input path, Â computed once);
* ``graphode-reference``: the same model with the reference (pure PyTorch)
  SpMM (``ops.use_backend("reference")``): the composition;
* ``pyg-cached``: the same stack of PyG ``GCNConv(cached=True)`` layers (the
  normalisation computed once: the fair comparison).

Modes: ``fwd`` (a training-mode forward and the loss under ``no_grad``),
``bwd`` (gradients of the loss w.r.t. all parameters, forward outside the
timing, ``retain_graph=True``), ``full`` (one training epoch: forward with
dropout, cross-entropy on the 140 training nodes, backward, Adam step).

Correctness first: with dropout off, every provider's logits and weight
gradients must equal graphode-reference's (relative 1e-4 / 1e-3).  The goal
(pyg-cached / graphode >= 2 on the epoch) is reported; ``GRAPHODE_BENCH_STRICT=1``
asserts it.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from graphode import _benchutil as bu
from graphode import ops
from graphode.models.gcn import GCN

ROUNDS = int(os.environ.get("GRAPHODE_BENCH_ROUNDS", bu.pick("3", "1")))
LAYERS = int(os.environ.get("GRAPHODE_BENCH_LAYERS", bu.pick("64", "4")))
STRICT = os.environ.get("GRAPHODE_BENCH_STRICT", "0") == "1"
PROVIDERS = ("graphode", "graphode-reference", "pyg-cached")
MODES = ("fwd", "bwd", "full")

pytestmark = pytest.mark.usefixtures("bench_threads")

_setup: dict = {}


def _cora():
    from graphode.datasets import load_planetoid

    try:
        return load_planetoid("cora")
    except Exception as e:  # pragma: no cover - Cora ships with the package
        pytest.skip(f"Cora not available: {e}")


class _WithBackend(torch.nn.Module):
    def __init__(self, model, backend):
        super().__init__()
        self.model, self.backend = model, backend

    def forward(self, x):
        with ops.use_backend(self.backend):
            return self.model(x)


def _pyg_stack(ds, layers, source: GCN):
    from torch_geometric.nn import GCNConv

    class PyGGCN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            dims = [ds.num_features] + [64] * (layers - 1) + [ds.num_classes]
            self.layers = torch.nn.ModuleList(GCNConv(dims[i], dims[i + 1], cached=True) for i in range(layers))
            self.edge_index = ds.edge_index

        def forward(self, x):
            for i, conv in enumerate(self.layers):
                x = F.dropout(x, 0.6, self.training)
                x = conv(x, self.edge_index)
                if i < len(self.layers) - 1:
                    x = F.relu(x)
            return x

    m = PyGGCN()
    with torch.no_grad():  # the same weights as graphode's model (GraphConv.weight is [in, out])
        for conv, src in zip(m.layers, source.layers):
            conv.lin.weight.copy_(src.weight.t())
            conv.bias.copy_(src.bias)
    return m


def _weights(provider, model):
    """Layer weights in graphode's [in, out] layout (to compare gradients)."""
    if provider == "pyg-cached":
        return [c.lin.weight for c in model.layers]
    m = model.model if isinstance(model, _WithBackend) else model
    return [c.weight for c in m.layers]


def setup():
    if not _setup:
        pytest.importorskip("torch_geometric", reason="the comparison needs PyTorch Geometric")
        ds = _cora()
        torch.manual_seed(0)
        base = GCN(ds.num_features, 64, ds.num_classes, LAYERS, ds.graph)
        ref = GCN(ds.num_features, 64, ds.num_classes, LAYERS, ds.graph)
        ref.load_state_dict(base.state_dict())
        models = {"graphode": base, "graphode-reference": _WithBackend(ref, "reference"),
                  "pyg-cached": _pyg_stack(ds, LAYERS, base)}
        _setup.update(ds=ds, models={k: (m, torch.optim.Adam(m.parameters(), lr=0.005, weight_decay=5e-4))
                                     for k, m in models.items()})
    return _setup


def _loss(model, ds):
    out = model(ds.x)
    return F.cross_entropy(out[ds.train_mask], ds.y[ds.train_mask])


_checked: dict = {}


def check_once():
    """Dropout off: logits and weight gradients of every provider vs graphode-reference."""
    if not _checked:
        ds = setup()["ds"]
        res = {}
        for p, (m, _) in setup()["models"].items():
            m.eval()
            out = m(ds.x)
            loss = F.cross_entropy(out[ds.train_mask], ds.y[ds.train_mask])
            ws = _weights(p, m)
            gs = torch.autograd.grad(loss, ws)
            gs = [g.t() if p == "pyg-cached" else g for g in gs]
            res[p] = (out.detach(), gs)
            m.train()
        for p in PROVIDERS:
            _checked[p] = max(bu.check_close(res[p][0], res["graphode-reference"][0], rtol=1e-4,
                                             what=f"{LAYERS}-layer GCN logits, {p}"),
                              bu.check_close(res[p][1], res["graphode-reference"][1], rtol=1e-3,
                                             what=f"{LAYERS}-layer GCN gradients, {p}"))
    return _checked


def make_case(provider, mode):
    ds = setup()["ds"]
    model, opt = setup()["models"][provider]
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return _loss(model, ds)

        return run, None
    if mode == "full":
        def run():
            opt.zero_grad(set_to_none=True)
            loss = _loss(model, ds)
            loss.backward()
            opt.step()
            return loss.detach()

        return run, None
    state = {}

    def prepare():
        state["loss"] = _loss(model, ds)

    def run():
        return torch.autograd.grad(state["loss"], params, retain_graph=True, allow_unused=True)

    return run, prepare


CASES = [(m, p) for m in MODES for p in PROVIDERS]


@pytest.mark.parametrize("mode,provider", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_gcn(benchmark, mode, provider):
    benchmark.group = f"GCN {LAYERS} layers Cora: {mode}"
    err = check_once()[provider]
    run, prepare = make_case(provider, mode)
    if prepare:
        prepare()
    run()  # warm-up (caches, lazy init)
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    st = benchmark.stats.stats
    info = dict(mode=mode, provider=provider, layers=LAYERS, min_s=st.min, median_s=st.median, rounds=ROUNDS,
                threads=torch.get_num_threads(), max_rel_err=err,
                backend=ops.resolve_backend(None, torch.device("cpu")))
    benchmark.extra_info.update(info)
    REPORT.add(**info)
    if mode == "full" and provider == PROVIDERS[-1]:
        res = {r["provider"]: r for r in REPORT.rows if r["mode"] == "full"}
        if "graphode" in res:
            ratio = res["pyg-cached"]["median_s"] / res["graphode"]["median_s"]
            print(f"\n{LAYERS}-layer GCN epoch: pyg-cached / graphode = {ratio:.2f}x (goal >= 2x)")
            if STRICT:
                assert ratio >= 2.0, f"graphode is {ratio:.2f}x faster than the PyG stack (goal: >= 2x)"


def render(rows, meta):
    res = {(r["mode"], r["provider"]): r for r in rows}
    table = []
    for mode in MODES:
        base = res.get((mode, "pyg-cached"))
        for p in PROVIDERS:
            r = res.get((mode, p))
            if r is None:
                continue
            table.append([mode, p, bu.fmt_time(r["median_s"]), bu.fmt_time(r["min_s"]),
                          bu.fmt_ratio(base["median_s"] / r["median_s"]) if base else ""])
    r0 = rows[0]
    head = (f"{r0['layers']}-layer GCN on Cora (1433 -> 64 x {r0['layers'] - 1} -> 7), {r0['threads']} thread(s), "
            f"{r0['rounds']} rounds; graphode backend: {r0['backend']}.  Goal: pyg-cached / graphode >= 2 "
            "(full mode).\n\n")
    return head + bu.markdown_table(["mode", "provider", "median", "min", "pyg-cached / this (medians)"], table,
                                    right=[False, False, True, True, True])


REPORT = bu.Report("gcn", "Deep GCN on Cora: graphode vs PyG GCNConv", render,
                   command="python -m pytest bench/test_bench_gcn.py --benchmark-only")
