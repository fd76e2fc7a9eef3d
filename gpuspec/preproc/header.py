"""Header helpers for preproc: case-insensitive dicts, required keywords, provenance.

Headers arrive as ``dict``, :class:`astropy.io.fits.Header` or
:class:`fitsio.FITSHDR`; :func:`to_dict` turns any of them into a plain ordered
``dict`` with upper-case keys (FITS keywords are case-insensitive), without
touching the caller's object.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..errors import BadDataError, MissingKeywordError

__all__ = ["to_dict", "amp_ids", "require", "set_dependency", "add_missing_keys",
           "STRUCTURAL_KEYS"]

#: Keywords describing the FITS structure of an HDU; never copied between headers.
STRUCTURAL_KEYS = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "XTENSION",
    "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER", "BZERO", "BSCALE", "CHECKSUM", "DATASUM",
    "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE",
    "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZTENSION", "ZEXTEND", "ZPCOUNT", "ZGCOUNT",
    "ZHECKSUM", "ZDATASUM", "COMMENT", "HISTORY", "",
}

_AMPS = ("A", "B", "C", "D", "1", "2", "3", "4")


def _value(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except Exception:  # pragma: no cover
            return v
    return v


def to_dict(hdr: Any) -> dict:
    """Copy a header (dict, astropy Header, fitsio FITSHDR or None) to a dict with upper-case keys.

    COMMENT/HISTORY cards and blank keywords are dropped; numpy scalars become
    Python scalars.
    """
    if hdr is None:
        return {}
    out: dict = {}
    try:
        import fitsio

        if isinstance(hdr, fitsio.FITSHDR):
            for rec in hdr.records():
                name = rec.get("name")
                if not name or name.upper() in ("COMMENT", "HISTORY", "CONTINUE"):
                    continue
                out[name.upper()] = _value(rec.get("value"))
            return out
    except ImportError:  # pragma: no cover - fitsio is a dependency
        pass
    if isinstance(hdr, Mapping) or hasattr(hdr, "keys"):
        for k in list(hdr.keys()):
            if k is None:
                continue
            ku = str(k).upper()
            if ku in ("COMMENT", "HISTORY", ""):
                continue
            v = hdr[k]
            if isinstance(v, tuple) and len(v) == 2:   # (value, comment) pairs
                v = v[0]
            out[ku] = _value(v)
        return out
    raise TypeError(f"cannot use a {type(hdr).__name__} as a FITS header")


def amp_ids(header: Mapping) -> list[str]:
    """Amplifier names present in ``header`` (A-D, or the old 1-4), from BIASSEC keywords.

    Raises
    ------
    MissingKeywordError
        No BIASSECx keyword at all.
    """
    amps = [a for a in _AMPS if "BIASSEC" + a in header]
    if not amps:
        raise MissingKeywordError("no BIASSECx keyword (x in A,B,C,D or 1,2,3,4): cannot find "
                                  "the amplifiers", keyword="BIASSECA")
    return amps


def require(header: Mapping, key: str, path: str | None = None, hdu: str | None = None):
    """``header[key]`` or :class:`MissingKeywordError` naming the keyword."""
    if key not in header or header[key] is None:
        raise MissingKeywordError("required keyword is missing", path=path, hdu=hdu, keyword=key)
    return header[key]


def require_number(header: Mapping, key: str, path: str | None = None,
                   hdu: str | None = None) -> float:
    """``float(header[key])`` with errors naming the keyword."""
    v = require(header, key, path=path, hdu=hdu)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise BadDataError(f"value {v!r} is not a number", path=path, hdu=hdu,
                           keyword=key) from None


_DEP_RE = re.compile(r"^DEPNAM(\d\d)$")


def set_dependency(header: dict, name: str, version: Any) -> None:
    """Record ``name = version`` as a desiutil-style DEPNAMnn/DEPVERnn pair (in place)."""
    used = {}
    for k, v in header.items():
        m = _DEP_RE.match(k)
        if m:
            used[v] = int(m.group(1))
    if name in used:
        header[f"DEPVER{used[name]:02d}"] = version
        return
    i = 0
    while f"DEPNAM{i:02d}" in header:
        i += 1
    if i > 99:  # pragma: no cover
        raise ValueError("too many DEPNAMnn keywords")
    header[f"DEPNAM{i:02d}"] = name
    header[f"DEPVER{i:02d}"] = version


def add_missing_keys(header: dict, other: Mapping | None) -> None:
    """Append the keywords of ``other`` that ``header`` lacks (structural ones skipped)."""
    if not other:
        return
    for k, v in to_dict(other).items():
        if k in STRUCTURAL_KEYS or k in header:
            continue
        header[k] = v
