"""Where the loaders look for data files.

Every loader takes ``root=None``.  ``None`` means the default root:

1. the ``GRAPHODE_DATA`` environment variable when it is set and non-empty,
2. otherwise the user cache directory ``$XDG_CACHE_HOME/graphode``
   (``~/.cache/graphode`` when ``XDG_CACHE_HOME`` is unset).

Inside a root each loader accepts several layouts (the PyTorch Geometric
``<root>/<Name>/raw/`` layout, the flat layout of a shared data folder such as
``<root>/planetoid/``, and the bare ``<root>/``); see the loader docstrings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]

ENV_VAR = "GRAPHODE_DATA"

#: other names of the datasets (after lower-casing and ``_`` -> ``-``), for every loader
ALIASES = {
    "film": "actor", "cs": "coauthor-cs", "coauthorcs": "coauthor-cs", "ms-academic-cs": "coauthor-cs",
    "physics": "coauthor-physics", "coauthorphysics": "coauthor-physics",
    "amazon-computers": "computers", "amazon-photo": "photo", "arxiv": "ogbn-arxiv",
}


def canonical(name: str, known: Sequence[str], what: str = "dataset") -> str:
    """The canonical name of dataset ``name`` (case, ``_``/``-`` and :data:`ALIASES` folded);
    a ValueError listing ``known`` when it is not one of them."""
    key = name.lower().strip().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in known:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return key


def default_root() -> Path:
    """The data root used when a loader gets ``root=None``.

    Returns ``$GRAPHODE_DATA`` when set, else ``$XDG_CACHE_HOME/graphode``,
    else ``~/.cache/graphode``.  The directory is not created.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()
    return base / "graphode"


def resolve_root(root: Optional[PathLike]) -> Path:
    """``root`` as a :class:`~pathlib.Path`, or :func:`default_root` when ``None``."""
    if root is None:
        return default_root()
    return Path(os.fspath(root)).expanduser()


def first_dir_with(candidates: Iterable[Path], filenames: Sequence[str]) -> Optional[Path]:
    """The first directory of ``candidates`` that contains every file of ``filenames``."""
    for d in candidates:
        if all((d / f).is_file() for f in filenames):
            return d
    return None


def dedupe(paths: Iterable[Path]) -> List[Path]:
    seen = set()
    out = []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def not_found(what: str, looked_in: Sequence[Path], explicit_root: bool, hint: str = "") -> FileNotFoundError:
    """A FileNotFoundError that says where we looked and how to point the loader at data."""
    where = "\n".join(f"  - {p}" for p in looked_in)
    how = (
        "The root was given explicitly; check that it holds the files in one of these layouts."
        if explicit_root
        else f"No root was given, so the default root was searched (${ENV_VAR} if set, "
        "else ~/.cache/graphode)."
    )
    msg = (
        f"Could not find {what}. Looked in:\n{where}\n{how}\n"
        f"Pass root=<folder> to the loader or set the {ENV_VAR} environment variable to the folder "
        "that holds the data."
    )
    if hint:
        msg += "\n" + hint
    return FileNotFoundError(msg)
