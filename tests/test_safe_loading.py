"""Loading a file never runs code from it (issue: checkpoints are pickles).

* a crafted checkpoint whose pickle payload would create a marker file is refused,
  the payload does not run, and ``graphode train --resume`` ends in one line, exit 2;
* a graphode.train/1 checkpoint (numpy RNG state as an array) still resumes to the
  uninterrupted result; the bit-identical resume of the current format is
  ``test_train.py::test_checkpoint_resume_bit_identical``;
* PyTorch Geometric's processed-dataset cache, which PyG itself falls back to loading
  unsafely, is refused the same way;
* no code in the repository loads a pickle unsafely (an AST walk over every tracked
  ``.py`` file).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphode.errors import CheckpointError, UserError
from graphode.train import fit, seed_everything
from graphode.train._trainer import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this runs ``touch <marker>`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path, **extra) -> Path:
    torch.save({"format": "graphode.train/2", "model": _Payload(marker), "epoch": 3, **extra}, str(path))
    return path


def _graphode(*argv, cwd=None, env=None):
    e = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    e.pop("GRAPHODE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "graphode", *argv], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=600)


def _assert_one_line_error(proc, cmd: str, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"graphode {cmd}: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_crafted_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "MARKER"
    # the payload works: an unrestricted load would run it (so the test can fail)
    probe = tmp_path / "probe"
    import pickle

    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()

    ck = _crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refusing to load checkpoint .*evil.pt.*system"):
        load_checkpoint(str(ck))
    assert not marker.exists()

    proc = _graphode("train", "--model", "gcn", "--dataset", "cora", "--epochs", "1", "--no-progress",
                     "--resume", str(ck), cwd=tmp_path)
    line = _assert_one_line_error(proc, "train", "evil.pt", "refusing")
    assert "system" in line
    assert not marker.exists()

    # --debug shows the traceback (still without running the payload)
    proc = _graphode("train", "--model", "gcn", "--dataset", "cora", "--epochs", "1", "--no-progress",
                     "--resume", str(ck), "--debug", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
    assert not marker.exists()


def test_damaged_checkpoint_is_one_line_naming_the_file(tmp_path):
    ds = _tiny_dataset()
    ck = tmp_path / "run.pt"
    seed_everything(0)
    fit(_tiny_model(ds), ds, {"lr": 0.01}, seed=0, epochs=2, checkpoint=str(ck), progress=False)
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="run.pt is damaged"):
        load_checkpoint(str(ck))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt is damaged"):
        load_checkpoint(str(tmp_path / "empty.pt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"weights": torch.zeros(2)}, str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="not a graphode training checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


# ----------------------------------------------------------------------------- old format
def _tiny_dataset():
    from graphode.datasets import NodeDataset

    g = torch.Generator().manual_seed(0)
    n, c = 60, 3
    y = torch.arange(n) % c
    x = torch.randn(n, 8, generator=g)
    x[torch.arange(n), y] += 1.0
    src = torch.randint(0, n, (200,), generator=g)
    dst = torch.randint(0, n, (200,), generator=g)
    ei = torch.unique(torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]), dim=1)
    perm = torch.randperm(n, generator=g)
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    masks[0][perm[:15]] = True
    masks[1][perm[15:30]] = True
    masks[2][perm[30:]] = True
    return NodeDataset(name="tiny", x=x, y=y, edge_index=ei, train_mask=masks[0], val_mask=masks[1],
                       test_mask=masks[2], num_classes=c)


class _DropoutRNG(torch.nn.Module):
    """A model whose training draws from torch's RNG, and whose epochs draw from numpy's
    (through a callback), so a wrongly restored RNG changes the result."""

    def __init__(self, ds):
        super().__init__()
        self.lin = torch.nn.Linear(ds.num_features, ds.num_classes)

    def forward(self, x):
        return self.lin(torch.nn.functional.dropout(x, 0.5, self.training))


def _tiny_model(ds):
    return _DropoutRNG(ds)


class _NumpyNoise:
    """Adds numpy- and python-random noise to the gradients (uses both global RNGs)."""

    def on_after_backward(self, trainer, epoch):
        import random

        scale = float(np.random.rand()) * 0.1 + random.random() * 0.1
        for p in trainer.model.parameters():
            p.grad.add_(scale)


def test_graphode_train_1_checkpoint_still_resumes_identically(tmp_path):
    """Checkpoints of the previous format held numpy's RNG state as an array: they load
    (numpy arrays only are allowed for them) and resume to the uninterrupted result."""
    ds = _tiny_dataset()
    cfg = {"lr": 0.05}
    seed_everything(3)
    full = _tiny_model(ds)
    r_full = fit(full, ds, cfg, callbacks=[_NumpyNoise()], seed=3, epochs=8, progress=False)

    ck = tmp_path / "old.pt"
    seed_everything(3)
    fit(_tiny_model(ds), ds, cfg, callbacks=[_NumpyNoise()], seed=3, epochs=4, checkpoint=str(ck),
        progress=False)
    state = torch.load(str(ck), weights_only=True)
    npst = state["rng"]["numpy"]
    state["rng"]["numpy"] = (npst["kind"], npst["key"].numpy().astype(np.uint32), npst["pos"],
                             npst["has_gauss"], npst["cached_gaussian"])
    state["format"] = "graphode.train/1"
    torch.save(state, str(ck))
    with pytest.raises(Exception):  # a plain safe load refuses the numpy array ...
        torch.load(str(ck), weights_only=True)

    np.random.seed(999)
    seed_everything(3)
    resumed = _tiny_model(ds)
    r_res = fit(resumed, ds, cfg, callbacks=[_NumpyNoise()], seed=3, epochs=8, resume=str(ck),
                progress=False)  # ... graphode's loader reads it
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert r_full["test_acc"] == r_res["test_acc"] and r_full["best_epoch"] == r_res["best_epoch"]


def test_old_format_allows_numpy_arrays_but_nothing_else(tmp_path):
    marker = tmp_path / "MARKER"
    ck = _crafted(tmp_path / "old_evil.pt", marker, rng={"numpy": np.random.get_state()})
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(str(ck))
    assert not marker.exists()


# ----------------------------------------------------------------------------- other files
def test_pyg_processed_cache_with_a_payload_is_refused(tmp_path):
    """PyG loads ``<root>/<Name>/processed/*.pt`` and falls back to ``weights_only=False``
    when the safe load fails; graphode forces the safe load and refuses the file."""
    pytest.importorskip("torch_geometric")
    from graphode.datasets import load_dataset

    marker = tmp_path / "MARKER"
    raw = tmp_path / "CS" / "raw"
    processed = tmp_path / "CS" / "processed"
    raw.mkdir(parents=True)
    processed.mkdir(parents=True)
    (raw / "ms_academic_cs.npz").write_bytes(b"")
    for name in ("data.pt", "pre_transform.pt", "pre_filter.pt"):
        torch.save(_Payload(marker), str(processed / name))
    with pytest.raises(UserError, match="refusing to load .*processed"):
        load_dataset("coauthor-cs", root=tmp_path, split="random")
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # restored afterwards


def test_bench_graph_cache_loads_safely(tmp_path, monkeypatch):
    """The benchmark graph cache (a user-settable folder) is read with weights_only=True:
    a tampered file is ignored and regenerated, its payload never runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_benchutil", ROOT / "bench" / "_benchutil.py")
    _benchutil = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(_benchutil)  # the bench tooling lives in the checkout's bench/

    monkeypatch.setenv("GRAPHODE_BENCH_CACHE", str(tmp_path))
    marker = tmp_path / "MARKER"
    n, e = 2000, 1_000_000
    path = tmp_path / f"power_law_{n}_{e}_0.pt"
    torch.save({"rowptr": _Payload(marker), "col": torch.zeros(1)}, str(path))
    monkeypatch.setattr("graphode.graph.power_law_graph",
                        lambda *a, **k: type("G", (), {"rowptr": torch.zeros(1), "col": torch.zeros(1)})())
    _benchutil.power_law_graph_cached(n, e)
    assert not marker.exists()


# ----------------------------------------------------------------------------- no unsafe loads
_ALLOWED_UNPICKLERS = {("graphode/datasets/_planetoid.py", "_RestrictedUnpickler")}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _unsafe_loads(rel: str, tree: ast.AST):
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for b in node.bases:
                if _dotted(b).endswith("Unpickler") and (rel, node.name) not in _ALLOWED_UNPICKLERS:
                    bad.append(f"{rel}:{node.lineno} Unpickler subclass {node.name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{rel}:{node.lineno} {name}"
        if name in ("torch.load", "torch.serialization.load"):
            if not _is_const(_kw(node, "weights_only"), True):
                bad.append(f"{where} without weights_only=True")
        elif name.split(".")[0] in ("pickle", "cPickle", "cloudpickle", "dill", "joblib", "_pickle") and \
                name.split(".")[-1] in ("load", "loads", "Unpickler"):
            bad.append(where)
        elif name in ("np.load", "numpy.load"):
            if _is_const(_kw(node, "allow_pickle"), True):
                bad.append(f"{where} with allow_pickle=True")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            loader = _kw(node, "Loader")
            if name != "yaml.load" or loader is None or "Safe" not in _dotted(loader):
                bad.append(f"{where} (use yaml.safe_load)")
        elif name in ("torch.serialization.add_safe_globals",):
            bad.append(f"{where} (process-wide allowlist: use a scoped safe_globals block)")
    return bad


def test_no_code_path_loads_a_pickle_unsafely():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert any(f.startswith("graphode/") for f in files)
    bad = []
    for rel in files:
        if rel == "tests/test_safe_loading.py":
            continue  # this file names the forbidden calls in order to find them
        tree = ast.parse((ROOT / rel).read_text(), rel)
        bad += _unsafe_loads(rel, tree)
    assert not bad, "unsafe loads:\n" + "\n".join(bad)


def test_the_checker_finds_unsafe_loads():
    src = ("import torch, pickle, numpy as np, yaml\n"
           "torch.load(p, weights_only=False)\n"
           "torch.load(p)\n"
           "pickle.load(f)\n"
           "np.load(p, allow_pickle=True)\n"
           "yaml.load(s)\n"
           "class U(pickle.Unpickler): pass\n"
           "torch.load(p, weights_only=True)\n"
           "np.load(p)\n"
           "yaml.safe_load(s)\n")
    bad = _unsafe_loads("x.py", ast.parse(src))
    assert len(bad) == 6, bad
