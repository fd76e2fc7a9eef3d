"""The emulated ``cupy`` / ``cupyx`` module tree.

Every module exposes exactly the public names of the real CuPy module (``cupy_names.json``).
A name is implemented by a hand-written override (below) where CuPy's behaviour differs
from NumPy's (synchronisations, host data, batched linear algebra failures), else by the
NumPy/SciPy function of the same name behind CuPy's rules (:func:`_generic`); names with no
NumPy/SciPy counterpart raise ``NotImplementedError("... is not emulated")`` when used.
Names that the real CuPy lacks raise ``AttributeError``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
import warnings

import numpy as np

from . import _cuda, _names
from ._core import (check_dtype, host_to_device, is_scalar, ndarray, ufunc, unwrap,
                    unwrap_kwargs, wrap)
from ._ledger import LEDGER, DeviceSynchronized

UFUNCS: dict = {}
MODULES: dict = {}

_COUNTERPART = {
    "cupy": "numpy", "cupy.linalg": "numpy.linalg", "cupy.fft": "numpy.fft",
    "cupy.random": "numpy.random", "cupyx.scipy.ndimage": "scipy.ndimage",
    "cupyx.scipy.special": "scipy.special", "cupyx.scipy.linalg": "scipy.linalg",
    "cupyx.scipy.fft": "scipy.fft", "cupyx.scipy.signal": "scipy.signal",
    "cupyx.scipy.interpolate": "scipy.interpolate", "cupyx.scipy.stats": "scipy.stats",
    "cupyx.scipy.spatial": "scipy.spatial",
}
#: NumPy returns a Python scalar, CuPy a 0-d device array
_ARRAY_RESULT = {"count_nonzero", "allclose", "array_equal", "array_equiv"}
#: arguments may be host objects (dtypes, NumPy arrays): these only look at dtypes/shapes
_HOST_OK = {"result_type", "can_cast", "min_scalar_type", "promote_types", "isscalar",
            "issubdtype", "dtype", "finfo", "iinfo", "common_type", "obj2sctype", "typename",
            "mintypecode", "ndim", "shape", "size"}
_ERRSTATE = {"linalg": "ignore"}


class FakeModule(types.ModuleType):
    """A module exposing the real CuPy module's names only."""

    def __init__(self, name):
        super().__init__(name)
        self.__dict__["_real"] = _names.module_names(name)
        self.__file__ = __file__
        self.__path__ = []

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        real = self.__dict__["_real"]
        if attr not in real:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (not in "
                                 f"CuPy {_names.cupy_version()})")
        obj = _build(self.__name__, attr, real[attr])
        setattr(self, attr, obj)
        return obj

    def __dir__(self):
        return sorted(set(self.__dict__["_real"]) | set(self.__dict__))


def _not_emulated(qual):
    def f(*args, **kwargs):
        raise NotImplementedError(f"{qual} is not emulated by gpuspec.testing.fakecupy")
    f.__name__ = qual.rsplit(".", 1)[-1]
    return f


def _counterpart(modname, name):
    host = _COUNTERPART.get(modname)
    if host is None:
        return None
    try:
        return getattr(importlib.import_module(host), name)
    except (ImportError, AttributeError):
        return None


def _generic(modname, name, fn, sync_note=None):
    sig = _names.signature(modname, name)
    qual = f"{modname}.{name}"
    host_ok = name in _HOST_OK

    def f(*args, **kwargs):
        _names.check_call(sig, qual, args, kwargs)
        if host_ok:
            a = [x._a if isinstance(x, ndarray) else x for x in args]
            k = {kk: (v._a if isinstance(v, ndarray) else v) for kk, v in kwargs.items()}
        else:
            a = unwrap(args, qual)
            k = unwrap_kwargs(kwargs, qual)
        if sync_note:
            LEDGER.sync(name)
        out = kwargs.get("out")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = fn(*a, **k)
        if isinstance(out, ndarray) and r is out._a:
            return out
        if host_ok:
            return r
        if name in _ARRAY_RESULT and isinstance(r, (bool, int, float, np.bool_)):
            r = np.asarray(r)
        return wrap(r)

    f.__name__ = name
    f.__qualname__ = qual
    f.__doc__ = f"Emulated {qual} (NumPy/SciPy {getattr(fn, '__name__', name)} under CuPy's rules)."
    return f


def _build(modname, name, desc):
    key = (modname, name)
    if key in OVERRIDES:
        return OVERRIDES[key]
    kind = desc["kind"]
    if kind == "module":
        return module(f"{modname}.{name}")
    if kind == "ufunc":
        src = _counterpart(modname, name)
        if src is None or not isinstance(src, np.ufunc):
            return _not_emulated(f"{modname}.{name}")
        u = ufunc(name, src, desc["nin"], desc["nout"], desc.get("at", False))
        if modname == "cupy":
            UFUNCS.setdefault(name, u)
        return u
    if kind == "class":
        src = _counterpart(modname, name)
        if isinstance(src, type) and (issubclass(src, np.generic) or src in (np.finfo, np.iinfo,
                                                                             np.dtype)):
            return src
        if isinstance(src, type) and issubclass(src, Exception):
            return src
        return type(name, (), {"__init__": lambda self, *a, _q=f"{modname}.{name}", **k:
                               _not_emulated(_q)()})
    if kind == "other":
        src = _counterpart(modname, name)
        return src if src is not None and not callable(src) else \
            getattr(np, name, None) if not callable(getattr(np, name, None)) else None
    src = _counterpart(modname, name)
    if src is None or not callable(src):
        return _not_emulated(f"{modname}.{name}")
    return _generic(modname, name, src, desc.get("sync"))


def module(name) -> FakeModule:
    if name not in MODULES:
        MODULES[name] = FakeModule(name)
    return MODULES[name]


def lookup(path, name):
    """The emulated function ``cupy.<path...>.<name>``, or None."""
    mod = module("cupy")
    try:
        for p in path[1:]:
            mod = getattr(mod, p)
        fn = getattr(mod, name)
    except (AttributeError, NotImplementedError):
        return None
    return fn if callable(fn) else None


def _ufuncs_ready():
    for n, d in _names.module_names("cupy").items():
        if d["kind"] == "ufunc":
            getattr(module("cupy"), n)


# ============================================================================ overrides
OVERRIDES: dict = {}


def override(modname, name=None):
    def deco(fn):
        n = name or fn.__name__.rstrip("_")
        sig = _names.signature(modname, n)
        qual = f"{modname}.{n}"

        @functools.wraps(fn)
        def f(*args, **kwargs):
            _names.check_call(sig, qual, args, kwargs)
            with np.errstate(all="ignore"):
                return fn(*args, **kwargs)
        f.__qualname__ = qual
        OVERRIDES[(modname, n)] = f
        return f
    return deco


def _dev(x, what):
    if not isinstance(x, ndarray):
        raise TypeError(f"{what}: expected a cupy.ndarray, got {type(x)}")
    return x._a


# ---- host <-> device
@override("cupy")
def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    out = host_to_device(obj, dtype=dtype, copy=True if not isinstance(obj, ndarray) else copy)
    if ndmin > out.ndim:
        out = ndarray._wrap(out._a.reshape((1,) * (ndmin - out.ndim) + out.shape))
    return out


@override("cupy")
def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if isinstance(a, ndarray):
        if dtype is None and not copy:
            return a
        return ndarray._wrap(a._a.astype(check_dtype(dtype or a.dtype), copy=bool(copy)))
    if copy is False:
        raise ValueError("a host object cannot be made a device array without a copy")
    return host_to_device(a, dtype=dtype)


OVERRIDES[("cupy", "asanyarray")] = OVERRIDES[("cupy", "asarray")]


@override("cupy")
def ascontiguousarray(a, dtype=None):
    x = _dev(a, "cupy.ascontiguousarray (argument 'a' must be a cupy.ndarray)")
    return ndarray._wrap(np.ascontiguousarray(x, dtype=None if dtype is None else check_dtype(dtype)))


@override("cupy")
def asfortranarray(a, dtype=None):
    x = _dev(a, "cupy.asfortranarray (argument 'a' must be a cupy.ndarray)")
    return ndarray._wrap(np.asfortranarray(x, dtype=None if dtype is None else check_dtype(dtype)))


@override("cupy")
def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    if out is not None:
        out[...] = a
        return out
    return np.asarray(a, order=order)


@override("cupy")
def get_array_module(*args):
    for a in args:
        if isinstance(a, ndarray):
            return module("cupy")
    return np


@override("cupy")
def is_available():
    return True


@override("cupy")
def copyto(dst, src, casting="same_kind", where=None):
    d = _dev(dst, "cupy.copyto dst")
    if isinstance(src, np.ndarray) and src.ndim != 0:
        raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
    s = src._a if isinstance(src, ndarray) else (src.item() if isinstance(src, np.ndarray) else src)
    np.copyto(d, s, casting=casting, where=True if where is None else unwrap(where, "copyto where"))


# ---- functions that synchronise (CuPy sizes their results on the host)
@override("cupy")
def bincount(x, weights=None, minlength=None):
    xa = _dev(x, "cupy.bincount x")
    if xa.ndim > 1:
        raise ValueError("object too deep for desired array")
    if xa.ndim < 1:
        raise ValueError("object of too small depth for desired array")
    if xa.dtype.kind == "f":
        raise TypeError("x must be int array")
    LEDGER.sync("bincount (x < 0).any()")
    w = None if weights is None else _dev(weights, "cupy.bincount weights")
    if xa.size:
        LEDGER.sync("bincount int(max(x))")
    return wrap(np.bincount(xa, weights=w, minlength=0 if minlength is None else int(minlength)))


def _sync_then(name, kind=None):
    fn = getattr(np, name)

    def f(*args, **kwargs):
        LEDGER.sync(kind or name)
        return wrap(fn(*unwrap(args, f"cupy.{name}"), **unwrap_kwargs(kwargs, f"cupy.{name}")))
    f.__name__ = name
    return f


for _n in ("nonzero", "flatnonzero", "argwhere", "extract", "compress", "delete", "digitize",
           "ravel_multi_index", "unravel_index", "nanmax", "nanmin", "asarray_chkfinite",
           "real_if_close", "histogram", "histogram2d", "histogramdd"):
    override("cupy", _n)(_sync_then(_n))


@override("cupy")
def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *,
           equal_nan=True, sorted=True):
    LEDGER.sync("unique")
    return wrap(np.unique(_dev(ar, "cupy.unique"), return_index, return_inverse, return_counts,
                          axis=axis, equal_nan=equal_nan))


@override("cupy")
def where(condition, x=None, y=None):
    if (x is None) != (y is None):
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    if x is None:
        LEDGER.sync("where(condition) = nonzero")
        return wrap(np.nonzero(_dev(condition, "cupy.where condition")))
    return UFUNCS_where(condition, x, y)


def UFUNCS_where(c, x, y):
    args = []
    for v, w in ((c, "condition"), (x, "x"), (y, "y")):
        if isinstance(v, ndarray):
            args.append(v._a)
        elif is_scalar(v):
            args.append(v)
        else:
            raise TypeError(f"Unsupported type {type(v)} (cupy.where {w})")
    return wrap(np.where(*args))


@override("cupy")
def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    if weights is not None:
        LEDGER.sync("average: weights sum checked on the host")
    return wrap(np.average(_dev(a, "cupy.average"), axis=axis,
                           weights=None if weights is None else _dev(weights, "weights"),
                           returned=returned, keepdims=keepdims))


@override("cupy")
def interp(x, xp, fp, left=None, right=None, period=None):
    xa, xpa, fpa = (_dev(v, f"cupy.interp {n}") for v, n in ((x, "x"), (xp, "xp"), (fp, "fp")))
    if xpa.ndim != 1 or fpa.ndim != 1:
        raise ValueError("xp and fp must be 1D arrays")
    if not xa.flags.c_contiguous:
        raise NotImplementedError("Non-C-contiguous x is currently not supported")
    for v in (left, right):
        if v is not None and not isinstance(v, ndarray):
            LEDGER.upload(8)   # cupy.array(left/right): a host -> device copy
    lv = left._a if isinstance(left, ndarray) else left
    rv = right._a if isinstance(right, ndarray) else right
    return wrap(np.interp(xa, xpa, fpa, left=lv, right=rv, period=period))


@override("cupy")
def repeat(a, repeats, axis=None):
    if isinstance(repeats, ndarray):
        LEDGER.sync("repeat: device repeats read on the host", repeats.nbytes)
        repeats = repeats._a
    elif isinstance(repeats, np.ndarray):
        repeats = repeats.tolist()
    return wrap(np.repeat(_dev(a, "cupy.repeat"), repeats, axis=axis))


@override("cupy")
def count_nonzero(a, axis=None):
    return wrap(np.asarray(np.count_nonzero(_dev(a, "cupy.count_nonzero"), axis=axis)))


# ---- kernels, memory, misc
@override("cupy")
def get_default_memory_pool():
    return _cuda.get_default_memory_pool()


@override("cupy")
def get_default_pinned_memory_pool():
    return _cuda.get_default_pinned_memory_pool()


OVERRIDES[("cupy", "RawKernel")] = _cuda.RawKernel
OVERRIDES[("cupy", "RawModule")] = _cuda.RawModule
OVERRIDES[("cupy", "ElementwiseKernel")] = _cuda.ElementwiseKernel
OVERRIDES[("cupy", "ReductionKernel")] = _cuda.ReductionKernel
OVERRIDES[("cupy", "ndarray")] = ndarray
OVERRIDES[("cupy", "ufunc")] = ufunc


@override("cupy")
def fuse(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


# ---- linalg: batched, failures per element as cuSOLVER/cuBLAS report them (no exception
# unless cupyx.errstate(linalg="raise"))
def _linalg_error(msg):
    if _ERRSTATE["linalg"] == "raise":
        raise np.linalg.LinAlgError(msg)


def _partial_cholesky(m):
    """LAPACK potrf semantics for a matrix that is not positive definite: factor up to the
    failing column k, store the non-positive pivot there, leave the rest as input."""
    n = m.shape[0]
    L = np.tril(m).astype(np.result_type(m.dtype, np.float64), copy=True)
    for j in range(n):
        ajj = L[j, j] - L[j, :j] @ L[j, :j]
        if not ajj > 0:
            L[j, j] = ajj
            return L
        L[j, j] = np.sqrt(ajj)
        L[j + 1:, j] = (L[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L  # pragma: no cover - positive definite after all


@override("cupy.linalg")
def cholesky(a):
    x = _dev(a, "cupy.linalg.cholesky")
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise np.linalg.LinAlgError("Last 2 dimensions of the array must be square")
    flat = x.reshape((-1,) + x.shape[-2:])
    out = np.empty(flat.shape, dtype=np.result_type(x.dtype, np.float32))
    bad = 0
    for i in range(flat.shape[0]):
        try:
            out[i] = np.linalg.cholesky(flat[i])
        except np.linalg.LinAlgError:
            out[i] = _partial_cholesky(flat[i])
            bad += 1
    if bad:
        _linalg_error(f"Error reported by potrf in cuSOLVER: {bad} matrices are not positive "
                      "definite")
    return ndarray._wrap(out.reshape(x.shape))


@override("cupy.linalg")
def inv(a):
    x = _dev(a, "cupy.linalg.inv")
    flat = x.reshape((-1,) + x.shape[-2:])
    out = np.empty(flat.shape, dtype=np.result_type(x.dtype, np.float32))
    bad = 0
    for i in range(flat.shape[0]):
        try:
            out[i] = np.linalg.inv(flat[i])
        except np.linalg.LinAlgError:
            out[i] = np.nan
            bad += 1
    if bad:
        _linalg_error("Error reported by getrf in cuBLAS: singular matrix")
    return ndarray._wrap(out.reshape(x.shape))


@override("cupy.linalg")
def eigh(a, UPLO="L"):
    w, v = np.linalg.eigh(_dev(a, "cupy.linalg.eigh"), UPLO=UPLO)
    return ndarray._wrap(w), ndarray._wrap(v)


# ---- cupyx
@contextlib.contextmanager
def _errstate_cm(linalg=None):
    old = dict(_ERRSTATE)
    if linalg is not None:
        if linalg not in ("ignore", "raise"):
            raise ValueError("linalg mode must be 'ignore' or 'raise'")
        _ERRSTATE["linalg"] = linalg
    try:
        yield
    finally:
        _ERRSTATE.update(old)


def errstate(*, linalg=None):
    return _errstate_cm(linalg)


def seterr(*, linalg=None):
    old = dict(_ERRSTATE)
    if linalg is not None:
        _ERRSTATE["linalg"] = linalg
    return old


def geterr():
    return dict(_ERRSTATE)


@contextlib.contextmanager
def allow_synchronize(allow):
    old = LEDGER.allow_sync
    LEDGER.allow_sync = bool(allow)
    try:
        yield
    finally:
        LEDGER.allow_sync = old


def scatter_add(a, slices, value):
    _dev(a, "cupyx.scatter_add").__class__  # type check
    a.scatter_add(slices, value)


def scatter_max(a, slices, value):
    a.scatter_max(slices, value)


def scatter_min(a, slices, value):
    a.scatter_min(slices, value)


for _n, _f in (("errstate", errstate), ("seterr", seterr), ("geterr", geterr),
               ("allow_synchronize", allow_synchronize), ("scatter_add", scatter_add),
               ("scatter_max", scatter_max), ("scatter_min", scatter_min),
               ("empty_pinned", _cuda.empty_pinned), ("zeros_pinned", _cuda.zeros_pinned)):
    OVERRIDES[("cupyx", _n)] = _f
OVERRIDES[("cupyx", "DeviceSynchronized")] = DeviceSynchronized
OVERRIDES[("cupyx", "rsqrt")] = ufunc("rsqrt", lambda x, **k: np.divide(1.0, np.sqrt(x), **k), 1, 1)


class time_range(contextlib.ContextDecorator):
    def __init__(self, message=None, color_id=None, argb_color=None, sync=False):
        self.message = message

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


OVERRIDES[("cupyx.profiler", "time_range")] = time_range
OVERRIDES[("cupyx.profiler", "profile")] = contextlib.nullcontext


def _morphology(name):
    import scipy.ndimage as ndi
    fn = getattr(ndi, name)
    sig = _names.signature("cupyx.scipy.ndimage", name)

    def f(*args, **kwargs):
        b = sig.bind(*args, **kwargs) if sig is not None else None
        structure = b.arguments.get("structure") if b else None
        iterations = b.arguments.get("iterations", 1) if b else 1
        if isinstance(structure, ndarray):
            LEDGER.sync(f"{name}: int(count_nonzero(structure))")
            if not structure._a.all():
                LEDGER.sync(f"{name}: structure centre read on the host")
        if iterations != 1:
            for _ in range(max(int(iterations), 1)):
                LEDGER.sync(f"{name}: 'changed' test per iteration")
        _names.check_call(sig, f"cupyx.scipy.ndimage.{name}", args, kwargs)
        return wrap(fn(*unwrap(args, name), **unwrap_kwargs(kwargs, name)))
    f.__name__ = name
    return f


for _n in ("binary_dilation", "binary_erosion", "binary_opening", "binary_closing",
           "binary_propagation", "binary_fill_holes", "binary_hit_or_miss"):
    OVERRIDES[("cupyx.scipy.ndimage", _n)] = _morphology(_n)


def cuda_module() -> types.ModuleType:
    m = module("cupy.cuda")
    for n in ("Device", "Stream", "Event", "MemoryPool", "PinnedMemoryPool",
              "get_current_stream", "get_device_id", "is_available"):
        setattr(m, n, getattr(_cuda, n))
    m.runtime = _cuda.make_runtime()
    m.ExternalStream = _cuda.Stream
    return m
