"""What a student reads: the handout and the notebook of each assignment, their index, the copy's README.

Each is written from the manifest that `build` makes (student_copy.py), so it names the files, functions, markers
and tests of the copy it is in.
"""

from .catalogue import TASKS_BY_ID, assignment_marker
from .layout import template


def handout(assignment, manifest):
    """The Markdown handout of one assignment (templates/handout.md, a handout_task.md section per task)."""
    tasks = [t for t in manifest["tasks"] if t["assignment"] == assignment.id]
    reading = ", ".join(
        f"[{name[:2].lstrip('0')}. {name[3:-3].replace('-', ' ')}](../lessons/{name})" for name in assignment.lessons
    )
    rows = [f"| `{t['id']}` | {t['title']} | [`{t['function']}`](../{t['file']}) | {t['points']} |" for t in tasks]
    sections = [_task_section(t, manifest["task_tests"]) for t in tasks]
    if not any(t["stubbed"] for t in tasks):
        sections.append("(In this copy every task of this assignment is already solved.)\n")
    return template(
        "handout.md",
        number=assignment.id[1:],
        title=assignment.title,
        intro=assignment.intro,
        reading=reading,
        assignment_marker=assignment_marker(assignment.id),
        first_marker=tasks[0]["marker"],
        rows="\n".join(rows),
        total=sum(t["points"] for t in tasks),
        sections="\n".join(sections).removesuffix("\n"),
    )


def _task_section(t, task_tests):
    """One task's section of its handout: what to write, where, the hint, and the tests that grade it."""
    count = t.get("hidden_tests")
    hidden = f" and {count} hidden test{'s' if count > 1 else ''} that only the autograder runs." if count else "."
    return template(
        "handout_task.md",
        id=t["id"],
        title=t["title"],
        points=t["points"],
        file=t["file"],
        what=TASKS_BY_ID[t["id"]].what,
        hint=t["hint"],
        marker=t["marker"],
        task_tests=task_tests,
        tests=", ".join(f"`{n.split('::')[1]}`" for n in t["tests"]),
        hidden=hidden,
    )


def notebook(assignment, manifest):
    """A Jupyter notebook (nbformat 4) to work through one assignment: the handout, then a cell per task that
    runs its tests. The tests run in a fresh Python each time, so edits to the library count without a restart."""

    def cell(kind, text):
        extra = {"execution_count": None, "outputs": []} if kind == "code" else {}
        return {"cell_type": kind, "metadata": {}, "source": text.strip("\n").splitlines(keepends=True), **extra}

    cells = [
        cell("markdown", handout(assignment, manifest).split("\n## ")[0]),
        cell("code", template("notebook_check.py")),
    ]  # check(marker): runs one task's tests
    for t in manifest["tasks"]:
        if t["assignment"] == assignment.id:
            cells += [
                cell(
                    "markdown",
                    f"## `{t['id']}`: {t['title']}\n\n{TASKS_BY_ID[t['id']].what}\n\n"
                    f"Edit [`{t['file']}`](../{t['file']}), then run the tests:",
                ),
                cell("code", f'check("{t["marker"]}")'),
            ]
    cells += [
        cell("markdown", "## Your score"),
        cell(
            "code",
            'print(subprocess.run([sys.executable, "-m", "tinydgl", "assignments", "grade", ROOT],\n'
            "                     capture_output=True, text=True).stdout)",
        ),
    ]
    return {
        "cells": cells,
        "nbformat": 4,
        "nbformat_minor": 4,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    }


def index(manifest):
    """The README.md of the handouts' folder: a table of the assignments, then how to grade and hand in."""
    count = len(manifest["assignments"])
    words = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
    rows = [
        f"| [{a['id']}: {a['title']}]({a['id']}.md) | {len(a['tasks'])} | "
        f"{sum(t['points'] for t in manifest['tasks'] if t['id'] in a['tasks'])} |"
        for a in manifest["assignments"]
    ]
    return template("handouts_index.md", count=words[count] if count < len(words) else count, rows="\n".join(rows))


def student_readme(manifest):
    """The student copy's README.md: what the copy is, how to install it, work on a task, grade and hand in."""
    return template("student_readme.md", first_marker=manifest["tasks"][0]["marker"])
