# The two commands a user needs: `make run` (the main job, locally) and `make test`.
# Both create or reuse the project's own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements-dev.txt functions/*/requirements.txt | cksum | cut -d' ' -f1)

.PHONY: run test bench clean

run: $(STAMP)
	@echo 'Serving the range function on http://127.0.0.1:8080 (Ctrl-C stops it). Try:'
	@echo "  curl -s -X POST localhost:8080 -H 'Content-Type: application/json' -d '{\"start\":\"2022-02-15T00:00:00Z\",\"stop\":\"2022-02-18T00:00:00Z\",\"step\":\"0 1 * * *\"}'"
	$(BIN)/functions-framework --target expand_range --source functions/range/main.py --host 127.0.0.1 --port 8080

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

$(STAMP): requirements-dev.txt functions/range/requirements.txt functions/proxy/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) .localcloud .pytest_cache .hypothesis
