"""What the build and install tests share: each container image, the GPU image's dependency resolution and the
wheel's venvs, made once per run and used by every test (and every pytest-xdist worker) that needs them.

One worker makes a thing under a file lock while the others wait, then each reads the answer from the run's shared
temporary folder (:func:`once_per_run`). Across runs on one machine, nothing unchanged is made again: build.sh tags
each image with a digest of what its build reads (Dockerfile, context, base image, build arguments, pip settings)
and rebuilds only when that changes; the resolution is kept under ~/.cache/katib-hpo/resolve/ by a digest of its own
inputs for a day (the index may publish CUDA wheels torch's ranges admit). The venvs are fresh every run: they are
what a user's ``pip install`` gives.

Everything with buildah needs root, buildah and debootstrap (`.ci/run` installs them) and skips with the reason
otherwise.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "trial_image" / "build.sh"
# the images the tests build, under tags of their own: never the images `make image` and `make suggestion-image`
# built for pushing
TRIAL_TEST_TAG = "localhost/katib-hpo/trial:test"
SUGGESTION_TEST_TAG = "localhost/katib-hpo/suggestion:test"
CUDA_OPT_IN = "HPO_TEST_CUDA_IMAGE"
RESOLVE_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "katib-hpo" / "resolve"
RESOLVE_MAX_AGE_S = 24 * 3600
SUPPORTED = ("3.11", "3.12", "3.13")
TORCH_HERE = "3.11"  # the Python whose torch wheel lies on this machine

_missing = [tool for tool in ("buildah", "debootstrap", "unshare") if shutil.which(tool) is None]
needs_buildah = pytest.mark.skipif(
    bool(_missing) or os.geteuid() != 0,
    reason=f"{', '.join(_missing)} not installed: apt-get install -y --no-install-recommends buildah debootstrap "
           "(.ci/run does)" if _missing else "building with buildah's chroot isolation and debootstrap needs root")


def buildah(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """buildah on build.sh's store (~/.cache/katib-hpo/containers), not the system one."""
    proc = subprocess.run([str(BUILD), "buildah", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"buildah {' '.join(args[:3])} failed:\n{proc.stderr[-3000:]}"
    return proc


def once_per_run(tmp_path_factory: pytest.TempPathFactory, key: str, make: Callable[[Path], Any]) -> Any:
    """``make(folder)``'s answer (JSON), computed once per pytest run whatever the number of xdist workers.

    The first worker to ask runs ``make`` in a folder of the run's shared temporary folder, under a file lock the
    others wait on; they then read its answer. A failure is kept too: the others fail at once with its message
    instead of repeating minutes of work that fails the same way."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # every worker's base folder lies in the run's one folder
    answer = root / f"once-{key}.json"
    with FileLock(str(root / f"once-{key}.lock")):
        if not answer.exists():
            folder = root / f"once-{key}"
            folder.mkdir(exist_ok=True)
            try:
                found = {"value": make(folder)}
            except (Exception, pytest.fail.Exception) as exc:
                answer.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
                raise
            answer.write_text(json.dumps(found))
            return found["value"]
        found = json.loads(answer.read_text())
    if "error" in found:
        pytest.fail(f"{key} failed earlier in this run: {found['error']}", pytrace=False)
    return found["value"]


# ----------------------------------------------------------------------------------------------- images
def _built(argv: list[str], tag: str, what: str) -> str:
    env = {**os.environ, "HPO_IMAGE_ENGINE": "buildah"}  # buildah even where a Docker daemon answers
    proc = subprocess.run([str(BUILD), *argv, "--tag", tag], capture_output=True, text=True, timeout=3000, env=env)
    assert proc.returncode == 0, f"{what} build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return tag


@pytest.fixture(scope="session")
def trial_image(tmp_path_factory) -> Callable[[str], str]:
    """``trial_image(flavour)``: the trial image's name. ``cpu``: trial_image/Dockerfile built on the CPU stand-in;
    ``cuda``: the GPU image `make image` built (make image-check builds it first), taken as it is, never rebuilt."""

    def get(flavour: str) -> str:
        if flavour == "cuda":
            name = subprocess.run([str(BUILD), "image-name"], capture_output=True, text=True, check=True).stdout
            name = name.strip()
            assert buildah("inspect", "--type", "image", name, check=False).returncode == 0, f"{name}: run make image"
            return name
        return once_per_run(tmp_path_factory, "trial-image-cpu",
                            lambda _: _built(["image", "--base", "stand-in"], TRIAL_TEST_TAG, "trial image"))

    return get


@pytest.fixture(scope="session")
def suggestion_image(tmp_path_factory) -> str:
    """The suggestion service's image (suggestion.Dockerfile on the Debian base), under its test tag."""
    return once_per_run(tmp_path_factory, "suggestion-image",
                        lambda _: _built(["suggestion-image"], SUGGESTION_TEST_TAG, "suggestion image"))


@pytest.fixture(scope="session")
def image_container(tmp_path_factory) -> Callable[[str], str]:
    """``image_container(image)``: a working container of the image for `buildah run`. Every run mounts its own /tmp
    and /data, and uid 10001 can write nowhere else that a trial reads, so build.sh keeps it for the next run while
    the image is unchanged: with vfs storage, creating one copies the whole image and removing it deletes that copy
    (minutes on a loaded machine)."""

    def get(image: str) -> str:
        def make(_: Path) -> str:
            proc = subprocess.run([str(BUILD), "run-container", image], capture_output=True, text=True, timeout=1200)
            assert proc.returncode == 0, proc.stderr[-3000:]
            return proc.stdout.strip()

        return once_per_run(tmp_path_factory, "container-" + hashlib.sha256(image.encode()).hexdigest()[:12], make)

    return get


def resolution_digest() -> str:
    """What `build.sh resolve` reads: the script, the base image's ID, the project's metadata and pins, the pip
    settings it forwards into the build. The base is built first when missing (`build.sh base` takes the store's
    lock, which an image build holds for minutes: only then)."""
    base = subprocess.run([str(BUILD), "base-tag"], capture_output=True, text=True, check=True).stdout.strip()
    if buildah("inspect", "--type", "image", base, check=False).returncode != 0:
        proc = subprocess.run([str(BUILD), "base"], capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"build.sh base failed:\n{proc.stderr[-3000:]}"
    base_id = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", base).stdout.strip()
    pip_settings = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    digest = hashlib.sha256(f"{base_id}\n{pip_settings}\n".encode())
    for name in ("trial_image/build.sh", "pyproject.toml", "constraints.txt", "hpo_lib/version.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def gpu_resolution(tmp_path_factory) -> dict:
    """pip's installation report of the GPU image's dependencies (`build.sh resolve`: the image build's own pip
    install with --dry-run, in the Debian base), kept a day while its inputs are unchanged."""

    def make(folder: Path) -> str:
        cached = RESOLVE_CACHE / f"{resolution_digest()}.json"
        if cached.exists() and time.time() - cached.stat().st_mtime < RESOLVE_MAX_AGE_S:
            return str(cached)
        path = folder / "report.json"
        proc = subprocess.run([str(BUILD), "resolve", str(path)], capture_output=True, text=True, timeout=2400)
        assert proc.returncode == 0, f"build.sh resolve failed:\n{proc.stderr[-4000:]}"
        RESOLVE_CACHE.mkdir(parents=True, exist_ok=True)
        for old in RESOLVE_CACHE.glob("*.json"):  # one resolution kept: the inputs of the last run
            old.unlink()
        shutil.copy(path, cached)
        return str(path)

    return json.loads(Path(once_per_run(tmp_path_factory, "gpu-resolution", make)).read_text())


# ----------------------------------------------------------------------------------------------- the wheel
def interpreter(minor: str) -> str | None:
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


def clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a user of the venv: its bin/ first on PATH, nothing of this checkout's Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_", "HPO_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HPO_CACHE_DIR=str(home / "cache"),
               MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    return env


def run_ok(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel of this checkout, built once per run (pip wheel, isolated build); with the build's output."""

    def make(out: Path) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(ROOT)],
                              capture_output=True, text=True, timeout=600, cwd=out)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (path,) = out.glob("katib_hpo-*.whl")
        return [str(path), done.stdout + done.stderr]

    path, log = once_per_run(tmp_path_factory, "wheel", make)
    return Path(path), log


def _dependencies(without_torch: bool) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["local"]
    return [d for d in wanted if not (without_torch and re.match(r"torch\b", d))]


def _install(python: str, minor: str, wheel: Path, work: Path) -> str:
    """A fresh venv at ``work/venv`` with the wheel and its pinned dependencies (torch only where its wheel lies);
    returns ``work``, the venv user's home."""
    venv = work / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    env = clean_env(venv, work)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    if minor == TORCH_HERE:
        run_ok([*pip, f"{wheel}[local]"], cwd=work, env=env, timeout=1800)
    else:
        run_ok([*pip, *_dependencies(without_torch=True)], cwd=work, env=env, timeout=1800)
        run_ok([*pip, "--no-deps", str(wheel)], cwd=work, env=env)
        check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"], env=env, capture_output=True,
                               text=True)
        # every requirement is met but torch, left out on purpose (see tests/e2e/test_package.py)
        assert [line for line in check.stdout.splitlines() if "torch" not in line] == [], check.stdout
    return str(work)


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> Callable[[str], tuple[Path, dict[str, str]]]:
    """``installed(minor)``: a fresh venv of that Python with the wheel, made once per run and Python, and the
    environment of its user; or a skip when this machine has no such Python."""

    def get(minor: str) -> tuple[Path, dict[str, str]]:
        python = interpreter(minor)
        if python is None:
            pytest.skip(f"no Python {minor} on this machine (PATH or pyenv)")
        work = Path(once_per_run(tmp_path_factory, f"venv-py{minor}",
                                 lambda folder: _install(python, minor, wheel[0], folder)))
        return work / "venv", clean_env(work / "venv", work)

    return get
