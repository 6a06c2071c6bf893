# The two commands a user needs: `make run` (the main job, locally) and `make test`.
# Both create or reuse the project's own virtual environment in .venv. `make run` installs only
# what running needs (requirements.txt); `make test` adds the tests' tools (requirements-dev.txt).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FUNCTION_REQUIREMENTS := $(wildcard functions/*/requirements.txt)
RUN_STAMP := $(VENV)/.run-installed-$(shell cat requirements.txt functions/*/requirements.txt | cksum | cut -d' ' -f1)
STAMP     := $(VENV)/.installed-$(shell cat requirements-dev.txt functions/*/requirements.txt | cksum | cut -d' ' -f1)
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test bench clean venv

run: $(RUN_STAMP)
	$(BIN)/python -m localcloud demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

venv:
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt $(FUNCTION_REQUIREMENTS) pyproject.toml
	@$(MAKE) --no-print-directory venv
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	@rm -f $(VENV)/.run-installed-* && touch $@

# requirements-dev.txt includes requirements.txt, so a test venv can run too.
$(STAMP): requirements-dev.txt requirements.txt $(FUNCTION_REQUIREMENTS) pyproject.toml
	@$(MAKE) --no-print-directory venv
	$(PIP) -r requirements-dev.txt
	$(PIP) --no-deps -e .
	@rm -f $(VENV)/.installed-* $(VENV)/.run-installed-* && touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) .localcloud .pytest_cache .hypothesis
