"""The metric contract: every name a trial prints, defined once for everyone who writes or reads it.

A trial prints one Katib StdOut line per epoch and a final line (:mod:`hpo_lib.katib.contract` formats them)::

    <RFC3339> epoch=3 train_loss=.. val_loss=.. val_rmse=.. ... lr=.. train_time_s=.. n_params=.. baseline_val_loss=..
    <RFC3339> final best_epoch=.. best_val_loss=.. baseline_val_loss=.. epochs_run=.. train_time_s=..

:data:`SCORES` are the names :func:`hpo_lib.data.scoring.score` returns per target; the epoch line carries them for
validation (``val_``) and for the best naive baseline on validation (``baseline_val_``). The manifests collect
:data:`COLLECTED`, the leaderboard shows :data:`LEADERBOARD`, winners are traded off on :data:`PARETO`. This module
imports nothing, so the data layer, Katib's manifests and the results can all read it.
"""

from __future__ import annotations

# target -> the metrics scoring.score returns for a forecast on one split ("loss" is the evaluation loss)
SCORES: dict[str, tuple[str, ...]] = {
    "return": ("loss", "rmse", "mae", "dir_acc"),
    "direction": ("loss", "acc", "dir_acc"),
    "volatility": ("loss", "rmse", "mae", "dir_acc", "qlike", "var_mse"),
}
VAL = "val_"  # a score of the model on the validation split
BASELINE_VAL = "baseline_val_"  # the same score of the best naive baseline (chosen on validation)
# with several replicas (walk-forward folds x seeds) the val_ scores are means over replicas, and two more describe
# their spread: the sample standard deviation of the replicas' val_loss and the worst fold's mean val_loss
VAL_SD = "val_loss_sd"
VAL_WORST = "val_loss_worst_fold"
ROBUST = (VAL_SD, VAL_WORST)
EPOCH = ("epoch", "train_loss", "lr", "train_time_s")  # the loop's own fields of every epoch record
STATIC = ("n_params", "model_size_mb")  # the model's size, the same on every line (the Pareto "size" axis)
FINAL_PREFIX = "final"  # the last line: "<stamp> final best_epoch=... best_val_loss=..."
FINAL = ("best_epoch", "best_val_loss", "baseline_val_loss", "epochs_run", "train_time_s")

OBJECTIVE = "val_loss"  # what every shipped Experiment minimizes
BASELINE_OBJECTIVE = BASELINE_VAL + "loss"  # the objective's naive bar, printed beside it
# additional metric -> the strategy Katib should extract (set explicitly: Katib's default would use "min" for all)
COLLECTED: dict[str, str] = {
    "val_rmse": "min",
    "val_mae": "min",
    "val_dir_acc": "max",
    VAL_SD: "latest",
    VAL_WORST: "min",
    "baseline_val_loss": "latest",
    "train_time_s": "latest",
    "model_size_mb": "latest",
    "n_params": "latest",
}
# shown beside the objective, where the trial printed them (the spread only with several replicas)
LEADERBOARD = (VAL_SD, "val_rmse", "val_dir_acc", "val_acc", "train_time_s", "model_size_mb")
PARETO = ("train_time_s", "model_size_mb")  # traded off against the objective when picking winners (minimized)


def epoch_metrics(target: str = "return", *, robust: bool = False) -> set[str]:
    """Every metric name an epoch line carries for a target: the contract Katib manifests are checked against.

    ``robust``: the trial trains several replicas (``--folds`` or ``--seeds`` above 1) and adds :data:`ROBUST`.
    """
    scores = SCORES[target]
    names = {*EPOCH, *STATIC, *(VAL + k for k in scores), *(BASELINE_VAL + k for k in scores)}
    return names | set(ROBUST) if robust else names
