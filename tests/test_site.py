"""The course site builds (warnings are errors), reads offline, has no broken internal link, and opens in a browser.

The site is built once, in fast mode, by the documented script (scripts/build_site.py --fast) in a fresh
Python, into a temporary folder; then a real headless Chromium (scripts/headless_browser.py) opens the front
page, a lesson, a notebook page and the API page and checks what a reader would see: the page's title, the
folded answers, the plots, the API's rendered signatures (not directive text), code shown in full (not cut
off on the right). It is the site students read: no task's solution and no instructor's guide on it. Needs the `docs` extra and Debian's `chromium`; where they are missing the tests skip, with the
reason, except in CI (.ci/run sets TINYDGL_REQUIRE_SITE=1), where they fail.
"""

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_site  # noqa: E402
from headless_browser import Browser, find_chromium  # noqa: E402

REQUIRED = os.environ.get("TINYDGL_REQUIRE_SITE") == "1"


def need(condition, reason):
    if not condition:
        if REQUIRED:
            pytest.fail(f"{reason} (TINYDGL_REQUIRE_SITE=1: CI must build and check the site)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    need(
        all(importlib.util.find_spec(m) for m in ("sphinx", "myst_nb", "sphinx_book_theme", "sphinx_design")),
        'the docs extra is not installed (pip install -e ".[docs]")',
    )
    if os.environ.get("TINYDGL_SITE_DIR"):  # a site built already (quick reruns of these checks while writing)
        return Path(os.environ["TINYDGL_SITE_DIR"])
    out = tmp_path_factory.mktemp("site") / "html"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_site.py"), "--fast", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"the site did not build:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return out


class Links(HTMLParser):
    """The ids of a page and the targets of its links, images and scripts."""

    def __init__(self):
        super().__init__()
        self.ids, self.targets = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") in ("canonical",)):
                self.targets.append(attrs[key])


def parse(path):
    links = Links()
    links.feed(path.read_text(errors="replace"))
    return links


def test_every_page_is_built(site):
    for page in [
        "index",
        "api",
        "README",
        "CHANGELOG",
        "benchmarks/RESULTS",
        "benchmarks/RESULTS-archive",
        "lessons/README",
        "notebooks/README",
        "assignments/README",
        "assignments/A1",
    ]:
        assert (site / f"{page}.html").is_file(), page
    for reference in sorted((ROOT / "docs").glob("*.md")):  # the reference pages the README links to
        if reference.name not in build_site.ROOT_PAGES:
            assert (site / "docs" / f"{reference.stem}.html").is_file(), reference.name
    for chapter in sorted((ROOT / "lessons").glob("[0-9][0-9]-*.md")):
        assert (site / "lessons" / f"{chapter.stem}.html").is_file(), chapter.name
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (site / "notebooks" / f"{notebook.stem}.html").is_file(), notebook.name


def test_site_reads_offline(site):
    build_site.check_offline(site)  # raises, naming the page, if anything is loaded from the web


def test_no_broken_internal_link(site):
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)  # (the theme's templates)
    ids = {}
    broken = []
    for page in pages:
        links = parse(page)
        ids[page] = links.ids
        for target in links.targets:
            url = urlparse(target)
            if url.scheme or target.startswith(("//", "mailto:", "javascript:")):
                continue
            path = (page.parent / unquote(url.path)).resolve() if url.path else page
            if not path.exists():
                broken.append(f"{page.relative_to(site)} -> {target}")
            elif url.fragment and path.suffix == ".html":
                if path not in ids:  # (parse each page once: the API page links to itself a thousand times)
                    ids[path] = parse(path).ids
                if url.fragment not in ids[path]:
                    broken.append(f"{page.relative_to(site)} -> {target} (no such anchor)")
    assert not broken, "broken links:\n  " + "\n  ".join(broken[:30])


def test_the_site_is_for_students(site):
    """No instructor's guide (it says what the hidden tests check; the front page sends instructors to the
    repository) and no task's solution on any page (`course.find_leaks`, as `build` checks the copy)."""
    from tinydgl import course

    assert not (site / "INSTRUCTOR.html").exists()
    assert build_site.GITHUB + "INSTRUCTOR.md" in (site / "index.html").read_text()
    assert course.leaks_in(site, course.solutions()) == []


def test_code_links_go_to_the_repository(site):
    """A lesson's link to a .py file becomes a link to that file on GitHub (the site has no .py pages)."""
    html = (site / "lessons" / "06-synthetic-gradients.html").read_text()
    assert build_site.GITHUB + "tinydgl/trainers/dni.py" in html


@pytest.fixture(scope="module")
def browser(site):
    need(find_chromium(), "no chromium on PATH (apt-get install chromium)")
    with Browser() as b:
        yield b


def test_front_page_in_a_browser(site, browser, tmp_path):
    errors = browser.open((site / "index.html").as_uri())
    assert errors == []
    assert browser.evaluate("document.title").startswith("tinydgl")
    cards = browser.evaluate("Array.from(document.querySelectorAll('.sd-card-title')).map(e => e.textContent.trim())")
    assert cards == ["Lessons", "Notebooks", "Assignments", "Reference"]
    images = browser.images()
    assert images and all(i["loaded"] for i in images), images
    shot = browser.screenshot(tmp_path / "front.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_lesson_has_its_answers_folded(site, browser):
    browser.open((site / "lessons" / "06-synthetic-gradients.html").as_uri())
    assert browser.evaluate("document.querySelector('h1').textContent").startswith("6. Synthetic gradients")
    folded = browser.evaluate("Array.from(document.querySelectorAll('#exercises details')).map(d => d.open)")
    exercises = len(
        re.findall(
            r"^\d+\. ", (ROOT / "lessons" / "06-synthetic-gradients.md").read_text().rsplit("## Exercises", 1)[1], re.M
        )
    )
    assert folded == [False] * exercises  # one answer per exercise, closed until the reader opens it
    assert browser.evaluate("""(() => { const d = document.querySelector('#exercises details');
        d.open = true; return d.querySelector('.sd-summary-content, .sd-card-body').offsetHeight > 0; })()""")
    assert all(i["loaded"] for i in browser.images())


def test_a_notebook_page_shows_its_plots(site, browser):
    browser.open((site / "notebooks" / "06_synthetic_gradients.html").as_uri())
    images = browser.images()
    plots = [i for i in images if "_images/" in i["src"] and i["src"].endswith(".png")]
    assert len(plots) >= 1, images  # the executed notebook's figures are on the page
    assert all(i["loaded"] for i in images), [i for i in images if not i["loaded"]]
    badge = browser.evaluate("""(() => { const a = document.querySelector('a[href^="https://colab.research.google.com/"]');
        return a && {href: a.href, img: a.querySelector('img') && a.querySelector('img').naturalWidth > 0}; })()""")
    assert badge and badge["img"] and badge["href"].endswith("/notebooks/06_synthetic_gradients.ipynb"), badge


def test_the_readme_documents_the_build():
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- docs-command -->", 1)[1].split("```")[1].split("\n")[1]
    assert command == 'pip install -e ".[docs]" && python scripts/build_site.py'
    assert (ROOT / "docs" / "front-page.png").is_file()  # the screenshot the README shows


def test_the_api_page_shows_signatures_and_docstrings(site, browser):
    """Every module of docs/api.md is on the page with its functions' signatures, rendered (the autodoc
    directives run, inside {eval-rst}: in plain MyST they would be shown as text)."""
    assert browser.open((site / "api.html").as_uri()) == []
    modules = re.findall(r"^\.\. automodule:: (\S+)$", (ROOT / "docs" / "api.md").read_text(), re.M)
    assert len(modules) > 40
    found = browser.evaluate("Array.from(document.querySelectorAll('[id^=\"module-\"]')).map(e => e.id)")
    assert [m for m in modules if f"module-{m}" not in found] == []
    assert browser.evaluate("document.querySelectorAll('dt.sig').length") > 300
    relu = browser.evaluate("""(() => { const dt = document.getElementById('tinydgl.ops.activation.relu_backward');
        return dt && [dt.textContent.trim(), dt.nextElementSibling.textContent.trim()]; })()""")
    assert relu and relu[0].startswith("tinydgl.ops.activation.relu_backward(dout, cache)"), relu
    assert relu[1].startswith("dout: same shape as x -> dx."), relu  # its docstring, as written
    text = browser.evaluate("document.querySelector('main').innerText")
    for directive in (".. py:", ".. auto", "py:module::", ":members:"):
        assert directive not in text, directive


@pytest.mark.parametrize(
    "page", ["api", "lessons/06-synthetic-gradients", "notebooks/06_synthetic_gradients", "README"]
)
def test_code_is_shown_in_full(site, browser, page):
    """Code lines are longer than the text column: they wrap, rather than run out of sight on the right."""
    browser.open((site / f"{page}.html").as_uri())
    blocks = browser.evaluate("""Array.from(document.querySelectorAll('main pre')).map(pre => ({
        wide: pre.scrollWidth > pre.clientWidth + 1, text: pre.textContent.slice(0, 60)}))""")
    assert blocks and [b["text"] for b in blocks if b["wide"]] == []
