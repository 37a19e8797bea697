"""The pipeline's knobs, defined once: :class:`PipelineSettings` and its two presets, :data:`CLUSTER` and
:data:`LAPTOP`. The KFP DAG takes its parameter defaults from :data:`CLUSTER`; ``hpo pipeline run-local`` and
:func:`hpo_lib.api.run_pipeline` from :data:`LAPTOP`; the steps default to :data:`CLUSTER` too and check what they
are given with :meth:`PipelineSettings.check`. Nothing here imports KFP (or anything beyond the standard library).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any

from hpo_lib.errors import ConfigError


@dataclass(frozen=True)
class PipelineSettings:
    """How the tuning run is found on a cluster, which winners are retrained, how, and how they are tested
    (everything else comes from the tuning run)."""

    # the Experiment launched when none is given: our manifest of this family (space.FAMILIES' first, the examples')
    model_family: str = "lstm"
    # how long the tune step waits for the Experiment: a day, a safety net (its budget, maxTrialCount, ends it)
    timeout_s: int = 86400
    # how often it reads the Experiment's status: light on the Kubernetes API, an end is seen within half a minute
    poll_s: float = 30.0
    # winners by the tuning objective: the champion (the first) is tested beside the runners-up, not alone
    top_k: int = 3
    # plus the Pareto front over (objective, train time, model size): a cheaper model that is nearly as good
    pareto: bool = True
    # a cap on the winners (0: none): a wide Pareto front cannot ask for dozens of GPU retrains
    max_winners: int = 6
    # an early-stopped trial's objective comes from a curve cut short: not comparable unless asked for
    include_early_stopped: bool = False
    # retrains per winner (seeds 0..N-1): the test spread over seeds (test_sd) needs more than one
    seeds: int = 3
    # retrain epochs; 0 keeps the Experiment's own --epochs, those the winner was tuned with
    epochs: int = 0
    # extra trial flags for every retrain (e.g. --batch-size=256); none: the winner's flags as tuned
    retrain_flags: str = ""
    # the backtest's cost per unit of position traded, in basis points
    cost_bps: float = 5.0
    # the rolling-origin refits through the test period (0: one per quarter of test days; 1: none, and then the
    # search-aware verdict is "not established")
    test_origins: int = 0

    def check(self) -> PipelineSettings:
        """These settings, or one ConfigError naming the first bad one (``seeds must be at least 1, got 0``)."""
        for name, low in (("top_k", 1), ("max_winners", 0), ("seeds", 1), ("epochs", 0), ("test_origins", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < low:
                rule = "0 (the experiment's) or more" if name == "epochs" else f"at least {low}"
                raise ConfigError(f"{name} must be {rule}, got {value}")
        for name in ("timeout_s", "poll_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.cost_bps, (int, float)) or not math.isfinite(self.cost_bps) or self.cost_bps < 0:
            raise ConfigError(f"cost_bps must be a finite number of basis points, 0 or more, got {self.cost_bps!r}")
        return self

    def kfp_arguments(self) -> dict[str, Any]:
        """These settings as the KFP pipeline's arguments (the DAG's parameters carry the same names)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# the KFP pipeline on a cluster: one GPU per retrain, up to 8 retrains at a time
CLUSTER = PipelineSettings()
# kfp's local runner on one machine runs two retrains at a time on its CPUs: fewer winners and seeds, each retrain
# with half the CPUs' threads
LAPTOP = replace(CLUSTER, max_winners=4, seeds=2, retrain_flags=f"--threads={max(1, (os.cpu_count() or 2) // 2)}")
