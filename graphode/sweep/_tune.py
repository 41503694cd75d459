"""``graphode sweep``: hyperparameter search on Ray Tune with ASHA early stopping.

Each trial trains one model (one seed) through :func:`graphode.train.run_many`
and reports after every epoch, so the scheduler can stop it early:

``val_acc``
    best validation accuracy so far (what the GRAND authors' tuning code
    reported as ``accuracy``; the default metric, mode ``max``),
``test_acc`` / ``train_acc`` / ``best_epoch``
    at the best validation epoch so far (0-based epoch),
``epoch_val_acc`` / ``epoch_test_acc`` / ``epoch_train_acc`` / ``loss`` / ``epoch_time_s`` / ``nfe``
    of the epoch just trained,
``mean_epoch_time_s`` / ``mean_nfe``
    means over the epochs trained so far (the table's ``epoch_time_s`` / ``nfe``).

Every ``checkpoint_every`` epochs the trial saves the full trainer state
(model, optimizer, RNG, history) as a Tune checkpoint, so a resumed sweep
(``--resume``: ``Tuner.restore``) continues unfinished trials from their last
checkpoint, bit-identically, instead of from scratch.

Outputs in ``output_dir``: ``results.csv`` and ``results.json`` (one row per
trial, best first), ``best.yaml`` (the best trial's full flat config, which
``graphode train --config best.yaml`` accepts), ``sweep.json`` (settings,
timings, the best row), ``ended_trials.json`` (trials that ended on their own;
the table marks the others ``unfinished``) and the Tune experiment in
``output_dir/<name>``.  Table statuses: ``completed`` (all epochs), ``stopped``
(by ASHA or the time budget), ``unfinished`` (the sweep was interrupted;
``--resume`` continues it), ``error``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Union

from ._ray import ensure_ray, require_ray, set_threads
from ._space import Dist, load_space, parse_space, resolve_space_path, space_keys, to_tune

__all__ = ["sweep", "default_space_for", "TuneReporter", "SCHEDULERS"]

SCHEDULERS = ("asha", "fifo")
_STATE_FILE = "trainer.pt"


def default_space_for(model: Optional[str]) -> str:
    """The packaged search space for a model name: ``grand`` for the GRAND variants,
    else the model name itself (``gcn``)."""
    m = (model or "").lower()
    return "grand" if m.startswith("grand") else (m or "grand")


def _plain_value(v: Any) -> Any:
    """numpy scalars / tuples -> plain python (for YAML, JSON and CSV)."""
    if isinstance(v, dict):
        return {str(k): _plain_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain_value(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# --------------------------------------------------------------------------- the trial
class TuneReporter:
    """Trainer callback that reports each epoch to Ray Tune (see the module doc) and,
    every ``checkpoint_every`` epochs, attaches a checkpoint of the trainer's state."""

    def __init__(self, epochs: int, checkpoint_every: int = 0):
        self.epochs = int(epochs)
        self.checkpoint_every = int(checkpoint_every or 0)

    def on_epoch_end(self, trainer, epoch: int, logs: Dict[str, float]) -> None:
        from ray import tune

        best = trainer.best
        metrics = {
            "val_acc": best["val_acc"],
            "test_acc": best["test_acc"],
            "train_acc": best["train_acc"],
            "best_epoch": best["epoch"],
            "epoch": epoch,
            "epoch_val_acc": logs.get("val_acc"),
            "epoch_test_acc": logs.get("test_acc"),
            "epoch_train_acc": logs.get("train_acc"),
            "loss": logs.get("loss"),
            "epoch_time_s": logs.get("epoch_time_s"),
            "nfe": logs.get("nfe"),
        }
        hist = list(trainer.history) + [logs]
        for key in ("epoch_time_s", "nfe"):
            vals = [h[key] for h in hist if h.get(key) is not None]
            if vals:
                metrics[f"mean_{key}"] = sum(vals) / len(vals)
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        every = self.checkpoint_every
        if every > 0 and (epoch + 1) % every == 0 and epoch + 1 < self.epochs:
            import torch

            # The state as the trainer will have it at the end of this epoch (this
            # callback runs before the trainer appends the epoch to its history and
            # applies its patience rule), so a resumed trial is bit-identical.
            state = trainer.state_dict()
            state["history"] = list(trainer.history) + [dict(logs, epoch=epoch)]
            patience = trainer.config.get("patience")
            if patience is not None and trainer._bad_epochs >= int(patience):
                state["stop_training"] = True
            with tempfile.TemporaryDirectory(prefix="graphode-ckpt-") as d:
                torch.save(state, os.path.join(d, _STATE_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)


def _trainable(config: Dict[str, Any], runtime: Dict[str, Any]) -> None:
    """The function Tune runs for one trial (in a Ray worker)."""
    from ray import tune

    from ..models import register_targets

    set_threads(runtime.get("threads"))
    register_targets(runtime.get("models"))
    if runtime.get("quiet_checkpoints"):
        import logging

        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    from ..train import run_many

    cfg = _plain_value(dict(config))
    if runtime.get("device"):
        cfg.setdefault("device", runtime["device"])
    epochs = int(cfg.get("epochs", 100))
    reporter = TuneReporter(epochs, runtime.get("checkpoint_every", 0))
    resume = None
    ckpt = tune.get_checkpoint()
    tmp = None
    if ckpt is not None:
        tmp = tempfile.mkdtemp(prefix="graphode-restore-")
        resume = os.path.join(ckpt.to_directory(tmp), _STATE_FILE)
    try:
        run_many(cfg["model"], cfg.get("dataset", runtime["dataset"]), cfg, runs=1, seed=runtime.get("seed", 0),
                 split=cfg.get("split", "public"), data_root=runtime.get("data_root"), epochs=epochs,
                 callbacks_factory=lambda i: [reporter], resume=resume, progress=False)
    finally:
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _trial_name(trial) -> str:
    return f"{trial.config.get('model', 'trial')}_{trial.trial_id}"


# --------------------------------------------------------------------------- results
def _rows(result_grid, searched: Sequence[str], epochs: int, ended: Optional[set] = None,
          metric: str = "val_acc") -> List[Dict[str, Any]]:
    """One row per trial, ranked by ``metric`` (best first, failed trials last);
    ``ended``: ids of the trials that ended on their own (the others were
    interrupted: status ``unfinished``)."""
    rows = []
    for r in result_grid:
        m = dict(r.metrics or {})
        cfg = _plain_value(dict(r.config or {}))
        trial_id = m.get("trial_id") or os.path.basename(str(r.path or "")).replace("trial_", "")
        it = int(m.get("training_iteration", 0) or 0)
        if r.error is not None:
            status = "error"
        elif it >= epochs:
            status = "completed"
        elif ended is not None and str(trial_id) not in ended:
            status = "unfinished"  # the sweep was interrupted: --resume continues it
        else:
            status = "stopped"  # by the scheduler (ASHA) or the time budget
        row: Dict[str, Any] = {"rank": None, "trial_id": trial_id, "status": status}
        for k in searched:
            row[k] = cfg.get(k)
        row.update({
            "val_acc": m.get("val_acc"),
            "test_acc": m.get("test_acc"),
            "train_acc": m.get("train_acc"),
            "best_epoch": None if m.get("best_epoch") is None else int(m["best_epoch"]),
            "epochs": it,
            "time_total_s": m.get("time_total_s"),
            "epoch_time_s": m.get("mean_epoch_time_s"),
            "nfe": m.get("mean_nfe"),
            "error": None if r.error is None else str(r.error).strip().splitlines()[-1][:300],
            "config": cfg,
        })
        if metric not in row:
            row[metric] = m.get(metric)
        rows.append(_plain_value(row))

    def key(row):
        v = row.get(metric)
        v = -math.inf if not isinstance(v, (int, float)) or math.isnan(v) else v
        return (row["status"] == "error", -v, str(row["trial_id"]))

    rows.sort(key=key)
    for i, row in enumerate(rows):
        row["rank"] = i + 1
    return rows


def _write_tables(rows: List[Dict[str, Any]], searched: Sequence[str], output_dir: str,
                  metric: str = "val_acc") -> Dict[str, str]:
    cols = ["rank", "trial_id", "status", *searched, "val_acc", "test_acc", "train_acc", "best_epoch", "epochs",
            "time_total_s", "epoch_time_s", "nfe", "error"]
    if metric not in cols:
        cols.insert(3 + len(searched), metric)
    csv_path = os.path.join(output_dir, "results.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    json_path = os.path.join(output_dir, "results.json")
    with open(json_path, "w") as f:
        json.dump(rows, f, indent=2, default=str)
    return {"csv": csv_path, "json": json_path}


def _write_best_yaml(best: Dict[str, Any], n_trials: int, path: str) -> None:
    import yaml

    cfg = best["config"]
    header = (
        f"# Best configuration of a graphode sweep ({n_trials} trials): {cfg.get('model')} on "
        f"{cfg.get('dataset')} ({cfg.get('split', 'public')} split)\n"
        f"# trial {best['trial_id']}: validation accuracy {_pct(best.get('val_acc'))}, test accuracy "
        f"{_pct(best.get('test_acc'))} at epoch {_ep(best.get('best_epoch'))} of {best.get('epochs')}\n"
        f"# Train it:  graphode train --config {os.path.basename(path)} --dataset {cfg.get('dataset')} "
        f"--split {cfg.get('split', 'public')} --runs 10\n"
    )
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump(cfg, f, sort_keys=False, default_flow_style=False)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * float(v):.2f}%"


def _ep(v) -> str:
    return "-" if v is None else str(int(v) + 1)


# --------------------------------------------------------------------------- the sweep
def sweep(
    model: Optional[str] = None,
    dataset: str = "cora",
    space: Union[str, Dict[str, Any], None] = None,
    *,
    num_samples: int = 10,
    scheduler: str = "asha",
    epochs: Optional[int] = None,
    output_dir: Optional[str] = None,
    address: Optional[str] = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    num_cpus: Optional[int] = None,
    grace_period: int = 10,
    reduction_factor: float = 4,
    metric: str = "val_acc",
    seed: int = 0,
    split: str = "public",
    data_root: Optional[str] = None,
    base_config: Optional[Dict[str, Any]] = None,
    config_path: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
    max_concurrent: Optional[int] = None,
    checkpoint_every: int = 10,
    resume: bool = False,
    name: str = "tune",
    storage_path: Optional[str] = None,
    ship_code: bool = False,
    verbose: int = 1,
    time_budget_s: Optional[float] = None,
    max_failures: int = 0,
) -> Dict[str, Any]:
    """Run a hyperparameter sweep on Ray Tune and write its results.

    Args:
        model: model name (default: the space's or base config's ``model`` key).
        dataset, split, data_root: the data each trial loads (in its worker).
        space: search-space path, packaged name (``grand``, ``gcn``) or parsed
            mapping (see :mod:`graphode.sweep._space`); default: the model's.
        num_samples: trials (Tune's ``num_samples``; with ``grid`` entries, per grid point).
        scheduler: ``"asha"`` (asynchronous successive halving, ``grace_period``
            epochs before a trial can be stopped, ``reduction_factor``) or ``"fifo"``.
        epochs: epochs per trial (``max_t`` of ASHA); default the config's (100).
        output_dir: where the table, ``best.yaml`` and the Tune experiment go
            (default ``sweeps/<model>-<dataset>``).
        address: Ray cluster to join (``auto``, ``ray://host:port``); None starts Ray locally
            (``num_cpus`` CPUs; default all).
        cpus_per_trial, gpus_per_trial: resources of each trial; torch's threads are
            limited to ``cpus_per_trial``; with GPUs the trials train on ``cuda``.
        metric: reported key the scheduler and the ranking use (mode ``max``).
        seed: the seed of every trial (all trials see the same initialisation RNG).
        base_config / config_path / overrides: the trial config is the base (a dict, or
            the YAML at ``config_path``, or the packaged config of model/dataset), then the
            space's constants and samples, then ``overrides`` (fixed; they win over the space).
        checkpoint_every: save the trainer state as a Tune checkpoint every that many
            epochs (0: never; a resumed trial then restarts from scratch).
        resume: continue the interrupted experiment in ``output_dir/<name>``
            (``Tuner.restore``: unfinished and errored trials are resumed).
        storage_path: where Tune keeps the experiment (default ``output_dir``; on a
            multi-node cluster use shared storage or a ``s3://`` / ``gs://`` URI).
        ship_code: send graphode to the cluster's workers (``runtime_env``).
        verbose: Tune's console verbosity (0-3).
        time_budget_s: stop the whole sweep after that many seconds.
        max_failures: retries of a failed trial (from its last checkpoint) before it
            counts as an error (the GRAND authors used 2 on their cluster).

    Returns:
        dict with ``best`` (the best row: trial_id, searched keys, val/test acc, ...),
        ``best_config`` (full flat config), ``rows`` (all trials, best first),
        ``paths`` (csv, json, best_yaml, sweep_json, experiment), ``time_s``,
        ``num_trials``, ``num_stopped``, ``num_errors``, ``num_unfinished``.
    """
    require_ray("graphode sweep")
    from ray import tune

    from ..models import MODELS, model_targets
    from ..config import load_config
    from ..errors import ConfigError

    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    t0 = time.perf_counter()

    # ---- the space and the base config
    if isinstance(space, dict):
        parsed, space_name = parse_space(space), "<dict>"
    else:
        space_name = resolve_space_path(space or default_space_for(model or (base_config or {}).get("model")))
        parsed = load_space(space_name)
    model = model or (base_config or {}).get("model") or (
        parsed.get("model") if not isinstance(parsed.get("model"), Dist) else None)
    if not model:
        raise ValueError("--model is required (or a 'model' key in the space / config)")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(sorted(MODELS))}")
    base = dict(base_config) if base_config is not None else load_config(config_path, model, dataset)
    searched = space_keys(parsed)
    from ..config import family_of, schema_for

    if family_of(model):  # searched keys must be keys of the model's config schema
        schema = schema_for(model)
        for k in searched:
            if k not in schema.keys:
                raise ConfigError(f"search space {space_name}: unknown key {k!r}{schema._did_you_mean(k)} "
                                  f"for model {model}")
    unknown = [k for k in searched if base and k not in base]
    if unknown and verbose:
        print(f"graphode sweep: note: searched keys not in the base config (check the model reads them): "
              f"{', '.join(unknown)}", file=sys.stderr)
    param_space: Dict[str, Any] = {**base, **to_tune(parsed)}
    for k in list(overrides or {}):
        if k in searched:
            searched.remove(k)
    param_space.update(overrides or {})
    param_space.update({"model": model, "dataset": dataset, "split": split})
    if epochs is not None:
        param_space["epochs"] = int(epochs)
    param_space.setdefault("epochs", 100)
    n_epochs = param_space["epochs"]
    if isinstance(n_epochs, (dict, list)) or hasattr(n_epochs, "sample"):
        raise ValueError("graphode sweep: 'epochs' cannot be searched (it is ASHA's max_t); use --epochs")
    n_epochs = int(n_epochs)

    # ---- where things go
    output_dir = os.path.abspath(output_dir or os.path.join("sweeps", f"{model}-{dataset}"))
    os.makedirs(output_dir, exist_ok=True)
    storage = storage_path or output_dir
    if "://" not in storage:
        storage = os.path.abspath(storage)
    exp_dir = os.path.join(storage, name) if "://" not in storage else f"{storage.rstrip('/')}/{name}"

    # ---- the sweep's settings (read back by --resume: Tune restores its own param_space)
    meta_path = os.path.join(output_dir, "sweep.json")
    if resume and os.path.exists(meta_path):
        with open(meta_path) as f:
            prev = json.load(f)
        if prev.get("epochs") is not None and int(prev["epochs"]) != n_epochs and verbose:
            print(f"graphode sweep: resuming a sweep of {prev['epochs']} epochs per trial "
                  f"(not {n_epochs})", file=sys.stderr)
        n_epochs = int(prev.get("epochs", n_epochs))
        searched = list(prev.get("searched", searched))
    settings = {
        "model": model, "dataset": dataset, "split": split, "space": space_name, "searched": searched,
        "num_samples": int(num_samples), "scheduler": scheduler, "grace_period": int(grace_period),
        "reduction_factor": reduction_factor, "metric": metric, "epochs": n_epochs, "seed": int(seed),
        "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, "address": address,
        "experiment": exp_dir,
    }
    with open(meta_path, "w") as f:
        json.dump(_plain_value({**settings, "state": "running"}), f, indent=2, default=str)

    # ---- Ray and the trainable
    from . import _tracker

    started = ensure_ray(address, num_cpus=num_cpus, ship_code=ship_code, quiet=verbose == 0)
    try:
        runtime = {
            "dataset": dataset,
            "data_root": data_root,
            "seed": int(seed),
            "threads": cpus_per_trial,
            "device": "cuda" if gpus_per_trial else None,
            "checkpoint_every": int(checkpoint_every or 0),
            "models": model_targets([model]),
            "quiet_checkpoints": verbose < 2,
        }
        trainable = tune.with_resources(tune.with_parameters(_trainable, runtime=runtime),
                                        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        if resume and tune.Tuner.can_restore(exp_dir):
            if verbose:
                print(f"graphode sweep: resuming {exp_dir}", flush=True)
            tuner = tune.Tuner.restore(exp_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            if resume and verbose:
                print(f"graphode sweep: nothing to resume in {exp_dir}; starting a new sweep", flush=True)
            sched = None
            if scheduler == "asha":
                from ray.tune.schedulers import ASHAScheduler

                sched = ASHAScheduler(time_attr="training_iteration", max_t=n_epochs,
                                      grace_period=max(1, min(int(grace_period), n_epochs)),
                                      reduction_factor=reduction_factor)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric=metric, mode="max", scheduler=sched, num_samples=int(num_samples),
                    max_concurrent_trials=max_concurrent, trial_dirname_creator=_trial_dirname,
                    trial_name_creator=_trial_name, reuse_actors=True,
                    time_budget_s=time_budget_s,
                ),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=verbose, callbacks=[_tracker.TrialTracker()],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=int(max_failures)),
                ),
            )
        _tracker.ENDED.clear()
        # Trials checkpoint often when epochs are fast; Tune then warns about its forced
        # experiment snapshots (harmless): keep that out of the console unless verbose.
        if verbose < 2:
            os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        grid = tuner.fit()
        ended = set(_tracker.ENDED)
    finally:
        if started:
            import ray

            ray.shutdown()

    # ---- the table and the best config
    ended_path = os.path.join(output_dir, "ended_trials.json")  # accumulated over resumed runs
    if resume and os.path.exists(ended_path):
        with open(ended_path) as f:
            ended |= set(json.load(f))
    with open(ended_path, "w") as f:
        json.dump(sorted(ended), f)
    rows = _rows(grid, searched, n_epochs, ended, metric)
    paths = _write_tables(rows, searched, output_dir, metric)
    ok = [r for r in rows if r["status"] != "error" and isinstance(r.get(metric), (int, float))
          and not math.isnan(r[metric])]
    best = ok[0] if ok else None
    paths["best_yaml"] = os.path.join(output_dir, "best.yaml")
    if best is not None:
        _write_best_yaml(best, len(rows), paths["best_yaml"])
    elapsed = time.perf_counter() - t0
    summary = {
        **settings, "state": "finished", "num_trials": len(rows),
        "num_stopped": sum(r["status"] == "stopped" for r in rows),
        "num_errors": sum(r["status"] == "error" for r in rows),
        "num_unfinished": sum(r["status"] == "unfinished" for r in rows),
        "resumed": bool(resume), "time_s": elapsed, "best": best,
    }
    paths["sweep_json"] = meta_path
    paths["experiment"] = exp_dir
    with open(paths["sweep_json"], "w") as f:
        json.dump(_plain_value(summary), f, indent=2, default=str)
    return {
        "best": best,
        "best_config": None if best is None else best["config"],
        "rows": rows,
        "paths": paths,
        "time_s": elapsed,
        "num_trials": len(rows),
        "num_stopped": summary["num_stopped"],
        "num_errors": summary["num_errors"],
        "num_unfinished": summary["num_unfinished"],
    }
