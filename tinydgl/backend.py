"""The array-backend switch: the one module that decides which array library tinydgl computes with.

tinydgl's ops never import NumPy or CuPy directly. Each op asks its inputs which library they belong to,

    xp = array_namespace(x)

and calls `xp.matmul`, `xp.exp`, ... on it, so one code path runs on numpy, cupy (an NVIDIA GPU) and
array_api_strict (the tests' fake-device backend). Only the default for *new* arrays is global: pick it with
`tinydgl.set_backend("cupy")`, TINYDGL_BACKEND or `--backend`; an unusable one raises
`BackendUnavailableError`. Random numbers are drawn on the host (`default_rng`), so a seed means the same
numbers on every backend.

Design notes: docs/design/backends.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy", "array_api_strict")

# An array of any backend: a numpy.ndarray, a cupy.ndarray or another array-API array (array_api_strict's).
# `Any` to the type checker, as those libraries share no base class; the docstrings give the shapes.
Array = Any
# An array library's namespace (`xp`): the numpy or cupy module, or an array-API namespace.
Namespace = Any


@dataclass(frozen=True)
class Backend:
    """The active array library: its name, its module (``xp``) and the device new arrays go to."""

    name: str
    xp: Any
    device: Any = None

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"


class BackendUnavailableError(ImportError):
    """A backend that cannot run on this machine: its library is not installed or, for CuPy, no GPU is
    visible. An ImportError, so code that already catches a missing library catches this too."""


def gpu_count(cupy: Any) -> int:
    """How many CUDA devices CuPy sees; BackendUnavailableError (not a CUDA traceback) when it sees none."""
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver (cudaErrorInsufficientDriver), no device, ...
        raise BackendUnavailableError(
            f"The 'cupy' backend found no GPU: CuPy is installed, but CUDA reports {err}. Run on a machine with "
            "an NVIDIA GPU and its driver (`nvidia-smi` lists the GPUs), or use the numpy backend "
            "(--backend numpy, or unset TINYDGL_BACKEND)."
        ) from err
    if count < 1:
        raise BackendUnavailableError(
            "The 'cupy' backend found no GPU: CUDA sees 0 devices (check CUDA_VISIBLE_DEVICES and "
            "`nvidia-smi`), or use the numpy backend (--backend numpy, or unset TINYDGL_BACKEND)."
        )
    return count


def _import_namespace(name: str) -> Namespace:
    if name == "numpy":
        return np
    if name == "cupy":
        try:
            import cupy
        except ImportError as err:  # pragma: no cover - depends on the machine
            from .extras import install_command

            raise BackendUnavailableError(
                f"The 'cupy' backend needs CuPy. Install it with: {install_command('gpu')} "
                "(CuPy 14 for CUDA 12; with a CUDA 13 driver: pip install 'cupy-cuda13x[ctk]>=14'), then check "
                "that `nvidia-smi` shows a GPU."
            ) from err
        gpu_count(cupy)
        return cupy
    if name == "array_api_strict":
        try:
            import array_api_strict
        except ImportError as err:
            raise ImportError(
                "The 'array_api_strict' backend is for portability tests: pip install array-api-strict"
            ) from err
        return array_api_strict
    raise ValueError(f"Unknown backend {name!r}; choose one of {', '.join(BACKENDS)}.")


def _make_backend(name: str, device: Any = None) -> Backend:
    xp = _import_namespace(name)
    if name == "cupy" and device is not None:
        if not hasattr(device, "use"):
            count = gpu_count(xp)
            if not 0 <= int(device) < count:
                raise ValueError(
                    f"GPU {device} does not exist: CUDA sees {count} GPU(s), numbered 0 to {count - 1} "
                    "(CUDA_VISIBLE_DEVICES renumbers them from 0)."
                )
            device = xp.cuda.Device(int(device))
        # CuPy allocates every new array (zeros, arange, the result of each op) on the *current* device, not
        # on the device of its inputs: make this one current, so that everything lands on it.
        device.use()
    return Backend(name, xp, device)


def _backend_from_environment() -> Backend:
    """The default backend: ``$TINYDGL_BACKEND``, or numpy when it is unset or empty.

    Read on first use, not at import, so that a bad value is one clear error (naming the variable, its
    value and the valid ones) where tinydgl first needs a backend, rather than a traceback from `import`.
    """
    raw = os.environ.get("TINYDGL_BACKEND", "")
    name = raw.strip().lower() or "numpy"
    if name not in BACKENDS:
        raise ValueError(
            f"TINYDGL_BACKEND={raw!r} is not a backend: set it to one of {', '.join(BACKENDS)}, "
            "or unset it to compute with numpy."
        )
    try:
        return _make_backend(name)
    except ImportError as err:
        raise BackendUnavailableError(f"TINYDGL_BACKEND={raw.strip()}: {err}") from err


_active: Backend | None = None  # resolved from the environment on first use (see _current)


def _current() -> Backend:
    global _active
    if _active is None:
        _active = _backend_from_environment()
    return _active


def set_backend(name: str = "numpy", device: Any = None) -> Backend:
    """Make `name` ("numpy", "cupy" or "array_api_strict") the backend for newly created arrays.

    `device`: for CuPy a GPU index (or `cupy.cuda.Device`), which also becomes CuPy's current device (for this
    thread, as CUDA's current device is), so that every array created afterwards lands on it; for
    array_api_strict an `array_api_strict.Device`; ignored by NumPy. Returns the new active `Backend`.
    """
    global _active
    _active = _make_backend(name.strip().lower(), device)
    return _active


def get_backend() -> Backend:
    """The active backend (name, module, device)."""
    return _current()


@contextlib.contextmanager
def use_backend(name: str, device: Any = None) -> Iterator[Backend]:
    """`with use_backend("array_api_strict", device): ...` switches the backend for one block."""
    global _active
    previous = _active  # None (not yet resolved) is restored as None
    previous_gpu = _current_gpu() if name.strip().lower() == "cupy" and device is not None else None
    backend = set_backend(name, device)
    try:
        yield backend
    finally:
        _active = previous
        if previous_gpu is not None:
            previous_gpu.use()  # the current CuPy device too, as set_backend changed it


def _current_gpu() -> Any:
    import cupy

    return cupy.cuda.Device()


def _is_cupy_array(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def array_namespace(*arrays: Array | None) -> Namespace:
    """The array library (`xp`) the given arrays belong to; None entries are skipped.

    NumPy and CuPy arrays map to the `numpy` / `cupy` modules themselves (so their fast paths are
    available); any other array-API array maps to its `__array_namespace__()`.
    """
    namespaces: list[Any] = []
    for x in arrays:
        if x is None or isinstance(x, (int, float, bool)):
            continue
        if isinstance(x, (np.ndarray, np.generic)):
            xp = np
        elif _is_cupy_array(x):
            import cupy

            xp = cupy
        elif hasattr(x, "__array_namespace__"):
            xp = x.__array_namespace__()
        else:
            raise TypeError(f"Expected an array, got {type(x).__name__}.")
        if not any(xp is seen for seen in namespaces):
            namespaces.append(xp)
    if not namespaces:
        return _current().xp
    if len(namespaces) > 1:
        names = ", ".join(getattr(m, "__name__", str(m)) for m in namespaces)
        raise TypeError(f"Arrays from different libraries were mixed ({names}); move them to one backend.")
    return namespaces[0]


def is_numpy_like(xp: Namespace) -> bool:
    """True for NumPy and CuPy, whose extras (`add.at`, `lib.stride_tricks`, ...) allow fast paths.

    Every op that takes such a fast path keeps a portable version, used on any other namespace and tested
    against the fast one.
    """
    return xp is np or getattr(xp, "__name__", "") == "cupy"


def device_of(x: Array) -> Any:
    """The device of array `x` (None for NumPy)."""
    return None if isinstance(x, np.ndarray) else getattr(x, "device", None)


def _resolve_dtype(xp: Namespace, dtype: Any) -> Any:
    if dtype is None or not isinstance(dtype, str):
        return dtype
    return getattr(xp, dtype)


def asarray(data: Any, dtype: Any = None, like: Array | None = None) -> Array:
    """Put `data` (a NumPy array, list or scalar) on a backend's device.

    The backend is the one of array `like` if given (so new arrays land next to it), else the active one.
    `dtype` may be a string such as "float32".
    """
    if like is not None:
        xp, device = array_namespace(like), device_of(like)
    else:
        xp, device = _current().xp, _current().device
    dtype = _resolve_dtype(xp, dtype)
    if xp is np:
        return np.asarray(data, dtype=dtype)
    if getattr(xp, "__name__", "") == "cupy":
        if device is None:
            return xp.asarray(data, dtype=dtype)
        with device:
            return xp.asarray(data, dtype=dtype)
    return xp.asarray(data, dtype=dtype, device=device)


def to_numpy(x: Any) -> np.ndarray:
    """Copy any backend's array to a NumPy array on the host (a no-op for NumPy arrays)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    if _is_cupy_array(x):
        return x.get()
    if isinstance(x, (int, float, bool, list, tuple)):
        return np.asarray(x)
    xp = x.__array_namespace__()
    if getattr(xp, "__name__", "") == "array_api_strict":
        # array_api_strict refuses __array__ off its CPU device, exactly like CuPy: move explicitly.
        return np.asarray(x.to_device(xp.Device("CPU_DEVICE")))
    return np.from_dlpack(x)


def to_backend(x: Array, backend: Backend | None = None) -> Array:
    """Move array `x` (from any backend) to `backend` (default: the active one), keeping its dtype."""
    backend = backend or _current()
    host = to_numpy(x)
    if backend.xp is np:
        return host
    if backend.name == "cupy":
        if backend.device is None:
            return backend.xp.asarray(host)
        with backend.device:
            return backend.xp.asarray(host)
    return backend.xp.asarray(host, device=backend.device)


def zeros_like_on(x: Array, shape: tuple[int, ...], dtype: Any = None) -> Array:
    """`xp.zeros(shape)` with `x`'s namespace, device and (by default) dtype."""
    xp = array_namespace(x)
    dtype = x.dtype if dtype is None else dtype
    if xp is np:
        return np.zeros(shape, dtype=dtype)
    if getattr(xp, "__name__", "") == "cupy":
        return xp.zeros(shape, dtype=dtype)  # CuPy allocates on the current device, which holds x
    return xp.zeros(shape, dtype=dtype, device=x.device)


def empty_like_on(x: Array, shape: tuple[int, ...], dtype: Any = None) -> Array:
    """`xp.empty(shape)` (uninitialised) with `x`'s namespace, device and (by default) dtype."""
    xp = array_namespace(x)
    dtype = x.dtype if dtype is None else dtype
    if xp is np or getattr(xp, "__name__", "") == "cupy":
        return xp.empty(shape, dtype=dtype)
    return xp.empty(shape, dtype=dtype, device=x.device)


def arange_like(x: Array, n: int, dtype: Any = None) -> Array:
    """`xp.arange(n)` with `x`'s namespace and device."""
    xp = array_namespace(x)
    if xp is np or getattr(xp, "__name__", "") == "cupy":
        return xp.arange(n, dtype=dtype)
    return xp.arange(n, dtype=dtype, device=x.device)


def default_rng(seed: int | None = None) -> np.random.Generator:
    """A seeded host random generator; draws are moved to the device with `asarray`.

    Drawing on the host makes one seed give the same numbers on every backend (docs/design/backends.md).
    """
    return np.random.default_rng(seed)


def is_gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
