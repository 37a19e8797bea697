"""Benchmarks run and measure: the quick mode of each bench/ script finishes and prints its headline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_trial_loop_benchmark_quick_prints_measured_ratios():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "trial_loop.py"), "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    headline = proc.stdout.strip().splitlines()[-1]
    ratios = [float(x) for x in re.findall(r"(?:LSTM|GRU) ([0-9.]+)x", headline)]
    # two measured ratios, each a plausible positive number (not a constant)
    assert len(ratios) == 2 and all(0.2 < r < 5 for r in ratios)


@pytest.mark.e2e
def test_engine_overhead_benchmark_quick_prints_measured_ratios():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "engine_overhead.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split()[0] in ("engine", "in-process")}
    assert float(rows["in-process"][1]) == 1.0 and float(rows["engine"][0]) > 0
    match = re.search(r"engine/in-process = ([0-9.]+)x, with MLflow ([0-9.]+)x; fixed cost (-?[0-9.]+) s/trial",
                      lines[-1])
    assert match and 0.5 < float(match.group(1)) < 10 and 0.5 < float(match.group(2)) < 10
