"""The lessons (lessons/*.md) run, link to code that exists, and keep their figures small.

Every ```python block of a chapter runs, in order, in one namespace per chapter (like the cells of a
notebook), from a temporary directory so that files a snippet writes do not land in the repository.
Blocks fenced as ```console or ```text are for reading only.
"""

import re
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
CHAPTERS = sorted(LESSONS.glob("[0-9][0-9]-*.md"))
PAGES = CHAPTERS + [LESSONS / "README.md"]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s#]+)(?:#[^)]*)?\)")
IDENTIFIER = re.compile(r"`?([A-Za-z_][A-Za-z0-9_.]*)(?:\(\))?`?$")


def python_blocks(path):
    return [code for lang, code in FENCE.findall(path.read_text()) if lang == "python"]


def test_there_are_thirteen_chapters():
    assert len(CHAPTERS) == 13, [c.name for c in CHAPTERS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_snippets_run(chapter, tmp_path, monkeypatch):
    blocks = python_blocks(chapter)
    assert blocks, f"{chapter.name} has no python snippet"
    monkeypatch.chdir(tmp_path)
    run_blocks(blocks, chapter.name, f"lesson_{chapter.stem.replace('-', '_')}")


def run_blocks(blocks, label, module_name):
    """Run python blocks in order in one namespace (like a notebook's cells); a failure names the block."""
    if any("NUMBA_ENABLE_CUDASIM" in code for code in blocks):
        return run_blocks_in_simulator(blocks, label, module_name)
    import tinydgl

    namespace = {"__name__": module_name}
    try:
        for i, code in enumerate(blocks, 1):
            try:
                exec(compile(code, f"{label}, python block {i}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"{label}, python block {i} failed:\n{code}") from err
    finally:
        tinydgl.set_backend("numpy")  # a chapter may switch backends; leave the default for the next test


def run_blocks_in_simulator(blocks, label, module_name):
    """Blocks that use numba's CUDA simulator run in a subprocess: NUMBA_ENABLE_CUDASIM must be set before
    numba.cuda is imported and then replaces it for the whole process (chapter 12)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    runner = (
        "import sys\nnamespace = {'__name__': %r}\nfor i, code in enumerate(%r, 1):\n"
        "    print(f'--- python block {i}', flush=True)\n"
        "    exec(compile(code, f'%s, python block {i}', 'exec'), namespace)\n"
    ) % (module_name, blocks, label)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(root), MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-c", runner], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{label} failed in the CUDA simulator:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_links_point_to_existing_files_and_names(page):
    """A link [`name`](../tinydgl/x.py) must point to a file that exists and that defines `name`."""
    text = FENCE.sub("", page.read_text())
    for label, target in LINK.findall(text):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        assert path.exists(), f"{page.name}: link to a missing file {target}"
        match = IDENTIFIER.match(label.strip())
        if path.suffix == ".py" and match and label.strip().startswith("`"):
            if match.group(1).endswith(".py"):
                continue
            name = match.group(1).split(".")[-1]
            source = path.read_text()
            assert re.search(rf"^\s*(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=", source, re.M), (
                f"{page.name}: [{label}]({target}) but {target} defines no {name!r}"
            )


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_ends_with_exercises(chapter):
    sections = re.split(r"^## ", chapter.read_text(), flags=re.M)
    last = sections[-1]
    assert last.startswith("Exercises"), f"{chapter.name}: the last section should be '## Exercises'"
    count = len(re.findall(r"^\d+\. ", last, re.M))
    assert 3 <= count <= 5, f"{chapter.name}: {count} exercises, expected 3 to 5"


def test_figures_are_small_and_used():
    figures = sorted((LESSONS / "figures").glob("*.png"))
    assert figures, "no figures"
    used = "".join(p.read_text() for p in PAGES)
    for figure in figures:
        assert figure.stat().st_size < 120 * 1024, f"{figure.name} is {figure.stat().st_size // 1024} KB"
        assert f"figures/{figure.name}" in used, f"{figure.name} is not embedded in any lesson"
