"""Read and write specex Gauss–Hermite PSF files (PSFVER 3, and PSFVER 2 for reading)."""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..errors import InputError, MissingHDUError
from ..psf.gausshermite import GaussHermitePSF
from .util import (atomic_output, header_dict, has_hdu, header_records, open_fits,
                   read_image_hdu, read_table_hdu, require_keyword)

__all__ = ["read_psf", "write_psf"]


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

    Host only: the coefficients are NumPy arrays; the PSF's methods evaluate on any ``xp``.
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
        names = [_strip(p) for p in table["PARAM"]]
        coeff = np.asarray(table["COEFF"], dtype=np.float64)
        if coeff.ndim == 2:  # flat vector per row: (nfiber*(ndeg+1))
            nfib = int(meta.get("FIBERMAX", 0)) - int(meta.get("FIBERMIN", 0)) + 1
            coeff = coeff.reshape(coeff.shape[0], nfib, -1)
        pw0, pw1 = float(meta["WAVEMIN"]), float(meta["WAVEMAX"])
        xtrace_meta = {}
        if has_hdu(fx, "XTRACE"):
            xc, xh = read_image_hdu(fx, "XTRACE", path=path, header=True)
            if not has_hdu(fx, "YTRACE"):
                raise MissingHDUError("HDU YTRACE is missing", path=path, hdu="YTRACE")
            yc, yh = read_image_hdu(fx, "YTRACE", path=path, header=True)
            xtrace_meta = header_dict(xh)
            tw0 = float(require_keyword(xh, "WAVEMIN", path=path, hdu="XTRACE"))
            tw1 = float(require_keyword(xh, "WAVEMAX", path=path, hdu="XTRACE"))
            yw0 = float(require_keyword(yh, "WAVEMIN", path=path, hdu="YTRACE"))
            yw1 = float(require_keyword(yh, "WAVEMAX", path=path, hdu="YTRACE"))
            if (yw0, yw1) != (tw0, tw1):
                raise InputError("XTRACE and YTRACE have different WAVEMIN/WAVEMAX",
                                 path=path, hdu="YTRACE", keyword="WAVEMIN")
        elif "X" in names and "Y" in names:  # PSFVER 2
            ix, iy = names.index("X"), names.index("Y")
            xc, yc = coeff[ix], coeff[iy]
            cols = table.dtype.names
            if "WAVEMIN" in cols and "WAVEMAX" in cols:
                tw0, tw1 = float(table["WAVEMIN"][ix]), float(table["WAVEMAX"][ix])
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
        psferr = meta.get("PSFERR")
        fibermin = int(meta.get("FIBERMIN", xtrace_meta.get("FIBERMIN", 0)))
    return GaussHermitePSF(xc, yc, tw0, tw1, params, pw0, pw1, meta=meta,
                           psferr=None if psferr is None else float(psferr), fibermin=fibermin,
                           xtrace_meta=xtrace_meta, param_meta=pmeta)


def write_psf(path: str | os.PathLike, psf: GaussHermitePSF, extra_meta: dict | None = None) -> str:
    """Write ``psf`` in the PSFVER 3 layout (XTRACE, YTRACE, PSF table); atomic.

    Returns the path written.

    Host only (file I/O); device (CuPy) arrays are copied to the host first.
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
    return path
