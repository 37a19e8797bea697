"""The embedded engine: a Katib Experiment's trials as local processes under an Optuna study. It has no screen.

* :mod:`.options`: what a caller asks (``TuneOptions``, the choice lists) and hears back (``Progress``); no Optuna;
* :mod:`.study`: ``run``, the loop: plan the study, launch trials, decide each trial's state, close;
* :mod:`.process`: a trial's command on this machine, its process, and the lines it prints;
* :mod:`.storage`: open, load or archive the stored study; the lock that serialises scheduling across engines;
* :mod:`.recovery`: interruption, orphaned trials of a gone engine, heartbeats, stop signals;
* :mod:`.katib_view`: the study as Katib's suggestion service would show it to the sampler;
* :mod:`.optuna_compat`: the few private Optuna calls the engine needs, in one place;
* :mod:`.mlflow_runs`: the study's MLflow runs (a parent per study, a nested run per finished trial);
* :mod:`.sampling`: the sampler Katib's suggestion service would build for ``spec.algorithm``;
* :mod:`.pruners`: Katib's median stopping rule as an Optuna pruner, and the local alternatives;
* :mod:`.warm`: the warm worker that forks trials from an interpreter with the trial's imports loaded;
* :mod:`.identity`: which stored study a manifest resumes, and when it must start afresh.

The names below load on first use (PEP 562), so ``import hpo_lib.engine.options`` does not import Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo_lib.engine.options import Progress, TuneOptions
    from hpo_lib.engine.recovery import recover_orphans
    from hpo_lib.engine.storage import load_study, open_study
    from hpo_lib.engine.study import run
    from hpo_lib.study_record import Tally, tally

# name -> the module that defines it
_HOMES = {
    "Progress": "hpo_lib.engine.options",
    "TuneOptions": "hpo_lib.engine.options",
    "load_study": "hpo_lib.engine.storage",
    "open_study": "hpo_lib.engine.storage",
    "recover_orphans": "hpo_lib.engine.recovery",
    "run": "hpo_lib.engine.study",
    "Tally": "hpo_lib.study_record",  # the counts of a study's trials, shared with the results
    "tally": "hpo_lib.study_record",
}
__all__ = ["Progress", "Tally", "TuneOptions", "load_study", "open_study", "recover_orphans", "run", "tally"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    try:  # a submodule not imported yet, e.g. `engine.study` after `from hpo_lib import engine`
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
