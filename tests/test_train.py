"""Tests of the trainer (graphode.train): fit, checkpoint/resume, run_many, the CLI."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from graphode.datasets import NodeDataset
from graphode.models import MODELS, register_model
from graphode.train import add_train_args, fit, run_many, run_train, seed_everything


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_dataset(n=120, f=16, c=3, seed=0, splits=None):
    """Planted-partition graph whose features are noisy class indicators."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, f, generator=g) * 0.8
    x[torch.arange(n), y] += 1.5
    src, dst = [], []
    for i in range(n):
        for _ in range(4):
            j = int(torch.randint(0, n, (1,), generator=g))
            if torch.rand(1, generator=g) < 0.8:  # mostly same class
                j = (j // c) * c + int(y[i])
                j = min(j, n - 1) if int(y[min(j, n - 1)]) == int(y[i]) else i
            if j != i:
                src += [i, j]
                dst += [j, i]
    ei = torch.unique(torch.tensor([src, dst]), dim=1)
    perm = torch.randperm(n, generator=g)
    train = torch.zeros(n, dtype=torch.bool)
    val = torch.zeros(n, dtype=torch.bool)
    test = torch.zeros(n, dtype=torch.bool)
    train[perm[:30]] = True
    val[perm[30:60]] = True
    test[perm[60:]] = True
    if splits:
        train, val, test = (m.unsqueeze(1).repeat(1, splits) for m in (train, val, test))
    return NodeDataset(name="synthetic", x=x, y=y, edge_index=ei, train_mask=train, val_mask=val,
                       test_mask=test, num_classes=c)


class TinyGNN(nn.Module):
    """dropout -> Linear -> mean aggregation -> ReLU -> dropout -> Linear (uses dropout RNG)."""

    def __init__(self, dataset, hidden=16, dropout=0.5):
        super().__init__()
        self.graph = dataset.graph.add_self_loops()
        self.w = self.graph.row_normalize()
        self.lin1 = nn.Linear(dataset.num_features, hidden)
        self.lin2 = nn.Linear(hidden, dataset.num_classes)
        self.dropout = dropout
        self.nfe = 0

    def forward(self, x):
        from graphode import ops

        x = nn.functional.dropout(x, self.dropout, self.training)
        h = ops.spmm(self.graph, self.w, self.lin1(x))
        self.nfe = 1
        h = nn.functional.dropout(torch.relu(h), self.dropout, self.training)
        return self.lin2(h)


def _build_tiny(dataset, config):
    return TinyGNN(dataset, hidden=int(config.get("hidden_dim", 16)), dropout=float(config.get("dropout", 0.5)))


@pytest.fixture(autouse=True, scope="module")
def _register():
    register_model("test-tiny", _build_tiny)
    yield
    MODELS.pop("test-tiny", None)


CFG = {"optimizer": "adam", "lr": 0.02, "weight_decay": 5e-4, "hidden_dim": 16, "dropout": 0.5}


class RecordingCallback:
    def __init__(self):
        self.calls = []
        self.grad_norms = []

    def on_train_begin(self, trainer):
        self.calls.append("begin")

    def on_after_backward(self, trainer, epoch):
        n = sum(float(p.grad.norm()) for p in trainer.model.parameters() if p.grad is not None)
        self.grad_norms.append(n)

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(("epoch", epoch, sorted(logs)))

    def on_train_end(self, trainer):
        self.calls.append("end")

    def state_dict(self):
        return {"grad_norms": list(self.grad_norms)}

    def load_state_dict(self, s):
        self.grad_norms = list(s["grad_norms"])


def test_fit_learns_and_reports():
    ds = synthetic_dataset()
    seed_everything(0)
    model = _build_tiny(ds, CFG)
    cb = RecordingCallback()
    r = fit(model, ds, CFG, callbacks=[cb], seed=0, epochs=30, progress=False)
    assert r["epochs"] == 30 and len(r["history"]) == 30
    assert r["val_acc"] > 0.6, r["val_acc"]
    best = max(h["val_acc"] for h in r["history"])
    first_best = next(h for h in r["history"] if h["val_acc"] == best)
    assert r["val_acc"] == best and r["test_acc"] == first_best["test_acc"]
    assert r["best_epoch"] == first_best["epoch"]
    assert r["nfe"] == 1.0 and r["epoch_time_s"] > 0
    assert cb.calls[0] == "begin" and cb.calls[-1] == "end"
    assert len(cb.grad_norms) == 30 and all(g > 0 for g in cb.grad_norms)
    assert {"loss", "train_acc", "val_acc", "test_acc", "epoch_time_s", "nfe"} <= set(cb.calls[1][2])


@pytest.mark.parametrize("opt", ["adam", "adamax", "rmsprop", "sgd", "adamw"])
def test_optimizers(opt):
    ds = synthetic_dataset()
    seed_everything(0)
    model = _build_tiny(ds, CFG)
    r = fit(model, ds, {**CFG, "optimizer": opt}, seed=0, epochs=2, progress=False)
    assert r["epochs"] == 2


def test_unknown_optimizer():
    ds = synthetic_dataset()
    with pytest.raises(ValueError, match="lbfgs"):
        fit(_build_tiny(ds, CFG), ds, {**CFG, "optimizer": "lbfgs"}, epochs=1, progress=False)


def test_same_seed_same_result():
    ds = synthetic_dataset()
    outs = []
    for _ in range(2):
        seed_everything(3)
        m = _build_tiny(ds, CFG)
        r = fit(m, ds, CFG, seed=3, epochs=8, progress=False)
        outs.append((r, [p.detach().clone() for p in m.parameters()]))
    assert outs[0][0]["test_acc"] == outs[1][0]["test_acc"]
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.equal(a, b)


def _strip_times(history):
    return [{k: v for k, v in h.items() if not k.endswith("time_s")} for h in history]


def test_checkpoint_resume_bit_identical(tmp_path):
    ds = synthetic_dataset()
    epochs = 12
    # uninterrupted
    seed_everything(7)
    m_full = _build_tiny(ds, CFG)
    cb_full = RecordingCallback()
    r_full = fit(m_full, ds, CFG, callbacks=[cb_full], seed=7, epochs=epochs, progress=False)
    # interrupted after 5 epochs, then resumed in a fresh model / optimizer
    ck = str(tmp_path / "run.pt")
    seed_everything(7)
    m_a = _build_tiny(ds, CFG)
    fit(m_a, ds, CFG, callbacks=[RecordingCallback()], seed=7, epochs=5, checkpoint=ck, progress=False)
    torch.manual_seed(12345)  # disturb the global RNG: the checkpoint must restore it
    seed_everything(7)
    m_b = _build_tiny(ds, CFG)
    cb_b = RecordingCallback()
    r_res = fit(m_b, ds, CFG, callbacks=[cb_b], seed=7, epochs=epochs, checkpoint=ck, resume=ck,
                progress=False)
    for (n, a), b in zip(m_full.named_parameters(), m_b.parameters()):
        assert torch.equal(a, b), n
    for k in ("test_acc", "val_acc", "best_epoch", "epochs", "train_acc"):
        assert r_full[k] == r_res[k], k
    assert _strip_times(r_full["history"]) == _strip_times(r_res["history"])
    assert cb_full.grad_norms == cb_b.grad_norms  # the callback's state came back too
    # resuming a finished run trains nothing more
    r_again = fit(_build_tiny(ds, CFG), ds, CFG, callbacks=[RecordingCallback()], seed=7, epochs=epochs,
                  resume=ck, progress=False)
    assert r_again["test_acc"] == r_full["test_acc"] and r_again["epochs"] == epochs


def test_early_stopping():
    ds = synthetic_dataset()
    seed_everything(0)
    r = fit(_build_tiny(ds, CFG), ds, {**CFG, "patience": 3, "lr": 1e-12}, seed=0, epochs=50, progress=False)
    assert r["epochs"] <= 5


def test_run_many_multi_split_dataset():
    ds = synthetic_dataset(splits=3)
    out = run_many("test-tiny", ds, CFG, runs=3, seed=10, epochs=3, progress=False)
    assert [r["seed"] for r in out["runs"]] == [10, 11, 12]
    assert 0 <= out["mean_test_acc"] <= 1 and out["std_test_acc"] >= 0
    assert out["config"]["lr"] == CFG["lr"]


def _comparable(out):
    return [{k: r[k] for k in ("seed", "test_acc", "val_acc", "train_acc", "best_epoch", "final_test_acc")}
            for r in out["runs"]]


def test_run_many_serial_executor_reports_each_run_before_the_next_starts():
    """The default executor runs the seeds one after another, in this process: run i's
    callbacks are made, it trains and on_run_end(i) is called before run i+1 starts."""
    from graphode.train import SerialExecutor

    ds = synthetic_dataset()
    events = []

    def factory(i):
        events.append(("start", i))
        return []

    default = run_many("test-tiny", ds, CFG, runs=3, seed=4, epochs=2, progress=False, callbacks_factory=factory,
                       on_run_end=lambda i, r: events.append(("end", i, r["seed"])))
    assert events == [("start", 0), ("end", 0, 4), ("start", 1), ("end", 1, 5), ("start", 2), ("end", 2, 6)]
    explicit = run_many("test-tiny", ds, CFG, runs=3, seed=4, epochs=2, progress=False, executor=SerialExecutor())
    assert _comparable(explicit) == _comparable(default)


def test_run_many_on_a_concurrent_futures_executor_same_results_seed_by_seed():
    """Any concurrent.futures executor: each run seeds itself, so the results equal the
    serial ones seed by seed, in seed order whatever order the runs end in."""
    from concurrent.futures import ThreadPoolExecutor

    ds = synthetic_dataset(splits=2)
    serial = run_many("test-tiny", ds, CFG, runs=3, seed=1, epochs=3, progress=False)
    ended = []
    with ThreadPoolExecutor(max_workers=1) as ex:
        threaded = run_many("test-tiny", ds, CFG, runs=3, seed=1, epochs=3, progress=False, executor=ex,
                            on_run_end=lambda i, r: ended.append(i))
    assert sorted(ended) == [0, 1, 2]
    assert _comparable(threaded) == _comparable(serial)
    assert threaded["mean_test_acc"] == serial["mean_test_acc"] and threaded["std_test_acc"] == serial["std_test_acc"]


def test_run_many_uses_the_executors_put_and_device():
    """put(obj) shares the dataset once (the runs get what it returns); the executor's
    device is the runs' device when the config names none, never over the config's."""
    from graphode.train import SerialExecutor

    ds = synthetic_dataset()

    class Box:  # what a remote executor's put returns: a handle, not the dataset
        def __init__(self, obj):
            self.obj = obj

    class Remote(SerialExecutor):
        device = "cpu"

        def __init__(self):
            self.puts = 0

        def put(self, obj):
            self.puts += 1
            return Box(obj)

        def submit(self, fn, /, *args, **kwargs):
            assert isinstance(args[0], Box)
            return super().submit(fn, args[0].obj, *args[1:], **kwargs)

    ex = Remote()
    out = run_many("test-tiny", ds, CFG, runs=2, seed=0, epochs=2, progress=False, executor=ex)
    assert ex.puts == 1 and out["config"]["device"] == "cpu"
    assert _comparable(out) == _comparable(run_many("test-tiny", ds, CFG, runs=2, seed=0, epochs=2, progress=False))
    assert "device" not in run_many("test-tiny", ds, CFG, runs=1, epochs=1, progress=False)["config"]
    ex.device = "cuda"
    cfg_dev = run_many("test-tiny", ds, {**CFG, "device": "cpu"}, runs=1, epochs=1, progress=False, executor=ex)
    assert cfg_dev["config"]["device"] == "cpu"


def test_run_many_error_in_a_run_propagates():
    from graphode.errors import ConfigError

    def bad(dataset, config):
        raise ConfigError("no such thing")

    register_model("test-bad", bad)
    try:
        with pytest.raises(ConfigError, match="no such thing"):
            run_many("test-bad", synthetic_dataset(), CFG, runs=2, epochs=1, progress=False)
    finally:
        MODELS.pop("test-bad", None)


def _cli_args(argv):
    p = argparse.ArgumentParser()
    add_train_args(p)
    return p.parse_args(argv)


def test_cli_out_json(tmp_path, monkeypatch, capsys):
    ds = synthetic_dataset()
    import graphode.train._trainer as tr

    monkeypatch.setattr(tr, "_load", lambda name, split, seeds, root=None: ds)
    out = tmp_path / "res.json"
    args = _cli_args(["--model", "test-tiny", "--dataset", "synthetic", "--runs", "2", "--epochs", "3",
                      "--seed", "5", "--out", str(out), "--set", "lr=0.05", "--set", "hidden_dim=8",
                      "--layers", "4", "--no-progress"])
    assert run_train(args) == 0
    res = json.loads(out.read_text())
    assert {"runs", "mean_test_acc", "std_test_acc", "config"} <= set(res)
    assert len(res["runs"]) == 2
    for r in res["runs"]:
        assert {"seed", "test_acc", "val_acc", "epochs", "epoch_time_s", "nfe"} <= set(r)
    assert [r["seed"] for r in res["runs"]] == [5, 6]
    assert res["config"]["lr"] == 0.05 and res["config"]["hidden_dim"] == 8 and res["config"]["layers"] == 4
    text = capsys.readouterr().out
    assert "run 1/2 seed 5" in text and "±" in text


def test_cli_unknown_model():
    from graphode.errors import UserError

    args = _cli_args(["--model", "no-such-model", "--dataset", "cora", "--no-progress"])
    with pytest.raises(UserError, match="no-such-model"):
        run_train(args)


@pytest.mark.parametrize("flag,value", [("--init", "xavier"), ("--rewiring", "gradient")])
def test_cli_unknown_init_or_rewiring_is_a_usage_error(flag, value, capsys):
    """A misspelt deep-GCN option is refused by the parser, naming the valid choices."""
    with pytest.raises(SystemExit) as e:
        _cli_args(["--model", "gcn", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert value in err and ("isometric-code" in err or "dirichlet_energy" in err)


def test_cli_dataset_from_config_file(tmp_path):
    """Without --dataset, the --config file's ``dataset`` key is used (not a silent Cora)."""
    from graphode.train._cli import resolve_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: grand-l\ndataset: citeseer\nlr: 0.01\n")
    cfg = resolve_config(_cli_args(["--config", str(cfg_file)]))
    assert cfg["dataset"] == "citeseer" and cfg["model"] == "grand-l" and cfg["lr"] == 0.01
    cfg = resolve_config(_cli_args(["--config", str(cfg_file), "--dataset", "cora"]))  # the flag wins
    assert cfg["dataset"] == "cora"
    assert resolve_config(_cli_args(["--model", "gcn"]))["dataset"] == "cora"  # no config: Cora


def test_cli_baselines_get_the_gcn_training_settings():
    """gcnii/appnp/... have no config of their own: they train with the deep-GCN settings
    (Adam, lr 0.005, wd 5e-4), as in the paper's comparison, not the trainer's generic lr."""
    pytest.importorskip("torch_geometric")
    from graphode.train._cli import load_config, resolve_config

    gcn = load_config(None, "gcn", "cora")
    for name in ("gcnii", "appnp", "sgc", "jknet"):
        cfg = resolve_config(_cli_args(["--model", name, "--dataset", "cora"]))
        assert cfg["model"] == name
        assert (cfg["lr"], cfg["weight_decay"], cfg["optimizer"]) == (gcn["lr"], gcn["weight_decay"], gcn["optimizer"])
