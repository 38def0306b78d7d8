"""The notebooks (notebooks/*.py, paired with notebooks/*.ipynb by jupytext) are in sync, stripped, and run.

Each notebook is stored twice: a jupytext percent-format `.py` (what people edit and review) and the
`.ipynb` (what people open). These tests check that the two hold the same cells, that the committed
`.ipynb` carries no outputs, and run every notebook's `.py` in fast mode (`TINYDGL_FAST=1`, a headless
matplotlib backend, a temporary working directory), so `python -m pytest -q` covers them.

After editing a notebook, sync its pair with `jupytext --sync notebooks/NN_name.py` (or `.ipynb`).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
FAST_MODE_SECONDS = 60  # a notebook takes a few seconds in fast mode; this only catches a runaway one


def test_there_is_one_notebook_per_lesson():
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]-*.md"))
    assert [p.name[:2] for p in SOURCES] == [p.name[:2] for p in lessons], (
        "expected one notebooks/NN_*.py per lessons/NN-*.md"
    )


def cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_py_and_ipynb_hold_the_same_cells(source):
    # No importorskip: jupytext and nbformat are in the test extra, and a skipped pairing test would let
    # the two files drift apart unnoticed.
    import jupytext
    import nbformat

    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `jupytext --sync notebooks/{source.name}`"
    from_py = jupytext.read(source)
    from_ipynb = nbformat.read(paired, as_version=4)
    assert cells(from_py) == cells(from_ipynb), (
        f"{source.name} and {paired.name} differ: run `jupytext --sync notebooks/{source.name}` "
        "(it updates whichever of the two is older)"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_ipynb_has_no_outputs(source):
    import nbformat

    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{source.with_suffix('.ipynb').name}, cell {i} has outputs: clear them before committing "
                "(Kernel > Restart and Clear Outputs, or `jupytext --to ipynb` from the .py)"
            )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_links_its_lesson_documents_fast_mode_and_links_work(source):
    import jupytext

    first = jupytext.read(source).cells[0]
    links = re.findall(r"\]\((\.\./lessons/[^)]+\.md)\)", first.source)
    assert links, f"{source.name}: the first cell should link its chapter in lessons/"
    assert all((NOTEBOOKS / link).resolve().exists() for link in links), f"{source.name}: broken link {links}"
    assert links[0].split("/")[-1][:2] == source.name[:2], f"{source.name} links {links[0]}"
    assert "TINYDGL_FAST" in first.source, f"{source.name}: the first cell should explain fast mode"
    for cell in jupytext.read(source).cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", cell.source):
                if "://" not in target:
                    assert (NOTEBOOKS / target).resolve().exists(), f"{source.name}: link to a missing file {target}"


# An output path written as a plain name: the file would land where the notebook runs, i.e. in notebooks/
OUTPUT_IN_PLACE = re.compile(r"""["']--(metrics-json|plot|checkpoint-dir)["'],\s*["']""")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_writes_its_outputs_to_a_temporary_folder(source):
    """A run's metrics, plots and checkpoints go to tempfile.mkdtemp(), so running the notebooks leaves
    notebooks/ as it was (the slow run below also checks that nothing is left in its working folder)."""
    found = [m.group(0) for m in OUTPUT_IN_PLACE.finditer(source.read_text())]
    assert found == [], f"{source.name} writes {found} into the folder it runs in: pass a path under tempfile.mkdtemp()"


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(source, tmp_path):
    env = dict(os.environ, TINYDGL_FAST="1", MPLBACKEND="Agg")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * FAST_MODE_SECONDS,
    )
    seconds = time.perf_counter() - t0
    assert result.returncode == 0, (
        f"{source.name} failed in fast mode:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [], f"{source.name} wrote {left} where it runs (in notebooks/, for a reader): use a temporary folder"
    assert seconds < FAST_MODE_SECONDS, f"{source.name} took {seconds:.0f}s in fast mode (limit {FAST_MODE_SECONDS}s)"


# --- Colab: a badge on every notebook, a first code cell that installs the release, the GPU runtime ---------


def project_version():
    # a regular expression, not tomllib: the tests also run on Python 3.10, which has no tomllib
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def colab_url(stem):
    return f"https://colab.research.google.com/github/tinydgl/tinydgl/blob/v{project_version()}/notebooks/{stem}.ipynb"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_opens_in_colab_and_installs_its_release(source):
    import jupytext

    notebook = jupytext.read(source)
    assert f"[![Open in Colab](colab-badge.svg)]({colab_url(source.stem)})" in notebook.cells[0].source, (
        f"{source.name}: the first cell needs the Colab badge for version {project_version()}"
    )
    first_code = next(c for c in notebook.cells if c.cell_type == "code").source
    assert f'TINYDGL_VERSION = "{project_version()}"' in first_code, (
        f"{source.name}: the first code cell installs the release named in pyproject.toml"
    )
    assert 'importlib.util.find_spec("tinydgl") is None' in first_code  # a no-op where tinydgl is installed
    # the repository's address is a placeholder until it is published: the cell installs an uploaded wheel first
    assert 'WHEEL = f"tinydgl-{TINYDGL_VERSION}-py3-none-any.whl"' in first_code and "not on GitHub yet" in first_code
    assert (NOTEBOOKS / "colab-badge.svg").is_file()


def test_notebooks_readme_has_a_badge_per_notebook():
    readme = (NOTEBOOKS / "README.md").read_text()
    for source in SOURCES:
        assert f"[![Open in Colab](colab-badge.svg)]({colab_url(source.stem)})" in readme, source.stem


def test_the_cupy_notebook_asks_for_a_gpu_runtime():
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / "01_arrays_and_backends.ipynb", as_version=4)
    assert notebook.metadata["accelerator"] == "GPU" and notebook.metadata["colab"]["gpuType"]
    text = "\n".join(c.source for c in notebook.cells)
    assert "Runtime → Change runtime type" in text and 'use_backend("cupy")' in text
