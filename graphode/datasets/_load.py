"""``load_dataset``: one entry point by name."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ._base import NodeDataset
from ._planetoid import PLANETOID_NAMES, load_planetoid
from ._pyg import PYG_NAMES, load_pyg
from ._root import PathLike, canonical
from ._splits import Seeds
from ._webkb import WEBKB_NAMES, load_actor, load_webkb

__all__ = ["load_dataset", "available_datasets"]


def available_datasets() -> Tuple[str, ...]:
    """Canonical names accepted by :func:`load_dataset` (aliases: film, cs, arxiv, amazon-*)."""
    return PLANETOID_NAMES + WEBKB_NAMES + ("actor",) + PYG_NAMES


def canonical_name(name: str) -> str:
    """The canonical name of any dataset :func:`load_dataset` knows (aliases folded)."""
    return canonical(name, available_datasets())


def load_dataset(
    name: str,
    root: Optional[PathLike] = None,
    split: Optional[str] = None,
    seed: Seeds = 0,
    **kwargs: Any,
) -> NodeDataset:
    """Load a node-classification dataset by name.

    ==========================================  ===================  ==========================
    name                                        loader               ``split`` (None = default)
    ==========================================  ===================  ==========================
    cora, citeseer, pubmed                      :func:`load_planetoid`  ``"public"`` / ``"grand"`` / ``"random"``
    texas, cornell, wisconsin                   :func:`load_webkb`   ``"geom-gcn"`` (10 splits)
    actor (film)                                :func:`load_actor`   ``"geom-gcn"`` (10 splits)
    coauthor-cs, coauthor-physics,              :func:`load_pyg`     ``"random"`` (LCC)
    computers, photo                                                 (or ``"grand"``)
    ogbn-arxiv                                  :func:`load_pyg`     ``"official"``
    ==========================================  ===================  ==========================

    ``seed`` is used by random splits only (an int, or a sequence for ``[N, S]``
    masks).  Other keyword arguments go to the loader (e.g.
    ``normalize_features=True``).  ``root=None`` searches :func:`default_root`.

    Raises:
        ValueError: unknown name (the message lists the known ones) or split.
        FileNotFoundError: data files not found (the message says where it looked).
    """
    key = canonical_name(name)
    if key in PLANETOID_NAMES:
        return load_planetoid(key, root, split="public" if split is None else split, seed=seed, **kwargs)
    if key in WEBKB_NAMES or key == "actor":
        if split not in (None, "geom-gcn", "public"):
            raise ValueError(f"{key} comes with the 10 geom-gcn splits; split must be 'geom-gcn' or None")
        return load_actor(root, **kwargs) if key == "actor" else load_webkb(key, root, **kwargs)
    return load_pyg(key, root, split=split, seed=seed, **kwargs)
