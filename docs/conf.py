"""Sphinx configuration of the course site, built by scripts/build_site.py (read its docstring first).

The build script stages the pages (docs/, lessons/ with their answers folded in, notebooks/, the assignment
handouts, README.md, INSTRUCTOR.md, benchmarks/RESULTS.md) into one source folder and runs Sphinx on it with
this file; it passes the notebook mode and the cache folder in the environment.
"""
import os

import tinydgl

project = "tinydgl"
author = "the tinydgl developers"
copyright = "2026, the tinydgl developers (MIT License)"
release = version = tinydgl.__version__
REPOSITORY = "https://github.com/tinydgl/tinydgl"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx_design"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# MyST: ::: fences hold the folded answers; heading anchors make README.md#section links resolve (and warn
# when they do not).
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 4
suppress_warnings = []

# Notebooks run during the build, so every plot is on the page. TINYDGL_FAST=1 (set by the build script's
# --fast, which CI uses) makes each notebook shrink its data, as the test suite runs them. Every build runs
# every notebook ("force"): a cache keyed on the notebooks alone would keep outputs that a change to the
# library made wrong. The build script's --cache (for quick rebuilds while writing) keeps them, one cache
# per mode.
nb_execution_mode = os.environ.get("TINYDGL_SITE_EXECUTION", "force")
nb_execution_cache_path = os.environ.get("TINYDGL_SITE_CACHE", "../build/site-cache")
nb_execution_timeout = int(os.environ.get("TINYDGL_SITE_TIMEOUT", "900"))
nb_execution_raise_on_error = True
nb_execution_in_temp = True  # notebooks that write files (runs/, checkpoints/) write them in a temporary folder
nb_merge_streams = True

# Offline: no web font, no CDN script. The theme's assets are in its package; no page has math (MathJax would
# come from a CDN), and the build script checks that no page loads anything from the web.
html_theme = "sphinx_book_theme"
html_title = f"tinydgl {version}"
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
}
# Code blocks wrap their long lines (see the stylesheet) rather than clip them on the right
html_static_path = ["_static"]
html_css_files = ["tinydgl.css"]
html_last_updated_fmt = None
html_copy_source = False

# The API page: docstrings in this project are plain text with shapes, not reStructuredText, so each one is
# shown as written (a literal block) instead of being parsed.
autodoc_default_options = {"members": True, "undoc-members": False, "member-order": "bysource"}
autodoc_typehints = "none"


def _docstring_as_written(app, what, name, obj, options, lines):
    if lines:
        lines[:] = ["::", ""] + ["   " + line for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", _docstring_as_written)
