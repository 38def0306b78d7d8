"""Where things are in a course tree, the error a person can fix, and the checks made before any work.

A course tree is either the instructor's checkout (the library with its solutions marked) or a student copy
built from it (see student_copy.py). The texts the course writes out whole (the Gradescope scripts, the Classroom
workflow, the student README, a notebook's helper cell, the test recorder) are files in templates/, read
with `template` as package data, so they work from an installed wheel as from a checkout.
"""

import re
import tempfile
from importlib import resources
from pathlib import Path

TASK_TESTS = "tests/test_assignments_tasks.py"  # where every task's tests live
# The instructor's hidden tests (optional): `build` leaves the file out of the student copy; `grade` and the
# Gradescope autograder build their course with it kept, so a task scores only when its hidden tests pass too.
HIDDEN_TESTS = "tests/test_assignments_hidden.py"
MANIFEST = "assignments/manifest.json"  # written by `build` into the student copy
# Not copied to students: the checks of the build itself, the exercise answers and their test.
INSTRUCTOR_ONLY = ("tests/test_assignments.py", "tests/test_answers.py", "lessons/answers")
# What a student tree needs: the code, its tests, the course, what makes it an installable package under its
# license (MANIFEST.in, CHANGELOG.md: the README links to it), and the measured results the lessons link to.
# The rest (benchmark scripts, scripts/, the instructor's guide) is left out; README.md is the copy's own.
STUDENT_COPY = (
    "tinydgl",
    "tests",
    "lessons",
    "notebooks",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "NOTICE",
    "CHANGELOG.md",
    "MANIFEST.in",
    "benchmarks/RESULTS.md",
)
# "Everything else" for the CI check: test files that use no marked code, so they pass in a student tree
# before any task is done. (Most other test files train models, which needs assignment 1's backward passes.)
INDEPENDENT_TESTS = ("tests/test_data_idx.py", "tests/test_data_cifar.py", "tests/test_loader.py")
COURSE_PACKAGE = "tinydgl/course"  # this package: it describes the markers, so their scan skips it

_PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")


class AssignmentError(Exception):
    """Something an instructor can fix: a bad marker, an output folder in the way, a tree without tests."""


def source_root():
    """The repository this tinydgl was imported from (a source checkout, with tests/)."""
    return Path(__file__).resolve().parent.parent.parent


def template(name, **values):
    """The text of templates/<name>, with each `{{ key }}` in it replaced by values[key].

    Read as package data (importlib.resources), so it is found in an installed wheel as in a checkout.
    Raises AssignmentError if the template names a value that is not given."""
    text = (resources.files(__package__) / "templates" / name).read_text(encoding="utf-8")
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise AssignmentError(
            f"the template {name} needs {', '.join(missing)}: a bug in tinydgl.course, please report it."
        )
    return _PLACEHOLDER.sub(lambda match: str(values[match[1]]), text)


def check_output(path, folder=False):
    """Check, before any work, that an output can be written: a file (a zip, a JSON; its folder is made if
    need be) or, with folder=True, a new or empty folder (made here). Raises AssignmentError saying why not."""
    kind = "folder" if folder else "file"
    if not str(path).strip():  # Path("") is the current folder: never what an empty argument meant
        raise AssignmentError(f"the output got an empty name: give the name of a {kind} to write.")
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise AssignmentError(f"{path} is a file: give a new (or empty) folder.")
        if path.is_dir() and any(path.iterdir()):
            raise AssignmentError(f"{path} exists and is not empty: choose a new folder (build never overwrites).")
        where = path
    else:
        if path.is_dir():
            raise AssignmentError(f"{path} is a folder: give the name of a file to write.")
        where = path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):  # the folder may exist and still refuse files (read-only, /proc)
            pass
    except OSError as err:
        raise AssignmentError(
            f"cannot write to {where}: {err.strerror or err}. Choose a folder you can write to."
        ) from None
