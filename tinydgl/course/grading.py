"""Grading: run a tree's task tests, score them task by task, and take a student's work in (submit, grade).

`grade` never trusts the student's tree: it builds a fresh course from the instructor's checkout in a
temporary folder (`pristine_course`), lays only the student's task files over it, and runs its task tests
in a fresh Python (`run_tests`, with templates/record_tests.py recording each test's outcome).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .catalogue import TASKS
from .layout import HIDDEN_TESTS, TASK_TESTS, AssignmentError, check_output, source_root, template
from .markers import find_task_tests, task_files
from .student_copy import pristine_course


def run_tests(tree, paths=(TASK_TESTS,), markexpr=None, extra_args=(), timeout=900):
    """Run pytest on `paths` of `tree` in a fresh Python whose `tinydgl` is the tree's own.

    Returns {"status", "tests": {nodeid: {"tasks": [markers], "outcome", "message"}}, "collection_errors", "output"}.
    extra_args go to pytest (e.g. "-p", "no:hypothesispytest" saves a second where no test uses hypothesis).
    """
    tree = Path(tree).resolve()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        args = ["-q", "-p", "no:cacheprovider", "--continue-on-collection-errors", *extra_args, *paths]
        if markexpr:
            args += ["-m", markexpr]
        recorder = template("record_tests.py")
        proc = subprocess.run(
            [sys.executable, "-c", recorder, str(report), *args],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if not report.exists():
            raise AssignmentError(
                f"pytest did not run in {tree} (exit status {proc.returncode}):\n" + (proc.stdout + proc.stderr)[-3000:]
            )
        result = json.loads(report.read_text())
    result["output"] = proc.stdout + proc.stderr
    return result


HIDDEN_FAILURE = "a hidden test failed (the instructor's: it checks what the visible tests do not; reread the task)"
STUB_ERROR = re.compile(r"^NotImplementedError: (?P<task>[a-z][0-9]+(-[a-z0-9]+)+):")


def score(result, tasks=TASKS):
    """Per task: its tests' outcomes from a `run_tests` result. A task earns its points when all its tests pass."""
    rows = []
    for t in tasks:
        mine = {n: e for n, e in result["tests"].items() if t.marker in e["tasks"]}
        # visible tests first: their messages say what to fix; a hidden test's stays the instructor's
        mine = dict(sorted(mine.items(), key=lambda item: item[0].startswith(HIDDEN_TESTS + "::")))
        passed = sum(e["outcome"] == "passed" for e in mine.values())
        failures = [
            HIDDEN_FAILURE if n.startswith(HIDDEN_TESTS + "::") else e["message"]
            for n, e in mine.items()
            if e["outcome"] not in ("passed", "skipped")
        ]
        done = bool(mine) and passed == len(mine)
        reason = "" if done else (failures[0] if failures else "no test of this task ran")
        other = STUB_ERROR.match(reason)
        if other and other["task"] != t.id:  # the tests reached another task's stub first
            reason = f"needs {other['task']} first ({reason})"
        failed = [
            "(a hidden test)" if n.startswith(HIDDEN_TESTS + "::") else n.split("::", 1)[-1]
            for n, e in mine.items()
            if e["outcome"] not in ("passed", "skipped")
        ]
        rows.append(
            {
                "task": t.id,
                "assignment": t.assignment,
                "tests": len(mine),
                "passed": passed,
                "done": done,
                "points": t.points if done else 0,
                "max_points": t.points,
                "reason": reason,
                "failed": failed,
            }
        )
    return rows


def submit(tree, out):
    """Zip the task files of student copy `tree` (exactly its manifest's `task_files`) to `out`: returns them."""
    check_output(out)  # first: a zip that cannot be written fails before any work
    tree = Path(tree)
    files = task_files(tree)
    missing = [f for f in files if not (tree / f).is_file()]
    if missing:
        raise AssignmentError(
            f"{tree.resolve()} lacks {', '.join(missing)} (task files of its manifest): give the "
            "root of your student copy."
        )
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(tree / f, f)
    return files


def read_submission(work):
    """{relative path: bytes} of a tree's task files or a `submit` zip's members, checked against the course."""
    work = Path(work)
    if work.is_file():
        if not zipfile.is_zipfile(work):
            raise AssignmentError(
                f"{work} is neither a folder nor a zip: give a student copy or the zip that "
                "'tinydgl assignments submit' wrote."
            )
        with zipfile.ZipFile(work) as z:
            return {name: z.read(name) for name in z.namelist() if not name.endswith("/")}
    if not work.is_dir():
        raise AssignmentError(f"{work} does not exist: give a student copy or a submission zip.")
    return None  # a tree: its task files are read once the course's list of them is known


def pick_task_files(contents, files):
    """({task file: bytes}, [ignored names]) from a submission's {name: bytes}: each task file at its path in
    the course, also under an enclosing folder (a zip of the whole student folder: the shortest such path),
    else, for a flat upload, by its file name (the task files' names are unique). The rest is ignored, as
    `grade` and the Gradescope autograder both use only the task files."""
    contents = {n: data for n, data in contents.items() if "__MACOSX" not in n and ".git" not in n.split("/")}
    used = {}
    for f in files:
        matches = sorted((n for n in contents if n == f or n.endswith("/" + f)), key=len)
        if matches:
            used[f] = matches[0]
    if not used:  # a flat upload: linear.py, norm.py, ...
        by_name = {f.rsplit("/", 1)[-1]: f for f in files}
        used = {by_name[n]: n for n in contents if "/" not in n and n in by_name}
    # the names of the rest, inside the folder that holds the task files (a whole folder zipped: its name is no news)
    prefix = next((n[: len(n) - len(f)] for f, n in used.items() if n.endswith("/" + f)), "")
    ignored = sorted(n[len(prefix) :] if n.startswith(prefix) else n for n in set(contents) - set(used.values()))
    return {f: contents[n] for f, n in used.items()}, ignored


def grade(work=".", tasks=TASKS, source=None):
    """Score a student's work task by task with the instructor's tests: returns (rows of `score`, collection errors).

    work is a student copy (only its task files are used) or a zip written by `submit`. It goes over a fresh
    student copy built from `source` (default: the checkout this tinydgl was imported from) in a temporary
    folder, whose task tests run there in one pytest run. (A student copy as `source` gives a practice grade,
    with that copy's own tests.)
    """
    source = Path(source or source_root())
    given = read_submission(work)
    with tempfile.TemporaryDirectory(prefix="tinydgl-grade-") as tmp:
        base = Path(tmp) / "course"
        files = pristine_course(source, base)
        if given is None:
            given = {f: (Path(work) / f).read_bytes() for f in files if (Path(work) / f).is_file()}
        else:  # a zip: its task files, wherever they are in it (a whole folder zipped is fine), as Gradescope's
            given, _ = pick_task_files(given, files)
        if not given:
            raise AssignmentError(
                f"{Path(work).resolve()} holds none of the task files ({', '.join(files)}): give "
                "the root of a student copy or its submission zip."
            )
        for name, data in given.items():
            (base / name).write_bytes(data)
        found, _ = find_task_tests(base)
        paths = sorted({n.split("::")[0] for ids in found.values() for n in ids}) or [TASK_TESTS]
        expr = " or ".join(t.marker for t in tasks)
        result = run_tests(base, paths, markexpr=expr)
    return score(result, tasks), result["collection_errors"]


def format_table(rows):
    """The score table `tinydgl assignments grade` prints: a line per task of `score`'s rows, then the total."""
    width = max(len(r["task"]) for r in rows)
    lines = [f"{'task':<{width}}  {'tests':<7}  {'result':<6}  {'points':<7}  why not", "-" * (width + 40)]
    for r in rows:
        reason = r["reason"] if len(r["reason"]) <= 70 else r["reason"][:67] + "..."
        tests, points = f"{r['passed']}/{r['tests']}", f"{r['points']}/{r['max_points']}"
        lines.append(
            f"{r['task']:<{width}}  {tests:<7}  {'pass' if r['done'] else 'FAIL':<6}  {points:<7}  {reason}".rstrip()
        )
    got, total = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    tasks_done, points = f"{sum(r['done'] for r in rows)}/{len(rows)}", f"{got}/{total}"
    lines += ["-" * (width + 40), f"{'total':<{width}}  {tasks_done:<7}  {'tasks':<6}  {points:<7}"]
    return "\n".join(lines)
