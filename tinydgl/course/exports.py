"""The autograder, exported: a Gradescope autograder zip and a GitHub Classroom workflow.

Both grade as `grade` does (grading.py): only the task files of a submission, over the course as handed out,
with the instructor's tests. Their scripts are files in templates/ (gradescope_setup.sh, run_autograder,
classroom.yml, classroom_task.yml), filled in here.
"""

import hashlib
import json
import tempfile
import time
import zipfile
from pathlib import Path

from .catalogue import TASKS, TASKS_BY_ID
from .grading import grade, pick_task_files
from .layout import TASK_TESTS, AssignmentError, check_output, source_root, template
from .markers import task_files
from .student_copy import pristine_course

# What grading needs besides the course copy itself (which goes in by PYTHONPATH, not pip): pinned to the
# versions this zip was built with where they are installed. array-api-strict is not optional: without it the
# task tests parametrized over its backend are skipped, and a task with a skipped test is not done.
AUTOGRADER_PACKAGES = ("numpy", "pytest", "array-api-strict")


def _requirements():
    """requirements.txt of the autograder: AUTOGRADER_PACKAGES, pinned where this environment has them."""
    from importlib import metadata

    lines = []
    for name in AUTOGRADER_PACKAGES:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def gradescope(out, source=None):
    """Write a Gradescope autograder zip to `out`: returns its member names.

    The zip holds setup.sh and run_autograder (at its root, as Gradescope wants them), requirements.txt (numpy,
    pytest, array-api-strict, pinned to this environment's versions) and course/: the student copy as handed
    out, built from `source` (default: this checkout) with every task stubbed, so the zip carries the
    instructor's tests but no solution. Grading needs no network: setup.sh installs the three packages when
    Gradescope builds the image, and the course goes on PYTHONPATH. run_autograder calls `autograde`, which
    takes only the task files of the submission, lays them over a fresh copy of course/ and writes
    results.json (see `autograde`).
    """
    check_output(out)  # first: a zip that cannot be written fails before any work
    source, out = Path(source or source_root()), Path(out)
    names = []
    with tempfile.TemporaryDirectory(prefix="tinydgl-gradescope-") as tmp:
        course = Path(tmp) / "course"
        pristine_course(source, course)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:

            def add(name, text, mode=0o644):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, text)
                names.append(name)

            add("setup.sh", template("gradescope_setup.sh"), 0o755)
            add("run_autograder", template("run_autograder"), 0o755)
            add("requirements.txt", _requirements())
            for path in sorted(course.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    rel = path.relative_to(Path(tmp)).as_posix()
                    z.write(path, rel)
                    names.append(rel)
    return names


def gather_submission(folder, files):
    """({task file: bytes}, [ignored names]) from a submission folder (see `pick_task_files`; a zip in it is opened)."""
    folder = Path(folder)
    found = []  # (relative name, bytes)
    for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".zip" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                found += [(n, z.read(n)) for n in z.namelist() if not n.endswith("/")]
        else:
            found.append((rel, path.read_bytes()))
    return pick_task_files(dict(found), files)


def ignored_note(ignored):
    """One short line on the files of a submission that are not graded ('' when there are none): how many,
    and the top-level files and folders they are in."""
    if not ignored:
        return ""
    groups = {}
    for name in ignored:
        head, sep, _ = name.partition("/")
        groups[head + sep] = groups.get(head + sep, 0) + 1
    folders_first = sorted(groups.items(), key=lambda item: (not item[0].endswith("/"), item[0]))
    shown = [f"{g} ({n} files)" if g.endswith("/") and n > 1 else g for g, n in folders_first]
    where = ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")
    files = f"{len(ignored)} file{'s' if len(ignored) > 1 else ''}"
    return f"Ignored {files} that are not task files ({where}): only the task files are graded, with the instructor's tests."


def autograde(submission, course, results):
    """Grade the submission folder with the pristine `course` and write Gradescope's results.json to `results`.

    results.json: {"score": points, "execution_time": seconds, "output": what was graded, "visibility": "visible",
    "tests": [{"name": "<task id>: <title>", "score": points, "max_score": points, "status": "passed"|"failed",
    "output": "n/m tests passed" and, when failed, the failing tests and the first failure's message (a stub's
    NotImplementedError, or the earlier task it needs)}]}, one test per task. Returns 0 (Gradescope reads the
    file, not the exit status); a submission without task files scores 0 with a message saying what to hand in.
    """
    start = time.perf_counter()
    course = Path(course)
    files = task_files(course)
    given, ignored = gather_submission(submission, files)
    lines = []
    if not given:
        report = {
            "score": 0,
            "tests": [],
            "output": "No task file found in the submission. Hand in the zip that 'tinydgl assignments submit "
            f"hand-in.zip' writes (or the task files: {', '.join(files)}).",
        }
    else:
        with tempfile.TemporaryDirectory(prefix="tinydgl-submission-") as tmp:
            for name, data in given.items():
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / name).write_bytes(data)
            rows, errors = grade(tmp, source=course)
        lines.append(f"Graded task files: {', '.join(sorted(given))}.")
        missing = sorted(set(files) - set(given))
        if missing:
            lines.append(f"Not in the submission (graded as handed out, with the stubs): {', '.join(missing)}.")
        if ignored:
            lines.append(ignored_note(ignored))
        lines += [f"Could not collect {e}" for e in errors]
        tests = []
        for r in rows:
            text = f"{r['passed']}/{r['tests']} tests passed"
            if not r["done"]:
                text += (f"; failed: {', '.join(r['failed'])}" if r["failed"] else "") + f"\n{r['reason']}"
            tests.append(
                {
                    "name": f"{r['task']}: {TASKS_BY_ID[r['task']].title}",
                    "score": r["points"],
                    "max_score": r["max_points"],
                    "status": "passed" if r["done"] else "failed",
                    "output": text,
                }
            )
        report = {"score": sum(r["points"] for r in rows), "tests": tests, "output": "\n".join(lines)}
    report.update(execution_time=round(time.perf_counter() - start, 1), visibility="visible")
    Path(results).parent.mkdir(parents=True, exist_ok=True)
    Path(results).write_text(json.dumps(report, indent=2) + "\n")
    return 0


CLASSROOM_WORKFLOW = "classroom.yml"


def tree_digest(root, skip):
    """The sha256 of `sha256sum`'s lines for every file of tinydgl/, tests/ and pyproject.toml under root but
    those in skip, in byte order: what the workflow's shell pipeline computes (see `classroom`)."""
    root = Path(root)
    paths = [p for name in ("tinydgl", "tests") for p in (root / name).rglob("*")] + [root / "pyproject.toml"]
    rels = sorted(
        (p.relative_to(root).as_posix() for p in paths if p.is_file() and "__pycache__" not in p.parts),
        key=lambda s: s.encode(),
    )
    lines = "".join(f"{hashlib.sha256((root / r).read_bytes()).hexdigest()}  {r}\n" for r in rels if r not in skip)
    return hashlib.sha256(lines.encode()).hexdigest()


DIGEST_COMMAND = (
    "find tinydgl tests pyproject.toml -type f -not -path '*/__pycache__/*' | LC_ALL=C sort "
    "| grep -vxF -f \"$RUNNER_TEMP/task_files\" | xargs sha256sum | sha256sum | cut -d' ' -f1"
)


def classroom(out_dir, source=None):
    """Write OUT_DIR/.github/workflows/classroom.yml, GitHub Classroom's autograding workflow: returns its path.

    OUT_DIR is the student copy that becomes the assignment's template repository. The workflow (the format of
    GitHub Classroom's own: one `classroom-resources/autograding-command-grader@v1` step per task, with the
    task's points as max-score, then `autograding-grader-reporter@v1`) grades pristinely as `grade` does:
    it checks out the repository's first commit (the template as handed out) into .pristine/, copies
    only the task files of the pushed commit over it, checks that the non-task files there (tinydgl/, tests/,
    pyproject.toml) hash to the digest of the course as built here (so a rewritten first commit is refused),
    and runs each task's tests there (all pass: the task's points; else 0). The template is what students
    can read, so Classroom runs the visible tests only (no HIDDEN_TESTS). What it cannot stop, as no
    Classroom workflow can, is a student editing the workflow file itself: Classroom's protected paths flag that.
    """
    if not str(out_dir).strip():
        check_output(out_dir)  # refuses the empty name, which Path would read as the current folder
    source, out_dir = Path(source or source_root()), Path(out_dir)
    path = out_dir / ".github" / "workflows" / CLASSROOM_WORKFLOW
    if path.exists():
        raise AssignmentError(f"{path} exists: remove it first (classroom never overwrites).")
    check_output(path)
    with tempfile.TemporaryDirectory(prefix="tinydgl-classroom-") as tmp:
        course = Path(tmp) / "course"
        files = pristine_course(source, course, hidden=False)  # the template repository: what students have
        digest = tree_digest(course, set(files))
    steps = [t.marker for t in TASKS]
    task_steps = [
        template(
            "classroom_task.yml",
            id=t.id,
            marker=t.marker,
            points=t.points,
            task_tests=TASK_TESTS,
            test_name=json.dumps(t.id + ": " + t.title),
        )
        for t in TASKS
    ]
    reporter_env = [f'        {step.upper()}_RESULTS: "${{{{steps.{step}.outputs.result}}}}"' for step in steps]
    requirements = " ".join(f"'{r}'" for r in _requirements().split())
    path.write_text(
        template(
            "classroom.yml",
            requirements=requirements,
            task_files=" ".join(files),
            digest_command=DIGEST_COMMAND,
            digest=digest,
            task_steps="".join(task_steps).rstrip("\n"),
            reporter_env="\n".join(reporter_env),
            runners=",".join(steps),
        )
    )
    return path
