"""What a trial accepts and where it writes, defined once for the trial, the loop, the registry and the engine.

The choice lists are the values the trial's flags accept (:mod:`hpo_lib.trial.flags`), which the training loop
(:mod:`hpo_lib.train`) and the model registry (:mod:`hpo_lib.models`) act on; :data:`OUTPUT_DIR_ENV` and
:data:`CHECK_FLAGS` are how the embedded engine, which reaches the trial only as a process, tells it where to write
and asks it to check its flags. Like :mod:`hpo_lib.metrics` this module imports nothing, so ``hpo trial --help`` and
``--check-flags`` answer without torch.
"""

from __future__ import annotations

MODEL_NAMES = ("mlp", "lstm", "gru", "cnn-lstm")  # hpo_lib.models.MODELS, in its order (a test ties them)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step", "exponential")
REGRESSION_LOSSES = ("mse", "mae", "huber")
CLASSIFICATION_LOSSES = ("ce", "focal")
LOSSES = ("auto", *REGRESSION_LOSSES, *CLASSIFICATION_LOSSES)  # the flag's: auto = mse, or ce for the direction target
PACK = ("auto", "on", "off")  # train replicas as one packed model where the family packs (auto, on), or one by one

OUTPUT_DIR_ENV = "HPO_OUTPUT_DIR"  # the default of --output-dir: the embedded engine sets it for every trial
CHECK_FLAGS = "--check-flags"  # parse and validate every flag, then exit: the engine's preflight
