"""bench/packing.py --quick: the throughput table adds up, the selection table's statistics are in range, and the
headline quotes both tables."""

from __future__ import annotations

import re
import statistics

import pytest
import torch

from tests.bench.test_bench import _run_quick, printed_quotient

FAMILIES = ("mlp", "lstm", "gru", "cnn-lstm")
COLUMNS = ("sep_s", "auto_s", "off_s", "sep_ep/s", "auto_ep/s", "off_ep/s", "auto/sep", "off/sep", "auto/off",
           "sep_MiB", "auto_MiB", "off_MiB")


def throughput_rows(lines: list[str]) -> dict[tuple[str, int], dict[str, str]]:
    return {(row[0], int(row[1])): dict(zip(COLUMNS, row[2:])) for row in (line.split() for line in lines)
            if row and row[0] in FAMILIES}


def selection_rows(lines: list[str]) -> dict[tuple[str, str], list[list[float]]]:
    """(cell, setting) -> [mean, sd, *per-seed values] for spearman, regret, gap and winner_test."""
    rows = {}
    for line in lines:
        if re.match(r"\S+/(return|volatility|direction) |all ", line):
            cell, setting = line.split()[:2]
            stats = re.findall(r"(-?[0-9.]+|nan) ± ([0-9.]+|nan) \[([^\]]*)\]", line)
            rows[(cell, setting)] = [[float(m), float(sd), *map(float, v.split())] for m, sd, v in stats]
    return rows


@pytest.fixture(scope="module")
def quick() -> list[str]:
    return _run_quick("packing.py", timeout=600)


@pytest.mark.e2e
def test_throughput_ratios_are_the_quotients_of_the_printed_rates(quick):
    epochs = int(re.search(r"\(seeds on the usual split\), (\d+) epoch", quick[0]).group(1))
    rows = throughput_rows(quick)
    # mlp and gru at 1 and 4 replicas; only the MLP has a pack=off variant (the others have no packed form)
    assert set(rows) == {("mlp", 1), ("mlp", 4), ("gru", 1), ("gru", 4)}
    for (family, replicas), row in rows.items():
        variants = ("sep", "auto", "off") if family == "mlp" else ("sep", "auto")
        assert family == "mlp" or row["off_s"] == row["off/sep"] == row["auto/off"] == "-"
        for v in variants:
            # replica-epochs per second are replicas x epochs over the printed wall seconds
            assert float(row[f"{v}_s"]) > 0 and printed_quotient(row[f"{v}_ep/s"], f"{replicas * epochs:.9f}",
                                                                 row[f"{v}_s"]), (family, replicas, v)
            assert 50 < float(row[f"{v}_MiB"]) < 100_000  # a Python process with torch loaded, in MiB
        for ratio in ("auto/sep", "off/sep", "auto/off"):
            num, den = ratio.split("/")
            if num in variants and den in variants:
                assert printed_quotient(row[ratio], row[f"{num}_ep/s"], row[f"{den}_ep/s"]), (family, ratio, row)


@pytest.mark.e2e
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the benchmark measures instead")
def test_gpu_table_is_one_skip_line_without_a_gpu(quick):
    assert "# gpu packing | skipped: no CUDA GPU visible (torch.cuda.is_available() is False)" in quick
    # the skip path: one line for the GPU table, and the headline says so
    assert "; gpu skipped; selection " in quick[-1]


@pytest.mark.e2e
def test_selection_statistics_are_in_range_and_their_means_add_up(quick):
    header = next(line for line in quick if line.startswith("# selection reliability"))
    seeds = int(re.search(r"(\d+) study seeds x \d+ trials", header).group(1))
    rows = selection_rows(quick)
    assert {setting for _, setting in rows} == {"1x1", "4x2"} and ("all", "1x1") in rows
    for (cell, setting), (spearman, regret, gap, test) in rows.items():
        values = {"spearman": spearman, "regret": regret, "gap": gap, "test": test}
        if cell != "all":
            assert all(len(v) == 2 + seeds for v in values.values()), (cell, setting)
        # rank correlations lie in [-1, 1]; the winner's regret is never below the study's best test loss
        assert all(-1 <= v <= 1 for v in spearman[2:]), spearman
        assert all(v >= 0 for v in regret[2:]), regret
        assert all(0 < v < 10 for v in test[2:]), test
        for name, (mean, sd, *per) in values.items():
            # the printed mean and sd are those of the printed values (3 or 4 decimals each)
            tol = 0.002 if name == "spearman" else 0.0002
            assert mean == pytest.approx(statistics.mean(per), abs=tol), (cell, setting, name)
            if len(per) > 1:
                assert sd == pytest.approx(statistics.stdev(per), abs=2 * tol), (cell, setting, name)


@pytest.mark.e2e
def test_headline_quotes_both_tables(quick):
    rows = throughput_rows(quick)
    selection = selection_rows(quick)
    match = re.fullmatch(
        r"headline: in-process/separate replica-epochs/s at (\d+) replicas: mlp ([0-9.]+)x, gru ([0-9.]+)x; "
        r"mlp packed/unpacked ([0-9.]+)x; lowest at 2\+ replicas ([0-9.]+)x \(goals >= 1\.00x every family, "
        r">= 1\.50x mlp at 8: not checked: no 8-replica row\); gpu (?:skipped|.+); selection 1x1 vs 4x2: spearman "
        r"(-?[0-9.]+) vs (-?[0-9.]+), regret ([0-9.]+) vs ([0-9.]+), gap (-?[0-9.]+) vs (-?[0-9.]+)",
        quick[-1])
    assert match, quick[-1]
    at, mlp, gru, packed, lowest, *chosen = match.groups()
    # the table's auto/sep ratios at that replica count, the MLP's auto/off, and the lowest auto/sep beyond 1 replica
    assert int(at) == 4 and (mlp, gru) == (rows[("mlp", 4)]["auto/sep"], rows[("gru", 4)]["auto/sep"])
    assert packed == rows[("mlp", 4)]["auto/off"]
    assert lowest == min((r["auto/sep"] for (_, n), r in rows.items() if n > 1), key=float)
    # the selection table's 'all' rows: spearman, regret and gap means of (a) then (b)
    a, b = selection[("all", "1x1")], selection[("all", "4x2")]
    expected = [a[0][0], b[0][0], a[1][0], b[1][0], a[2][0], b[2][0]]
    assert [float(x) for x in chosen] == expected
