"""Record what a real `import cupy` exports, for the CuPy stand-in (tests/cupy_standin/fake.py) to copy.

    python tests/cupy_standin/record_manifest.py        # rewrites tests/cupy_standin/manifest.json

Needs the pinned CuPy installed (pyproject's `gpu` extra: cupy-cuda12x 14.x), but no GPU: CuPy imports
without one, and nothing here launches a kernel. Recorded, per module the library or its tests may reach
(cupy, cupy.cuda, cupy.cuda.runtime, cupy.lib.stride_tricks, cupy.linalg, cupy.random):

- every public name and its kind (function, ufunc, gufunc, class, module, dtype, constant);
- the parameters of each function whose signature `inspect` can read;
- for `cupy.ndarray` and `cupy.cuda.Device`: their attributes, and the parameters of each method, read from
  the first line of its docstring (CuPy's methods are compiled, so `inspect` cannot read them);
- the keywords CuPy's ufuncs accept: probed by calling `cupy.add(1, 2, kw=None)` for each candidate; CuPy
  checks its keywords before touching a device, so a keyword it refuses raises "Wrong arguments" even here,
  and one it accepts fails later (no GPU) with a CUDA error;
- the parameters of the ufunc methods (`at`, `reduce`, ...), from their docstrings.
"""

import ast
import inspect
import json
import sys
from pathlib import Path

import cupy

MODULES = ["cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.lib.stride_tricks", "cupy.linalg", "cupy.random"]
UFUNC_KEYWORD_CANDIDATES = [
    "out",
    "dtype",
    "casting",
    "where",
    "order",
    "subok",
    "signature",
    "axes",
    "axis",
    "keepdims",
]
OUT = Path(__file__).resolve().parent / "manifest.json"


def params_of(sig: inspect.Signature):
    return [[p.name, p.kind.name, p.default is not inspect.Parameter.empty] for p in sig.parameters.values()]


def params_from_doc(obj, drop_self=True):
    """Parameters from a docstring whose first line reads `Class.name(self, a, b=None, *, c=1) -> ...`."""
    line = ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]
    if "(" not in line or ")" not in line:
        return None
    inside = line[line.index("(") + 1 : line.rindex(")")]
    try:
        args = ast.parse(f"def f({inside}): pass").body[0].args
    except SyntaxError:
        return None
    out = []
    positional = args.posonlyargs + args.args
    n_defaults = len(args.defaults)
    for i, a in enumerate(args.posonlyargs):
        out.append([a.arg, "POSITIONAL_ONLY", i >= len(positional) - n_defaults])
    for i, a in enumerate(args.args, start=len(args.posonlyargs)):
        out.append([a.arg, "POSITIONAL_OR_KEYWORD", i >= len(positional) - n_defaults])
    if args.vararg:
        out.append([args.vararg.arg, "VAR_POSITIONAL", False])
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append([a.arg, "KEYWORD_ONLY", d is not None])
    if args.kwarg:
        out.append([args.kwarg.arg, "VAR_KEYWORD", False])
    if drop_self and out and out[0][0] == "self":
        out = out[1:]
    return out


def kind_of(obj):
    if isinstance(obj, cupy.ufunc):
        return "ufunc"
    if type(obj).__name__ == "_GUFunc":
        return "gufunc"
    if inspect.ismodule(obj):
        return "module"
    if isinstance(obj, type):
        try:
            if issubclass(obj, cupy.generic):
                return "dtype"
        except TypeError:
            pass
        return "class"
    if callable(obj):
        return "function"
    return "constant"


def record_module(name):
    module = sys.modules.get(name) or __import__(name, fromlist=["_"])
    names = {}
    for attr in sorted(dir(module)):
        if attr.startswith("_"):
            continue
        obj = getattr(module, attr)
        entry = {"kind": kind_of(obj)}
        if entry["kind"] in ("function", "gufunc", "class"):
            try:
                entry["params"] = params_of(inspect.signature(obj))
            except (TypeError, ValueError):
                doc = params_from_doc(obj, drop_self=False)
                if doc is not None and entry["kind"] != "class":
                    entry["params_from_doc"] = doc
        elif entry["kind"] == "constant" and isinstance(obj, (int, float, str, bool)):
            entry["value"] = obj
        names[attr] = entry
    return names


def record_class(cls):
    attrs = {}
    for attr in sorted(dir(cls)):
        if attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__")):
            continue
        obj = getattr(cls, attr)
        if type(obj).__name__ in ("getset_descriptor", "property", "member_descriptor"):
            attrs[attr] = {"kind": "property"}
        elif callable(obj):
            entry = {"kind": "method"}
            params = params_from_doc(obj)
            if params is not None and not attr.startswith("__"):
                entry["params"] = params
            attrs[attr] = entry
        else:
            attrs[attr] = {"kind": "constant"}
    return attrs


def ufunc_keywords():
    accepted = []
    for kw in UFUNC_KEYWORD_CANDIDATES:
        try:
            cupy.add(1, 2, **{kw: None})
        except TypeError as err:
            if "Wrong arguments" in str(err):
                continue
            accepted.append(kw)  # refused for its value, not its name
        except Exception:  # CUDARuntimeError: the keyword was accepted, then there was no GPU
            accepted.append(kw)
        else:
            accepted.append(kw)
    return accepted


def main():
    manifest = {
        "cupy_version": cupy.__version__,
        "recorded_by": "tests/cupy_standin/record_manifest.py",
        "modules": {name: record_module(name) for name in MODULES},
        "ndarray": record_class(cupy.ndarray),
        "device": record_class(cupy.cuda.Device),
        "memory_pool": record_class(cupy.cuda.MemoryPool),
        "ufunc_keywords": ufunc_keywords(),
        "ufunc_methods": {
            m: params_from_doc(getattr(cupy.add, m)) for m in ("at", "reduce", "accumulate", "outer", "reduceat")
        },
    }
    OUT.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    n = sum(len(v) for v in manifest["modules"].values())
    print(
        f"recorded CuPy {cupy.__version__}: {n} names, {len(manifest['ndarray'])} ndarray attributes, "
        f"ufunc keywords {manifest['ufunc_keywords']} -> {OUT}"
    )


if __name__ == "__main__":
    main()
