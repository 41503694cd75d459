"""Split protocols of ``graphode train`` / ``run_many``: ``public``, ``grand`` (GRAND's
code: the largest component and one split drawn with seed 12345) and ``random`` (one split
per seed, or the one of ``--split-seed``)."""
import pytest
import torch

from graphode.datasets import GRAND_SPLIT_SEED, SPLIT_PROTOCOLS, load_dataset, random_split
from graphode import cli
from graphode.train import _trainer as tr


def test_protocols_and_seed():
    assert SPLIT_PROTOCOLS == ("public", "grand", "random") and GRAND_SPLIT_SEED == 12345
    g = load_dataset("cora", split="grand")
    r = load_dataset("cora", split="random", seed=12345)
    assert g.info["split"] == "grand" and r.info["split"] == "random"
    for a, b in ((g.train_mask, r.train_mask), (g.val_mask, r.val_mask), (g.test_mask, r.test_mask)):
        assert torch.equal(a, b)
    p = load_dataset("cora", split="public")
    assert p.num_nodes == 2708 and g.num_nodes == 2485


def test_run_many_split_loading(monkeypatch):
    seen = []

    def fake_load_dataset(name, root=None, split=None, seed=0):
        seen.append((split, seed))
        raise RuntimeError("stop")

    import graphode.datasets as D

    monkeypatch.setattr(D, "load_dataset", fake_load_dataset)
    for split, split_seed, expect in (("grand", None, ("grand", 0)), ("random", None, ("random", [3, 4])),
                                      ("random", 7, ("random", 7))):
        with pytest.raises(RuntimeError, match="stop"):
            tr.run_many("grand-l", "cora", {}, runs=2, seed=3, split=split, split_seed=split_seed)
        assert seen[-1] == expect
    with pytest.raises(ValueError, match="split_seed applies to split='random' only"):
        tr._load("cora", "grand", [0], None, split_seed=3)


def test_cli_split_seed_only_with_random(capsys):
    rc = cli.main(["train", "--model", "grand-l", "--dataset", "cora", "--split", "grand", "--split-seed", "1",
                   "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--split-seed applies to --split random only" in err[0]


def test_random_split_seed_is_fixed_across_runs():
    a = random_split(torch.arange(300) % 3, num_dev=60, per_class=5, seed=[7, 7])
    assert torch.equal(a[0][:, 0], a[0][:, 1])
