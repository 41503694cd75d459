"""geom-gcn heterophilous graphs: WebKB (Texas, Cornell, Wisconsin) and Actor (``film``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ._base import NodeDataset, row_normalize
from ._root import PathLike, canonical, dedupe, not_found, resolve_root
from ._splits import coalesce_edges, symmetrize_edges

__all__ = ["load_webkb", "load_actor", "WEBKB_NAMES"]

WEBKB_NAMES = ("texas", "cornell", "wisconsin")
NUM_GEOM_GCN_SPLITS = 10
_NODE_FILE = "out1_node_feature_label.txt"
_EDGE_FILE = "out1_graph_edges.txt"
_SPELLINGS = {
    "texas": ("texas", "Texas"), "cornell": ("cornell", "Cornell"),
    "wisconsin": ("wisconsin", "Wisconsin"), "film": ("film", "actor", "Actor"),
}


def _split_file(folder_name: str, i: int) -> str:
    return f"{folder_name}_split_0.6_0.2_{i}.npz"


def _candidates(root: Path, name: str) -> List[Tuple[Path, Path]]:
    """(folder with the two txt files, folder with the split npz files) pairs, in search order."""
    pairs = []
    for sp in _SPELLINGS[name]:
        pairs += [
            (root / "webkb" / sp, root / "webkb" / "splits"),       # shared data folder
            (root / sp / "raw", root / sp / "raw"),                 # PyG WebKB(root, name)
            (root / "new_data" / sp, root / "splits"),              # geom-gcn repository
            (root / sp, root / "splits"),
            (root / sp, root / sp),
        ]
    if name == "film":
        pairs.append((root / "raw", root / "raw"))                  # PyG Actor(root)
    pairs.append((root, root))
    return dedupe(pairs)


def _find(name: str, root: Optional[PathLike]) -> Tuple[Path, Path]:
    r = resolve_root(root)
    cands = _candidates(r, name)
    splits = [_split_file(name, i) for i in range(NUM_GEOM_GCN_SPLITS)]
    for data_dir, split_dir in cands:
        if (data_dir / _NODE_FILE).is_file() and (data_dir / _EDGE_FILE).is_file():
            if all((split_dir / f).is_file() for f in splits):
                return data_dir, split_dir
    looked = [Path(f"{d} (+ splits in {s})") for d, s in cands]
    raise not_found(
        f"the geom-gcn files for {name!r} ({_NODE_FILE}, {_EDGE_FILE} and "
        f"{_split_file(name, 0)} .. _{NUM_GEOM_GCN_SPLITS - 1}.npz)",
        looked, explicit_root=root is not None,
        hint="These are the raw files of torch_geometric.datasets.WebKB (<root>/<name>/raw/) and "
        "Actor (<root>/raw/).",
    )


def _read_lines(path: Path) -> List[List[str]]:
    with open(path) as f:
        lines = f.read().split("\n")[1:]  # drop the header
    return [ln.rstrip("\r").split("\t") for ln in lines if ln.strip()]


def _read_edges(path: Path, n: int) -> np.ndarray:
    rows = _read_lines(path)
    e = np.array([[int(a), int(b)] for a, b in rows], dtype=np.int64).reshape(-1, 2)
    return coalesce_edges(e[:, 0], e[:, 1], n)


def _read_splits(split_dir: Path, name: str, n: int):
    masks = {"train_mask": [], "val_mask": [], "test_mask": []}
    for i in range(NUM_GEOM_GCN_SPLITS):
        with np.load(split_dir / _split_file(name, i), allow_pickle=False) as z:
            for k in masks:
                m = z[k].astype(bool).reshape(-1)
                if m.size != n:
                    raise ValueError(f"{_split_file(name, i)}: {k} has {m.size} entries, expected {n}")
                masks[k].append(m)
    return {k: torch.from_numpy(np.stack(v, axis=1)) for k, v in masks.items()}


def _finish(name: str, x: np.ndarray, y: np.ndarray, edge_index: np.ndarray, split_dir: Path,
            data_dir: Path, to_undirected: bool, normalize_features: bool) -> NodeDataset:
    n = y.shape[0]
    if to_undirected:
        edge_index = symmetrize_edges(edge_index, n)
    xt = torch.from_numpy(x)
    if normalize_features:
        xt = row_normalize(xt)
    masks = _read_splits(split_dir, "film" if name == "actor" else name, n)
    return NodeDataset(
        name=name, x=xt, y=torch.from_numpy(y), edge_index=torch.from_numpy(edge_index),
        num_classes=int(y.max()) + 1, **masks,
        info={"source": str(data_dir), "split": "geom-gcn", "to_undirected": to_undirected,
              "normalize_features": normalize_features},
    )


def load_webkb(
    name: str,
    root: Optional[PathLike] = None,
    *,
    to_undirected: bool = False,
    normalize_features: bool = False,
) -> NodeDataset:
    """Load Texas, Cornell or Wisconsin (WebKB, geom-gcn files) with the 10 geom-gcn splits.

    Files: ``out1_node_feature_label.txt``, ``out1_graph_edges.txt`` and
    ``<name>_split_0.6_0.2_<i>.npz`` (``i = 0..9``), searched in
    ``<root>/webkb/<name>/`` + ``<root>/webkb/splits/`` (shared data folder),
    ``<root>/<name>/raw/`` (PyG ``WebKB`` layout), ``<root>/new_data/<name>/`` +
    ``<root>/splits/`` (geom-gcn repository) and ``<root>/<name>/``.

    As in PyG, edges are kept as given (directed, with the self loops the
    files contain), duplicates merged; ``to_undirected=True`` adds reverse edges.

    Returns:
        :class:`NodeDataset` with 183 / 183 / 251 nodes, ``x`` ``[N, 1703]``,
        5 classes, masks ``[N, 10]`` (use ``ds.split(i)``; roughly 48/32/20 %).
    """
    key = canonical(name, WEBKB_NAMES, "WebKB dataset")
    data_dir, split_dir = _find(key, root)
    rows = _read_lines(data_dir / _NODE_FILE)
    n = len(rows)
    ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
    if not np.array_equal(np.sort(ids), np.arange(n)):
        raise ValueError(f"{data_dir / _NODE_FILE}: node ids are not 0..{n - 1}")
    x = np.zeros((n, len(rows[0][1].split(","))), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    for i, r in zip(ids, rows):
        x[i] = np.array(r[1].split(","), dtype=np.float32)
        y[i] = int(r[2])
    edge_index = _read_edges(data_dir / _EDGE_FILE, n)
    return _finish(key, x, y, edge_index, split_dir, data_dir, to_undirected, normalize_features)


def load_actor(
    root: Optional[PathLike] = None,
    *,
    to_undirected: bool = False,
    normalize_features: bool = False,
) -> NodeDataset:
    """Load Actor (geom-gcn ``film``) with the 10 geom-gcn splits.

    Features are given in the file as lists of active indices; ``x`` is the
    ``[7600, 932]`` binary matrix they define (932 = largest index + 1, as in
    PyG ``Actor``).  Files as for :func:`load_webkb` with folder name ``film``
    (also ``<root>/actor/raw/``, and ``<root>/raw/`` as PyG ``Actor(root)``
    stores them); split files ``film_split_0.6_0.2_<i>.npz``.

    Returns:
        :class:`NodeDataset` named ``"actor"``: 7600 nodes, 932 features,
        5 classes, masks ``[N, 10]``.
    """
    data_dir, split_dir = _find("film", root)
    rows = _read_lines(data_dir / _NODE_FILE)
    n = len(rows)
    ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
    if not np.array_equal(np.sort(ids), np.arange(n)):
        raise ValueError(f"{data_dir / _NODE_FILE}: node ids are not 0..{n - 1}")
    feat_lists = [np.array(r[1].split(","), dtype=np.int64) for r in rows]
    num_features = int(max(f.max() for f in feat_lists)) + 1
    x = np.zeros((n, num_features), dtype=np.float32)
    row = np.repeat(ids, [f.size for f in feat_lists])
    x[row, np.concatenate(feat_lists)] = 1.0
    y = np.zeros(n, dtype=np.int64)
    y[ids] = [int(r[2]) for r in rows]
    edge_index = _read_edges(data_dir / _EDGE_FILE, n)
    return _finish("actor", x, y, edge_index, split_dir, data_dir, to_undirected, normalize_features)
