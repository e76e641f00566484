# LLM Lab. The two commands a newcomer needs:
#   make book   build the site into _build/html (creates .venv on first use)
#   make test   run every test (unit, grading, notebooks, book build, browser)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
EXTRAS := book,grade,dev,bench
CHAPTERS := $(notdir $(wildcard solutions/ch*))
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup book lab test notebooks exercises bench vendor clean

help:
	@echo "make book       build the book into _build/html and print where to open it"
	@echo "make test       run every test (unit, grading, notebooks, book build, browser)"
	@echo "make lab        open JupyterLab on the exercises"
	@echo "make notebooks  re-execute the book notebooks and store their outputs"
	@echo "make exercises  regenerate exercises/ from solutions/ with nbgrader"
	@echo "make bench      run the benchmarks and write benchmarks/results.md"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . --all -W --keep-going
	@echo
	@echo "The book is built: open file://$(CURDIR)/_build/html/index.html"
	@echo "(or serve it: $(PY) -m http.server -d _build/html 8000)"

lab: $(STAMP)
	$(BIN)/jupyter lab exercises/

test: $(STAMP)
	@bash tools/run_tests.sh

notebooks: $(STAMP)
	$(PY) -m tools.execute_notebooks book

exercises: $(STAMP)
	@for ch in $(CHAPTERS); do \
		echo "== $$ch"; $(BIN)/nbgrader generate_assignment $$ch --force --log-level=WARN || exit 1; \
	done

bench: $(STAMP)
	$(PY) -m benchmarks.run

vendor:
	bash tools/vendor_js.sh

clean:
	rm -rf _build grading/autograded grading/feedback grading/submitted grading/gradebook.db
