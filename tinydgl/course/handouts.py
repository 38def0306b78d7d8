"""What a student reads: the handout and the notebook of each assignment, their index, the copy's README.

Each is written from the manifest that `build` makes (student_copy.py), so it names the files, functions, markers
and tests of the copy it is in.
"""
from .catalogue import TASKS_BY_ID, assignment_marker
from .layout import template


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

    cells = [cell("markdown", handout(assignment, manifest).split("\n## ")[0]),
             cell("code", template("notebook_check.py"))]  # check(marker): runs one task's tests
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
    """The README.md of the handouts' folder: a table of the assignments, then how to grade and hand in."""
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
    return template("student_readme.md", first_marker=manifest["tasks"][0]["marker"])
