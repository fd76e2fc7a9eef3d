"""The real CuPy's public names and signatures (``cupy_names.json``, made by ``gen_names.py``)."""

from __future__ import annotations

import functools
import inspect
import json
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_KIND = {"positional_only": inspect.Parameter.POSITIONAL_ONLY,
         "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
         "var_positional": inspect.Parameter.VAR_POSITIONAL,
         "keyword_only": inspect.Parameter.KEYWORD_ONLY,
         "var_keyword": inspect.Parameter.VAR_KEYWORD}
class _Default:
    def __repr__(self):
        return "…"


_DEFAULT = _Default()


@functools.lru_cache(maxsize=1)
def data() -> dict:
    with open(os.path.join(_HERE, "cupy_names.json")) as f:
        return json.load(f)


def module_names(module: str) -> dict:
    """{name: description} of a real CuPy module (empty when it was not recorded)."""
    return data()["modules"].get(module, {})


def class_members(cls: str) -> dict:
    return data()["classes"].get(cls, {}).get("members", {})


def cupy_version() -> str:
    return data()["cupy_version"]


def _signature(params, drop_self=False):
    if params is None:
        return None
    ps = []
    for i, (name, kind, has_default) in enumerate(params):
        if drop_self and i == 0 and name in ("self", "cls"):
            continue
        ps.append(inspect.Parameter(name, _KIND[kind],
                                    default=_DEFAULT if has_default else inspect.Parameter.empty))
    try:
        return inspect.Signature(ps)
    except ValueError:  # pragma: no cover - malformed record
        return None


@functools.lru_cache(maxsize=None)
def signature(module: str, name: str):
    """``inspect.Signature`` of ``module.name`` in the real CuPy, or None if unknown."""
    d = module_names(module).get(name)
    return None if d is None else _signature(d.get("params"))


@functools.lru_cache(maxsize=None)
def method_signature(cls: str, name: str):
    d = class_members(cls).get(name)
    return None if d is None else _signature(d.get("params"), drop_self=True)


def check_call(sig, qualname: str, args, kwargs):
    """Raise TypeError, as Python would for the real function, when ``args``/``kwargs``
    do not fit the real CuPy signature (unknown keyword, too many positionals).
    Returns the names of the parameters given explicitly."""
    if sig is None:
        return set(kwargs)
    try:
        b = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{qualname}(): {exc} (CuPy {cupy_version()} signature "
                        f"{qualname}{sig})") from None
    return set(b.arguments)
