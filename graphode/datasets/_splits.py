"""Random splits (GRAND / Shchur et al.), largest connected component, edge helpers."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

__all__ = ["random_split", "largest_connected_component", "GRAND_SPLIT_SEED", "SPLIT_PROTOCOLS"]

#: The seed of the one split GRAND's code draws on the largest connected component when it
#: loads a dataset (``data.get_dataset``: ``set_train_val_test_split(12345, ...)``); with the
#: published parameters this is the split their Table 1 ("Planetoid split") ran on.
GRAND_SPLIT_SEED = 12345

#: Split protocols of the node-classification datasets (``load_dataset(split=...)``):
#: ``"public"`` (the dataset's published masks, full graph), ``"grand"`` (largest
#: connected component, the Shchur/GRAND split drawn with :data:`GRAND_SPLIT_SEED`; seeds
#: vary the initialisation only), ``"random"`` (largest connected component, one split per
#: seed).
SPLIT_PROTOCOLS = ("public", "grand", "random")

ArrayLike = Union[Tensor, np.ndarray, Sequence[int]]
Seeds = Union[int, Sequence[int]]


def _np(a: ArrayLike) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


# --------------------------------------------------------------------- edges
def coalesce_edges(row: np.ndarray, col: np.ndarray, num_nodes: int,
                   remove_self_loops: bool = False) -> np.ndarray:
    """Unique directed edges sorted by (target, source), as a ``[2, E]`` int64 array.

    (target, source) order is the CSR order of :class:`graphode.Graph` (rows are
    targets), so ``Graph.from_edge_index`` keeps the edge order, and it is the
    order PyG's Planetoid ``edge_index`` has.
    """
    row = np.asarray(row, dtype=np.int64)
    col = np.asarray(col, dtype=np.int64)
    if remove_self_loops:
        keep = row != col
        row, col = row[keep], col[keep]
    if row.size and (min(row.min(), col.min()) < 0 or max(row.max(), col.max()) >= num_nodes):
        raise ValueError(f"edge endpoints out of range for {num_nodes} nodes")
    key = np.unique(col * num_nodes + row)
    return np.stack([key % num_nodes, key // num_nodes]).astype(np.int64)


def symmetrize_edges(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Add the reverse of every edge; result unique, sorted by (target, source), ``[2, E']``."""
    row, col = edge_index
    return coalesce_edges(np.concatenate([row, col]), np.concatenate([col, row]), num_nodes)


def subgraph(edge_index: np.ndarray, nodes: np.ndarray, num_nodes: int) -> np.ndarray:
    """Edges with both ends in ``nodes`` (sorted ids), relabelled to ``0..len(nodes)-1``."""
    new_id = np.full(num_nodes, -1, dtype=np.int64)
    new_id[nodes] = np.arange(nodes.size)
    row, col = new_id[edge_index[0]], new_id[edge_index[1]]
    keep = (row >= 0) & (col >= 0)
    return np.stack([row[keep], col[keep]]).astype(np.int64)


# ------------------------------------------------------------------------ LCC
def largest_connected_component(edge_index: ArrayLike, num_nodes: int) -> Tensor:
    """Sorted ids (``[M]`` int64) of the nodes of the largest connected component.

    Edges are taken as undirected (weak connectivity), computed with
    :func:`scipy.sparse.csgraph.connected_components`.  Ties go to the component
    holding the smallest node id.  This is the node set GRAND's
    ``get_largest_connected_component`` finds on symmetric graphs, in the same
    (ascending) order.
    """
    ei = _np(edge_index).astype(np.int64).reshape(2, -1)
    adj = sp.coo_matrix((np.ones(ei.shape[1], dtype=np.int8), (ei[0], ei[1])),
                        shape=(num_nodes, num_nodes)).tocsr()
    _, labels = connected_components(adj, directed=False)
    # labels are numbered in order of first appearance, so argmax's first-max
    # rule picks the component with the smallest node id among ties.
    sizes = np.bincount(labels)
    nodes = np.flatnonzero(labels == int(np.argmax(sizes)))
    return torch.from_numpy(nodes.astype(np.int64))


# --------------------------------------------------------------------- splits
def _one_split(y: np.ndarray, num_dev: int, per_class: int, seed: int,
               num_classes: Optional[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = y.shape[0]
    if num_dev > n:
        raise ValueError(f"num_dev={num_dev} exceeds the number of nodes ({n})")
    rng = np.random.RandomState(seed)
    dev = rng.choice(n, num_dev, replace=False)
    rng = np.random.RandomState(seed)  # GRAND re-seeds before the per-class draw
    c_max = int(y.max()) + 1 if num_classes is None else int(num_classes)
    train = []
    for c in range(c_max):
        cls = dev[y[dev] == c]
        if cls.size < per_class:
            raise ValueError(
                f"class {c} has {cls.size} node(s) among the {num_dev} development nodes drawn "
                f"with seed {seed}; cannot take {per_class} training nodes per class"
            )
        train.extend(rng.choice(cls, per_class, replace=False).tolist())
    train_m = np.zeros(n, dtype=bool)
    train_m[train] = True
    dev_m = np.zeros(n, dtype=bool)
    dev_m[dev] = True
    return train_m, dev_m & ~train_m, ~dev_m


def random_split(
    y: ArrayLike,
    num_dev: int = 1500,
    per_class: int = 20,
    seed: Seeds = 0,
    num_classes: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Random train/val/test masks per Shchur et al. (2018), exactly as GRAND's code draws them.

    Over all ``N`` nodes given (GRAND passes the largest connected component):

    1. draw ``num_dev`` development nodes without replacement
       (``np.random.RandomState(seed).choice``; 1500, or 5000 for Coauthor CS);
    2. with a fresh ``RandomState(seed)``, take ``per_class`` training nodes of
       each class ``c = 0 .. num_classes-1`` from the development nodes;
    3. the other development nodes are validation;
    4. every node outside the development set is test.

    The same seed gives the same masks as GRAND's ``set_train_val_test_split``.

    Args:
        y: ``[N]`` integer labels.
        num_dev: development-set size.
        per_class: training nodes per class.
        seed: an int, or a sequence of ints for several splits.
        num_classes: classes to sample (default ``int(y.max()) + 1``).

    Returns:
        ``(train_mask, val_mask, test_mask)``, bool tensors of shape ``[N]``
        for an int seed, ``[N, S]`` for ``S`` seeds.  Disjoint; they cover all nodes.
    """
    yy = _np(y).astype(np.int64).reshape(-1)
    if isinstance(seed, (int, np.integer)):
        tr, va, te = _one_split(yy, num_dev, per_class, int(seed), num_classes)
        return torch.from_numpy(tr), torch.from_numpy(va), torch.from_numpy(te)
    seeds = [int(s) for s in seed]
    if not seeds:
        raise ValueError("seed must be an int or a non-empty sequence of ints")
    parts = [_one_split(yy, num_dev, per_class, s, num_classes) for s in seeds]
    return tuple(torch.from_numpy(np.stack([p[k] for p in parts], axis=1)) for k in range(3))  # type: ignore[return-value]


# ------------------------------------------------------------ dataset helpers
def dense_features(x) -> Tensor:
    """``[N, F]`` float32 tensor from a tensor, numpy array or scipy sparse matrix."""
    if sp.issparse(x):
        x = x.toarray()
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x.to(torch.float32)


def lcc_dataset(
    name: str,
    x,
    y: Tensor,
    edge_index: np.ndarray,
    num_classes: int,
    *,
    seed: Optional[Seeds],
    num_dev: int = 1500,
    per_class: int = 20,
    largest_component: bool = True,
    normalize_features: bool = False,
    info: Optional[dict] = None,
    split_name: str = "random",
):
    """Restrict to the largest connected component (optional) and draw random splits
    (``split_name`` is recorded in ``info["split"]``: "random" or "grand").

    ``seed=None`` draws no split (all-False ``[N]`` masks).  ``x`` may be a tensor, a numpy array or a scipy sparse matrix (``[N, F]``);
    rows are selected before densifying.
    """
    from ._base import NodeDataset, row_normalize

    n = y.shape[0]
    node_index = None
    if largest_component:
        nodes = largest_connected_component(edge_index, n).numpy()
        if nodes.size != n:
            edge_index = subgraph(edge_index, nodes, n)
            x = x[torch.from_numpy(nodes)] if isinstance(x, Tensor) else x[nodes]
            y = y[torch.from_numpy(nodes)]
            node_index = torch.from_numpy(nodes)
    x = dense_features(x)
    if normalize_features:
        x = row_normalize(x)
    meta = dict(info or {})
    meta.update(largest_component=largest_component, normalize_features=normalize_features)
    if seed is None:
        tr = torch.zeros(y.shape[0], dtype=torch.bool)
        va, te = tr.clone(), tr.clone()
        meta.update(split=None)
    else:
        tr, va, te = random_split(y, num_dev=num_dev, per_class=per_class, seed=seed)
        meta.update(split=split_name, seed=seed, num_dev=num_dev, per_class=per_class)
    return NodeDataset(
        name=name, x=x, y=y, edge_index=torch.from_numpy(np.ascontiguousarray(edge_index)),
        train_mask=tr, val_mask=va, test_mask=te, num_classes=num_classes,
        node_index=node_index, info=meta,
    )
