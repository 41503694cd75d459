"""Full-batch node classification across ranks: each rank trains on its part.

Every rank holds its owned nodes' features, labels and masks and a
:class:`~graphode.distributed.DistGraph`; the model (GRAND-l, GRAND-nl,
GRAND-laplacian or GCN, built by the usual builders) is the same on every rank
(built from the same seed, then broadcast from rank 0).  An epoch:

* forward on the owned rows (the ops exchange halo rows; adaptive solvers
  reduce their error norm over ranks, so all ranks take the same steps);
* loss = (sum of the cross-entropy over the rank's labelled nodes) / (labelled
  nodes over all ranks), so that the ranks' losses add up to the
  single-process mean;
* backward (the ops send halo gradients back), then the parameter gradients
  are summed over ranks with one ``all_reduce`` (the single-process gradient)
  and every rank takes the same optimizer step;
* accuracies from correct counts summed over ranks.

Started by ``graphode train --nproc N`` (N local processes) or by ``torchrun``
on several machines (see README.md, "Training on several processes").
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..datasets import NodeDataset
from ..train._trainer import Trainer, model_stat, plain_values, seed_everything, summarize
from . import _comm
from .graph import DistGraph
from .partition import Partition, load_meta, load_part, partition_graph, save_partition

__all__ = [
    "SUPPORTED_MODELS",
    "PartDataset",
    "partition_dataset",
    "save_dataset_partition",
    "load_part_dataset",
    "DistTrainer",
    "run_many",
    "launch_train",
    "run_train_rank",
    "add_train_args",
    "run_train",
    "add_partition_args",
    "run_partition",
]

SUPPORTED_MODELS = ("grand-l", "grand-nl", "grand-laplacian", "gcn")
_MASKS = ("train_mask", "val_mask", "test_mask")


@dataclass(eq=False, repr=False)
class PartDataset(NodeDataset):
    """One rank's share of a :class:`graphode.datasets.NodeDataset`: the owned rows of
    ``x``, ``y`` and the masks, the global ``num_classes``, and the rank's
    :class:`DistGraph` as ``graph`` (``edge_index`` stays empty: the edges live in
    the graph)."""

    dist_graph: Optional[DistGraph] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.dist_graph, DistGraph):
            raise TypeError("PartDataset needs dist_graph, the rank's DistGraph")
        if self.x.size(0) != self.dist_graph.num_nodes:
            raise ValueError(f"x has {self.x.size(0)} rows but the rank owns {self.dist_graph.num_nodes} nodes")

    @property
    def graph(self) -> DistGraph:
        return self.dist_graph

    def to(self, device, non_blocking: bool = False) -> "PartDataset":
        out = super().to(device, non_blocking)
        out.dist_graph = self.dist_graph.to(device)
        return out

    def __repr__(self) -> str:
        return f"PartDataset({self.name!r}, {self.dist_graph!r}, features={self.num_features})"


# --------------------------------------------------------------------------- partitions of datasets
def _node_data(ds) -> Dict[str, torch.Tensor]:
    return {"x": ds.x, "y": ds.y, **{k: getattr(ds, k) for k in _MASKS}}


def partition_dataset(ds, num_parts: int, method: str = "metis", seed: int = 0) -> Partition:
    """:func:`~graphode.distributed.partition.partition_graph` of ``ds.graph``."""
    return partition_graph(ds.graph, num_parts, method=method, seed=seed)


def save_dataset_partition(ds, directory: str, num_parts: int, method: str = "metis", seed: int = 0) -> Dict:
    """Partition ``ds`` and save it with its features, labels and masks (each part its rows)."""
    p = partition_dataset(ds, num_parts, method, seed)
    extra = {"dataset": ds.name, "num_classes": int(ds.num_classes), "num_features": int(ds.x.size(1)),
             "info": plain_values(getattr(ds, "info", {}))}
    save_partition(p, directory, node_data=_node_data(ds), extra=extra)
    return load_meta(directory)


def _part_dataset(part, meta_extra: Dict[str, Any], group=None, device=None) -> PartDataset:
    nd = part.node_data
    missing = [k for k in ("x", "y") + _MASKS if k not in nd]
    if missing:
        raise ValueError(f"the partition holds no {missing} (save it with save_dataset_partition or "
                         f"`graphode partition`)")
    g = DistGraph(part, group=group, device=device)
    mv = (lambda t: t.to(device)) if device is not None else (lambda t: t)
    return PartDataset(meta_extra.get("dataset", "dataset"), mv(nd["x"]), mv(nd["y"]),
                       torch.zeros(2, 0, dtype=torch.int64), *(mv(nd[k]) for k in _MASKS),
                       meta_extra["num_classes"], info=dict(meta_extra.get("info") or {}), dist_graph=g)


def load_part_dataset(directory: str, rank: Optional[int] = None, group=None, device=None) -> PartDataset:
    """This rank's :class:`PartDataset` from a saved dataset partition (only its file is read)."""
    meta = load_meta(directory)
    extra = meta.get("extra") or {}
    if "num_classes" not in extra:
        raise ValueError(f"the partition at {directory} holds a graph but no dataset (features, labels, masks)")
    r = _comm.rank(group) if rank is None else int(rank)
    return _part_dataset(load_part(directory, r), extra, group, device)


def _same_on_all_ranks(t: torch.Tensor, what: str, group=None, device=None) -> None:
    h = int.from_bytes(hashlib.sha1(t.cpu().contiguous().numpy().tobytes()).digest()[:7], "little")
    v = torch.tensor([h, -h], dtype=torch.int64, device=device)
    dist.all_reduce(v, op=dist.ReduceOp.MAX, group=group)
    if int(v[0]) != h or int(v[1]) != -h:
        raise RuntimeError(f"the ranks computed different {what}; create the partition once with "
                           "`graphode partition` and pass --partition DIR")


# --------------------------------------------------------------------------- trainer
def _global_count(mask: torch.Tensor, group) -> int:
    return int(_comm.all_reduce_sum(mask.sum().reshape(1).to(torch.int64), group).item())


class DistTrainer(Trainer):
    """:class:`graphode.train.Trainer` on one rank's :class:`PartDataset` (see the module
    docstring).  Checkpoints are per rank (``PATH.rank<r>``)."""

    def __init__(self, model, dataset: PartDataset, config: Dict[str, Any], callbacks: Sequence = (),
                 seed: int = 0, group=None):
        bad = [type(cb).__name__ for cb in getattr(model, "callbacks", None) or ()
               if not getattr(cb, "works_across_ranks", False)]
        if bad:
            raise ValueError(f"the model's training callbacks {bad} are not supported across ranks (e.g. the deep "
                             "GCN's gradient-guided rewiring)")
        if not isinstance(dataset.graph, DistGraph):
            raise TypeError("DistTrainer needs a PartDataset whose graph is a DistGraph")
        self.group = group
        self.rank = _comm.rank(group)
        self.world = _comm.world_size(group)
        super().__init__(model, dataset, config, callbacks=callbacks, seed=seed)
        self._broadcast_model()
        ds = self.dataset
        self.counts = {k: _global_count(getattr(ds, k), group) for k in _MASKS}

    def _broadcast_model(self) -> None:
        # parameters and persistent buffers are the same on every rank; non-persistent
        # buffers may be per rank (GRAND-laplacian's weights of the rank's edges)
        if self.world > 1:
            for t in self.model.state_dict().values():
                dist.broadcast(t, 0, group=self.group)

    def seed_rngs(self) -> None:
        # the same seed everywhere, then each rank its own stream (dropout on different nodes)
        seed_everything(self.seed)
        torch.manual_seed(self.seed * 1_000_003 + self.rank)

    def train_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """This rank's share of the mean loss: the sum over its training nodes divided by
        the training nodes of all ranks (the shares add up to the single-process loss)."""
        if callable(getattr(self.model, "regularization_loss", None)) and self.model.regularization_loss() is not None:
            raise ValueError("regularisation losses are not supported across ranks")
        ds = self.dataset
        m = ds.train_mask
        return F.cross_entropy(logits[m], ds.y[m], reduction="sum") / max(self.counts["train_mask"], 1)

    def reduce_gradients(self) -> None:
        """Sum the parameter gradients over ranks (one ``all_reduce``)."""
        ps = [p for p in self.model.parameters() if p.requires_grad]
        if self.world == 1 or not ps:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
        _comm.all_reduce_sum(flat, self.group)
        a = 0
        for p in ps:
            p.grad = flat[a:a + p.numel()].view_as(p).clone()
            a += p.numel()

    def loss_value(self, loss: torch.Tensor) -> float:
        return float(_comm.all_reduce_sum(loss.detach().reshape(1).double(), self.group))

    def eval_metrics(self, logits: torch.Tensor) -> Dict[str, float]:
        """The accuracies and validation loss over all ranks (sums of correct predictions and
        losses reduced, divided by the node counts of all ranks)."""
        ds = self.dataset
        vm = ds.val_mask
        extra = [float(F.cross_entropy(logits[vm], ds.y[vm], reduction="sum")) if int(vm.sum()) else 0.0]
        counts, (val_loss,) = self._reduce_counts(logits.argmax(-1), extra)
        out = {name: c / n if n else float("nan") for name, (c, n) in zip(("train_acc", "val_acc", "test_acc"),
                                                                           counts)}
        if self.counts["val_mask"]:
            out["val_loss"] = val_loss / self.counts["val_mask"]
        return out

    def _reduce_counts(self, pred: torch.Tensor, extra=()):
        local = super().count_correct(pred)
        v = torch.tensor([c for c, _ in local] + list(extra), dtype=torch.float64, device=pred.device)
        v = _comm.all_reduce_sum(v, self.group).tolist()
        counts = [(int(c), self.counts[k]) for c, k in zip(v[:3], _MASKS)]
        return counts, v[3:]

    def count_correct(self, pred: torch.Tensor):
        """``[(correct, nodes)]`` of the train, validation and test masks over all ranks."""
        return self._reduce_counts(pred)[0]

    def _agree(self, value: int, what: str) -> None:
        v = torch.tensor([value, -value], dtype=torch.int64, device=self.dataset.device)
        _comm.all_reduce_max(v, self.group)
        if int(v[0]) != -int(v[1]):
            raise RuntimeError(f"the ranks' checkpoints disagree on {what} ({-int(v[1])} to {int(v[0])}); "
                               "they cannot resume together (start afresh, or from an earlier copy of all of them)")

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._agree(int(self.epoch), "the epoch")

    def fit(self, epochs=None, checkpoint=None, resume=None, progress=True):
        sfx = f".rank{self.rank}"
        if resume is not None:  # resume all ranks or none
            self._agree(int(os.path.exists(resume + sfx)), "whether they exist")
        return super().fit(epochs, None if checkpoint is None else checkpoint + sfx,
                           None if resume is None else resume + sfx, progress and self.rank == 0)


def run_many(model_name: str, dataset: PartDataset, config: Optional[Dict[str, Any]] = None, runs: int = 1,
             seed: int = 0, *, epochs: Optional[int] = None, checkpoint: Optional[str] = None,
             resume: Optional[str] = None, progress: bool = True,
             on_run_end: Optional[Callable[[int, Dict[str, Any]], None]] = None, group=None) -> Dict[str, Any]:
    """:func:`graphode.train.run_many` across ranks (every rank calls it; same result on all)."""
    from ..models import build

    if model_name not in SUPPORTED_MODELS:
        raise ValueError(f"model {model_name!r} is not supported across ranks; supported: "
                         f"{', '.join(SUPPORTED_MODELS)}")
    config = dict(config or {})
    config["model"] = model_name
    if model_name == "gcn" and config.get("rewiring") not in (None, "none", "None", False):
        raise ValueError("the deep GCN's gradient-guided rewiring is not supported across ranks")
    results: List[Dict[str, Any]] = []
    for i in range(int(runs)):
        s = int(seed) + i
        ds = dataset.split(i % dataset.num_splits)
        seed_everything(s)
        model = build(model_name, ds, config)
        ck = None if checkpoint is None else (checkpoint if runs == 1 else f"{checkpoint}.run{i}")
        rs = None if resume is None else (resume if runs == 1 else f"{resume}.run{i}")
        tr = DistTrainer(model, ds, config, seed=s, group=group)
        r = tr.fit(epochs=epochs, checkpoint=ck, resume=rs, progress=progress)
        r = {k: v for k, v in r.items() if k != "history"}
        results.append(r)
        if on_run_end is not None:
            on_run_end(i, r)
    return {"runs": results, **summarize(results), "config": plain_values(config)}


# --------------------------------------------------------------------------- command line
def _strip(argv: Sequence[str], flag: str, has_value: bool = True) -> List[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = has_value
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def check_config(model: str, cfg: Dict[str, Any]) -> None:
    """Reject, before any process starts, what training across ranks does not support
    (a :class:`~graphode.errors.ConfigError`: one line at the command line)."""
    from ..errors import ConfigError

    if model not in SUPPORTED_MODELS:
        raise ConfigError(f"model {model!r} cannot train across ranks; supported: {', '.join(SUPPORTED_MODELS)}")
    if model.startswith("grand"):
        from ..models.grand import distributed_support, grand_kwargs
        from .solvers import check_method

        why = distributed_support(model[len("grand-"):], grand_kwargs(cfg), check_method=check_method)
        if why is not None:
            raise ConfigError(f"{model} across ranks: not supported: {why}")
    if model == "gcn" and cfg.get("rewiring") not in (None, "none", "None", False):
        raise ConfigError("the deep GCN's gradient-guided rewiring is not supported across ranks")


def launch_train(args, cfg: Dict[str, Any], argv: Sequence[str], load: Callable[[], Any]) -> int:
    """``graphode train --nproc N``: partition the dataset (``load()``) unless ``--partition
    DIR`` holds one, then run ``graphode train`` in N local processes (ranks) and wait."""
    from ..errors import ConfigError
    from .launch import DistributedJobError, run_local

    nproc = int(args.nproc)
    part_dir = getattr(args, "partition", None)
    tmp = None
    try:
        if part_dir is None:
            tmp = part_dir = tempfile.mkdtemp(prefix="graphode-partition-")
        if not os.path.exists(os.path.join(part_dir, "meta.json")):
            ds = load()
            method = getattr(args, "partition_method", None) or "metis"
            meta = save_dataset_partition(ds, part_dir, nproc, method=method, seed=0)
            print(f"graphode train: {meta['method']} partition of {ds.name} into {nproc} parts: edge cut "
                  f"{meta['edge_cut']} of {meta['num_edges']} edges ({100 * meta['edge_cut_fraction']:.1f}%), "
                  f"halo nodes {meta['halo_nodes']}", flush=True)
            del ds
        else:
            meta = load_meta(part_dir)
            if int(meta["num_parts"]) != nproc:
                raise ConfigError(f"the partition at {part_dir} has {meta['num_parts']} parts but --nproc is {nproc}")
        child = _strip(_strip(argv, "--nproc"), "--partition") + ["--partition", part_dir]
        try:
            run_local([sys.executable, "-m", "graphode", *child], nproc)
        except DistributedJobError as e:
            raise SystemExit(f"graphode train: error: {e}") from None
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run_train_rank(args, cfg: Dict[str, Any], load: Callable[[], Any], on_run_end=None) -> Dict[str, Any]:
    """One rank of ``graphode train`` (under ``torchrun`` or ``--nproc``): trains on its part
    of ``--partition DIR``, or, without one, of the dataset ``load()`` gives (every rank
    partitions it alike and keeps its part); every rank returns the same result."""
    device = torch.device(cfg.get("device") or "cpu")
    if device.type == "cuda" and device.index is None:  # one GPU per rank on each machine
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        cfg = {**cfg, "device": str(device)}
    check_config(cfg["model"], cfg)
    r, w = _comm.init_process_group(device=device)
    try:
        part_dir = getattr(args, "partition", None)
        if part_dir is not None:
            ds = load_part_dataset(part_dir, r)
            if ds.graph.num_parts != w:
                raise ValueError(f"the partition at {part_dir} has {ds.graph.num_parts} parts for {w} ranks")
        else:  # every rank partitions the (small enough) dataset alike and keeps its part
            full = load()
            method = getattr(args, "partition_method", None) or "metis"
            p = partition_dataset(full, w, method=method, seed=0)
            _same_on_all_ranks(p.assignment, "partitions", None, device)
            extra = {"dataset": full.name, "num_classes": int(full.num_classes)}
            ds = _part_dataset(p.part(r, node_data=_node_data(full)), extra)
            del full, p
        return run_many(cfg["model"], ds, cfg, runs=args.runs, seed=args.seed, epochs=cfg.get("epochs"),
                        checkpoint=args.checkpoint, resume=args.resume,
                        progress=not args.no_progress and sys.stderr.isatty(), on_run_end=on_run_end)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()



def add_train_args(parser):
    """The options ``graphode train`` has for training across processes (``graphode.cli``
    adds them; with them, :func:`run_train` runs the command)."""
    from ..train._cli import positive_int

    p = parser
    p.add_argument("--nproc", type=positive_int, default=None, metavar="N",
                   help="train across N local processes, each on one part of the graph (graphode.distributed; "
                        "under torchrun the ranks come from torchrun instead)")
    p.add_argument("--partition", default=None, metavar="DIR",
                   help="with --nproc or torchrun: the saved partition to train on (`graphode partition`); "
                        "with --nproc it is created there when missing")
    p.add_argument("--partition-method", default=None, choices=("metis", "random", "contiguous"),
                   help="how --nproc / torchrun cut the graph when there is no --partition (default metis)")
    return p


def run_train(args) -> int:
    """``graphode train`` across processes (``graphode.cli`` calls it for ``--nproc N > 1``
    and in a rank under ``torchrun``): the config, outputs and checks of
    :func:`graphode.train.run_train`, then either start the ranks (each runs the same
    command again) or, in a rank, train on its part; rank 0 prints and writes ``--out``."""
    from ..train._cli import check_dataset, finish_train, prepare_train, run_reporter

    cfg = prepare_train(args)
    if cfg is None:
        return 0
    check_config(cfg["model"], cfg)
    load = lambda: check_dataset(args, cfg)  # noqa: E731
    if not _comm.is_distributed_env():  # start the ranks; each runs this command again
        return launch_train(args, cfg, getattr(args, "argv", None) or sys.argv[1:], load=load)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    out = run_train_rank(args, cfg, load=load, on_run_end=run_reporter(args) if main_rank else None)
    return finish_train(args, cfg, out) if main_rank else 0


# --------------------------------------------------------------------------- graphode partition
def add_partition_args(parser):
    """Options of ``graphode partition``."""
    p = parser
    p.add_argument("--dataset", required=True, help="dataset name (as for graphode train)")
    p.add_argument("--parts", type=int, required=True, help="number of parts (= ranks of the training job)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write meta.json and part-<r>.pt to")
    p.add_argument("--method", default="metis", choices=("metis", "random", "contiguous"),
                   help="METIS (pymetis; random parts when it is missing), random or contiguous parts")
    from ..config import SPLITS

    p.add_argument("--split", default="public", choices=SPLITS,
                   help="the split whose masks the parts hold (as graphode train --split)")
    p.add_argument("--seed", type=int, default=0, help="first seed (random splits; METIS seed)")
    p.add_argument("--runs", type=int, default=1, help="random splits: one mask column per run (as graphode train)")
    p.add_argument("--data-root", default=None, help="where the dataset files are")
    return p


def run_partition(args) -> int:
    """``graphode partition``: cut a dataset's graph and save one file per part."""
    from ..errors import ConfigError
    from ..train._cli import check_dataset

    if args.parts < 1:
        raise ConfigError(f"--parts must be >= 1, got {args.parts}")
    ds = check_dataset(args, {})
    meta = save_dataset_partition(ds, args.out, args.parts, method=args.method, seed=args.seed)
    print(f"{meta['method']} partition of {ds.name} ({meta['num_nodes']} nodes, {meta['num_edges']} edges) into "
          f"{meta['num_parts']} parts: edge cut {meta['edge_cut']} ({100 * meta['edge_cut_fraction']:.1f}% of the "
          f"edges), owned nodes {meta['owned_nodes']}, halo nodes {meta['halo_nodes']}; wrote {args.out}")
    return 0
