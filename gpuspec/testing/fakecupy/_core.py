"""The emulated ``cupy.ndarray`` and ``cupy.ufunc``: NumPy storage, CuPy's rules.

What is enforced (each from CuPy's documentation or source, ``cupy/_core/core.pyx``,
``_routines_indexing.pyx``, ``_kernel.pyx``):

* ``ndarray`` is not a NumPy array: ``numpy.asarray(x)`` raises ``TypeError: Implicit
  conversion to a NumPy array is not allowed``; no ``__index__`` (a device scalar is not a
  Python index); ``numpy`` functions dispatch through ``__array_function__`` /
  ``__array_ufunc__`` to the CuPy function of the same name, or fail.
* Operands of ufuncs and operators are device arrays or scalars: a NumPy array (or a
  list) raises ``TypeError: Unsupported type``.
* Reductions and full integer indexing return 0-d device arrays, never host scalars.
* Indexing: NumPy/list index arrays are uploaded (counted); a boolean mask index
  synchronises (the number of True elements sizes the result); ``a[...] = numpy_array``
  with only basic indices raises (CuPy's ``fill`` takes scalars), with advanced indices it
  is uploaded.
* ``float()``, ``int()``, ``complex()``, ``bool()``, ``.item()``, ``.tolist()``,
  ``.get()``, ``repr``/``str``/``format``, ``.tobytes()`` synchronise and copy to the host:
  each is counted with its call site (:mod:`._ledger`).
* Integer-array assignments with repeated targets keep the first value (CuPy: undefined;
  NumPy: the last), so reliance on NumPy's order shows.
* Device dtypes are bool, int, uint, float, complex (CuPy rejects object, string,
  structured and datetime arrays); non-native byte order is rejected (the project's rule:
  FITS data are made native before they reach a GPU).

Deliberate differences (stricter than CuPy): NumPy arrays are rejected as arguments of
every emulated function except the explicit conversions (``asarray`` and friends), also
where CuPy would convert them silently; out-of-bounds integer indices raise (CuPy wraps).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from . import _names
from ._ledger import LEDGER

_OK_KINDS = set("biufc")
_SCALAR_TYPES = (bool, int, float, complex, np.generic)


def _qual(x) -> str:
    return f"{type(x)}"


def check_dtype(dt) -> np.dtype:
    dt = np.dtype(dt)
    if dt.kind not in _OK_KINDS or dt.fields is not None:
        raise ValueError(f"Unsupported dtype {dt}")
    if not dt.isnative:
        raise ValueError(f"dtype {dt} is not in native byte order: the emulated device (like "
                         "the project's rule for FITS data) only takes native byte order")
    return dt


def is_scalar(x) -> bool:
    return isinstance(x, _SCALAR_TYPES) and not isinstance(x, np.ndarray)


def unwrap(x, where: str = "argument"):
    """Device arrays → their storage; NumPy arrays → TypeError; sequences recursively."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {_qual(x)} ({where}): a NumPy array given to a CuPy "
                        "function (upload it explicitly with cupy.asarray)")
    if isinstance(x, list):
        return [unwrap(e, where) for e in x]
    if type(x) is tuple:
        return tuple(unwrap(e, where) for e in x)
    return x


def unwrap_kwargs(kw: dict, where: str) -> dict:
    return {k: unwrap(v, f"{where}, keyword {k!r}") for k, v in kw.items()}


def wrap(r):
    """NumPy results → device arrays (NumPy scalars → 0-d arrays)."""
    if isinstance(r, np.ndarray):
        return ndarray._wrap(r)
    if isinstance(r, np.generic):
        return ndarray._wrap(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(wrap(e) for e in r)   # namedtuples (EighResult…) become plain tuples
    if isinstance(r, list):
        return [wrap(e) for e in r]
    return r


def host_to_device(obj, dtype=None, copy=True) -> "ndarray":
    """``cupy.array``-style conversion of host data (NumPy arrays, lists, scalars): counted upload."""
    if isinstance(obj, ndarray):
        a = obj._a
        if dtype is not None:
            a = a.astype(check_dtype(dtype), copy=False)
        return ndarray._wrap(a.copy() if copy else a)
    if isinstance(obj, (list, tuple)) and any(isinstance(e, ndarray) for e in _flat(obj)):
        # a sequence of device arrays: CuPy stacks them on the device
        arrs = [asarray_device(e) for e in obj]
        return ndarray._wrap(np.stack([e._a for e in arrs]).astype(dtype or None, copy=False)
                             if dtype else np.stack([e._a for e in arrs]))
    if dtype is None and isinstance(obj, np.ndarray):
        check_dtype(obj.dtype)   # big-endian FITS data must be made native first
    h = np.array(obj, dtype=dtype)
    check_dtype(h.dtype)
    LEDGER.upload(h.nbytes)
    return ndarray._wrap(h)


def asarray_device(x) -> "ndarray":
    return x if isinstance(x, ndarray) else host_to_device(x)


def _flat(seq):
    for e in seq:
        if isinstance(e, (list, tuple)):
            yield from _flat(e)
        else:
            yield e


# ----------------------------------------------------------------------------- indexing
def _index_key(key, *, setting=False):
    """Translate an index into NumPy terms, counting uploads and mask syncs like CuPy."""
    items = list(key) if isinstance(key, tuple) else [key]
    out = []
    mask = False
    for s in items:
        if s is None or s is Ellipsis or isinstance(s, slice):
            if isinstance(s, slice):
                for v in (s.start, s.stop, s.step):
                    if isinstance(v, ndarray):
                        raise TypeError("slice indices must be integers or None or have an "
                                        "__index__ method (a cupy.ndarray is not an index)")
            out.append(s)
            continue
        if isinstance(s, ndarray):
            a = s._a
        elif isinstance(s, (bool, np.bool_)):
            a = host_to_device(np.asarray(s))._a
        elif isinstance(s, numbers.Integral) and not isinstance(s, np.ndarray):
            out.append(int(s))
            continue
        elif isinstance(s, (list, tuple, np.ndarray)):
            h = np.asarray(s)
            if h.size == 0 and not isinstance(s, np.ndarray):
                h = h.astype(np.int32)
            a = host_to_device(h)._a
        else:
            raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis "
                             "(`None`) and integer or boolean arrays are valid indices")
        if a.dtype.kind == "b":
            mask = True
        elif a.dtype.kind not in "iu":
            raise IndexError(f"arrays used as indices must be of integer or boolean type. "
                             f"(actual: {a.dtype.type})")
        out.append(a)
    if mask:
        LEDGER.sync("boolean-mask " + ("assignment" if setting else "indexing"))
    advanced = any(isinstance(s, np.ndarray) for s in out)
    if not any(s is Ellipsis for s in out):
        out.append(Ellipsis)   # full integer indexing gives a 0-d view, as in CuPy
    return tuple(out), advanced


def _first_wins(a, k, v) -> bool:
    """Integer-array assignment with repeated targets: CuPy leaves undefined which value is
    stored (its docs: "the value that is actually stored is undefined"); NumPy keeps the
    last. The emulation keeps the *first* (a legal GPU outcome), so code that relies on
    NumPy's last-wins order gives different answers here. Returns False when there is no
    repeated target (or a boolean mask is involved): the assignment is then NumPy's."""
    arrays = [s for s in k if isinstance(s, np.ndarray)]
    if not arrays or any(s.dtype.kind == "b" for s in arrays):
        return False
    if a.ndim == 1 and len(arrays) == 1 and isinstance(k[0], np.ndarray):
        t = np.mod(k[0].reshape(-1), a.shape[0])          # the flat scatter of the pipeline
        shape = k[0].shape
    else:
        ids = np.arange(a.size, dtype=np.int64).reshape(a.shape)[k]
        t, shape = ids.reshape(-1), ids.shape
    if t.size < 2:
        return False
    srt = np.sort(t)
    if not (srt[1:] == srt[:-1]).any():
        return False
    vals = np.broadcast_to(v, shape).reshape(-1)
    a.flat[t[::-1]] = vals[::-1]
    return True


# ----------------------------------------------------------------------------- ndarray
def _binop(name, reflected=False, compare=False):
    def op(self, other):
        if isinstance(other, ndarray):
            pass
        elif getattr(other, "__array_ufunc__", 0) is None:
            return NotImplemented
        if compare and isinstance(other, np.ndarray) and other.ndim == 0:
            other = other.item()
        uf = _ufunc(name)
        return uf(other, self) if reflected else uf(self, other)
    op.__name__ = f"__{'r' if reflected else ''}{name}__"
    return op


def _inplace(name):
    def op(self, other):
        _ufunc(name)(self, other, out=self)
        return self
    return op


def _ufunc(name):
    from . import _modules
    return _modules.UFUNCS[name]


class ndarray:
    """Emulated ``cupy.ndarray`` (NumPy storage)."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("cupy.ndarray(memptr=, strides=) is not emulated")
        a = np.empty(shape, dtype=check_dtype(dtype), order=order)
        self._a = a
        LEDGER.track(a)

    @classmethod
    def _wrap(cls, a: np.ndarray) -> "ndarray":
        check_dtype(a.dtype)
        obj = cls.__new__(cls)
        obj._a = a
        LEDGER.track(a)
        return obj

    # ---- attributes
    shape = property(lambda self: self._a.shape)

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: ndarray._wrap(self._a.T))
    mT = property(lambda self: ndarray._wrap(np.swapaxes(self._a, -1, -2)))
    flags = property(lambda self: self._a.flags)

    @property
    def base(self):
        return None if self._a.base is None else ndarray._wrap(self._a.base) \
            if isinstance(self._a.base, np.ndarray) else None

    @property
    def real(self):
        return ndarray._wrap(self._a.real)

    @real.setter
    def real(self, v):
        self._a.real = unwrap(v)

    @property
    def imag(self):
        return ndarray._wrap(self._a.imag)

    @imag.setter
    def imag(self, v):
        self._a.imag = unwrap(v)

    @property
    def device(self):
        from ._cuda import Device
        return Device(0)

    def _not_emulated(self, what):
        raise NotImplementedError(f"cupy.ndarray.{what} is not emulated")

    data = property(lambda self: self._not_emulated("data (device pointers)"))
    cstruct = property(lambda self: self._not_emulated("cstruct"))
    flat = property(lambda self: self._not_emulated("flat"))

    # ---- NumPy interoperability, as CuPy
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import _modules
        if method != "__call__":
            return NotImplemented
        cp = _modules.UFUNCS.get(ufunc.__name__)
        if cp is None:
            return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = out[0]
        for x in inputs + ((kwargs["out"],) if "out" in kwargs else ()):
            if not (isinstance(x, (ndarray, np.ndarray)) or type(x) in
                    (bool, int, float, complex) or isinstance(x, np.generic)):
                return NotImplemented
        return cp(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import _modules
        mod = func.__module__.split(".")
        fn = _modules.lookup(["cupy"] + mod[1:], func.__name__)
        if fn is None:
            return NotImplemented
        for t in types:
            if t not in (ndarray, np.ndarray):
                return NotImplemented
        return fn(*args, **kwargs)

    # ---- conversion to the host (synchronising)
    def get(self, stream=None, order="C", out=None, blocking=True):
        LEDGER.sync("get", self.nbytes)
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {out.shape}, "
                                 f"actual shape: {self.shape}")
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def _host(self, kind):
        LEDGER.sync(kind, self.nbytes)
        return self._a.copy()

    def item(self):
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self._host("item").item()

    def tolist(self):
        return self._host("tolist").tolist()

    def tobytes(self, order="C"):
        return self._host("tobytes").tobytes(order)

    def tofile(self, fid, sep="", format="%s"):
        self._host("tofile").tofile(fid, sep, format)

    def __bool__(self):
        if self.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous.", DeprecationWarning)
            return False
        if self.size > 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self._host("bool()"))

    def __int__(self):
        return int(self._host("int()"))

    def __float__(self):
        return float(self._host("float()"))

    def __complex__(self):
        return complex(self._host("complex()"))

    def __repr__(self):
        return repr(self._host("repr()"))

    def __str__(self):
        return str(self._host("str()"))

    def __format__(self, spec):
        return format(self._host("format()"), spec)

    def __reduce__(self):
        return (_unpickle, (self._host("pickle"),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # ---- container
    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __getitem__(self, key):
        k, _ = _index_key(key)
        return ndarray._wrap(self._a[k])

    def __setitem__(self, key, value):
        k, advanced = _index_key(key, setting=True)
        if isinstance(value, ndarray):
            v = value._a
        elif is_scalar(value):
            v = value
        elif advanced:
            v = host_to_device(np.asarray(value))._a
        elif isinstance(value, np.ndarray):
            if value.ndim != 0:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill "
                                 "(cupy: `a[...] = numpy_array` with basic indices)")
            v = value.item()
        else:
            raise TypeError(f"Unsupported type {_qual(value)} assigned to a cupy.ndarray slice")
        if advanced and _first_wins(self._a, k, v):
            return
        self._a[k] = v

    # ---- CuPy-specific methods
    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray (got {type(arr)})")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("Shape or dtype mismatch in cupy.ndarray.set")
        LEDGER.upload(arr.nbytes)
        self._a[...] = arr

    def _scatter(self, op, slices, value):
        k, _ = _index_key(slices, setting=True)
        k = tuple(s for s in k if s is not Ellipsis) or (slice(None),)
        v = unwrap(value, "scatter value")
        op.at(self._a, k, v)

    def scatter_add(self, slices, value):
        self._scatter(np.add, slices, value)

    def scatter_max(self, slices, value):
        self._scatter(np.maximum, slices, value)

    def scatter_min(self, slices, value):
        self._scatter(np.minimum, slices, value)

    def fill(self, value):
        if isinstance(value, ndarray):
            if value.ndim != 0:
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            self._a[...] = value._a
            return
        if isinstance(value, np.ndarray):
            if value.ndim != 0:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        if not is_scalar(value):
            raise TypeError(f"Unsupported type {_qual(value)} for fill")
        self._a.fill(value)

    def nonzero(self):
        LEDGER.sync("nonzero")
        return wrap(self._a.nonzero())

    def compress(self, condition, axis=None, out=None):
        LEDGER.sync("compress")
        return wrap(self._a.compress(unwrap(condition), axis=axis, out=unwrap(out)))

    def reduced_view(self, dtype=None):
        return self

    def ptp(self, axis=None, out=None, keepdims=False):
        return wrap(np.ptp(self._a, axis=axis, out=unwrap(out), keepdims=keepdims))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if subok is not None:
            raise TypeError("subok is not supported yet")
        kw = {} if casting is None else {"casting": casting}
        return ndarray._wrap(self._a.astype(check_dtype(dtype), order=order, copy=copy, **kw))

    def view(self, *args, **kwargs):
        return _method(self, "view", args, kwargs)

    def __matmul__(self, other):
        from . import _modules
        if not isinstance(other, ndarray) and getattr(other, "__array_ufunc__", 0) is None:
            return NotImplemented
        return _modules.lookup(["cupy"], "matmul")(self, other)

    def __rmatmul__(self, other):
        from . import _modules
        return _modules.lookup(["cupy"], "matmul")(other, self)

    def __imatmul__(self, other):  # pragma: no cover - CuPy has none either
        return NotImplemented

    def __neg__(self):
        return _ufunc("negative")(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ufunc("absolute")(self)

    def __invert__(self):
        return _ufunc("invert")(self)

    def __divmod__(self, other):
        return _ufunc("divmod")(self, other)

    def __rdivmod__(self, other):
        return _ufunc("divmod")(other, self)

    def __pow__(self, other, modulo=None):
        return _ufunc("power")(self, other)

    def __rpow__(self, other, modulo=None):
        return _ufunc("power")(other, self)


def _unpickle(h):
    return host_to_device(h)


for _n, _u in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
               ("truediv", "true_divide"), ("floordiv", "floor_divide"), ("mod", "remainder"),
               ("lshift", "left_shift"), ("rshift", "right_shift"), ("and", "bitwise_and"),
               ("or", "bitwise_or"), ("xor", "bitwise_xor")):
    setattr(ndarray, f"__{_n}__", _binop(_u))
    setattr(ndarray, f"__r{_n}__", _binop(_u, reflected=True))
    setattr(ndarray, f"__i{_n}__", _inplace(_u))
setattr(ndarray, "__ipow__", _inplace("power"))
for _n, _u in (("lt", "less"), ("le", "less_equal"), ("eq", "equal"), ("ne", "not_equal"),
               ("gt", "greater"), ("ge", "greater_equal")):
    setattr(ndarray, f"__{_n}__", _binop(_u, compare=True))


def _method(self, name, args, kwargs):
    sig = _names.method_signature("cupy.ndarray", name)
    _names.check_call(sig, f"cupy.ndarray.{name}", args, kwargs)
    r = getattr(self._a, name)(*unwrap(args, f"ndarray.{name}"),
                                **unwrap_kwargs(kwargs, f"ndarray.{name}"))
    return wrap(r)


def _make_method(name):
    def m(self, *args, **kwargs):
        return _method(self, name, args, kwargs)
    m.__name__ = name
    m.__qualname__ = f"ndarray.{name}"
    return m


def _install_methods():
    members = _names.class_members("cupy.ndarray")
    for name, d in members.items():
        if d["kind"] != "method" or name.startswith("_") or name in ndarray.__dict__:
            continue
        if hasattr(np.ndarray, name):
            setattr(ndarray, name, _make_method(name))
        else:
            def stub(self, *a, _n=name, **k):
                raise NotImplementedError(f"cupy.ndarray.{_n} is not emulated")
            setattr(ndarray, name, stub)


_install_methods()
ndarray.__module__ = "cupy._core.core"


# ----------------------------------------------------------------------------- ufunc
class ufunc:
    """Emulated ``cupy.ufunc``: operands are device arrays or scalars; keywords
    ``out``, ``dtype``, ``casting`` only (CuPy's ``ufunc.__call__``)."""

    def __init__(self, name, npufunc, nin, nout, at=False):
        self.name = self.__name__ = name
        self._at = at
        self._np = npufunc
        self.nin, self.nout = nin, nout
        self.nargs = nin + nout

    def __repr__(self):
        return f"<ufunc 'cupy_{self.name}'>"

    @property
    def types(self):
        return self._np.types

    def _operand(self, x, i):
        if isinstance(x, ndarray):
            return x._a
        if type(x) in (bool, int, float, complex) or isinstance(x, np.generic):
            return x
        raise TypeError(f"Unsupported type {_qual(x)} (operand {i} of cupy.{self.name})")

    def __call__(self, *args, **kwargs):
        out = kwargs.pop("out", None)
        dtype = kwargs.pop("dtype", None)
        casting = kwargs.pop("casting", None)
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if not (self.nin <= len(args) <= self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either "
                            f"{self.nin} or {self.nargs} (with outputs), but given {len(args)}.")
        ins = [self._operand(x, i) for i, x in enumerate(args[:self.nin])]
        outs = list(args[self.nin:])
        if out is not None:
            if outs:
                raise ValueError("Cannot specify 'out' as both a positional and keyword argument")
            outs = list(out) if isinstance(out, tuple) else [out]
        for o in outs:
            if not isinstance(o, ndarray):
                raise TypeError(f"Output arguments must be cupy.ndarray (got {_qual(o)})")
        kw = {}
        if dtype is not None:
            kw["dtype"] = dtype
        if casting is not None:
            kw["casting"] = casting
        if outs:
            kw["out"] = tuple(o._a for o in outs)
        r = self._np(*ins, **kw)
        if outs:
            return outs[0] if len(outs) == 1 else tuple(outs)
        return wrap(r)

    def _strict(self, method, args, kwargs):
        sig = _names.method_signature("cupy.ufunc", method)
        _names.check_call(sig, f"cupy.ufunc.{method}", args, kwargs)
        args = [unwrap(a, f"{self.name}.{method}") for a in args]
        return args, unwrap_kwargs(kwargs, f"{self.name}.{method}")

    def reduce(self, *args, **kwargs):
        a, k = self._strict("reduce", args, kwargs)
        return wrap(self._np.reduce(*a, **k))

    def accumulate(self, *args, **kwargs):
        a, k = self._strict("accumulate", args, kwargs)
        return wrap(self._np.accumulate(*a, **k))

    def reduceat(self, *args, **kwargs):
        a, k = self._strict("reduceat", args, kwargs)
        return wrap(self._np.reduceat(*a, **k))

    def outer(self, *args, **kwargs):
        a, k = self._strict("outer", args, kwargs)
        return wrap(self._np.outer(*a, **k))

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError("cupy.ufunc.at: the first argument must be a cupy.ndarray")
        if not self._at:
            raise NotImplementedError(f"cupy.{self.name}.at is not supported")
        k, _ = _index_key(indices, setting=True)
        k = tuple(s for s in k if s is not Ellipsis) or (slice(None),)
        self._np.at(a._a, k, unwrap(b, f"{self.name}.at"))
