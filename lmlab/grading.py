"""nbgrader preprocessors that make grading a class safe (wired in ``nbgrader_config.py``).

nbgrader 0.9 does the heavy lifting; these small subclasses close the gaps that matter for
a course with hidden tests and students who experiment:

* :class:`ScrubHiddenTests` (feedback): blank the hidden-test source *and* every trace of it
  in the stored outputs (tracebacks quote the cell's source around the failing line), plus
  the hidden seeds, while keeping the diagnosis.
* :class:`RepairCellMetadata` (autograde, replaces ``DeduplicateIds``): a duplicated cell
  (copied nbgrader metadata) or a renamed grade id no longer aborts the class or zeroes the
  student; the copy becomes an ordinary cell, a renamed id gets its gradebook id back.
* :class:`OverwriteCells` (autograde): a locked test cell that is exactly as released (the
  release has no hidden tests) is not reported as changed, so the checksum warning is a
  real tamper signal again.
* :class:`Execute` (autograde): a kernel that ignores the interrupt (student code that
  swallows ``KeyboardInterrupt``) is restarted after a grace period; cells graded before
  keep their scores, the rest of the notebook runs in the fresh kernel.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
from queue import Empty
from typing import Any

from jupyter_core.utils import ensure_async
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from nbgrader.preprocessors import Execute as NbgraderExecute
from nbgrader.preprocessors import OverwriteCells as NbgraderOverwriteCells
from traitlets import Float, List, Unicode

__all__ = ["ScrubHiddenTests", "RepairCellMetadata", "OverwriteCells", "Execute",
           "hidden_lines", "released_source"]

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SEED = re.compile(r"(seed\s*[=:]\s*)-?\d+", re.I)
_DISPLAY_PRIORITY = ["text/html", "application/pdf", "text/latex", "image/svg+xml",
                     "image/png", "image/jpeg", "text/plain"]


def hidden_lines(source: str) -> list[str]:
    """The non-blank lines between the hidden-test markers, stripped, markers included."""
    lines, inside = [], False
    for line in source.splitlines():
        if BEGIN in line:
            inside = True
        if inside and line.strip():
            lines.append(line.strip())
        if END in line:
            inside = False
    return lines


def released_source(source: str) -> str:
    """``source`` as ``nbgrader generate_assignment`` releases it: hidden region removed."""
    kept, inside = [], False
    for line in source.split("\n"):
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def _hidden_seeds(grade_id: str) -> list[str]:
    """The seeds that must not appear in feedback: the instructor's and the part's own."""
    seeds = []
    raw = os.environ.get("LMLAB_HIDDEN_SEED")
    if raw:
        seeds.append(raw.strip())
    try:  # importing the checks needs torch; feedback must not fail without it
        from lmlab.checks.core import hidden_seed

        seeds.append(str(hidden_seed(grade_id.removeprefix("test_"))))
    except Exception:  # noqa: BLE001
        pass
    return [s for s in seeds if len(s) >= 3]  # never blank out digits like "0" or "12"


class ScrubHiddenTests(ClearHiddenTests):
    """``ClearHiddenTests`` that also removes hidden-test text from the cell's outputs.

    IPython tracebacks quote the lines around the failing one, so a failing visible check
    shows the hidden lines below it. Every traceback frame and output line that quotes a
    hidden line is replaced by :attr:`placeholder`; seeds (``seed=N`` and the instructor's
    ``LMLAB_HIDDEN_SEED``) are masked. The diagnosis (the error message) stays.
    """

    placeholder = Unicode("[hidden test]").tag(config=True)
    # nbgrader's base class redeclares this trait without config=True, which makes
    # traitlets warn "Config option display_data_priority not recognized".
    display_data_priority = List(_DISPLAY_PRIORITY).tag(config=True)

    def preprocess_cell(self, cell: NotebookNode, resources: dict, cell_index: int):
        secret = hidden_lines(cell.source) if cell.cell_type == "code" else []
        if secret:
            seeds = _hidden_seeds(cell.metadata.get("nbgrader", {}).get("grade_id", ""))
            for output in cell.get("outputs", []):
                self._scrub_output(output, secret, seeds)
        return super().preprocess_cell(cell, resources, cell_index)

    def _scrub_text(self, text: str, secret: list[str], seeds: list[str]) -> str:
        lines = []
        for line in text.split("\n"):
            plain = _ANSI.sub("", line)
            if any(s in plain for s in secret):
                if not lines or lines[-1] != self.placeholder:
                    lines.append(self.placeholder)
                continue
            lines.append(line)
        text = _SEED.sub(r"\1<hidden>", "\n".join(lines))
        for seed in seeds:
            text = re.sub(rf"(?<!\d){re.escape(seed)}(?!\d)", "<hidden>", text)
        return text

    def _scrub_output(self, output: NotebookNode, secret: list[str], seeds: list[str]) -> None:
        if output.output_type == "error":
            frames = []
            for frame in output.get("traceback", []):
                plain = _ANSI.sub("", frame)
                if any(s in plain for s in secret):
                    # a frame quoting the test cell: keep only its header line
                    frame = _ANSI.sub("", frame.split("\n", 1)[0]) + f"\n{self.placeholder}"
                frames.append(self._scrub_text(frame, secret, seeds))
            output.traceback = frames
            output.evalue = self._scrub_text(output.get("evalue", ""), secret, seeds)
        elif output.output_type == "stream":
            output.text = self._scrub_text(output.text, secret, seeds)
        elif "data" in output:
            for mime, value in output.data.items():
                if isinstance(value, str) and mime.startswith("text/"):
                    output.data[mime] = self._scrub_text(value, secret, seeds)


class RepairCellMetadata(NbGraderPreprocessor):
    """Repair what students do to nbgrader metadata by accident, before nbgrader reads it.

    * Duplicated cells (JupyterLab copies metadata with the cell): the last copy keeps the
      id, as in nbgrader's ``DeduplicateIds``; earlier copies lose their nbgrader metadata
      entirely (nbgrader leaves an empty dict, which its validator reads as "schema version
      0" and aborts the whole class with "old version of the nbgrader metadata format").
    * A grade id the gradebook does not know (renamed): matched back to a missing gradebook
      cell of the same kind (test/solution/locked), by source similarity, else by order;
      with no match the cell becomes ordinary. nbgrader would drop the id and then refuse
      the notebook ("metadata may be corrupted").
    """

    def preprocess(self, nb: NotebookNode, resources: dict):
        self._deduplicate(nb)
        nbgrader = resources.get("nbgrader", {})
        if {"db_url", "notebook", "assignment"} <= nbgrader.keys():
            with Gradebook(nbgrader["db_url"]) as gb:
                try:
                    source = gb.find_notebook(nbgrader["notebook"], nbgrader["assignment"])
                except MissingEntry:
                    return nb, resources
                known = {c.name: (c.cell_type, c.locked, c.source) for c in source.source_cells}
                kinds = {c.name: "grade" for c in source.grade_cells}
                kinds.update({c.name: "solution" for c in source.solution_cells})
            self._rename_unknown(nb, known, kinds)
        return nb, resources

    def _deduplicate(self, nb: NotebookNode) -> None:
        seen: set[str] = set()
        for cell in reversed(nb.cells):
            meta = cell.metadata.get("nbgrader")
            if not meta or not (utils.is_grade(cell) or utils.is_solution(cell) or utils.is_locked(cell)):
                continue
            grade_id = meta.get("grade_id")
            if grade_id in seen:
                self.log.warning("Cell with id %r appears more than once: graded the last one", grade_id)
                del cell.metadata["nbgrader"]
            else:
                seen.add(grade_id)

    def _rename_unknown(self, nb: NotebookNode, known: dict, kinds: dict) -> None:
        present = {c.metadata["nbgrader"].get("grade_id") for c in nb.cells if "nbgrader" in c.metadata}
        missing = [name for name in known if name not in present]
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader")
            if not meta or meta.get("grade_id") in known:
                continue
            if not (meta.get("grade") or meta.get("solution") or meta.get("locked")):
                continue
            kind = "grade" if meta.get("grade") else "solution" if meta.get("solution") else "locked"
            candidates = [m for m in missing if kinds.get(m, "locked") == kind
                          and known[m][0] == cell.cell_type]
            match = self._best_match(cell.source, candidates, known)
            if match is None:
                self.log.warning("Cell id %r is not in the gradebook: graded as an ordinary cell",
                                 meta.get("grade_id"))
                del cell.metadata["nbgrader"]
                continue
            self.log.warning("Cell id %r is not in the gradebook: restored as %r",
                             meta.get("grade_id"), match)
            meta["grade_id"] = match
            missing.remove(match)

    @staticmethod
    def _best_match(source: str, candidates: list[str], known: dict) -> str | None:
        if not candidates:
            return None
        scores = [difflib.SequenceMatcher(None, released_source(known[c][2]), source).ratio()
                  for c in candidates]
        best = max(range(len(candidates)), key=lambda i: scores[i])
        return candidates[best] if scores[best] >= 0.5 or len(candidates) == 1 else candidates[0]


class OverwriteCells(NbgraderOverwriteCells):
    """nbgrader's ``OverwriteCells``, reading an untouched released test cell as unchanged.

    The gradebook stores each locked cell with its hidden tests (and their checksum); the
    release strips them. Comparing the two made every untouched submission report
    "Attribute 'checksum' ... has changed". A cell equal to its *released* form gets the
    gradebook source back silently; any other change is reported as before.
    """

    def preprocess_cell(self, cell: NotebookNode, resources: dict, cell_index: int):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and utils.is_locked(cell):
            try:
                stored = self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
            except MissingEntry:
                stored = None
            if stored is not None and stored.source != cell.source \
                    and released_source(stored.source) == cell.source:
                cell.source = stored.source
        return super().preprocess_cell(cell, resources, cell_index)


class Execute(NbgraderExecute):
    """nbgrader's ``Execute``, surviving a kernel that ignores the interrupt.

    On a cell timeout nbclient interrupts the kernel; code that catches
    ``KeyboardInterrupt`` in a loop keeps it busy, and nbgrader then drops the whole
    notebook. Here, when the interrupted cell has not finished after
    :attr:`interrupt_grace` seconds, the kernel is restarted: the cell gets the timeout
    error, earlier cells keep their outputs, later cells run in the fresh kernel.
    """

    interrupt_grace = Float(5.0, help="Seconds to wait for an interrupted cell to stop.").tag(config=True)

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None) -> Any:
        reply = await super()._async_handle_timeout(timeout, cell)
        if not self.interrupt_on_timeout:
            return reply
        try:
            await ensure_async(self.kc.shell_channel.get_msg(timeout=self.interrupt_grace))
        except (Empty, asyncio.TimeoutError):
            self.log.error("The kernel ignored the interrupt (the code catches KeyboardInterrupt): "
                           "restarting it; the cells after this one run in a fresh kernel")
            await ensure_async(self.km.restart_kernel(now=True))
            self.raise_on_iopub_timeout = False  # the old cell's output will never finish
            await self._kernel_info_round_trip()
        return reply

    async def _kernel_info_round_trip(self) -> None:
        """Wait until the restarted kernel answers on the shell channel. (The client's
        ``wait_for_ready`` would also read iopub, which nbclient is still reading.)"""
        msg_id = self.kc.kernel_info()
        while True:
            msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=self.startup_timeout))
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        await asyncio.sleep(0.5)  # let the iopub subscription reconnect
