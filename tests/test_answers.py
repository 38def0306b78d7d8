"""Every lesson exercise has an answer (lessons/answers/), and every code answer runs.

The answers are for instructors and for the course site, where each one sits, folded, under its exercise.
`tinydgl assignments build` leaves lessons/answers/ out of the student copy (tested in test_assignments.py).

An answers file mirrors its chapter: `lessons/answers/NN-name.md` holds one `## Exercise k` section per
exercise, in order. Its ```python blocks run in order in one namespace per file, from a temporary directory,
like the chapters' snippets (tests/test_lessons.py); they are kept small (fast mode data) so the suite stays
quick.
"""

import re
import time
from pathlib import Path

import pytest
from test_lessons import run_blocks

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
CHAPTERS = sorted(LESSONS.glob("[0-9][0-9]-*.md"))
ANSWERS = LESSONS / "answers"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SECONDS_PER_FILE = 60  # a generous bound on 2 cores; a file's code answers take a few seconds


def exercise_count(chapter):
    last = re.split(r"^## ", chapter.read_text(), flags=re.M)[-1]
    return len(re.findall(r"^\d+\. ", last, re.M))


def answer_numbers(path):
    return [int(n) for n in re.findall(r"^## Exercise (\d+)\s*$", path.read_text(), re.M)]


def test_answers_folder_has_one_file_per_chapter():
    assert sorted(p.name for p in ANSWERS.glob("[0-9][0-9]-*.md")) == [c.name for c in CHAPTERS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_has_an_answer(chapter):
    path = ANSWERS / chapter.name
    assert path.is_file(), f"no answers for {chapter.name}: write {path.relative_to(LESSONS.parent)}"
    n = exercise_count(chapter)
    assert answer_numbers(path) == list(range(1, n + 1)), (
        f"{path.name}: expected sections '## Exercise 1' to '## Exercise {n}', in order"
    )
    for number, body in zip(range(1, n + 1), re.split(r"^## Exercise \d+\s*$", path.read_text(), flags=re.M)[1:]):
        words = len(FENCE.sub("", body).split())
        assert words >= 15, f"{path.name}, exercise {number}: an answer needs a few sentences of explanation"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_code_answers_run(chapter, tmp_path, monkeypatch):
    path = ANSWERS / chapter.name
    if not path.is_file():
        pytest.fail(f"no answers for {chapter.name}")
    blocks = [code for lang, code in FENCE.findall(path.read_text()) if lang == "python"]
    if not blocks:
        pytest.skip(f"{path.name} has no code answers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    start = time.perf_counter()
    try:
        run_blocks(blocks, f"answers/{path.name}", f"answers_{chapter.stem.replace('-', '_')}")
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    seconds = time.perf_counter() - start
    assert seconds < SECONDS_PER_FILE, f"answers/{path.name}: code answers took {seconds:.0f}s"
