"""Gradient-flow and Dirichlet-energy monitors against dense computations."""
import pytest
import torch

from graphode import Graph
from graphode.models.gcn import GCN
from graphode.monitor import (
    TrainingMonitor,
    dirichlet_energy,
    gradient_flow,
    layer_dirichlet_energies,
    plot_heatmap,
)


def _random_undirected(n=30, m=60, seed=0, self_loops=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, n, (m,), generator=g)
    b = torch.randint(0, n, (m,), generator=g)
    keep = a != b
    a, b = a[keep], b[keep]
    ei = torch.cat([torch.stack([a, b]), torch.stack([b, a])], 1)
    graph = Graph.from_edge_index(ei, n)
    return graph.add_self_loops() if self_loops else graph


def _dense_energy(x, graph):
    A = graph.to_dense(dtype=torch.float64)
    A.fill_diagonal_(0.0)                                  # A + I below, whatever A had
    At = A + torch.eye(graph.num_nodes, dtype=torch.float64)
    dinv = At.sum(1).rsqrt()
    L = torch.eye(graph.num_nodes, dtype=torch.float64) - dinv[:, None] * At * dinv[None, :]
    x = x.to(torch.float64)
    return torch.trace(x.T @ L @ x)


@pytest.mark.parametrize("self_loops", [False, True])
def test_dirichlet_energy_matches_dense_laplacian(self_loops):
    graph = _random_undirected(self_loops=self_loops)
    x = torch.randn(graph.num_nodes, 5)
    e = dirichlet_energy(x, graph)
    assert e.dtype == torch.float64
    assert float(e) == pytest.approx(float(_dense_energy(x, graph)), rel=1e-5)
    # scalar signal (eq. 17) and the edge formula of eq. 18, written out
    v = torch.randn(graph.num_nodes, dtype=torch.float64)
    assert float(dirichlet_energy(v, graph)) == pytest.approx(float(_dense_energy(v[:, None], graph)), rel=1e-10)


def test_dirichlet_energy_sym_laplacian_matches_dense_with_isolated_nodes():
    # the authors' code: L = I - D^-1/2 A D^-1/2 (PyG get_laplacian "sym"); an isolated
    # node keeps its diagonal 1 (PyG sets its D^-1/2 to 0 and adds I)
    graph = _random_undirected(n=30, m=20, seed=5)
    A = graph.to_dense(dtype=torch.float64)
    A.fill_diagonal_(0.0)
    deg = A.sum(1)
    assert int((deg == 0).sum()) > 0  # the test needs isolated nodes
    dinv = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
    L = torch.eye(graph.num_nodes, dtype=torch.float64) - dinv[:, None] * A * dinv[None, :]
    x = torch.randn(graph.num_nodes, 4, dtype=torch.float64)
    assert float(dirichlet_energy(x, graph, laplacian="sym")) == pytest.approx(float(torch.trace(x.T @ L @ x)),
                                                                               rel=1e-12)
    # and the two Laplacians differ (so the option is not a no-op), same graph cache
    assert float(dirichlet_energy(x, graph)) == pytest.approx(float(_dense_energy(x, graph)), rel=1e-12)
    assert float(dirichlet_energy(x, graph)) != pytest.approx(float(dirichlet_energy(x, graph, laplacian="sym")))
    with pytest.raises(ValueError, match="laplacian"):
        dirichlet_energy(x, graph, laplacian="rw")


def test_dirichlet_energy_chunks_and_grad():
    graph = _random_undirected(n=40, m=120, seed=3)
    x = torch.randn(graph.num_nodes, 7, dtype=torch.float64, requires_grad=True)
    e_full = dirichlet_energy(x, graph)
    e_chunk = dirichlet_energy(x, graph, chunk_edges=7)
    assert float(e_full.detach()) == pytest.approx(float(e_chunk.detach()), rel=1e-12)
    e_full.backward()
    xd = x.detach().clone().requires_grad_(True)
    _dense_energy(xd, graph).backward()
    torch.testing.assert_close(x.grad, xd.grad)


def test_dirichlet_energy_zero_on_lowest_eigvec():
    # L̃ D̃^1/2 1 = 0: the energy of x_i = sqrt(1 + d_i) vanishes
    graph = _random_undirected(n=25, m=50, seed=1)
    deg = torch.bincount(graph.row[graph.row != graph.col], minlength=graph.num_nodes).double()
    x = (1 + deg).sqrt()
    assert float(dirichlet_energy(x, graph)) == pytest.approx(0.0, abs=1e-10)


def _small_gcn(L=4, seed=0):
    torch.manual_seed(seed)
    graph = _random_undirected(n=20, m=40, seed=seed)
    return GCN(6, 8, 3, L, graph, dropout=0.0), graph


def test_gradient_flow_matches_manual_norms():
    model, _ = _small_gcn()
    x = torch.randn(20, 6)
    model(x).pow(2).sum().backward()
    norms, gf = gradient_flow(model)
    manual = [float(conv.weight.grad.flatten().norm(2)) for conv in model.layers]
    assert norms == pytest.approx(manual, rel=1e-6)
    assert gf == pytest.approx(sum(manual) / len(manual), rel=1e-6)
    n1, _ = gradient_flow(model, p=1)
    assert n1 == pytest.approx([float(c.weight.grad.abs().sum()) for c in model.layers], rel=1e-6)


def test_gradient_flow_generic_model_without_layers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    net(torch.randn(5, 3)).sum().backward()
    norms, gf = gradient_flow(net)
    assert len(norms) == 2 and norms[1] == pytest.approx(float(net[2].weight.grad.norm()))


def test_layer_energies_of_recorded_outputs():
    model, graph = _small_gcn(L=3)
    model.record_hidden = True
    model.eval()
    x = torch.randn(20, 6)
    out = model(x)
    assert len(model.pre_activations) == 3
    assert torch.equal(model.pre_activations[-1], out)
    es = layer_dirichlet_energies(model)
    assert es == pytest.approx([float(_dense_energy(h, graph)) for h in model.pre_activations], rel=1e-5)


class _Trainer:
    def __init__(self, model, graph):
        self.model = model
        self.dataset = type("D", (), {"graph": graph})()


def test_training_monitor_history_and_state(tmp_path):
    model, graph = _small_gcn(L=4)
    tr = _Trainer(model, graph)
    mon = TrainingMonitor()
    mon.on_train_begin(tr)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    for epoch in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        mon.on_after_backward(tr, epoch)
        opt.step()
    g = mon.array("grad_norm")
    e = mon.array("dirichlet_energy")
    assert g.shape == (4, 5) and e.shape == (4, 5)
    assert len(mon.history["gradient_flow"]) == 5
    assert mon.history["gradient_flow"][-1] == pytest.approx(g[:, -1].mean())
    mon2 = TrainingMonitor()
    mon2.load_state_dict(mon.state_dict())
    assert mon2.history == mon.history

    p = plot_heatmap(e, tmp_path / "de.png", title="Dirichlet energy", log=True)
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_heatmap([1.0, 2.0], tmp_path / "bad.png")
