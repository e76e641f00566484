"""nbgrader configuration for LLM Lab: run every nbgrader command from the repo root.

    nbgrader generate_assignment ch01_chips --force   # solutions/ -> exercises/
    nbgrader autograde ch01_chips                     # grading/submitted -> grading/autograded
    nbgrader generate_feedback ch01_chips             # -> grading/feedback
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(HERE, "grading"), exist_ok=True)  # git-ignored: absent in a fresh clone

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.root = HERE
c.CourseDirectory.course_id = "llmlab"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = os.path.join("grading", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("grading", "autograded")
c.CourseDirectory.feedback_directory = os.path.join("grading", "feedback")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "grading", "gradebook.db")
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "*.pt"]

# A submission that loops forever is stopped after this many seconds per cell, and the
# next submission is graded as usual.
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.Autograde.create_student = True

# lmlab.grading closes nbgrader's gaps (see its docstring): a duplicated or renamed cell
# no longer stops the class, an untouched release copy raises no checksum warning, a kernel
# that ignores the interrupt is restarted, and feedback shows no hidden-test text or seed.
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from lmlab.grading import Execute, OverwriteCells, RepairCellMetadata, ScrubHiddenTests  # noqa: E402

c.Autograde.sanitize_preprocessors = [ClearOutput, RepairCellMetadata, OverwriteKernelspec,
                                      OverwriteCells, CheckCellMetadata]
c.Autograde.autograde_preprocessors = [Execute, IgnorePattern, ClearMetadataPreprocessor,
                                       LimitOutput, SaveAutoGrades, AssignLatePenalties,
                                       CheckCellMetadata]
c.GenerateFeedback.preprocessors = [GetGrades, ScrubHiddenTests, CSSHTMLHeaderPreprocessor]

# nbgrader scores a test cell 0 when it writes to stderr. A warning raised by correct student
# code (a UserWarning from torch, a DeprecationWarning) must not cost the part: the checks
# report the warnings they see as notes; here the grading (and Validate) kernels print any
# other warning, e.g. from a hidden assert that calls the student's function, to stdout.
_WARNINGS_TO_STDOUT = (
    "__import__('warnings').showwarning = lambda message, category, *args, **kwargs: "
    "print(f'note: {category.__name__}: {message}', file=__import__('sys').stdout)"
)
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:",
                             f"--IPKernelApp.exec_lines={_WARNINGS_TO_STDOUT}"]

# The hidden tests draw their cases from LMLAB_HIDDEN_SEED (default 2024, see
# lmlab.checks.core.hidden_seed). Set it in the shell that runs `nbgrader autograde` (the
# grading kernels inherit the environment), and keep it secret and the same for
# `nbgrader generate_feedback`, which masks it in the feedback.

# `nbgrader export` writes the grades next to the gradebook, not at the repository root.
c.CsvExportPlugin.to = os.path.join(HERE, "grading", "grades.csv")
