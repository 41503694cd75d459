"""Cross-module wiring: trainer <-> model callbacks, CLI entry points."""
import subprocess
import sys

import torch

from graphode.datasets import load_planetoid
from graphode.train import fit


class _Recorder:
    def __init__(self):
        self.calls = []

    def on_train_begin(self, trainer):
        self.calls.append("begin")

    def on_after_backward(self, trainer, epoch):
        # gradients must be populated at this point
        assert any(p.grad is not None for p in trainer.model.parameters())
        self.calls.append(("backward", epoch))


class _TinyModel(torch.nn.Module):
    def __init__(self, ds):
        super().__init__()
        self.lin = torch.nn.Linear(ds.num_features, ds.num_classes)
        self.callbacks = [_Recorder()]

    def forward(self, x):
        return self.lin(x)


def test_trainer_runs_the_callbacks_a_model_carries():
    ds = load_planetoid("cora")
    m = _TinyModel(ds)
    extra = _Recorder()
    fit(m, ds, {"epochs": 2, "lr": 0.01}, callbacks=[extra], progress=False)
    for rec in (m.callbacks[0], extra):
        assert rec.calls == ["begin", ("backward", 0), ("backward", 1)]
    # given explicitly as well: not run twice
    m2 = _TinyModel(ds)
    fit(m2, ds, {"epochs": 1, "lr": 0.01}, callbacks=m2.callbacks, progress=False)
    assert m2.callbacks[0].calls == ["begin", ("backward", 0)]


def test_cli_entry_points_listed():
    out = subprocess.run([sys.executable, "-m", "graphode", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "train", "demo", "info", "bench", "sweep"):
        assert cmd in out
    info = subprocess.run([sys.executable, "-m", "graphode", "info"], capture_output=True, text=True, check=True).stdout
    assert '"backends"' in info and '"reference"' in info
