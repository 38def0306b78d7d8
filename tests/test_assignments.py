"""The assignments and their autograder (the package tinydgl/course/), checked end to end:

- the solution markers are balanced, task ids unique, every task has a region and tests, every task marker
  names a real task;
- the solution tree (this repository) scores full marks through `tinydgl assignments grade`;
- the built student copy compiles, has a stub per task and the handouts; in it every task's tests fail and
  everything else (the task-free tests listed in INDEPENDENT_TESTS) still passes;
- each stub on its own fails its own task's tests with its own NotImplementedError, so every test really
  reaches the code of the task it grades;
- grading cannot be gamed: `grade` runs the instructor's tests over a fresh student copy and takes only the
  student's task files, so a student's edited tests change nothing; `submit` zips exactly the manifest's task
  files, and grading that zip scores like grading the tree.

This file is for instructors: it is not copied into the student copy.
"""

import json
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from tinydgl import course as A
from tinydgl.cli import main


def test_markers_ids_and_tests_are_consistent():
    assert A.check() == []
    regions = A.find_regions()
    assert sorted(r.task_id for r in regions) == sorted(t.id for t in A.TASKS)
    assert len(A.ASSIGNMENTS) >= 3 and len(A.TASKS) >= 12
    assert {t.assignment for t in A.TASKS} == {a.id for a in A.ASSIGNMENTS}
    tests, unknown = A.find_task_tests()
    assert unknown == [] and set(tests) == set(A.TASKS_BY_ID)


GOOD = "def f(x):\n    # BEGIN SOLUTION a9-demo\n    # hint: return twice x\n    y = 2 * x\n    # END SOLUTION\n    return y\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("    # END SOLUTION\n", ""), "never closed"),
        (GOOD.replace("    # BEGIN SOLUTION a9-demo\n", ""), "without a BEGIN"),
        (
            GOOD.replace("    y = 2 * x\n", "    # BEGIN SOLUTION a9-other\n    # hint: h\n    y = 2 * x\n"),
            "cannot nest",
        ),
        (GOOD.replace("a9-demo", "A demo with spaces"), "expected '# BEGIN SOLUTION <task-id>'"),
        (GOOD.replace("    # hint: return twice x\n", ""), "has no hint"),
        (GOOD.replace("    y = 2 * x\n", ""), "holds no code"),
        (GOOD.replace("    # END SOLUTION", "# END SOLUTION"), "not indented like its BEGIN"),
        (GOOD.replace("    # END SOLUTION", "    # END SOLUTION a9-demo"), "takes nothing after it"),
        (
            GOOD.replace("    # BEGIN SOLUTION a9-demo", "    # BEGIN-SOLUTION a9-demo  (BEGIN SOLUTION)"),
            "malformed marker",
        ),
    ],
)
def test_bad_markers_are_explained(text, message):
    with pytest.raises(A.AssignmentError, match=message):
        A.scan_markers(text, "demo.py")


def test_a_good_region_and_its_stub():
    (region,) = A.scan_markers(GOOD, "demo.py")
    assert (region.task_id, region.begin, region.end, region.hint) == ("a9-demo", 2, 5, "return twice x")
    lines = GOOD.splitlines()
    lines[region.begin - 1 : region.end] = A.stub(region, "assignments/A9.md")
    namespace = {}
    exec("\n".join(lines), namespace)
    with pytest.raises(NotImplementedError, match="^a9-demo: return twice x$"):
        namespace["f"](1)


def test_the_solution_tree_gets_full_marks(capsys, tmp_path):
    assert main(["assignments", "grade", str(A.source_root()), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["points"] == scores["max_points"] == sum(t.points for t in A.TASKS), scores
    assert all(row["tests"] > 0 for row in scores["tasks"])
    assert f"{len(A.TASKS)}/{len(A.TASKS)}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments") / "student"
    assert main(["assignments", "build", str(out)]) == 0
    return out


def test_the_student_copy_has_stubs_handouts_and_a_manifest(student):
    for path in (student / "tinydgl").rglob("*.py"):
        text = path.read_text()
        compile(text, str(path), "exec")
        if not path.relative_to(student).as_posix().startswith("tinydgl/course/"):  # the course describes markers
            assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path
    manifest = json.loads((student / "assignments" / "manifest.json").read_text())
    assert [t["id"] for t in manifest["tasks"]] == [t.id for t in A.TASKS]
    for t in manifest["tasks"]:
        source = (student / t["file"]).read_text()
        assert f"# TODO {t['id']} " in source and "raise NotImplementedError(" in source
        assert t["stubbed"] and t["tests"] and t["function"] and t["marker"] == A.marker_name(t["id"])
        handout = (student / "assignments" / f"{t['assignment']}.md").read_text()
        assert f"`{t['id']}`" in handout and f"-m {t['marker']}" in handout
    assert (student / "assignments" / "README.md").is_file()
    for a in A.ASSIGNMENTS:  # the notebook: valid JSON, one code cell per task that runs the task's tests
        nb = json.loads((student / "assignments" / f"{a.id}.ipynb").read_text())
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        for source in code:
            compile(source, f"{a.id}.ipynb", "exec")
        assert [c for c in code if c.startswith("check(")] == [
            f'check("{t.marker}")' for t in A.TASKS if t.assignment == a.id
        ]
    assert not (student / "tests" / "test_assignments.py").exists()  # instructors only
    assert not (student / "lessons" / "answers").exists() and not (student / "tests" / "test_answers.py").exists()
    assert not (student / A.HIDDEN_TESTS).exists()  # the hidden tests stay with the instructor ...
    relu = next(t for t in manifest["tasks"] if t["id"] == "a1-relu-backward")
    assert relu["hidden_tests"] == 1 and not any(A.HIDDEN_TESTS in n for n in relu["tests"])
    assert "and 1 hidden test that only the autograder runs" in (student / "assignments" / "A1.md").read_text()
    with pytest.raises(A.AssignmentError, match="not empty"):
        A.build(student)


def test_no_solution_is_left_in_the_student_copy(student):
    """No task's solution survives outside its stub: not in a docstring's example, a copy of the code in another
    file, a lesson or a notebook (`find_leaks`: two of its significant lines in a row, or its one such line)."""
    solutions = A.solutions()
    assert all(solutions.values()), solutions  # every task has lines to look for
    assert A.leaks_in(student, solutions) == []


RELU_DOCSTRING = '''"""Solutions are marked around the lines a student is to write:

    # BEGIN SOLUTION a1-relu-backward
    dx = xp.astype(cache, dout.dtype)
    dx *= dout
    # END SOLUTION
"""
'''
BP_COPY = """    h = x
    for block in blocks:
        h = block.forward(h)
    loss, grad = self.output_loss(h, y)
    for i in reversed(range(len(blocks))):
        grad = blocks[i].backward(grad, need_input_grad=i > 0)   # the same loop, another comment
    self.optimizer.step()
"""


def test_a_solution_is_found_in_a_docstring_or_a_copy_but_not_in_common_lines(tmp_path):
    solutions = A.solutions()
    assert A.find_leaks(RELU_DOCSTRING, solutions) == [(4, "a1-relu-backward")]
    assert A.find_leaks(BP_COPY, solutions) == [(4, "a2-bp-train-step"), (5, "a2-bp-train-step")]
    # lines everyone writes (a forward loop, an optimizer step), and one line of a longer solution, are not leaks
    common = "h = x\nfor block in blocks:\n    h = block.forward(h)\nself.optimizer.step()\n"
    one_line = "    grad = blocks[i].backward(grad, need_input_grad=i > 0)\n"
    assert A.find_leaks(common + one_line, solutions) == []
    notebook = json.dumps({"cells": [{"source": RELU_DOCSTRING.splitlines(keepends=True)}]}, indent=1)
    (tmp_path / "x.ipynb").write_text(notebook)
    assert [task for _, task in A.find_leaks(A.readable_text(tmp_path / "x.ipynb"), solutions)] == ["a1-relu-backward"]


def test_build_refuses_a_solution_outside_its_region(tmp_path):
    root = tmp_path / "checkout"
    for name in A.STUDENT_COPY:  # (with the instructor's files: tests/ and lessons/ hold them)
        src = A.source_root() / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    lesson = root / "lessons" / "04-pooling-relu-batchnorm.md"
    lines = lesson.read_text().count("\n")
    lesson.write_text(lesson.read_text() + "\n```python\n" + RELU_DOCSTRING + "```\n")
    out = tmp_path / "student"
    with pytest.raises(A.AssignmentError) as refused:
        A.build(out, root=root)
    message = str(refused.value)
    assert f"lessons/04-pooling-relu-batchnorm.md:{lines + 6}: a1-relu-backward" in message, message
    assert "tinydgl/ops/activation.py" in message  # where the solution is
    assert not out.exists()  # nothing half-built is left


def test_the_student_copy_has_its_own_readme_and_no_broken_link(student):
    import re

    readme = (student / "README.md").read_text()
    assert readme != (A.source_root() / "README.md").read_text()
    assert "INSTRUCTOR" not in readme and "assignments/README.md" in readme
    fence, link = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.S | re.M), re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
    broken = [
        f"{page.relative_to(student)} -> {target}"
        for page in sorted(student.rglob("*.md"))
        for target in link.findall(fence.sub("", page.read_text()))
        if "://" not in target
        and not target.startswith(("#", "mailto:"))
        and not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == []


@pytest.mark.parametrize(
    "command",
    [
        ["build", "/proc/x/out"],
        ["submit", "{student}", "/proc/x/hand-in.zip"],
        ["gradescope", "/proc/x/a.zip"],
        ["classroom", "/proc/x"],
        ["grade", "{student}", "--json", "/proc/x/scores.json"],
        ["build", "{student}/README.md"],
    ],
)
def test_output_paths_are_checked_before_any_work(command, student, capsys):
    assert main(["assignments", *(c.format(student=student) for c in command)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinydgl: error: ") and ("cannot write to /proc/x" in err or "is a file" in err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["build", ""],
        ["submit", "{student}", ""],
        ["gradescope", ""],
        ["classroom", ""],
        ["grade", "{student}", "--json", ""],
    ],
)
def test_an_empty_output_name_is_refused(command, student, tmp_path, monkeypatch, capsys):
    """'' is not the current folder: build and classroom used to write into the current folder, submit and
    gradescope said '. is a folder', and grade ran every test before it dropped --json ''."""
    monkeypatch.chdir(tmp_path)
    assert main(["assignments", *(c.format(student=student) for c in command)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinydgl: error: ") and "empty name" in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_output_is_checked_before_the_source(tmp_path):
    """A path that cannot be written fails first, even when the source or the tree given would fail too."""
    with pytest.raises(A.AssignmentError, match="cannot write to /proc/x"):
        A.build("/proc/x/out", root=tmp_path)  # tmp_path is no checkout
    with pytest.raises(A.AssignmentError, match="cannot write to /proc/x"):
        A.submit(tmp_path, "/proc/x/hand-in.zip")  # tmp_path is no student copy
    assert list(tmp_path.iterdir()) == []


def test_the_templates_are_package_data():
    """The scripts and texts the course writes out are files of the package, read with importlib.resources."""
    from importlib import resources

    folder = resources.files("tinydgl.course") / "templates"
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert {"gradescope_setup.sh", "run_autograder", "classroom.yml", "record_tests.py"} <= set(names)
    assert "from tinydgl.course import autograde" in A.template("run_autograder")
    with pytest.raises(A.AssignmentError, match="needs digest"):
        A.template("classroom.yml", requirements="numpy")


def test_in_the_student_copy_every_task_fails_and_everything_else_passes(student):
    result = A.run_tests(student, (A.TASK_TESTS, *A.INDEPENDENT_TESTS))
    assert result["collection_errors"] == [], result["output"][-3000:]
    for row in A.score(result):
        assert row["tests"] > 0 and row["passed"] == 0, row
        # the reason shown: this task's stub, or an earlier task's stub its tests need (say, the layers' backward)
        assert row["reason"].startswith((f"NotImplementedError: {row['task']}: ", "needs a")), row
    others = {n: e for n, e in result["tests"].items() if not e["tasks"]}
    assert len(others) > 20
    broken = {n: e["message"] for n, e in others.items() if e["outcome"] not in ("passed", "skipped")}
    assert broken == {}, broken


def test_each_stub_alone_fails_exactly_its_own_tests(tmp_path):
    """A copy with one task stubbed: that task's tests all fail, each with the task's own NotImplementedError.
    (The other tasks' tests are not run here: many use earlier tasks, as a backprop step uses the layers.)"""

    def run(task):
        tree = tmp_path / task.id
        A.build(tree, task_ids=[task.id])
        # (no hypothesis plugin: the task tests do not use it, and loading it doubles a run's start-up time)
        return task, A.run_tests(tree, (A.TASK_TESTS,), markexpr=task.marker, extra_args=("-p", "no:hypothesispytest"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, A.TASKS))
    for task, result in results:
        assert result["tests"], (task.id, result["output"][-2000:])
        for nodeid, entry in result["tests"].items():
            assert entry["outcome"] == "failed", (task.id, nodeid)
            assert entry["message"].startswith(f"NotImplementedError: {task.id}:"), (task.id, nodeid, entry["message"])


# --- grading with the instructor's tests, and submissions ------------------------------------------------

SOLVED = ("tinydgl/ops/activation.py", "tinydgl/ops/linear.py", "tinydgl/ops/losses.py")  # these files' tasks done
SOLVED_TASKS = {"a1-relu-backward", "a1-linear-backward", "a1-softmax-ce", "a2-mse-loss", "a5-linear-jvp"}

# What a student might do to the tests: every task's test becomes `assert True`, and conftest.py turns any
# failure into a pass. Either alone gives full marks when a tree's own tests grade it.
FAKE_CONFTEST = """
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().outcome = "passed"
"""


def points(rows):
    return {r["task"]: (r["done"], r["points"]) for r in rows}


@pytest.fixture(scope="module")
def partly_solved(student, tmp_path_factory):
    """The student copy with the tasks of SOLVED done (the solution's files copied in)."""
    tree = tmp_path_factory.mktemp("partly") / "student"
    shutil.copytree(student, tree)
    for f in SOLVED:
        shutil.copy2(A.source_root() / f, tree / f)
    return tree


def test_the_student_stubs_score_zero_even_from_a_zip_of_the_whole_folder(student, tmp_path, capsys):
    """A student who zips the whole folder (not `submit`'s zip) is graded on its task files, as Gradescope's
    autograder grades the same zip, and told in one short line what was not graded."""
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as z:
        for path in sorted(student.rglob("*")):
            if path.is_file():
                z.write(path, f"my-course/{path.relative_to(student).as_posix()}")
    assert main(["assignments", "grade", str(whole), "--json", str(tmp_path / "scores.json")]) == 0
    note = capsys.readouterr().out.splitlines()[0]
    assert note.startswith("Ignored ") and "tests/ (" in note and len(note) < 300, note
    rows = json.loads((tmp_path / "scores.json").read_text())["tasks"]
    assert all(r["tests"] > 0 and r["points"] == 0 and not r["done"] for r in rows), rows
    # the Gradescope autograder takes the very same files from it, and says the same
    files = A.task_files(student)
    (tmp_path / "submission").mkdir()
    shutil.copy2(whole, tmp_path / "submission" / "whole.zip")
    given, ignored = A.gather_submission(tmp_path / "submission", files)
    assert sorted(given) == files and all(given[f] == (student / f).read_bytes() for f in files)
    assert A.ignored_note(ignored) == note


def test_a_student_copy_grading_itself_says_it_is_practice(student, capsys):
    assert main(["assignments", "grade", str(student), "--source", str(student)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("practice grade: with the tests of the student copy") and f"0/{len(A.TASKS)}" in out


# passes both visible tests of a1-relu-backward, but overwrites the caller's dout (a hidden test checks it)
IN_PLACE_RELU = """    dx = dout
    dx *= cache
"""


def test_hidden_tests_grade_a_task_the_visible_ones_pass(partly_solved, tmp_path):
    tree = tmp_path / "in-place"
    shutil.copytree(partly_solved, tree)
    path = tree / "tinydgl" / "ops" / "activation.py"
    region = next(r for r in A.find_regions(A.source_root()) if r.task_id == "a1-relu-backward")
    lines = (A.source_root() / region.file).read_text().splitlines(keepends=True)
    lines[region.begin - 1 : region.end] = [IN_PLACE_RELU]
    path.write_text("".join(lines))
    visible = A.score(
        A.run_tests(tree, (A.TASK_TESTS,), markexpr="task_a1_relu_backward"), [A.TASKS_BY_ID["a1-relu-backward"]]
    )
    assert visible[0]["done"], visible  # the student's own run: all visible tests pass ...
    rows, errors = A.grade(tree)
    relu = next(r for r in rows if r["task"] == "a1-relu-backward")
    assert errors == [] and not relu["done"] and relu["points"] == 0  # ... the grader's hidden one does not
    assert relu["reason"] == A.HIDDEN_FAILURE and relu["failed"] == ["(a hidden test)"], relu


def test_edited_tests_do_not_change_the_score(partly_solved, tmp_path):
    rows, errors = A.grade(partly_solved)
    assert errors == []
    assert {r["task"] for r in rows if r["done"]} == SOLVED_TASKS, rows
    cheat = tmp_path / "cheat"
    shutil.copytree(partly_solved, cheat)
    (cheat / A.TASK_TESTS).write_text(
        "import pytest\n"
        + "".join(f"\n\n@pytest.mark.{t.marker}\ndef test_{t.marker}():\n    assert True\n" for t in A.TASKS)
    )
    with open(cheat / "tests" / "conftest.py", "a") as f:
        f.write(FAKE_CONFTEST)
    # the cheat works where a tree's own tests grade it ...
    own = A.score(A.run_tests(cheat, (A.TASK_TESTS,), markexpr=" or ".join(t.marker for t in A.TASKS)))
    assert all(r["done"] for r in own), own
    # ... and changes nothing in `grade`
    cheated, errors = A.grade(cheat)
    assert errors == [] and points(cheated) == points(rows)


def test_submit_zips_exactly_the_task_files_and_grades_like_the_tree(partly_solved, tmp_path, capsys):
    manifest = json.loads((partly_solved / A.MANIFEST).read_text())
    files = manifest["task_files"]
    assert files == sorted({t["file"] for t in manifest["tasks"]}) and set(SOLVED) <= set(files)
    out = tmp_path / "hand-in.zip"
    assert main(["assignments", "submit", str(partly_solved), str(out)]) == 0
    assert f"{len(files)} task files" in capsys.readouterr().out
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == files
        assert all(z.read(f) == (partly_solved / f).read_bytes() for f in files)
    with ThreadPoolExecutor(max_workers=2) as pool:
        (from_tree, _), (from_zip, errors) = pool.map(A.grade, (partly_solved, out))
    assert errors == [] and from_zip == from_tree
    assert 0 < sum(r["points"] for r in from_zip) < sum(r["max_points"] for r in from_zip)


def test_bad_submissions_are_explained(student, tmp_path):
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("tests/test_assignments_tasks.py", "")
        z.writestr("notes/linear.txt", "")
    with pytest.raises(A.AssignmentError, match="holds none of the task files"):
        A.grade(foreign)
    (tmp_path / "notes.txt").write_text("not a zip")
    with pytest.raises(A.AssignmentError, match="neither a folder nor a zip"):
        A.grade(tmp_path / "notes.txt")
    with pytest.raises(A.AssignmentError, match="holds none of the task files"):
        A.grade(tmp_path)
    with pytest.raises(A.AssignmentError, match="no assignments/manifest.json and no solution markers"):
        A.submit(tmp_path, tmp_path / "out.zip")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(student, incomplete)
    (incomplete / "tinydgl" / "ops" / "norm.py").unlink()
    with pytest.raises(A.AssignmentError, match="lacks tinydgl/ops/norm.py"):
        A.submit(incomplete, tmp_path / "out.zip")


# --- the exported autograders: Gradescope and GitHub Classroom -------------------------------------------


def test_the_gradescope_autograder_grades_with_pristine_tests(student, tmp_path, capsys):
    """The zip unpacked as Gradescope would (AUTOGRADER_ROOT/source), run_autograder run with this Python (no
    setup.sh, no pip): the solution's task files get full marks, the stubs (as the zip `submit` writes) 0, and a
    whole student repository with tests that always pass still 0."""
    import os
    import subprocess
    import sys

    out = tmp_path / "autograder.zip"
    assert main(["assignments", "gradescope", str(out)]) == 0
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert {"setup.sh", "run_autograder", "requirements.txt", "course/" + A.MANIFEST} <= set(names)
        assert "course/" + A.TASK_TESTS in names and "course/tests/test_assignments.py" not in names
        assert all(
            "BEGIN SOLUTION" not in z.read(n).decode(errors="replace")
            for n in names
            if n.startswith("course/tinydgl/") and not n.startswith("course/tinydgl/course/")
        )
        assert z.getinfo("run_autograder").external_attr >> 16 & 0o111
    files = json.loads((student / A.MANIFEST).read_text())["task_files"]

    def submission(name, fill):
        root = tmp_path / name
        with zipfile.ZipFile(out) as z:
            z.extractall(root / "source")
        fill(root / "submission")
        return root

    def solution(folder):  # the task files at their paths, as Gradescope unpacks the hand-in zip
        for f in files:
            (folder / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(A.source_root() / f, folder / f)

    def stubs(folder):  # the hand-in zip itself
        folder.mkdir()
        A.submit(student, folder / "hand-in.zip")

    def cheat(folder):  # a whole repository (GitHub submission) with tests that pass whatever the code does
        shutil.copytree(student, folder)
        (folder / A.TASK_TESTS).write_text(
            "import pytest\n"
            + "".join(f"\n\n@pytest.mark.{t.marker}\ndef test_{t.marker}():\n    assert True\n" for t in A.TASKS)
        )
        with open(folder / "tests" / "conftest.py", "a") as f:
            f.write(FAKE_CONFTEST)

    def run(root):
        env = dict(os.environ, AUTOGRADER_ROOT=str(root), TINYDGL_PYTHON=sys.executable)
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            ["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads((root / "results" / "results.json").read_text())

    roots = [submission(n, fill) for n, fill in (("solution", solution), ("stubs", stubs), ("cheat", cheat))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        full, zero, cheated = pool.map(run, roots)
    total = sum(t.points for t in A.TASKS)
    assert [t["name"] for t in full["tests"]] == [f"{t.id}: {t.title}" for t in A.TASKS]
    assert [t["max_score"] for t in full["tests"]] == [t.points for t in A.TASKS]
    assert full["score"] == total and all(
        t["score"] == t["max_score"] and t["status"] == "passed" for t in full["tests"]
    ), full
    for result in (zero, cheated):
        assert result["score"] == 0 and len(result["tests"]) == len(A.TASKS), result
        for t in result["tests"]:
            assert t["score"] == 0 and t["status"] == "failed" and "NotImplementedError: a" in t["output"], t
    assert "Ignored" in cheated["output"] and "tests/ (" in cheated["output"] and len(cheated["output"]) < 1000
    assert [t["output"] for t in cheated["tests"]] == [t["output"] for t in zero["tests"]]
    # nothing to grade: 0 and what to hand in
    empty = submission("empty", lambda folder: folder.mkdir())
    (empty / "submission" / "notes.txt").write_text("hello")
    result = run(empty)
    assert result["score"] == 0 and result["tests"] == [] and "tinydgl assignments submit" in result["output"]


def test_the_classroom_workflow_has_a_step_per_task(student, tmp_path):
    import subprocess

    yaml = pytest.importorskip("yaml")
    repo = tmp_path / "repo"
    shutil.copytree(student, repo)
    assert main(["assignments", "classroom", str(repo)]) == 0
    workflow = yaml.safe_load((repo / ".github" / "workflows" / "classroom.yml").read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    graders = [s for s in steps if s.get("uses", "").startswith("classroom-resources/autograding-command-grader")]
    assert [(s["id"], s["with"]["max-score"]) for s in graders] == [(t.marker, t.points) for t in A.TASKS]
    assert all(f"-m {s['id']} {A.TASK_TESTS}" in s["with"]["command"] for s in graders)
    reporter = steps[-1]
    assert reporter["with"]["runners"].split(",") == [t.marker for t in A.TASKS]
    assert set(reporter["env"]) == {t.marker.upper() + "_RESULTS" for t in A.TASKS}
    # the digest the workflow checks is what its shell pipeline computes on the course as handed out
    setup = next(s for s in steps if "git worktree" in s.get("run", ""))["run"]
    digest = setup.split(" = ")[1].split()[0]
    files = json.loads((student / A.MANIFEST).read_text())["task_files"]
    (tmp_path / "task_files").write_text("\n".join(files) + "\n")
    computed = subprocess.run(
        ["bash", "-c", A.DIGEST_COMMAND],
        cwd=student,
        capture_output=True,
        text=True,
        env={"RUNNER_TEMP": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert computed == digest
    (repo / "tests" / "conftest.py").write_text("# edited\n")
    assert A.tree_digest(repo, set(files)) != digest
    with pytest.raises(A.AssignmentError, match="exists"):
        A.classroom(repo)
