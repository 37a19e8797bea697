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

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from hpo_lib.version import __version__
from tests.conftest import BASE, FIXTURES, ROOT, free_port

pytestmark = pytest.mark.e2e

SUPPORTED = ("3.11", "3.12", "3.13")
TORCH_HERE = "3.11"  # the Python whose torch wheel lies on this machine


def _interpreter(minor: str) -> str | None:
    """A python3.X executable: on PATH, else one of pyenv's installed versions."""
    candidates = [shutil.which(f"python{minor}")]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"), reverse=True)
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == minor:
            return candidate
    return None


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a user of the venv: its bin/ first on PATH, nothing of this checkout's Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_", "HPO_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HPO_CACHE_DIR=str(home / "cache"),
               MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel of this checkout, built once (pip wheel, isolated build); with the build's output."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600, cwd=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("katib_hpo-*.whl")
    return path, done.stdout + done.stderr


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


def _dependencies(without_torch: bool) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["local"]
    return [d for d in wanted if not (without_torch and re.match(r"torch\b", d))]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """``installed(minor)``: a fresh venv of that Python with the wheel (made once per module), or a skip."""
    made: dict[str, tuple[Path, dict[str, str]]] = {}

    def install(minor: str) -> tuple[Path, dict[str, str]]:
        python = _interpreter(minor)
        if python is None:
            pytest.skip(f"no Python {minor} on this machine (PATH or pyenv)")
        if minor not in made:
            made[minor] = _install(python, minor, wheel[0], tmp_path_factory.mktemp(f"py{minor}"))
        return made[minor]

    return install


def _install(python: str, minor: str, wheel: Path, work: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv under ``work`` with the wheel and its pinned dependencies (torch only where its wheel lies)."""
    venv = work / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    env = _clean_env(venv, work)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    if minor == TORCH_HERE:
        _run([*pip, f"{wheel}[local]"], cwd=work, env=env, timeout=1800)
    else:
        _run([*pip, *_dependencies(without_torch=True)], cwd=work, env=env, timeout=1800)
        _run([*pip, "--no-deps", str(wheel)], cwd=work, env=env)
        check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"], env=env, capture_output=True,
                               text=True)
        # every requirement is met but torch, left out on purpose (see the module docstring)
        assert [line for line in check.stdout.splitlines() if "torch" not in line] == [], check.stdout
    return venv, env


def _scripted_manifest(folder: Path) -> Path:
    """conftest's scripted Experiment, its stand-in trial copied into ``folder`` (nothing read from the checkout)."""
    shutil.copy(FIXTURES / "scripted_trial.py", folder / "scripted_trial.py")
    doc = json.loads(json.dumps(BASE))
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [str(folder / "scripted_trial.py"), *container["args"][1:], "--curves=0.5,0.3,0.9"]
    path = folder / "scripted.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _serves(process: subprocess.Popen, port: int, timeout_s: float = 120) -> str:
    """The dashboard's front page, once it answers (fails when the server exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return response.read().decode(errors="replace")
        except OSError:  # refused while it starts; TimeoutError is an OSError
            time.sleep(0.5)
    raise AssertionError(f"hpo dashboard did not answer on port {port} within {timeout_s} s")


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
    port = free_port()
    server = subprocess.Popen([hpo, "dashboard", "--state-dir", "s", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # optuna-dashboard answers on the studies the venv's hpo tune stored
        assert "<html" in _serves(server, port).lower()
    finally:
        server.terminate()
        server.communicate(timeout=30)
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
