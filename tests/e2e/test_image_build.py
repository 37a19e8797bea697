"""The trial image, built for real and run the way the Katib trial pods run it, in two flavours of one Dockerfile.

* ``cpu`` (always): `trial_image/build.sh image --base stand-in` builds trial_image/Dockerfile with buildah (chroot
  isolation, vfs storage: no daemon) on the CPU stand-in, the Debian base (debootstrap bookworm, Python 3.11 venv)
  plus the local CPU torch wheel, made once and cached under ~/.cache/katib-hpo/containers.
* ``cuda`` (opt-in, HPO_TEST_CUDA_IMAGE=1; `make image-check` runs `make image` first): the GPU image `make image`
  built, constraints.txt's torch pin as PyPI's CUDA build with its nvidia-* runtime wheels (several GB) on the same
  Debian base; the test takes it as built, never rebuilds it. Without the opt-in, CI checks that image's dependency
  resolution instead (tests/e2e/test_image_versions.py).

Inside each image, as the manifests' non-root user, with the data folder mounted read-only like the PVC and no
network at all:

* each Experiment's exact trial `command` + `args`, sample values substituted for every ``${trialParameters.*}``,
  runs 2 epochs on the bundled sample data on the CPU, and Katib's StdOut filter reads the objective and every
  additional metric;
* the image holds what the local engine runs: torch's release, the Python minor, every pinned dependency;
* cuda only: torch is a CUDA build whose runtime libraries load, and `torch.cuda.is_available()` is simply False;
* the hardening holds: non-zero uid, the data mount and the installed application are not writable, the image's
  environment, labels and history hold no credentials;
* `hpo --help` and the data-prep Job's `hpo data fetch` command (with `--help`) run.

Those are slow (the cpu image: about 6 minutes on a loaded 2-core machine, a pip install of every pinned dependency),
so marked e2e and image; each image is built once per run for every test and xdist worker (tests/e2e/conftest.py),
and not again on this machine while what its build reads (Dockerfile, context, base image, build arguments, pip
settings) is unchanged: build.sh keeps that digest on the image. The bad-input tests at the end take seconds: no
engine installed, a base image that is missing, a failing Dockerfile step. Everything with buildah needs root,
buildah and debootstrap (`.ci/run` installs them) and skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hpo_lib.katib import contract, experiment
from tests.e2e.conftest import BUILD, CUDA_OPT_IN, ROOT, buildah, needs_buildah

MANIFESTS = ROOT / "manifests"
EXPERIMENTS = sorted(MANIFESTS.glob("*-experiment.yaml"))
DATA_PREP_JOB = MANIFESTS / "cluster" / "data-prep-job.yaml"
# cpu: built here on the CPU stand-in; cuda: the image `make image` builds (its tag, its base), taken as it is
FLAVOURS = ["cpu", "cuda"]
# what the engine's `--set` overrides for a local run: offline sample data, 2 epochs; everything else is the manifest's
OVERRIDES = {"data": "sample:sp500", "epochs": "2"}
# sample parameter values: a list's first choice and a range's lower bound, except the largest batch (fewest steps)
SAMPLE_CHOICES = {"batch-size": "128"}
# compute capability of each GPU the README and trial_image/README.md promise (Turing to Blackwell; not Volta)
PROMISED_GPUS = {"T4": (7, 5), "A100": (8, 0), "A10": (8, 6), "L4/L40S": (8, 9), "H100/H200": (9, 0),
                 "B200": (10, 0), "RTX PRO 6000": (12, 0)}
CREDENTIAL = re.compile(r"key|token|secret|passw(or)?d|credential", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request) -> str:
    if request.param == "cuda" and os.environ.get(CUDA_OPT_IN) != "1":
        pytest.skip(f"the GPU image downloads several GB of CUDA wheels: {CUDA_OPT_IN}=1 (make image-check) builds "
                    "and checks it; CI checks its resolution (tests/e2e/test_image_versions.py)")
    return request.param


@pytest.fixture(scope="module")
def image(flavour, trial_image) -> str:
    return trial_image(flavour)


@pytest.fixture(scope="module")
def container(image, image_container) -> str:
    return image_container(image)


@pytest.fixture
def mounts(tmp_path):
    """The pod's volumes: a read-only data folder (the PVC) and a writable scratch folder at /tmp (the emptyDir)."""
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    (data / "prices.txt").write_text("the data-prep Job's cache\n")
    data.chmod(0o777)  # only the read-only mount, not permissions, may keep the trial from writing here
    scratch.chmod(0o1777)
    return data, scratch


def run_in(container: str, argv: list[str], mounts: tuple[Path, Path], *, user: str | None = "10001:10001",
           env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``argv`` inside the container, in a network namespace of its own with no interface up: no network at all."""
    data, scratch = mounts
    options = ["-v", f"{data}:/data:ro", "-v", f"{scratch}:/tmp"]
    options += ["--user", user] if user else []
    for name, value in (env or {}).items():
        options += ["--env", f"{name}={value}"]
    return subprocess.run(["unshare", "--net", "--", str(BUILD), "buildah", "run", *options, container, "--", *argv],
                          capture_output=True, text=True, timeout=timeout)


def trial_command(path: Path) -> tuple[list[str], dict[str, str], list[str], str]:
    """The manifest's exact command + args with sample values substituted; its env, metric names and uid:gid."""
    doc = yaml.safe_load(path.read_text())
    assignments = {}
    for param in doc["spec"]["parameters"]:
        space = param["feasibleSpace"]
        choices = space.get("list") or [space["min"]]
        value = SAMPLE_CHOICES.get(param["name"], choices[0])
        assert value in choices or "list" not in space, (param["name"], value)
        assignments[param["name"]] = value
    command = experiment.trial_command(doc, assignments, OVERRIDES)  # what `hpo tune --set name=value` runs
    argv, env = command.argv, command.env
    assert "${" not in " ".join(argv)
    assert len(argv) == len(experiment.trial_command(doc, assignments).argv), "an override was not in the manifest"
    template = doc["spec"]["trialTemplate"]
    pod = template["trialSpec"]["spec"]["template"]["spec"]
    container = experiment.primary_container(template["trialSpec"], template["primaryContainerName"])
    names = experiment.collected_metrics(doc)
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    return argv, env, names, f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_manifest_trial_command_runs_in_the_image(container, mounts, path):
    argv, env, names, user = trial_command(path)
    proc = run_in(container, argv, mounts, user=user, env=env)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    epoch_lines = [line for line in proc.stdout.splitlines() if " epoch=" in line]
    assert len(epoch_lines) == 2, proc.stdout[-3000:]
    filters = experiment.metrics_filters(yaml.safe_load(path.read_text()))  # its filter, or Katib's default
    for line in epoch_lines:
        stamp, values = contract.parse_metrics_line(line, names, filters)
        # Katib's StdOut collector reads the objective and every additional metric, with a real timestamp
        assert set(values) == set(names) and all(values.values()), line
        assert stamp != contract.ZERO_TIME
    # the trial wrote its outputs to the scratch volume (HPO_OUTPUT_DIR=/tmp/outputs) and nothing to the data mount
    data, scratch = mounts
    records = [json.loads(p.read_text()) for p in (scratch / "outputs").rglob("metrics.json")]
    assert records, "no trial outputs under /tmp/outputs"
    assert sorted(p.name for p in data.iterdir()) == ["prices.txt"]
    # no GPU here: the CUDA image's `--device=auto` trial ran on the CPU, as the cpu image's did
    assert {record["device"] for record in records} == {"cpu"}


PROBE = r"""
import json, os, sys, sysconfig, hpo_lib
def writable(folder):
    try:
        with open(os.path.join(folder, ".probe"), "w") as handle:
            handle.write("x")
    except OSError as exc:
        return f"refused: {exc.strerror}"
    return "WRITABLE"
package = os.path.dirname(hpo_lib.__file__)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "python": sys.version.split()[0],
    "package": package,
    "writes": {folder: writable(folder) for folder in
               ["/data", package, sysconfig.get_paths()["purelib"], "/opt/hpo/src", "/usr/local/bin",
                os.path.dirname(sys.executable), "/tmp"]},
}))
"""


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
@pytest.mark.parametrize("user", [None, "10001:10001"], ids=["image-user", "manifest-user"])
def test_image_runs_unprivileged_and_cannot_write_the_data_or_the_app(container, mounts, user):
    proc = run_in(container, ["python3", "-c", PROBE], mounts, user=user)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    from tests.e2e.test_image_versions import image_python_minor

    assert probe["uid"] == 10001 and probe["uid"] != 0
    assert probe["python"].startswith(image_python_minor() + ".")
    writes = probe.pop("writes")
    assert writes.pop("/tmp") == "WRITABLE"  # the scratch volume, the one place a trial writes
    assert writes.pop("/data").startswith("refused: Read-only file system"), probe
    # the installed application (package, site-packages, sources, interpreter and scripts) belongs to root
    assert all(result.startswith("refused: Permission denied") for result in writes.values()), writes


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
def test_image_config_holds_no_credentials(image):
    info = json.loads(buildah("inspect", "--type", "image", image).stdout)
    config = info["OCIv1"]["config"]
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    labels = config.get("Labels") or {}
    assert env and labels
    assert config.get("User") == "10001" and config.get("Entrypoint") == ["hpo"]
    assert [name for name in [*env, *labels] if CREDENTIAL.search(name)] == []
    history = [step.get("created_by", "") for step in info["OCIv1"].get("history", [])]
    texts = [*env.values(), *labels.values(), *history]
    # no user:password@ URL anywhere, and no build secret (the CA bundle or pip config mounted at build time)
    assert [text for text in texts if URL_WITH_PASSWORD.search(text)] == []
    assert not any("pip.conf" in text or "ca.crt" in text for text in texts)


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
def test_cli_help_and_data_prep_command_run_in_the_image(container, mounts):
    proc = run_in(container, ["hpo", "--help"], mounts)
    assert proc.returncode == 0 and "trial" in proc.stdout, proc.stderr[-2000:]
    job = yaml.safe_load(DATA_PREP_JOB.read_text())
    fetch = job["spec"]["template"]["spec"]["containers"][0]
    assert fetch["command"][:3] == ["hpo", "data", "fetch"]
    env = {e["name"]: str(e["value"]) for e in fetch.get("env", []) if "value" in e}
    proc = run_in(container, [*fetch["command"], *fetch.get("args", []), "--help"], mounts, env=env)
    assert proc.returncode == 0 and "--cache-dir" in proc.stdout, proc.stderr[-2000:]


DISTRIBUTIONS = r"""
import json, platform, sys
from importlib import metadata
print(json.dumps({
    "installed": {dist.metadata["Name"]: dist.version for dist in metadata.distributions()},
    "requires": {dist.metadata["Name"]: dist.requires or [] for dist in metadata.distributions()},
    "environment": {"python_version": "%d.%d" % sys.version_info[:2], "python_full_version": platform.python_version(),
                    "platform_system": platform.system(), "platform_machine": platform.machine(),
                    "sys_platform": sys.platform, "os_name": "posix", "implementation_name": sys.implementation.name,
                    "platform_python_implementation": platform.python_implementation()},
}))
"""


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
def test_image_holds_what_the_local_engine_runs(container, mounts, flavour):
    from packaging.utils import canonicalize_name

    from tests.e2e.test_image_versions import drift

    proc = run_in(container, ["python3", "-c", DISTRIBUTIONS], mounts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    installed = {canonicalize_name(name): version for name, version in found["installed"].items()}
    requires = {canonicalize_name(name): lines for name, lines in found["requires"].items()}
    # torch's release, the Python minor and every pinned package are .venv's; a cuda torch brings nvidia-* wheels
    assert drift(installed, requires, found["environment"], cuda=flavour == "cuda") == []


CUDA_PROBE = r"""
import ctypes, glob, json, os, warnings
import torch
site = os.path.dirname(os.path.dirname(torch.__file__))
libraries = {}
for pattern in ["libcudart.so.*", "libcublas.so.*", "libcublasLt.so.*", "libcudnn.so.*", "libnccl.so.*",
                "libnvrtc.so.*", "libcufft.so.*", "libcusparse.so.*", "libcusolver.so.*"]:
    for path in sorted(glob.glob(os.path.join(site, "nvidia", "**", pattern), recursive=True))[:1]:
        ctypes.CDLL(path)  # raises OSError when the library or one it needs is missing
        libraries[pattern] = os.path.relpath(path, site)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    available, count = torch.cuda.is_available(), torch.cuda.device_count()
print(json.dumps({
    "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
    "nccl": ".".join(map(str, torch.cuda.nccl.version())), "arch": torch._C._cuda_getArchFlags(),
    "libraries": libraries, "available": available, "count": count, "warnings": [str(w.message) for w in caught],
    "cpu_matmul": float((torch.ones(64, 64) @ torch.ones(64, 64))[0, 0]),
}))
"""


@pytest.mark.e2e
@pytest.mark.image
@needs_buildah
@pytest.mark.parametrize("flavour", ["cuda"], indirect=True)
def test_cuda_torch_loads_its_runtime_and_reports_no_gpu(container, mounts, flavour):
    proc = run_in(container, ["python3", "-c", CUDA_PROBE], mounts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    # PyPI's torch is a CUDA 13 build, and cuDNN and NCCL from its nvidia-* wheels are linked in
    assert probe["cuda"] and probe["cuda"].startswith("13."), probe
    assert probe["cudnn"] and probe["nccl"], probe
    # the runtime libraries the wheels ship load with ctypes (each with what it links against)
    assert {"libcudart.so.*", "libcublas.so.*", "libcudnn.so.*", "libnccl.so.*"} <= set(probe["libraries"]), probe
    # kernels for every GPU the README promises: a cubin of the same major and a minor no higher runs on it
    # (CUDA's binary compatibility), e.g. Ada's 8.9 (L4, L40S) runs the sm_86 kernels; the wheel ships no sm_89
    built = [tuple(int(d) for d in re.fullmatch(r"sm_(\d+?)(\d)a?", a).groups()) for a in probe["arch"].split()
             if a.startswith("sm_")]
    uncovered = [gpu for gpu, (major, minor) in PROMISED_GPUS.items()
                 if not any(m == major and n <= minor for m, n in built)]
    assert uncovered == [], f"no kernels for {uncovered} in {probe['arch']}"
    # no driver here: is_available() is simply False, with no error or warning, and the CPU still computes
    assert probe["available"] is False and probe["count"] == 0 and probe["warnings"] == [], probe
    assert probe["cpu_matmul"] == 64.0


# --- bad input: fast, no image is built ------------------------------------------------------------------------

def test_without_docker_or_buildah_make_image_says_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the script's tools but neither docker nor buildah
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env", "sed", "awk", "timeout", "realpath", "mkdir", "head"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run([str(bin_dir / "bash"), str(BUILD), "image"], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "neither docker nor buildah is installed" in proc.stderr
    assert "apt-get install -y --no-install-recommends buildah" in proc.stderr and "Docker" in proc.stderr


@needs_buildah
def test_a_missing_base_image_points_to_the_stand_in():
    proc = subprocess.run([str(BUILD), "image", "--base", "localhost/katib-hpo/no-such-base:0", "--tag",
                           "localhost/katib-hpo/trial:never"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HPO_IMAGE_ENGINE": "buildah"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "localhost/katib-hpo/no-such-base:0 is missing locally and could not be pulled" in proc.stderr
    assert "make image " in proc.stderr and "make image BASE_IMAGE=stand-in" in proc.stderr


@needs_buildah
def test_a_failed_build_names_the_failing_dockerfile_step():
    empty = "localhost/katib-hpo/empty-base:test"  # no shell, no python: the first RUN step fails
    if buildah("inspect", "--type", "image", empty, check=False).returncode != 0:
        container = buildah("from", "scratch").stdout.strip()
        buildah("commit", "--rm", container, empty)
    proc = subprocess.run([str(BUILD), "image", "--base", empty, "--tag", "localhost/katib-hpo/trial:never"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HPO_IMAGE_ENGINE": "buildah"})
    assert proc.returncode == 1
    assert re.search(r"the image build FAILED at Dockerfile step: STEP \d+/\d+: RUN python3 -c \"import sys",
                     proc.stderr), proc.stderr[-3000:]
    assert "full build log:" in proc.stderr
