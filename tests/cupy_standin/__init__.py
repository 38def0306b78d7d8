"""A CuPy stand-in for tests: `cupy` on the CPU, so the CuPy route of tinydgl runs in CI without a GPU.

    from cupy_standin import standin_cupy, subprocess_env, STATS
    with standin_cupy():            # in this process: `import cupy` gives the stand-in inside the block
        ...
    subprocess.run([...], env=subprocess_env())   # a child whose `import cupy` gives the stand-in

What it is and what it checks: fake.py. Where its names and signatures come from: manifest.json, recorded by
record_manifest.py from a real `import cupy` (CuPy 14.2.0; no GPU needed). It lives in tests/ because only
tests and benchmarks/gpu_check.py --standin (which finds it here, beside the tests it runs) use it; the
library never imports it.
"""

import contextlib
import os
import sys
from pathlib import Path

from . import fake
from .fake import STATS

MANIFEST_PATH = Path(__file__).resolve().parent / "manifest.json"
SHIM = Path(__file__).resolve().parent / "shim"  # put first on PYTHONPATH: holds the `cupy` package


@contextlib.contextmanager
def standin_cupy(devices=1):
    """`import cupy` gives the stand-in (with `devices` GPUs) inside the block; the real CuPy, if installed,
    is put back afterwards. The active tinydgl backend is restored too."""
    import tinydgl.backend as backend

    saved = {name: module for name, module in sys.modules.items() if name == "cupy" or name.startswith("cupy.")}
    saved_devices = os.environ.get("CUPY_STANDIN_DEVICES")
    saved_backend = backend._active
    for name in saved:
        del sys.modules[name]
    os.environ["CUPY_STANDIN_DEVICES"] = str(devices)
    sys.modules.update(fake.build())
    fake._local.device = 0
    try:
        yield sys.modules["cupy"]
    finally:
        for name in [n for n in sys.modules if n == "cupy" or n.startswith("cupy.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        if saved_devices is None:
            os.environ.pop("CUPY_STANDIN_DEVICES", None)
        else:
            os.environ["CUPY_STANDIN_DEVICES"] = saved_devices
        fake._local.device = 0
        backend._active = saved_backend


def subprocess_env(base=None, devices=1, stats=None):
    """An environment for a child process whose `import cupy` is the stand-in (PYTHONPATH: the shim first).
    `stats`: a path prefix; the child writes its counts to `<stats>.<pid>` at exit."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["CUPY_STANDIN_DEVICES"] = str(devices)
    if stats is not None:
        env["CUPY_STANDIN_STATS"] = str(stats)
    return env


__all__ = ["MANIFEST_PATH", "STATS", "SHIM", "fake", "standin_cupy", "subprocess_env"]
