"""The Ray Tune peer of ``bench/engine_overhead.py``: the same trials (their exact flags, one after another) run by
``ray.tune.Tuner``, each trial ``hpo_lib.trial.run`` in a Ray worker. Runs in Ray's own venv (``make ray-venv``),
since Ray is no dependency of the project; prints one JSON line ``{"seconds": ...}`` (wall time including
``ray.init``, as a user's run pays it).

    .ray-venv/bin/python bench/ray_tune_peer.py TRIALS.json OUT_DIR [--reuse-actors]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
import warnings
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", type=Path, help="JSON list of each trial's flags")
    parser.add_argument("out", type=Path, help="folder for the trials' outputs and Ray's storage")
    parser.add_argument("--reuse-actors", action="store_true", help="Ray Tune's reuse_actors=True")
    args = parser.parse_args()
    argvs = json.loads(args.trials.read_text())
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    start = time.perf_counter()
    import ray
    from ray import tune

    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    out = args.out.resolve()

    def objective(config: dict) -> None:
        from hpo_lib import trial

        number = config["number"]
        flags = trial.parse_args([*argvs[number], f"--output-dir={out / 'trials' / str(number)}"])
        final = trial.run(flags, out=io.StringIO(), err=io.StringIO())
        tune.report({"val_loss": float(final["val"]["loss"])})

    tuner = tune.Tuner(
        tune.with_resources(objective, {"cpu": 1}),
        param_space={"number": tune.grid_search(list(range(len(argvs))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=args.reuse_actors),
        run_config=tune.RunConfig(storage_path=str(out / "ray"), verbose=0),
    )
    results = tuner.fit()
    seconds = time.perf_counter() - start
    errors = [str(r.error) for r in results if r.error]
    ray.shutdown()
    if errors:
        raise SystemExit(f"Ray Tune: {len(errors)} trial(s) failed: {errors[0][:300]}")
    print(json.dumps({"seconds": seconds, "trials": len(results)}))


if __name__ == "__main__":
    main()
