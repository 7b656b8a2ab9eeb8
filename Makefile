# Calyx: the two entry points are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.calyx-installed

.PHONY: setup demo test test-unit test-lab lint clean bench

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m calyxlab.demo

test: $(STAMP)
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(VENV)/bin/pytest -p no:cacheprovider -m "not lab and not uml" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	-$(VENV)/bin/calyx-lab destroy --all 2>/dev/null
	rm -rf $(VENV) .tools
