"""The bounds on inputs: each defined once with its reason, raised through its variable, and holding in memory: an
alias bomb and an oversized data file are refused by a real ``hpo`` process before its peak RSS reaches 500 MB."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpo_lib import limits
from hpo_lib.errors import ConfigError, DataError
from tests.test_fileio import bomb

PEAK_MB = 500  # the bound on the memory spent before a refusal
# runs `hpo` in a fresh interpreter and prints its exit code, stderr and the process's peak RSS: Linux's VmHWM, the
# high-water mark of this program's memory, when there is /proc (getrusage's ru_maxrss keeps, across exec, the peak
# of the process it was forked from: pytest's own hundreds of MB), else ru_maxrss (KiB)
MEASURE = (
    "import contextlib, io, json, resource, sys\n"
    "from hpo_lib import cli\n"
    "err = io.StringIO()\n"
    "with contextlib.redirect_stderr(err):\n"
    "    code = cli.main(sys.argv[1:])\n"
    "try:\n"
    "    kib = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "except OSError:\n"
    "    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print(json.dumps({'code': code, 'err': err.getvalue(), 'peak_mb': kib / 1024}))\n"
)


def measure(*argv: str, env: dict[str, str] | None = None) -> dict:
    import os

    done = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_limit_has_a_reason_and_a_variable_and_is_defined_once():
    names = [limit.name for limit in limits.ALL]
    assert len(set(names)) == len(names)
    assert {limit.env for limit in limits.ALL} == {f"HPO_LIMIT_{n.upper()}" for n in names}
    assert all(limit.reason and limit.default > 0 for limit in limits.ALL)
    defined = [name for name, value in vars(limits).items() if isinstance(value, limits.Limit)]
    assert sorted(defined) == sorted(n.upper() for n in names)  # every Limit is listed in ALL


def test_a_refusal_names_the_input_its_size_the_limit_the_reason_and_the_variable(monkeypatch):
    with pytest.raises(DataError) as caught:
        limits.DATA_ROWS.check("data file x.csv", 1_500_000, DataError)
    assert str(caught.value) == (
        "data file x.csv is 1,500,000 rows, over the limit of 1,000,000 rows (a price file is read into memory "
        "whole, about 150 bytes a row; 1,000,000 rows are 4,000 years of daily bars); raise it with "
        "HPO_LIMIT_DATA_ROWS=N"
    )
    monkeypatch.setenv("HPO_LIMIT_DATA_ROWS", "2_000_000")
    limits.DATA_ROWS.check("data file x.csv", 1_500_000)  # raised for this run: no refusal
    monkeypatch.setenv("HPO_LIMIT_DATA_ROWS", "lots")
    with pytest.raises(ConfigError, match="HPO_LIMIT_DATA_ROWS='lots' must be a number above 0"):
        limits.DATA_ROWS.check("data file x.csv", 1)


def test_the_kernels_argument_limit_cannot_be_raised_and_says_what_to_do(monkeypatch):
    monkeypatch.setenv(limits.ARGUMENT_BYTES.env, "10000000")
    assert limits.ARGUMENT_BYTES.value == 131_072
    assert limits.ARGUMENT_BYTES.refusal("the trial argument '--x'", 200_000).endswith(
        "put the value in a file and pass the file's path")


def test_an_alias_bomb_is_refused_in_one_line_with_little_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("apiVersion: kubeflow.org/v1beta1\nkind: Experiment\nmetadata: {name: bomb}\n" + bomb()
                    + "spec: {}\n")
    for argv in (["manifests", "validate", str(path)],
                 ["tune", str(path), "--state-dir", str(tmp_path / "s"), "--no-tracking", "--no-progress"]):
        result = measure(*argv)
        assert result["code"] == 2
        lines = result["err"].strip().splitlines()
        assert len(lines) == 1 and "with its aliases expanded is" in lines[0] and "HPO_LIMIT_YAML_NODES" in lines[0]
        assert result["peak_mb"] < PEAK_MB, result
    assert not (tmp_path / "s" / "studies.db").exists()  # refused before any study


def test_a_data_file_over_the_row_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.csv"
    row = b"2020-01-02,100,101,99,100,1000\n"
    with path.open("wb") as handle:  # 2,500,000 rows (77.5 MB): 2.5 times the limit
        handle.write(b"Date,Open,High,Low,Close,Volume\n")
        for _ in range(25):
            handle.write(row * 100_000)
    result = measure("data", "fetch", f"file:{path}")
    assert result["code"] == 2
    assert result["err"].strip() == (
        f"hpo: error: data file {path} is 2,500,000 rows, over the limit of 1,000,000 rows (a price file is read into "
        "memory whole, about 150 bytes a row; 1,000,000 rows are 4,000 years of daily bars); raise it with "
        "HPO_LIMIT_DATA_ROWS=N"
    )
    assert result["peak_mb"] < PEAK_MB, result
    small = measure("data", "fetch", f"file:{path}", env={limits.DATA_FILE_BYTES.env: "1000"})
    assert "is 77,500,032 bytes, over the limit of 1,000 bytes" in small["err"]


def test_a_parquet_file_is_counted_from_its_footer(tmp_path, monkeypatch):
    import pandas as pd

    from hpo_lib.data import sources

    path = tmp_path / "p.parquet"
    pd.DataFrame({"Date": pd.bdate_range("2000-01-03", periods=50), "Open": 1.0, "High": 1.0, "Low": 1.0,
                  "Close": 1.0, "Volume": 1.0}).to_parquet(path)
    monkeypatch.setenv(limits.DATA_ROWS.env, "49")
    with pytest.raises(DataError, match=f"data file {path} is 50 rows, over the limit of 49 rows"):
        sources.load_prices(f"file:{path}")

