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
