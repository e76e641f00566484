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

.PHONY: help setup book book-zh i18n i18n-status lab grade release test notebooks exercises bench mutants vendor clean

help:
	@echo "make book       build the book, English and Chinese, and print where to open each"
	@echo "make test       run every test (unit, grading, notebooks, book build, browser)"
	@echo "make lab        copy new exercises into work/ (never overwriting) and open JupyterLab there"
	@echo "make grade      instructor: JupyterLab at the repo root with nbgrader's formgrader"
	@echo "make release    instructor: write a student copy of the course without solutions/"
	@echo "make notebooks  re-execute the book notebooks and store their outputs"
	@echo "make exercises  regenerate exercises/ from solutions/ with nbgrader"
	@echo "make bench      run the benchmarks and write benchmarks/results.md"
	@echo "make mutants    mutation-test the numeric core and write tests/mutants.md"
	@echo "make i18n       after an English change: bring the Chinese catalogues (locales/) up to date"
	@echo "make i18n-status  per page: share of messages translated into Chinese, fuzzy ones"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . --all -W --keep-going
	$(PY) -m tools.i18n build
	@echo
	@echo "The book is built, in two editions:"
	@echo "  English: file://$(CURDIR)/_build/html/index.html"
	@echo "  中文版:  file://$(CURDIR)/_build/html/zh/index.html"
	@echo "(or serve both: $(PY) -m http.server -d _build/html 8000, then /index.html and /zh/index.html)"

# the Chinese edition alone, into _build/html/zh
book-zh: $(STAMP)
	$(PY) -m tools.i18n build

i18n: $(STAMP)
	$(PY) -m tools.i18n extract

i18n-status: $(STAMP)
	$(PY) -m tools.i18n status --fresh

lab: $(STAMP)
	$(PY) -m tools.student_lab

GRADE_PORT ?= 8890
grade: $(STAMP)
	@echo "formgrader: http://localhost:$(GRADE_PORT)/formgrader (the token is in the URL printed below)"
	JUPYTER_PATH="$(CURDIR)/tools/jupyter-data$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
		$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" --port=$(GRADE_PORT) \
		--ServerApp.default_url=/formgrader $$([ "$$(id -u)" = 0 ] && echo --allow-root)

RELEASE ?= build/student-release
release:
	@rm -rf "$(RELEASE)" && mkdir -p "$(RELEASE)"
	@git ls-files -z | grep -zv -e '^solutions/' -e '^tests/grading/' | xargs -0 cp --parents -t "$(RELEASE)"
	@echo "student release (tracked files without solutions/ and tests/grading/): $(RELEASE)"

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

# Mutation testing of the numeric core (about an hour on 2 cores); writes tests/mutants.md
mutants: $(STAMP)
	$(PY) -m tools.mutants

vendor:
	bash tools/vendor_js.sh

clean:
	rm -rf _build grading/autograded grading/feedback grading/submitted grading/gradebook.db
