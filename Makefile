# The two commands of the README. Both create the virtual environment on first
# use and install the project with constraints.txt (torch pinned to the CPU
# build these machines carry on disk).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= audit-out

.PHONY: audit test setup clean screenshot

# --force: each `make audit` replaces the previous default run in $(OUT)/default (never other files).
audit: setup
	@echo "make audit: the embedded default spec (5 scenarios, attacks from every seat; about 3 minutes on 2 cores) -> $(OUT)/default"
	@$(BIN)/fedsecure audit --out $(OUT)/default --force

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# The README's picture of the HTML summary: the default audit's report.html, photographed by the HTML
# test's headless Chromium (tests/browser.py).
# A fresh default audit each time, so the picture is this version's spec, code and template.
screenshot: audit
	@$(BIN)/python -m tests.browser $(OUT)/default/report.html docs/report-summary.png

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "make setup: installing fedsecure and its pinned dependencies into $(VENV) (once; a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,flower]'
	@touch $@

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
