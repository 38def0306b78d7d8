"""Assignments and their autograder: the library is the solution, the student copy is built from it.

Solutions are marked in the library's code by `# BEGIN SOLUTION <task>` / `# END SOLUTION` comments (so the
library runs as if they were not there); `build` writes a student copy where each marked region is a stub that
raises NotImplementedError, and `grade` scores a student's task files with the instructor's tests.

    tinydgl assignments build OUT [--assignment A1] [--task ID]   # the student copy
    tinydgl assignments submit [TREE] OUT.zip                     # the task files of TREE, to hand in
    tinydgl assignments grade [TREE|ZIP] [--source DIR] [--json PATH]  # the score table (TREE: default .)
    tinydgl assignments check                                     # markers, ids and tests are consistent
    tinydgl assignments gradescope OUT.zip [--source DIR]         # a Gradescope autograder (see `gradescope`)
    tinydgl assignments classroom OUT_DIR [--source DIR]          # a GitHub Classroom workflow (see `classroom`)

The markers, the stubs, leaks, grading, hidden tests, the files (one job each) and why the course is in the
wheel: docs/design/course.md.
"""

from .catalogue import ASSIGNMENTS, TASKS, TASKS_BY_ID, Assignment, Task, assignment_marker, marker_name, select_tasks
from .command import add_assignments_parser, run_command
from .exports import (
    AUTOGRADER_PACKAGES,
    CLASSROOM_WORKFLOW,
    DIGEST_COMMAND,
    autograde,
    classroom,
    gather_submission,
    gradescope,
    ignored_note,
    tree_digest,
)
from .grading import HIDDEN_FAILURE, format_table, grade, pick_task_files, read_submission, run_tests, score, submit
from .handouts import handout, index, notebook, student_readme
from .layout import (
    HIDDEN_TESTS,
    INDEPENDENT_TESTS,
    INSTRUCTOR_ONLY,
    MANIFEST,
    STUDENT_COPY,
    TASK_TESTS,
    AssignmentError,
    check_output,
    source_root,
    template,
)
from .leaks import SIGNIFICANT, TEXT_SUFFIXES, code_key, find_leaks, leaks_in, readable_text, solution_keys, solutions
from .markers import Region, check, enclosing_function, find_regions, find_task_tests, scan_markers, task_files
from .student_copy import build, pristine_course, stub
