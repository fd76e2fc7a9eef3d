#!/usr/bin/env python3
"""Regenerate ``cupy_names.json``: the public names and Python-level signatures of the
real CuPy, which the emulation (:mod:`gpuspec.testing.fakecupy`) is allowed to expose.

Run it with the real ``cupy-cuda12x`` wheel installed (no GPU needed; ``cupy.is_available()``
is False). The CUDA libraries that some ``cupyx`` modules load at import time come from
the NVIDIA runtime wheels::

    python3 -m venv /tmp/cupyenv && . /tmp/cupyenv/bin/activate
    pip install cupy-cuda12x nvidia-cublas-cu12 nvidia-cusolver-cu12 nvidia-cusparse-cu12 \\
        nvidia-cufft-cu12 nvidia-curand-cu12 nvidia-nvjitlink-cu12
    python gpuspec/testing/fakecupy/gen_names.py          # rewrites cupy_names.json beside it

The file is data: the emulation never imports cupy. For every module it records each
public name with its kind (function, ufunc, class, module, other); for callables the
parameters (name, kind, whether it has a default) from ``inspect.signature`` or, for
Cython methods, from the signature line of their docstring; for ufuncs ``nin``/``nout``;
whether ``ufunc.at`` is supported (``at``); and ``sync``, the docstring's own warning that the function may synchronise the device.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
import warnings

MODULES = [
    "cupy", "cupy.linalg", "cupy.fft", "cupy.random", "cupy.testing", "cupy.cuda",
    "cupy.cuda.runtime", "cupy.cuda.memory", "cupy.cuda.stream", "cupy.cuda.device",
    "cupyx", "cupyx.profiler", "cupyx.lapack", "cupyx.linalg", "cupyx.scipy", "cupyx.scipy.ndimage",
    "cupyx.scipy.special", "cupyx.scipy.linalg", "cupyx.scipy.sparse",
    "cupyx.scipy.sparse.linalg", "cupyx.scipy.fft", "cupyx.scipy.signal",
    "cupyx.scipy.interpolate", "cupyx.scipy.stats", "cupyx.scipy.spatial",
]
KINDS = {inspect.Parameter.POSITIONAL_ONLY: "positional_only",
         inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
         inspect.Parameter.VAR_POSITIONAL: "var_positional",
         inspect.Parameter.KEYWORD_ONLY: "keyword_only",
         inspect.Parameter.VAR_KEYWORD: "var_keyword"}
_SYNC = re.compile(r"[^.]*\bsynchroni[sz]e[^.]*\.", re.S)


def _params_from_signature(sig):
    return [[p.name, KINDS[p.kind], p.default is not inspect.Parameter.empty]
            for p in sig.parameters.values()]


def _params_from_doc(obj):
    """Cython methods: parse ``name(self, a, b=1) -> T`` on the first docstring line."""
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    if not doc:
        return None
    m = re.match(r"^[\w.]+\((.*)\)(\s*->.*)?$", doc[0].strip())
    if not m:
        return None
    try:
        fn = compile(f"def _f({m.group(1)}): pass", "<sig>", "exec")
        ns: dict = {}
        exec(fn, {"numpy": __import__("numpy")}, ns)  # defaults are literals or numpy names
        return _params_from_signature(inspect.signature(ns["_f"]))
    except Exception:
        return None


def _params(obj):
    try:
        return _params_from_signature(inspect.signature(obj))
    except (TypeError, ValueError):
        return _params_from_doc(obj)


def _sync_note(obj):
    doc = getattr(obj, "__doc__", None) or ""
    m = _SYNC.search(doc)
    if not m or "reduce CPU-GPU synchronization" in m.group(0):
        return None
    return " ".join(m.group(0).split())


def describe(obj, cupy):
    if inspect.ismodule(obj):
        return {"kind": "module"}
    if isinstance(obj, cupy.ufunc):
        # ``at`` works only for ufuncs with a scatter kernel (cupy/_core/_kernel.pyx)
        return {"kind": "ufunc", "nin": obj.nin, "nout": obj.nout,
                "at": getattr(obj, "_scatter_op", None) is not None}
    if inspect.isclass(obj):
        return {"kind": "class"}
    if callable(obj):
        d = {"kind": "function", "params": _params(obj)}
        note = _sync_note(obj)
        if note:
            d["sync"] = note
        return d
    return {"kind": "other", "type": type(obj).__name__}


def main(out=None):
    warnings.simplefilter("ignore")
    import cupy
    import cupyx
    import numpy

    data = {"generator": "gpuspec/testing/fakecupy/gen_names.py",
            "cupy_version": cupy.__version__, "numpy_version": numpy.__version__,
            "python": sys.version.split()[0], "modules": {}, "classes": {}}
    for name in MODULES:
        mod = importlib.import_module(name)
        names = {}
        for n in sorted(dir(mod)):
            if n.startswith("_"):
                continue
            try:
                obj = getattr(mod, n)
            except Exception:
                continue
            names[n] = describe(obj, cupy)
        data["modules"][name] = names
    classes = [("cupy.ndarray", cupy.ndarray), ("cupy.ufunc", cupy.ufunc),
               ("cupy.cuda.Device", cupy.cuda.Device), ("cupy.cuda.Stream", cupy.cuda.Stream),
               ("cupy.cuda.Event", cupy.cuda.Event), ("cupy.cuda.MemoryPool", cupy.cuda.MemoryPool),
               ("cupy.cuda.PinnedMemoryPool", cupy.cuda.PinnedMemoryPool),
               ("cupy.RawKernel", cupy.RawKernel), ("cupy.RawModule", cupy.RawModule),
               ("cupyx.errstate", cupyx.errstate)]
    for cname, cls in classes:
        members = {}
        for n in sorted(dir(cls)):
            if n.startswith("_") and n not in ("__getitem__", "__setitem__"):
                continue
            obj = getattr(cls, n)
            if isinstance(obj, property) or type(obj).__name__ == "getset_descriptor":
                members[n] = {"kind": "attribute"}
            elif callable(obj):
                d = {"kind": "method", "params": _params(obj)}
                note = _sync_note(obj)
                if note:
                    d["sync"] = note
                members[n] = d
            else:
                members[n] = {"kind": "attribute"}
        data["classes"][cname] = {"members": members,
                                  "dunder": sorted(n for n in dir(cls) if n.startswith("__"))}
    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_names.json")
    with open(out, "w") as f:
        json.dump(data, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"wrote {out}: cupy {cupy.__version__}, "
          f"{sum(len(v) for v in data['modules'].values())} names")


if __name__ == "__main__":
    main(*sys.argv[1:])
