"""The CuPy stand-in itself: a module that poses as `cupy` on the CPU, built from manifest.json.

It computes with NumPy underneath, but behaves towards its caller as CuPy 14 does where that matters for
code written against CuPy:

- it exposes only the names a real `import cupy` exports (manifest.json), and a function refuses, with
  CuPy's TypeError, any argument its recorded signature has no place for; ufuncs take only the keywords CuPy's
  ufuncs take (`out`, `dtype`, `casting`);
- its arrays are `cupy.ndarray`, a wrapper, not `numpy.ndarray`; `np.asarray(x)` raises CuPy's
  "Implicit conversion to a NumPy array is not allowed"; a NumPy array passed to one of its functions (other
  than `asarray`/`array`, which copy host data to the device) or mixed into arithmetic raises;
- NumPy functions and ufuncs called on its arrays raise (`__array_function__` / `__array_ufunc__`): CuPy would
  dispatch some of them, but code meant for any backend calls `xp.f`, never `np.f`, on device arrays;
- it has `CUPY_STANDIN_DEVICES` GPUs (default 1); every array remembers the device current when it was
  made, and an operation on an array that is not on the current device raises CuPy's ValueError;
- it counts host<->device synchronisations (`float()`, `int()`, `bool()`, `.item()`, `.get()`, `.tolist()`,
  `cupy.asnumpy`, printing an array, pickling one, indexing with a boolean mask) and host->device copies (`asarray`/`array` of host data,
  host data written into or indexing an array), each with the call site outside this file (`STATS`);
- it counts the calls that would launch a GPU kernel on CuPy (`STATS.launches`, with call sites; what
  counts is said at `_launches`): benchmarks/count_launches.py prints them per trainer step.

Only what a student's training run needs is simulated: no streams, no memory limits, and of CuPy's own
kernels only `ElementwiseKernel`, through a Python twin (below); RawKernel and the other CuPy-only names
raise NotImplementedError.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
import types
from collections import Counter
from pathlib import Path

import numpy as np

MANIFEST = json.loads((Path(__file__).resolve().parent / "manifest.json").read_text())
_HERE = os.path.abspath(__file__)


# --- counting syncs and copies -----------------------------------------------------------------------------
def _call_site():
    """'file:line (function) <- file:line (function)': the first frame outside the stand-in, and its caller
    (the first is often a helper such as tinydgl.backend.asarray; the second says who needed it)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) == _HERE:
        frame = frame.f_back
    if frame is None:
        return "?"
    where = [f"{f.f_code.co_filename}:{f.f_lineno} ({f.f_code.co_name})" for f in (frame, frame.f_back) if f]
    return " <- ".join(where)


class Stats:
    """Host<->device traffic so far: `syncs` and `uploads` are Counters of (what, call site) -> count."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.syncs = Counter()
        self.uploads = Counter()
        self.launches = Counter()

    def launch(self, what):
        with self.lock:
            self.launches[(what, _call_site())] += 1

    def total_launches(self):
        return sum(self.launches.values())

    def sync(self, what):
        with self.lock:
            self.syncs[(what, _call_site())] += 1

    def upload(self, what):
        with self.lock:
            self.uploads[(what, _call_site())] += 1

    def total_syncs(self):
        return sum(self.syncs.values())

    def total_uploads(self):
        return sum(self.uploads.values())

    def as_dict(self):
        return {
            "syncs": [[w, s, n] for (w, s), n in self.syncs.most_common()],
            "uploads": [[w, s, n] for (w, s), n in self.uploads.most_common()],
            "launches": [[w, s, n] for (w, s), n in self.launches.most_common()],
        }


STATS = Stats()


# What counts as a kernel launch (`_launches`): every call CuPy would answer by starting GPU work on data,
# i.e. each elementwise operator or ufunc (`a + b`, `cupy.exp`, `x *= 2`, comparisons), each reduction
# (`sum`, `max`, `argmax`), each matmul/einsum/dot (one cuBLAS call counted as one), each copy on the device
# (`.copy()`, `astype` to another dtype, `ascontiguousarray` of a strided view, advanced indexing, writing
# into an array with `x[...] = v`), each creation with a fill (`zeros`, `ones`, `full`, `arange`, `*_like`
# except `empty_like`), and each `ElementwiseKernel` call. Not counted: views (basic slicing, reshape of
# a contiguous array, transpose, `as_strided`, a result that shares memory with an argument), `empty`
# and `empty_like` (allocation only), metadata (shape, dtype), and host<->device copies (counted as syncs
# and uploads instead: they are memcpys, not kernels). One call is one launch even where CuPy would start
# two kernels (a reduction over several axes, an einsum that transposes first): the counts are a floor.
_NO_FILL = frozenset({"empty", "empty_like"})


def _shares(result, args):
    """True when `result` (NumPy) is a view of one of the NumPy arrays among `args` (a view launches nothing)."""
    return any(isinstance(a, np.ndarray) and np.may_share_memory(result, a) for a in args)


def _launches(name, result, inputs, out=None):
    """Count a launch for the call `name` that returned NumPy `result` from NumPy `inputs`, as said above."""
    if name in _NO_FILL:
        return
    if out is None:
        arrays = result if isinstance(result, tuple) else (result,)
        if not any(isinstance(r, (np.ndarray, np.generic)) for r in arrays):
            return  # metadata (cupy.shape, result_type, ...) or nothing
        if all(isinstance(r, np.ndarray) and _shares(r, inputs) for r in arrays):
            return  # a view
    STATS.launch(name)


def _flat(values):
    """The NumPy arrays among `values` (positional and keyword arguments, through lists and tuples)."""
    found = []
    for v in values:
        if isinstance(v, np.ndarray):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found.extend(_flat(v))
    return found


# --- devices -------------------------------------------------------------------------------------------------
def device_count():
    return int(os.environ.get("CUPY_STANDIN_DEVICES", "1"))


_local = threading.local()  # CuPy's current device is per thread, as CUDA's is


def _current_id():
    return getattr(_local, "device", 0)


class CUDARuntimeError(RuntimeError):
    def __init__(self, status, message="cudaErrorInvalidDevice: invalid device ordinal"):
        self.status = status
        super().__init__(message)


class Device:
    """cupy.cuda.Device: a GPU index; `with Device(k):` and `Device(k).use()` make it current."""

    def __init__(self, device=None):
        if device is None:
            device = _current_id()
        device = int(device)
        if not 0 <= device < device_count():
            raise CUDARuntimeError(101)
        self.id = device
        self._previous = []

    def use(self):
        _local.device = self.id

    def __enter__(self):
        self._previous.append(_current_id())
        _local.device = self.id
        return self

    def __exit__(self, *exc):
        _local.device = self._previous.pop()

    def synchronize(self):
        STATS.sync("Device.synchronize")

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        return (8 * 2**30, 16 * 2**30)

    def __int__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class MemoryPool:
    """cupy.cuda.MemoryPool: the stand-in allocates with NumPy, so the pool reports nothing held."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def n_free_blocks(self):
        return 0

    def get_limit(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass


# --- arrays --------------------------------------------------------------------------------------------------
def _host_error(what):
    return TypeError(
        f"Unsupported type {what} (the CuPy stand-in refuses host data here, as CuPy does: move it "
        "to the device with cupy.asarray first)"
    )


class ndarray:
    """cupy.ndarray: a NumPy array `_a` that lives on device `_device`."""

    __slots__ = ("_a", "_device")
    __array_priority__ = 100
    __array_ufunc__ = None  # NumPy's ufuncs and operators hand over to ours (and np.exp(x) raises)

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)
        self._device = _current_id()

    # conversions to the host: refused implicitly, counted explicitly
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
            "NumPy array explicitly."
        )

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(
            f"numpy.{func.__name__} was called on a cupy.ndarray (the stand-in refuses NumPy "
            f"functions on device arrays: call xp.{func.__name__} with xp = the array's namespace)"
        )

    def get(self, stream=None, order="C", out=None, blocking=True):
        STATS.sync(".get()")
        return np.array(self._a, order=order)

    def item(self):
        STATS.sync(".item()")
        return self._a.item()

    def tolist(self):
        STATS.sync(".tolist()")
        return self._a.tolist()

    def set(self, arr, stream=None):
        STATS.upload(".set()")
        self._a[...] = np.asarray(arr)

    def __float__(self):
        STATS.sync("float()")
        return float(self._a)

    def __int__(self):
        STATS.sync("int()")
        return int(self._a)

    def __complex__(self):
        STATS.sync("complex()")
        return complex(self._a)

    def __bool__(self):
        STATS.sync("bool()")
        return bool(self._a)

    def __repr__(self):
        STATS.sync("repr()")
        return repr(self._a)

    def __str__(self):
        STATS.sync("str()")
        return str(self._a)

    def __format__(self, spec):
        STATS.sync("format()")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __reduce__(self):
        STATS.sync("pickle")
        return (_unpickle, (np.array(self._a),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # attributes that need no data
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: Device(self._device))
    T = property(lambda self: _wrap(self._on_device().T, self._device))
    mT = property(lambda self: _wrap(np.matrix_transpose(self._on_device()), self._device))
    real = property(lambda self: _wrap(self._on_device().real, self._device))
    imag = property(lambda self: _wrap(self._on_device().imag, self._device))

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base, self._device)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    __hash__ = None

    def _on_device(self):
        """The NumPy data, after checking that this array is on the current device, as CuPy's kernels do."""
        if self._device != _current_id():
            raise ValueError(
                f"The device where the array resides ({self._device}) is different from the current "
                f"device ({_current_id()}). Peer access is unavailable between these devices."
            )
        return self._a

    def __getitem__(self, index):
        result = self._on_device()[_unwrap_index(index)]
        _launches("__getitem__", result, [self._a])  # a gather for advanced indexing; basic slicing is a view
        return _wrap(result, self._device)

    def __setitem__(self, index, value):
        if isinstance(value, np.ndarray):  # CuPy copies it to the device first
            STATS.upload("host array written into a device array")
        else:
            value = _unwrap(value)
            STATS.launch("__setitem__")  # a fill or a copy kernel
        self._on_device()[_unwrap_index(index)] = value

    def __getattr__(self, name):
        # every ndarray method CuPy has and this class does not spell out: NumPy's, checked against CuPy's
        # recorded parameters
        entry = MANIFEST["ndarray"].get(name)
        if entry is None or entry["kind"] != "method" or name.startswith("_"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        method = getattr(self._on_device(), name, None)
        if method is None:
            raise NotImplementedError(f"the CuPy stand-in does not implement ndarray.{name}")
        signature = _signature(entry.get("params"))
        device = self._device

        def call(*args, **kwargs):
            if signature is not None:
                _bind(signature, f"ndarray.{name}", args, kwargs)
            out = kwargs.get("out")
            result = method(*_unwrap(args), **_unwrap(kwargs))
            if name == "fill" or name == "sort":  # in place, returns None
                STATS.launch(f"ndarray.{name}")
            else:
                _launches(f"ndarray.{name}", result, [self._a], out)
            return out if out is not None else _wrap(result, device)

        return call


for _name, _np_op in [
    ("add", np.add),
    ("sub", np.subtract),
    ("mul", np.multiply),
    ("truediv", np.true_divide),
    ("floordiv", np.floor_divide),
    ("mod", np.remainder),
    ("pow", np.power),
    ("matmul", np.matmul),
    ("and", np.bitwise_and),
    ("or", np.bitwise_or),
    ("xor", np.bitwise_xor),
    ("lshift", np.left_shift),
    ("rshift", np.right_shift),
]:

    def _forward(self, other, _op=_np_op, _name=_name):
        STATS.launch(f"__{_name}__")
        return _wrap(_op(self._on_device(), _operand(other)), self._device)

    def _reverse(self, other, _op=_np_op, _name=_name):
        STATS.launch(f"__r{_name}__")
        return _wrap(_op(_operand(other), self._on_device()), self._device)

    def _inplace(self, other, _op=_np_op, _name=_name):
        STATS.launch(f"__i{_name}__")
        _op(self._on_device(), _operand(other), out=self._a)
        return self

    setattr(ndarray, f"__{_name}__", _forward)
    setattr(ndarray, f"__r{_name}__", _reverse)
    setattr(ndarray, f"__i{_name}__", _inplace)
for _name, _np_op in [
    ("eq", np.equal),
    ("ne", np.not_equal),
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
]:

    def _compare(self, other, _op=_np_op, _name=_name):
        STATS.launch(f"__{_name}__")
        return _wrap(_op(self._on_device(), _operand(other)), self._device)

    setattr(ndarray, f"__{_name}__", _compare)
for _name, _np_op in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute), ("invert", np.invert)]:

    def _unary(self, _op=_np_op, _name=_name):
        STATS.launch(f"__{_name}__")
        return _wrap(_op(self._on_device()), self._device)

    setattr(ndarray, f"__{_name}__", _unary)
ndarray.__module__ = "cupy"
ndarray.__qualname__ = ndarray.__name__ = "ndarray"


def _unpickle(host):
    STATS.upload("unpickle")
    return _wrap(np.array(host), _current_id())


def _wrap(result, device=None):
    """NumPy results -> stand-in arrays on `device` (0-d for NumPy scalars, as CuPy returns 0-d arrays)."""
    if device is None:
        device = _current_id()
    if isinstance(result, np.ndarray):
        out = ndarray.__new__(ndarray)
        out._a, out._device = result, device
        return out
    if isinstance(result, np.generic):
        return _wrap(np.asarray(result), device)
    if isinstance(result, tuple):
        return tuple(_wrap(r, device) for r in result)
    if isinstance(result, list):
        return [_wrap(r, device) for r in result]
    return result


def _unwrap(value):
    """Stand-in arrays (on the current device) -> NumPy, through lists, tuples and dicts; NumPy arrays raise."""
    if isinstance(value, ndarray):
        return value._on_device()
    if isinstance(value, np.ndarray):
        raise _host_error("<class 'numpy.ndarray'>")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def _operand(other):
    if isinstance(other, ndarray):
        return other._on_device()
    if isinstance(other, (int, float, complex, bool, np.generic)):
        return other
    raise _host_error(type(other))


def _unwrap_index(index):
    """An index: stand-in arrays unwrap; NumPy index arrays are copied to the device by CuPy (counted)."""
    if isinstance(index, tuple):
        return tuple(_unwrap_index(i) for i in index)
    if isinstance(index, ndarray):
        if index.dtype == np.bool_:  # the result's size is the mask's count: CuPy reads it back to the host
            STATS.sync("boolean-mask index")
        return index._on_device()
    if isinstance(index, np.ndarray):
        STATS.upload("host array used as an index")
        return index
    if isinstance(index, list):
        STATS.upload("list used as an index")
    return index


# --- functions from the manifest ------------------------------------------------------------------------------
def _signature(params):
    if params is None:
        return None
    return inspect.Signature(
        [
            inspect.Parameter(
                name, getattr(inspect.Parameter, kind), default=None if has_default else inspect.Parameter.empty
            )
            for name, kind, has_default in params
        ]
    )


def _bind(signature, name, args, kwargs):
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        raise TypeError(f"cupy.{name}(): {err} (CuPy 14's signature is {signature})") from None


def _function(qualname, np_func, params):
    signature = _signature(params)

    def function(*args, **kwargs):
        if signature is not None:
            _bind(signature, qualname, args, kwargs)
        out = kwargs.get("out")
        args, kwargs = _unwrap(args), _unwrap(kwargs)
        result = np_func(*args, **kwargs)
        _launches(qualname, result, _flat(list(args) + list(kwargs.values())), out)
        return out if isinstance(out, ndarray) else _wrap(result)

    function.__name__ = function.__qualname__ = qualname.rsplit(".", 1)[-1]
    function.__module__ = "cupy"
    function.__signature__ = signature
    return function


def _not_implemented(qualname):
    def function(*args, **kwargs):
        raise NotImplementedError(f"cupy.{qualname} exists in CuPy 14, but the CuPy stand-in does not simulate it")

    function.__name__ = qualname.rsplit(".", 1)[-1]
    return function


class ufunc:
    """cupy.ufunc: NumPy's ufunc of the same name, with CuPy's keywords (manifest: ufunc_keywords)."""

    KEYWORDS = frozenset(MANIFEST["ufunc_keywords"])

    def __init__(self, name, np_ufunc):
        self.name, self._np = f"cupy_{name}", np_ufunc
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, **kwargs):
        wrong = {k: v for k, v in kwargs.items() if k not in self.KEYWORDS}
        if wrong:
            raise TypeError(f"Wrong arguments {wrong}")
        out = kwargs.get("out")
        if out is not None and not isinstance(out, (ndarray, tuple)):
            raise TypeError(f"Output arguments must be cupy.ndarray, not {type(out)}")
        for a in args:
            if not isinstance(a, (ndarray, int, float, complex, bool, np.generic)):
                raise _host_error(type(a))
        STATS.launch(self.name[5:])
        result = self._np(*_unwrap(args), **_unwrap(kwargs))
        return out if out is not None else _wrap(result)

    def _method(self, method):
        signature = _signature(MANIFEST["ufunc_methods"][method])

        def call(*args, **kwargs):
            _bind(signature, f"{self.name}.{method}", args, kwargs)
            STATS.launch(f"{self.name[5:]}.{method}")
            out = kwargs.get("out")
            result = getattr(self._np, method)(*_unwrap(args), **_unwrap(kwargs))
            return out if out is not None else _wrap(result)

        return call

    at = property(lambda self: self._method("at"))
    reduce = property(lambda self: self._method("reduce"))
    accumulate = property(lambda self: self._method("accumulate"))
    outer = property(lambda self: self._method("outer"))
    reduceat = property(lambda self: self._method("reduceat"))


ufunc.__module__ = "cupy"


# functions that are not simply NumPy's
def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if isinstance(a, ndarray):
        result = a._on_device()
        converted = np.asarray(result, dtype=dtype, order=order)
        if copy:
            converted = converted.copy()
        if converted is not result:
            STATS.launch("asarray")  # a dtype conversion or a copy on the device
        return a if converted is result else _wrap(converted)
    STATS.upload("asarray of host data")
    return _wrap(np.array(a, dtype=dtype, order=order))  # always a copy: host memory is not device memory


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        result = np.array(obj._on_device(), dtype=dtype, copy=copy, order=order, ndmin=ndmin)
        _launches("array", result, [obj._a])
        return _wrap(result)
    STATS.upload("array of host data")
    return _wrap(np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        STATS.sync("cupy.asnumpy")
        host = np.array(a._a, order=order)
        if out is not None:
            out[...] = host
            return out
        return host
    return np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in args) else np


def einsum(*operands, **kwargs):
    # CuPy's einsum takes dtype, casting and optimize; NumPy's also takes out= and order=, CuPy's refuses them
    unknown = set(kwargs) - {"dtype", "casting", "optimize"}
    if unknown:
        raise TypeError(f"Did not understand the following kwargs: {sorted(unknown)}")
    STATS.launch("einsum")
    return _wrap(np.einsum(*_unwrap(operands), **kwargs))


def as_strided(x, shape=None, strides=None):
    """cupy.lib.stride_tricks.as_strided: no `subok`, no `writeable` (NumPy's extra keywords)."""
    return _wrap(np.lib.stride_tricks.as_strided(x._on_device(), shape=shape, strides=strides), x._device)


class ElementwiseKernel:
    """cupy.ElementwiseKernel(in_params, out_params, operation, name): on CuPy, `operation` is CUDA C,
    compiled on first call and run once per element. The stand-in cannot compile CUDA: it runs the kernel's
    *Python twin* instead, looked up by `name` in tinydgl.kernels.elementwise.PYTHON_TWINS (beside the CUDA
    source), with CuPy's calling convention checked: as many arguments as parameters, device arrays only,
    scalars cast to their parameter's type (`T`: the dtype of the arrays typed T), outputs written in place.
    So the stand-in tests the twin and the calling code, **not the CUDA source**, which runs only on a GPU.
    """

    def __init__(
        self,
        in_params,
        out_params,
        operation,
        name="kernel",
        reduce_dims=True,
        preamble="",
        no_return=False,
        return_tuple=False,
        loop_prep="",
        after_loop="",
        options=(),
    ):
        self.in_params, self.out_params = self._parse(in_params), self._parse(out_params)
        self.operation, self.name = operation, name

    @staticmethod
    def _parse(params):
        """'T x, float32 y' -> [('T', 'x'), ('float32', 'y')]"""
        return [tuple(p.split()[-2:]) for p in params.split(",") if p.strip()]

    def __call__(self, *args):
        params = self.in_params + self.out_params
        if len(args) != len(params):
            names = ", ".join(n for _, n in params)
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}: {len(params)} expected ({names}), "
                f"{len(args)} given (the stand-in needs the outputs passed in)"
            )
        try:
            import tinydgl.kernels.elementwise as library_kernels

            twins = library_kernels.PYTHON_TWINS
        except ImportError:
            twins = {}
        if self.name not in twins:
            raise NotImplementedError(
                f"the CuPy stand-in cannot compile CUDA: kernel {self.name!r} needs a Python "
                "twin in tinydgl.kernels.elementwise.PYTHON_TWINS"
            )
        arrays = [a for a in args if isinstance(a, ndarray)]
        if not arrays or any(isinstance(a, np.ndarray) for a in args):
            raise _host_error("<class 'numpy.ndarray'>")
        type_of = {t: a.dtype for (t, _), a in zip(params, args) if isinstance(a, ndarray) and len(t) == 1}
        values = []
        for (t, _), a in zip(params, args):
            if isinstance(a, ndarray):
                values.append(a._on_device())
            else:
                values.append(np.dtype(type_of.get(t, t)).type(a))
        STATS.launch(f"ElementwiseKernel {self.name}")
        new = twins[self.name](*values)
        for out, value in zip(args[len(self.in_params) :], new):
            out._a[...] = value


_memory_pool = MemoryPool()

SPECIAL = {
    "cupy": {
        "ndarray": ndarray,
        "ufunc": ufunc,
        "asarray": asarray,
        "array": array,
        "asnumpy": asnumpy,
        "get_array_module": get_array_module,
        "einsum": einsum,
        "ElementwiseKernel": ElementwiseKernel,
        "is_available": lambda: device_count() > 0,
        "get_default_memory_pool": lambda: _memory_pool,
        "get_default_pinned_memory_pool": lambda: _memory_pool,
    },
    "cupy.lib.stride_tricks": {"as_strided": as_strided},
    "cupy.cuda": {
        "Device": Device,
        "MemoryPool": MemoryPool,
        "is_available": lambda: device_count() > 0,
        "get_device_id": _current_id,
    },
    "cupy.cuda.runtime": {
        "CUDARuntimeError": CUDARuntimeError,
        "getDeviceCount": device_count,
        "getDevice": _current_id,
        "setDevice": lambda device: Device(device).use(),
        "getDeviceProperties": lambda device: {
            "name": b"CuPy stand-in (CPU)",
            "totalGlobalMem": 16 * 2**30,
            "major": 9,
            "minor": 0,
            "multiProcessorCount": 1,
        },
        "runtimeGetVersion": lambda: 12080,
        "driverGetVersion": lambda: 12080,
    },
}
NUMPY_HOME = {
    "cupy": np,
    "cupy.linalg": np.linalg,
    "cupy.random": np.random,
    "cupy.lib.stride_tricks": np.lib.stride_tricks,
}


def populate(module, name):
    """Fill `module` (named `name`, e.g. 'cupy.cuda') with the manifest's names for it."""
    recorded = MANIFEST["modules"][name]
    home = NUMPY_HOME.get(name)
    for attr, entry in recorded.items():
        qualname = attr if name == "cupy" else f"{name[5:]}.{attr}"
        if attr in SPECIAL.get(name, {}):
            value = SPECIAL[name][attr]
        elif entry["kind"] == "module":
            continue  # the submodules are set by the package (shim/cupy/__init__.py)
        elif home is not None and hasattr(home, attr):
            np_value = getattr(home, attr)
            if entry["kind"] == "ufunc" and isinstance(np_value, np.ufunc):
                value = ufunc(attr, np_value)
            elif entry["kind"] == "dtype" or entry["kind"] == "constant":
                value = np_value
            elif entry["kind"] in ("function", "gufunc") and callable(np_value):
                value = _function(qualname, np_value, entry.get("params", entry.get("params_from_doc")))
            elif entry["kind"] == "class" and isinstance(np_value, type) and issubclass(np_value, Exception):
                value = np_value
            else:
                value = _not_implemented(qualname)
        elif entry["kind"] == "constant" and "value" in entry:
            value = entry["value"]
        else:
            value = _not_implemented(qualname)
        setattr(module, attr, value)


def build():
    """The `cupy` package and its submodules as fresh module objects: {'cupy': ..., 'cupy.cuda': ...}."""
    modules = {}
    for name in MANIFEST["modules"]:
        modules[name] = types.ModuleType(
            name, f"CuPy stand-in ({name}), recorded from CuPy {MANIFEST['cupy_version']}: tests/cupy_standin/fake.py"
        )
    for name in list(MANIFEST["modules"]) + ["cupy.lib"]:
        if name not in modules:
            modules[name] = types.ModuleType(name)
    for name, module in modules.items():
        if name in MANIFEST["modules"]:
            populate(module, name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    cupy = modules["cupy"]
    cupy.__version__ = MANIFEST["cupy_version"]
    cupy.__path__ = []  # a package, so `import cupy.cuda` finds the submodules in sys.modules
    cupy.__cupy_standin__ = sys.modules[__name__]  # for tests: cupy.__cupy_standin__.STATS
    return modules
