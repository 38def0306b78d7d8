"""The student copy: the library with each chosen task's solution replaced by a stub (see the package
docstring), its handouts, manifest and README; refused, leaving nothing behind, when a solution survives
anywhere else in the copy (leaks.py). `pristine_course` is the copy that grading starts from.
"""

import json
import os
import re
import shutil
import textwrap
from pathlib import Path

from .catalogue import ASSIGNMENTS, TASKS, TASKS_BY_ID, select_tasks
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
)
from .leaks import leaks_in, solution_keys
from .markers import check, enclosing_function, find_regions, find_task_tests, task_files

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.S | re.M)


def stub(region, handout):
    """The lines that replace a region in the student copy."""
    message = f"{region.task_id}: {region.hint}"
    ind = region.indent
    chunks = textwrap.wrap(message, width=max(40, 112 - len(ind)), drop_whitespace=False)
    lines = [f"{ind}# TODO {region.task_id} ({handout})"]
    if len(chunks) == 1:
        lines.append(f"{ind}raise NotImplementedError({_quoted(message)})")
    else:
        lines.append(f"{ind}raise NotImplementedError(")
        lines += [f"{ind}    {_quoted(c)}" for c in chunks]
        lines.append(f"{ind})")
    return lines


def _quoted(text):
    """A double-quoted Python string literal of `text`."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build(out, root=None, assignments=None, task_ids=None, hidden=False):
    """Write a student copy of the library to `out`: returns the manifest (also written to out/assignments/).

    assignments (e.g. ["A1"]) or task_ids choose the tasks to stub (default: all); the others stay solved.
    hidden=True keeps the hidden tests (HIDDEN_TESTS): for the graders' own course, never for students.
    Refuses (AssignmentError, and nothing is left in `out`) when a stubbed task's solution would survive
    elsewhere in the copy (`find_leaks`).
    """
    created = bool(str(out).strip()) and not Path(out).exists()
    check_output(out, folder=True)  # first: a path that cannot be written fails before any work
    root, out = Path(root or source_root()), Path(out)
    try:
        if not (root / TASK_TESTS).is_file():
            raise AssignmentError(
                f"{root} is not a source checkout of tinydgl (no {TASK_TESTS}); build from a clone "
                "of the repository, installed with pip install -e ."
            )
        problems = check(root)
        if problems:
            raise AssignmentError("the solution markers are inconsistent:\n  " + "\n  ".join(problems))
        return _write_student_copy(root, out, select_tasks(assignments, task_ids), hidden)
    except BaseException as err:
        _clear(out, created)  # nothing half-written stays behind: the folder was new, or empty
        if isinstance(err, OSError):
            raise AssignmentError(f"could not write the student copy to {out}: {err.strerror or err}.") from err
        raise


def _clear(out, created):
    """Remove what a failed build wrote: the folder itself if build made it, else everything in it."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in out.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _write_student_copy(root, out, chosen, hidden):
    """`build`'s work, into the empty folder `out`: the copy, its stubs, handouts, manifest and README."""
    chosen_ids = {t.id for t in chosen}
    regions = {r.task_id: r for r in find_regions(root)}
    tests, _ = find_task_tests(root)
    hidden_tests = {t: [n for n in ids if n.startswith(HIDDEN_TESTS + "::")] for t, ids in tests.items()}
    if not hidden:
        tests = {t: [n for n in ids if n not in hidden_tests[t]] for t, ids in tests.items()}
    _copy_course(root, out, hidden)
    _write_stubs(root, out, [regions[i] for i in chosen_ids])
    texts = {r.file: (root / r.file).read_text() for r in regions.values()}
    manifest = _manifest(regions, texts, chosen_ids, tests, hidden_tests)
    _write_handouts(out, manifest)
    leaks = leaks_in(out, {i: solution_keys(regions[i], texts[regions[i].file]) for i in chosen_ids})
    if leaks:
        solution = {i: f"{regions[i].file}:{regions[i].begin}" for i in chosen_ids}
        shown = "\n  ".join(f"{leak} (the solution is {solution[leak.rsplit(': ', 1)[1]]})" for leak in leaks[:20])
        raise AssignmentError(
            f"{len(leaks)} line(s) outside the marked regions repeat a solution, and would give it "
            f"to students (paths as in {root}):\n  {shown}\nRewrite them (a docstring's example, "
            "a lesson's code), or call the function the task implements instead of a copy of it."
        )
    return manifest


def _copy_course(root, out, hidden):
    """Copy STUDENT_COPY from root to out, less what only the instructor sees (and the hidden tests unless hidden)."""
    _copy(root, out, STUDENT_COPY, ("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis"))
    for rel in INSTRUCTOR_ONLY + (() if hidden else (HIDDEN_TESTS,)):
        if (out / rel).is_dir():
            shutil.rmtree(out / rel)
        else:
            (out / rel).unlink(missing_ok=True)


def _copy(root, out, names, skip):
    """Copy the files and folders `names` (those that exist) from root to out, less the patterns in skip."""
    for name in names:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns(*skip))
        elif src.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / name)


def _write_stubs(root, out, regions):
    """Replace each region by its stub in out's copy of its file; the stubbed file must still compile."""
    by_file = {}
    for region in regions:
        by_file.setdefault(region.file, []).append(region)
    for file, file_regions in by_file.items():
        lines = (root / file).read_text().splitlines()
        for r in sorted(file_regions, key=lambda r: r.begin, reverse=True):  # bottom up: line numbers stay valid
            lines[r.begin - 1 : r.end] = stub(r, f"assignments/{TASKS_BY_ID[r.task_id].assignment}.md")
        text = "\n".join(lines) + "\n"
        try:
            compile(text, file, "exec")
        except SyntaxError as err:
            raise AssignmentError(f"the student copy of {file} does not compile ({err}): check its markers.") from err
        (out / file).write_text(text)


def _manifest(regions, texts, chosen_ids, tests, hidden_tests):
    """The student copy's assignments/manifest.json: every assignment and task, where it is, how it is tested."""

    def entry(t):
        region = regions[t.id]
        return {
            "id": t.id,
            "assignment": t.assignment,
            "title": t.title,
            "points": t.points,
            "marker": t.marker,
            "file": region.file,
            "function": enclosing_function(texts[region.file], region.begin),
            "solution_lines": [region.begin, region.end],
            "hint": region.hint,
            "stubbed": t.id in chosen_ids,
            "tests": tests[t.id],
            "hidden_tests": len(hidden_tests.get(t.id, [])),
        }

    return {
        "format": 1,
        "grade_command": "tinydgl assignments grade",
        "task_tests": TASK_TESTS,
        "task_files": sorted({r.file for r in regions.values()}),  # what `submit` hands in (whole files)
        "independent_tests": list(INDEPENDENT_TESTS),
        "assignments": [
            {
                "id": a.id,
                "title": a.title,
                "handout": f"assignments/{a.id}.md",
                "tasks": [t.id for t in TASKS if t.assignment == a.id],
            }
            for a in ASSIGNMENTS
        ],
        "tasks": [entry(t) for t in TASKS],
    }


def _write_handouts(out, manifest):
    """out/assignments/ (manifest, handouts, notebooks, index) and the copy's own README.md."""
    handouts = out / "assignments"
    handouts.mkdir(exist_ok=True)
    (handouts / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for a in ASSIGNMENTS:
        (handouts / f"{a.id}.md").write_text(handout(a, manifest))
        (handouts / f"{a.id}.ipynb").write_text(json.dumps(notebook(a, manifest), indent=1) + "\n")
    (handouts / "README.md").write_text(index(manifest))
    (out / "README.md").write_text(student_readme(manifest))  # the repository's README is the instructor's
    _unlink_missing(out)


def _unlink_missing(out):
    """In the Markdown files of the copy `out`, a link to a file that is not in the copy (the benchmarks, the
    instructor's guide) becomes its text with the path it has in the tinydgl repository: no broken links."""

    def fix(page):
        def one(match):
            bang, text, target = match.groups()
            if "://" in target or target.startswith(("#", "mailto:")):
                return match.group(0)
            path = target.split("#")[0]
            if not path or (page.parent / path).exists():
                return match.group(0)
            rel = os.path.normpath(os.path.relpath(page.parent / path, out)).replace(os.sep, "/")
            if bang:
                return text
            if text.strip("`") in (rel, path, path.rsplit("/", 1)[-1]):
                return f"{text} (in the tinydgl repository)"
            return f"{text} (`{rel}` in the tinydgl repository)"

        return one

    for page in out.rglob("*.md"):
        text, parts, last = page.read_text(), [], 0
        for block in _FENCE.finditer(text):  # code blocks stay as written
            parts += [_LINK.sub(fix(page), text[last : block.start()]), block.group(0)]
            last = block.end()
        parts.append(_LINK.sub(fix(page), text[last:]))
        if "".join(parts) != text:
            page.write_text("".join(parts))


def pristine_course(source, out, hidden=True):
    """The course as handed out, in the new folder `out`, with `source`'s tests: built afresh (every task
    stubbed) from the instructor's checkout, with its hidden tests unless hidden=False, or copied from a
    student copy. Returns the task files."""
    source = Path(source)
    if not (source / TASK_TESTS).is_file():
        raise AssignmentError(
            f"{source.resolve()} has no {TASK_TESTS}: --source is the instructor's checkout of "
            "tinydgl (or a student copy, for a practice grade)."
        )
    if find_regions(source):
        return build(out, root=source, hidden=hidden)["task_files"]
    if not (source / MANIFEST).is_file():
        raise AssignmentError(
            f"{source.resolve()} has neither solution markers nor {MANIFEST}: --source is the "
            "instructor's checkout of tinydgl (or a student copy, for a practice grade)."
        )
    out.mkdir(parents=True)
    _copy(source, out, (*STUDENT_COPY, MANIFEST), ("__pycache__", "*.pyc", ".pytest_cache"))
    return task_files(out)
