"""User errors at the command line and in configs: one line ``graphode <cmd>: error: ...``,
exit code 2, no traceback (issue: every case of its list), and a run killed in the middle
of a checkpoint write resumes to the uninterrupted result.

Most cases call :func:`graphode.cli.main` in-process (fast); the kill test and one
traceback check run ``python -m graphode`` in a subprocess.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from graphode import cli
from graphode.config import GCN, GRAND, check_config, load_config, parse_set, resolved_config
from graphode.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv, capsys, cwd=None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(rc, err, cmd="train", *needles):
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"graphode {cmd}: error: "), lines[0]
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _argparse_exit(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def files(tmp_path):
    def write(name, text):
        p = tmp_path / name
        p.write_text(text)
        return str(p)
    return write


# ----------------------------------------------------------------------------- silently accepted before
def test_config_key_typo_is_refused_with_did_you_mean(files, capsys):
    f = files("typo.yaml", "model: grand-l\nlearning_rate_typo: 0.1\n")
    rc, _, err = _run(["train", "--config", f], capsys)
    _one_line(rc, err, "train", "typo.yaml", "learning_rate_typo", "did you mean 'lr'")
    f = files("typo2.yaml", "model: gcn\nhiden: 32\n")
    rc, _, err = _run(["train", "--config", f], capsys)
    _one_line(rc, err, "train", "typo2.yaml", "'hiden'", "did you mean 'hidden'")


def test_zero_runs_is_a_usage_error(capsys):
    code, err = _argparse_exit(["train", "--model", "gcn", "--runs", "0"], capsys)
    _one_line(code, err, "train", "--runs", "positive")


@pytest.mark.parametrize("text,needles", [
    ("epochs: -5\n", ("epochs", ">= 1", "-5")),
    ("epochs: 0\n", ("epochs", ">= 1")),
    ("lr: 0\n", ("lr", "> 0")),
    ("dropout: 1.5\n", ("dropout", "<= 1.0")),
    ("hidden: 0\n", ("hidden", ">= 1")),
    ("init: xavier\n", ("init", "xavier", "isometric-code")),
    ("optimizer: adamm\n", ("optimizer", "did you mean 'adam'")),
    ("epochs: 10.5\n", ("epochs", "an integer")),
    ("bias: yes please\n", ("bias", "true or false")),
])
def test_values_out_of_range_or_of_the_wrong_type(files, capsys, text, needles):
    f = files("bad.yaml", "model: gcn\n" + text)
    rc, _, err = _run(["train", "--config", f], capsys)
    _one_line(rc, err, "train", "bad.yaml", *needles)


# ----------------------------------------------------------------------------- tracebacks before
def test_yaml_syntax_error_names_file_and_line(files, capsys):
    f = files("syntax.yaml", "model: gcn\nlr: [0.1\n")
    rc, _, err = _run(["train", "--config", f], capsys)
    _one_line(rc, err, "train", "syntax.yaml", "YAML syntax error", "line")


def test_config_that_is_not_a_mapping(files, capsys):
    f = files("list.yaml", "- a\n- b\n")
    rc, _, err = _run(["train", "--config", f], capsys)
    _one_line(rc, err, "train", "list.yaml", "mapping", "list")


def test_missing_config_file(tmp_path, capsys):
    rc, _, err = _run(["train", "--config", str(tmp_path / "nope.yaml")], capsys)
    _one_line(rc, err, "train", "nope.yaml", "does not exist")


def test_lr_fast(files, capsys):
    f = files("fast.yaml", "model: grand-l\nlr: fast\n")
    rc, _, err = _run(["train", "--config", f], capsys)
    _one_line(rc, err, "train", "fast.yaml", "lr", "a number", "'fast'")


def test_unknown_dataset(capsys):
    rc, _, err = _run(["train", "--model", "gcn", "--dataset", "coraa"], capsys)
    _one_line(rc, err, "train", "coraa", "did you mean 'cora'", "citeseer")


def test_unknown_method(capsys):
    rc, _, err = _run(["train", "--model", "grand-l", "--method", "dopri"], capsys)
    _one_line(rc, err, "train", "method", "'dopri'", "dopri5", "rk4")


def test_unknown_model(capsys):
    rc, _, err = _run(["train", "--model", "grand-ll"], capsys)
    _one_line(rc, err, "train", "grand-ll", "did you mean", "grand-l", "gcn")


def test_data_root_without_the_files_names_them(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(["train", "--model", "gcn", "--data-root", str(empty), "--epochs", "1"], capsys)
    line = _one_line(rc, err, "train", "ind.cora.", str(empty))
    assert "download" not in line.split("Looked in")[0].lower()


def test_failed_download_names_the_raw_file_and_folder(tmp_path, monkeypatch, capsys):
    # A PyG dataset whose download fails: one line naming the folder and the file to put there.
    from graphode.train import _trainer

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(_trainer, "_load", offline)
    rc, _, err = _run(["train", "--model", "gcn", "--dataset", "coauthor_cs", "--data-root", str(tmp_path),
                       "--epochs", "1"], capsys)
    _one_line(rc, err, "train", f"not under {tmp_path / 'CS' / 'raw'}", "ms_academic_cs.npz",
              "network is unreachable")


def test_set_goes_through_the_same_checks(capsys):
    rc, _, err = _run(["train", "--model", "grand-l", "--set", "hiden_dim=3"], capsys)
    _one_line(rc, err, "train", "--set", "hiden_dim", "did you mean 'hidden_dim'")
    rc, _, err = _run(["train", "--model", "grand-l", "--set", "hidden_dim=-3"], capsys)
    _one_line(rc, err, "train", "--set", "hidden_dim", ">= 1")
    rc, _, err = _run(["train", "--model", "grand-l", "--set", "novalue"], capsys)
    _one_line(rc, err, "train", "--set", "key=value")


def test_key_of_another_model_is_refused(capsys):
    rc, _, err = _run(["train", "--model", "gcn", "--method", "rk4"], capsys)
    _one_line(rc, err, "train", "'method'", "gcn")
    rc, _, err = _run(["train", "--model", "gcnii", "--rewiring", "gradient_flow"], capsys)
    _one_line(rc, err, "train", "rewiring", "gcnii does not use")


def test_output_folder_not_writable(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    rc, _, err = _run(["train", "--model", "gcn", "--epochs", "1", "--out", str(f / "r.json")], capsys)
    _one_line(rc, err, "train", "--out", "cannot create")
    rc, _, err = _run(["train", "--model", "gcn", "--epochs", "1", "--checkpoint", str(tmp_path)], capsys)
    _one_line(rc, err, "train", "--checkpoint", "is a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write a read-only folder (root)")
        for flag in ("--out", "--checkpoint"):
            rc, _, err = _run(["train", "--model", "gcn", "--epochs", "1", flag, str(ro / "sub" / "x")], capsys)
            _one_line(rc, err, "train", flag, str(ro))
    finally:
        ro.chmod(0o700)


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def gcn_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    ck = d / "gcn.pt"
    assert cli.main(["train", "--model", "gcn", "--epochs", "2", "--set", "hidden=16", "--checkpoint", str(ck),
                     "--no-progress"]) == 0
    return ck


def test_checkpoint_records_model_config_dataset_version(gcn_checkpoint):
    import graphode

    state = torch.load(str(gcn_checkpoint), weights_only=True)
    assert state["meta"]["model"] == "gcn" and state["meta"]["dataset"] == "cora"
    assert state["meta"]["graphode"] == graphode.__version__
    assert state["config"]["hidden"] == 16 and state["config"]["model"] == "gcn"


def test_resume_with_another_model_or_dataset(gcn_checkpoint, capsys):
    rc, _, err = _run(["train", "--model", "grand-l", "--resume", str(gcn_checkpoint), "--epochs", "3"], capsys)
    _one_line(rc, err, "train", "gcn.pt", "model gcn", "grand-l")
    if not (DATA / "planetoid").is_dir():
        pytest.skip("../shared/datasets not available")
    rc, _, err = _run(["train", "--model", "gcn", "--dataset", "citeseer", "--data-root", str(DATA),
                       "--set", "hidden=16", "--resume", str(gcn_checkpoint), "--epochs", "3"], capsys)
    _one_line(rc, err, "train", "gcn.pt", "dataset cora", "citeseer")


def test_resume_with_another_config(gcn_checkpoint, capsys):
    rc, _, err = _run(["train", "--model", "gcn", "--set", "hidden=8", "--resume", str(gcn_checkpoint),
                       "--epochs", "3", "--no-progress"], capsys)
    _one_line(rc, err, "train", "gcn.pt", "hidden=16 there, 8 here")


def test_damaged_checkpoint(gcn_checkpoint, tmp_path, capsys):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(gcn_checkpoint.read_bytes()[:3000])
    rc, _, err = _run(["train", "--model", "gcn", "--set", "hidden=16", "--resume", str(bad), "--epochs", "3"],
                      capsys)
    _one_line(rc, err, "train", "truncated.pt", "damaged")


def test_debug_shows_the_traceback(files):
    f = files("fast.yaml", "model: grand-l\nlr: fast\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "graphode", "train", "--config", f], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "graphode", "train", "--config", f, "--debug"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 1 and "Traceback" in p.stderr and "ConfigError" in p.stderr


def test_internal_errors_keep_their_traceback(monkeypatch, capsys):
    import graphode.train._cli as tc

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(tc, "resolve_config", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train", "--model", "gcn"])


# ----------------------------------------------------------------------------- schema
def test_print_config_shows_the_resolved_config(capsys):
    import yaml

    rc, out, _ = _run(["train", "--model", "grand-l", "--set", "hidden_dim=32", "--print-config"], capsys)
    assert rc == 0
    cfg = yaml.safe_load(out)
    packaged = load_config(None, "grand-l", "cora")
    assert cfg["hidden_dim"] == 32 and cfg["lr"] == packaged["lr"] and cfg["method"] == packaged["method"]
    assert cfg["max_num_steps"] is None and cfg["semi_implicit"] is True  # schema defaults of unset keys
    assert abs(cfg["rtol"] - packaged["tol_scale"] * 1e-9) < 1e-15
    assert set(cfg) >= set(GRAND.keys) - {"add_source"}


def test_every_packaged_config_passes_its_schema():
    import glob

    root = Path(__file__).resolve().parents[1] / "graphode" / "configs"
    files = glob.glob(str(root / "grand" / "*.yaml")) + glob.glob(str(root / "gcn" / "*.yaml"))
    assert len(files) >= 10
    for f in files:
        load_config(f)  # checked against the schema of its model key


def test_grand_defaults_have_one_source():
    """GRAND built directly and GRAND built by name from an empty config solve at the same
    tolerances, with the same defaults: the schema's."""
    import inspect

    from graphode.models.grand import GRAND as GRANDModel
    from graphode.models.grand import grand_kwargs

    kw = grand_kwargs({})
    sig = inspect.signature(GRANDModel.__init__).parameters
    for name, value in kw.items():
        d = sig[name].default if name in sig else inspect.Parameter.empty
        if d is not inspect.Parameter.empty and d is not None:  # None: "same as the forward solve's"
            assert d == value, name
    assert (kw["rtol"], kw["atol"]) == (1e-9, 1e-7)


def test_baseline_names_match_the_registry():
    pytest.importorskip("torch_geometric")
    from graphode.config import BASELINE_NAMES
    from graphode.models.baselines import BASELINE_MODELS

    assert set(BASELINE_NAMES) == set(BASELINE_MODELS)


def test_schema_checks_directly():
    assert check_config(parse_set(["lr=1e-3", "epochs=20"]), "gcn", "--set") == {"lr": 1e-3, "epochs": 20}
    with pytest.raises(ConfigError, match="unknown key 'foo'"):
        check_config({"foo": 1}, "gcn", "x")
    with pytest.raises(ConfigError, match="skips: expected an integer"):
        check_config({"skips": [1, "a"]}, "gcn", "x")
    assert resolved_config({}, "gcn")["hidden"] == GCN.keys["hidden"].default
    assert resolved_config({}, "gcn-dropedge")["drop_edge"] == 0.3


def test_library_fit_checks_the_training_keys():
    from graphode.datasets import load_planetoid
    from graphode.train import fit, run_many

    ds = load_planetoid("cora")
    model = torch.nn.Linear(ds.num_features, ds.num_classes)
    with pytest.raises(ConfigError, match="epochs"):
        fit(model, ds, {"epochs": -5}, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        fit(model, ds, {"lr": "fast"}, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="runs"):
        run_many("gcn", ds, {}, runs=0)


# ----------------------------------------------------------------------------- kill -9 in a write
def _graphode_proc(args, env_extra=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "graphode", "train", *args], env=env, **kw)


def test_kill_during_a_checkpoint_write_then_resume(tmp_path):
    """SIGKILL while the 3rd checkpoint write is half on disk; the checkpoint on disk is the
    2nd one, intact, and resuming from it gives the uninterrupted run's result and weights."""
    base = ["--model", "gcn", "--epochs", "5", "--set", "hidden=16", "--no-progress"]
    full = _graphode_proc(base + ["--checkpoint", str(tmp_path / "full.pt"), "--out", str(tmp_path / "full.json")])
    assert full.wait(timeout=600) == 0

    ck = tmp_path / "run.pt"
    p = _graphode_proc(base + ["--checkpoint", str(ck)], {"GRAPHODE_TEST_PAUSE_IN_WRITE": "3:120"},
                       stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        line = ""
        while "pausing" not in line:
            line = p.stderr.readline()
            assert line or p.poll() is None, "the run ended before its 3rd checkpoint write"
            assert time.time() - t0 < 600
        temps = [f for f in os.listdir(tmp_path) if f.startswith(".run.pt.") and f.endswith(".tmp")]
        assert temps, os.listdir(tmp_path)  # the torn write is on disk ...
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    state = torch.load(str(ck), weights_only=True)  # ... and the checkpoint is the last complete one
    assert state["epoch"] == 1

    res = _graphode_proc(base + ["--checkpoint", str(ck), "--resume", str(ck), "--out", str(tmp_path / "res.json")])
    assert res.wait(timeout=600) == 0
    a = json.loads((tmp_path / "full.json").read_text())["runs"][0]
    b = json.loads((tmp_path / "res.json").read_text())["runs"][0]
    for k in ("test_acc", "val_acc", "train_acc", "best_epoch", "epochs", "final_val_acc", "final_test_acc"):
        assert a[k] == b[k], k
    wa = torch.load(str(tmp_path / "full.pt"), weights_only=True)["model"]
    wb = torch.load(str(ck), weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
