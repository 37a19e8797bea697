# katib-hpo developer entry points. `make demo` runs the main job, `make test` runs the suite;
# both create .venv/ with pinned versions on first use.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo bench lock clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install: $(STAMP)  ## create .venv and install hpo_lib with pinned dependencies

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

test: $(STAMP)  ## run the whole suite, end-to-end tests included (what CI runs)
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -m 'not e2e'

demo: $(STAMP)  ## the main job: one LSTM trial on the bundled S&P 500 data
	$(VENV)/bin/hpo trial --model=lstm --data=sample:sp500 --epochs=15 --output-dir=local_outputs/demo

bench: $(STAMP)  ## run every benchmark under bench/
	$(PY) bench/trial_loop.py

lock: $(STAMP)  ## re-pin constraints.txt from the current .venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^torch==' | sort > constraints.body
	{ sed -n '1,4p' constraints.txt; cat constraints.body; } > constraints.txt.new
	mv constraints.txt.new constraints.txt; rm constraints.body

clean:  ## remove the venv and local outputs
	rm -rf $(VENV) local_outputs .pytest_cache
