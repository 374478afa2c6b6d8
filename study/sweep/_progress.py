"""A Tune callback that advances the driver's progress bar.

Tune pickles its callbacks with the experiment state; a class in an importable module is
pickled by reference, and the bar itself stays in the driver, found by key.
"""

from __future__ import annotations

import uuid

from ray import tune

BARS: dict = {}


class Progress(tune.Callback):
    def __init__(self, bar) -> None:
        self.key = uuid.uuid4().hex
        BARS[self.key] = bar

    def __getstate__(self) -> dict:
        return {"key": self.key}

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.key in BARS:
            BARS[self.key].update(1)

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.key in BARS:
            BARS[self.key].update(1)
            BARS[self.key].set_postfix_str(f"failed: {trial.config['unit_id']}")
