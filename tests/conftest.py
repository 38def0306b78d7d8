"""Shared test fixtures: the backends every portable test runs on.

- numpy-float64 / numpy-float32: plain NumPy.
- strict-device1: `array_api_strict` arrays on a non-default device. Like CuPy, this library refuses silent
  conversion to NumPy and refuses to mix devices, so passing here is our proof (without a GPU) that the
  code path CuPy would take makes no NumPy-only assumption.
- cupy-standin: the CuPy route (NumPy-like fast paths, CuPy's own signatures and ufunc keywords) on the CPU,
  through the CuPy stand-in of tests/cupy_standin/ (arrays that are not numpy.ndarray, refuse implicit host
  conversion and NumPy arrays, and count host syncs). array_api_strict proves the generic route; this one
  proves the route CuPy takes.
- cupy (marker `gpu`): only where CuPy sees a GPU.
"""

import os
from dataclasses import dataclass

# One BLAS thread: the suite's matrices are small, and OpenBLAS's threads cost more than they give on a
# 2-core machine (measured: the DNI tests take 11 s with one thread, 95 s with the default when the
# machine is busy). Must be set before NumPy is first imported; a value set by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest

import tinydgl
from tinydgl.backend import is_gpu_available, to_numpy


@dataclass
class BackendCase:
    name: str  # backend name for tinydgl.set_backend
    dtype: str
    device: object = None
    rtol: float = 1e-10

    def put(self, array, dtype=None):
        """A NumPy array -> this backend's array (floats cast to the case's dtype)."""
        array = np.asarray(array)
        if dtype is None and array.dtype.kind == "f":
            dtype = self.dtype
        with tinydgl.use_backend(self.name, self.device):
            return tinydgl.backend.asarray(array, dtype=dtype)

    def use(self):
        return tinydgl.use_backend(self.name, self.device)

    def check_device(self, array):
        """Assert `array` lives on this case's backend and device."""
        if self.name == "numpy":
            assert isinstance(array, np.ndarray), type(array)
        elif self.name == "array_api_strict":
            assert array.device == self.device, array.device
        elif self.name == "cupy":
            assert type(array).__module__.split(".")[0] == "cupy" and not isinstance(array, np.ndarray), type(array)
        assert (
            str(array.dtype).endswith(self.dtype) or array.dtype.kind not in "f"
            if hasattr(array.dtype, "kind")
            else True
        )


def _strict_case():
    xps = pytest.importorskip("array_api_strict")
    return BackendCase("array_api_strict", "float64", xps.Device("device1"))


CASES = {
    "numpy-float64": lambda: BackendCase("numpy", "float64"),
    "numpy-float32": lambda: BackendCase("numpy", "float32", rtol=2e-4),
    "strict-device1": _strict_case,
    "cupy-standin": lambda: BackendCase("cupy", "float64"),  # only inside `standin_cupy()` (the fixture's)
}


@pytest.fixture(params=list(CASES))
def backend_case(request):
    """Each portable test runs once per backend case (the cupy-standin case with the stand-in as `cupy`)."""
    case = CASES[request.param]()
    if request.param != "cupy-standin":
        yield case
        return
    from cupy_standin import standin_cupy

    with standin_cupy():
        yield case


@pytest.fixture
def gpu_case():
    if not is_gpu_available():
        pytest.skip("CuPy cannot see a CUDA GPU on this machine (install tinydgl[gpu] on a GPU host to run)")
    return BackendCase("cupy", "float32", rtol=2e-4)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def numpy_of(x):
    return None if x is None else to_numpy(x)


def pytest_configure(config):
    """Register the assignments' markers: `task_<id>` for each task, `assignment_a1`... for each assignment
    (tinydgl/course/catalogue.py lists them; `python -m pytest -m task_a1_relu_backward` runs one task's tests)."""
    from tinydgl.course import ASSIGNMENTS, TASKS, assignment_marker

    for a in ASSIGNMENTS:
        config.addinivalue_line("markers", f"{assignment_marker(a.id)}: the tests of assignment {a.id[1:]}, {a.title}")
    for t in TASKS:
        config.addinivalue_line("markers", f"{t.marker}: the tests of task {t.id} ({t.title})")
