# The two commands a user needs: `make run` (the main job, locally) and `make test`.
# Both create or reuse the project's own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements-dev.txt functions/*/requirements.txt | cksum | cut -d' ' -f1)

.PHONY: run test bench clean

run: $(STAMP)
	$(BIN)/python -m localcloud demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

$(STAMP): requirements-dev.txt functions/range/requirements.txt functions/proxy/requirements.txt functions/audit/requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) .localcloud .pytest_cache .hypothesis
