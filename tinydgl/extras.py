"""The pip command that installs an optional extra of tinydgl (plot, gpu, mpi, ...), right for this install.

`pip install 'tinydgl[plot]'` is right after `pip install tinydgl`, and wrong in a clone of the repository
(the README's `pip install -e .`), where it would fetch another tinydgl from PyPI. There the command is the
checkout's own extra: `pip install -e '/path/to/clone[plot]'`.
"""

import shlex
from pathlib import Path


def install_command(extra):
    """`pip install ...` for the optional extra named `extra` of the tinydgl that is running."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():  # a clone: the package sits beside its pyproject.toml
        return "pip install -e " + shlex.quote(f"{root}[{extra}]")
    return "pip install " + shlex.quote(f"tinydgl[{extra}]")
