"""A solution must not leak: where the text of a student copy (or a page of the site) repeats a solution.

`solutions` reads the significant lines of each marked solution; `leaks_in` finds them again in any text
file of a folder (notebooks and web pages read as their code shows, see `readable_text`).
"""

import html
import json
import re
from pathlib import Path

from .layout import source_root
from .markers import find_regions

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
    keys = (code_key(line) for line in text.splitlines()[region.begin : region.end - 1])
    return [k for k in keys if len(k) >= SIGNIFICANT]


def find_leaks(text, solutions):
    """Where `text` repeats a solution: a sorted list of (line number, task id), lines counted from 1.

    solutions is {task id: its significant lines (`solution_keys`)}. A solution leaks where two of its
    significant lines that follow each other follow each other in text too (short lines between them do not
    count), or, for a solution with one significant line, wherever that line is. Give a notebook's or a web
    page's text as `readable_text` makes it."""
    significant = [
        (n, k) for n, k in ((n, code_key(line)) for n, line in enumerate(text.splitlines(), 1)) if len(k) >= SIGNIFICANT
    ]
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
            found += [
                f"{path.relative_to(folder).as_posix()}:{n}: {task_id}"
                for n, task_id in find_leaks(readable_text(path), solutions)
            ]
    return found


def solutions(root=None, task_ids=None):
    """{task id: significant lines of its solution} of the instructor's checkout `root` (default: this one)."""
    root = Path(root or source_root())
    texts = {}
    return {
        r.task_id: solution_keys(r, texts.setdefault(r.file, (root / r.file).read_text()))
        for r in find_regions(root)
        if task_ids is None or r.task_id in task_ids
    }
