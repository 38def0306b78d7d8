"""The release artifacts: what `python -m build` makes of this tree is a package PyPI would take.

- the sdist and the wheel build (without build isolation, so nothing is downloaded per run: the backend named
  in pyproject.toml's [build-system] must be installed, as the `test` extra does) with no deprecation
  warning from the backend, and `twine check --strict` passes on both;
- the wheel is the package only: every module of tinydgl/, the bundled mnist-small data (its SHA-256 as the
  loader checks it), the console script, the LICENSE in its .dist-info; its METADATA has the version, the
  license and the project URLs; installed alone (nothing but the wheel on the path) it imports and loads
  mnist-small;
- the sdist is the course as a whole: README, LICENSE, CHANGELOG, pyproject.toml, and every file of the
  package, the tests, the lessons and the notebooks (and benchmarks/, scripts/ where the tree has them);
- CHANGELOG.md has an entry for the current version.

`python -m build` writes tinydgl.egg-info/ (ignored by git) into the source tree while it makes the sdist;
the wheel is built from the unpacked sdist, in a temporary folder, so a file the sdist forgets fails here.
Skipped, with the reason, where `build` or `twine` (or the build backend) is not installed.
"""

import email.parser
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import tinydgl
from tinydgl.data.datasets import MNIST_SMALL_SHA256

ROOT = Path(__file__).resolve().parent.parent
VERSION = tinydgl.__version__
URL_NAMES = ("Homepage", "Documentation", "Source", "Changelog")
COURSE_DIRS = ("tinydgl", "tests", "lessons", "notebooks", "benchmarks", "scripts")  # all in the sdist
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints"}


def _load_toml(path):
    try:
        import tomllib  # novermin: 3.10 takes the tomli fallback below
    except ImportError:  # Python 3.10: build itself depends on tomli there
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def _on_disk(folder):
    """Files under ROOT/folder as the sdist names them, without caches and compiled files."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and not SKIP_PARTS.intersection(p.parts) and p.suffix not in (".pyc", ".pyo")
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    build = pytest.importorskip("build", reason='`build` is not installed (pip install -e ".[test]")')
    pytest.importorskip("twine", reason='`twine` is not installed (pip install -e ".[test]")')
    unmet = [
        " -> ".join(chain)
        for req in sorted(build.ProjectBuilder(ROOT).build_system_requires)
        for chain in build.check_dependency(req)
    ]
    if unmet:
        pytest.skip(f'the build backend is not installed: {", ".join(unmet)} (pip install -e ".[test]")')
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert [p.name for p in sdists] == [f"tinydgl-{VERSION}.tar.gz"], sorted(p.name for p in out.iterdir())
    assert [p.name for p in wheels] == [f"tinydgl-{VERSION}-py3-none-any.whl"], sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0], "log": log}


def test_the_build_warns_of_nothing_deprecated(dists):
    deprecated = [line for line in dists["log"].splitlines() if "deprecat" in line.lower()]
    assert deprecated == [], "\n".join(deprecated)


def test_twine_check_passes(dists):
    command = [sys.executable, "-m", "twine", "check", "--strict", str(dists["sdist"]), str(dists["wheel"])]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_the_wheel_holds_the_package_its_data_and_license(dists):
    info = f"tinydgl-{VERSION}.dist-info"
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        data = whl.read("tinydgl/data/mnist_small.npz")
        license_text = whl.read(f"{info}/licenses/LICENSE").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"tinydgl", info}  # no tests/, lessons/ ... as top-level packages
    modules = {n for n in names if n.endswith(".py")}
    assert modules == {n for n in _on_disk("tinydgl") if n.endswith(".py")}
    assert {
        "tinydgl/__init__.py",
        "tinydgl/cli/__init__.py",
        "tinydgl/trainers/__init__.py",
        "tinydgl/runtime/engine.py",
        "tinydgl/data/datasets.py",
    } <= modules
    assert hashlib.sha256(data).hexdigest() == MNIST_SMALL_SHA256
    assert license_text == (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "the tinydgl authors" in license_text
    assert re.search(r"^tinydgl = tinydgl\.cli:main$", entry_points, re.M), entry_points
    assert not any(n.endswith((".pyc", ".pyo")) for n in names)


def test_the_wheel_metadata_has_the_version_license_and_urls(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        meta = email.parser.Parser().parsestr(whl.read(f"tinydgl-{VERSION}.dist-info/METADATA").decode())
    assert meta["Name"] == "tinydgl" and meta["Version"] == VERSION
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE", "NOTICE"]
    assert meta["Requires-Python"] == ">=3.10" and meta["Description-Content-Type"] == "text/markdown"
    assert any(r.startswith("numpy") for r in meta.get_all("Requires-Dist"))
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert tuple(urls) == URL_NAMES, urls
    assert urls == _load_toml(ROOT / "pyproject.toml")["project"]["urls"]
    assert all(u.startswith("https://") for u in urls.values()), urls
    assert "<!-- test-command -->" in meta.get_payload()  # the README is the long description


def test_the_wheel_alone_imports_and_loads_the_bundled_data(dists, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(dists["wheel"]) as whl:
        whl.extractall(site)
    code = (
        "import json, tinydgl; from tinydgl.data.datasets import load_dataset; d = load_dataset('mnist-small'); "
        "print(json.dumps({'file': tinydgl.__file__, 'version': tinydgl.__version__, 'source': d.source, "
        "'train': list(d.x_train.shape), 'test': list(d.x_test.shape)}))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}  # before the editable install's finder, which comes last
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    for path in (got["file"], got["source"]):  # the wheel's copies, not the source tree's
        assert Path(path).resolve().is_relative_to(site.resolve()), got
    assert got["version"] == VERSION
    assert got["train"][0] == 4000 and got["test"][0] == 1000, got


def test_the_wheel_alone_reads_the_course_templates(dists, tmp_path):
    """The course's scripts and texts (tinydgl/course/templates/) are package data: in the wheel, and read from
    the installed package's path (importlib.resources), not from a source tree."""
    site = tmp_path / "site"
    with zipfile.ZipFile(dists["wheel"]) as whl:
        whl.extractall(site)
    on_disk = {p.name: p.read_text() for p in (ROOT / "tinydgl" / "course" / "templates").iterdir() if p.is_file()}
    code = (
        "import json, sys; from importlib import resources; import tinydgl.course as c; "
        "folder = resources.files('tinydgl.course') / 'templates'; "
        "print(json.dumps({'where': str(folder), 'texts': {p.name: p.read_text() for p in folder.iterdir()}, "
        "'run': c.template('run_autograder')}))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert Path(got["where"]).resolve().is_relative_to(site.resolve()), got["where"]
    assert got["texts"] == on_disk and len(on_disk) >= 5
    assert got["run"] == on_disk["run_autograder"]


def test_the_sdist_holds_the_course(dists):
    prefix = f"tinydgl-{VERSION}/"
    with tarfile.open(dists["sdist"]) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        pkg_info = email.parser.Parser().parsestr(tar.extractfile(prefix + "PKG-INFO").read().decode())
    assert all(m.name.startswith(prefix) for m in members)
    names = {m.name[len(prefix) :] for m in members}
    assert {
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "pyproject.toml",
        "MANIFEST.in",
        "PKG-INFO",
        "tinydgl/data/mnist_small.npz",
        "lessons/README.md",
        "notebooks/README.md",
        "tests/conftest.py",
    } <= names
    assert pkg_info["Version"] == VERSION
    for folder in COURSE_DIRS:
        if (ROOT / folder).is_dir():
            missing = sorted(_on_disk(folder) - names)
            assert missing == [], f"{folder}/ files left out of the sdist: {missing[:20]}"
    assert len([n for n in names if re.fullmatch(r"lessons/\d\d-.*\.md", n)]) >= 11
    assert len([n for n in names if re.fullmatch(r"notebooks/\d\d_.*\.ipynb", n)]) >= 11
    assert not any(n.endswith((".pyc", ".pyo")) or "__pycache__" in n for n in names)


def test_the_changelog_has_an_entry_for_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert releases and releases[0] == ("Unreleased", ""), releases  # Keep a Changelog: Unreleased first
    assert releases[1][0] == VERSION and releases[1][1], f"no dated entry for {VERSION} after Unreleased: {releases}"
    for name, _ in releases:  # each heading has its link
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, re.M), f"no link for [{name}]"
