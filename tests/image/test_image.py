"""The trial image: hadolint and checkov find nothing in trial_image/, and the rules Katib and OpenShift rely on hold.

The linters come from `.tools-venv/` (`make tools`, which `make test` runs first); these tests skip without it.
Building the image and running the manifests' trial commands inside it is tests/e2e/test_image_build.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "trial_image" / "Dockerfile"
SUGGESTION_DOCKERFILE = ROOT / "trial_image" / "suggestion.Dockerfile"  # the suggestion service's image
both_dockerfiles = pytest.mark.parametrize("dockerfile", [DOCKERFILE, SUGGESTION_DOCKERFILE],
                                         ids=["trial", "suggestion"])
DOCKERIGNORE = ROOT / ".dockerignore"  # what docker reads: the build context is the repo root
TOOLS_BIN = ROOT / ".tools-venv" / "bin"
MANIFESTS = ROOT / "manifests"


def tool(name: str) -> Path:
    """Path of a lint tool in .tools-venv, or skip the calling test when the tool venv is missing."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is missing: run `make tools` to install the pinned hadolint and checkov")
    return path


@dataclass
class CheckovScan:
    passed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # "CKV_ID resource (file:lines) check name", one per finding


def run_checkov(path: Path, framework: str | Sequence[str]) -> CheckovScan:
    """Scan a file or folder with checkov offline (no Prisma Cloud download) and collect its findings.

    Args:
        path: a file (``-f``) or a folder (``-d``).
        framework: one checkov framework name or several, e.g. ``"dockerfile"`` or ``["kubernetes", "kustomize"]``.
    """
    frameworks = [framework] if isinstance(framework, str) else list(framework)
    target = ["-d", str(path)] if path.is_dir() else ["-f", str(path)]
    proc = subprocess.run(
        [str(tool("checkov")), *target, "--framework", *frameworks, "--skip-download", "--quiet", "-o", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    # exit 1 means "some check failed"; anything else is checkov itself failing
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    reports = json.loads(proc.stdout)
    scan = CheckovScan()
    for report in reports if isinstance(reports, list) else [reports]:
        if "results" not in report:  # a summary-only report: that framework found nothing to scan
            continue
        scan.passed += report["summary"]["passed"]
        scan.skipped += report["summary"]["skipped"]
        for check in report["results"]["failed_checks"]:
            first, last = check["file_line_range"]
            scan.failed.append(f"{check['check_id']} {check['resource']} ({check['file_path']}:{first}-{last}) "
                               f"{check['check_name']}")
    return scan


# --- a minimal Dockerfile reader: enough for the static rules below --------------------------------------------

def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comment lines dropped."""
    result, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            keyword, _, args = pending.partition(" ")
            result.append((keyword.upper(), args.strip()))
            pending = ""
    return result


def declared_names(keyword: str, args: str) -> list[str]:
    """Names an ENV, ARG or LABEL instruction sets (``ENV a=1 b=2``, legacy ``ENV a 1``, ``ARG a[=x]``)."""
    words = shlex.split(args)
    if keyword == "ENV" and words and "=" not in words[0]:
        return [words[0]]
    return [word.split("=", 1)[0] for word in words]


CREDENTIAL_NAME = re.compile(r"passw(or)?d|secret|token|credential|(^|[_.-])(api_?|access_?|private_?)?keys?($|[_.-])",
                             re.IGNORECASE)


@pytest.mark.parametrize("name, is_credential", [
    ("DB_PASSWORD", True), ("AWS_SECRET_ACCESS_KEY", True), ("GITHUB_TOKEN", True), ("API_KEY", True),
    ("key", True), ("MLFLOW_TRACKING_PASSWD", True),
    ("HPO_CACHE_DIR", False), ("BASE_IMAGE", False), ("org.opencontainers.image.licenses", False), ("MONKEY", False),
])
def test_credential_names_are_recognised(name, is_credential):
    assert bool(CREDENTIAL_NAME.search(name)) == is_credential


@both_dockerfiles
def test_hadolint_finds_nothing(dockerfile):
    proc = subprocess.run([str(tool("hadolint")), "--no-color", "--format", "json", str(dockerfile)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    findings = [f"{f['code']} line {f['line']}: {f['message']}" for f in json.loads(proc.stdout or "[]")]
    # zero findings at every level, info and style included
    assert findings == [], "\n".join(findings)


@both_dockerfiles
def test_checkov_dockerfile_passes(dockerfile):
    scan = run_checkov(dockerfile, "dockerfile")
    # checkov really ran its Dockerfile checks, and none failed (skips are inline, each with a reason)
    assert scan.passed > 0
    assert scan.failed == [], "\n".join(scan.failed)


def test_checkov_manifests():
    # checkov renders kustomizations with kustomize or `kubectl kustomize`; without either only plain YAML is scanned
    frameworks = ["kubernetes"] + (["kustomize"] if shutil.which("kustomize") or shutil.which("kubectl") else [])
    scan = run_checkov(MANIFESTS, frameworks)
    assert scan.passed > 0
    assert scan.failed == [], "\n".join(scan.failed)


@both_dockerfiles
def test_dockerfile_runs_as_a_non_root_numeric_user(dockerfile):
    users = [args for keyword, args in instructions(dockerfile) if keyword == "USER"]
    # the last USER is what the container runs as: numeric (Kubernetes' runAsNonRoot can only verify a number)
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), users
    assert int(users[-1].split(":")[0]) != 0


@both_dockerfiles
def test_dockerfile_user_is_the_uid_the_manifests_run_as(dockerfile):
    # the image's user and the pods' runAsUser are one number (a rename of UID fails here, it never skips)
    from hpo_lib.katib import manifests

    user = [args for keyword, args in instructions(dockerfile) if keyword == "USER"][-1]
    assert int(user.split(":")[0]) == manifests.UID


@both_dockerfiles
def test_dockerfile_declares_no_credential_names(dockerfile):
    names = [name for keyword, args in instructions(dockerfile) if keyword in ("ENV", "ARG", "LABEL")
             for name in declared_names(keyword, args)]
    # ENV, ARG and LABEL values are readable by anyone who can pull the image (docker history / inspect)
    assert names and [name for name in names if CREDENTIAL_NAME.search(name)] == []


def build_sh(*args: str) -> str:
    return subprocess.run([str(ROOT / "trial_image" / "build.sh"), *args], capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


@both_dockerfiles
def test_base_image_is_a_build_argument_defaulting_to_the_base_build_sh_makes(dockerfile):
    steps = instructions(dockerfile)
    base = [args for keyword, args in steps if keyword == "ARG" and args.startswith("BASE_IMAGE=")]
    # one Dockerfile for the GPU image, the CPU stand-in and a user's own base; the default is what
    # `make image-base` builds here (debootstrap, no registry), tagged by Python minor and Debian release, never latest
    assert len(base) == 1 and base[0] == f"BASE_IMAGE={build_sh('base-tag')}"
    assert re.fullmatch(r"BASE_IMAGE=localhost/katib-hpo/trial-base:py\d+\.\d+-[a-z]+", base[0])
    assert [args for keyword, args in steps if keyword == "FROM"] == ["${BASE_IMAGE}"]


@both_dockerfiles
def test_image_python_minor_is_set_once_and_is_the_local_engines(dockerfile):
    from packaging.specifiers import SpecifierSet

    steps = instructions(dockerfile)
    minors = [args.split("=", 1)[1] for keyword, args in steps if keyword == "ARG" and args.startswith("PYTHON_MINOR=")]
    # one ARG PYTHON_MINOR: build.sh picks the Debian release from it, the build refuses a base with another python3
    assert len(minors) == 1 and minors[0] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"py{minors[0]}-" in build_sh("base-tag") and f"py{minors[0]}-" in build_sh("standin-tag")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{minors[0]}.0"), requires


def test_dockerfile_installs_the_torch_pin_and_refuses_a_cpu_torch():
    steps = instructions()
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    # the image installs constraints.txt as it is (torch's pin included), never a base image's torch in its place
    assert "pip install --no-cache-dir -c constraints.txt ." in runs and "^torch==" not in runs
    # and fails unless torch is the pin, and a CUDA build unless TORCH_BUILD=cpu (build.sh's CPU stand-in)
    assert "is not the pin" in runs and "is a CPU build" in runs
    assert ("ARG", "TORCH_BUILD=cuda") in steps


def test_dockerfile_runs_hpo_unbuffered_without_fetching_urls():
    steps = instructions()
    env = {name: value for keyword, args in steps if keyword == "ENV"
           for name, _, value in (word.partition("=") for word in shlex.split(args))}
    # Katib's median stopping tails stdout while the trial runs; the data cache has a fixed, writable home
    assert env["PYTHONUNBUFFERED"] == "1" and env["HPO_CACHE_DIR"] == "/data"
    assert ("ENTRYPOINT", '["hpo"]') in steps
    assert [keyword for keyword, _ in steps if keyword == "ADD"] == []


# --- .dockerignore, read with Docker's rules (moby/patternmatcher) ---------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(out)


def dockerignored(path: str, ignore_file: Path = DOCKERIGNORE) -> bool:
    """Whether docker leaves ``path`` (relative to the context) out: the last pattern matching it or a parent wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        if any(_pattern_regex(pattern).fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", ".tools-venv/bin/checkov", "local_outputs/trials/lstm-1/model.pt",
    "mlruns/0/meta.yaml", "optuna.db", "hpo_lib/study.db", "data/spy.parquet", "hpo_lib/cache.parquet",
    "model.pt", "hpo_lib/weights.pt", "hpo_lib/__pycache__/trial.cpython-311.pyc", ".env", "tests/test_image.py",
])
def test_dockerignore_keeps_out(path):
    assert dockerignored(path)


@pytest.mark.parametrize("path", ["pyproject.toml", "constraints.txt", "docs/pypi.md", "hpo_lib/trial/__init__.py"])
def test_dockerignore_sends_what_the_dockerfile_copies(path):
    assert not dockerignored(path)


@pytest.mark.parametrize("dockerfile, extra", [(DOCKERFILE, set()),
                                               (SUGGESTION_DOCKERFILE, {"trial_image/suggestion-requirements.txt"})],
                         ids=["trial", "suggestion"])
def test_dockerfile_copies_only_the_package_and_its_pins(dockerfile, extra):
    sources = {src for keyword, args in instructions(dockerfile) if keyword == "COPY"
               for src in shlex.split(args)[:-1]}
    # docs/pypi.md: the package's long description (pyproject.toml's readme), which pip needs to build it
    assert sources == {"pyproject.toml", "constraints.txt", "docs/pypi.md", "LICENSE", "hpo_lib/"} | extra
    # and the build context sends each of them
    assert not [src for src in sources if dockerignored(src.rstrip("/") + ("/trial.py" if src.endswith("/") else ""))]


def test_suggestion_image_installs_the_service_without_torch():
    runs = " ".join(args for keyword, args in instructions(SUGGESTION_DOCKERFILE) if keyword == "RUN")
    # the project without its dependencies (torch is one), then only the service's, pinned; Katib's messages too
    assert "pip install --no-cache-dir --no-deps ." in runs
    assert "-c constraints.txt -r suggestion-requirements.txt" in runs
    assert "--no-deps -c constraints.txt kubeflow-katib" in runs and "torch is installed" in runs
    steps = instructions(SUGGESTION_DOCKERFILE)
    assert ("ENTRYPOINT", '["hpo", "katib", "suggestion-service"]') in steps
    # the default tag is the one the katib-config overlay registers
    from hpo_lib.katib import manifests

    assert build_sh("suggestion-image-name") == f"{manifests.SUGGESTION_IMAGE}:{manifests.IMAGE_TAG}"


def test_dockerignore_beside_the_dockerfile_matches_the_root_one():
    # docker reads only the root file for a root context; the copy in trial_image/ must not drift from it
    assert (ROOT / "trial_image" / ".dockerignore").read_text() == DOCKERIGNORE.read_text()
