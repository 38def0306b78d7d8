"""The solution markers in the library, and the task tests that go with them.

A marked region is a comment line `# BEGIN SOLUTION <task-id>`, `# hint: ...` lines, the solution, and
`# END SOLUTION` at the same indent. `scan_markers` reads one file; `find_regions` the whole library;
`find_task_tests` finds the tests marked for each task; `check` says what does not fit together;
`task_files` are the files that hold the tasks (what a student hands in).
"""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .catalogue import ASSIGNMENTS, TASKS, TASKS_BY_ID
from .layout import COURSE_PACKAGE, MANIFEST, TASK_TESTS, AssignmentError, source_root

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?P<rest>.*)$")
END = re.compile(r"^(?P<indent>\s*)# END SOLUTION(?P<rest>.*)$")
HINT = re.compile(r"^\s*# hint: ?(?P<text>.*)$")
TASK_ID = re.compile(r"^[a-z][0-9]+(-[a-z0-9]+)+$")


@dataclass(frozen=True)
class Region:
    task_id: str
    file: str  # relative to the root, with forward slashes
    begin: int  # 1-based line numbers of the BEGIN and END lines
    end: int
    indent: str
    hint: str


def scan_markers(text, file):
    """The marked regions of one file's text. Raises AssignmentError on a malformed, unbalanced or nested marker."""
    regions, open_region = [], None
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        where = f"{file}:{number}"
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if open_region is not None:
                raise AssignmentError(
                    f"{where}: BEGIN SOLUTION inside the region opened at line {open_region[1]} "
                    "(regions cannot nest): close that one with '# END SOLUTION' first."
                )
            task_id = begin["rest"].strip()
            if not TASK_ID.match(task_id):
                raise AssignmentError(
                    f"{where}: expected '# BEGIN SOLUTION <task-id>' with an id like a1-relu-backward "
                    f"(the hint goes on '# hint:' lines below), got {line.strip()!r}."
                )
            open_region = (task_id, number, begin["indent"])
        elif end:
            if open_region is None:
                raise AssignmentError(f"{where}: END SOLUTION without a BEGIN SOLUTION above it.")
            task_id, start, indent = open_region
            if end["rest"].strip():
                raise AssignmentError(f"{where}: '# END SOLUTION' takes nothing after it, got {line.strip()!r}.")
            if end["indent"] != indent:
                raise AssignmentError(f"{where}: END SOLUTION is not indented like its BEGIN (line {start}).")
            body = lines[start : number - 1]
            hints = []
            for body_line in body:
                hint = HINT.match(body_line)
                if not hint:
                    break
                hints.append(hint["text"].strip())
            code = [b for b in body[len(hints) :] if b.strip()]
            if not code:
                raise AssignmentError(f"{where}: the region of {task_id} (from line {start}) holds no code.")
            if not hints:
                raise AssignmentError(f"{file}:{start}: {task_id} has no hint: add '# hint: ...' lines under BEGIN.")
            if any(not b.startswith(indent) for b in code):
                raise AssignmentError(
                    f"{file}:{start}: a line of {task_id}'s region is indented less than its markers."
                )
            regions.append(Region(task_id, file, start, number, indent, " ".join(hints)))
            open_region = None
        elif "BEGIN SOLUTION" in line or "END SOLUTION" in line:
            if line.strip().startswith("#"):
                raise AssignmentError(
                    f"{where}: malformed marker {line.strip()!r}: a marker is a comment line on its "
                    "own, '# BEGIN SOLUTION <task-id>' or '# END SOLUTION'."
                )
    if open_region is not None:
        raise AssignmentError(
            f"{file}:{open_region[1]}: BEGIN SOLUTION {open_region[0]} is never closed by '# END SOLUTION'."
        )
    return regions


def find_regions(root=None):
    """Every marked region under root/tinydgl, in file order. The course package (which describes them) is skipped."""
    root = Path(root or source_root())
    regions = []
    for path in sorted((root / "tinydgl").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(COURSE_PACKAGE + "/"):
            regions += scan_markers(path.read_text(), rel)
    return regions


def find_task_tests(root=None):
    """{task id: [test node ids]} from the `@task("...")` decorators and `pytest.mark.task_*` marks of tests/."""
    root = Path(root or source_root())
    by_marker = {t.marker: t.id for t in TASKS}
    found, unknown = {}, []
    for path in sorted((root / "tests").glob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                ids = []
                if isinstance(deco, ast.Call) and isinstance(target, ast.Name) and target.id == "task":
                    ids = [a.value for a in deco.args if isinstance(a, ast.Constant)]
                elif isinstance(target, ast.Attribute) and target.attr.startswith("task_"):
                    ids = [by_marker.get(target.attr, target.attr)]
                for task_id in ids:
                    if task_id not in TASKS_BY_ID:
                        unknown.append(f"{rel}::{node.name} is marked for unknown task {task_id!r}")
                    else:
                        found.setdefault(task_id, []).append(f"{rel}::{node.name}")
    return found, unknown


def check(root=None):
    """Problems with the markers, task ids and task tests (an empty list when all is well)."""
    root = Path(root or source_root())
    problems = []
    try:
        regions = find_regions(root)
    except AssignmentError as err:
        return [str(err)]
    seen = {}
    for r in regions:
        if r.task_id in seen:
            problems.append(
                f"task {r.task_id} is marked twice: {seen[r.task_id]} and {r.file}:{r.begin} (ids are unique)"
            )
        seen[r.task_id] = f"{r.file}:{r.begin}"
        if r.task_id not in TASKS_BY_ID:
            problems.append(
                f"{r.file}:{r.begin}: region for unknown task {r.task_id!r}: add it to TASKS in tinydgl/course/catalogue.py"
            )
    if len({t.id for t in TASKS}) != len(TASKS):
        problems.append("TASKS lists a task id twice")
    tests, unknown = find_task_tests(root)
    problems += unknown
    for t in TASKS:
        if t.id not in seen:
            problems.append(f"task {t.id} has no marked region in tinydgl/")
        if not tests.get(t.id):
            problems.append(f"task {t.id} has no test marked {t.marker} (use @task({t.id!r}) in {TASK_TESTS})")
        if t.assignment not in {a.id for a in ASSIGNMENTS}:
            problems.append(f"task {t.id} belongs to no assignment ({t.assignment})")
    return problems


def enclosing_function(text, line):
    """`Class.method` or `function` whose body holds `line` (1-based), or '' at module level."""
    best = ""

    def visit(node, prefix):
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)) and child.lineno <= line <= child.end_lineno:
                name = prefix + child.name
                if isinstance(child, ast.FunctionDef):
                    best = name
                visit(child, name + ".")

    visit(ast.parse(text), "")
    return best


def task_files(tree):
    """The files of `tree` that hold the tasks (relative, forward slashes): its manifest's `task_files` in a
    student copy, the files with solution markers in the instructor's checkout."""
    tree = Path(tree)
    if (tree / MANIFEST).is_file():
        manifest = json.loads((tree / MANIFEST).read_text())
        return manifest.get("task_files") or sorted({t["file"] for t in manifest["tasks"]})  # (older manifests)
    files = sorted({r.file for r in find_regions(tree)}) if (tree / "tinydgl").is_dir() else []
    if not files:
        raise AssignmentError(
            f"{tree.resolve()} has no {MANIFEST} and no solution markers: give the root of a "
            "tinydgl student copy (made by 'tinydgl assignments build')."
        )
    return files
