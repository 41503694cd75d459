"""Tests of graphode.sweep: search-space YAML, the optional Ray dependency,
``graphode sweep`` (a tiny ASHA sweep on Cora, resume) and ``run_many_ray``.

The Ray tests share one local Ray session (module fixture, 2 CPUs) and skip,
with the reason, when Ray is not installed or cannot start here.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from graphode.sweep import (
    DISTRIBUTIONS,
    Dist,
    add_sweep_args,
    load_space,
    packaged_spaces,
    parse_space,
    require_ray,
    resolve_space_path,
    run_sweep,
)

MODEL = "gcn"
TINY = {"layers": 2, "hidden": 8, "dropout": 0.5, "lr": 0.01, "weight_decay": 5e-4, "epochs": 3}


# --------------------------------------------------------------------------- fixtures
def _ray_or_skip():
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as e:
        pytest.skip(f"Ray Tune is not installed ({e}); pip install 'graphode[sweep]'")
    return ray


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray (2 CPUs) for the whole module."""
    ray = _ray_or_skip()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
            started = True
        except Exception as e:  # pragma: no cover - sandbox without Ray support
            pytest.skip(f"ray.init failed in this environment: {type(e).__name__}: {e}")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_available():
    from graphode.datasets import load_dataset
    from graphode.models import build

    try:
        build(MODEL, load_dataset("cora"), TINY)
    except Exception as e:  # pragma: no cover - model layer not available
        pytest.skip(f"model {MODEL!r} cannot be built: {e}")
    return MODEL


def _sweep_args(argv):
    p = argparse.ArgumentParser()
    add_sweep_args(p)
    return p.parse_args(argv)


def _train_args(argv):
    from graphode.train import add_train_args

    p = argparse.ArgumentParser()
    add_train_args(p)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- search spaces (no Ray)
def test_parse_space_kinds_and_constants():
    sp = parse_space({
        "lr": {"loguniform": ["1e-3", 5e-2]},  # YAML 1.1 reads 1e-3 as a string
        "hidden": {"choice": [16, 32]},
        "time": {"uniform": [1, 20]},
        "heads": {"qrandint": [1, 8, 1]},
        "input_dropout": 0.5,
        "method": "dopri5",
    })
    assert sp["lr"] == Dist("lr", "loguniform", [0.001, 0.05])
    assert sp["hidden"].kind == "choice" and sp["time"].args == [1, 20]
    assert sp["input_dropout"] == 0.5 and sp["method"] == "dopri5"


@pytest.mark.parametrize("bad, msg", [
    ({"lr": {"loguniform": [0, 1]}}, "lower > 0"),
    ({"lr": {"uniform": [2, 1]}}, "lower < upper"),
    ({"lr": {"uniform": [1]}}, "takes 2 numbers"),
    ({"lr": {"gaussian": [0, 1]}}, "unknown distribution"),
    ({"lr": {"uniform": [0, 1], "choice": [1]}}, "exactly one"),
    ({"h": {"choice": []}}, "at least one"),
    ({"h": {"randint": [1.5, 4]}}, "integer bounds"),
    ({"h": {"uniform": ["a", "b"]}}, "takes numbers"),
])
def test_parse_space_rejects(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_space(bad)


def test_packaged_spaces_resolve_and_parse():
    assert {"grand", "gcn"} <= set(packaged_spaces())
    p = resolve_space_path("grand")
    assert p == resolve_space_path("configs/search/grand.yaml") == resolve_space_path("grand.yaml")
    grand = load_space("grand")
    # the authors' best Cora settings (configs/grand/cora.yaml) lie inside the GRAND space
    for key in ("lr", "weight_decay", "time", "dropout", "hidden_dim", "tol_scale", "heads", "attention_dim"):
        assert isinstance(grand[key], Dist), key
    assert grand["time"].args[0] <= 18.29 <= grand["time"].args[1]
    assert grand["lr"].args[0] <= 0.0229 <= grand["lr"].args[1]
    assert 80 in range(grand["hidden_dim"].args[0], grand["hidden_dim"].args[1] + 1, grand["hidden_dim"].args[2])
    gcn = load_space("gcn")
    assert 0.005 in gcn["lr"].args and 64 in gcn["hidden"].args and 5e-4 in gcn["weight_decay"].args
    with pytest.raises(FileNotFoundError, match="packaged"):
        resolve_space_path("no-such-space")


def test_translation_to_tune_each_kind():
    _ray_or_skip()
    from ray import tune
    from ray.tune.search import sample

    from graphode.sweep import to_tune

    spec = {
        "uniform": ([0.0, 1.0], sample.Float),
        "quniform": ([0.0, 1.0, 0.25], sample.Float),
        "loguniform": ([1e-3, 1e-1], sample.Float),
        "qloguniform": ([1e-3, 1e-1, 1e-3], sample.Float),
        "randn": ([0.0, 1.0], sample.Float),
        "qrandn": ([0.0, 1.0, 0.5], sample.Float),
        "randint": ([1, 5], sample.Integer),
        "qrandint": ([2, 10, 2], sample.Integer),
        "lograndint": ([1, 100], sample.Integer),
        "choice": ([16, 32, 64], sample.Categorical),
    }
    assert set(spec) | {"grid"} == set(DISTRIBUTIONS)
    out = to_tune({**{k: {k: a} for k, (a, _) in spec.items()}, "g": {"grid": [1, 2]}, "const": 7})
    for k, (args, cls) in spec.items():
        dom = out[k]
        assert isinstance(dom, cls), (k, dom)
        for _ in range(20):
            v = dom.sample()
            if k in ("uniform", "quniform", "loguniform", "qloguniform"):
                assert args[0] <= v <= args[1]
            elif k in ("randint", "lograndint"):
                assert args[0] <= v < args[1] and int(v) == v
            elif k == "qrandint":
                assert args[0] <= v <= args[1] and v % 2 == 0
            elif k == "choice":
                assert v in args
            if k in ("quniform", "qrandn"):
                assert abs(v / args[2] - round(v / args[2])) < 1e-9
    assert isinstance(out["loguniform"].get_sampler(), sample.LogUniform)
    assert out["g"] == tune.grid_search([1, 2]) and out["const"] == 7


# --------------------------------------------------------------------------- without Ray
def test_missing_ray_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'graphode\[sweep\]'"):
        require_ray()
    from graphode.errors import UserError

    with pytest.raises(UserError, match=r"graphode\[sweep\]"):
        run_sweep(_sweep_args(["--model", "gcn", "--num-samples", "1"]))
    from graphode.sweep import RayExecutor, run_many_ray

    with pytest.raises(ImportError, match="train --ray"):
        run_many_ray("gcn", "cora", TINY, runs=1)
    with pytest.raises(ImportError, match="train --ray"):
        RayExecutor()


def test_train_ray_without_ray_is_one_line_exit_2(monkeypatch, capsys):
    from graphode.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["train", "--model", "gcn", "--epochs", "1", "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("graphode train: error:") and "graphode[sweep]" in err[0]


def test_graphode_imports_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import graphode, graphode.sweep, graphode.train, graphode.cli\n"
            "graphode.cli.build_parser()\n"
            "assert 'ray' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


# --------------------------------------------------------------------------- Ray
def test_tiny_sweep_writes_table_and_best_config_trains(ray_session, model_available, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {loguniform: [1e-3, 5e-2]}\n"
                     "dropout: {uniform: [0.3, 0.7]}\n"
                     "hidden: {choice: [8, 16]}\n"
                     "layers: 2\n")
    out = tmp_path / "sweep"
    rc = run_sweep(_sweep_args([
        "--model", MODEL, "--dataset", "cora", "--space", str(space), "--num-samples", "4",
        "--scheduler", "asha", "--grace-period", "1", "--epochs", "3", "--output-dir", str(out),
        "--cpus-per-trial", "1", "--verbose", "0",
    ]))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "best configuration" in printed and "best trial" in printed

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {"trial_id", "status", "lr", "dropout", "hidden", "val_acc", "test_acc", "epochs"} <= set(rows[0])
    assert all(r["status"] in ("completed", "stopped") for r in rows)
    assert any(r["status"] == "completed" and int(r["epochs"]) == 3 for r in rows)
    vals = [float(r["val_acc"]) for r in rows]
    assert vals == sorted(vals, reverse=True)
    table = json.loads((out / "results.json").read_text())
    assert len(table) == 4 and table[0]["trial_id"] == rows[0]["trial_id"]

    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"] == MODEL and best["epochs"] == 3 and best["layers"] == 2
    assert best["lr"] == pytest.approx(table[0]["lr"]) and best["hidden"] in (8, 16)
    assert json.loads((out / "sweep.json").read_text())["num_trials"] == 4

    # the best config is accepted by `graphode train --config` and trains
    res_path = tmp_path / "train.json"
    assert run_train(["--config", str(out / "best.yaml"), "--epochs", "1", "--no-progress",
                      "--out", str(res_path)]) == 0
    res = json.loads(res_path.read_text())
    assert res["runs"][0]["epochs"] == 1 and res["config"]["hidden"] == best["hidden"]


def run_train(argv):
    from graphode.train import run_train as _run_train

    return _run_train(_train_args(argv))


def test_run_many_ray_matches_sequential_seed_by_seed(ray_session, model_available):
    from graphode.sweep import run_many_ray
    from graphode.train import run_many

    seen = []
    cfg = {**TINY, "epochs": 2}
    seq = run_many(MODEL, "cora", cfg, runs=3, seed=7, progress=False)
    par = run_many_ray(MODEL, "cora", cfg, runs=3, seed=7, on_run_end=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2]
    assert [r["seed"] for r in par["runs"]] == [7, 8, 9]
    for a, b in zip(seq["runs"], par["runs"]):
        for key in ("seed", "test_acc", "val_acc", "train_acc", "best_epoch", "epochs", "final_test_acc"):
            assert a[key] == b[key], (key, a[key], b[key])
    assert par["mean_test_acc"] == seq["mean_test_acc"]
    assert par["std_test_acc"] == seq["std_test_acc"]


def test_train_cli_ray_flag_matches_sequential(ray_session, model_available, tmp_path):
    """``graphode train --runs K --ray``: graphode.cli runs the seeds on a RayExecutor."""
    from graphode.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "model": MODEL, "epochs": 1}))
    outs = []
    for extra in ([], ["--ray"]):
        out = tmp_path / f"r{len(outs)}.json"
        assert main(["train", "--config", str(cfg), "--runs", "2", "--seed", "3", "--no-progress",
                     "--out", str(out), *extra]) == 0
        outs.append(json.loads(out.read_text()))
    assert [r["test_acc"] for r in outs[0]["runs"]] == [r["test_acc"] for r in outs[1]["runs"]]
    assert outs[0]["std_test_acc"] == outs[1]["std_test_acc"]


def test_sweep_resume_continues_from_checkpoint(ray_session, model_available, tmp_path):
    """A trial that dies mid-way is resumed from its last checkpoint and ends with
    exactly the result of an uninterrupted run (same seed)."""
    from graphode.models import MODELS, register_model
    from graphode.sweep import sweep
    from graphode.train import run_many

    from ray import cloudpickle

    marker = tmp_path / "fail-once"
    marker.write_text("")
    register_model("sweep-flaky", _build_flaky)
    # this test module is not importable in Ray's workers: ship its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        cfg = {**TINY, "epochs": 3, "fail_marker": str(marker)}
        common = dict(dataset="cora", space={"lr": {"choice": [0.01]}}, base_config=cfg, num_samples=1,
                      scheduler="fifo", output_dir=str(tmp_path / "out"), checkpoint_every=1, verbose=0)
        first = sweep("sweep-flaky", **common)
        assert first["num_errors"] == 1 and not marker.exists()
        second = sweep("sweep-flaky", resume=True, **common)
        row = second["rows"][0]
        assert row["status"] == "completed" and row["epochs"] == 3, row
        ref = run_many("sweep-flaky", "cora", {**cfg, "lr": 0.01}, runs=1, seed=0, progress=False)["runs"][0]
        assert (row["val_acc"], row["test_acc"], row["best_epoch"]) == (ref["val_acc"], ref["test_acc"],
                                                                        ref["best_epoch"])
        # resumed from the checkpoint after epoch 2 (0-based 1): epochs 0-1 were not trained again
        trial_dir = os.path.join(second["paths"]["experiment"], f"trial_{row['trial_id']}")
        with open(os.path.join(trial_dir, "progress.csv")) as f:
            epochs = [int(float(r["epoch"])) for r in csv.DictReader(f)]
        assert epochs == [0, 1, 2], epochs
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        MODELS.pop("sweep-flaky", None)


class _Flaky(torch.nn.Module):
    """The tiny GCN, raising once in its 3rd training forward while ``marker`` exists."""

    def __init__(self, inner, marker):
        super().__init__()
        self.inner, self.marker, self.calls = inner, marker, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 3 and self.marker and os.path.exists(self.marker):
                os.remove(self.marker)
                raise RuntimeError("simulated interruption")
        return self.inner(x)


def _build_flaky(dataset, config):
    from graphode.models import build

    cfg = {k: v for k, v in config.items() if k not in ("model", "fail_marker")}
    return _Flaky(build("gcn", dataset, cfg), config.get("fail_marker"))
