"""Build the course site: lessons (answers folded in), executed notebooks, handouts, reference and API, into site/.

    python scripts/build_site.py            # the release build: every notebook in full mode (some minutes)
    python scripts/build_site.py --fast     # what CI builds: notebooks in fast mode (TINYDGL_FAST=1)
    python scripts/build_site.py --cache    # rebuild, running only the notebooks that changed

Needs the `docs` extra (pip install -e ".[docs]"): Sphinx with MyST-NB, which executes the notebooks, and
the Sphinx Book Theme. Why those: MyST reads the lessons' Markdown as it is (the same files GitHub shows),
MyST-NB runs the committed, output-free notebooks at build time (with a cache for quick rebuilds), Sphinx
turns any broken cross-reference into an error (`-W`), and autodoc gives the API page from the docstrings;
the book theme (from the Jupyter Book project) is made for courses and needs nothing from the web.

The build is in three steps, each a function below:

1. `stage` copies the pages into one source folder (build/site-source/), keeping their paths in the
   repository, so that the links between them stay as they are: docs/ (the front page and the API page at
   the site's root; the reference pages, docs/*.md, where they are),
   lessons/ with the answers of lessons/answers/ folded, one per exercise, under the exercises,
   notebooks/, the assignment handouts (written by `tinydgl assignments build`), README.md, CHANGELOG.md and
   benchmarks/RESULTS.md. A link to a file that is not a page (a .py file, a spec, INSTRUCTOR.md: the site
   is for students) becomes a link to that file in the repository on GitHub.
2. Sphinx builds site/ with warnings as errors, executing every notebook.
3. `check_offline` reads every page and fails on anything loaded from the web (a script, a stylesheet, an
   image, a font), so the site reads offline.

tests/test_site.py builds the site this way and opens it in a real headless browser.
"""

import argparse
import os
import posixpath
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GITHUB = "https://github.com/tinydgl/tinydgl/blob/main/"
# Pages taken as they are (paths in the repository, which are also their paths on the site)
# INSTRUCTOR.md is not one: the site is what students read, and the instructor's guide says what the hidden
# tests check. Links to it go to the repository, where instructors read it.
PAGES = (
    "README.md",
    "CHANGELOG.md",
    "benchmarks/RESULTS.md",
    "benchmarks/RESULTS-archive.md",
    "lessons/README.md",
    "notebooks/README.md",
)
# docs/index.md and docs/api.md are the site's front and API pages, at its root; the other docs/**/*.md (the
# command reference, the errors, the architecture, the method and design pages, ...) keep their path, so links
# work on GitHub too.
ROOT_PAGES = ("index.md", "api.md")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1", re.S | re.M)


class SiteError(Exception):
    """The site cannot be built as it is: a missing answer, a page that loads from the web."""


def rewrite_links(text, source, dest, staged):
    """Rewrite the relative links of Markdown `text` from repository file `source`, placed on the site at `dest`.

    source and dest are repository-style paths ("lessons/answers/06-x.md"); staged is the set of paths that
    exist on the site. A link to a staged file points to it from dest; a link to any other file of the
    repository points to it on GitHub; web links, anchors (#...) and links inside code blocks are kept.
    """

    def fix(match):
        head, target, tail = match.groups()
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if resolved in staged or any(s.startswith(resolved.rstrip("/") + "/") for s in staged if path.endswith("/")):
            new = posixpath.relpath(resolved, posixpath.dirname(dest) or ".")
        elif resolved.startswith(".."):
            raise SiteError(f"{source}: the link {target} leaves the repository")
        elif head.startswith("!"):  # an image from GitHub would not load offline
            raise SiteError(
                f"{source}: the image {target} is not part of the site (put it in docs/, lessons/figures/ or benchmarks/figures/)"
            )
        else:
            new = GITHUB + resolved
        return f"{head}{new}{'#' + anchor if anchor else ''}{tail}"

    # code blocks are shown as written: rewrite only between them
    out, last = [], 0
    for block in FENCE.finditer(text):
        out += [LINK.sub(fix, text[last : block.start()]), block.group(0)]
        last = block.end()
    out.append(LINK.sub(fix, text[last:]))
    return "".join(out)


def split_answers(text):
    """{exercise number: answer body} from an answers file's `## Exercise k` sections."""
    parts = re.split(r"^## Exercise (\d+)\s*$", text, flags=re.M)
    return {int(number): body.strip("\n") for number, body in zip(parts[1::2], parts[2::2])}


def fold_answers(lesson, answers):
    """The lesson's Markdown with each answer folded (a dropdown, closed) under its exercise.

    lesson ends with `## Exercises`, a numbered list; answers is {number: Markdown}. Each answer goes inside
    its list item (indented, so the list keeps counting) as a MyST `{dropdown}`.
    """
    head, sep, exercises = lesson.rpartition("\n## Exercises\n")
    if not sep:
        raise SiteError("the lesson has no '## Exercises' section")
    items = re.split(r"^(?=\d+\. )", exercises, flags=re.M)
    numbered = [i for i in items if re.match(r"\d+\. ", i)]
    if sorted(answers) != list(range(1, len(numbered) + 1)):
        raise SiteError(f"{len(numbered)} exercises but answers for {sorted(answers)}")
    out = []
    for item in items:
        match = re.match(r"(\d+)\. ", item)
        if not match:
            out.append(item)
            continue
        body = answers[int(match.group(1))]
        fence = ":" * (4 + max((len(m) for m in re.findall(r"^:{3,}", body, re.M)), default=0))
        folded = f"{fence}{{dropdown}} Answer\n:color: secondary\n\n{body}\n{fence}\n"
        out.append(
            item.rstrip("\n")
            + "\n\n"
            + "".join(f"   {line}" if line else "" for line in folded.splitlines(keepends=True))
            + "\n"
        )
    return head + sep + "".join(out)


def handouts(dest):
    """Write the assignment handouts (README.md, A1.md, ...) as `tinydgl assignments build` makes them."""
    from tinydgl import course

    with tempfile.TemporaryDirectory(prefix="tinydgl-site-") as tmp:
        course.build(Path(tmp) / "course", root=REPO)
        for page in sorted((Path(tmp) / "course" / "assignments").glob("*.md")):
            (dest / "assignments").mkdir(parents=True, exist_ok=True)
            shutil.copy2(page, dest / "assignments" / page.name)


def stage(dest, repo=REPO):
    """Copy every page of the site into the new folder `dest` (see the module docstring); returns their paths."""
    import json

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "lessons").mkdir(parents=True)
    handouts(dest)  # generated: their links are to the course's paths, which are the repository's
    chapters = sorted((repo / "lessons").glob("[0-9][0-9]-*.md"))
    notebooks = sorted((repo / "notebooks").glob("*.ipynb"))
    figures = sorted(p for p in (repo / "lessons" / "figures").glob("*") if p.is_file())
    assets = sorted(
        p
        for folder in ("notebooks", "docs", "benchmarks/figures")
        for pattern in ("*.svg", "*.png")
        for p in (repo / folder).glob(pattern)
    )
    staged = {p.relative_to(repo).as_posix() for p in (*chapters, *notebooks, *figures, *assets)}
    references = sorted(
        p for p in (repo / "docs").rglob("*.md") if p.relative_to(repo / "docs").as_posix() not in ROOT_PAGES
    )
    staged |= set(PAGES) | set(ROOT_PAGES) | {f"assignments/{p.name}" for p in (dest / "assignments").glob("*.md")}
    staged |= {p.relative_to(repo).as_posix() for p in references}

    def put(rel, text, source=None):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(rewrite_links(text, source or rel, rel, staged))

    for page in ROOT_PAGES:
        put(page, (repo / "docs" / page).read_text())
    for rel in [p.relative_to(repo).as_posix() for p in references] + list(PAGES):
        put(rel, (repo / rel).read_text())
    for page in (dest / "assignments").glob("*.md"):
        rel = f"assignments/{page.name}"
        put(rel, page.read_text())
    for chapter in chapters:
        rel = chapter.relative_to(repo).as_posix()
        answers_file = repo / "lessons" / "answers" / chapter.name
        if not answers_file.is_file():
            raise SiteError(f"no answers for {rel}: write lessons/answers/{chapter.name}")
        # the answers' links are made relative to the lesson before they are folded in
        answers = {
            k: rewrite_links(v, f"lessons/answers/{chapter.name}", rel, staged | {f"lessons/answers/{chapter.name}"})
            for k, v in split_answers(answers_file.read_text()).items()
        }
        try:
            put(rel, fold_answers(chapter.read_text(), answers))
        except SiteError as err:
            raise SiteError(f"{rel}: {err}") from err
    for path in (*figures, *assets):
        rel = path.relative_to(repo).as_posix()
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
    for path in notebooks:
        rel = path.relative_to(repo).as_posix()
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = rewrite_links("".join(cell["source"]), rel, rel, staged)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(json.dumps(nb, indent=1) + "\n")
    return sorted(staged)


# Anything a page would fetch from the web: scripts, stylesheets, images, fonts, frames
REMOTE = re.compile(
    r"""<(script|img|iframe|source)\b[^>]*\bsrc=["']?(https?:)?//|<link\b[^>]*\bhref=["']?(https?:)?//"""
    r"""|@import\s+url\(["']?(https?:)?//|url\(["']?(https?:)?//""",
    re.I,
)


def check_offline(site):
    """Raise SiteError naming every page or stylesheet of `site` that loads something from the web."""
    found = []
    for path in sorted(Path(site).rglob("*")):
        if path.suffix in (".html", ".css") and path.is_file():
            text = path.read_text(errors="replace")
            for match in REMOTE.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(site)}:{line}: {text[match.start() : match.start() + 120]!r}")
    if found:
        raise SiteError("the site loads from the web (it must read offline):\n  " + "\n  ".join(found[:20]))


def build(out, fast=False, source=None, quiet=False, cache=False):
    """Stage the pages, run Sphinx (warnings are errors) into `out`, check it reads offline; returns out.

    cache=True reuses the outputs of notebooks that did not change since the last build in the same mode
    (quick, but blind to changes in the library); by default every notebook runs."""
    from sphinx.cmd.build import build_main

    out = Path(out)
    source = Path(source or REPO / "build" / "site-source")
    stage(source)
    mode = "fast" if fast else "full"
    os.environ["TINYDGL_SITE_CACHE"] = str(REPO / "build" / f"site-cache-{mode}")
    os.environ["TINYDGL_SITE_EXECUTION"] = "cache" if cache else "force"
    # the kernels that execute the notebooks inherit this environment
    if fast:
        os.environ["TINYDGL_FAST"] = "1"
    else:
        os.environ.pop("TINYDGL_FAST", None)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # plots become images on the page
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Sphinx writes into build/site-html/html: MyST-NB puts the notebooks' executed copies beside the output
    # folder (../jupyter_execute), which must not be the repository's root. The finished site is copied out.
    html = REPO / "build" / "site-html" / "html"
    if html.exists():  # Sphinx leaves the pages of an earlier build that are no longer sources (staged anew anyway)
        shutil.rmtree(html)
    args = ["-b", "html", "-W", "--keep-going", "-n", "-c", str(REPO / "docs"), str(source), str(html)]
    if quiet:
        args.insert(0, "-q")
    status = build_main(args)
    if status:
        raise SiteError(f"sphinx-build failed (exit status {status}); its warnings are above")
    check_offline(html)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(html, out, ignore=shutil.ignore_patterns(".doctrees", ".buildinfo"))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="execute the notebooks in fast mode (TINYDGL_FAST=1)")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="reuse the outputs of notebooks that did not change (quick rebuilds while writing)",
    )
    parser.add_argument("--out", default=str(REPO / "site"), help="the site's folder (default: site/)")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, fast=args.fast, cache=args.cache)
    except SiteError as err:
        print(f"build_site: {err}", file=sys.stderr)
        return 1
    print(f"The site is in {out}: open {Path(out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
