"""katib-hpo: tune deep-learning forecasters for financial time series on Katib or on one machine.

The Python API (:mod:`hpo_lib.api`): :func:`tune` a Katib Experiment manifest, :func:`load_results` of an earlier
study, :func:`run_trial` in this process, :func:`run_pipeline` on kfp's local runner. Bad input raises an
:class:`HpoError` subclass whose message names the value and the rule. Importing ``hpo_lib`` loads neither torch
nor Optuna: each call imports what it runs.
"""

from hpo_lib.api import (
    PipelineResult,
    TrialResult,
    TuneResult,
    load_results,
    run_pipeline,
    run_trial,
    trials_frame,
    tune,
)
from hpo_lib.errors import (
    ConfigError,
    DataError,
    ExperimentError,
    ExperimentFailed,
    HpoError,
    NoWinnersError,
    TrackingError,
    TrainingError,
)
from hpo_lib.version import __version__

__all__ = [
    "ConfigError",
    "DataError",
    "ExperimentError",
    "ExperimentFailed",
    "HpoError",
    "NoWinnersError",
    "PipelineResult",
    "TrackingError",
    "TrainingError",
    "TrialResult",
    "TuneResult",
    "__version__",
    "load_results",
    "run_pipeline",
    "run_trial",
    "trials_frame",
    "tune",
]
