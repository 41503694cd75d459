"""Node-classification datasets for graph neural ODEs.

Every loader returns a :class:`NodeDataset` (``x`` ``[N, F]`` float32, ``y``
``[N]`` int64, ``edge_index`` ``[2, E]`` int64 in PyG convention, bool masks
``[N]`` or ``[N, S]`` for ``S`` splits).  Data files are searched under
``root`` or, when ``root=None``, under ``$GRAPHODE_DATA`` or
``~/.cache/graphode`` (:func:`default_root`).  Cora ships with the package, so
``load_dataset("cora")`` works offline.

- :func:`load_dataset` — one entry point by name (:func:`available_datasets`).
- :func:`load_planetoid` — Cora / CiteSeer / PubMed, public or random (GRAND) split.
- :func:`load_npz` — gnn-benchmark ``.npz`` graphs (Shchur et al.), LCC + random split.
- :func:`load_webkb`, :func:`load_actor` — geom-gcn graphs with their 10 splits.
- :func:`load_pyg` — Coauthor / Amazon (PyTorch Geometric) and ogbn-arxiv (OGB).
- :func:`random_split`, :func:`largest_connected_component`, :func:`row_normalize`.
"""

from ._base import NodeDataset, row_normalize
from ._load import available_datasets, load_dataset
from ._npz import load_npz
from ._planetoid import load_planetoid
from ._pyg import load_pyg
from ._root import default_root
from ._splits import GRAND_SPLIT_SEED, SPLIT_PROTOCOLS, largest_connected_component, random_split
from ._webkb import load_actor, load_webkb

__all__ = [
    "GRAND_SPLIT_SEED",
    "NodeDataset",
    "SPLIT_PROTOCOLS",
    "available_datasets",
    "default_root",
    "largest_connected_component",
    "load_actor",
    "load_dataset",
    "load_npz",
    "load_planetoid",
    "load_pyg",
    "load_webkb",
    "random_split",
    "row_normalize",
]
