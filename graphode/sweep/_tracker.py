"""A Tune callback (driver side) recording which trials ended on their own: finished,
stopped by the scheduler, or failed.  Trials left out were cut short by an
interruption of the sweep (Ctrl-C), and ``--resume`` continues them.

Imported only when Ray is there (it subclasses ``ray.tune.Callback``)."""
from __future__ import annotations

from typing import Set

from ray.tune import Callback

#: trial ids that ended on their own in this process (cleared by each sweep)
ENDED: Set[str] = set()


class TrialTracker(Callback):
    def on_trial_complete(self, iteration, trials, trial, **info):
        ENDED.add(str(trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        ENDED.add(str(trial.trial_id))
