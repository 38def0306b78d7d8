"""The command line of the course, `tinydgl assignments ...` (tinydgl.cli adds this parser to its own).

Every subcommand checks its output path first, so a path that cannot be written fails before any work.
"""

import json
from pathlib import Path

from .catalogue import ASSIGNMENTS, TASKS
from .exports import classroom, gradescope, ignored_note
from .grading import format_table, grade, pick_task_files, read_submission, submit
from .layout import AssignmentError, check_output, source_root
from .markers import check, find_regions, task_files
from .student_copy import build


def add_assignments_parser(subparsers):
    """Add `tinydgl assignments` and its subcommands (build, submit, grade, check, gradescope, classroom)."""
    parser = subparsers.add_parser("assignments", help="build the student copy of the assignments, or grade one")
    sub = parser.add_subparsers(dest="assignments_command", required=True)
    b = sub.add_parser("build", help="write a student copy (solutions replaced by stubs) with handouts to OUT")
    b.add_argument("out", metavar="OUT", help="a new (or empty) folder")
    b.add_argument(
        "--assignment",
        action="append",
        choices=[a.id for a in ASSIGNMENTS],
        help="stub only this assignment's tasks (repeatable; default: all)",
    )
    b.add_argument("--task", action="append", help="stub only this task (repeatable)")
    s = sub.add_parser("submit", help="zip the task files of a student copy (and nothing else) to hand in")
    s.add_argument(
        "paths", metavar="[TREE] OUT.zip", nargs="+", help="root of the student copy (default: .), the zip to write"
    )
    g = sub.add_parser(
        "grade",
        help="score a student copy or a submission zip with the instructor's task tests",
        description="Build a fresh student copy from --source in a temporary folder, put the task files "
        "of TREE (or of a zip written by 'submit') over it, and run its task tests: the "
        "student's own tests, conftest.py and other files are never used.",
    )
    g.add_argument(
        "tree",
        metavar="TREE|ZIP",
        nargs="?",
        default=".",
        help="root of the student copy, or its submission zip (default: .)",
    )
    g.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="the instructor's checkout whose tests grade (default: the one this tinydgl is imported "
        "from; a student copy there gives a practice grade with its own tests)",
    )
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
    commands = {
        "build": _build,
        "submit": _submit,
        "grade": _grade,
        "gradescope": _gradescope,
        "classroom": _classroom,
        "check": _check,
    }
    return commands[args.assignments_command](args)


def _build(args):
    manifest = build(args.out, assignments=args.assignment, task_ids=args.task)
    stubbed = [t for t in manifest["tasks"] if t["stubbed"]]
    print(
        f"student copy written to {args.out}: {len(stubbed)} task(s) stubbed in "
        f"{len({t['file'] for t in stubbed})} files; handouts in {Path(args.out) / 'assignments'}"
    )
    print(f"grade it with: tinydgl assignments grade {args.out}")
    return 0


def _submit(args):
    if len(args.paths) > 2:
        raise AssignmentError("submit takes [TREE] OUT.zip: the student copy (default: .) and the zip to write.")
    tree, out = (".", *args.paths) if len(args.paths) == 1 else args.paths
    files = submit(tree, out)
    print(f"{out}: {len(files)} task files of {tree} ({', '.join(files)})")
    print(f"grade it with: tinydgl assignments grade {out}")
    return 0


def _grade(args):
    if args.json is not None:
        check_output(args.json)
    source = Path(args.source or source_root())
    contents = read_submission(args.tree)
    if contents:  # a zip: say, in one line, what in it is not graded
        given, ignored = pick_task_files(contents, task_files(source))
        if given and ignored:
            print(ignored_note(ignored))
    rows, errors = grade(args.tree, source=args.source)
    if not find_regions(source):
        print(f"practice grade: with the tests of the student copy {source}; the instructor grades with theirs")
    for error in errors:
        print(f"could not collect {error}")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "tasks": rows,
                    "points": sum(r["points"] for r in rows),
                    "max_points": sum(r["max_points"] for r in rows),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def _gradescope(args):
    names = gradescope(args.out, source=args.source)
    print(
        f"{args.out}: Gradescope autograder ({len(names)} files: setup.sh, run_autograder, requirements.txt, "
        "course/); upload it as the assignment's autograder"
    )
    return 0


def _classroom(args):
    path = classroom(args.out, source=args.source)
    print(f"{path}: GitHub Classroom workflow, {len(TASKS)} grading steps; commit it to the template repository")
    return 0


def _check(args):
    problems = check()
    for p in problems:
        print(p)
    print(
        f"{len(TASKS)} tasks in {len(ASSIGNMENTS)} assignments: "
        + ("consistent" if not problems else f"{len(problems)} problem(s)")
    )
    return 1 if problems else 0
