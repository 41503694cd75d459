"""Tests for graphode.datasets: counts against the published figures, splits, shipped Cora, PyG parity.

Real data comes from ``../shared/datasets`` next to the repository; tests that
need it skip (with the reason) when it is absent.  PyG cross-checks skip when
torch_geometric is not installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphode.datasets import (
    NodeDataset,
    available_datasets,
    largest_connected_component,
    load_actor,
    load_dataset,
    load_npz,
    load_planetoid,
    load_pyg,
    load_webkb,
    random_split,
    row_normalize,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _need(sub: str) -> Path:
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"shared dataset folder {p} not found (real-data tests need ../shared/datasets)")
    return p


@pytest.fixture(autouse=True)
def _isolated_default_root(tmp_path_factory, monkeypatch):
    """Point the default root at an empty folder so a user's cache never leaks into tests."""
    monkeypatch.setenv("GRAPHODE_DATA", str(tmp_path_factory.mktemp("empty_default_root")))


def _pyg():
    return pytest.importorskip("torch_geometric.datasets", reason="torch_geometric not installed")


def _check_common(ds: NodeDataset):
    n = ds.num_nodes
    assert ds.x.dtype == torch.float32 and ds.x.shape == (n, ds.num_features)
    assert ds.y.dtype == torch.int64 and ds.y.shape == (n,)
    assert ds.edge_index.dtype == torch.int64 and ds.edge_index.shape[0] == 2
    assert int(ds.edge_index.min()) >= 0 and int(ds.edge_index.max()) < n
    assert int(ds.y.min()) >= 0 and int(ds.y.max()) < ds.num_classes
    # unique and sorted by (target, source)
    key = ds.edge_index[1] * n + ds.edge_index[0]
    assert bool((key[1:] > key[:-1]).all())
    for m in ds.masks():
        assert m.dtype == torch.bool and m.shape[0] == n
    tr, va, te = ds.masks()
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()


def _masks_sizes(ds):
    return tuple(int(m.sum()) for m in ds.masks())


# ----------------------------------------------------------------- Planetoid
@pytest.mark.parametrize(
    "name, nodes, edges, feats, classes, split",
    [("cora", 2708, 10556, 1433, 7, (140, 500, 1000)),
     ("citeseer", 3327, 9104, 3703, 6, (120, 500, 1000))],
)
def test_planetoid_public_counts(tmp_path, name, nodes, edges, feats, classes, split):
    root = _need("planetoid").parent
    ds = load_planetoid(name, root)
    _check_common(ds)
    assert (ds.num_nodes, ds.num_edges, ds.num_features, ds.num_classes) == (nodes, edges, feats, classes)
    assert ds.is_undirected() and ds.num_edges // 2 == edges // 2
    assert not (ds.edge_index[0] == ds.edge_index[1]).any()
    assert _masks_sizes(ds) == split and ds.num_splits == 1
    assert torch.equal(ds.train_mask.nonzero().view(-1), torch.arange(split[0]))
    # the same files in the PyG layout <root>/<Name>/raw/
    _copy(sorted((root / "planetoid").glob(f"ind.{name}.*")), tmp_path / ds.name.capitalize() / "raw")
    again = load_dataset(name, tmp_path)
    assert again.info["source"] == str(tmp_path / ds.name.capitalize() / "raw")
    assert torch.equal(again.edge_index, ds.edge_index) and torch.equal(again.x, ds.x)


def test_citeseer_isolated_test_nodes():
    root = _need("planetoid").parent
    ds = load_planetoid("citeseer", root)
    zero_rows = (ds.x.sum(1) == 0).nonzero().view(-1)
    # 15 test ids have no tx row: zero features, label 0, outside every mask
    tidx = np.loadtxt(root / "planetoid" / "ind.citeseer.test.index", dtype=np.int64)
    missing = np.setdiff1d(np.arange(tidx.min(), tidx.max() + 1), tidx)
    assert missing.size == 15
    assert set(missing.tolist()) <= set(zero_rows.tolist())
    assert (ds.y[missing] == 0).all()
    assert not (ds.train_mask | ds.val_mask | ds.test_mask)[missing].any()


def test_shipped_cora_equals_raw():
    root = _need("planetoid").parent
    raw = load_planetoid("cora", root, source="raw")
    shipped = load_planetoid("cora", source="shipped")
    for k in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
        a, b = getattr(raw, k), getattr(shipped, k)
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert shipped.num_classes == raw.num_classes == 7
    raw_npz = load_npz("cora", root, split=None, largest_component=False, source="raw")
    shipped_npz = load_npz("cora", split=None, largest_component=False, source="shipped")
    for k in ("x", "y", "edge_index"):
        assert torch.equal(getattr(raw_npz, k), getattr(shipped_npz, k)), k


def test_shipped_cora_fallback_and_missing_files(tmp_path, monkeypatch):
    # default root (GRAPHODE_DATA -> empty folder): Cora comes from the package
    ds = load_dataset("cora")
    assert ds.info["source"].startswith("shipped") and ds.num_nodes == 2708 and ds.num_edges == 10556
    assert load_npz("cora").num_nodes == 2485
    # nothing to fall back on for CiteSeer
    with pytest.raises(FileNotFoundError, match="GRAPHODE_DATA"):
        load_planetoid("citeseer")
    # an explicit root that lacks the files is an error, and the message shows where we looked
    with pytest.raises(FileNotFoundError) as e:
        load_planetoid("cora", tmp_path)
    assert str(tmp_path / "Cora" / "raw") in str(e.value) and "root=" in str(e.value)
    with pytest.raises(FileNotFoundError, match="geom-gcn"):
        load_webkb("texas", tmp_path)
    with pytest.raises(ValueError, match="shipped"):
        load_planetoid("citeseer", source="shipped")
    # GRAPHODE_DATA is honoured
    if SHARED.exists():
        monkeypatch.setenv("GRAPHODE_DATA", str(SHARED))
        assert load_planetoid("citeseer").num_nodes == 3327


def test_normalize_features():
    ds = load_planetoid("cora", normalize_features=True)
    s = ds.x.sum(1)
    assert torch.allclose(s[s > 0], torch.ones_like(s[s > 0]))
    raw = load_planetoid("cora")
    assert torch.equal(ds.x, row_normalize(raw.x))
    try:
        from torch_geometric.transforms import NormalizeFeatures
        from torch_geometric.data import Data
    except ImportError:
        return
    ref = NormalizeFeatures()(Data(x=raw.x.clone())).x
    assert torch.allclose(ds.x, ref)


# ------------------------------------------------------ LCC and random splits
@pytest.mark.parametrize("name, lcc_nodes", [("cora", 2485), ("citeseer", 2110)])
def test_npz_largest_component(name, lcc_nodes):
    root = _need("npz").parent
    full = load_npz(name, root, split=None, largest_component=False)
    assert full.num_nodes == {"cora": 2708, "citeseer": 3312}[name]
    assert full.is_undirected() and not (full.edge_index[0] == full.edge_index[1]).any()
    ds = load_npz(name, root, seed=3)
    _check_common(ds)
    assert ds.num_nodes == lcc_nodes and ds.is_undirected()
    assert ds.node_index.shape == (lcc_nodes,)
    assert torch.equal(ds.x, full.x[ds.node_index]) and torch.equal(ds.y, full.y[ds.node_index])
    assert _masks_sizes(ds)[0] == 20 * ds.num_classes
    assert _masks_sizes(ds)[0] + _masks_sizes(ds)[1] == 1500
    # the subgraph is connected
    assert largest_connected_component(ds.edge_index, ds.num_nodes).numel() == lcc_nodes


@pytest.mark.parametrize("name, lcc_nodes, lcc_edges", [("cora", 2485, 10138), ("citeseer", 2120, 7358)])
def test_planetoid_random_split_on_lcc(name, lcc_nodes, lcc_edges):
    root = _need("planetoid").parent
    ds = load_planetoid(name, root, split="random", seed=0)
    _check_common(ds)
    # GRAND's statistics for the Planetoid LCC: Cora 2485 nodes / 5069 edges, CiteSeer 2120 / 3679
    assert (ds.num_nodes, ds.num_edges) == (lcc_nodes, lcc_edges)
    tr, va, te = ds.masks()
    assert int(tr.sum()) == 20 * ds.num_classes and int((tr | va).sum()) == 1500
    assert bool((tr | va | te).all())
    assert torch.equal(torch.bincount(ds.y[tr], minlength=ds.num_classes),
                       torch.full((ds.num_classes,), 20))
    if name == "cora":
        npz = load_planetoid(name, root, split="random", seed=0, lcc_source="npz")
        assert npz.num_nodes == 2485 and npz.info["format"] == "gnn-benchmark npz"


def _grand_reference_split(y: np.ndarray, seed: int, num_dev=1500, per_class=20):
    """GRAND's set_train_val_test_split, written out with its per-element loops."""
    rs = np.random.RandomState(seed)
    dev = rs.choice(len(y), num_dev, replace=False)
    dev_set = set(dev.tolist())
    test = [i for i in range(len(y)) if i not in dev_set]
    rs = np.random.RandomState(seed)
    train = []
    for c in range(y.max() + 1):
        cls = dev[np.where(y[dev] == c)[0]]
        train.extend(rs.choice(cls, per_class, replace=False))
    train_set = set(train)
    val = [i for i in dev if i not in train_set]
    return sorted(map(int, train)), sorted(map(int, val)), sorted(test)


def test_random_split_properties():
    y = load_npz("cora").y  # shipped LCC, 2485 nodes
    n, c = y.numel(), int(y.max()) + 1
    tr, va, te = random_split(y, seed=7)
    assert tr.shape == va.shape == te.shape == (n,)
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
    assert bool((tr | va | te).all())
    assert int((tr | va).sum()) == 1500 and int(te.sum()) == n - 1500
    assert torch.equal(torch.bincount(y[tr], minlength=c), torch.full((c,), 20))
    # deterministic per seed, different across seeds
    tr2, va2, te2 = random_split(y, seed=7)
    assert torch.equal(tr, tr2) and torch.equal(va, va2) and torch.equal(te, te2)
    tr3, va3, _ = random_split(y, seed=8)
    assert not torch.equal(tr, tr3) and not torch.equal(va, va3)
    # same draw as GRAND's reference code
    ref = _grand_reference_split(y.numpy(), 7)
    got = [m.nonzero().view(-1).tolist() for m in (tr, va, te)]
    assert got == list(ref)
    # a list of seeds stacks the splits as columns
    trs, vas, tes = random_split(y, seed=[7, 8])
    assert trs.shape == (n, 2) and torch.equal(trs[:, 0], tr) and torch.equal(trs[:, 1], tr3)
    ds = load_planetoid("cora", split="random", seed=[7, 8, 9])
    assert ds.num_splits == 3 and ds.split(1).train_mask.shape == (ds.num_nodes,)
    # numpy input and custom sizes
    tr4, va4, _ = random_split(y.numpy(), num_dev=300, per_class=5, seed=1)
    assert int(tr4.sum()) == 5 * c and int((tr4 | va4).sum()) == 300
    with pytest.raises(ValueError, match="class"):
        random_split(y, num_dev=20, per_class=20, seed=0)


# ----------------------------------------------------------------- geom-gcn
@pytest.mark.parametrize("name, nodes", [("texas", 183), ("cornell", 183), ("wisconsin", 251)])
def test_webkb_counts_and_splits(name, nodes):
    root = _need("webkb").parent
    ds = load_webkb(name, root)
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (nodes, 1703, 5)
    assert ds.train_mask.shape == (nodes, 10) and ds.num_splits == 10
    for i in range(10):
        s = ds.split(i)
        _check_common(s)
        assert int(s.train_mask.sum()) > 0 and int(s.val_mask.sum()) > 0 and int(s.test_mask.sum()) > 0
    und = load_webkb(name, root, to_undirected=True)
    assert und.is_undirected() and und.num_edges >= ds.num_edges


def test_actor_counts_and_splits():
    root = _need("webkb").parent
    ds = load_dataset("film", root)
    assert ds.name == "actor"
    assert (ds.num_nodes, ds.num_features, ds.num_classes) == (7600, 932, 5)
    assert ds.train_mask.shape == (7600, 10)
    assert set(torch.unique(ds.x).tolist()) == {0.0, 1.0}
    for i in range(10):
        _check_common(ds.split(i))
    with pytest.raises(IndexError):
        ds.split(10)


# ------------------------------------------------------------ PyG parity
def _copy(files, dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, dst / f.name)


def _edge_set(ei: torch.Tensor):
    return set(map(tuple, ei.t().tolist()))


@pytest.mark.parametrize("name, pyg_name", [("cora", "Cora"), ("citeseer", "CiteSeer")])
def test_planetoid_matches_pyg(tmp_path, name, pyg_name):
    plan = _need("planetoid")
    datasets = _pyg()
    _copy(sorted(plan.glob(f"ind.{name}.*")), tmp_path / pyg_name / "raw")
    ref = datasets.Planetoid(str(tmp_path), pyg_name)[0]
    ds = load_planetoid(name, tmp_path)  # found through the PyG layout
    assert _edge_set(ds.edge_index) == _edge_set(ref.edge_index)
    assert torch.equal(ds.edge_index, ref.edge_index)  # same (target, source) order too
    assert torch.equal(ds.x, ref.x) and torch.equal(ds.y, ref.y)
    for k in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(ds, k), getattr(ref, k)), k


@pytest.mark.parametrize("name", ["texas", "film"])
def test_geom_gcn_matches_pyg(tmp_path, name):
    web = _need("webkb")
    datasets = _pyg()
    files = sorted((web / name).glob("out1_*.txt")) + sorted((web / "splits").glob(f"{name}_split_*.npz"))
    if name == "film":
        _copy(files, tmp_path / "raw")
        ref = datasets.Actor(str(tmp_path))[0]
        ds = load_actor(tmp_path)
    else:
        _copy(files, tmp_path / name / "raw")
        ref = datasets.WebKB(str(tmp_path), name)[0]
        ds = load_webkb(name, tmp_path)
    assert _edge_set(ds.edge_index) == _edge_set(ref.edge_index)
    assert torch.equal(ds.x, ref.x) and torch.equal(ds.y, ref.y)
    for k in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(ds, k), getattr(ref, k)), k


def _write_fake_amazon(path: Path, n=120, f=30, c=3, seed=0):
    """A small gnn-benchmark-format npz with two components (the big one has n - 5 nodes)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    big = n - 5
    rows = np.concatenate([np.arange(big - 1), rng.integers(0, big, 200), [big, big + 1, big + 2]])
    cols = np.concatenate([np.arange(1, big), rng.integers(0, big, 200), [big + 1, big + 2, big + 3]])
    adj = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n))
    adj.sum_duplicates()
    attr = sp.csr_matrix((rng.random((n, f)) < 0.2).astype(np.float32) * 3.0)  # non-binary values
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=adj.shape,
             attr_data=attr.data, attr_indices=attr.indices, attr_indptr=attr.indptr, attr_shape=attr.shape,
             labels=rng.integers(0, c, n))


def test_load_pyg_matches_load_npz(tmp_path):
    _pyg()
    _write_fake_amazon(tmp_path / "Computers" / "raw" / "amazon_electronics_computers.npz")
    kw = dict(num_dev=60, per_class=5, seed=4)
    a = load_pyg("computers", tmp_path, download=False, **kw)
    b = load_npz("amazon-computers", tmp_path, **kw)
    assert a.num_nodes == b.num_nodes == 115
    for k in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask", "node_index"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert set(torch.unique(a.x).tolist()) <= {0.0, 1.0}  # binarised like PyG
    assert int(a.train_mask.sum()) == 15


def test_load_pyg_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_pyg("coauthor-cs", tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_pyg("ogbn-arxiv", tmp_path, download=False)
    monkeypatch.setitem(sys.modules, "torch_geometric.datasets", None)
    monkeypatch.setitem(sys.modules, "ogb.nodeproppred", None)
    with pytest.raises(ImportError, match=r"graphode\[pyg\]"):
        load_pyg("photo", tmp_path)
    (tmp_path / "ogbn_arxiv").mkdir()
    with pytest.raises(ImportError, match=r"graphode\[ogb\]"):
        load_pyg("arxiv", tmp_path)
    with pytest.raises(ValueError, match="official"):
        load_pyg("ogbn-arxiv", tmp_path, split="random")


# ---------------------------------------------------------------- API
def test_load_dataset_names():
    names = available_datasets()
    for n in ("cora", "citeseer", "pubmed", "texas", "cornell", "wisconsin", "actor",
              "coauthor-cs", "computers", "photo", "ogbn-arxiv"):
        assert n in names
    with pytest.raises(ValueError) as e:
        load_dataset("corra")
    assert "cora" in str(e.value) and "ogbn-arxiv" in str(e.value)
    with pytest.raises(ValueError, match="split"):
        load_dataset("cora", split="full")
    with pytest.raises(ValueError, match="geom-gcn"):
        load_dataset("texas", split="random")


def test_node_dataset_container():
    ds = load_dataset("cora")
    moved = ds.to("cpu")
    assert moved is not ds and torch.equal(moved.x, ds.x) and moved.device.type == "cpu"
    assert ds.split(0) is ds and ds.split(-1) is ds
    with pytest.raises(IndexError):
        ds.split(1)
    assert "nodes=2708" in repr(ds)
    with pytest.raises(ValueError, match="y must be"):
        NodeDataset("bad", ds.x, ds.y[:-1], ds.edge_index, ds.train_mask, ds.val_mask, ds.test_mask, 7)


def test_graph_property():
    pytest.importorskip("graphode.graph", reason="graphode.Graph not available")
    ds = load_dataset("cora")
    g = ds.graph
    assert g is ds.graph  # cached
    assert g.num_nodes == 2708 and g.num_edges == 10556
    # edge_index is in Graph's CSR order, so the edge order is kept
    assert torch.equal(g.col, ds.edge_index[0])
