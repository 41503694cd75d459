"""``graphode train``: the training command line (wired into ``graphode.cli``).

::

    graphode train --model grand-l --dataset cora --split public --runs 20 \\
        [--config path.yaml] [--seed S] [--epochs E] [--method dopri5] [--adjoint] \\
        [--out results.json] [--checkpoint PATH] [--resume PATH] [--data-root DIR] \\
        [--layers L] [--init NAME] [--rewiring NAME] [--set key=value ...] [--threads N]

(``graphode.cli`` adds ``--ray [--ray-address ADDR] [--cpus-per-run C] [--gpus-per-run G]``,
the executor the runs execute on, handed to :func:`run_train`, and ``--nproc N
[--partition DIR] [--partition-method M]``, training across processes, which
:mod:`graphode.distributed` runs with this module's steps.)

The config is a flat YAML mapping.  Without ``--config`` the packaged one for
the model family and dataset is used when it exists
(``graphode/configs/grand/<dataset>.yaml`` for the GRAND models,
``graphode/configs/<model>/<dataset>.yaml`` otherwise).  Command-line flags
override the file; ``--set key=value`` (value parsed as YAML) overrides
everything.  Every key is checked against the model family's schema
(:mod:`graphode.config`); ``--print-config`` prints the resolved config.  ``--layers``, ``--init`` and ``--rewiring`` become the config keys
``layers``, ``init`` and ``rewiring`` that the deep-GCN builders read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, Optional

from ..config import (GCN_INITS, REWIRING_CRITERIA, SPLITS, check_config, dump_config, load_config,
                      packaged_config_path, parse_set, read_yaml_mapping, resolved_config)
from ..errors import ConfigError, DataError

__all__ = ["add_train_args", "run_train", "prepare_train", "run_reporter", "finish_train", "load_config",
           "packaged_config_path", "parse_set", "resolve_config"]


def int_at_least(low: int, what: str):
    """An argparse ``type``: an integer ``>= low`` (``what`` names the range in the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "an integer >= 0")


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``graphode train`` options to ``parser`` (a subparser)."""
    p = parser
    p.add_argument("--model", default=None, help="model name (grand-l, grand-nl, grand-nl-rw, gcn, ...); "
                   "default: the config's 'model' key")
    p.add_argument("--dataset", default=None,
                   help="dataset name (default: the --config file's 'dataset' key, else cora)")
    p.add_argument("--split", default=None, choices=SPLITS,
                   help="public: the dataset's published masks (full graph); grand: the largest connected "
                        "component with GRAND's split drawn once with seed 12345 (the GRAND authors' code, "
                        "their Table 1; seeds vary the initialisation); random: a random LCC split per seed "
                        "(GRAND's Table 2 protocol); default: the config's 'split' key, else public")
    p.add_argument("--split-seed", type=nonnegative_int, default=None,
                   help="with --split random: draw one split with this seed for every run (seeds then vary "
                        "the initialisation only)")
    p.add_argument("--runs", type=positive_int, default=1, help="number of seeds (default 1)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the first run; run i uses seed+i")
    p.add_argument("--config", default=None, help="YAML config (default: the packaged one)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--method", default=None, help="ODE solver method (dopri5, rk4, implicit_euler, ...)")
    p.add_argument("--adjoint", action="store_true", default=None, help="use the adjoint method")
    p.add_argument("--device", default=None, help="cpu or cuda")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads while training (GRAND on Cora-sized graphs is fastest with 1)")
    p.add_argument("--layers", type=positive_int, default=None, help="number of layers (deep GCN models)")
    p.add_argument("--init", default=None, choices=GCN_INITS,
                   help="weight initialisation (deep GCN models): glorot; isometric = eq. 14 of the paper; "
                        "isometric-code = the authors' code's bound, the one that reproduces the paper's tables")
    p.add_argument("--rewiring", default=None, choices=("none",) + REWIRING_CRITERIA,
                   help="gradient-guided rewiring (deep GCN models): gradient_flow = the paper's rule, "
                        "dirichlet_energy = the authors' code's rule")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable; value parsed as YAML)")
    p.add_argument("--out", default=None, help="write results as JSON here")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (written every epoch)")
    p.add_argument("--resume", default=None, help="resume from this checkpoint")
    p.add_argument("--data-root", default=None, help="where the dataset files are")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, flags, --set and the schema's defaults) and exit")
    return p


def resolve_config(args) -> Dict[str, Any]:
    """The run's config from parsed ``graphode train`` arguments: the config file (``--config``,
    else the packaged one), then the flags, then ``--set``; each layer is checked against the
    model family's schema (:func:`graphode.config.check_config`), naming its source."""
    from ..models import MODELS

    given = read_yaml_mapping(args.config) if args.config else {}
    if args.dataset is None:  # --config's own dataset key, else Cora
        args.dataset = given.get("dataset") or "cora"
    if not isinstance(args.dataset, str):
        raise ConfigError(f"{args.config}: dataset: expected a dataset name, got {args.dataset!r}")
    model = args.model or given.get("model")
    if model is None:
        raise ConfigError("--model is required (or a 'model' key in the config)")
    if model not in MODELS:
        import difflib

        close = difflib.get_close_matches(str(model), list(MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {model!r}{hint}; known models: {', '.join(sorted(MODELS))}")
    if args.config:
        cfg = check_config(given, model, args.config)
    else:
        path = packaged_config_path(model, args.dataset)
        cfg = check_config(read_yaml_mapping(path), model, path) if path else {}
    cfg["model"] = model
    cfg["dataset"] = args.dataset
    if args.split is not None:
        cfg["split"] = args.split
    cfg.setdefault("split", "public")
    flags = {}
    for key in ("epochs", "method", "device", "layers", "init", "rewiring", "threads", "split_seed"):
        v = getattr(args, key, None)
        if v is not None:
            flags[key] = v
    if args.adjoint:
        flags["adjoint"] = True
    cfg.update(check_config(flags, model, "command line"))
    cfg.update(check_config(parse_set(args.overrides), model, "--set"))
    args.split = cfg["split"]
    if cfg.get("split_seed") is not None and cfg["split"] != "random":
        raise ConfigError(f"--split-seed applies to --split random only (got --split {cfg['split']}; "
                          f"'grand' is the split drawn with seed 12345)")
    return cfg


def check_dataset(args, cfg):
    """Load the dataset before any training: an unknown name or missing files is a
    :class:`DataError` that names them and where they were looked for."""
    from ..datasets import available_datasets
    from ..datasets._load import canonical_name
    from ._trainer import _load

    def unknown():
        import difflib

        try:
            canonical_name(args.dataset)
        except ValueError:
            close = difflib.get_close_matches(args.dataset.lower(), list(available_datasets()), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return DataError(f"unknown dataset {args.dataset!r}{hint}; known: {', '.join(available_datasets())}")
        return None

    seeds = [args.seed + i for i in range(args.runs)]
    try:
        extra = {} if cfg.get("split_seed") is None else {"split_seed": cfg["split_seed"]}
        return _load(args.dataset, args.split, seeds, args.data_root, **extra)
    except DataError:
        raise
    except OSError as e:  # missing files (FileNotFoundError), or a failed download
        from ..datasets._pyg import raw_file_path

        msg = " ".join(str(e).split())
        raw = raw_file_path(args.dataset, args.data_root)
        if raw is not None and not isinstance(e, FileNotFoundError):
            msg = (f"{args.dataset}: the files are not under {raw.parent} and the "
                   f"download failed ({msg}); put {raw.name} there or pass --data-root")
        raise DataError(msg) from None
    except ValueError as e:  # an unknown name, or a split the dataset does not have
        raise (unknown() or ConfigError(f"--split {args.split}: {e}")) from None


def _check_outputs(args) -> None:
    from .._io import check_writable_dir

    if args.out:
        check_writable_dir(args.out, "--out")
    if args.checkpoint:
        check_writable_dir(args.checkpoint, "--checkpoint")


def _check_resume(args, cfg) -> None:
    """Read the checkpoints that --resume will continue from, before any work: damaged,
    unsafe or foreign files, and ones written for another model or dataset, are errors."""
    from ._trainer import check_checkpoint_matches, load_checkpoint

    if not args.resume:
        return
    paths = [args.resume] if args.runs == 1 else [f"{args.resume}.run{i}" for i in range(args.runs)]
    for p in paths:
        if os.path.exists(p):
            check_checkpoint_matches(load_checkpoint(p), p, cfg["model"], args.dataset)


def _split_label(split: str, split_seed=None) -> str:
    if split == "grand":
        return "GRAND's split: largest connected component, seed 12345"
    if split == "random":
        return "random LCC split per seed" if split_seed is None else f"random LCC split, seed {split_seed}"
    return f"{split} split"


def _fmt(v, spec=".2f", scale=1.0, none="-"):
    return none if v is None else format(v * scale, spec)


def prepare_train(args) -> Optional[Dict[str, Any]]:
    """The run's config from parsed ``graphode train`` arguments (:func:`resolve_config`),
    with ``--out`` / ``--checkpoint`` and ``--resume`` checked before any work; None when
    ``--print-config`` printed it (nothing to run)."""
    cfg = resolve_config(args)
    if getattr(args, "print_config", False):
        sys.stdout.write(dump_config(resolved_config(cfg, cfg["model"])))
        return None
    _check_outputs(args)
    _check_resume(args, cfg)
    return cfg


def run_reporter(args) -> Callable[[int, Dict[str, Any]], None]:
    """The ``on_run_end(i, result)`` that prints one line per finished run."""
    def report(i, r):
        print(
            f"run {i + 1}/{args.runs} seed {r['seed']}: test {_fmt(r['test_acc'], '.2f', 100)}% "
            f"val {_fmt(r['val_acc'], '.2f', 100)}% (best epoch {r['best_epoch'] + 1}/{r['epochs']}), "
            f"{_fmt(r['epoch_time_s'], '.3f')} s/epoch, NFE {_fmt(r['nfe'], '.1f')}",
            flush=True,
        )

    return report


def run_train(args, executor=None) -> int:
    """Run ``graphode train`` for parsed ``args``; prints the results (and writes ``--out``).

    ``executor``: where the runs execute (:func:`graphode.train.run_many`; default: one
    after another in this process).  ``graphode.cli`` passes a Ray executor for ``--ray``
    (and runs ``--nproc`` / torchrun jobs through :mod:`graphode.distributed` instead).

    Returns 0 (the exit status).  Raises :class:`~graphode.errors.UserError` (one line at the
    command line, exit code 2) for a user error: unknown model, bad config, bad checkpoint, ..."""
    from ._trainer import run_many

    cfg = prepare_train(args)
    if cfg is None:
        return 0
    dataset = check_dataset(args, cfg)
    out = run_many(cfg["model"], dataset, cfg, runs=args.runs, seed=args.seed, split=args.split,
                   split_seed=cfg.get("split_seed"), data_root=args.data_root, epochs=cfg.get("epochs"),
                   checkpoint=args.checkpoint, resume=args.resume,
                   progress=not args.no_progress and sys.stderr.isatty(), on_run_end=run_reporter(args),
                   executor=executor)
    return finish_train(args, cfg, out)


def finish_train(args, cfg: Dict[str, Any], out: Dict[str, Any]) -> int:
    """Print the summary of ``out`` (a :func:`graphode.train.run_many` result) and write
    ``--out``; returns 0."""
    model = cfg["model"]
    print(
        f"{model} on {args.dataset} ({_split_label(args.split, cfg.get('split_seed'))}), {args.runs} run(s): test accuracy "
        f"{100 * out['mean_test_acc']:.2f} ± {100 * out['std_test_acc']:.2f} % "
        f"(val {100 * out['mean_val_acc']:.2f} %), {_fmt(out['mean_epoch_time_s'], '.3f')} s/epoch, "
        f"NFE {_fmt(out['mean_nfe'], '.1f')}",
        flush=True,
    )
    if args.out:
        from .._io import atomic_write

        text = json.dumps(out, indent=2, default=str)
        atomic_write(args.out, lambda f: f.write(text), binary=False, what="--out")
        print(f"wrote {args.out}")
    return 0
