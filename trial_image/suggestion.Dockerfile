# Katib suggestion service image for algorithm katib-hpo-multiobjective: `hpo katib suggestion-service`, no torch.
# Build from the repo root: trial_image/build.sh suggestion-image (make suggestion-image), or
#   docker build -f trial_image/suggestion.Dockerfile .
#
# The project goes in with --no-deps, then only what the service imports (trial_image/suggestion-requirements.txt,
# pinned by constraints.txt; tests/katib/test_service_image_deps.py keeps that list complete), then Katib's
# generated v1beta1 messages from the kubeflow-katib wheel, also --no-deps (it pins protobuf<5, which the service
# never imports). No torch, CUDA, MLflow or KFP: a few hundred MB instead of the trial image's several GB.
#
# BASE_IMAGE default: the Debian bookworm base `make image-base` makes (Python 3.11 venv at /opt/venv first on PATH),
# the trial image's base. Your own: --build-arg BASE_IMAGE=<image> with python3 PYTHON_MINOR, pip, sh and useradd.
ARG BASE_IMAGE=localhost/katib-hpo/trial-base:py3.11-bookworm
# checkov:skip=CKV_DOCKER_7:checkov does not expand ARG; BASE_IMAGE defaults to build.sh's own base (tests check)
FROM ${BASE_IMAGE}
ARG PYTHON_MINOR=3.11

LABEL org.opencontainers.image.title="katib-hpo-suggestion" \
      org.opencontainers.image.description="Katib suggestion service for katib-hpo-multiobjective (Optuna multi-objective TPE, NSGA-II)" \
      org.opencontainers.image.source="https://github.com/katib-hpo/katib-hpo" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/hpo/src
COPY pyproject.toml constraints.txt LICENSE ./
COPY docs/pypi.md docs/
COPY trial_image/suggestion-requirements.txt ./
COPY hpo_lib/ hpo_lib/

# The build fails unless python3 is PYTHON_MINOR, the service's messages load and torch is absent.
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
        sys.exit(v != '${PYTHON_MINOR}' and f'the base image runs python3 {v}, not PYTHON_MINOR=${PYTHON_MINOR}')" \
    && python3 -m pip install --no-cache-dir --no-deps . \
    && python3 -m pip install --no-cache-dir -c constraints.txt -r suggestion-requirements.txt \
    && python3 -m pip install --no-cache-dir --no-deps -c constraints.txt kubeflow-katib \
    && python3 -c "import importlib.util, sys, hpo_lib.katib.service as s; s.api(); \
        sys.exit(importlib.util.find_spec('torch') is not None and 'torch is installed: the service image has none')" \
    && rm -rf build ./*.egg-info

# Non-root numeric user with group 0 (an arbitrary OpenShift UID in group 0 works too); the service writes nothing.
RUN useradd --no-log-init --uid 10001 --gid 0 --home-dir /home/hpo --create-home --shell /bin/sh hpo

ENV HOME=/home/hpo
WORKDIR /home/hpo
USER 10001
EXPOSE 6789

# Katib's suggestion Deployment probes the gRPC health service (manager.v1beta1.Suggestion); no Docker HEALTHCHECK.
HEALTHCHECK NONE

ENTRYPOINT ["hpo", "katib", "suggestion-service"]
CMD ["--port=6789"]
