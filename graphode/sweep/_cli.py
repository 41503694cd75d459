"""The ``graphode sweep`` command line (wired into :mod:`graphode.cli` by
``add_sweep_args`` / ``run_sweep``)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_sweep_args", "run_sweep"]


def add_sweep_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``graphode sweep`` options to ``parser`` (a subparser)."""
    p = parser
    p.add_argument("--model", default=None, help="model name (grand-l, grand-nl, gcn, ...); "
                   "default: the config's 'model' key")
    p.add_argument("--dataset", default="cora", help="dataset name (default: cora)")
    p.add_argument("--split", default="public", choices=["public", "grand", "random", "geom-gcn", "official"],
                   help="data split each trial trains on (default: public)")
    p.add_argument("--space", default=None,
                   help="search-space YAML: a path or a packaged name (grand, gcn); default: the model's")
    p.add_argument("--num-samples", type=int, default=20, help="number of trials (default 20)")
    p.add_argument("--scheduler", default="asha", choices=["asha", "fifo"],
                   help="asha: asynchronous successive halving (early stopping); fifo: none")
    p.add_argument("--grace-period", type=int, default=10,
                   help="epochs before ASHA may stop a trial (default 10, as the GRAND authors)")
    p.add_argument("--reduction-factor", type=float, default=4, help="ASHA reduction factor (default 4)")
    p.add_argument("--metric", default="val_acc",
                   help="reported metric to maximise (default val_acc: best validation accuracy so far)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the config's)")
    p.add_argument("--output-dir", default=None,
                   help="where results.csv/json, best.yaml and the Tune experiment go "
                        "(default sweeps/<model>-<dataset>)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto, host:port or ray://host:port (default: start Ray locally)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a locally started Ray (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial, may be fractional (default 0)")
    p.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    p.add_argument("--seed", type=int, default=0, help="seed of every trial (default 0)")
    p.add_argument("--config", default=None, help="base YAML config (default: the packaged one for model/dataset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key for every trial (repeatable; value parsed as YAML; wins over the space)")
    p.add_argument("--data-root", default=None, help="where the dataset files are (read by every trial)")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="checkpoint each trial every N epochs so --resume continues it (0: never; default 10)")
    p.add_argument("--resume", action="store_true",
                   help="resume the interrupted sweep in --output-dir (Ray Tune restore)")
    p.add_argument("--name", default="tune", help="Tune experiment name (a folder of --output-dir)")
    p.add_argument("--storage-path", default=None,
                   help="where Tune stores the experiment (default --output-dir; shared storage / URI on clusters)")
    p.add_argument("--ship-code", action="store_true",
                   help="send this graphode package to the cluster's workers (runtime_env py_modules)")
    p.add_argument("--time-budget", type=float, default=None, help="stop the sweep after this many seconds")
    p.add_argument("--max-failures", type=int, default=0,
                   help="retry a failed trial this many times from its last checkpoint (default 0)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2, 3], help="Tune's console verbosity")
    return p


def _fmt(v, scale=100.0, spec=".2f"):
    return "-" if v is None else format(float(v) * scale, spec)


def run_sweep(args) -> int:
    """Run ``graphode sweep`` for parsed ``args``; prints the best configuration. Returns 0."""
    import yaml

    from ..config import check_config, parse_set
    from ..errors import ConfigError, UserError
    from ._ray import require_ray

    try:
        require_ray("graphode sweep")
    except ImportError as e:
        raise UserError(str(e)) from None
    from ._tune import sweep

    overrides = parse_set(args.overrides)
    if args.model:
        overrides = check_config(overrides, args.model, "--set")

    try:
        res = sweep(
            model=args.model, dataset=args.dataset, space=args.space, num_samples=args.num_samples,
            scheduler=args.scheduler, epochs=args.epochs, output_dir=args.output_dir, address=args.address,
            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, num_cpus=args.num_cpus,
            grace_period=args.grace_period, reduction_factor=args.reduction_factor, metric=args.metric,
            seed=args.seed, split=args.split, data_root=args.data_root, config_path=args.config,
            overrides=overrides, max_concurrent=args.max_concurrent,
            checkpoint_every=args.checkpoint_every, resume=args.resume, name=args.name,
            storage_path=args.storage_path, ship_code=args.ship_code, verbose=args.verbose,
            time_budget_s=args.time_budget, max_failures=args.max_failures,
        )
    except UserError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    except ConnectionError as e:
        raise UserError(f"cannot connect to the Ray cluster at {args.address!r}: {e}") from None
    paths = res["paths"]
    print(f"graphode sweep: {res['num_trials']} trials ({res['num_stopped']} stopped early by the scheduler, "
          f"{res['num_errors']} failed) in {res['time_s']:.1f} s", flush=True)
    print(f"results: {paths['csv']}  {paths['json']}")
    if res["num_unfinished"]:
        print(f"graphode sweep: {res['num_unfinished']} trial(s) unfinished; continue with the same command "
              f"and --resume", flush=True)
    best = res["best"]
    if best is None:
        print("graphode sweep: no trial reported a result", file=sys.stderr)
        return 1
    print(f"best trial {best['trial_id']}: validation accuracy {_fmt(best['val_acc'])}%, test accuracy "
          f"{_fmt(best['test_acc'])}% (best epoch {int(best['best_epoch']) + 1} of {best['epochs']})")
    print("best configuration:")
    print("  " + yaml.safe_dump(res["best_config"], sort_keys=False).rstrip().replace("\n", "\n  "))
    print(f"wrote {paths['best_yaml']}  (graphode train --config {paths['best_yaml']} "
          f"--dataset {res['best_config'].get('dataset')} --runs 10)")
    return 0


def main(argv=None) -> int:
    """``python -m graphode.sweep`` entry point (same options as ``graphode sweep``)."""
    parser = argparse.ArgumentParser(prog="graphode sweep", description="hyperparameter sweep on Ray Tune")
    add_sweep_args(parser)
    return run_sweep(parser.parse_args(argv))
