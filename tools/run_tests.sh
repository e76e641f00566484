#!/usr/bin/env bash
# make test: every stage in turn, each timed; stops at the first failing stage.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONHASHSEED=0 MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1
export LMLAB_CACHE="${LMLAB_CACHE:-$PWD/.lmlab-cache}"
# One thread per process: the stages run two processes on two cores (xdist), and OpenMP
# threads that outnumber cores spin-wait and slow everything down many times. Stored
# notebook outputs are made with one thread too (tools/execute_notebooks.py), so results
# that depend on float summation order reproduce exactly.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
JOBS="${JOBS:-2}"
declare -a SUMMARY=()
total_start=$(date +%s)

stage() {  # stage NAME COMMAND...
  local name=$1; shift
  echo; echo "=== [$name] $*"
  local start=$(date +%s)
  "$@"; local rc=$?
  local secs=$(( $(date +%s) - start ))
  SUMMARY+=("$(printf '%-10s %5ss  %s' "$name" "$secs" "$([ $rc -eq 0 ] && echo ok || echo FAILED)")")
  if [ $rc -ne 0 ]; then
    echo "=== [$name] FAILED after ${secs}s"; report; exit $rc
  fi
  echo "=== [$name] ok in ${secs}s"
}

report() {
  echo; echo "=== stage times"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "  total      $(( $(date +%s) - total_start ))s"
}

browser_ready() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser tests"
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) && return 0
  fi
  return 1
}

PYTEST="$BIN/python -m pytest -p no:cacheprovider -q"
stage lint    $BIN/ruff check lmlab tests tools benchmarks
# Train every model the book loads from the cache once, before tests and notebooks need
# them in parallel (two processes; a warm cache makes this stage take seconds).
stage cache   $BIN/python -m tools.warm_cache
stage unit    $PYTEST tests/unit -n "$JOBS" --timeout 600
stage grading $PYTEST tests/grading -n "$JOBS" --timeout 1800
stage nbval   $PYTEST -p tests.notebooks.nbval_tolerance --nbval book --nbval-sanitize-with tests/notebooks/sanitize.cfg -n "$JOBS" --dist loadfile --timeout 600
stage nbval-solutions $PYTEST --nbval-lax solutions -n "$JOBS" --dist loadfile --timeout 600
stage book    $BIN/jupyter-book build . --all -W --keep-going -q
# the Chinese edition: every page translated (>= 98 %, nothing fuzzy, catalogues in step
# with the English pages), formulas and code unchanged, then its site into _build/html/zh
stage i18n    $BIN/python -m tools.i18n verify
stage book-zh $BIN/python -m tools.i18n build
if browser_ready; then
  stage browser $PYTEST tests/browser --timeout 600
elif [ "${CI:-}" = true ]; then
  echo "chromium is missing: .ci/run installs it"; exit 1
else
  echo "SKIPPED browser tests: install Debian's chromium (/usr/bin/chromium) to run them"
fi
report
