"""Shared helpers of the deep-GCN reproduction scripts (``experiments/gcn_*.py``).

Every run goes through :func:`graphode.train.build_model` and the trainer
(:class:`graphode.train.Trainer`); results are appended, one JSON line per
run, to a ``.jsonl`` file so that a long grid can be split over several
invocations (finished runs are skipped) and summarised at any time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED_DATA = os.environ.get("GRAPHODE_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "datasets"))

PAPER_NUMBERS_FILE = os.path.join(ROOT, "graphode", "configs", "papers", "deep_gcn.yaml")
_paper_cache: Dict[str, Any] = {}


def paper_numbers() -> Dict[str, Any]:
    """The paper's published figures (``graphode/configs/papers/deep_gcn.yaml``)."""
    if not _paper_cache:
        import yaml

        with open(PAPER_NUMBERS_FILE) as f:
            _paper_cache.update(yaml.safe_load(f))
    return _paper_cache


#: The paper's training settings (Table 1 and the authors' code) for Cora / CiteSeer.
TRAIN = {"optimizer": "adam", "lr": 0.005, "weight_decay": 5e-4, "hidden": 64, "dropout": 0.6}


def common_args(desc: str, epochs: int = 1500, seeds: int = 10) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (paper: 1500; default {epochs})")
    p.add_argument("--seeds", type=int, default=seeds, help=f"seeds 0..S-1 (paper: >= 10; default {seeds})")
    p.add_argument("--out", default=None, help="results .jsonl (appended; finished runs are skipped)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--data-root", default=None, help=f"dataset root (default: {SHARED_DATA} if present)")
    p.add_argument("--summary-only", action="store_true", help="only print the table from --out")
    return p


def data_root(arg: Optional[str]) -> Optional[str]:
    if arg:
        return arg
    return SHARED_DATA if os.path.isdir(SHARED_DATA) else None


def load(name: str, root: Optional[str]):
    """Cora / CiteSeer (public split, row-normalised features) or a geom-gcn graph (10 splits)."""
    from graphode.datasets import load_actor, load_planetoid, load_webkb

    name = name.lower()
    if name in ("cora", "citeseer", "pubmed"):
        return load_planetoid(name, root=root, split="public", normalize_features=True)
    if name in ("actor", "film"):
        return load_actor(root=root)
    return load_webkb(name, root=root)


def key_of(rec: Dict[str, Any], keys: Sequence[str]) -> tuple:
    return tuple(rec.get(k) for k in keys)


#: What a run measured; every other field of a record is what identifies the run.
RESULT_FIELDS = ("test_acc", "val_acc", "best_epoch", "skips", "skip_epochs", "time_s", "epoch_time_s",
                 "probe_time_s", "final_val_acc", "max_test_acc", "budget_curve")


#: The dropout random stream of a run (``graphode.models.gcn.DROPOUT_RNGS``): records
#: written before the fused dropout existed carry no ``dropout_rng`` and used torch's.
LEGACY_DROPOUT_RNG = "torch"


def read_jsonl(path: Optional[str]) -> List[Dict[str, Any]]:
    """The records of ``path``; a run recorded twice (two processes sharing a grid
    finished it both) is kept once, the first time.  Records without ``dropout_rng``
    get ``LEGACY_DROPOUT_RNG``."""
    if not path or not os.path.exists(path):
        return []
    out, ids = [], set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            rec.setdefault("dropout_rng", LEGACY_DROPOUT_RNG)
            ident = json.dumps({k: v for k, v in rec.items() if k not in RESULT_FIELDS}, sort_keys=True)
            if ident not in ids:
                ids.add(ident)
                out.append(rec)
    return out


def append_jsonl(path: Optional[str], rec: Dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def train_one(model_name: str, dataset, config: Dict[str, Any], seed: int, epochs: int,
              extra_callbacks: Iterable = ()) -> Dict[str, Any]:
    """Seed, build ``model_name`` for ``dataset`` with ``config`` and train it.

    The model's own callbacks (``model.callbacks``: the rewiring) are handed to the
    trainer unless it already picked them up.  Returns the trainer's result (without
    the history) plus ``skips`` (layers rewired) and ``time_s``.

    ``config["rewiring_protocol"]``: ``"online"`` (default: the rewiring callback adds
    each skip during training, when its layer is flagged) or ``"restart"`` (the
    authors' code: a probe run of ``rewiring_probe_epochs`` (200) epochs only
    *records* the flagged layers, then a fresh model, same seed, same init, is
    trained with those skips from epoch 0 and no rewiring callback).
    """
    from graphode.train import Trainer, seed_everything
    from graphode.train import build_model as build  # the model, its config's callbacks in model.callbacks

    cfg = {**TRAIN, **config}
    t0 = time.perf_counter()
    probe = None
    if cfg.get("rewiring_protocol", "online") == "restart" and cfg.get("rewiring") not in (None, "none"):
        from graphode.callbacks import probe_skips
        from graphode.callbacks.skip_rewiring import from_config as _rewiring_from_config

        probe_epochs = int(cfg.get("rewiring_probe_epochs") or 200)
        seed_everything(seed)
        probe_model = build(model_name, dataset, {**cfg, "rewiring": None})
        rw = _rewiring_from_config({**cfg, "rewiring_probe_epochs": None})
        rw.apply = False
        found = probe_skips(probe_model, dataset, rw, epochs=probe_epochs, lr=cfg["lr"],
                            weight_decay=cfg["weight_decay"])
        probe = {"skips": found, "skip_epochs": {str(k): v for k, v in sorted(rw.skips.items())},
                 "time_s": time.perf_counter() - t0}
        cfg = {**cfg, "rewiring": None, "skips": found}
    seed_everything(seed)
    model = build(model_name, dataset, cfg)
    extra = list(extra_callbacks)
    tr = Trainer(model, dataset, cfg, callbacks=extra, seed=seed)
    for cb in getattr(model, "callbacks", []) or []:
        if not any(c is cb for c in tr.callbacks):
            tr.callbacks.append(cb)
    res = tr.fit(epochs=epochs, progress=False)
    hist = res.get("history") or []
    # a diagnostic only, never a selection: the highest test accuracy of any epoch (the
    # authors' train.py prints it as "Best Overall" next to the best-validation figure)
    res["max_test_acc"] = max((h["test_acc"] for h in hist), default=float("nan"))
    res["budget_curve"] = budget_curve(hist)
    res = {k: v for k, v in res.items() if k != "history"}
    res["time_s"] = time.perf_counter() - t0
    res["skips"] = list(getattr(model, "skips", []) or [])
    for cb in getattr(model, "callbacks", []) or []:  # {layer: epoch it was rewired}
        if isinstance(getattr(cb, "skips", None), dict):
            res["skip_epochs"] = {str(k): v for k, v in sorted(cb.skips.items())}
    if probe is not None:  # the epochs of the probe run at which the layers were flagged
        res["skip_epochs"] = probe["skip_epochs"]
        res["probe_time_s"] = round(probe["time_s"], 2)
    res["_model"] = model
    return res


#: epoch budgets at which :func:`budget_curve` reads a run (a run of E epochs is, for its
#: first K <= E epochs, the run of K epochs: same seed, same random stream)
BUDGETS = (200, 400, 800, 1000, 1500, 2000, 2500, 3000, 3500)


def budget_curve(history: Sequence[Dict[str, Any]]) -> Dict[str, List[float]]:
    """``{str(K): [best epoch, val acc, test acc]}``: what the run would report had it been
    trained for K epochs (the first best validation accuracy among epochs < K)."""
    out: Dict[str, List[float]] = {}
    best = (-1, -math.inf, float("nan"))
    for e, h in enumerate(history):
        if h["val_acc"] > best[1]:
            best = (e, h["val_acc"], h["test_acc"])
        if e + 1 in BUDGETS:
            out[str(e + 1)] = [best[0], best[1], best[2]]
    return out


def run_grid(jobs: List[Dict[str, Any]], out: Optional[str], keys: Sequence[str], epochs: int,
             root: Optional[str]) -> List[Dict[str, Any]]:
    """Run every job (dict with ``dataset``, ``model``, ``seed``, ``split`` (optional) and
    config keys) not already in ``out``; returns all records (old and new)."""
    done: List[Dict[str, Any]] = []
    seen: set = set()
    cache: Dict[str, Any] = {}
    stamp: Any = "unread"
    for job in jobs:
        if "dropout_rng" not in job:  # record the stream the run uses (the GCN's default: philox)
            job = with_rng(job, "philox")
        # Re-read --out when it changed: another process working on the same grid
        # (e.g. one started with --reverse) may have finished this job meanwhile.
        now = os.stat(out).st_mtime_ns if out and os.path.exists(out) else None
        if now != stamp:
            stamp, done = now, read_jsonl(out)
            seen = {key_of(r, keys) for r in done if r.get("epochs_cfg") == epochs}
        k = key_of({**job, "epochs_cfg": epochs}, keys)
        if k in seen:
            continue
        name = job["dataset"]
        if name not in cache:
            cache[name] = load(name, root)
        ds = cache[name]
        if ds.train_mask.dim() == 2:
            ds = ds.split(int(job.get("split", 0)))
        cfg = {k2: v for k2, v in job.items() if k2 not in ("dataset", "model", "seed", "split")}
        r = train_one(job["model"], ds, cfg, int(job["seed"]), epochs)
        r.pop("_model", None)
        rec = {**job, "epochs_cfg": epochs, "test_acc": r["test_acc"], "val_acc": r["val_acc"],
               "best_epoch": r["best_epoch"], "skips": r["skips"], "skip_epochs": r.get("skip_epochs"),
               "time_s": round(r["time_s"], 2),
               "epoch_time_s": r["epoch_time_s"], "max_test_acc": r["max_test_acc"],
               "budget_curve": r["budget_curve"]}
        if "probe_time_s" in r:
            rec["probe_time_s"] = r["probe_time_s"]
        append_jsonl(out, rec)
        done.append(rec)
        seen.add(k)
        print(json.dumps(rec), flush=True)
    return done


def aggregate(records: List[Dict[str, Any]], keys: Sequence[str], epochs: Optional[int] = None,
              patience: Any = "any", dropout_rng: Optional[str] = None):
    """``{key tuple: (mean %, std %, n)}`` over seeds (population std, as numpy), over the
    runs with ``epochs`` (None: any), ``patience`` ("any": any) and ``dropout_rng``
    (None: any; applies to graphode's GCN runs, the PyG baselines use F.dropout: a
    table must not mix two random streams of one model)."""
    groups: Dict[tuple, List[float]] = {}
    for r in records:
        if epochs is not None and r.get("epochs_cfg") != epochs:
            continue
        if patience != "any" and r.get("patience") != patience:
            continue
        if (dropout_rng is not None and r.get("model") == "gcn"
                and r.get("dropout_rng", LEGACY_DROPOUT_RNG) != dropout_rng):
            continue
        groups.setdefault(key_of(r, keys), []).append(100.0 * float(r["test_acc"]))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def fmt(cell) -> str:
    if cell is None:
        return "—"
    m, s, n = cell
    return f"{m:.1f} ± {s:.1f}" if not math.isnan(m) else "—"


def setup_threads(n: int) -> None:
    torch.set_num_threads(max(1, int(n)))


def base_parser(desc: str, epochs: int, seeds: int, patience: Optional[int]) -> argparse.ArgumentParser:
    p = common_args(desc, epochs=epochs, seeds=seeds)
    p.add_argument("--patience", type=int, default=patience,
                   help="stop a run after this many epochs without a better validation accuracy "
                        f"(the paper: none; default {patience})")
    p.add_argument("--part", type=int, default=0, help="run only jobs part::nparts (for parallel processes)")
    p.add_argument("--nparts", type=int, default=1)
    p.add_argument("--dropout-rng", default="philox", choices=("philox", "torch"),
                   help="dropout masks of the GCN runs: philox (graphode.ops.dropout, the default) or torch "
                        "(rand_like, the stream of the runs recorded before 2026-12-03; use it to extend those "
                        "tables).  Baselines (PyG) always use F.dropout and are recorded as torch.")
    p.add_argument("--reverse", action="store_true",
                   help="run the grid from its last job backwards; a second process with --reverse on the same "
                        "--out shares the grid with a forward one (each skips what the other has finished)")
    return p


def with_rng(job: Dict[str, Any], rng: str) -> Dict[str, Any]:
    """``job`` with its ``dropout_rng``: ``rng`` for graphode's GCN, ``"torch"`` for the PyG
    baselines (their ``F.dropout``)."""
    return {**job, "dropout_rng": rng if job.get("model") == "gcn" else "torch"}


def select_jobs(jobs: List[Dict[str, Any]], args) -> List[Dict[str, Any]]:
    """The jobs of this process: ``--part``/``--nparts`` slice, in ``--reverse`` order if asked;
    each job gets its ``dropout_rng`` (``--dropout-rng``, see :func:`with_rng`)."""
    rng = getattr(args, "dropout_rng", None)
    if rng is not None:
        jobs = [with_rng(j, rng) for j in jobs]
    mine = jobs[args.part::args.nparts]
    return mine[::-1] if getattr(args, "reverse", False) else mine


def method_rows(agg, methods, cells, key, paper, paper_cells) -> List[List[str]]:
    """The rows of a method-by-cell table: for every method of ``methods`` with a result, its
    measured cells (``agg[key(cell, method)]``, see :func:`aggregate`), then the paper's numbers
    (``paper[method][paper_cells.index(cell)]``, "—" for a cell the paper has not)."""
    rows = []
    for m in methods:
        if not any(key(c, m) in agg for c in cells):
            continue
        rows.append([m] + [fmt(agg.get(key(c, m))) for c in cells])
        if m in paper:
            rows.append(["  paper"] + [f"{paper[m][paper_cells.index(c)]:.1f}" if c in paper_cells else "—"
                                       for c in cells])
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ours_config(**over) -> Dict[str, Any]:
    """"Ours" (topology-aware init + gradient-guided rewiring) as measured in
    docs/RESULTS.md: the code's init bound (the paper's eq. 14 does not train
    deep models, see Table 2) and the paper's gradient-flow rule with p = 0.1,
    checked every epoch.  ``rewiring="dirichlet_energy"`` gives the code's rule."""
    cfg = {"model": "gcn", "init": "isometric-code", "rewiring": "gradient_flow", "rewiring_p": 0.1,
           "rewiring_alpha": 1.0}
    cfg.update(over)
    return cfg


#: Model configs of the methods the tables compare, by their name in the tables.
METHODS = {
    "Vanilla GCN": {"model": "gcn", "init": "glorot"},
    "GCN": {"model": "gcn", "init": "glorot"},  # Table 6's name of the vanilla GCN
    # the PyG-layer baselines (graphode.models.baselines), by table name -> model name
    **{name: {"model": model} for name, model in (
        ("Residual", "gcn-residual"), ("Initial", "gcn-initial"), ("Jumping", "gcn-jumping"), ("Dense", "gcn-dense"),
        ("BatchNorm", "gcn-batchnorm"), ("PairNorm", "gcn-pairnorm"), ("DropEdge", "gcn-dropedge"), ("GAT", "gat"),
        ("JKNet", "jknet"), ("SGC", "sgc"), ("GCNII", "gcnii"), ("APPNP", "appnp"))},
    "Ours (init + rewiring)": ours_config(),
    "Ours, DE rule (code)": ours_config(rewiring="dirichlet_energy"),
}


def methods(*names: str) -> Dict[str, Dict[str, Any]]:
    """``{name: model config}`` of the methods ``names`` (from :data:`METHODS`), in that order."""
    return {n: dict(METHODS[n]) for n in names}


PAPER_FILE = os.path.join(HERE, "gcn_paper.yaml")


def paper(table: str) -> Dict[Any, List[float]]:
    """The paper's numbers of ``table`` (``"table2"``, ...) from ``gcn_paper.yaml``:
    ``{row key: [test accuracy %, one per column]}`` (a list key becomes a tuple)."""
    import yaml

    with open(PAPER_FILE) as f:
        rows = yaml.safe_load(f)[table]["rows"]
    return {tuple(r["key"]) if isinstance(r["key"], list) else r["key"]: [float(x) for x in r["numbers"]]
            for r in rows}


def register_baselines() -> None:
    """Make the baselines buildable by name even before graphode.models.MODELS lists them."""
    from graphode.models import MODELS, register_model
    from graphode.models.baselines import BASELINE_MODELS

    for k, v in BASELINE_MODELS.items():
        if k not in MODELS:
            register_model(k, v)
