"""Messages about an optional extra name the pip command that works for this install (tinydgl/extras.py):
the clone's own extra in a clone (where `pip install 'tinydgl[plot]'` would fetch another tinydgl from PyPI),
`tinydgl[...]` for an installed wheel."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinydgl import extras
from tinydgl.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_in_a_clone_the_command_installs_the_clones_extra():
    assert extras.install_command("plot") == f"pip install -e '{ROOT}[plot]'"


def test_from_a_wheel_the_command_installs_from_pypi(tmp_path):
    package = tmp_path / "site-packages" / "tinydgl"  # an installed wheel: no pyproject.toml beside the package
    package.mkdir(parents=True)
    shutil.copy2(extras.__file__, package / "extras.py")
    done = subprocess.run(
        [sys.executable, "-c", "import extras; print(extras.install_command('gpu'))"],
        cwd=package,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "pip install 'tinydgl[gpu]'"


def test_plot_without_matplotlib_says_how_to_install_it_here(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert main(["train", "--plot", str(tmp_path / "run.png"), "--limit-train", "64", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert f"--plot needs matplotlib, which is not installed: pip install -e '{ROOT}[plot]'" in err, err
    assert "'tinydgl[plot]'" not in err
    with pytest.raises(ImportError, match=r"pip install -e .*\[plot\]"):
        from tinydgl.train.plot import plot_history

        plot_history({}, tmp_path / "x.png")
