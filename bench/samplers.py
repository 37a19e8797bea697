"""Benchmark: multivariate TPE (the manifests' sampler) against random search, side by side in one run.

For each seed, the manifest's study is run twice with the same trial budget and no pruning: once with the
manifest's ``spec.algorithm`` (multivariate TPE, ``random_state`` = the seed) and once with ``random`` (the same
seed), both built by :func:`hpo_lib.engine.sampling.make_sampler`. Reported: the best ``val_loss`` among completed
trials
after 10/20/30/60 trials, and how many random trials it takes to reach TPE's best after 30 (per seed, and over
every random run: a TPE run's value compared with each random run). Trials run in this process with the engine's
sampler and trial flags (``bench/_objective.py``); trial cost is kept tiny (MLP manifest, few epochs) so the
comparison can afford 60 trials per study.

The target defaults to ``volatility``, where configurations differ; on next-day returns nearly every configuration
sits at the naive baseline's loss and both samplers "find" it at once (``--target return`` to see it).

    python bench/samplers.py            # 3 seeds x 60 trials x 4 epochs
    python bench/samplers.py --quick    # 2 seeds x 24 trials x 3 epochs, reference point 16

TPE's first ``n_startup_trials`` (10 in the manifests) are random draws, and with the same seed they are the very
draws the random sampler makes: the two curves can only part after trial 10.
"""

from __future__ import annotations

import math
import statistics
import time

from _objective import Bench, StudyResult, machine, parse_args, quiet, with_seed

from hpo_lib.engine import sampling

SAMPLERS = ("tpe", "random")


def trials_to_reach(result: StudyResult, value: float) -> int | None:
    """The fewest trials after which the study's best is at or below ``value``; None if it never gets there."""
    for n in range(1, len(result.study.trials) + 1):
        if result.best_after(n) <= value:
            return n
    return None


def main() -> None:
    args = parse_args(__doc__, trials=("trials per study", 60, 24), reference=("TPE's trial count to match", 30, 16),
                      epochs=("epochs per trial", 4, 3))
    seeds, n_trials, reference, epochs = args.seeds, args.trials, args.reference, args.epochs
    checkpoints = sorted(n for n in {10, 20, 30, 60, reference} if n <= n_trials)
    quiet()

    bench = Bench.from_args(args)
    results: dict[str, list[StudyResult]] = {s: [] for s in SAMPLERS}
    started = time.perf_counter()
    for seed in range(seeds):
        for name in SAMPLERS:  # interleaved per seed: machine noise hits both samplers alike
            algorithm = with_seed(bench.algorithm, seed, None if name == "tpe" else "random")
            sampler = sampling.make_sampler(algorithm, bench.distributions, n_trials)
            results[name].append(bench.run(sampler, bench.pruner("none"), n_trials))
    elapsed = time.perf_counter() - started

    base_name, base_loss = bench.datasets.best_baseline(bench.args(results["tpe"][0].study.trials[0].params))
    print(f"# samplers | {bench.manifest.name}: {bench.algorithm['algorithmName']} vs random, target {args.target}, "
          f"{args.data}, {seeds} seeds x {n_trials} trials x {epochs} epochs, no pruning | {machine()}, "
          f"{args.threads} thread(s) | {elapsed:.0f} s")
    print(f"# best naive baseline on validation: {base_name} val_loss {base_loss:.4f}")
    print("# best val_loss after n trials, mean over seeds (per seed in brackets)")
    print(f"{'sampler':<8} " + " ".join(f"{'n=' + str(n):>30}" for n in checkpoints))
    for name in SAMPLERS:
        cells = []
        for n in checkpoints:
            values = [r.best_after(n) for r in results[name]]
            cells.append(f"{statistics.mean(values):.4f} [{' '.join(f'{v:.4f}' for v in values)}]")
        print(f"{name:<8} " + " ".join(f"{c:>30}" for c in cells))

    matched: list[int | None] = []  # seed by seed: random run s against the TPE run s
    for tpe, rnd in zip(results["tpe"], results["random"]):
        matched.append(trials_to_reach(rnd, tpe.best_after(reference)))
    crossed = [trials_to_reach(rnd, tpe.best_after(reference)) for tpe in results["tpe"] for rnd in results["random"]]
    shown = ", ".join(str(m) if m else f">{n_trials}" for m in matched)
    print(f"# random trials to reach TPE's best after {reference}, per seed: {shown}; "
          f"over all {len(crossed)} (TPE run, random run) pairs: "
          f"{sum(c is not None for c in crossed)} reached within {n_trials}")
    # a run that never gets there counts as infinitely many trials, so the median stays honest
    median = statistics.median(m if m is not None else math.inf for m in crossed)
    count = f"more than {n_trials} (not within {n_trials})" if math.isinf(median) else f"{median:.0f}"
    tpe_ref = statistics.mean(r.best_after(reference) for r in results["tpe"])
    rnd_ref = statistics.mean(r.best_after(reference) for r in results["random"])
    rnd_all = statistics.mean(r.best for r in results["random"])
    print(f"headline: random search needs {count} trials (median over {len(crossed)} pairs) to match TPE's best "
          f"after {reference}; mean best val_loss TPE@{reference} {tpe_ref:.4f}, random@{reference} {rnd_ref:.4f}, "
          f"random@{n_trials} {rnd_all:.4f} (goal >= 60)")


if __name__ == "__main__":
    main()
