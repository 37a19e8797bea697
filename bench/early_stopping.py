"""Benchmark: what early stopping saves, and what it costs in the best validation loss, side by side in one run.

The same study four times per seed: the manifest's search space, sampler (its ``spec.algorithm``, multivariate TPE,
with ``random_state`` set to the seed), trial budget and fixed epochs, with

* ``medianstop``: Katib's rule exactly, from the manifest's ``earlyStopping`` (:class:`KatibMedianStopPruner`);
* ``optuna-median``: Optuna's ``MedianPruner`` on the same ``min_trials_required`` / ``start_step``;
* ``hyperband``: Optuna's ``HyperbandPruner`` as ``hpo tune --pruner hyperband`` builds it;
* ``none``: every trial runs every epoch.

Compute is counted in epochs run (the machine is shared, so seconds are noisy; an epoch costs the same in every
variant); quality is the best ``val_loss`` among completed trials. Trials run in this process with the pruner
classes, sampler and trial flags the engine uses (see ``bench/_objective.py``); the engine's per-trial process
cost is measured separately by ``bench/engine_overhead.py``. The trial's own patience-based early stopping is
turned off (``--patience`` = ``--epochs``, dropped from the search space) so pruning is the only thing that stops a
trial and ``none`` runs exactly trials x epochs.

How to read it: no pruner can touch the first ``min_trials_required`` trials (nor, for Hyperband, a bracket's
first rung), and TPE's first 10 trials are random draws, so a best configuration found early is found by every
variant; differences in best val_loss come from what later trials were pruned before they could win.

The target defaults to ``volatility``: on next-day returns nearly every configuration lands on the naive baseline's
loss, so "best val_loss" cannot tell a good stopping rule from a bad one; ``--target return`` runs the manifest's own.

    python bench/early_stopping.py            # 3 seeds x 30 trials x 12 epochs, MLP manifest
    python bench/early_stopping.py --quick    # 2 seeds x 12 trials x 8 epochs
"""

from __future__ import annotations

import statistics
import time

from _objective import Bench, machine, parse_args, quiet, with_seed
from optuna.trial import TrialState

from hpo_lib.engine import sampling

VARIANTS = ("none", "medianstop", "optuna-median", "hyperband")


def main() -> None:
    args = parse_args(__doc__, trials=("trials per study", 30, 12), epochs=("epochs per trial", 12, 8))
    seeds, n_trials, epochs = args.seeds, args.trials, args.epochs
    quiet()

    bench = Bench.from_args(args)
    rule = bench.early_stopping or {}
    settings = ", ".join(f"{s['name']}={s['value']}" for s in rule.get("algorithmSettings") or [])
    epochs_run: dict[str, list[int]] = {v: [] for v in VARIANTS}
    best: dict[str, list[float]] = {v: [] for v in VARIANTS}
    pruned: dict[str, list[int]] = {v: [] for v in VARIANTS}
    started = time.perf_counter()
    for seed in range(seeds):
        for variant in VARIANTS:  # interleaved per seed: machine noise hits every variant alike
            algorithm = with_seed(bench.algorithm, seed)
            sampler = sampling.make_sampler(algorithm, bench.distributions, n_trials)
            result = bench.run(sampler, bench.pruner(variant), n_trials)
            epochs_run[variant].append(result.epochs)
            best[variant].append(result.best)
            pruned[variant].append(result.count(TrialState.PRUNED))
    elapsed = time.perf_counter() - started

    probe = bench.args(result.study.trials[0].params)
    base_name, base_loss = bench.datasets.best_baseline(probe)
    print(f"# early stopping | {bench.manifest.name} ({bench.algorithm['algorithmName']}), target {args.target}, "
          f"{args.data}, {seeds} seeds x {n_trials} trials x {epochs} epochs, manifest rule {rule.get('algorithmName')}"
          f" ({settings}) | {machine()}, {args.threads} thread(s) | {elapsed:.0f} s")
    print(f"# best naive baseline on validation: {base_name} val_loss {base_loss:.4f}")
    print(f"{'variant':<14} {'epochs run':>10} {'saved':>7} {'pruned':>7} {'best val_loss (per seed)':>32} "
          f"{'mean':>8} {'vs none':>8} {'worst':>8}")
    none_epochs, none_best = sum(epochs_run["none"]), best["none"]
    summary = {}
    for variant in VARIANTS:
        total = sum(epochs_run[variant])
        saved = 1 - total / none_epochs
        # per seed: the pruned study against the unpruned study with the same sampler seed
        changes = [(b - n) / n for b, n in zip(best[variant], none_best)]
        loss, worst = statistics.median(changes), max(changes)
        summary[variant] = (saved, loss, worst)
        per_seed = " ".join(f"{b:.4f}" for b in best[variant])
        print(f"{variant:<14} {total:>10d} {saved:>7.1%} {sum(pruned[variant]):>7d} {per_seed:>32} "
              f"{statistics.mean(best[variant]):>8.4f} {loss:>+8.2%} {worst:>+8.2%}")
    parts = [f"{v} saves {s:.1%} of epochs at {loss:+.2%} best val_loss (worst seed {w:+.2%})"
             for v, (s, loss, w) in summary.items() if v != "none"]
    met = [v for v, (s, loss, w) in summary.items() if v != "none" and s >= 0.40 and loss <= 0.01]
    verdict = f"goal met by {', '.join(met)}" if met else "goal not met"
    print(f"headline: {'; '.join(parts)} (median over {seeds} seeds vs none; goal >= 40% saved within 1%: {verdict})")


if __name__ == "__main__":
    main()
