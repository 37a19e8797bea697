"""Benchmarks run and measure: the quick mode of each bench/ script finishes, its table adds up, and its headline
quotes the table."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, bench_module


def printed_quotient(printed: str, numerator: str, denominator: str) -> bool:
    """Whether a printed ratio is the quotient of two printed numbers, allowing for the rounding of all three."""
    def half_step(text: str) -> float:
        return 0.5 * 10 ** -len(text.partition(".")[2])

    num, den, dn, dd = float(numerator), float(denominator), half_step(numerator), half_step(denominator)
    low, high = (num - dn) / (den + dd), (num + dn) / (den - dd)
    return low - half_step(printed) <= float(printed) <= high + half_step(printed)


def test_printed_quotient_allows_rounding_and_nothing_more():
    # 2.00 / 3.00 = 0.667 to three places; 0.700 is no rounding of it
    assert printed_quotient("0.667", "2.00", "3.00") and not printed_quotient("0.700", "2.00", "3.00")
    # the inputs' own rounding widens the band: 1.0 / 3.0 may be anything from 0.95 / 3.05 to 1.05 / 2.95
    assert printed_quotient("0.350", "1.0", "3.0") and not printed_quotient("0.360", "1.0", "3.0")


@pytest.mark.e2e
def test_trial_loop_benchmark_quick_prints_measured_ratios():
    lines = _run_quick("trial_loop.py", timeout=300)
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split()[0] in ("lstm", "gru")}
    # one row per recurrent family, and each ratio is the row's trial s/epoch over its bare s/epoch
    assert set(rows) == {"lstm", "gru"}
    for name, (trial_s, bare_s, ratio) in rows.items():
        assert float(bare_s) > 0 and printed_quotient(ratio, trial_s, bare_s), (name, trial_s, bare_s, ratio)
    # the headline repeats the table's ratios, digit for digit
    headline = re.fullmatch(r"headline: trial loop / bare PyTorch loop = LSTM ([0-9.]+)x, GRU ([0-9.]+)x "
                            r"\(goal <= 1\.10\)", lines[-1])
    assert headline and headline.groups() == (rows["lstm"][2], rows["gru"][2])


@pytest.mark.e2e
def test_engine_overhead_benchmark_quick_prints_measured_ratios():
    lines = _run_quick("engine_overhead.py", timeout=900)
    trials = int(re.search(r", (\d+) trials x \d+ epochs", lines[0]).group(1))
    rows = {}
    for line in lines[2:-1]:
        match = re.fullmatch(r"(\S.*?)\s{2,}([0-9.]+)\s+([0-9.]+)\s+(-?[0-9.]+)", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    # one row per variant (the quick run leaves Ray out)
    assert set(rows) == {"in-process", "hpo tune (warm)", "hpo tune (cold)", "hpo tune (warm+MLflow)"}
    base = rows["in-process"][0]
    for name, (seconds, ratio, per_trial) in rows.items():
        # each ratio is the variant's wall seconds over the in-process seconds
        assert printed_quotient(ratio, seconds, base), (name, seconds, ratio, base)
        # the seconds per trial over in-process are the difference of the printed seconds over the trial count
        assert abs(float(per_trial) - (float(seconds) - float(base)) / trials) <= 0.01 / trials + 0.005, name
    match = re.fullmatch(r"headline: hpo tune \(warm\)/in-process = ([0-9.]+)x, fixed cost (-?[0-9.]+) s/trial; "
                         r"cold ([0-9.]+)x \((-?[0-9.]+) s/trial\)", lines[-1])
    # the headline repeats the table's warm and cold ratios and seconds per trial, verbatim
    warm, cold = rows["hpo tune (warm)"], rows["hpo tune (cold)"]
    assert match and match.groups() == (warm[1], warm[2], cold[1], cold[2])


def _run_quick(script: str, *extra: str, timeout: int = 600) -> list[str]:
    """A bench script's ``--quick`` run; it must exit 0, and its stdout lines are returned."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *extra], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


@pytest.mark.e2e
def test_early_stopping_benchmark_quick_counts_epochs_per_pruner():
    lines = _run_quick("early_stopping.py")
    header = re.search(r"(\d+) seeds x (\d+) trials x (\d+) epochs", lines[0])
    seeds, trials, epochs = (int(x) for x in header.groups())
    rows = {line.split()[0]: line.split() for line in lines
            if line.split()[0] in ("none", "medianstop", "optuna-median", "hyperband")}
    run = {name: int(row[1]) for name, row in rows.items()}
    # without a pruner every trial runs every epoch: the count is exact, not estimated
    assert run["none"] == seeds * trials * epochs
    # a pruner never runs more epochs than none, and the variants are measured, not copied (Hyperband prunes here)
    assert all(run[v] <= run["none"] for v in run) and run["hyperband"] < run["none"] and len(set(run.values())) > 1
    # the saved share printed in the table is 1 - epochs / none's epochs
    for name, row in rows.items():
        assert float(row[2].rstrip("%")) == pytest.approx(100 * (1 - run[name] / run["none"]), abs=0.06)
    # best val_loss per seed is a plausible positive loss
    assert all(0 < float(v) < 10 for row in rows.values() for v in row[4:4 + seeds])
    assert lines[-1].startswith("headline: medianstop saves") and "goal >= 40% saved within 1%" in lines[-1]


@pytest.mark.e2e
def test_samplers_benchmark_quick_reports_best_after_n_trials():
    lines = _run_quick("samplers.py")
    seeds = int(re.search(r"(\d+) seeds x", lines[0]).group(1))
    rows = {line.split()[0]: line for line in lines if line.split()[0] in ("tpe", "random")}
    per_seed = {name: [[float(v) for v in cell.split()] for cell in re.findall(r"\[([^\]]+)\]", line)]
                for name, line in rows.items()}
    # every checkpoint holds one finite positive loss per seed, and the best so far never gets worse
    for cells in per_seed.values():
        assert all(len(cell) == seeds and all(0 < v < 10 for v in cell) for cell in cells)
        assert all(later <= earlier for a, b in zip(cells, cells[1:]) for earlier, later in zip(a, b))
    # TPE's first 10 trials are its random start-up draws, the very draws of the random sampler with the same seed
    assert per_seed["tpe"][0] == per_seed["random"][0]
    match = re.search(r"random search needs (\d+|more than \d+ \(not within \d+\)) trials .* best after (\d+)",
                      lines[-1])
    # the headline says how many random trials match TPE's best, within the run's budget
    assert match and (not match.group(1).isdigit() or 1 <= int(match.group(1)) <= 24)


def check_gpu_throughput_table(lines: list[str], levels: list[int]) -> None:
    """The throughput table's own arithmetic: vs N=1 is the aggregate over N=1's, and the headline quotes the table."""
    rows = {int(line.split()[0]): line.split()[1:] for line in lines if re.match(r"\s*\d+ ", line)}
    # one row per concurrency level, in order
    assert list(rows) == levels
    one = rows[levels[0]][3]
    for n, (epoch_s, _util, _memory, aggregate, versus, _wall) in rows.items():
        # the vs N=1 column is this row's aggregate epochs/s over the first row's
        assert float(epoch_s) > 0 and printed_quotient(versus, aggregate, one), (n, aggregate, versus, one)
    top, first = rows[levels[-1]], rows[levels[0]]
    util = "n/a" if first[1] == "nan" else f"{first[1]}%"
    match = re.fullmatch(rf"headline: {levels[-1]} concurrent trials give ([0-9.]+)x the epochs/s of one trial on "
                         r"one .+ \(one trial: ([0-9.]+) s/epoch at (.+) GPU utilisation\)", lines[-1])
    # the headline quotes the last row's vs N=1, the first row's s/epoch and its utilisation
    assert match and match.groups() == (top[4], first[0], util)


@pytest.mark.e2e
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the benchmark measures instead")
def test_gpu_throughput_benchmark_without_a_gpu_prints_only_its_skip_line():
    lines = _run_quick("gpu_throughput.py")
    # the skip path: no CUDA GPU, so exactly one skip line and a headline that says so, exit code 0
    assert lines == ["# gpu throughput | skipped: no CUDA GPU visible (torch.cuda.is_available() is False)",
                     "headline: skipped, no GPU on this machine"]


@pytest.mark.e2e
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: without one only the skip path runs")
def test_gpu_throughput_benchmark_measures_on_a_gpu():
    lines = _run_quick("gpu_throughput.py")
    # N = 1, 2 concurrent LSTM trials on the GPU, and a table that adds up
    check_gpu_throughput_table(lines, [1, 2])


@pytest.mark.e2e
def test_gpu_throughput_benchmark_plumbing_on_the_cpu():
    lines = _run_quick("gpu_throughput.py", "--device=cpu")
    # the same trial processes and table on the CPU, where no utilisation is sampled
    assert lines[0].startswith("# gpu throughput | CPU,")
    check_gpu_throughput_table(lines, [1, 2])
    assert " at n/a GPU utilisation)" in lines[-1]


def test_hyperband_study_is_reproducible_run_to_run():
    """Hyperband assigns brackets by a hash of the study name: the bench uses the engine's, never a random one."""
    objective = bench_module("_objective")
    Bench, with_seed = objective.Bench, objective.with_seed
    from hpo_lib.engine import sampling

    bench = Bench(ROOT / "manifests" / "mlp-experiment.yaml",
                  fixed={"data": "sample:sp500,start=2014-01-01", "epochs": "4", "patience": "4", "threads": "1",
                         "seq-len": "10", "hidden-size": "16", "num-layers": "1"})

    def epochs_run() -> list[int]:
        sampler = sampling.make_sampler(with_seed(bench.algorithm, 3), bench.distributions, 8)
        return bench.run(sampler, bench.pruner("hyperband"), 8).epochs_run

    first, second = epochs_run(), epochs_run()
    # the same brackets prune the same trials twice, and Hyperband did prune
    assert first == second and sum(first) < 8 * 4  # same brackets, same pruning; and Hyperband did prune


def test_hypervolume_is_the_dominated_volume():
    mo = bench_module("multiobjective")
    reference = (1.1, 1.1, 1.1)
    # one point: a box; a dominated point and a point outside the reference add nothing
    assert mo.hypervolume([(0.5, 0.5, 0.5)], reference) == pytest.approx(0.6 ** 3)
    assert mo.hypervolume([(0.5, 0.5, 0.5), (0.6, 0.7, 0.8), (1.2, 0.0, 0.0)], reference) == pytest.approx(0.216)
    # two boxes that overlap in a 0.6 x 0.6 x 0.6 cube: their union, by inclusion-exclusion
    a, b = (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)
    union = 0.6 * 1.1 * 0.6 + 1.1 * 0.6 * 0.6 - 0.6 * 0.6 * 0.6
    assert mo.hypervolume([a, b], reference) == pytest.approx(union)


@pytest.mark.e2e
def test_multiobjective_benchmark_quick_prints_measured_hypervolumes():
    lines = _run_quick("multiobjective.py", timeout=600)
    rows = {}
    for line in lines:
        match = re.fullmatch(r"\| (\S.*?)\s+\| (.*) \| ([0-9.]+) \|", line)
        if match and not match.group(1).startswith("sampler"):
            rows[match.group(1)] = ([float(v) for v in match.group(2).split(" | ")], match.group(3))
    assert set(rows) == {"katib-hpo-multiobjective", "multivariate-tpe (val_loss)"}
    for volumes, mean in rows.values():
        # two seeds, each a hypervolume inside the normalized box, and the printed mean is theirs
        assert len(volumes) == 2 and all(0 < v <= 1.1 ** 3 for v in volumes)
        assert abs(sum(volumes) / 2 - float(mean)) <= 1e-4
    ratio = re.fullmatch(r"hypervolume after 4 trials, multi-objective / single-objective TPE: ([0-9.]+)x", lines[-1])
    assert ratio and printed_quotient(ratio.group(1), rows["katib-hpo-multiobjective"][1],
                                      rows["multivariate-tpe (val_loss)"][1])
