"""Read and write specex Gauss–Hermite PSF files (PSFVER 3, and PSFVER 2 for reading).

Every PSF is validated when it is read (:func:`read_psf`): a known PSFVER and
PSFTYPE, header sizes that are integers within :mod:`gpuspec.limits`, a
wavelength domain with WAVEMIN < WAVEMAX, coefficient arrays of consistent
shapes (every parameter has the fibers of the traces), finite coefficients, and
GHSIGX/GHSIGY finite and > 0 over the domain. Each problem is an
:class:`~gpuspec.errors.InputError` naming the file, the HDU and the keyword or
parameter, so that a broken PSF never reaches compiled code.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..errors import BadDataError, InputError, MissingHDUError
from ..limits import MAX_PSF_GHDEG, MAX_PSF_HALFSIZE, MAX_PSF_LEGDEG
from ..psf.gausshermite import GaussHermitePSF
from .util import (atomic_output, header_dict, header_float, has_hdu, header_records, open_fits,
                   read_image_hdu, read_table_hdu, require_keyword,
                   write_checksums)

__all__ = ["read_psf", "write_psf", "PSF_VERSIONS"]

#: PSFVER values gpuspec reads.
PSF_VERSIONS = ("2", "3")
#: Largest CCD dimension accepted in NPIX_X/NPIX_Y.
_MAX_NPIX = 100_000


def _strip(s) -> str:
    return s.decode() if isinstance(s, bytes) else str(s).strip()


def read_psf(path: str | os.PathLike) -> GaussHermitePSF:
    """Read a Gauss–Hermite PSF file.

    PSFVER 3: HDUs ``XTRACE``/``YTRACE`` (Legendre coefficients, header
    WAVEMIN/WAVEMAX) and the ``PSF`` table (PARAM, COEFF, LEGDEGX, LEGDEGW).
    PSFVER 2: no trace HDUs; the table has rows ``X`` and ``Y`` (and optional
    per-row WAVEMIN/WAVEMAX columns).

    Raises
    ------
    MissingFileError, InputError, MissingHDUError, MissingKeywordError
        With the file, HDU and keyword named.

    Backends: host only (NumPy coefficients); the PSF's methods evaluate on any ``xp``.
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        if not has_hdu(fx, "PSF"):
            raise MissingHDUError("HDU PSF is missing (not a Gauss-Hermite PSF file?)",
                                  path=path, hdu="PSF")
        table, phdr = read_table_hdu(fx, "PSF", path=path, header=True)
        meta = header_dict(phdr)
        psftype = str(meta.get("PSFTYPE", "GAUSS-HERMITE")).strip()
        if psftype != "GAUSS-HERMITE":
            raise InputError(f"unsupported PSFTYPE {psftype!r} (only GAUSS-HERMITE)",
                             path=path, hdu="PSF", keyword="PSFTYPE")
        for key in ("WAVEMIN", "WAVEMAX", "HSIZEX", "HSIZEY", "GHDEGX", "GHDEGY"):
            require_keyword(meta, key, path=path, hdu="PSF")
        _check_header(meta, path)
        names, coeff = _coefficients(table, meta, path)
        pw0, pw1 = _domain(meta, path, "PSF")
        xtrace_meta = {}
        if has_hdu(fx, "XTRACE"):
            xc, xh = read_image_hdu(fx, "XTRACE", path=path, header=True)
            if not has_hdu(fx, "YTRACE"):
                raise MissingHDUError("HDU YTRACE is missing", path=path, hdu="YTRACE")
            yc, yh = read_image_hdu(fx, "YTRACE", path=path, header=True)
            xtrace_meta = header_dict(xh)
            for h, name in ((xh, "XTRACE"), (yh, "YTRACE")):
                for key in ("WAVEMIN", "WAVEMAX"):
                    require_keyword(h, key, path=path, hdu=name)
            tw0, tw1 = _domain(header_dict(xh), path, "XTRACE")
            yw0, yw1 = _domain(header_dict(yh), path, "YTRACE")
            if (yw0, yw1) != (tw0, tw1):
                raise InputError("XTRACE and YTRACE have different WAVEMIN/WAVEMAX",
                                 path=path, hdu="YTRACE", keyword="WAVEMIN")
        elif "X" in names and "Y" in names:  # PSFVER 2
            ix, iy = names.index("X"), names.index("Y")
            xc, yc = coeff[ix], coeff[iy]
            cols = table.dtype.names
            if "WAVEMIN" in cols and "WAVEMAX" in cols:
                tw0, tw1 = _domain({"WAVEMIN": np.ravel(table["WAVEMIN"][ix])[0],
                                    "WAVEMAX": np.ravel(table["WAVEMAX"][ix])[0]}, path, "PSF")
            else:
                tw0, tw1 = pw0, pw1
            xtrace_meta = {"WAVEMIN": tw0, "WAVEMAX": tw1}
        else:
            raise MissingHDUError("no XTRACE/YTRACE HDUs and no X/Y rows in the PSF table",
                                  path=path, hdu="XTRACE")
        params, pmeta = {}, {}
        for k, name in enumerate(names):
            if name in ("X", "Y"):
                continue
            c = coeff[k]
            if "LEGDEGW" in table.dtype.names:
                ldw = int(np.ravel(table["LEGDEGW"][k])[0])
                if 0 <= ldw < c.shape[1]:
                    c = c[:, : ldw + 1] if np.all(c[:, ldw + 1:] == 0) else c
            params[name] = c
            pmeta[name] = {col: int(np.ravel(table[col][k])[0])
                           for col in ("LEGDEGX", "LEGDEGW") if col in table.dtype.names}
        for req in ("GHSIGX", "GHSIGY", "GH-0-0"):
            if req not in params:
                raise InputError(f"PSF parameter {req} is missing from the PSF table",
                                 path=path, hdu="PSF")
        psferr = _number(meta, "PSFERR", path, "PSF") if meta.get("PSFERR") is not None \
            else None
        fibermin = _int_keyword(meta if "FIBERMIN" in meta else xtrace_meta, "FIBERMIN", path,
                                "PSF", 0, 10 ** 6, default=0)
        _check_arrays(xc, yc, params, path, has_trace_hdus=has_hdu(fx, "XTRACE"))
    psf = GaussHermitePSF(xc, yc, tw0, tw1, params, pw0, pw1, meta=meta,
                          psferr=psferr, fibermin=fibermin,
                          xtrace_meta=xtrace_meta, param_meta=pmeta)
    _check_sigmas(psf, path)
    return psf


# --------------------------------------------------------------------------- validation

def _number(meta, key, path, hdu) -> float:
    """A finite number from a header (:func:`gpuspec.io.util.header_float`)."""
    return header_float(meta.get(key), key, path, hdu)


def _int_keyword(meta, key, path, hdu, lo, hi, default=None) -> int:
    """An integer header value in ``[lo, hi]``."""
    if key not in meta and default is not None:
        return default
    x = _number(meta, key, path, hdu)
    if x != int(x) or not lo <= x <= hi:
        raise BadDataError(f"{key}={meta.get(key)!r} must be an integer in {lo}..{hi}",
                           path=path, hdu=hdu, keyword=key)
    return int(x)


def _domain(meta, path, hdu) -> tuple[float, float]:
    """(WAVEMIN, WAVEMAX), finite with WAVEMIN < WAVEMAX."""
    w0, w1 = _number(meta, "WAVEMIN", path, hdu), _number(meta, "WAVEMAX", path, hdu)
    if not w0 < w1:
        raise BadDataError(f"WAVEMIN={w0:g} must be smaller than WAVEMAX={w1:g}", path=path,
                           hdu=hdu, keyword="WAVEMIN")
    return w0, w1


def _check_header(meta: dict, path: str) -> None:
    """PSFVER known; HSIZEX/Y, GHDEGX/Y, NPIX_X/Y integers within the limits."""
    ver = meta.get("PSFVER")
    if ver is not None:
        v = _strip(ver).strip("'\" ")
        try:
            v = str(int(float(v)))
        except ValueError:
            pass
        if v not in PSF_VERSIONS:
            raise InputError(f"unknown PSFVER {ver!r} (gpuspec reads PSFVER "
                             f"{' and '.join(PSF_VERSIONS)})", path=path, hdu="PSF",
                             keyword="PSFVER")
    for key in ("HSIZEX", "HSIZEY"):
        _int_keyword(meta, key, path, "PSF", 1, MAX_PSF_HALFSIZE)
    for key in ("GHDEGX", "GHDEGY"):
        _int_keyword(meta, key, path, "PSF", 0, MAX_PSF_GHDEG)
    for key in ("NPIX_X", "NPIX_Y"):
        if key in meta:
            _int_keyword(meta, key, path, "PSF", 1, _MAX_NPIX)


def _coefficients(table, meta, path):
    """PARAM names and the COEFF array (nparam, nspec, ncoef) of the PSF table."""
    cols = table.dtype.names or ()
    for col in ("PARAM", "COEFF"):
        if col not in cols:
            raise InputError(f"the PSF table has no {col} column", path=path, hdu="PSF",
                             keyword=col)
    names = [_strip(p) for p in table["PARAM"]]
    coeff = np.asarray(table["COEFF"], dtype=np.float64)
    if coeff.ndim == 2:  # flat vector per row: (nfiber*(ndeg+1))
        f0 = _int_keyword(meta, "FIBERMIN", path, "PSF", 0, 10 ** 6, default=0)
        f1 = _int_keyword(meta, "FIBERMAX", path, "PSF", 0, 10 ** 6, default=f0)
        nfib = f1 - f0 + 1
        if nfib < 1 or coeff.shape[1] % nfib:
            raise BadDataError(f"COEFF rows of {coeff.shape[1]} values cannot hold fibers "
                               f"FIBERMIN={f0}..FIBERMAX={f1}", path=path, hdu="PSF",
                               keyword="COEFF")
        coeff = coeff.reshape(coeff.shape[0], nfib, -1)
    if coeff.ndim != 3 or 0 in coeff.shape:
        raise BadDataError(f"COEFF has shape {coeff.shape}, expected (nparam, nfiber, ncoef)",
                           path=path, hdu="PSF", keyword="COEFF")
    if coeff.shape[2] > MAX_PSF_LEGDEG:
        raise BadDataError(f"COEFF has {coeff.shape[2]} Legendre coefficients per fiber "
                           f"(limit {MAX_PSF_LEGDEG})", path=path, hdu="PSF", keyword="COEFF")
    if len(names) != coeff.shape[0]:
        raise BadDataError(f"{len(names)} PARAM names for {coeff.shape[0]} COEFF rows",
                           path=path, hdu="PSF", keyword="PARAM")
    return names, coeff


def _bad_fibers(a) -> str:
    rows = np.nonzero(~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1))[0]
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if rows.size > 5 else "")
    return f"{rows.size} fiber(s): {shown}"


def _check_arrays(xc, yc, params, path, has_trace_hdus: bool) -> None:
    """Consistent shapes and finite values of the traces and the parameters."""
    xh, yh = ("XTRACE", "YTRACE") if has_trace_hdus else ("PSF", "PSF")
    for a, hdu, what in ((xc, xh, "X"), (yc, yh, "Y")):
        a = np.asarray(a)
        if a.ndim != 2 or 0 in a.shape or a.shape[1] > MAX_PSF_LEGDEG:
            raise BadDataError(f"trace coefficients {what} have shape {a.shape}, expected "
                               f"(nfiber, ncoef) with 1..{MAX_PSF_LEGDEG} coefficients",
                               path=path, hdu=hdu)
        if not np.isfinite(a).all():
            raise BadDataError(f"non-finite (NaN or infinite) trace coefficients {what} for "
                               f"{_bad_fibers(a)}", path=path, hdu=hdu)
    if np.shape(xc)[0] != np.shape(yc)[0]:
        raise BadDataError(f"XTRACE has {np.shape(xc)[0]} fibers but YTRACE "
                           f"{np.shape(yc)[0]}", path=path, hdu=yh)
    nspec = np.shape(xc)[0]
    for name, c in params.items():
        if c.ndim != 2 or c.shape[0] != nspec or c.shape[1] < 1:
            raise BadDataError(f"parameter {name} has coefficients of shape {c.shape}, "
                               f"expected ({nspec}, ncoef) like the traces", path=path,
                               hdu="PSF", keyword=name)
        if not np.isfinite(c).all():
            raise BadDataError(f"non-finite (NaN or infinite) coefficients of parameter "
                               f"{name} for {_bad_fibers(c)}", path=path, hdu="PSF",
                               keyword=name)


def _check_sigmas(psf: GaussHermitePSF, path: str) -> None:
    """GHSIGX and GHSIGY finite and > 0 over the parameters' wavelength domain."""
    w = np.linspace(psf.param_wmin, psf.param_wmax, 17)
    for name in ("GHSIGX", "GHSIGY"):
        s = psf.param(name, None, w)
        bad = ~(np.isfinite(s) & (s > 0))
        if bad.any():
            rows = np.nonzero(bad.any(axis=1))[0]
            raise BadDataError(f"{name} is not > 0 over {psf.param_wmin:g}-{psf.param_wmax:g} A "
                               f"for {rows.size} fiber(s) (first: fiber {rows[0]}, "
                               f"min {np.nanmin(s[rows[0]]) if np.isfinite(s[rows[0]]).any() else float('nan'):g})",
                               path=path, hdu="PSF", keyword=name)


def write_psf(path: str | os.PathLike, psf: GaussHermitePSF, extra_meta: dict | None = None) -> str:
    """Write ``psf`` in the PSFVER 3 layout (XTRACE, YTRACE, PSF table); atomic.

    Returns the path written.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    nspec = psf.nspec
    ndeg = max(v.shape[1] for v in psf.params.values())
    names = list(psf.params)
    coeff = np.zeros((len(names), nspec, ndeg))
    for k, n in enumerate(names):
        coeff[k, :, : psf.params[n].shape[1]] = psf.params[n]
    table = np.zeros(len(names), dtype=[("PARAM", "S8"), ("COEFF", "f8", (nspec, ndeg)),
                                        ("LEGDEGX", "i4"), ("LEGDEGW", "i4")])
    table["PARAM"] = [n.encode() for n in names]
    table["COEFF"] = coeff
    for k, n in enumerate(names):
        pm = psf.param_meta.get(n, {})
        table["LEGDEGX"][k] = pm.get("LEGDEGX", 0)
        table["LEGDEGW"][k] = pm.get("LEGDEGW", psf.params[n].shape[1] - 1)
    tmeta = {"PSFTYPE": "GAUSS-HERMITE", "PSFVER": 3, "FIBERMIN": psf.fibermin,
             "FIBERMAX": psf.fibermin + nspec - 1,
             "WAVEMIN": psf.trace_wmin, "WAVEMAX": psf.trace_wmax}
    pmeta = {k: v for k, v in psf.meta.items()}
    pmeta.update({"PSFTYPE": "GAUSS-HERMITE", "PSFVER": "3", "WAVEMIN": psf.param_wmin,
                  "WAVEMAX": psf.param_wmax, "NPIX_X": psf.npix_x, "NPIX_Y": psf.npix_y,
                  "HSIZEX": psf.hsizex, "HSIZEY": psf.hsizey, "GHDEGX": psf.ghdegx,
                  "GHDEGY": psf.ghdegy, "LEGDEG": ndeg - 1,
                  "FIBERMIN": psf.fibermin, "FIBERMAX": psf.fibermin + nspec - 1})
    if psf.psferr is not None:
        pmeta["PSFERR"] = float(psf.psferr)
    if extra_meta:
        pmeta.update(extra_meta)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(psf.xcoeff, extname="XTRACE", header=header_records(tmeta))
            fx.write(psf.ycoeff, extname="YTRACE", header=header_records(tmeta))
            fx.write(table, extname="PSF", header=header_records(pmeta))
        write_checksums(tmp)
    return path
