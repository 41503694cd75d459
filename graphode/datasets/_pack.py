"""Write the compact copies of Cora shipped in ``graphode/datasets/_data``.

Usage (from the repository root)::

    python -m graphode.datasets._pack --root ../shared/datasets

reads ``<root>/planetoid/ind.cora.*`` (or any layout :func:`load_planetoid`
accepts) and ``<root>/npz/cora.npz`` and writes

- ``_data/cora.npz``: the processed Planetoid Cora (``read_planetoid_raw``),
  features as CSR column indices (int16; all values are 1), edges as CSR over
  targets (int16 sources, int32 pointers), labels int8, public split indices int16;
- ``_data/cora_gnnbench.npz``: the gnn-benchmark cora.npz, unchanged except
  that the all-ones ``adj_data`` / ``attr_data`` are dropped and indices narrowed
  (``read_npz`` reads it as the original).

Both are checked to round-trip exactly before they are written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._npz import NPZ_FILES, SHIPPED_NPZ, find_npz, read_npz
from ._planetoid import SHIPPED_PLANETOID, find_planetoid_dir, read_planetoid_raw, read_shipped_planetoid


def _narrow(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    for dt in (np.int8, np.int16, np.int32):
        if a.size == 0 or (a.min() >= np.iinfo(dt).min and a.max() <= np.iinfo(dt).max):
            return a.astype(dt)
    return a.astype(np.int64)


def pack_planetoid(name: str, root, out: Path) -> Path:
    folder = find_planetoid_dir(name, root)
    if folder is None:
        raise FileNotFoundError(f"no raw Planetoid files for {name} under {root}")
    a = read_planetoid_raw(folder, name)
    x = a["x"]
    if not np.isin(x, (0.0, 1.0)).all():
        raise ValueError(f"{name}: features are not binary; the compact format stores indices only")
    n, f = x.shape
    xr, xc = np.nonzero(x)  # row-major: sorted by row, then column
    x_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(xr, minlength=n), out=x_indptr[1:])
    src, dst = a["edge_index"]  # sorted by (target, source)
    adj_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=adj_indptr[1:])
    np.savez_compressed(
        out,
        x_shape=np.array([n, f], dtype=np.int32),
        x_indptr=x_indptr.astype(np.int32),
        x_indices=_narrow(xc),
        adj_indptr=adj_indptr.astype(np.int32),
        adj_indices=_narrow(src),
        y=_narrow(a["y"]),
        train_index=_narrow(a["train_index"]),
        val_index=_narrow(a["val_index"]),
        test_index=_narrow(a["test_index"]),
    )
    return out


def pack_npz(name: str, root, out: Path) -> Path:
    path = find_npz(name, root)
    if path is None:
        raise FileNotFoundError(f"no {NPZ_FILES[name][0]} under {root}")
    with np.load(path, allow_pickle=False) as z:
        if not (np.all(z["adj_data"] == 1) and np.all(z["attr_data"] == 1)):
            raise ValueError(f"{path}: adj/attr values are not all 1; cannot drop them")
        arrays = {
            "adj_indices": _narrow(z["adj_indices"]), "adj_indptr": z["adj_indptr"].astype(np.int32),
            "adj_shape": z["adj_shape"].astype(np.int64),
            "attr_indices": _narrow(z["attr_indices"]), "attr_indptr": z["attr_indptr"].astype(np.int32),
            "attr_shape": z["attr_shape"].astype(np.int64),
            "labels": _narrow(z["labels"]),
        }
    np.savez_compressed(out, **arrays)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="data root holding planetoid/ and npz/")
    args = ap.parse_args(argv)
    root = Path(args.root)
    SHIPPED_PLANETOID["cora"].parent.mkdir(parents=True, exist_ok=True)

    raw = read_planetoid_raw(find_planetoid_dir("cora", root), "cora")
    pack_planetoid("cora", root, SHIPPED_PLANETOID["cora"])
    shipped = read_shipped_planetoid("cora")
    for k, v in raw.items():
        if not np.array_equal(v, shipped[k]) or v.dtype != shipped[k].dtype:
            raise AssertionError(f"shipped cora differs from the raw files in {k}")

    pack_npz("cora", root, SHIPPED_NPZ["cora"])
    a, b = read_npz(find_npz("cora", root)), read_npz(SHIPPED_NPZ["cora"])
    if not ((a["x"] != b["x"]).nnz == 0 and np.array_equal(a["y"], b["y"])
            and np.array_equal(a["edge_index"], b["edge_index"])):
        raise AssertionError("shipped cora_gnnbench differs from cora.npz")

    for p in (SHIPPED_PLANETOID["cora"], SHIPPED_NPZ["cora"]):
        print(f"wrote {p} ({p.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
