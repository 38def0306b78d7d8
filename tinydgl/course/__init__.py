"""Assignments and their autograder: the library is the solution, the student copy is built from it.

Solutions are marked in the library's own code, around the lines a student is to write (here a made-up
task, a0-double; this docstring is in the student copy, so it shows no real solution):

    # BEGIN SOLUTION a0-double
    # hint: twice x, in x's dtype
    y = x + x
    # END SOLUTION

The markers are comments, so the library runs exactly as if they were not there. `build` copies what a
student needs (STUDENT_COPY: tinydgl/, tests/, lessons/, notebooks/ and the package's files, with a README of
its own) and replaces every marked region by

    # TODO a0-double (assignments/A0.md)
    raise NotImplementedError("a0-double: twice x, in x's dtype")

then writes a handout per assignment and a manifest. The `hint:` comment lines just after a BEGIN line become
the stub's message. A solution must not survive anywhere else in the copy (a docstring's example, a copy of
the code in another file or a lesson): `build` refuses, naming the file and line (see `find_leaks`). The
manifest's `task_files` are the files that hold the tasks: they are what a student hands in (`submit` zips
exactly those) and all that `grade` takes from a student (from a tree, or from any zip that holds them: a
zip of the whole folder too, as the Gradescope autograder does).

`grade` scores a student's work task by task with tests the student cannot touch: it builds a fresh student copy
from the instructor's checkout (`--source`, by default the checkout this tinydgl was imported from) in a
temporary folder, puts the student's task files over it (from a tree, or from a zip made by `submit`), and runs
that copy's task tests, which are the instructor's. Edits to a student's tests, conftest.py or pyproject.toml
change nothing, and neither does anything else outside the task files. The instructor's optional hidden
tests (HIDDEN_TESTS) are left out of the student copy and kept in the grading copy: a failing one is reported as
"a hidden test", without its name or message. (Run inside a student copy, whose
tinydgl has no solutions to build from, `grade` is a practice grade with that copy's own tests; it says so.)

Every task has tests in tests/test_assignments_tasks.py marked `task_<id>` (dashes become underscores, as
pytest markers cannot contain them), so `python -m pytest -m task_a1_relu_backward` checks one task.
Assignments build on each other (a backprop step needs the layers' backward passes): do them in order.

    tinydgl assignments build OUT [--assignment A1] [--task ID]   # the student copy
    tinydgl assignments submit [TREE] OUT.zip                     # the task files of TREE, to hand in
    tinydgl assignments grade [TREE|ZIP] [--source DIR] [--json PATH]  # the score table (TREE: default .)
    tinydgl assignments check                                     # markers, ids and tests are consistent
    tinydgl assignments gradescope OUT.zip [--source DIR]         # a Gradescope autograder (see `gradescope`)
    tinydgl assignments classroom OUT_DIR [--source DIR]          # a GitHub Classroom workflow (see `classroom`)

The files, one job each: catalogue.py (the assignments and tasks: add a task there), layout.py (where things
are in a course tree, the error type, output checks, the templates), markers.py (the solution markers and
task tests), leaks.py (a solution repeated outside its region), student_copy.py (the student copy), handouts.py
(what a student reads), grading.py (running, scoring, submit and grade), exports.py (Gradescope, Classroom),
command.py (`tinydgl assignments`), templates/ (the scripts and texts written out whole).

The course is in the wheel, on purpose. `tinydgl assignments` is a subcommand of the one `tinydgl` command; it
needs nothing beyond the standard library, and its templates ship as package data. An installed tinydgl can
`submit`, and can `grade` or export an autograder with `--source` naming the instructor's checkout;
`build` needs a source checkout (the tests, lessons and notebooks are not in the wheel) and says so. Leaving
the course out would make the command differ between a wheel and a checkout for the sake of a few hundred lines.
"""
from .catalogue import ASSIGNMENTS, TASKS, TASKS_BY_ID, Assignment, Task, assignment_marker, marker_name, select_tasks
from .command import add_assignments_parser, run_command
from .exports import (AUTOGRADER_PACKAGES, CLASSROOM_WORKFLOW, DIGEST_COMMAND, autograde, classroom,
                      gather_submission, gradescope, ignored_note, tree_digest)
from .grading import (HIDDEN_FAILURE, format_table, grade, pick_task_files, read_submission, run_tests, score,
                      submit)
from .handouts import handout, index, notebook, student_readme
from .layout import (HIDDEN_TESTS, INDEPENDENT_TESTS, INSTRUCTOR_ONLY, MANIFEST, STUDENT_COPY, TASK_TESTS,
                     AssignmentError, check_output, source_root, template)
from .leaks import SIGNIFICANT, TEXT_SUFFIXES, code_key, find_leaks, leaks_in, readable_text, solution_keys, solutions
from .markers import Region, check, enclosing_function, find_regions, find_task_tests, scan_markers, task_files
from .student_copy import build, pristine_course, stub

