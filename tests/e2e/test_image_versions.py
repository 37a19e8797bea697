"""The GPU trial image installs exactly what the local engine runs: torch, the Python minor and every pinned dependency.

`trial_image/build.sh resolve` runs the image build's own pip install, with `--dry-run --report`, inside the Debian
base the GPU image is built on, with the build's pip settings: the resolution `make image` would install, without
the several GB of CUDA wheels. This test (run by `.ci/run`) holds that resolution to the local engine (this test
process's `.venv`): torch's release is the pin and a CUDA build, each pinned package resolves to its pin and to the
version installed here, and nothing else is installed but torch's CUDA runtime wheels and the packaging tools.
`tests/e2e/test_image_build.py` applies the same check, :func:`drift`, to what a built image really holds.

Needs root, buildah, debootstrap (`.ci/run` installs them) and the package index, like the image build itself.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.e2e.conftest import ROOT, needs_buildah

DOCKERFILE = ROOT / "trial_image" / "Dockerfile"
# installed in the image but pinned by no one: the project itself (compared with .venv's), pip and setuptools
# (packaging tools `make lock`'s pip freeze leaves out; torch requires setuptools)
UNPINNED_TOOLS = {"katib-hpo", "pip", "setuptools", "wheel"}


def pins(path: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """constraints.txt's ``name==version`` lines, by canonical name."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==([^ ;#]+)", line.strip())
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def image_python_minor() -> str:
    """The Dockerfile's ``ARG PYTHON_MINOR``: the one place the image's Python minor is set."""
    match = re.search(r"(?m)^ARG PYTHON_MINOR=(\d+\.\d+)$", DOCKERFILE.read_text())
    assert match, "trial_image/Dockerfile declares no ARG PYTHON_MINOR=<major.minor>"
    return match.group(1)


def release(version: str) -> str:
    """A version without its local label: torch 2.13.0+cpu (the local wheel) and 2.13.0 (PyPI's CUDA build)."""
    return version.split("+", 1)[0]


def local_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cuda_closure(requires: Mapping[str, Sequence[str]], environment: Mapping[str, str], pinned: set[str]) -> set[str]:
    """The packages torch pulls in that constraints.txt does not pin (its CUDA runtime wheels, triton), found by
    following the requirements, extras included, whose markers hold in the image's ``environment``."""
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [("torch", frozenset[str]())]
    while stack:
        name, extras = stack.pop()
        for text in requires.get(name, ()):
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({**environment, "extra": extra})
                                      for extra in (extras or {""})):
                continue
            key = (canonicalize_name(req.name), frozenset(req.extras))
            if key[0] not in pinned and key not in seen:
                seen.add(key)
                stack.append(key)
    return {name for name, _ in seen}


def drift(installed: Mapping[str, str], requires: Mapping[str, Sequence[str]], environment: Mapping[str, str],
          *, cuda: bool) -> list[str]:
    """Every way the image's packages (``installed``: canonical name -> version) differ from constraints.txt and
    from the local engine, one line each; empty when the image runs what the laptop runs.

    ``requires`` maps names to their ``Requires-Dist`` lines, ``environment`` is the image's marker environment
    (its Python, platform). ``cuda``: torch must be a build that requires CUDA runtime wheels."""
    pinned, lines = pins(), []
    minor = image_python_minor()
    local_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    if environment["python_version"] != minor or minor != local_minor:
        lines.append(f"Python: image {environment['python_version']}, PYTHON_MINOR {minor}, local engine {local_minor}")
    torch = installed.get("torch")
    if torch is None or release(torch) != pinned["torch"] or release(local_version("torch") or "") != pinned["torch"]:
        lines.append(f"torch: image {torch}, constraints.txt {pinned['torch']}, local engine {local_version('torch')}")
    extra = cuda_closure(requires, environment, set(pinned))
    if cuda and not {name for name in extra if name.startswith("nvidia-")}:
        lines.append(f"torch {torch} requires no nvidia-* CUDA runtime wheel: it is not a CUDA build")
    for name, version in sorted(installed.items()):
        if name == "torch":
            continue
        if name in pinned:
            if version != pinned[name]:
                lines.append(f"{name}: image {version}, constraints.txt {pinned[name]}")
            elif local_version(name) != version:
                lines.append(f"{name}: image {version}, local engine {local_version(name)}")
        elif name == "katib-hpo":
            if local_version(name) != version:
                lines.append(f"{name}: image {version}, local engine {local_version(name)}")
        elif name not in extra and name not in UNPINNED_TOOLS:
            lines.append(f"{name} {version} is in the image but pinned nowhere (add it to constraints.txt: make lock)")
    return lines


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
def test_the_gpu_image_resolves_to_what_the_local_engine_runs(gpu_resolution):
    report = gpu_resolution
    entries = {canonicalize_name(item["metadata"]["name"]): item for item in report["install"]}
    installed = {name: item["metadata"]["version"] for name, item in entries.items()}
    requires = {name: item["metadata"].get("requires_dist", []) for name, item in entries.items()}
    # the same torch release, Python minor and pinned versions as .venv; only CUDA wheels and tools besides
    assert drift(installed, requires, report["environment"], cuda=True) == []
    # torch is PyPI's wheel for the image's Python on Linux x86-64, not the local +cpu one
    wheel = entries["torch"]["download_info"]["url"].rsplit("/", 1)[-1]
    tag = "cp" + image_python_minor().replace(".", "")
    assert re.fullmatch(rf"torch-{re.escape(pins()['torch'])}-{tag}-{tag}-manylinux_\d+_\d+_x86_64\.whl", wheel)
    # every pinned runtime dependency of the project resolved, none was left to the index's latest
    assert {"numpy", "pandas", "optuna", "mlflow", "kfp"} <= set(installed)


# --- the drift check itself, on small made-up sets: it must name each kind of difference -----------------------

TORCH_REQUIRES = ['cuda-toolkit[cublas]==13.0.3; platform_system == "Linux"', 'filelock',
                  'triton==3.7.1; platform_system == "Linux"', 'optree>=0.13.0; extra == "optree"']
CUDA_TOOLKIT_REQUIRES = ['nvidia-cublas==13.1.*; extra == "cublas"', 'nvidia-cufft==12.0.*; extra == "cufft"']


def _local_set() -> dict[str, str]:
    """A coherent image: torch at the pin plus the CUDA wheels, filelock at the pin (and as installed here)."""
    pinned = pins()
    return {"torch": pinned["torch"], "filelock": pinned["filelock"], "cuda-toolkit": "13.0.3",
            "nvidia-cublas": "13.1.1.3", "triton": "3.7.1", "setuptools": "80.0"}


ENV = {"python_version": image_python_minor(), "platform_system": "Linux", "sys_platform": "linux"}
REQUIRES = {"torch": TORCH_REQUIRES, "cuda-toolkit": CUDA_TOOLKIT_REQUIRES}


def test_drift_is_empty_for_the_pinned_set():
    if local_version("filelock") != pins()["filelock"]:
        pytest.skip("this environment's filelock is not constraints.txt's: run make install")
    # the CUDA wheels torch's markers and extras select are allowed unpinned; the unselected extra is not needed
    assert drift(_local_set(), REQUIRES, ENV, cuda=True) == []


@pytest.mark.parametrize("change, expected", [
    ({"torch": "2.9.1"}, "torch: image 2.9.1"),
    ({"filelock": "0.0.1"}, "filelock: image 0.0.1, constraints.txt"),
    ({"nvidia-cufft": "12.0.0.61"}, "nvidia-cufft 12.0.0.61 is in the image but pinned nowhere"),
    ({"leftpad": "1.0"}, "leftpad 1.0 is in the image but pinned nowhere"),
])
def test_drift_names_each_difference(change, expected):
    lines = drift({**_local_set(), **change}, REQUIRES, ENV, cuda=True)
    assert any(line.startswith(expected) for line in lines), lines


def test_drift_names_a_cpu_torch_and_another_python():
    # a torch that pulls in no nvidia-* wheel is a CPU build; the image's Python minor must be .venv's
    lines = drift({"torch": pins()["torch"]}, {"torch": ["filelock"]}, {**ENV, "python_version": "3.99"}, cuda=True)
    assert any("not a CUDA build" in line for line in lines), lines
    assert any(line.startswith("Python: image 3.99") for line in lines), lines
