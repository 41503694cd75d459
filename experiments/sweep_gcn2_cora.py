"""The 2-layer GCN sweep on Cora (docs/RESULTS.md, *Sweeps*): the raw results of every
figure of that section, in one JSON file.

    .venv/bin/python experiments/sweep_gcn2_cora.py --out experiments/results/sweep_gcn2_cora.json

Steps (each is skipped when ``--out`` already holds it, so an interrupted run resumes):

1. ``sweep``: ``graphode.sweep.sweep`` over the packaged ``gcn`` space with the
   depth fixed to 2 and the deep-GCN extras off (``layers=2 init=glorot
   rewiring=none``), 24 trials of at most 200 epochs, ASHA (grace period 10,
   reduction factor 4), Ray on ``--cpus`` CPUs, 1 CPU per trial.  Records the
   wall time (including Ray's start), every trial row and the best config.
2. ``retrain``: the sweep's best config and the deep-GCN paper's settings (lr
   0.005, wd 5e-4, hidden 64, dropout 0.6), each on 10 seeds, 200 epochs
   (``graphode.train.run_many``, one torch thread): per-seed test and
   validation accuracy at the best validation epoch.
3. ``ray_vs_sequential``: the best config's 10 seeds through
   ``graphode.sweep.run_many_ray`` (``--cpus`` CPUs, 1 per run) and through
   ``run_many`` (one thread): wall times and the per-seed accuracies of both.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

OVERRIDES = {"layers": 2, "init": "glorot", "rewiring": "none"}
PAPER_SETTINGS = {"lr": 0.005, "weight_decay": 5e-4, "hidden": 64, "dropout": 0.6}
SEARCHED_SHOWN = ("lr", "weight_decay", "hidden", "dropout")


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _save(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


def _facts():
    import torch

    return dict(date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpus=os.cpu_count(),
                loadavg_1min=round(os.getloadavg()[0], 2), torch=torch.__version__)


def step_sweep(args):
    from graphode.sweep import sweep

    facts = _facts()  # before the run: the load it started under
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = sweep("gcn", "cora", "gcn", num_samples=24, scheduler="asha", epochs=200, output_dir=d,
                    num_cpus=args.cpus, cpus_per_trial=1, grace_period=10, reduction_factor=4, overrides=OVERRIDES,
                    verbose=0)
        wall = time.perf_counter() - t0
    keep = ("rank", "trial_id", "status", "val_acc", "test_acc", "best_epoch", "epochs") + SEARCHED_SHOWN
    rows = [{k: r.get(k, r.get("config", {}).get(k)) for k in keep} for r in res["rows"]]
    best = {k: res["best_config"][k] for k in res["best_config"] if k in SEARCHED_SHOWN or k in OVERRIDES}
    return dict(facts, loadavg_1min_end=round(os.getloadavg()[0], 2), wall_s=wall, sweep_time_s=res["time_s"], num_trials=res["num_trials"],
                num_stopped=res["num_stopped"], rows=rows, best=best, best_config=res["best_config"],
                settings=dict(num_samples=24, epochs=200, grace_period=10, reduction_factor=4, overrides=OVERRIDES,
                              cpus=args.cpus))


def _runs(config, runs=10, ray=False, cpus=2):
    import torch

    from graphode.train import run_many

    t0 = time.perf_counter()
    if ray:
        from graphode.sweep import run_many_ray

        out = run_many_ray("gcn", "cora", config, runs=runs, seed=0, epochs=200, num_cpus=cpus, cpus_per_run=1)
    else:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = run_many("gcn", "cora", config, runs=runs, seed=0, epochs=200, progress=False)
        finally:
            torch.set_num_threads(n)
    wall = time.perf_counter() - t0
    return dict(wall_s=wall, runs=[dict(seed=r.get("seed"), test_acc=r["test_acc"], val_acc=r["val_acc"],
                                        best_epoch=r.get("best_epoch")) for r in out["runs"]])


def _config(overrides):
    from graphode.train import load_config

    cfg = load_config(None, "gcn", "cora")
    cfg.update(OVERRIDES)
    cfg.update(overrides)
    cfg["epochs"] = 200
    return cfg


def step_retrain(args, data):
    best = {k: v for k, v in data["sweep"]["best"].items() if k in SEARCHED_SHOWN}
    facts = _facts()
    out = dict(facts, best=dict(settings=best, **_runs(_config(best))),
               paper=dict(settings=PAPER_SETTINGS, **_runs(_config(PAPER_SETTINGS))))
    return dict(out, loadavg_1min_end=round(os.getloadavg()[0], 2))


def step_ray(args, data):
    best = {k: v for k, v in data["sweep"]["best"].items() if k in SEARCHED_SHOWN}
    cfg = _config(best)
    facts = _facts()
    out = dict(facts, cpus=args.cpus, ray=_runs(cfg, ray=True, cpus=args.cpus), sequential=_runs(cfg))
    return dict(out, loadavg_1min_end=round(os.getloadavg()[0], 2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "results", "sweep_gcn2_cora.json"))
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--redo", nargs="*", default=[], choices=["sweep", "retrain", "ray_vs_sequential"])
    args = p.parse_args(argv)
    data = _load(args.out)
    for name, fn in (("sweep", lambda: step_sweep(args)), ("retrain", lambda: step_retrain(args, data)),
                     ("ray_vs_sequential", lambda: step_ray(args, data))):
        if name in data and name not in args.redo:
            print(f"{name}: done (in {args.out})")
            continue
        print(f"{name}: running", flush=True)
        data[name] = fn()
        _save(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
