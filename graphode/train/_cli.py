"""``graphode train``: the training command line (wired into ``graphode.cli``).

::

    graphode train --model grand-l --dataset cora --split public --runs 20 \\
        [--config path.yaml] [--seed S] [--epochs E] [--method dopri5] [--adjoint] \\
        [--out results.json] [--checkpoint PATH] [--resume PATH] [--data-root DIR] \\
        [--layers L] [--init NAME] [--rewiring NAME] [--set key=value ...] [--threads N] \\
        [--ray [--ray-address ADDR] [--cpus-per-run C] [--gpus-per-run G]]

The config is a flat YAML mapping.  Without ``--config`` the packaged one for
the model family and dataset is used when it exists
(``graphode/configs/grand/<dataset>.yaml`` for the GRAND models,
``graphode/configs/<model>/<dataset>.yaml`` otherwise).  Command-line flags
override the file; ``--set key=value`` (value parsed as YAML) overrides
everything.  ``--layers``, ``--init`` and ``--rewiring`` become the config keys
``layers``, ``init`` and ``rewiring`` that the deep-GCN builders read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from ..models.gcn import INITS as GCN_INITS
from ._rewiring import CRITERIA as REWIRING_CRITERIA

__all__ = ["add_train_args", "run_train", "load_config", "packaged_config_path", "parse_set", "main"]


def packaged_config_path(model: Optional[str], dataset: str) -> Optional[str]:
    """Path of the packaged config for ``model`` on ``dataset``, or None if there is none."""
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    name = dataset.lower().replace("_", "-")
    try:  # aliases (cs -> coauthor-cs, arxiv -> ogbn-arxiv, ...)
        from ..datasets._load import canonical_name

        name = canonical_name(name)
    except (ImportError, ValueError):
        pass
    fams = []
    if model:
        m = model.lower()
        fams.append("grand" if m.startswith("grand") else m)
        fams.append(m.split("-")[0])
        try:  # the deep-GCN baselines (gcnii, appnp, sgc, jknet, gat, ...) train with the GCN settings
            from ..models.baselines import BASELINE_MODELS

            if m in BASELINE_MODELS:
                fams.append("gcn")
        except ImportError:  # pragma: no cover - PyG missing
            pass
    for fam in dict.fromkeys(fams):
        p = os.path.join(base, fam, f"{name}.yaml")
        if os.path.exists(p):
            return p
    return None


def load_config(path: Optional[str] = None, model: Optional[str] = None,
                dataset: Optional[str] = None) -> Dict[str, Any]:
    """Read a flat YAML config (``path``, else the packaged one for model/dataset, else {})."""
    import yaml

    if path is None and dataset is not None:
        path = packaged_config_path(model, dataset)
    if path is None:
        return {}
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"config {path} must be a YAML mapping, got {type(cfg).__name__}")
    return cfg


def parse_set(items: List[str]) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML)."""
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else None
    return out


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``graphode train`` options to ``parser`` (a subparser)."""
    p = parser
    p.add_argument("--model", default=None, help="model name (grand-l, grand-nl, grand-nl-rw, gcn, ...); "
                   "default: the config's 'model' key")
    p.add_argument("--dataset", default=None,
                   help="dataset name (default: the --config file's 'dataset' key, else cora)")
    p.add_argument("--split", default="public", choices=["public", "random", "geom-gcn", "official"],
                   help="public Planetoid split or random LCC splits (GRAND protocol)")
    p.add_argument("--runs", type=int, default=1, help="number of seeds (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first run; run i uses seed+i")
    p.add_argument("--config", default=None, help="YAML config (default: the packaged one)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--method", default=None, help="ODE solver method (dopri5, rk4, implicit_euler, ...)")
    p.add_argument("--adjoint", action="store_true", default=None, help="use the adjoint method")
    p.add_argument("--device", default=None, help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads while training (GRAND on Cora-sized graphs is fastest with 1)")
    p.add_argument("--layers", type=int, default=None, help="number of layers (deep GCN models)")
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
    p.add_argument("--ray", action="store_true",
                   help="run the seeds as Ray tasks (graphode.sweep.run_many_ray; same results seed by seed)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--cpus-per-run", type=float, default=1, help="with --ray: CPUs per run (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=0, help="with --ray: GPUs per run (default 0)")
    return p


def _resolve_config(args) -> Dict[str, Any]:
    if args.dataset is None:  # --config's own dataset key, else Cora
        args.dataset = (load_config(args.config) if args.config else {}).get("dataset") or "cora"
    cfg = load_config(args.config, args.model, args.dataset)
    model = args.model or cfg.get("model")
    if model is None:
        raise ConfigError("--model is required (or a 'model' key in the config)")
    cfg["model"] = model
    cfg["dataset"] = args.dataset
    cfg["split"] = args.split
    for key in ("epochs", "method", "device", "layers", "init", "rewiring", "threads"):
        v = getattr(args, key, None)
        if v is not None:
            cfg[key] = v
    if args.adjoint:
        cfg["adjoint"] = True
    cfg.update(parse_set(args.overrides))
    return cfg


def _fmt(v, spec=".2f", scale=1.0, none="-"):
    return none if v is None else format(v * scale, spec)


def run_train(args) -> int:
    """Run ``graphode train`` for parsed ``args``; prints the results (and writes ``--out``).

    Returns 0 (the exit status).  Raises :class:`~graphode.errors.UserError` (one line at the
    command line, exit code 2) for a user error: unknown model, bad config, bad checkpoint, ..."""
    from ..models import MODELS
    from ._trainer import run_many

    cfg = _resolve_config(args)
    model = cfg["model"]
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; known models: {', '.join(sorted(MODELS))}")
    progress = not args.no_progress and sys.stderr.isatty()

    def report(i, r):
        print(
            f"run {i + 1}/{args.runs} seed {r['seed']}: test {_fmt(r['test_acc'], '.2f', 100)}% "
            f"val {_fmt(r['val_acc'], '.2f', 100)}% (best epoch {r['best_epoch'] + 1}/{r['epochs']}), "
            f"{_fmt(r['epoch_time_s'], '.3f')} s/epoch, NFE {_fmt(r['nfe'], '.1f')}",
            flush=True,
        )

    common = dict(runs=args.runs, seed=args.seed, split=args.split, data_root=args.data_root,
                  epochs=cfg.get("epochs"), checkpoint=args.checkpoint, resume=args.resume, progress=progress,
                  on_run_end=report)
    if getattr(args, "ray", False):
        from ..sweep import run_many_ray

        out = run_many_ray(model, args.dataset, cfg, address=args.ray_address, cpus_per_run=args.cpus_per_run,
                           gpus_per_run=args.gpus_per_run, **common)
    else:
        out = run_many(model, args.dataset, cfg, **common)
    print(
        f"{model} on {args.dataset} ({args.split} split), {args.runs} run(s): test accuracy "
        f"{100 * out['mean_test_acc']:.2f} ± {100 * out['std_test_acc']:.2f} % "
        f"(val {100 * out['mean_val_acc']:.2f} %), {_fmt(out['mean_epoch_time_s'], '.3f')} s/epoch, "
        f"NFE {_fmt(out['mean_nfe'], '.1f')}",
        flush=True,
    )
    if args.out:
        d = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(d, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    """``python -m graphode.train`` entry point (same options as ``graphode train``)."""
    parser = argparse.ArgumentParser(prog="graphode train", description="train a graph model")
    add_train_args(parser)
    return run_train(parser.parse_args(argv))
