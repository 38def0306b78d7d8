"""The package's line budget (as tinygrad keeps one): a library meant to be read whole must stay small.

Counted, for each tinydgl/**/*.py: its logical lines of code (one per statement, however many physical lines
the formatter wraps it over: Python's tokenizer ends each with a NEWLINE token) plus the physical lines of
its docstrings, which are read too. Blank lines and comments do not count. The count does not depend on
formatting, so `ruff format` (which wraps long calls one argument per line) neither grows nor shrinks it.

History: 12,569 at the start of 2026-12-06's session (commit fe8ff31), before the command and the course
became packages, the runtime lost its twins and the long module docstrings moved to the site's method and
design pages: 12,417 after it. The budget is that plus about 1%. Lower it when a change makes the package
smaller; raise it only when a change is worth its lines, and say why in the commit.
"""

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tinydgl"
BUDGET = 12_550


def docstrings(tree):
    """The docstring expressions of a module, its classes and functions."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                yield first


def reader_lines(text):
    """Logical lines of code (a docstring counts as its physical lines instead of one statement)."""
    statements = sum(1 for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NEWLINE)
    docs = list(docstrings(ast.parse(text)))
    return statements - len(docs) + sum(d.end_lineno - d.lineno + 1 for d in docs)


def test_reader_lines_count_statements_and_docstrings_not_layout():
    one_line = 'def f(a, b):\n    """Add.\n\n    Shapes: any."""\n    # why\n    return g(a, b)\n'
    wrapped = (
        'def f(a, b):\n    """Add.\n\n    Shapes: any."""\n\n    # why\n    return g(\n        a,\n        b,\n    )\n'
    )
    assert reader_lines(one_line) == reader_lines(wrapped) == 1 + 3 + 1


def test_the_package_stays_within_its_line_budget():
    sizes = {p.relative_to(PACKAGE).as_posix(): reader_lines(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}
    total = sum(sizes.values())
    largest = ", ".join(f"{name} {n}" for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
    assert total <= BUDGET, (
        f"tinydgl/ has {total:,} lines (statements and docstring lines), over its budget of "
        f"{BUDGET:,} (tests/test_size.py). Largest files: {largest}. Shorten before raising it."
    )
