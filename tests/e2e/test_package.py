"""The package as a user gets it: the wheel built from this checkout, installed into a fresh venv outside the
checkout, of each supported Python this machine has; there, `hpo` runs every subcommand and the README's Python
example runs.

torch: Python 3.11 installs the CPU wheel that lies on the dev and CI machines (pip's find-links, constraints.txt's
pin), so its venv trains for real: `hpo trial`, `hpo tune` of a shipped manifest, `hpo pipeline run-local` and the
README example. For 3.12 and 3.13 PyPI offers only the CUDA build: measured for torch 2.13.0 on 3.12, 2.74 GB to
download (torch 527 MB, its 18 CUDA wheels and triton the rest), per interpreter, and PyTorch's CPU index cannot be
reached from these machines. Those venvs get every other dependency at the pinned versions and the package without
torch; their `hpo` runs every subcommand that needs no training, and `hpo tune` on the scripted stand-in trial, so
the engine, MLflow, the exports, plots, dashboard and pipeline compiler are all exercised on that Python too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from hpo_lib.version import __version__
from tests.conftest import BASE, FIXTURES, ROOT, free_port, wait_for_http
from tests.e2e.conftest import SUPPORTED, TORCH_HERE
from tests.e2e.conftest import run_ok as _run

pytestmark = [pytest.mark.e2e, pytest.mark.image]


def test_the_wheel_builds_without_warnings_and_holds_the_whole_package(wheel):
    path, log = wheel
    # setuptools warns of nothing: an SPDX license string, no license table or license classifier
    assert not re.search(r"(?i)deprecat|SetuptoolsWarning", log), [x for x in log.splitlines() if "eprecat" in x]
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"katib_hpo-{__version__}.dist-info/METADATA").decode()
    # the one version, the license expression and file, the supported Pythons
    assert path.name.startswith(f"katib_hpo-{__version__}-")
    assert "License-Expression: Apache-2.0" in metadata
    assert f"katib_hpo-{__version__}.dist-info/licenses/LICENSE" in names
    assert "Requires-Python: <3.14,>=3.11" in metadata
    assert {f"Classifier: Programming Language :: Python :: {v}" for v in SUPPORTED} <= set(metadata.splitlines())
    # the pipeline definition and the typed-package marker are in it; the tests and the checkout's scripts are not
    assert {"hpo_lib/pipeline/dag.py", "hpo_lib/api.py", "hpo_lib/py.typed", "hpo_lib/version.py"} <= names
    assert not any(n.startswith(("tests/", "pipelines/", "bench/")) for n in names)
    # the long description is the one written for pip users: docs/pypi.md, Markdown, nothing that needs a checkout
    headers, _, description = metadata.partition("\n\n")
    assert "Description-Content-Type: text/markdown" in headers
    assert description.strip() == (ROOT / "docs" / "pypi.md").read_text().strip()
    assert not re.search(r"(?i)\bmake \w|clon(e|ing)|\.venv/", description)
    # every `hpo ...` command it shows is one the installed parser accepts
    from hpo_lib import cli

    commands = [line.split("#")[0].split() for block in re.findall(r"```bash\n(.*?)```", description, re.S)
                for line in block.splitlines() if line.startswith("hpo ")]
    assert len(commands) >= 6
    for argv in commands:
        cli._build_parser().parse_args(argv[1:])  # exits 2 on a command or flag the CLI does not have


def _scripted_manifest(folder: Path) -> Path:
    """conftest's scripted Experiment, its stand-in trial copied into ``folder`` (nothing read from the checkout)."""
    shutil.copy(FIXTURES / "scripted_trial.py", folder / "scripted_trial.py")
    doc = json.loads(json.dumps(BASE))
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [str(folder / "scripted_trial.py"), *container["args"][1:], "--curves=0.5,0.3,0.9"]
    path = folder / "scripted.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("minor", SUPPORTED)
def test_pip_install_gives_a_working_hpo_for_every_subcommand(installed, tmp_path, minor):
    venv, env = installed(minor)
    hpo = str(venv / "bin" / "hpo")
    work = tmp_path / "work"  # outside the checkout: nothing of it on the path
    work.mkdir()

    def run(*argv: str, timeout: float = 600) -> str:
        return _run([hpo, *argv], cwd=work, env=env, timeout=timeout).stdout

    # the installed hpo is the venv's and reports the one version; -v before or after the command
    assert run("--version") == f"hpo {__version__}\n"
    assert "commands:" in run("--help") and "--verbose" in run("tune", "--help")
    assert "complete -o bashdefault -F _shtab_hpo hpo" in run("completion", "bash")  # shtab came with the package
    assert run("trial", "--help").startswith("usage: hpo trial")
    assert run("data", "fetch", "sample:sp500", "-v") == run("-v", "data", "fetch", "sample:sp500")
    assert "bundled or local data: nothing to cache" in run("data", "fetch", "sample:sp500")
    # manifests rendered from the installed code, drift-checked and validated there
    run("manifests", "render", "--root", "manifests")
    assert "match the code" in run("manifests", "check", "--root", "manifests")
    assert "ok" in run("manifests", "validate", "manifests/mlp-experiment.yaml")
    # the pipeline compiles from the installed package to the YAML the repository commits
    assert run("pipeline", "compile").strip() == "compiled to katib_hpo_pipeline.yaml"
    committed = (ROOT / "pipelines" / "katib_hpo_pipeline.yaml").read_text()
    assert (work / "katib_hpo_pipeline.yaml").read_text() == committed

    if minor == TORCH_HERE:  # real training: a trial, a shipped manifest tuned, the pipeline on it
        manifest = "manifests/mlp-experiment.yaml"
        run("trial", "--model=mlp", "--data=sample:sp500,start=2016-01-01", "--epochs=1", "--seq-len=10",
            "--split-window=10", "--hidden-size=8", "--num-layers=1", "--threads=1", "--output-dir=trial")
        assert json.loads((work / "trial" / "metrics.json").read_text())["epochs_run"] == 1
        run("tune", manifest, "--set", "data=sample:sp500", "--set", "epochs=2", "--set", "folds=1",
            "--set", "seeds=1", "--set", "threads=1", "--max-trials", "2", "--parallel", "1", "--state-dir", "s",
            "--no-progress", "-v", timeout=900)
    else:  # no torch here: the engine, MLflow and the exports on the scripted stand-in trial
        manifest = str(_scripted_manifest(work))
        run("tune", manifest, "--max-trials", "3", "--state-dir", "s", "--no-progress", "-v")
    assert "exported" in run("results", manifest, "--state-dir", "s")
    assert any(line.endswith("report.html") for line in run("report", manifest, "--state-dir", "s").splitlines())
    port, log = free_port(), work / "dashboard.log"
    with log.open("w") as out:
        server = subprocess.Popen([hpo, "dashboard", "--state-dir", "s", "--port", str(port)], cwd=work, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        # optuna-dashboard answers on the studies the venv's hpo tune stored
        assert "<html" in wait_for_http(f"http://127.0.0.1:{port}/", server, log=log, timeout_s=120).lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
    if minor == TORCH_HERE:
        out = run("pipeline", "run-local", manifest, "--state-dir", "s", "--max-winners", "1", "--seeds", "1",
                  "--test-origins", "1", "--epochs", "2", "--pipeline-root", "p", timeout=1200)
        # the verdict line, then the artifacts: the whole pipeline ran from the installed package
        lines = out.splitlines()
        verdict = next(i for i, line in enumerate(lines) if line.startswith("leaderboard: ")) - 1
        assert lines[0].startswith("running the pipeline locally") and "baseline" in lines[verdict]


def test_the_readme_python_example_runs_in_a_fresh_install(installed, tmp_path):
    venv, env = installed(TORCH_HERE)
    section = (ROOT / "README.md").read_text().split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    work = tmp_path / "work"
    shutil.copytree(ROOT / "manifests", work / "manifests")
    (work / "example.py").write_text(code)
    out = _run([str(venv / "bin" / "python"), "example.py"], cwd=work, env=env, timeout=900).stdout
    # the best trial, the frame, the export and the report, the re-run trial, and the typo refused in one line
    lines = out.splitlines()
    assert "condition" in out and "val_loss_min" in out and out.count("Succeeded") == 3
    assert ".hpo-api/katib-hpo.mlp-spy-return/trials.json .hpo-api/katib-hpo.mlp-spy-return/report/report.html" in lines
    assert (work / ".hpo-api" / "katib-hpo.mlp-spy-return" / "report" / "report.html").exists()
    # the re-run of the best trial: its validation loss and its 2 epoch lines plus the final one
    assert re.fullmatch(r"0\.\d+ 3", lines[-2]), lines[-2]
    assert out.rstrip().splitlines()[-1].startswith("the trial refuses its flags before any trial starts: unknown "
                                                    "flag --epoch")
