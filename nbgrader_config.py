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

# Feedback HTML would otherwise show the hidden tests' source (a known nbgrader issue):
# clear the hidden-test regions before rendering; their results stay visible.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
