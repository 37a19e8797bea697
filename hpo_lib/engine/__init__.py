"""The embedded engine: a Katib Experiment's trials as local processes under an Optuna study. It has no screen.

* :mod:`.study`: open or resume the study, launch trial processes, read their metrics, decide each trial's state;
* :mod:`.sampling`: the sampler Katib's suggestion service would build for ``spec.algorithm``;
* :mod:`.pruners`: Katib's median stopping rule as an Optuna pruner, and the local alternatives.
"""

from hpo_lib.engine.study import Progress, Tally, TuneOptions, load_study, open_study, recover_orphans, run, tally

__all__ = ["Progress", "Tally", "TuneOptions", "load_study", "open_study", "recover_orphans", "run", "tally"]
