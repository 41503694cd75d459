"""Datasets read through PyTorch Geometric (Coauthor, Amazon) or OGB (ogbn-arxiv).

Both libraries are optional: they are imported only when these loaders run.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .._io import weights_only_loads
from ..errors import DataError
from ._base import NodeDataset, row_normalize
from ._root import PathLike, canonical, resolve_root
from ._splits import GRAND_SPLIT_SEED, Seeds, coalesce_edges, lcc_dataset, symmetrize_edges

__all__ = ["load_pyg", "PYG_NAMES", "raw_file_path"]

#: canonical name -> (torch_geometric.datasets class, its ``name`` argument, raw file)
_PYG = {
    "coauthor-cs": ("Coauthor", "CS", "ms_academic_cs.npz"),
    "coauthor-physics": ("Coauthor", "Physics", "ms_academic_phy.npz"),
    "computers": ("Amazon", "Computers", "amazon_electronics_computers.npz"),
    "photo": ("Amazon", "Photo", "amazon_electronics_photo.npz"),
}
_OGB = ("ogbn-arxiv",)
PYG_NAMES = tuple(_PYG) + _OGB
_NUM_DEV = {"coauthor-cs": 5000}


def _import(module: str, what: str, extra: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            f"{what} needs the optional dependency '{pip_name}', which could not be imported ({e}). "
            f"Install it with: pip install 'graphode[{extra}]'  (or: pip install {pip_name})"
        ) from e


@contextlib.contextmanager
def _safe_cache(processed: Path):
    """PyG and OGB cache processed datasets as torch/pickle files and reload them
    (PyG falls back to ``torch.load(weights_only=False)`` when the safe load fails):
    within this block every ``torch.load`` is forced to ``weights_only=True``, and a
    refused file is a :class:`DataError` naming the cache folder."""
    try:
        with weights_only_loads():
            yield
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it asks to import {found.group(1)}" if found else "it holds more than tensors and plain data"
        raise DataError(
            f"refusing to load the processed dataset cache in {processed}: {what}, and graphode loads only "
            "tensors and plain data from files, never code; delete that folder to rebuild it from the raw files"
        ) from None


def raw_file_path(name: str, root: Optional[PathLike] = None) -> Optional[Path]:
    """Where :func:`load_pyg` looks for the raw file of the PyG dataset ``name`` (and where
    PyG downloads it); None for ogbn-arxiv and for names that are not PyG datasets."""
    try:
        key = canonical(name, tuple(_PYG))
    except ValueError:
        return None
    _, pyg_name, raw = _PYG[key]
    return resolve_root(root) / pyg_name / "raw" / raw


def load_pyg(
    name: str,
    root: Optional[PathLike] = None,
    split: Optional[str] = None,
    seed: Seeds = 0,
    *,
    largest_component: bool = True,
    num_dev: Optional[int] = None,
    per_class: int = 20,
    normalize_features: bool = False,
    download: bool = True,
) -> NodeDataset:
    """Load Coauthor CS / Physics, Amazon Computers / Photo (PyG) or ogbn-arxiv (OGB).

    ``root`` is handed to the library (default: :func:`default_root`), so the
    files live in its usual layout: ``<root>/CS/raw/ms_academic_cs.npz``,
    ``<root>/Computers/raw/amazon_electronics_computers.npz``, ...,
    ``<root>/ogbn_arxiv/``.  The library downloads missing files when
    ``download=True``; with ``download=False`` a missing file raises
    :class:`FileNotFoundError` instead.

    Splits (``split=None`` picks the dataset's standard one):

    - Coauthor / Amazon: ``"random"``, GRAND's protocol: largest connected
      component (``largest_component``), then :func:`random_split` with
      ``num_dev`` development nodes (5000 for Coauthor CS, else 1500) and
      ``per_class`` training nodes per class.  ``seed`` may be a sequence
      (masks ``[N, S]``); ``"grand"``: the same drawn once with GRAND's fixed
      seed 12345 (what their code runs).
    - ogbn-arxiv: ``"official"`` (alias ``"public"``), the OGB time split; edges
      are symmetrised as GRAND does, no LCC.

    Requires ``torch_geometric`` (extra ``graphode[pyg]``) or ``ogb`` (extra
    ``graphode[ogb]``); a clear :class:`ImportError` says so when missing.

    Returns:
        :class:`NodeDataset` with ``x`` ``[N, F]``, ``y`` ``[N]``, ``edge_index`` ``[2, E]``.
    """
    key = canonical(name, PYG_NAMES, "PyG/OGB dataset")
    r = resolve_root(root)
    if key in _OGB:
        return _load_ogb(key, r, split, normalize_features, download)

    if split not in (None, "random", "grand"):
        raise ValueError(f"{key} has no public split; split must be 'random', 'grand' (or None), got {split!r}")
    split_name = split or "random"
    if split == "grand":  # GRAND's code: one split drawn with a fixed seed
        seed = GRAND_SPLIT_SEED
    cls_name, pyg_name, raw_file = _PYG[key]
    if not download:
        raw = r / pyg_name / "raw" / raw_file
        processed = r / pyg_name / "processed"
        if not raw.is_file() and not processed.is_dir():
            raise FileNotFoundError(
                f"{raw} not found and download=False. Put {raw_file} in <root>/{pyg_name}/raw/ "
                "(pass root=<folder> or set GRAPHODE_DATA) or allow downloading."
            )
    datasets = _import("torch_geometric.datasets", f"load_pyg({name!r})", "pyg", "torch_geometric")
    with _safe_cache(r / pyg_name / "processed"):
        ds = getattr(datasets, cls_name)(str(r), pyg_name)
    data = ds[0]
    n = int(data.num_nodes)
    edge_index = coalesce_edges(*data.edge_index.cpu().numpy(), n)
    y = data.y.cpu().reshape(-1).to(torch.int64)
    return lcc_dataset(
        key, data.x.cpu().to(torch.float32), y, edge_index, int(y.max()) + 1, seed=seed,
        num_dev=_NUM_DEV.get(key, 1500) if num_dev is None else num_dev, per_class=per_class,
        largest_component=largest_component, normalize_features=normalize_features,
        info={"source": str(r / pyg_name), "loader": f"torch_geometric.datasets.{cls_name}"},
        split_name=split_name,
    )


def _load_ogb(key: str, root: Path, split: Optional[str], normalize_features: bool,
              download: bool) -> NodeDataset:
    if split not in (None, "official", "public"):
        raise ValueError(f"{key} uses its official split; split must be 'official' (or None), got {split!r}")
    folder = root / key.replace("-", "_")
    if not download and not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found and download=False. Pass root=<folder holding {folder.name}/> "
            "(or set GRAPHODE_DATA) or allow downloading."
        )
    nodeproppred = _import("ogb.nodeproppred", f"load_pyg({key!r})", "ogb", "ogb")
    with _safe_cache(folder / "processed"):
        ds = nodeproppred.NodePropPredDataset(name=key, root=str(root))
    graph, labels = ds[0]
    n = int(graph["num_nodes"])
    edge_index = symmetrize_edges(coalesce_edges(*np.asarray(graph["edge_index"]), n), n)
    x = torch.from_numpy(np.asarray(graph["node_feat"], dtype=np.float32))
    if normalize_features:
        x = row_normalize(x)
    y = torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64))
    idx = ds.get_idx_split()
    masks = {}
    for mkey, skey in (("train_mask", "train"), ("val_mask", "valid"), ("test_mask", "test")):
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.as_tensor(np.asarray(idx[skey]), dtype=torch.int64)] = True
        masks[mkey] = m
    return NodeDataset(
        name=key, x=x, y=y, edge_index=torch.from_numpy(edge_index), num_classes=int(y.max()) + 1,
        **masks, info={"source": str(folder), "loader": "ogb.nodeproppred.NodePropPredDataset",
                       "split": "official", "normalize_features": normalize_features},
    )
