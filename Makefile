# The two commands of the README. Both create the virtual environment on first
# use and install the project with constraints.txt (torch pinned to the CPU
# build these machines carry on disk).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= audit-out

.PHONY: audit test setup clean

audit: setup
	$(BIN)/fedsecure audit --out $(OUT)/default

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,flower]'
	touch $@

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
