"""Deep GCN on Cora: graphode against PyG, per mode.

    .venv/bin/python -m pytest bench/test_bench_gcn.py --benchmark-only -q

A 64-layer GCN (``GRAPHODE_BENCH_LAYERS``; 1433 -> 64 x 63 -> 7, ReLU, no
skips, dropout 0.6).  Providers, all from the same weights:

* ``graphode``: ``graphode.models.GCN`` (automatic backend: the C++ kernels
  when built; sparse input path, Â computed once);
* ``graphode-reference``: the same model with the reference (pure PyTorch)
  SpMM (``ops.use_backend("reference")``): the composition;
* ``graphode-torch-dropout``: ``graphode`` with ``dropout_rng="torch"`` (masks
  drawn with ``rand_like`` and applied by separate elementwise ops, the GCN
  before the fused dropout): its time over ``graphode``'s is what the fused
  Philox dropout (``graphode.ops.dropout``) saves per epoch;
* ``pyg-adj_t``: the same stack of PyG ``GCNConv(cached=True)`` layers on a
  ``torch.sparse`` CSR ``adj_t`` (PyG's fused sparse-matrix path, the
  normalisation computed once) with graphode's dropout placement: on the
  input's non-zeros, the first layer's ``X W`` a sparse-dense product
  (``graphode.models.gcn._SparseInput``), and ``graphode.models.gcn.dropout``
  (``rand_like``) on the hidden layers -- the strongest PyG peer;
* ``pyg-default``: the same stack on the plain ``edge_index`` (PyG's
  gather/scatter message passing) with ``F.dropout``, as PyG's examples write
  it ("PyG default").

Modes: ``fwd`` (a training-mode forward and the loss under ``no_grad``),
``bwd`` (gradients of the loss w.r.t. all parameters, forward outside the
timing, ``retain_graph=True``), ``full`` (one training epoch: forward with
dropout, cross-entropy on the 140 training nodes, backward, Adam step).

Correctness first: with dropout off, every provider's logits and weight
gradients must equal graphode-reference's (relative 1e-4 / 1e-3).  Then, for
every provider alike: one warm-up call, ``ROUNDS`` timed calls, the median.  The
goal (the fastest PyG peer / graphode >= 1.5 on the epoch) is reported in the
tables; ``GRAPHODE_BENCH_STRICT=1`` asserts it.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import _benchutil as bu
from graphode import ops
from graphode.models.gcn import GCN, _SparseInput, dropout

ROUNDS = int(os.environ.get("GRAPHODE_BENCH_ROUNDS", bu.pick("5", "1")))
LAYERS = int(os.environ.get("GRAPHODE_BENCH_LAYERS", bu.pick("64", "4")))
STRICT = os.environ.get("GRAPHODE_BENCH_STRICT", "0") == "1"
PROVIDERS = ("graphode", "graphode-reference", "graphode-torch-dropout", "pyg-adj_t", "pyg-default")
PYG = ("pyg-adj_t", "pyg-default")
GOAL = 1.5
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


def _pyg_stack(ds, layers, source: GCN, adj_t: bool):
    from torch_geometric.nn import GCNConv

    class PyGGCN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            dims = [ds.num_features] + [64] * (layers - 1) + [ds.num_classes]
            self.layers = torch.nn.ModuleList(GCNConv(dims[i], dims[i + 1], cached=True) for i in range(layers))
            g, n = ds.graph, ds.num_nodes
            # CSR over targets = the transposed adjacency PyG calls adj_t
            self.adj = (torch.sparse_csr_tensor(g.rowptr, g.col, torch.ones(g.num_edges), size=(n, n)) if adj_t
                        else ds.edge_index)
            self.sparse_input = _SparseInput() if adj_t else None

        def forward(self, x):
            for i, conv in enumerate(self.layers):
                if not adj_t:
                    x = F.dropout(x, 0.6, self.training)
                elif i == 0:
                    x = self.sparse_input(x, 0.6, self.training)
                else:
                    x = dropout(x, 0.6, self.training)
                x = conv(x, self.adj)
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
    if provider in PYG:
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
        tdrop = GCN(ds.num_features, 64, ds.num_classes, LAYERS, ds.graph, dropout_rng="torch")
        tdrop.load_state_dict(base.state_dict())
        models = {"graphode": base, "graphode-reference": _WithBackend(ref, "reference"),
                  "graphode-torch-dropout": tdrop,
                  "pyg-adj_t": _pyg_stack(ds, LAYERS, base, adj_t=True),
                  "pyg-default": _pyg_stack(ds, LAYERS, base, adj_t=False)}
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
            gs = [g.t() if p in PYG else g for g in gs]
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
    run()  # warm-up (caches, lazy init): one call, as for every provider
    st = bu.measure(benchmark, run, ROUNDS)
    row = dict(mode=mode, provider=provider, layers=LAYERS, rounds=ROUNDS, threads=torch.get_num_threads(),
               max_rel_err=err, backend=ops.resolve_backend(None, torch.device("cpu")), timed=st is not None)
    if st:
        row.update(min_s=st["min_s"], median_s=st["median_s"], times_s=st["times_s"])
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "times_s"})
    REPORT.add(**row)
    if STRICT and st and mode == "full" and provider == PROVIDERS[-1]:
        res = {r["provider"]: r for r in REPORT.rows if r["mode"] == "full" and r.get("median_s")}
        best = min(res[p]["median_s"] for p in PYG if p in res)
        ratio = best / res["graphode"]["median_s"]
        assert ratio >= GOAL, f"graphode is {ratio:.2f}x the fastest PyG stack (goal: >= {GOAL}x)"


REPORT = bu.Report("gcn", "Deep GCN on Cora: graphode vs PyG GCNConv",
                   command="python -m pytest bench/test_bench_gcn.py --benchmark-only", layers=LAYERS, rounds=ROUNDS,
                   goal=GOAL, pyg=list(PYG))
