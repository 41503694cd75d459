"""Shared helpers of the GRAND reproduction scripts (``experiments/grand_*.py``).

Every run goes through :func:`graphode.models.build` and :func:`graphode.train.run_many`
with the packaged configs (``graphode/configs/grand/<dataset>.yaml``); each
finished run is appended as one JSON line to a ``.jsonl`` file, so a long grid
can be split over several invocations (finished runs are skipped) and
summarised at any time with ``--summary-only``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, Iterable, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED_DATA = os.environ.get("GRAPHODE_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "datasets"))
RESULTS = os.path.join(HERE, "results")

def common_args(desc: str, runs: int = 10) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--runs", type=int, default=runs, help=f"seeds per cell (default {runs})")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--out", default=None, help="results .jsonl (appended; finished runs are skipped)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data-root", default=None, help=f"dataset root (default: {SHARED_DATA} if present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run (value parsed as YAML)")
    p.add_argument("--summary-only", action="store_true", help="only print the table from --out")
    return p


def data_root(arg: Optional[str]) -> Optional[str]:
    if arg:
        return arg
    return SHARED_DATA if os.path.isdir(SHARED_DATA) else None


def config_for(model: str, dataset: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The packaged config of ``dataset`` with ``model`` set and ``overrides`` applied."""
    from graphode.train import load_config

    cfg = load_config(None, model, dataset)
    cfg.update(overrides or {})
    cfg["model"] = model
    return cfg


def _key(rec: Dict[str, Any]) -> str:
    c = json.dumps(rec["config"], sort_keys=True, default=str)
    return "|".join([rec["model"], rec["dataset"], rec["split"], str(rec["seed"]),
                     hashlib.sha1(c.encode()).hexdigest()[:12]])


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_cell(model: str, dataset: str, split: str, seeds: Iterable[int], config: Dict[str, Any],
             out: str, root: Optional[str], epochs: Optional[int] = None, tag: Optional[str] = None,
             dataset_obj=None) -> List[Dict[str, Any]]:
    """Train ``model`` on ``dataset`` once per seed (skipping runs already in ``out``)."""
    from graphode.train import run_many

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    done = {_key(r): r for r in read_jsonl(out)}
    recs = []
    for s in seeds:
        rec = {"model": model, "dataset": dataset, "split": split, "seed": int(s), "config": config,
               "tag": tag}
        k = _key(rec)
        if k in done:
            recs.append(done[k])
            continue
        t0 = time.perf_counter()
        res = run_many(model, dataset_obj if dataset_obj is not None else dataset, config, runs=1, seed=s,
                       split=split, data_root=root, epochs=epochs, progress=sys.stderr.isatty())
        r = res["runs"][0]
        rec.update({k2: r[k2] for k2 in ("test_acc", "val_acc", "train_acc", "best_epoch", "epochs",
                                         "epoch_time_s", "eval_time_s", "nfe", "nfe_backward")})
        rec["wall_s"] = time.perf_counter() - t0
        with open(out, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        print(f"  {model:12s} {dataset:9s} {split:6s} seed {s:3d}: test {100 * r['test_acc']:.2f} "
              f"val {100 * r['val_acc']:.2f} (best epoch {r['best_epoch'] + 1}/{r['epochs']}) "
              f"{r['epoch_time_s']:.2f} s/epoch NFE {r['nfe'] if r['nfe'] is None else round(r['nfe'], 1)} "
              f"[{rec['wall_s']:.0f} s]", flush=True)
        recs.append(rec)
    return recs


def setup_threads(n: Optional[int]) -> None:
    if n:
        torch.set_num_threads(int(n))
