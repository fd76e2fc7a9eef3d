"""Low-level FITS helpers shared by every reader and writer.

- :func:`atomic_output` writes to a temporary name beside the target and
  renames on success, so that a failed write never leaves a partial file; a
  failed write is reported as :class:`~gpuspec.errors.OutputError` with its real
  cause (disk full, ``ulimit -f``, permissions), never CFITSIO's later symptom.
  :func:`check_writable` tells before any work whether an output can be written.
- :func:`parse_sec` turns a FITS section string into numpy slices.
- :func:`open_fits`, :func:`read_image_hdu`, :func:`require_keyword` give errors
  that name the file, the HDU and the keyword.
- :func:`header_dict` is the one conversion of a header (fitsio, astropy or a
  mapping) to a plain dict, and :func:`is_structural` / :data:`STRUCTURAL_KEYS`
  the one list of layout keywords that are never carried or copied.

Everything here is host-side (NumPy, files); device arrays reach the writers
through :func:`gpuspec.backend.to_host`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from typing import Iterator, Mapping

import fitsio
import numpy as np

from ..backend import native
from ..errors import (BadDataError, BadSectionError, InputError, LimitError, MissingFileError,
                      MissingHDUError, MissingKeywordError, OutputError, os_error_text)
from ..limits import MAX_IMAGE_PIXELS

__all__ = ["atomic_output", "parse_sec", "format_sec", "open_fits", "require_keyword",
           "read_image_hdu", "read_table_hdu", "has_hdu", "STRUCTURAL_KEYS", "is_structural",
           "header_records", "header_dict", "hdu_names", "check_complete",
           "read_optional_hdu", "check_same_shape", "write_checksums", "add_dependencies",
           "DEPENDENCIES", "check_writable", "check_image_size", "check_same_source"]

_SEC_RE = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


def parse_sec(sec: str, keyword: str | None = None, shape: tuple[int, int] | None = None,
              path: str | None = None, hdu: str | None = None) -> tuple[slice, slice]:
    """Parse a FITS section ``'[x1:x2,y1:y2]'`` (1-indexed, inclusive) into numpy slices.

    Parameters
    ----------
    sec : str
        The section, e.g. ``'[7:56,51:4146]'``.
    keyword, path, hdu : str, optional
        Used in error messages.
    shape : (ny, nx), optional
        When given, the section must lie inside an image of this shape.

    Returns
    -------
    (slice, slice)
        ``(yslice, xslice)``, so ``image[yslice, xslice]`` is the section.
        ``'[7:56,51:4146]'`` gives ``(slice(50, 4146), slice(6, 56))``.

    Raises
    ------
    BadSectionError
        Unparsable, reversed, zero-based or out-of-range section.

    Backends: host only (NumPy).
    """
    if not isinstance(sec, str):
        raise BadSectionError(f"section must be a string like '[x1:x2,y1:y2]', got {sec!r}",
                              path=path, hdu=hdu, keyword=keyword)
    m = _SEC_RE.match(sec)
    if m is None:
        raise BadSectionError(f"cannot parse section {sec!r}; expected '[x1:x2,y1:y2]'",
                              path=path, hdu=hdu, keyword=keyword)
    x1, x2, y1, y2 = (int(v) for v in m.groups())
    if x1 < 1 or y1 < 1 or x2 < x1 or y2 < y1:
        raise BadSectionError(f"invalid section {sec!r}: FITS sections are 1-indexed with "
                              "x1<=x2 and y1<=y2", path=path, hdu=hdu, keyword=keyword)
    if shape is not None:
        ny, nx = shape
        if x2 > nx or y2 > ny:
            raise BadSectionError(f"section {sec!r} exceeds the image shape (ny={ny}, nx={nx})",
                                  path=path, hdu=hdu, keyword=keyword)
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def format_sec(yslice: slice, xslice: slice) -> str:
    """Inverse of :func:`parse_sec`: numpy slices to ``'[x1:x2,y1:y2]'``.

    Backends: host only (NumPy).
    """
    return f"[{xslice.start + 1}:{xslice.stop},{yslice.start + 1}:{yslice.stop}]"


def check_writable(path: str | os.PathLike) -> str:
    """Raise :class:`OutputError` unless a file can be written at ``path``; return it.

    ``path`` must not be a directory, the nearest existing folder above it must be a
    folder (not a file) in which this process may create entries. Checked before any
    work, so that a command fails at once rather than after computing its output.
    Backends: host only.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError("it is a directory (give a file name)", path)
    d = existing_ancestor(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(d):
        raise OutputError(f"{d} is a file, not a folder", path)
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"folder {d} is not writable", path)
    return path


def _fsize_limit() -> int | None:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return None if soft == resource.RLIM_INFINITY else int(soft)
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def _write_failure(exc: BaseException, tmp: str, folder: str) -> str | None:
    """The real cause of a failed write, or None when ``exc`` is not a write failure.

    CFITSIO reports a full disk or a file-size limit late and misleadingly (e.g.
    ``1st key not SIMPLE or XTENSION`` when the truncated file is read back), so the
    folder's free space and the process's file-size limit are looked at too.
    """
    import errno as _errno

    if isinstance(exc, OSError) and exc.errno in (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG,
                                                  _errno.EROFS, _errno.EACCES, _errno.EPERM,
                                                  _errno.EIO, _errno.ENOTDIR, _errno.EISDIR):
        return os_error_text(OSError(exc.errno, exc.strerror))
    if not isinstance(exc, OSError):
        return None
    limit = _fsize_limit()
    size = os.path.getsize(tmp) if os.path.exists(tmp) else 0
    if limit is not None and size + 2880 * 8 >= limit:
        return (f"file too large: the file-size limit (ulimit -f) is {limit} bytes "
                f"({_short(exc)})")
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < 2 ** 20:
            return f"no space left on device (disk full) ({_short(exc)})"
    except OSError:  # pragma: no cover
        pass
    text = str(exc).lower()
    if "error writing" in text or "write error" in text or "could not write" in text:
        lines = [ln.strip() for ln in str(exc).splitlines() if "writ" in ln.lower()]
        return f"write error ({lines[0] if lines else _short(exc)})"
    return None


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[str]:
    """Context manager yielding a temporary path to write; renamed to ``path`` on success.

    The temporary file lives in the target directory (same filesystem, so the
    rename is atomic) and keeps the extension, so fitsio/astropy recognise it.
    On any exception it is removed and the target is left untouched.

    Raises
    ------
    OutputError
        ``path`` cannot be written (a directory, an unwritable folder, a file in the
        way) or the write failed for lack of space, a file-size limit or permissions:
        the message names ``path`` and the real cause. Other exceptions raised inside
        the block pass unchanged.

    Backends: host only (NumPy).
    """
    path = os.fspath(path)
    check_writable(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {d}: {os_error_text(exc)}", path) from None
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    base = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp" + _ext(base), dir=d)
    except OSError as exc:
        raise OutputError(os_error_text(OSError(exc.errno, exc.strerror)), path) from None
    os.close(fd)
    os.remove(tmp)  # fitsio refuses to write over an existing (empty) file
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(os_error_text(OSError(exc.errno, exc.strerror)), path) from None
    except BaseException as exc:
        reason = None if isinstance(exc, OutputError) else _write_failure(exc, tmp, d)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if reason is not None:
            raise OutputError(reason, path) from exc
        raise


def _ext(base: str) -> str:
    for e in (".fits.fz", ".fits.gz", ".fits", ".fz"):
        if base.endswith(e):
            return e
    return ""


def open_fits(path: str | os.PathLike) -> fitsio.FITS:
    """Open a FITS file read-only, with errors that name the file.

    Raises
    ------
    MissingFileError
        The file does not exist.
    InputError
        The file is not a readable FITS file (e.g. truncated).

    Backends: host only (NumPy).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingFileError("no such file", path=path)
    try:
        fx = fitsio.FITS(path, "r")
    except Exception as exc:  # OSError from CFITSIO
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            fits_start = f.read(6) == b"SIMPLE"
        if fits_start and size % 2880 != 0:   # say why (CFITSIO's message varies)
            raise InputError(f"truncated or corrupt FITS file: size {size} bytes is not a "
                             f"multiple of 2880 ({_short(exc)})", path=path) from exc
        raise InputError(f"not a readable FITS file ({_short(exc)})", path=path) from exc
    try:
        check_complete(fx, path)
    except BaseException:
        fx.close()
        raise
    return fx


def _short(exc: BaseException) -> str:
    """First line of a (possibly multi-line CFITSIO) error message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def check_complete(fx: fitsio.FITS, path: str | None = None) -> None:
    """Raise :class:`InputError` if an open FITS file is truncated.

    A FITS file is a whole number of 2880-byte blocks and its last HDU's data
    must end inside the file. CFITSIO opens a truncated file happily and fails
    (or silently drops HDUs) only later, so readers check this up front.
    Gzip-compressed files (``.gz``) are not checked.

    Backends: host only (NumPy).
    """
    path = os.fspath(path or fx._filename)
    if path.endswith(".gz"):
        return
    size = os.path.getsize(path)
    if size == 0 or size % 2880 != 0:
        raise InputError(f"truncated or corrupt FITS file: size {size} bytes is not a "
                         "multiple of 2880", path=path)
    try:
        end = max(h.get_offsets()["data_end"] for h in fx)
    except Exception as exc:
        raise InputError(f"corrupt FITS file ({_short(exc)})", path=path) from exc
    if end > size:
        raise InputError(f"truncated FITS file: the last HDU ends at byte {end} but the file "
                         f"has {size} bytes", path=path)
    if end < size:
        _check_trailing(fx, path, end)


def _check_trailing(fx: fitsio.FITS, path: str, end: int) -> None:
    """Raise :class:`InputError` when an HDU after the last readable one cannot be read.

    CFITSIO stops listing HDUs at the first it cannot parse (a corrupt ZCMPTYPE,
    inconsistent ZNAXISn, a broken header), so such an HDU would otherwise look
    absent. Zero padding after the last HDU is accepted.
    """
    with open(path, "rb") as f:
        f.seek(end)
        head = f.read(2880 * 4)
    if not head.strip(b"\0 "):
        return
    name = None
    for i in range(0, len(head) - 79, 80):
        card = head[i:i + 80].decode("ascii", "replace")
        if card.startswith("EXTNAME"):
            name = card.split("=", 1)[-1].split("/")[0].strip().strip("'").strip()
            break
        if card.startswith("END "):
            break
    num = len(fx) + 1
    try:
        fx._FITS.movabs_hdu(num)
        why = "CFITSIO cannot read its header"
    except Exception as exc:  # noqa: BLE001 - the CFITSIO message is what we report
        lines = [ln.strip() for ln in str(exc).splitlines()
                 if ln.strip() and not ln.startswith("Failed to move")]
        lines = list(dict.fromkeys(ln.split(": ", 1)[-1] if ln.startswith("FITSIO status")
                                   else ln for ln in lines))
        why = "; ".join(lines[:3]).replace(":; ", ": ") or "CFITSIO cannot read it"
    label = f"{name} (HDU number {num - 1})" if name else f"number {num - 1}"
    raise InputError(f"HDU {label} at byte {end} is corrupt: {why}", path=path,
                     hdu=name or num - 1)


def check_image_size(hdu, path: str | None = None, ext=None) -> tuple:
    """The dimensions of an image HDU; :class:`LimitError` when it has more than
    :data:`gpuspec.limits.MAX_IMAGE_PIXELS` pixels (a tile-compressed header can
    claim any size; checked before CFITSIO allocates it).

    Backends: host only.
    """
    try:
        dims = tuple(int(n) for n in (hdu.get_dims() or ()))
    except Exception:  # noqa: BLE001 - read errors are reported by the reader
        return ()
    n = 1
    for v in dims:
        n *= max(v, 0)
    if n > MAX_IMAGE_PIXELS:
        raise LimitError(f"image of {' x '.join(map(str, dims))} = {n:,} pixels; the limit is "
                         f"{MAX_IMAGE_PIXELS:,} (docs/reliability.md)", path=path, hdu=ext)
    return dims


def hdu_names(fx: fitsio.FITS) -> list[str]:
    """Upper-case EXTNAME of every HDU, in file order (``""`` when unnamed).

    Backends: host only (NumPy).
    """
    out = []
    for h in fx:
        try:
            out.append((h.get_extname() or "").strip().upper())
        except Exception:
            out.append("")
    return out


def has_hdu(fx: fitsio.FITS, ext: str | int) -> bool:
    """True if ``fx`` has HDU ``ext`` (EXTNAME, case-insensitive, or index).

    Backends: host only (NumPy).
    """
    try:
        return ext in fx
    except Exception:
        return False


def require_keyword(hdr: Mapping, key: str, path: str | None = None, hdu: str | None = None):
    """Return ``hdr[key]`` or raise :class:`MissingKeywordError` naming file, HDU and keyword.

    Backends: host only (NumPy).
    """
    try:
        if key in hdr:
            return hdr[key]
    except Exception:
        pass
    raise MissingKeywordError("required keyword is missing", path=path, hdu=hdu, keyword=key)


def read_image_hdu(fx: fitsio.FITS, ext: str | int, path: str | None = None,
                   header: bool = False, dtype=None, columns=None):
    """Read an image HDU as a native-byte-order array (optionally with its header).

    ``columns=(x0, x1)`` reads only those columns of a 2-D image (every row, the
    columns clipped to the image), with CFITSIO's subset read.
    Raises :class:`MissingHDUError` or :class:`InputError` naming the file and HDU.

    Backends: host only (NumPy).
    """
    path = path or fx._filename
    if not has_hdu(fx, ext):
        raise MissingHDUError("HDU is missing", path=path, hdu=ext)
    dims = check_image_size(fx[ext], path, ext)
    try:
        if columns is not None and len(dims) == 2:
            c0, c1 = (min(max(int(c), 0), dims[1]) for c in columns)
            data = fx[ext][0:dims[0], c0:c1]
        else:
            data = fx[ext].read()
        hdr = fx[ext].read_header() if header else None
    except MemoryError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read image data ({_short(exc)})", path=path, hdu=ext) from exc
    if data is None:
        raise InputError("HDU has no data", path=path, hdu=ext)
    data = native(data)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return (data, hdr) if header else data


def read_table_hdu(fx: fitsio.FITS, ext: str | int, path: str | None = None,
                   header: bool = False):
    """Read a binary table HDU as a native-byte-order structured array.

    Backends: host only (NumPy).
    """
    path = path or fx._filename
    if not has_hdu(fx, ext):
        raise MissingHDUError("HDU is missing", path=path, hdu=ext)
    try:
        data = fx[ext].read()
        hdr = fx[ext].read_header() if header else None
    except MemoryError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read table ({_short(exc)})", path=path, hdu=ext) from exc
    data = native(data)
    return (data, hdr) if header else data


#: Keywords that describe an HDU's on-disk layout (never carried in a header dict, never
#: copied between headers, never written from one): the one list of gpuspec, with
#: :data:`_LAYOUT_RE` for the numbered and tile-compression cards.
STRUCTURAL_KEYS = frozenset({
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS",
    "EXTNAME", "EXTVER", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "COMMENT", "HISTORY",
    "CONTINUE", ""})

_LAYOUT_RE = re.compile(r"^(NAXIS\d+|ZIMAGE|ZBITPIX|ZNAXIS\d*|ZTILE\d+|ZCMPTYPE|ZNAME\d+|"
                        r"ZVAL\d+|ZQUANTIZ|ZDITHER0|ZSIMPLE|ZTENSION|ZEXTEND|ZPCOUNT|ZGCOUNT|"
                        r"ZHECKSUM|ZDATASUM|ZBLANK|ZSCALE|ZZERO|ZMASKCMP|"
                        r"TTYPE\d+|TFORM\d+|TDIM\d+|TUNIT\d+|TNULL\d+|TSCAL\d+|TZERO\d+)$")


def is_structural(key: str) -> bool:
    """True for a layout keyword (:data:`STRUCTURAL_KEYS`, NAXISn, tile-compression and
    table-column cards), COMMENT/HISTORY/CONTINUE and blank names; case-insensitive.

    Backends: host only.
    """
    ku = str(key).strip().upper()
    return ku in STRUCTURAL_KEYS or _LAYOUT_RE.match(ku) is not None


def _plain(v):
    """numpy scalars to Python scalars; ``(value, comment)`` pairs to the value."""
    if isinstance(v, tuple) and len(v) == 2:
        v = v[0]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _header_items(hdr):
    """(name, value) pairs of a fitsio FITSHDR, an astropy Header or a mapping."""
    if isinstance(hdr, fitsio.FITSHDR):
        return [(r.get("name"), r.get("value")) for r in hdr.records()]
    if isinstance(hdr, Mapping) or hasattr(hdr, "keys"):
        return [(k, hdr[k]) for k in list(hdr.keys()) if k is not None]
    raise TypeError(f"cannot use a {type(hdr).__name__} as a FITS header")


def header_dict(hdr, keep_extname: bool = False) -> dict:
    """The keyword dict of a header: gpuspec's one header-to-dict conversion.

    Keys are upper case (FITS keywords are case-insensitive), in card order;
    values are Python scalars. Layout cards (:func:`is_structural`: SIMPLE,
    BITPIX, NAXISn, XTENSION, PCOUNT, GCOUNT, BZERO/BSCALE, checksums,
    tile-compression and table-column cards), COMMENT, HISTORY and blank cards
    are dropped, and EXTNAME unless ``keep_extname``. Long (HIERARCH) names such
    as ``SATURLEVA`` are kept under their plain name. The input is not modified.

    Parameters
    ----------
    hdr : fitsio.FITSHDR, astropy Header, mapping or None
        None gives ``{}``. A mapping value may be a ``(value, comment)`` pair.
    keep_extname : bool
        Keep the EXTNAME card.

    Returns
    -------
    dict

    Backends: host only (headers are host objects).
    """
    if hdr is None:
        return {}
    out = {}
    for k, v in _header_items(hdr):
        if not k:
            continue
        ku = str(k).strip().upper()
        if ku == "EXTNAME" and keep_extname:
            out[ku] = _plain(v)
        elif not is_structural(ku):
            out[ku] = _plain(v)
    return out


def header_records(meta) -> list[dict]:
    """fitsio header records from a header or dict, dropping layout keywords (:func:`is_structural`).

    Long keyword names (>8 characters, e.g. SATURLEVA) are written by fitsio as
    HIERARCH cards.

    Backends: host only.
    """
    out = []
    if meta is None:
        return out
    items = meta.items() if isinstance(meta, dict) else header_dict(meta).items()
    for k, v in items:
        if isinstance(k, str) and k.upper().startswith("HIERARCH"):
            # an astropy-style "HIERARCH NAME" key: fitsio adds HIERARCH itself, and a
            # name that begins with HIERARCH produces a file CFITSIO cannot read back
            stripped = k[8:].strip()
            if not k[8:9].isspace() or not stripped:
                raise InputError(f"header keyword {k!r} cannot be written (names may not "
                                 "begin with HIERARCH)", keyword=k)
            k = stripped
        if k is None or is_structural(k):
            continue
        out.append({"name": k, "value": v.item() if isinstance(v, np.generic) else v})
    return out


def read_optional_hdu(fx: fitsio.FITS, names, ext: str, path: str | None = None,
                      table: bool = False, columns=None):
    """Read HDU ``ext`` if it is among ``names`` (from :func:`hdu_names`), else None
    (an image: ``columns`` as for :func:`read_image_hdu`).

    Backends: host only (NumPy).
    """
    if ext not in names:
        return None
    return (read_table_hdu(fx, ext, path) if table
            else read_image_hdu(fx, ext, path, columns=columns))


def check_same_shape(ref, refname: str, arrays, path: str | None = None) -> None:
    """Raise :class:`BadDataError` naming the HDU whose array differs in shape from ``ref``.

    ``arrays`` is an iterable of ``(hdu_name, array_or_None)``; None entries are skipped.

    Backends: numpy and cupy (any array module).
    """
    for name, a in arrays:
        if a is not None and a.shape != ref.shape:
            raise BadDataError(f"shape {a.shape} differs from {refname} {ref.shape}", path=path,
                               hdu=name)


def _keyword_text(v) -> str:
    return str(v).strip().strip("'\"").strip().lower()


def check_same_source(meta: Mapping, path, other_meta: Mapping, other_path,
                      keys=("CAMERA",), what: str = "input") -> None:
    """Raise :class:`InputError` naming both files when a keyword of ``keys`` differs.

    For inputs that must come from the same camera (``CAMERA``) or exposure
    (``EXPID``, ``NIGHT``): a fiber flat of another camera, the sky of another
    exposure. A keyword missing from either header is not compared.

    Backends: host only.
    """
    for k in keys:
        a, b = (meta or {}).get(k), (other_meta or {}).get(k)
        if a is None or b is None or _keyword_text(a) == _keyword_text(b):
            continue
        raise InputError(f"{k}={_keyword_text(a)} here but {k}={_keyword_text(b)} in the "
                         f"{what} {os.fspath(other_path)}: they do not belong together",
                         path=os.fspath(path), keyword=k)


def write_checksums(path: str | os.PathLike) -> None:
    """Write CHECKSUM and DATASUM (FITS checksum convention) on every HDU of a closed file.

    desispec writes them on every HDU (astropy ``checksum=True``); tile-compressed
    HDUs get them on their binary table, as CFITSIO and astropy do. CFITSIO creates
    the cards (``write_checksum``); their comments are then set to a fixed text
    without CFITSIO's time stamp and CHECKSUM is recomputed, so that the same data
    give byte-identical files.

    Backends: host only (file I/O).
    """
    path = os.fspath(path)
    with fitsio.FITS(path, "rw") as fx:
        for hdu in fx:
            hdu.write_checksum()
        spans = [(h.get_offsets()["header_start"], h.get_offsets()["data_start"]) for h in fx]
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        for k, (h0, d0) in enumerate(spans):
            d1 = spans[k + 1][0] if k + 1 < len(spans) else size
            fh.seek(h0)
            header = bytearray(fh.read(d0 - h0))
            data = fh.read(d1 - d0)
            _stamp_checksum(header, data)
            fh.seek(h0)
            fh.write(header)


def _card(text: str) -> bytes:
    return text.ljust(80)[:80].encode("ascii")


def _stamp_checksum(header: bytearray, data: bytes) -> None:
    """Set DATASUM and CHECKSUM of one HDU (header edited in place)."""
    names = [bytes(header[i:i + 8]).decode("ascii", "replace").strip()
             for i in range(0, len(header), 80)]
    datasum = _ones_sum(data)
    d = names.index("DATASUM") * 80
    header[d:d + 80] = _card(f"DATASUM = '{datasum:>10d}'         / data unit checksum")
    c = names.index("CHECKSUM") * 80
    header[c:c + 80] = _card("CHECKSUM= '0000000000000000'   / HDU checksum")
    total = _ones_sum(bytes(header), datasum)
    header[c:c + 80] = _card(f"CHECKSUM= '{_encode_checksum(total)}'   / HDU checksum")


def _ones_sum(buf: bytes, start: int = 0) -> int:
    """32-bit ones' complement sum of big-endian words (FITS checksum convention)."""
    w = np.frombuffer(buf, dtype=">u4").astype(np.uint64)
    hi = (start >> 16) + int(np.sum(w >> np.uint64(16)))
    lo = (start & 0xFFFF) + int(np.sum(w & np.uint64(0xFFFF)))
    while (hi >> 16) or (lo >> 16):
        hi, lo = (hi & 0xFFFF) + (lo >> 16), (lo & 0xFFFF) + (hi >> 16)
    return (hi << 16) | lo


def _encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of the complement of ``value`` (Seaman et al.)."""
    value = ~value & 0xFFFFFFFF
    exclude = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))
    asc = [0] * 16
    for i in range(4):
        byte = (value >> (8 * (3 - i))) & 0xFF
        ch = [byte // 4 + 0x30] * 4
        ch[0] += byte % 4
        again = True
        while again:
            again = False
            for j in (0, 2):
                if ch[j] in exclude or ch[j + 1] in exclude:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    again = True
        for j in range(4):
            asc[4 * j + i] = ch[j]
    return bytes(asc[15:] + asc[:15]).decode("ascii")


#: Modules recorded as DEPNAMnn/DEPVERnn when they are loaded (desiutil's rule:
#: only modules already imported in this session), after ``python``.
DEPENDENCIES = ("gpuspec", "numpy", "scipy", "astropy", "fitsio", "healpy", "numba", "yaml",
                "cupy", "mpi4py", "desiutil", "desispec", "specter")


def add_dependencies(meta: dict | None = None, modules=DEPENDENCIES) -> dict:
    """``meta`` with DEPNAMnn/DEPVERnn keywords for python and the loaded ``modules``.

    Follows desiutil's ``depend.add_dependencies``: a dependency already named in
    ``meta`` has its version updated in place, a new one takes the next free
    ``nn`` (00–99); modules not imported in this session are not recorded.
    Returns a new dict (``meta`` is not modified).

    Backends: host only (plain values).
    """
    out = dict(meta or {})
    versions = [("python", ".".join(map(str, sys.version_info[:3])))]
    for name in modules:
        if name in sys.modules:
            mod = importlib.import_module(name)
            versions.append((name, str(getattr(mod, "__version__", "unknown"))))
    for name, version in versions:
        free = None
        for i in range(100):
            nk, vk = f"DEPNAM{i:02d}", f"DEPVER{i:02d}"
            if nk in out:
                if out[nk] == name:
                    out[vk] = version
                    break
            elif free is None:
                free = i
        else:
            if free is None:
                raise InputError("no free DEPNAMnn keyword (00-99) left in the header")
            out[f"DEPNAM{free:02d}"] = name
            out[f"DEPVER{free:02d}"] = version
    return out


def header_float(value, key: str, path=None, hdu=None) -> float:
    """A header value as a finite float; :class:`BadDataError` naming the keyword otherwise
    (booleans, text, NaN and inf are refused). Host only.

    Backends: host only (plain values).
    """
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise BadDataError(f"{key}={value!r} is not a number", path=path, hdu=hdu,
                           keyword=key) from None
    if not np.isfinite(v):
        raise BadDataError(f"{key}={value!r} is not finite", path=path, hdu=hdu, keyword=key)
    return v


def existing_ancestor(path: str) -> str:
    """``path`` itself if it exists, else its nearest existing parent folder (what a
    ``makedirs`` of ``path`` would create things in).

    Backends: host only (plain values).
    """
    d = path
    while not os.path.exists(d):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return d
