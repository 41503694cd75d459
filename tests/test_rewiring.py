"""Gradient-guided rewiring: triggers exactly when the criterion drops below the
threshold, never removes a skip, survives checkpoints, works on any model with
the documented interface."""
import pytest
import torch
from torch import nn

from graphode import Graph
from graphode.models.gcn import GCN
from graphode.callbacks import GradientGuidedRewiring, probe_skips


class FakeModel(nn.Module):
    """The minimal interface: ``layers`` with ``.weight`` and ``add_skip``."""

    def __init__(self, L=5):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(2, 2, bias=False) for _ in range(L))
        self.added = []

    def skip_eligible(self, l):
        return 1 <= l <= len(self.layers) - 2

    def add_skip(self, l, alpha):
        self.added.append((l, alpha))
        return True

    def set_grad_norms(self, norms):
        for layer, n in zip(self.layers, norms):
            g = torch.zeros_like(layer.weight)
            g[0, 0] = n                                   # ||g||_2 == n exactly
            layer.weight.grad = g


class T:
    def __init__(self, model, graph=None):
        self.model = model
        self.dataset = type("D", (), {"graph": graph})()


def test_gradient_flow_rule_triggers_exactly_below_threshold_and_stays():
    m = FakeModel(5)
    t = T(m)
    rw = GradientGuidedRewiring(p=0.5, alpha=0.7, criterion="gradient_flow")
    rw.on_train_begin(t)
    m.set_grad_norms([1.0, 2.0, 4.0, 8.0, 1.0])          # epoch 0: the initial values
    rw.on_after_backward(t, 0)
    assert m.added == [] and rw.initial == {1: 2.0, 2: 4.0, 3: 8.0}
    m.set_grad_norms([0.0, 1.0, 2.0, 4.0, 0.0])          # exactly p * GF_0: not below
    rw.on_after_backward(t, 1)
    assert m.added == []
    m.set_grad_norms([0.0, 0.999, 2.0, 4.0, 0.0])        # layer 1 drops below 0.5 * 2.0
    rw.on_after_backward(t, 2)
    assert m.added == [(1, 0.7)] and rw.skips == {1: 2}
    m.set_grad_norms([0.0, 5.0, 1.0, 100.0, 0.0])        # layer 1 recovers: the skip stays; layer 2 drops
    rw.on_after_backward(t, 3)
    assert m.added == [(1, 0.7), (2, 0.7)] and rw.skips == {1: 2, 2: 3}
    m.set_grad_norms([0.0, 0.0, 0.0, 100.0, 0.0])        # no double insertion; ineligible layers ignored
    rw.on_after_backward(t, 4)
    assert m.added == [(1, 0.7), (2, 0.7)]


def test_probe_epochs_limits_the_window():
    m = FakeModel(4)
    t = T(m)
    rw = GradientGuidedRewiring(p=0.5, probe_epochs=2)
    rw.on_train_begin(t)
    m.set_grad_norms([1.0, 1.0, 1.0, 1.0])
    rw.on_after_backward(t, 0)
    m.set_grad_norms([1.0, 1.0, 0.1, 1.0])
    rw.on_after_backward(t, 1)
    m.set_grad_norms([1.0, 0.1, 0.1, 1.0])
    rw.on_after_backward(t, 2)                            # outside the probe window
    assert rw.skips == {2: 1}


def test_apply_false_only_records():
    m = FakeModel(4)
    rw = GradientGuidedRewiring(p=0.5, apply=False, record_history=True)
    rw.on_train_begin(T(m))
    m.set_grad_norms([1.0, 1.0, 1.0, 1.0])
    rw.update(m, 0)
    m.set_grad_norms([1.0, 0.1, 1.0, 1.0])
    rw.update(m, 1)
    assert rw.skips == {1: 1} and m.added == []
    assert rw.history == [[1.0, 1.0, 1.0, 1.0], [1.0, pytest.approx(0.1), 1.0, 1.0]]


def test_dirichlet_energy_rule():
    class EModel(FakeModel):
        record_hidden = False
        pre_activations = []

    n = 6
    ei = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 5], [1, 0, 2, 1, 3, 2, 4, 3, 5, 4]])
    graph = Graph.from_edge_index(ei, n)
    m = EModel(4)
    m.graph = graph
    t = T(m)
    rw = GradientGuidedRewiring(criterion="dirichlet_energy", threshold=0.4)
    rw.on_train_begin(t)
    assert m.record_hidden is True
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    m.pre_activations = [x, x, x, x]
    rw.on_after_backward(t, 0)
    m.pre_activations = [x, 0.7 * x, 0.6 * x, x]        # energies 0.49x and 0.36x of the first
    rw.on_after_backward(t, 1)
    assert rw.skips == {2: 1}
    m.pre_activations = [x, 0.63 * x, 0.0 * x, x]       # 0.3969 < 0.4
    rw.on_after_backward(t, 2)
    assert rw.skips == {2: 1, 1: 2}


def test_state_dict_round_trip_reapplies_skips():
    torch.manual_seed(0)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    g = Graph.from_edge_index(ei, 3)
    model = GCN(4, 8, 2, 5, g)
    rw = GradientGuidedRewiring(p=0.3)
    rw.on_train_begin(T(model))
    rw.update(model, 0, values=[1.0] * 5)
    rw.update(model, 1, values=[0.1, 0.2, 1.0, 0.25, 0.1])
    assert rw.skips == {1: 1, 3: 1} and model.skips == [1, 3]
    fresh = GCN(4, 8, 2, 5, g)
    rw2 = GradientGuidedRewiring(p=0.3)
    rw2.load_state_dict(rw.state_dict())
    rw2.on_train_begin(T(fresh))
    assert fresh.skips == [1, 3]
    # the model's own state_dict carries the skips too
    other = GCN(4, 8, 2, 5, g)
    other.load_state_dict(model.state_dict())
    assert other.skips == [1, 3]


def test_rewiring_rejects_models_without_interface():
    with pytest.raises(TypeError):
        GradientGuidedRewiring().on_train_begin(T(nn.Linear(2, 2)))
    with pytest.raises(ValueError):
        GradientGuidedRewiring(criterion="nope")


def _toy_dataset(n=40, f=5, c=3, seed=0):
    from graphode.datasets import NodeDataset

    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, n, (80,), generator=g)
    b = torch.randint(0, n, (80,), generator=g)
    keep = a != b
    ei = torch.cat([torch.stack([a[keep], b[keep]]), torch.stack([b[keep], a[keep]])], 1)
    ei = torch.unique(ei, dim=1)
    y = torch.randint(0, c, (n,), generator=g)
    x = torch.randn(n, f, generator=g) + torch.nn.functional.one_hot(y, f).float()
    idx = torch.arange(n)
    return NodeDataset("toy", x, y, ei, idx < 20, (idx >= 20) & (idx < 30), idx >= 30, c)


def test_rewiring_through_the_trainer_and_checkpoint(tmp_path):
    from graphode.train import fit

    ds = _toy_dataset()
    torch.manual_seed(0)
    # p huge: every eligible layer is rewired at epoch 1 (GF_l < p GF_l(0) for any GF_l > 0)
    rw = GradientGuidedRewiring(p=1e9)
    model = GCN(ds.num_features, 8, ds.num_classes, 6, ds.graph, init="isometric-code", dropout=0.0)
    ck = tmp_path / "ck.pt"
    fit(model, ds, {"lr": 0.01, "epochs": 3}, callbacks=[rw], progress=False, checkpoint=str(ck))
    assert sorted(rw.skips) == [1, 2, 3, 4] and set(rw.skips.values()) == {1}
    assert model.skips == [1, 2, 3, 4]
    state = torch.load(ck, weights_only=True)
    assert state["model"]["skip_alpha"].tolist() == [0, 1, 1, 1, 1, 0]


def test_probe_skips_helper():
    ds = _toy_dataset()
    torch.manual_seed(0)
    model = GCN(ds.num_features, 8, ds.num_classes, 5, ds.graph, dropout=0.0)
    skips = probe_skips(model, ds, GradientGuidedRewiring(p=1e9, apply=False), epochs=3)
    assert skips == [1, 2, 3] and model.skips == []


def test_code_probe_protocol_matches_an_independent_reimplementation():
    """The authors' code's probe (rewire_model.DeepGCN + utils2.dynamic_rewire, re-written
    here, not copied): Adam on the training loss for the probe epochs; in every training
    forward the energy tr(X^T L X) of each hidden layer's pre-ReLU output, L = I -
    D^-1/2 A D^-1/2 of the graph without self loops (PyG get_laplacian "sym"), as a dense
    matrix; the first value is the threshold; a layer is listed once its energy drops below
    0.4 x threshold; no skip is applied during the probe.  float64, with dropout."""
    ds = _toy_dataset(n=30, seed=3)
    L, hidden, epochs, thr = 7, 8, 40, 0.4

    def make():
        torch.manual_seed(0)
        return GCN(ds.num_features, hidden, ds.num_classes, L, ds.graph, init="isometric-code", dropout=0.3,
                   dropout_rng="torch").double()

    x = ds.x.double()
    ds64 = type(ds)("toy", x, ds.y, ds.edge_index, ds.train_mask, ds.val_mask, ds.test_mask, ds.num_classes)

    # graphode: GradientGuidedRewiring(dirichlet_energy, sym Laplacian, apply=False) in probe_skips
    model = make()
    torch.manual_seed(1)
    rw = GradientGuidedRewiring(criterion="dirichlet_energy", threshold=thr, laplacian="sym", apply=False)
    got = probe_skips(model, ds64, rw, epochs=epochs)

    # independent: a dense Laplacian and a hand-written probe loop over the same model and RNG stream
    model2 = make()
    n = ds.num_nodes
    A = torch.zeros(n, n, dtype=torch.float64)
    A[ds.edge_index[0], ds.edge_index[1]] = 1.0
    A.fill_diagonal_(0.0)
    d = A.sum(1)
    dinv = torch.where(d > 0, d.clamp_min(1e-300).rsqrt(), torch.zeros_like(d))
    Lap = torch.eye(n, dtype=torch.float64) - dinv[:, None] * A * dinv[None, :]
    opt = torch.optim.Adam(model2.parameters(), lr=0.005, weight_decay=5e-4)
    model2.record_hidden = True
    model2.train()
    first, listed = {}, {}
    torch.manual_seed(1)
    for epoch in range(epochs):
        opt.zero_grad()
        out = model2(x)
        torch.nn.functional.cross_entropy(out[ds.train_mask], ds.y[ds.train_mask]).backward()
        for i in range(1, L - 1):  # hidden layers but the first (it is the skip's source)
            if i in listed:
                continue
            h = model2.pre_activations[i]
            e = float(torch.trace(h.T @ Lap @ h))
            if i not in first:
                first[i] = e
            elif e < thr * first[i]:
                listed[i] = epoch
        opt.step()
    assert got == sorted(listed) and rw.skips == listed
    assert 0 < len(listed) < L - 2  # the rule flagged some layers and not others (the test has teeth)
    for i, e0 in first.items():
        assert rw.initial[i] == pytest.approx(e0, rel=1e-9)
    assert model.skips == []  # the probe applies nothing
