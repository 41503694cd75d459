"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from the raw ``ind.<name>.*`` files."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch

from ._base import NodeDataset, row_normalize
from ._root import PathLike, canonical, dedupe, first_dir_with, not_found, resolve_root
from ._splits import GRAND_SPLIT_SEED, Seeds, coalesce_edges, lcc_dataset

__all__ = ["load_planetoid", "PLANETOID_NAMES"]

PLANETOID_NAMES = ("cora", "citeseer", "pubmed")
_DISPLAY = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
_DIR_SPELLINGS = {
    "cora": ("Cora", "cora"),
    "citeseer": ("CiteSeer", "citeseer", "Citeseer"),
    "pubmed": ("PubMed", "pubmed", "Pubmed"),
}
_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")

SHIPPED_DIR = Path(__file__).resolve().parent / "_data"
SHIPPED_PLANETOID = {"cora": SHIPPED_DIR / "cora.npz"}


# ---------------------------------------------------------------- unpickling
_ALLOWED_BUILTINS = {"list", "dict", "set", "frozenset", "tuple", "int", "float", "object",
                     "bytes", "bytearray", "str", "bool", "complex", "slice"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, scipy sparse matrices and plain containers.

    The Planetoid files are pickles; this refuses anything else, so a tampered
    file cannot run arbitrary code through ``find_class``.
    """

    def find_class(self, module: str, name: str):
        ok = (
            module == "numpy" or module.startswith(("numpy.core", "numpy._core"))
            or (module.startswith("scipy.sparse") and name.endswith(("_matrix", "_array")))
            or (module == "collections" and name in ("defaultdict", "OrderedDict"))
            or (module in ("builtins", "__builtin__") and name in _ALLOWED_BUILTINS)
            or (module in ("copy_reg", "copyreg") and name == "_reconstructor")
        )
        if not ok:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a Planetoid file")
        return super().find_class(module, name)


def _unpickle(path: Path):
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.sparse.csr module path
        return _RestrictedUnpickler(f, encoding="latin1").load()


def _dense(a) -> np.ndarray:
    return np.asarray(a.todense() if hasattr(a, "todense") else a, dtype=np.float32)


# ----------------------------------------------------------------- raw files
def read_planetoid_raw(folder: PathLike, name: str) -> Dict[str, np.ndarray]:
    """Parse ``<folder>/ind.<name>.*`` with PyG ``read_planetoid_data`` semantics.

    Returns numpy arrays: ``x`` ``[N, F]`` float32, ``y`` ``[N]`` int64,
    ``edge_index`` ``[2, E]`` int64 (self loops removed, duplicates merged,
    sorted by (target, source) as in PyG), ``train_index`` / ``val_index`` /
    ``test_index`` (public split: the first ``len(y_train)`` nodes, the next
    500, and the ``test.index`` nodes).

    CiteSeer has test ids with no row in ``tx`` (isolated nodes); as in PyG,
    they get zero features and label 0 and stay out of every mask.
    """
    folder = Path(folder)
    name = name.lower()
    items = {}
    for s in _SUFFIXES:
        path = folder / f"ind.{name}.{s}"
        if s == "test.index":
            items[s] = np.loadtxt(path, dtype=np.int64).reshape(-1)
        else:
            items[s] = _unpickle(path)
    x, tx, allx = (_dense(items[k]) for k in ("x", "tx", "allx"))
    y, ty, ally = (np.asarray(items[k], dtype=np.float32) for k in ("y", "ty", "ally"))
    graph = items["graph"]
    test_index = items["test.index"]
    sorted_test = np.sort(test_index)

    if name == "citeseer":
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext = np.zeros((span, tx.shape[1]), dtype=tx.dtype)
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext = np.zeros((span, ty.shape[1]), dtype=ty.dtype)
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext

    feats = np.concatenate([allx, tx], axis=0)
    labels = np.concatenate([ally, ty], axis=0).argmax(axis=1).astype(np.int64)
    # PyG: x[test_index] = x[sorted_test_index] (the right side is copied first)
    n = labels.shape[0]
    perm = np.arange(n)
    perm[test_index] = sorted_test
    feats, labels = feats[perm], labels[perm]

    rows: List[int] = []
    cols: List[int] = []
    for key, nbrs in graph.items():
        rows.extend([int(key)] * len(nbrs))
        cols.extend(int(v) for v in nbrs)
    edge_index = coalesce_edges(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                                n, remove_self_loops=True)
    num_train = y.shape[0]
    return {
        "x": feats,
        "y": labels,
        "edge_index": edge_index,
        "train_index": np.arange(num_train, dtype=np.int64),
        "val_index": np.arange(num_train, num_train + 500, dtype=np.int64),
        "test_index": np.sort(test_index).astype(np.int64),
    }


def planetoid_candidate_dirs(root: Path, name: str) -> List[Path]:
    """Folders searched under ``root`` for ``ind.<name>.*``, in order."""
    cands = [root / "planetoid"]
    spellings = _DIR_SPELLINGS[name]
    cands += [root / s / "raw" for s in spellings]
    cands += [root / "Planetoid" / s / "raw" for s in spellings]
    cands += [root / s for s in spellings]
    cands.append(root)
    return dedupe(cands)


def find_planetoid_dir(name: str, root: Optional[PathLike]) -> Optional[Path]:
    files = [f"ind.{name}.{s}" for s in _SUFFIXES]
    return first_dir_with(planetoid_candidate_dirs(resolve_root(root), name), files)


# ------------------------------------------------------------ shipped copies
def read_shipped_planetoid(name: str) -> Dict[str, np.ndarray]:
    """The copy shipped in ``graphode/datasets/_data`` (written by ``_pack.py``), same arrays as
    :func:`read_planetoid_raw`."""
    path = SHIPPED_PLANETOID[name]
    with np.load(path) as z:
        n, f = (int(v) for v in z["x_shape"])
        x = sp.csr_matrix((np.ones(z["x_indices"].size, dtype=np.float32),
                           z["x_indices"].astype(np.int64), z["x_indptr"].astype(np.int64)),
                          shape=(n, f)).toarray()
        # edges as CSR over targets: in-edges of node i are sources adj_indices[indptr[i]:indptr[i+1]]
        indptr = z["adj_indptr"].astype(np.int64)
        src = z["adj_indices"].astype(np.int64)
        dst = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        return {
            "x": x,
            "y": z["y"].astype(np.int64),
            "edge_index": np.stack([src, dst]),
            "train_index": z["train_index"].astype(np.int64),
            "val_index": z["val_index"].astype(np.int64),
            "test_index": z["test_index"].astype(np.int64),
        }


def _mask(index: np.ndarray, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.from_numpy(index)] = True
    return m


# --------------------------------------------------------------------- loader
def load_planetoid(
    name: str,
    root: Optional[PathLike] = None,
    split: str = "public",
    seed: Seeds = 0,
    normalize_features: bool = False,
    *,
    lcc_source: str = "planetoid",
    num_dev: int = 1500,
    per_class: int = 20,
    source: str = "auto",
) -> NodeDataset:
    """Load Cora, CiteSeer or PubMed.

    Files: the raw Planetoid files ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``
    (the ones ``torch_geometric.datasets.Planetoid`` reads), searched in
    ``<root>/planetoid/``, ``<root>/<Name>/raw/`` (PyG layout, e.g.
    ``<root>/Cora/raw/``), ``<root>/Planetoid/<Name>/raw/``, ``<root>/<Name>/`` and
    ``<root>/``.  Processing matches PyG: self loops dropped, duplicate edges
    merged, CiteSeer's isolated test ids filled with zero features / label 0.

    ``source="auto"`` (default) reads raw files; when ``root`` is ``None`` and
    none are found under the default root, Cora falls back to the copy shipped
    inside the package.  ``"raw"`` never uses the shipped copy, ``"shipped"``
    always does (Cora only).

    Splits:

    - ``split="public"``: the full graph with the Planetoid split (Cora
      140/500/1000, CiteSeer 120/500/1000, PubMed 60/500/1000); masks ``[N]``.
    - ``split="grand"``: what GRAND's code runs with its published parameters
      (``use_lcc``), Table 1 of the paper as their code ran it: the largest
      connected component and the ``split="random"`` procedure below with the
      fixed seed :data:`GRAND_SPLIT_SEED` (12345); ``seed`` is not used (seeds vary
      the initialisation only).
    - ``split="random"``: GRAND's protocol (Shchur et al.): the graph is cut to
      its largest connected component, then :func:`random_split` draws
      ``num_dev`` (1500) development nodes, ``per_class`` (20) training nodes
      per class among them, the rest of the development set is validation and
      every other node is test.  ``seed`` may be a sequence (masks ``[N, S]``).
      ``node_index`` holds the component's original node ids.

      ``lcc_source`` picks the graph the component is taken from:
      ``"planetoid"`` (default) is what GRAND's code does (``get_dataset``
      takes the LCC of the PyG Planetoid graph): Cora 2485 nodes, CiteSeer 2120.
      ``"npz"`` uses the gnn-benchmark ``.npz`` graph of Shchur et al. instead
      (see :func:`load_npz`; Cora 2485 nodes, CiteSeer 2110, a different node
      order and, for CiteSeer, a different graph).

    Args:
        normalize_features: row-normalise ``x`` (see :func:`row_normalize`), as
            the GCN / deep-GCN code does.

    Returns:
        :class:`NodeDataset` with ``x`` ``[N, F]``, ``y`` ``[N]``,
        ``edge_index`` ``[2, E]`` (both directions; Cora 10556, CiteSeer 9104).
    """
    key = canonical(name, PLANETOID_NAMES, "Planetoid dataset")
    if split not in ("public", "random", "grand"):
        raise ValueError(f"split must be 'public', 'grand' or 'random', got {split!r}")
    split_name = split
    if split == "grand":
        split, seed = "random", GRAND_SPLIT_SEED
    if lcc_source not in ("planetoid", "npz"):
        raise ValueError(f"lcc_source must be 'planetoid' or 'npz', got {lcc_source!r}")
    if source not in ("auto", "raw", "shipped"):
        raise ValueError(f"source must be 'auto', 'raw' or 'shipped', got {source!r}")

    if split == "random" and lcc_source == "npz":
        from ._npz import load_npz

        return load_npz(key, root, split=split_name, seed=seed, num_dev=num_dev, per_class=per_class,
                        normalize_features=normalize_features, source=source)

    arrays, origin = _read(key, root, source)
    x = torch.from_numpy(arrays["x"])
    y = torch.from_numpy(arrays["y"])
    num_classes = int(y.max()) + 1
    info = {"source": origin}
    if split == "random":
        return lcc_dataset(
            key, x, y, arrays["edge_index"], num_classes, seed=seed, num_dev=num_dev,
            per_class=per_class, normalize_features=normalize_features,
            info={**info, "lcc_source": "planetoid"}, split_name=split_name)
    if normalize_features:
        x = row_normalize(x)
    info["normalize_features"] = normalize_features
    n = y.size(0)
    return NodeDataset(
        name=key, x=x, y=y, edge_index=torch.from_numpy(arrays["edge_index"]),
        train_mask=_mask(arrays["train_index"], n), val_mask=_mask(arrays["val_index"], n),
        test_mask=_mask(arrays["test_index"], n), num_classes=num_classes,
        info={**info, "split": "public"},
    )


def _read(key: str, root: Optional[PathLike], source: str):
    if source == "shipped":
        if key not in SHIPPED_PLANETOID:
            raise ValueError(f"no shipped copy of {key!r}; shipped: {', '.join(SHIPPED_PLANETOID)}")
        return read_shipped_planetoid(key), f"shipped:{SHIPPED_PLANETOID[key].name}"
    folder = find_planetoid_dir(key, root)
    if folder is not None:
        return read_planetoid_raw(folder, key), str(folder)
    if source == "auto" and root is None and key in SHIPPED_PLANETOID:
        return read_shipped_planetoid(key), f"shipped:{SHIPPED_PLANETOID[key].name}"
    r = resolve_root(root)
    raise not_found(
        f"the raw Planetoid files for {_DISPLAY[key]} (ind.{key}.{{{','.join(_SUFFIXES)}}})",
        planetoid_candidate_dirs(r, key), explicit_root=root is not None,
        hint="These are the files torch_geometric.datasets.Planetoid downloads into <root>/"
        f"{_DISPLAY[key]}/raw/.",
    )
