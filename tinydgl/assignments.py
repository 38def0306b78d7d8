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
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from dataclasses import dataclass
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
STUDENT_COPY = ("tinydgl", "tests", "lessons", "notebooks", "pyproject.toml", "README.md", "LICENSE", "NOTICE", "CHANGELOG.md",
                "MANIFEST.in", "benchmarks/RESULTS.md")
# "Everything else" for the CI check: test files that use no marked code, so they pass in a student tree
# before any task is done. (Most other test files train models, which needs assignment 1's backward passes.)
INDEPENDENT_TESTS = ("tests/test_data_idx.py", "tests/test_data_cifar.py", "tests/test_loader.py")


class AssignmentError(Exception):
    """Something an instructor can fix: a bad marker, an output folder in the way, a tree without tests."""


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    lessons: tuple  # lesson files (lessons/...) to read first
    intro: str


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    what: str  # what to implement, for the handout (the hint is in the code's marker)
    points: int = 10

    @property
    def assignment(self):
        return self.id.split("-")[0].upper()

    @property
    def marker(self):
        return marker_name(self.id)


ASSIGNMENTS = (
    Assignment("A1", "Layers and their gradients",
               ("02-linear-softmax-gradcheck.md", "03-convolution.md", "04-pooling-relu-batchnorm.md"),
               "Every layer is a pair of functions: `forward` returns `(out, cache)`, `backward(dout, cache)` returns "
               "the gradients of its inputs. Write the backward passes (and the naive convolution) and check each one "
               "numerically: a gradient is right when it matches a central difference."),
    Assignment("A2", "Backprop versus synthetic gradients",
               ("05-backprop-and-locks.md", "06-synthetic-gradients.md"),
               "Where does each block's gradient come from? In backprop, from the block above, which locks every "
               "block until the whole network has run. DNI replaces it by a synthesizer's prediction, trained by "
               "regression on what the block above sends back. Write the backprop step, the regression loss, and "
               "the two places where DNI decides a gradient."),
    Assignment("A3", "Local learning: DGL and LLS",
               ("07-greedy-and-dgl.md", "09-lls.md"),
               "Cut the network into modules that each learn from a loss of their own, so that no gradient crosses "
               "a module boundary. Write how the network is cut, the local update every local method shares, and "
               "LLS's fixed basis of waves with the normalisation in front of it."),
    Assignment("A4", "Feedback alignment",
               ("11-feedback-alignment.md",),
               "Send the error down through fixed random matrices instead of the transposed weights, and measure how "
               "close that comes to backprop. Write how DFA (and sDFA) hands the output error to every hidden block, "
               "DRTP's target made of the label alone, and the cosine with which the alignment probe compares a "
               "method's gradient with backprop's."),
    Assignment("A5", "Learning with forward passes only",
               ("13-forward-only.md",),
               "Learn with no backward pass through the network. Write a layer's forward-mode derivative (its JVP), "
               "the forward-gradient estimate built from directional derivatives, and PEPITA's update from two "
               "forward passes."),
)

TASKS = (
    Task("a1-linear-backward", "Linear layer: backward",
         "`linear_backward(dout, cache, compute_dx)`: the gradients of `out = x @ w + b` with respect to x, w and b "
         "(dx is None when `compute_dx=False`, db is None without a bias)."),
    Task("a1-relu-backward", "ReLU: backward",
         "`relu_backward(dout, cache)`: pass the gradient where the input was positive (0 at x == 0, as PyTorch does); "
         "keep dout's dtype."),
    Task("a1-softmax-ce", "Softmax cross-entropy and its gradient",
         "`softmax_cross_entropy(logits, y, label_smoothing)`: the mean cross-entropy of softmax(logits) against the "
         "(optionally smoothed) one-hot labels, computed stably with `log_softmax`, and dlogits = (softmax - target) / N."),
    Task("a1-conv-naive-forward", "Convolution with loops: forward",
         "`conv2d_forward_naive`: four nested loops over images, filters and output pixels, with stride, zero padding "
         "and groups. It is the reference the fast im2col convolution is tested against."),
    Task("a1-conv-naive-backward", "Convolution with loops: backward",
         "`conv2d_backward_naive`: scatter each output pixel's gradient back to its input patch (dx) and to its "
         "filter (dw); db sums dout."),
    Task("a1-maxpool-naive-backward", "Max pooling with loops: backward",
         "`maxpool2d_backward_naive`: each window's gradient goes to the first position of its maximum; overlapping "
         "windows add up."),
    Task("a1-batchnorm-backward", "Batch norm: backward in training mode",
         "`batchnorm_backward`: in training mode the batch statistics depend on every input, which gives "
         "dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout * x_hat)) per channel. dgamma and dbeta are "
         "given; build dx in the channels-last `rows` layout the function already uses.", points=15),
    Task("a2-bp-train-step", "The backprop training step",
         "`BackpropTrainer.train_step`: forward through every block, `self.output_loss` at the top (softmax "
         "cross-entropy; feedback alignment's trainers take this step with theirs), backward from "
         "the top block down (each block's input gradient is the output gradient of the block below; the first block "
         "needs none), then one optimizer step. Return the loss."),
    Task("a2-mse-loss", "Mean squared error, the synthesizers' loss",
         "`mse_loss(pred, target)`: the mean over all elements of (pred - target)^2 as a Python float, and its "
         "gradient with pred's shape."),
    Task("a2-dni-gradient", "DNI: where a group's gradient comes from",
         "`DNITrainer._gradient(i, from_above)`: the true loss gradient for the top group; for the others the "
         "synthesizer's prediction (mixed with `from_above` under BP(lambda)), scaled by `sg_scale` and converted "
         "from per-example units (see the class docstring, \"Units\")."),
    Task("a2-dni-synthesizer-target", "DNI: the synthesizers' regression target",
         "In `DNITrainer._update_group`: what group i sends back (dx) is the regression target of the synthesizer "
         "below it, M_(i-1), in per-example units and without `sg_scale`. Train M_(i-1) on it and return it."),
    Task("a3-split-blocks", "Cutting the network into modules",
         "`split_blocks(num_hidden, modules, boundaries)`: consecutive groups of block indices, either starting at "
         "the given boundaries or K groups as equal as possible (earlier ones larger); one module per block by "
         "default. Impossible requests raise a ValueError that says what is allowed."),
    Task("a3-local-step", "The local update",
         "`LocalModule.step(x, y)`: forward the module's body, take its local loss, backpropagate through the body "
         "only (no gradient reaches the input: that is what unlocks the modules), step its optimizer, and return "
         "the loss and the output."),
    Task("a3-l2-normalize-backward", "L2 normalisation: backward",
         "`l2_normalize_backward`: the gradient of out = x / ||x|| per row, (dout - out * <dout, out>) / ||x||, and "
         "dout / eps for rows whose norm was below eps."),
    Task("a3-lls-basis", "LLS: the fixed basis of waves",
         "`lls_basis(n_classes, d, waveform, rng)`: the matrix B of the docstring for the sin, square, cosine and "
         "random waveforms."),
    Task("a4-dfa-signal", "DFA: the output error, straight to every hidden block",
         "`DFATrainer.train_step`, after the forward pass and the classifier's true gradient (both given): "
         "project the error signal (`self.error_signal`: e for DFA, its sign for sDFA) through each hidden block's "
         "fixed matrix B_l and back-propagate it inside that block only. No gradient crosses from a block to the one "
         "below, and no block computes its input gradient."),
    Task("a4-drtp-target", "DRTP: a target made of the label",
         "`RandomTargetModule.local_loss(out, y)`: DRTP's hidden block has no loss (return NaN) and learns from "
         "delta = onehot(y) @ B / N, in the block's output shape and dtype."),
    Task("a4-alignment-cosine", "The alignment probe's cosine",
         "`block_cosines(model, handed, true)`: for each block, the cosine between the concatenation of all its "
         "handed parameter gradients and that of its true ones (one vector each, not a cosine per parameter), "
         "computed in float64; NaN when either vector is zero. (Blocks without parameters, or with a parameter "
         "that got no gradient, are handled above your code.)"),
    Task("a5-linear-jvp", "Linear layer: forward mode",
         "`linear_jvp(cache, dx, dw, db)`: the output tangent of `out = x @ w + b` for the tangents of x, w and b "
         "(each may be None: it does not move), by the product rule; None when nothing moves."),
    Task("a5-forward-gradient", "The forward-gradient estimate",
         "In `ForwardGradientModule._weight_perturbation`, once the random tangents are set: the loss's slope along "
         "them (one forward-mode pass, `jvp`, no backward) and each parameter's estimate, slope times its tangent, "
         "averaged over the `directions` directions."),
    Task("a5-pepita-update", "PEPITA: two forward passes and the update",
         "`PEPITATrainer.train_step`, after the clean pass (given): the pass on the input modulated by the projected "
         "error, then each hidden block's gradient from the difference of its two outputs and the last block's "
         "from the modulated pass's error, each through the block's Linear layer (no input gradients)."),
)
TASKS_BY_ID = {t.id: t for t in TASKS}


def marker_name(task_id):
    """The pytest marker of a task: `a1-relu-backward` -> `task_a1_relu_backward`."""
    return "task_" + task_id.replace("-", "_")


def assignment_marker(assignment_id):
    """The pytest marker of every task of an assignment: `A1` -> `assignment_a1`."""
    return "assignment_" + assignment_id.lower()


def source_root():
    """The repository this tinydgl was imported from (a source checkout, with tests/)."""
    return Path(__file__).resolve().parent.parent


def check_output(path, folder=False):
    """Check, before any work, that an output can be written: a file (a zip, a JSON; its folder is made if
    need be) or, with folder=True, a new or empty folder (made here). Raises AssignmentError saying why not."""
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
        raise AssignmentError(f"cannot write to {where}: {err.strerror or err}. Choose a folder you can write "
                              "to.") from None


# --- markers --------------------------------------------------------------------------------------------

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
                raise AssignmentError(f"{where}: BEGIN SOLUTION inside the region opened at line {open_region[1]} "
                                      "(regions cannot nest): close that one with '# END SOLUTION' first.")
            task_id = begin["rest"].strip()
            if not TASK_ID.match(task_id):
                raise AssignmentError(f"{where}: expected '# BEGIN SOLUTION <task-id>' with an id like a1-relu-backward "
                                      f"(the hint goes on '# hint:' lines below), got {line.strip()!r}.")
            open_region = (task_id, number, begin["indent"])
        elif end:
            if open_region is None:
                raise AssignmentError(f"{where}: END SOLUTION without a BEGIN SOLUTION above it.")
            task_id, start, indent = open_region
            if end["rest"].strip():
                raise AssignmentError(f"{where}: '# END SOLUTION' takes nothing after it, got {line.strip()!r}.")
            if end["indent"] != indent:
                raise AssignmentError(f"{where}: END SOLUTION is not indented like its BEGIN (line {start}).")
            body = lines[start:number - 1]
            hints = []
            for body_line in body:
                hint = HINT.match(body_line)
                if not hint:
                    break
                hints.append(hint["text"].strip())
            code = [b for b in body[len(hints):] if b.strip()]
            if not code:
                raise AssignmentError(f"{where}: the region of {task_id} (from line {start}) holds no code.")
            if not hints:
                raise AssignmentError(f"{file}:{start}: {task_id} has no hint: add '# hint: ...' lines under BEGIN.")
            if any(not b.startswith(indent) for b in code):
                raise AssignmentError(f"{file}:{start}: a line of {task_id}'s region is indented less than its markers.")
            regions.append(Region(task_id, file, start, number, indent, " ".join(hints)))
            open_region = None
        elif "BEGIN SOLUTION" in line or "END SOLUTION" in line:
            if line.strip().startswith("#"):
                raise AssignmentError(f"{where}: malformed marker {line.strip()!r}: a marker is a comment line on its "
                                      "own, '# BEGIN SOLUTION <task-id>' or '# END SOLUTION'.")
    if open_region is not None:
        raise AssignmentError(f"{file}:{open_region[1]}: BEGIN SOLUTION {open_region[0]} is never closed by '# END SOLUTION'.")
    return regions


def find_regions(root=None):
    """Every marked region under root/tinydgl, in file order. This module (which describes them) is skipped."""
    root = Path(root or source_root())
    regions = []
    for path in sorted((root / "tinydgl").rglob("*.py")):
        if path.name == "assignments.py" and path.parent.name == "tinydgl":
            continue
        regions += scan_markers(path.read_text(), path.relative_to(root).as_posix())
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
            problems.append(f"task {r.task_id} is marked twice: {seen[r.task_id]} and {r.file}:{r.begin} (ids are unique)")
        seen[r.task_id] = f"{r.file}:{r.begin}"
        if r.task_id not in TASKS_BY_ID:
            problems.append(f"{r.file}:{r.begin}: region for unknown task {r.task_id!r}: add it to TASKS in tinydgl/assignments.py")
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


# --- solutions must not leak ----------------------------------------------------------------------------

# A line is compared without its comment, a doctest prompt and any whitespace. Lines shorter than this
# (`h = x`, `dx *= dout`, `self.optimizer.step()`, `for i in range(n):`) are everyone's code, not a solution's.
SIGNIFICANT = 28
_COMMENT = re.compile(r"(^|\s)#(\s.*)?$")
_PROMPT = re.compile(r"^\s*(>>>|\.\.\.)\s")
# The files of a student copy (and pages of the site) that are read for leaks; the rest is binary
TEXT_SUFFIXES = (".py", ".md", ".ipynb", ".txt", ".toml", ".json", ".yml", ".yaml", ".cfg", ".in", ".html")


def code_key(line):
    """A line as compared for leaks: without a doctest prompt, its comment and any whitespace."""
    return re.sub(r"\s+", "", _COMMENT.sub("", _PROMPT.sub("", line)))


def solution_keys(region, text):
    """The significant lines of a region's solution (their `code_key`s, in order); text is its file's text."""
    keys = (code_key(line) for line in text.splitlines()[region.begin:region.end - 1])
    return [k for k in keys if len(k) >= SIGNIFICANT]


def find_leaks(text, solutions):
    """Where `text` repeats a solution: a sorted list of (line number, task id), lines counted from 1.

    solutions is {task id: its significant lines (`solution_keys`)}. A solution leaks where two of its
    significant lines that follow each other follow each other in text too (short lines between them do not
    count), or, for a solution with one significant line, wherever that line is. Give a notebook's or a web
    page's text as `readable_text` makes it."""
    significant = [(n, k) for n, k in ((n, code_key(line)) for n, line in enumerate(text.splitlines(), 1))
                   if len(k) >= SIGNIFICANT]
    found = set()
    for task_id, keys in solutions.items():
        if len(keys) == 1:
            found |= {(n, task_id) for n, k in significant if k == keys[0]}
        elif keys:
            pairs = set(zip(keys, keys[1:]))
            found |= {(n, task_id) for (n, k), (_, after) in zip(significant, significant[1:]) if (k, after) in pairs}
    return sorted(found)


def readable_text(path):
    """The text of a file as a reader sees its code, line for line: a notebook's JSON lines that are strings
    become those strings; a web page loses its tags (its <pre> blocks keep their lines)."""
    import html
    path = Path(path)
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        def line(raw):
            raw = raw.strip().removesuffix(",")
            try:
                value = json.loads(raw) if raw.startswith('"') else None
            except ValueError:
                value = None
            return value.rstrip("\n") if isinstance(value, str) else raw
        return "\n".join(line(raw) for raw in text.splitlines())
    if path.suffix == ".html":
        return html.unescape(re.sub(r"<[^>]+>", "", text))
    return text


def leaks_in(folder, solutions):
    """['path:line: <task id>'] for every text file under folder that repeats a solution (see `find_leaks`)."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("*")):
        if path.suffix in TEXT_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
            found += [f"{path.relative_to(folder).as_posix()}:{n}: {task_id}"
                      for n, task_id in find_leaks(readable_text(path), solutions)]
    return found


def solutions(root=None, task_ids=None):
    """{task id: significant lines of its solution} of the instructor's checkout `root` (default: this one)."""
    root = Path(root or source_root())
    texts = {}
    return {r.task_id: solution_keys(r, texts.setdefault(r.file, (root / r.file).read_text()))
            for r in find_regions(root) if task_ids is None or r.task_id in task_ids}


# --- build ----------------------------------------------------------------------------------------------

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


def _select(assignments=None, task_ids=None):
    chosen = [t for t in TASKS if (not assignments or t.assignment in {a.upper() for a in assignments})
              and (not task_ids or t.id in task_ids)]
    unknown = sorted(set(task_ids or ()) - set(TASKS_BY_ID))
    if unknown:
        raise AssignmentError(f"unknown task(s) {', '.join(unknown)}; the tasks are: {', '.join(TASKS_BY_ID)}")
    if not chosen:
        raise AssignmentError("no task matches the given --assignment/--task")
    return chosen


def build(out, root=None, assignments=None, task_ids=None, hidden=False):
    """Write a student copy of the library to `out`: returns the manifest (also written to out/assignments/).

    assignments (e.g. ["A1"]) or task_ids choose the tasks to stub (default: all); the others stay solved.
    hidden=True keeps the hidden tests (HIDDEN_TESTS): for the graders' own course, never for students.
    Refuses (AssignmentError, and nothing is left in `out`) when a stubbed task's solution would survive
    elsewhere in the copy (`find_leaks`).
    """
    root, out = Path(root or source_root()), Path(out)
    if not (root / TASK_TESTS).is_file():
        raise AssignmentError(f"{root} is not a source checkout of tinydgl (no {TASK_TESTS}); build from a clone of "
                              "the repository, installed with pip install -e .")
    problems = check(root)
    if problems:
        raise AssignmentError("the solution markers are inconsistent:\n  " + "\n  ".join(problems))
    chosen = _select(assignments, task_ids)
    created = not out.exists()
    check_output(out, folder=True)
    try:
        return _write_student_copy(root, out, chosen, hidden)
    except BaseException as err:
        # nothing half-written stays behind: the folder was new, or empty
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for path in out.iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise AssignmentError(f"could not write the student copy to {out}: {err.strerror or err}.") from err
        raise


def _write_student_copy(root, out, chosen, hidden):
    """`build`'s work, into the empty folder `out`: the copy, its stubs, handouts, manifest and README."""
    chosen_ids = {t.id for t in chosen}
    regions = {r.task_id: r for r in find_regions(root)}
    tests, _ = find_task_tests(root)
    hidden_tests = {t: [n for n in ids if n.startswith(HIDDEN_TESTS + "::")] for t, ids in tests.items()}
    if not hidden:
        tests = {t: [n for n in ids if n not in hidden_tests[t]] for t, ids in tests.items()}

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis")
    for name in STUDENT_COPY:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, out / name, ignore=ignore)
        elif src.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / name)
    for rel in INSTRUCTOR_ONLY + (() if hidden else (HIDDEN_TESTS,)):
        if (out / rel).is_dir():
            shutil.rmtree(out / rel)
        else:
            (out / rel).unlink(missing_ok=True)

    by_file = {}
    for task_id in chosen_ids:
        by_file.setdefault(regions[task_id].file, []).append(regions[task_id])
    for file, file_regions in by_file.items():
        lines = (root / file).read_text().splitlines()
        for r in sorted(file_regions, key=lambda r: r.begin, reverse=True):  # bottom up: line numbers stay valid
            lines[r.begin - 1:r.end] = stub(r, f"assignments/{TASKS_BY_ID[r.task_id].assignment}.md")
        text = "\n".join(lines) + "\n"
        try:
            compile(text, file, "exec")
        except SyntaxError as err:
            raise AssignmentError(f"the student copy of {file} does not compile ({err}): check its markers.") from err
        (out / file).write_text(text)

    texts = {r.file: (root / r.file).read_text() for r in regions.values()}
    manifest = {
        "format": 1,
        "grade_command": "tinydgl assignments grade",
        "task_tests": TASK_TESTS,
        "task_files": sorted({r.file for r in regions.values()}),  # what `submit` hands in (whole files)
        "independent_tests": list(INDEPENDENT_TESTS),
        "assignments": [{"id": a.id, "title": a.title, "handout": f"assignments/{a.id}.md",
                         "tasks": [t.id for t in TASKS if t.assignment == a.id]} for a in ASSIGNMENTS],
        "tasks": [{
            "id": t.id, "assignment": t.assignment, "title": t.title, "points": t.points, "marker": t.marker,
            "file": regions[t.id].file, "function": enclosing_function(texts[regions[t.id].file], regions[t.id].begin),
            "solution_lines": [regions[t.id].begin, regions[t.id].end], "hint": regions[t.id].hint,
            "stubbed": t.id in chosen_ids, "tests": tests[t.id], "hidden_tests": len(hidden_tests.get(t.id, [])),
        } for t in TASKS],
    }
    handouts = out / "assignments"
    handouts.mkdir(exist_ok=True)
    (handouts / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for a in ASSIGNMENTS:
        (handouts / f"{a.id}.md").write_text(handout(a, manifest))
        (handouts / f"{a.id}.ipynb").write_text(json.dumps(notebook(a, manifest), indent=1) + "\n")
    (handouts / "README.md").write_text(index(manifest))
    (out / "README.md").write_text(student_readme(manifest))  # the repository's README is the instructor's
    _unlink_missing(out)

    leaks = leaks_in(out, {i: solution_keys(regions[i], texts[regions[i].file]) for i in chosen_ids})
    if leaks:
        solution = {i: f"{regions[i].file}:{regions[i].begin}" for i in chosen_ids}
        shown = "\n  ".join(f"{leak} (the solution is {solution[leak.rsplit(': ', 1)[1]]})" for leak in leaks[:20])
        raise AssignmentError(f"{len(leaks)} line(s) outside the marked regions repeat a solution, and would give it "
                              f"to students (paths as in {root}):\n  {shown}\nRewrite them (a docstring's example, "
                              "a lesson's code), or call the function the task implements instead of a copy of it.")
    return manifest


def handout(assignment, manifest):
    """The Markdown handout of one assignment."""
    tasks = [t for t in manifest["tasks"] if t["assignment"] == assignment.id]
    total = sum(t["points"] for t in tasks)
    reading = ", ".join(f"[{name[:2].lstrip('0')}. {name[3:-3].replace('-', ' ')}](../lessons/{name})"
                        for name in assignment.lessons)
    lines = [
        f"# Assignment {assignment.id[1:]}: {assignment.title}", "",
        assignment.intro, "",
        f"**Read first:** lessons {reading}.", "",
        "**How it works.** Each task is a place in the library that raises `NotImplementedError(\"<task id>: <hint>\")` "
        "under a `# TODO <task id>` comment. Replace those lines with your code; the rest of the function is "
        "given. Each task has its own tests: a task is done when they all pass.", "",
        "```console",
        f"$ python -m pytest -q -m {assignment_marker(assignment.id)}     # every task of this assignment",
        f"$ python -m pytest -q -m {tasks[0]['marker']}     # one task",
        "$ tinydgl assignments grade                          # the score table of all assignments",
        "```", "",
        "| task | what | where | points |",
        "|---|---|---|---|",
    ]
    for t in tasks:
        lines.append(f"| `{t['id']}` | {t['title']} | [`{t['function']}`](../{t['file']}) | {t['points']} |")
    lines += [f"| | **total** | | **{total}** |", ""]
    for t in tasks:
        task = TASKS_BY_ID[t["id"]]
        tests = ", ".join(f"`{n.split('::')[1]}`" for n in t["tests"])
        lines += [
            f"## `{t['id']}`: {t['title']} ({t['points']} points)", "",
            f"In [`{t['file']}`](../{t['file']}): {task.what}", "",
            f"*Hint:* {t['hint']}", "",
            f"*Graded by* `python -m pytest -q -m {t['marker']}` ({tests} in [`{manifest['task_tests']}`](../{manifest['task_tests']}))"
            + (f" and {t['hidden_tests']} hidden test{'s' if t['hidden_tests'] > 1 else ''} that only the autograder runs."
               if t.get("hidden_tests") else "."),
            "",
        ]
    if not any(t["stubbed"] for t in tasks):
        lines += ["(In this copy every task of this assignment is already solved.)", ""]
    return "\n".join(lines)


def notebook(assignment, manifest):
    """A Jupyter notebook (nbformat 4) to work through one assignment: the handout, then a cell per task that
    runs its tests. The tests run in a fresh Python each time, so edits to the library count without a restart."""

    def cell(kind, text):
        extra = {"execution_count": None, "outputs": []} if kind == "code" else {}
        return {"cell_type": kind, "metadata": {}, "source": text.strip("\n").splitlines(keepends=True), **extra}

    cells = [cell("markdown", handout(assignment, manifest).split("\n## ")[0]), cell("code", """
import os
import subprocess
import sys

ROOT = os.path.abspath("..")  # the student copy: this notebook lives in its assignments/ folder


def check(marker):
    \"\"\"Run the tests with this pytest marker (one task, or a whole assignment) and show pytest's report.\"\"\"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
                           "tests/test_assignments_tasks.py"], cwd=ROOT, capture_output=True, text=True)
    print((done.stdout + done.stderr)[-6000:])
""")]
    for t in manifest["tasks"]:
        if t["assignment"] == assignment.id:
            cells += [cell("markdown", f"## `{t['id']}`: {t['title']}\n\n{TASKS_BY_ID[t['id']].what}\n\n"
                                       f"Edit [`{t['file']}`](../{t['file']}), then run the tests:"),
                      cell("code", f'check("{t["marker"]}")')]
    cells += [cell("markdown", "## Your score"),
              cell("code", 'print(subprocess.run([sys.executable, "-m", "tinydgl", "assignments", "grade", ROOT],\n'
                           '                     capture_output=True, text=True).stdout)')]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 4,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}}}


def index(manifest):
    count = len(manifest["assignments"])
    words = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
    lines = ["# Assignments", "",
             f"{words[count] if count < len(words) else count} assignments, each a set of tasks in the library's own "
             "code, graded task by task. Do them in "
             "order: later tasks use earlier ones (a backprop step needs the layers' backward passes).", "",
             "| assignment | tasks | points |", "|---|---|---|"]
    for a in manifest["assignments"]:
        points = sum(t["points"] for t in manifest["tasks"] if t["id"] in a["tasks"])
        lines.append(f"| [{a['id']}: {a['title']}]({a['id']}.md) | {len(a['tasks'])} | {points} |")
    lines += ["", "Setup and grading:", "", "```console", "$ pip install -e \".[test]\"",
              "$ tinydgl assignments grade        # one line per task: tests passed, points",
              "$ tinydgl assignments submit hand-in.zip    # your task files (and nothing else), to hand in", "```", "",
              "Each assignment has a handout (`A1.md`, ...) and a notebook (`A1.ipynb`, ...) that runs each task's "
              "tests. `manifest.json` lists every task, its file, function, marker and tests.", ""]
    return "\n".join(lines)


def student_readme(manifest):
    """The student copy's README.md: what the copy is, how to install it, work on a task, grade and hand in."""
    first = manifest["tasks"][0]
    lines = [
        "# tinydgl: your copy of the course", "",
        "tinydgl is a small NumPy library that writes out, by hand, how deep networks learn with backprop and "
        "without it (synthetic gradients, local losses, feedback alignment). In this copy, the places of the "
        "assignments' tasks are left for you to write: each raises `NotImplementedError` under a "
        "`# TODO <task id>` comment.", "",
        "## Install", "",
        "```console",
        "$ pip install -e \".[test]\"       # in this folder",
        "```", "",
        "## Where to read", "",
        "- [Assignments](assignments/README.md): a handout per assignment (what each task is, where it is, how "
        "it is graded) and a notebook that runs each task's tests.",
        "- [Lessons](lessons/README.md): each handout says which to read first.",
        "- [Notebooks](notebooks/README.md): a step-through notebook per lesson.", "",
        "## Work on a task, grade, hand in", "",
        "```console",
        f"$ python -m pytest -q -m {first['marker']}     # one task's tests",
        "$ tinydgl assignments grade                     # the score table (a practice grade, with these tests)",
        "$ tinydgl assignments submit hand-in.zip        # your task files, and nothing else, to hand in",
        "```", "",
        "Do the assignments in order: training (`tinydgl train`, most notebooks and tests) needs the layers' "
        "backward passes of assignment 1, and stops at the first task that is not done yet.", "",
        "License: [MIT](LICENSE) (see also [NOTICE](NOTICE)); what changed between versions: "
        "[CHANGELOG.md](CHANGELOG.md).", "",
    ]
    return "\n".join(lines)


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.S | re.M)


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
            parts += [_LINK.sub(fix(page), text[last:block.start()]), block.group(0)]
            last = block.end()
        parts.append(_LINK.sub(fix(page), text[last:]))
        if "".join(parts) != text:
            page.write_text("".join(parts))


# --- running tests and grading --------------------------------------------------------------------------

# Runs in the graded tree's Python, so it depends on nothing of that tree: records each test's outcome and its
# task markers into the JSON file named by argv[1]; the rest of argv goes to pytest.
_RUNNER = r'''
import json, sys
import pytest

class Recorder:
    def __init__(self):
        self.tests, self.errors = {}, []

    def pytest_collection_finish(self, session):
        for item in session.items:
            tasks = sorted({m.name for m in item.iter_markers() if m.name.startswith("task_")})
            self.tests[item.nodeid] = {"tasks": tasks, "outcome": "not run", "message": ""}

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append(f"{report.nodeid}: {str(report.longrepr).strip().splitlines()[-1]}")

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(report.nodeid, {"tasks": [], "outcome": "not run", "message": ""})
        if report.failed and entry["outcome"] != "failed":
            crash = getattr(report.longrepr, "reprcrash", None)
            entry["outcome"] = "failed"
            entry["message"] = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1]
        elif report.skipped and entry["outcome"] == "not run":
            entry["outcome"] = "skipped"
        elif report.when == "call" and report.passed and entry["outcome"] != "failed":
            entry["outcome"] = "passed"

recorder = Recorder()
status = pytest.main(sys.argv[2:], plugins=[recorder])
with open(sys.argv[1], "w") as f:
    json.dump({"status": int(status), "tests": recorder.tests, "collection_errors": recorder.errors}, f)
'''


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
        proc = subprocess.run([sys.executable, "-c", _RUNNER, str(report), *args], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if not report.exists():
            raise AssignmentError(f"pytest did not run in {tree} (exit status {proc.returncode}):\n"
                                  + (proc.stdout + proc.stderr)[-3000:])
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
        failures = [HIDDEN_FAILURE if n.startswith(HIDDEN_TESTS + "::") else e["message"]
                    for n, e in mine.items() if e["outcome"] not in ("passed", "skipped")]
        done = bool(mine) and passed == len(mine)
        reason = "" if done else (failures[0] if failures else "no test of this task ran")
        other = STUB_ERROR.match(reason)
        if other and other["task"] != t.id:  # the tests reached another task's stub first
            reason = f"needs {other['task']} first ({reason})"
        failed = ["(a hidden test)" if n.startswith(HIDDEN_TESTS + "::") else n.split("::", 1)[-1]
                  for n, e in mine.items() if e["outcome"] not in ("passed", "skipped")]
        rows.append({"task": t.id, "assignment": t.assignment, "tests": len(mine), "passed": passed,
                     "done": done, "points": t.points if done else 0, "max_points": t.points, "reason": reason,
                     "failed": failed})
    return rows


def task_files(tree):
    """The files of `tree` that hold the tasks (relative, forward slashes): its manifest's `task_files` in a
    student copy, the files with solution markers in the instructor's checkout."""
    tree = Path(tree)
    if (tree / MANIFEST).is_file():
        manifest = json.loads((tree / MANIFEST).read_text())
        return manifest.get("task_files") or sorted({t["file"] for t in manifest["tasks"]})  # (older manifests)
    files = sorted({r.file for r in find_regions(tree)}) if (tree / "tinydgl").is_dir() else []
    if not files:
        raise AssignmentError(f"{tree.resolve()} has no {MANIFEST} and no solution markers: give the root of a "
                              "tinydgl student copy (made by 'tinydgl assignments build').")
    return files


def submit(tree, out):
    """Zip the task files of student copy `tree` (exactly its manifest's `task_files`) to `out`: returns them."""
    tree = Path(tree)
    files = task_files(tree)
    check_output(out)
    missing = [f for f in files if not (tree / f).is_file()]
    if missing:
        raise AssignmentError(f"{tree.resolve()} lacks {', '.join(missing)} (task files of its manifest): give the "
                              "root of your student copy.")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(tree / f, f)
    return files


def _submission(work):
    """{relative path: bytes} of a tree's task files or a `submit` zip's members, checked against the course."""
    work = Path(work)
    if work.is_file():
        if not zipfile.is_zipfile(work):
            raise AssignmentError(f"{work} is neither a folder nor a zip: give a student copy or the zip that "
                                  "'tinydgl assignments submit' wrote.")
        with zipfile.ZipFile(work) as z:
            return {name: z.read(name) for name in z.namelist() if not name.endswith("/")}
    if not work.is_dir():
        raise AssignmentError(f"{work} does not exist: give a student copy or a submission zip.")
    return None  # a tree: its task files are read once the course's list of them is known


def _pristine(source, out, hidden=True):
    """The course as handed out, in the new folder `out`, with `source`'s tests: built afresh (every task
    stubbed) from the instructor's checkout, with its hidden tests unless hidden=False, or copied from a
    student copy. Returns the task files."""
    source = Path(source)
    if not (source / TASK_TESTS).is_file():
        raise AssignmentError(f"{source.resolve()} has no {TASK_TESTS}: --source is the instructor's checkout of "
                              "tinydgl (or a student copy, for a practice grade).")
    if find_regions(source):
        return build(out, root=source, hidden=hidden)["task_files"]
    if not (source / MANIFEST).is_file():
        raise AssignmentError(f"{source.resolve()} has neither solution markers nor {MANIFEST}: --source is the "
                              "instructor's checkout of tinydgl (or a student copy, for a practice grade).")
    out.mkdir(parents=True)
    for name in (*STUDENT_COPY, MANIFEST):
        src = source / name
        if src.is_dir():
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        elif src.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / name)
    return task_files(out)


def grade(work=".", tasks=TASKS, source=None):
    """Score a student's work task by task with the instructor's tests: returns (rows of `score`, collection errors).

    work is a student copy (only its task files are used) or a zip written by `submit`. It goes over a fresh
    student copy built from `source` (default: the checkout this tinydgl was imported from) in a temporary
    folder, whose task tests run there in one pytest run. (A student copy as `source` gives a practice grade,
    with that copy's own tests.)
    """
    source = Path(source or source_root())
    given = _submission(work)
    with tempfile.TemporaryDirectory(prefix="tinydgl-grade-") as tmp:
        base = Path(tmp) / "course"
        files = _pristine(source, base)
        if given is None:
            given = {f: (Path(work) / f).read_bytes() for f in files if (Path(work) / f).is_file()}
        else:  # a zip: its task files, wherever they are in it (a whole folder zipped is fine), as Gradescope's
            given, _ = _pick(given, files)
        if not given:
            raise AssignmentError(f"{Path(work).resolve()} holds none of the task files ({', '.join(files)}): give "
                                  "the root of a student copy or its submission zip.")
        for name, data in given.items():
            (base / name).write_bytes(data)
        found, _ = find_task_tests(base)
        paths = sorted({n.split("::")[0] for ids in found.values() for n in ids}) or [TASK_TESTS]
        expr = " or ".join(t.marker for t in tasks)
        result = run_tests(base, paths, markexpr=expr)
    return score(result, tasks), result["collection_errors"]


def format_table(rows):
    width = max(len(r["task"]) for r in rows)
    lines = [f"{'task':<{width}}  {'tests':<7}  {'result':<6}  {'points':<7}  why not", "-" * (width + 40)]
    for r in rows:
        reason = r["reason"] if len(r["reason"]) <= 70 else r["reason"][:67] + "..."
        tests, points = f"{r['passed']}/{r['tests']}", f"{r['points']}/{r['max_points']}"
        lines.append(f"{r['task']:<{width}}  {tests:<7}  {'pass' if r['done'] else 'FAIL':<6}  {points:<7}  {reason}".rstrip())
    got, total = sum(r["points"] for r in rows), sum(r["max_points"] for r in rows)
    tasks_done, points = f"{sum(r['done'] for r in rows)}/{len(rows)}", f"{got}/{total}"
    lines += ["-" * (width + 40), f"{'total':<{width}}  {tasks_done:<7}  {'tasks':<6}  {points:<7}"]
    return "\n".join(lines)


# --- exporting the autograder: Gradescope and GitHub Classroom ------------------------------------------

# What grading needs besides the course copy itself (which goes in by PYTHONPATH, not pip): pinned to the
# versions this zip was built with where they are installed. array-api-strict is not optional: without it the
# task tests parametrized over its backend are skipped, and a task with a skipped test is not done.
AUTOGRADER_PACKAGES = ("numpy", "pytest", "array-api-strict")

GRADESCOPE_SETUP = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source, when it builds the autograder's image (with
# network access). It installs Python and the packages of requirements.txt into /autograder/venv; the course
# itself (course/: the student copy as handed out, with the instructor's tests) needs no install, as
# run_autograder puts it on PYTHONPATH.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip python3-venv
fi
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --upgrade pip
"$ROOT/venv/bin/python" -m pip install -r "$HERE/requirements.txt"
chmod +x "$HERE/run_autograder"
"""

GRADESCOPE_RUN = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission. It grades the task files found in $ROOT/submission (the zip of
# 'tinydgl assignments submit' as Gradescope unpacks it, the files of a GitHub/Bitbucket repository, or the
# bare files) with the pristine course in $ROOT/source/course, and writes $ROOT/results/results.json.
#   AUTOGRADER_ROOT  the folder Gradescope calls /autograder (default), e.g. a temporary one for a test
#   TINYDGL_PYTHON   the Python to grade with (default: the venv of setup.sh, else python3)
set -u
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PY="${TINYDGL_PYTHON:-$ROOT/venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
COURSE="$ROOT/source/course"
RESULTS="$ROOT/results/results.json"
mkdir -p "$ROOT/results"
rm -f "$RESULTS"
cd "$COURSE"
PYTHONPATH="$COURSE" OPENBLAS_NUM_THREADS=1 "$PY" -c \
    'import sys; from tinydgl.assignments import autograde; sys.exit(autograde(*sys.argv[1:]))' \
    "$ROOT/submission" "$COURSE" "$RESULTS"
status=$?
if [ ! -s "$RESULTS" ]; then  # the grader itself failed: say so rather than leave Gradescope without results
    printf '{"score": 0, "output": "The autograder failed (exit status %s): ask your instructor.", "tests": []}\n' \
        "$status" > "$RESULTS"
fi
"""


def _requirements():
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
    source, out = Path(source or source_root()), Path(out)
    check_output(out)
    names = []
    with tempfile.TemporaryDirectory(prefix="tinydgl-gradescope-") as tmp:
        course = Path(tmp) / "course"
        _pristine(source, course)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            def add(name, text, mode=0o644):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, text)
                names.append(name)
            add("setup.sh", GRADESCOPE_SETUP, 0o755)
            add("run_autograder", GRADESCOPE_RUN, 0o755)
            add("requirements.txt", _requirements())
            for path in sorted(course.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    rel = path.relative_to(Path(tmp)).as_posix()
                    z.write(path, rel)
                    names.append(rel)
    return names


def _gather(folder, files):
    """({task file: bytes}, [ignored names]) from a submission folder (see `_pick`; a zip in it is opened)."""
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
    return _pick(dict(found), files)


def _pick(contents, files):
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
    prefix = next((n[:len(n) - len(f)] for f, n in used.items() if n.endswith("/" + f)), "")
    ignored = sorted(n[len(prefix):] if n.startswith(prefix) else n for n in set(contents) - set(used.values()))
    return {f: contents[n] for f, n in used.items()}, ignored


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
    import time
    start = time.perf_counter()
    course = Path(course)
    files = task_files(course)
    given, ignored = _gather(submission, files)
    lines = []
    if not given:
        report = {"score": 0, "tests": [],
                  "output": "No task file found in the submission. Hand in the zip that 'tinydgl assignments submit "
                            f"hand-in.zip' writes (or the task files: {', '.join(files)})."}
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
            tests.append({"name": f"{r['task']}: {TASKS_BY_ID[r['task']].title}", "score": r["points"],
                          "max_score": r["max_points"], "status": "passed" if r["done"] else "failed", "output": text})
        report = {"score": sum(r["points"] for r in rows), "tests": tests, "output": "\n".join(lines)}
    report.update(execution_time=round(time.perf_counter() - start, 1), visibility="visible")
    Path(results).parent.mkdir(parents=True, exist_ok=True)
    Path(results).write_text(json.dumps(report, indent=2) + "\n")
    return 0


CLASSROOM_WORKFLOW = "classroom.yml"


def _tree_digest(root, skip):
    """The sha256 of `sha256sum`'s lines for every file of tinydgl/, tests/ and pyproject.toml under root but
    those in skip, in byte order: what the workflow's shell pipeline computes (see `classroom`)."""
    root = Path(root)
    paths = [p for name in ("tinydgl", "tests") for p in (root / name).rglob("*")] + [root / "pyproject.toml"]
    rels = sorted((p.relative_to(root).as_posix() for p in paths if p.is_file() and "__pycache__" not in p.parts),
                  key=lambda s: s.encode())
    import hashlib
    lines = "".join(f"{hashlib.sha256((root / r).read_bytes()).hexdigest()}  {r}\n" for r in rels if r not in skip)
    return hashlib.sha256(lines.encode()).hexdigest()


DIGEST_COMMAND = ("find tinydgl tests pyproject.toml -type f -not -path '*/__pycache__/*' | LC_ALL=C sort "
                  "| grep -vxF -f \"$RUNNER_TEMP/task_files\" | xargs sha256sum | sha256sum | cut -d' ' -f1")


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
    source, out_dir = Path(source or source_root()), Path(out_dir)
    path = out_dir / ".github" / "workflows" / CLASSROOM_WORKFLOW
    if path.exists():
        raise AssignmentError(f"{path} exists: remove it first (classroom never overwrites).")
    check_output(path)
    with tempfile.TemporaryDirectory(prefix="tinydgl-classroom-") as tmp:
        course = Path(tmp) / "course"
        files = _pristine(source, course, hidden=False)  # the template repository: what students have
        digest = _tree_digest(course, set(files))
    requirements = " ".join(f"'{r}'" for r in _requirements().split())
    ids = [t.marker for t in TASKS]
    lines = [
        "# Written by 'tinydgl assignments classroom': each task's tests, from the template as handed out (the",
        "# repository's first commit) with only the task files of this commit over it; a task scores its points",
        "# when all its tests pass.",
        "name: Autograding Tests",
        "'on': [push, repository_dispatch]",
        "permissions:", "  checks: write", "  actions: read", "  contents: read",
        "jobs:", "  run-autograding-tests:", "    runs-on: ubuntu-latest",
        "    if: github.actor != 'github-classroom[bot]'",
        "    steps:",
        "    - name: Checkout code", "      uses: actions/checkout@v4", "      with:", "        fetch-depth: 0",
        "    - uses: actions/setup-python@v5", "      with:", "        python-version: '3.12'",
        "    - name: The pristine course, with this commit's task files",
        "      run: |",
        f"        python -m pip install {requirements}",
        "        printf '%s\\n' " + " ".join(files) + " > \"$RUNNER_TEMP/task_files\"",
        "        first=$(git rev-list --max-parents=0 HEAD | tail -n 1)",
        "        git worktree add --detach .pristine \"$first\"",
        "        while read -r f; do cp \"$f\" \".pristine/$f\"; done < \"$RUNNER_TEMP/task_files\"",
        "        cd .pristine",
        f"        test \"$({DIGEST_COMMAND})\" = {digest} || {{ echo 'the first commit is not the course as handed out'; exit 1; }}",
    ]
    for t, step in zip(TASKS, ids):
        lines += [
            f"    - name: {t.id}", f"      id: {step}", "      uses: classroom-resources/autograding-command-grader@v1",
            "      with:", f"        test-name: {json.dumps(t.id + ': ' + t.title)}", "        setup-command: ''",
            f"        command: cd .pristine && python -m pytest -q -p no:cacheprovider -m {step} {TASK_TESTS}",
            "        timeout: 10", f"        max-score: {t.points}",
        ]
    lines += ["    - name: Autograding Reporter", "      uses: classroom-resources/autograding-grader-reporter@v1",
              "      env:"]
    lines += [f"        {step.upper()}_RESULTS: \"${{{{steps.{step}.outputs.result}}}}\"" for step in ids]
    lines += ["      with:", f"        runners: {','.join(ids)}", ""]
    path.write_text("\n".join(lines))
    return path


# --- the command line (wired into tinydgl.cli) ----------------------------------------------------------

def add_assignments_parser(subparsers):
    parser = subparsers.add_parser("assignments", help="build the student copy of the assignments, or grade one")
    sub = parser.add_subparsers(dest="assignments_command", required=True)
    b = sub.add_parser("build", help="write a student copy (solutions replaced by stubs) with handouts to OUT")
    b.add_argument("out", metavar="OUT", help="a new (or empty) folder")
    b.add_argument("--assignment", action="append", choices=[a.id for a in ASSIGNMENTS],
                   help="stub only this assignment's tasks (repeatable; default: all)")
    b.add_argument("--task", action="append", help="stub only this task (repeatable)")
    s = sub.add_parser("submit", help="zip the task files of a student copy (and nothing else) to hand in")
    s.add_argument("paths", metavar="[TREE] OUT.zip", nargs="+", help="root of the student copy (default: .), the zip to write")
    g = sub.add_parser("grade", help="score a student copy or a submission zip with the instructor's task tests",
                       description="Build a fresh student copy from --source in a temporary folder, put the task files "
                                   "of TREE (or of a zip written by 'submit') over it, and run its task tests: the "
                                   "student's own tests, conftest.py and other files are never used.")
    g.add_argument("tree", metavar="TREE|ZIP", nargs="?", default=".",
                   help="root of the student copy, or its submission zip (default: .)")
    g.add_argument("--source", default=None, metavar="DIR",
                   help="the instructor's checkout whose tests grade (default: the one this tinydgl is imported "
                        "from; a student copy there gives a practice grade with its own tests)")
    g.add_argument("--json", default=None, help="also write the scores as JSON here")
    sub.add_parser("check", help="check that the solution markers, task ids and task tests are consistent")
    gs = sub.add_parser("gradescope", help="write a Gradescope autograder zip (setup.sh, run_autograder, the course)")
    gs.add_argument("out", metavar="OUT.zip")
    gs.add_argument("--source", default=None, metavar="DIR", help="the instructor's checkout (default: this one)")
    gc = sub.add_parser("classroom", help="write OUT_DIR/.github/workflows/classroom.yml for GitHub Classroom")
    gc.add_argument("out", metavar="OUT_DIR", help="the student copy that becomes the template repository")
    gc.add_argument("--source", default=None, metavar="DIR", help="the instructor's checkout (default: this one)")
    return parser


def run_command(args):
    """`tinydgl assignments ...`; raises AssignmentError for errors a person can fix."""
    if args.assignments_command == "build":
        manifest = build(args.out, assignments=args.assignment, task_ids=args.task)
        stubbed = [t for t in manifest["tasks"] if t["stubbed"]]
        print(f"student copy written to {args.out}: {len(stubbed)} task(s) stubbed in "
              f"{len({t['file'] for t in stubbed})} files; handouts in {Path(args.out) / 'assignments'}")
        print(f"grade it with: tinydgl assignments grade {args.out}")
        return 0
    if args.assignments_command == "submit":
        if len(args.paths) > 2:
            raise AssignmentError("submit takes [TREE] OUT.zip: the student copy (default: .) and the zip to write.")
        tree, out = (".", *args.paths) if len(args.paths) == 1 else args.paths
        files = submit(tree, out)
        print(f"{out}: {len(files)} task files of {tree} ({', '.join(files)})")
        print(f"grade it with: tinydgl assignments grade {out}")
        return 0
    if args.assignments_command == "grade":
        if args.json:
            check_output(args.json)
        source = Path(args.source or source_root())
        contents = _submission(args.tree)
        if contents:  # a zip: say, in one line, what in it is not graded
            given, ignored = _pick(contents, task_files(source))
            if given and ignored:
                print(ignored_note(ignored))
        rows, errors = grade(args.tree, source=args.source)
        if not find_regions(source):
            print(f"practice grade: with the tests of the student copy {source}; the instructor grades with theirs")
        for error in errors:
            print(f"could not collect {error}")
        print(format_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"tasks": rows, "points": sum(r["points"] for r in rows),
                                                   "max_points": sum(r["max_points"] for r in rows)}, indent=2) + "\n")
        return 0
    if args.assignments_command == "gradescope":
        names = gradescope(args.out, source=args.source)
        print(f"{args.out}: Gradescope autograder ({len(names)} files: setup.sh, run_autograder, requirements.txt, "
              "course/); upload it as the assignment's autograder")
        return 0
    if args.assignments_command == "classroom":
        path = classroom(args.out, source=args.source)
        print(f"{path}: GitHub Classroom workflow, {len(TASKS)} grading steps; commit it to the template repository")
        return 0
    problems = check()
    for p in problems:
        print(p)
    print(f"{len(TASKS)} tasks in {len(ASSIGNMENTS)} assignments: " + ("consistent" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0
