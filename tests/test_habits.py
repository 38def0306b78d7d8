"""The contributors' checks run with the tests, so the README's test command is also the lint and type
check: `ruff check` and `ruff format --check` (settings in pyproject.toml, [tool.ruff]), mypy on the public API modules
([tool.mypy]), vermin for the oldest supported Python (requires-python, 3.10), and two house rules read
from the code: no function over 80 lines, and no `_private` name imported from another file (a helper two
files use is public, where both can see it). Each skips, saying why, where its tool is not installed (the `test` extra installs both).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(tool, *args, tmp_path):
    if shutil.which(tool) is None and not (Path(sys.executable).parent / tool).exists():
        pytest.skip(f'{tool} is not installed (pip install -e ".[test]" installs it)')
    exe = shutil.which(tool) or str(Path(sys.executable).parent / tool)
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing(tmp_path):
    done = run("ruff", "check", "--no-cache", "tinydgl", "tests", "benchmarks", "scripts", tmp_path=tmp_path)
    assert done.returncode == 0, (
        f"ruff check found problems (fix them, or see pyproject.toml):\n{done.stdout}{done.stderr}"
    )


def test_ruff_format_leaves_the_code_as_it_is(tmp_path):
    done = run(
        "ruff",
        "format",
        "--check",
        "--no-cache",
        "tinydgl",
        "tests",
        "benchmarks",
        "scripts",
        "noxfile.py",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, (
        f"files ruff format would change (run `ruff format` on them):\n{done.stdout}{done.stderr}"
    )


def test_mypy_passes_on_the_public_api(tmp_path):
    done = run("mypy", "--cache-dir", str(tmp_path / "mypy-cache"), tmp_path=tmp_path)  # files: pyproject.toml
    assert done.returncode == 0, f"mypy found problems in the public API modules:\n{done.stdout}{done.stderr}"


def test_code_runs_on_the_oldest_supported_python(tmp_path):
    # Static, because this machine has only Python 3.11; `nox` (noxfile.py) runs the suite on 3.10 and 3.13
    # wherever those interpreters are installed. vermin reads the modules each name needs (tomllib: 3.11).
    done = run(
        "vermin",
        "-q",
        "--no-tips",
        "--violations",
        "--target=3.10-",
        "--eval-annotations",
        "--exclude",
        "sentinel",  # multiprocessing.Process.sentinel (3.3), not 3.15's sentinel builtin
        "tinydgl",
        "tests",
        "benchmarks",
        "scripts",
        "noxfile.py",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, (
        f"code that needs a newer Python than 3.10 (requires-python):\n{done.stdout}{done.stderr}"
    )


MAX_FUNCTION_LINES = 80


def package_trees():
    import ast

    for path in sorted((ROOT / "tinydgl").rglob("*.py")):
        yield path.relative_to(ROOT), ast.parse(path.read_text())


def test_no_function_is_over_80_lines():
    # A function a reader cannot see on one screen does several jobs: split it and name the parts.
    import ast

    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in package_trees()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_private_name_is_imported_from_another_file():
    import ast

    private = [
        f"{path}:{node.lineno} from {node.module} import {alias.name}"
        for path, tree in package_trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not private, (
        "private names imported across files (make them public where both files see them):\n" + "\n".join(private)
    )
