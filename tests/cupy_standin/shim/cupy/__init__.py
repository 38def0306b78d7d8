"""`import cupy` -> the CuPy stand-in (tests/cupy_standin/fake.py), for a process started with this folder
first on PYTHONPATH (tests/cupy_standin/__init__.py: `subprocess_env()`). Not a real CuPy: see fake.py.

CUPY_STANDIN_DEVICES=n: how many GPUs it pretends to have (default 1).
CUPY_STANDIN_STATS=path: at exit, write the host<->device syncs and copies it counted, with call sites, as JSON.
"""

import atexit
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))  # tests/
try:
    from cupy_standin import fake as _fake
finally:
    sys.path.pop(0)

_modules = _fake.build()
_modules["cupy"].__path__ = __path__
_modules["cupy"].__file__ = __file__
for _name, _module in _modules.items():
    sys.modules[_name] = _module

if os.environ.get("CUPY_STANDIN_STATS"):

    def _write_stats(path=os.environ["CUPY_STANDIN_STATS"]):
        with open(f"{path}.{os.getpid()}", "w") as f:
            json.dump(_fake.STATS.as_dict(), f)

    atexit.register(_write_stats)
