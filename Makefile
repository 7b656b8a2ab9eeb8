# Calyx: the two entry points are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.calyx-installed

.PHONY: setup tools demo test test-unit test-lab lint clean bench faults

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	@touch $(STAMP)

setup: $(STAMP)

# etcd and the Kubernetes control plane, built from their Go modules into .tools/ (once per version).
tools: $(STAMP)
	bash scripts/build-kube.sh

demo: tools
	$(PY) -m calyxlab.demo

test: tools
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: tools
	$(VENV)/bin/pytest -p no:cacheprovider -m "not lab and not uml" $(PYTEST_ARGS)

# Every case of the reliability suite, the long ones too; the table goes to tests/faults/RESULTS.md.
faults: tools
	$(VENV)/bin/pytest -p no:cacheprovider -m fault --faults=full $(PYTEST_ARGS)

bench: tools
	$(PY) -m bench.run_all

clean:
	-$(VENV)/bin/calyx-lab destroy --all 2>/dev/null
	rm -rf $(VENV) .tools
