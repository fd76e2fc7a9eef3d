"""Read and write spectra and coadd files in the desispec layout.

Layout written by :func:`write_spectra` (desispec ``write_spectra`` order)::

    [0] PRIMARY          empty, header = spectra.meta
    [1] FIBERMAP         binary table
    [2] EXP_FIBERMAP     binary table (coadds only)
    per band X in spectra.bands:
        X_WAVELENGTH     float64 (nwave,)
        X_FLUX           float32 (nspec, nwave)
        X_IVAR           float32 (nspec, nwave)
        X_MASK           int32   (nspec, nwave)      (when spectra.mask is not None)
        X_RESOLUTION     float32 (nspec, ndiag, nwave) (when resolution_data is not None)
    SCORES               binary table (when present)
    any extra_hdus       written under their own names

FLUX has ``BUNIT`` = ``spectra.flux_unit`` (default ``electron/Angstrom``, the unit
of gpuspec's uncalibrated frames; desispec's calibrated
``10**-17 erg/(s cm2 Angstrom)`` is kept when read), IVAR its inverse square,
WAVELENGTH ``Angstrom``. FIBERMAP/EXP_FIBERMAP get TUNITs (desispec's units), the
primary header DEPNAMnn/DEPVERnn, and every HDU CHECKSUM/DATASUM.

:func:`read_spectra` reads this layout in any HDU order, files written by
desispec, and the resampling outputs of the shared references (``WAVE_OUT``,
``FLUX``, ``IVAR``, ``RESOLUTION`` with the band name in the primary ``BAND``
keyword). HDUs it does not understand go to ``Spectra.extra_hdus``.
"""

from __future__ import annotations

import os
import re

import fitsio
import numpy as np

from ..backend import native, to_host
from ..errors import InputError
from ..spectra import Spectra
from .fibermap import table_units
from .util import add_dependencies, atomic_output, header_dict, header_records, open_fits, \
    write_checksums

__all__ = ["read_spectra", "write_spectra", "ivar_unit", "FLUX_UNIT", "CALIBRATED_UNIT"]

#: BUNIT of uncalibrated (extracted) fluxes and of desispec's calibrated fluxes.
FLUX_UNIT = "electron/Angstrom"
CALIBRATED_UNIT = "10**-17 erg/(s cm2 Angstrom)"
_IVAR_UNITS = {FLUX_UNIT: "Angstrom^2/electron^2",
               CALIBRATED_UNIT: "10**+34 (s2 cm4 Angstrom2) / erg2"}


def ivar_unit(flux_unit: str) -> str | None:
    """BUNIT of the inverse variance of a flux in ``flux_unit`` (None if not derivable).

    Backends: host only (plain values).
    """
    if flux_unit in _IVAR_UNITS:
        return _IVAR_UNITS[flux_unit]
    try:
        import astropy.units as u

        return (u.Unit(flux_unit, format="fits") ** -2).to_string("fits")
    except Exception:
        return None

_BAND_RE = re.compile(r"^([A-Z]+)_(WAVELENGTH|WAVE|FLUX|IVAR|MASK|RESOLUTION)$")
_TABLES = ("FIBERMAP", "EXP_FIBERMAP", "SCORES")
_UNIT_KINDS = ("FLUX",)


def _extname(h) -> str:
    try:
        return (h.get_extname() or "").strip().upper()
    except Exception:  # pragma: no cover - fitsio always has it
        return ""


def _band_arrays(path, order, data):
    """Per band: wave, flux, ivar, mask, resolution from the HDUs read, shapes checked
    (InputError naming the HDU). Host only."""
    wave, flux, ivar, mask, res = {}, {}, {}, {}, {}
    for b in order:
        d = data[b]
        for kind in ("WAVELENGTH", "FLUX", "IVAR"):
            if kind not in d:
                raise InputError(f"band {b!r} has no {kind} HDU", path=path,
                                 hdu=f"{b.upper()}_{kind}")
        w = np.asarray(d["WAVELENGTH"], dtype=np.float64).ravel()
        f = np.atleast_2d(d["FLUX"])
        iv = np.atleast_2d(d["IVAR"])
        if f.shape != iv.shape or f.shape[-1] != w.size:
            raise InputError(f"inconsistent shapes: wave {w.shape}, flux {f.shape}, ivar {iv.shape}",
                             path=path, hdu=f"{b.upper()}_FLUX")
        wave[b], flux[b], ivar[b] = w, f, iv
        if "MASK" in d:
            mk = np.atleast_2d(d["MASK"])
            if mk.shape != f.shape:
                raise InputError(f"mask shape {mk.shape} differs from flux {f.shape}", path=path,
                                 hdu=f"{b.upper()}_MASK")
            mask[b] = mk.astype(np.int32, copy=False)
        if "RESOLUTION" in d:
            r = d["RESOLUTION"]
            if r.ndim == 2:
                r = r[None]
            if r.shape[0] != f.shape[0] or r.shape[2] != w.size:
                raise InputError(f"resolution shape {r.shape} does not match flux {f.shape}",
                                 path=path, hdu=f"{b.upper()}_RESOLUTION")
            res[b] = r
    return wave, flux, ivar, mask, res


def read_spectra(path) -> Spectra:
    """Read a desispec spectra or coadd file.

    Parameters
    ----------
    path : str
        FITS file in the desispec spectra layout (``{BAND}_WAVELENGTH``,
        ``{BAND}_FLUX``, ``{BAND}_IVAR``, optional ``{BAND}_MASK`` and
        ``{BAND}_RESOLUTION``, ``FIBERMAP``, optional ``EXP_FIBERMAP`` and
        ``SCORES``), or a resampling output with ``WAVE_OUT``/``FLUX``/
        ``IVAR``/``RESOLUTION`` (band from the primary ``BAND`` keyword).

    Returns
    -------
    Spectra
        NumPy arrays in native byte order; lower-case band names in file order.
        Unrecognised HDUs are in ``extra_hdus`` by EXTNAME.

    Raises
    ------
    MissingFileError, InputError
        Missing/unreadable file; a band without FLUX, IVAR or WAVELENGTH, or
        inconsistent shapes (the message names the file and HDU).

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        meta = header_dict(fx[0].read_header())
        names = [_extname(h) for h in fx]
        flux_unit = None
        data: dict[str, dict[str, np.ndarray]] = {}
        order: list[str] = []
        tables: dict[str, np.ndarray] = {}
        extra: dict[str, np.ndarray] = {}
        resample_layout = "WAVE_OUT" in names and "FLUX" in names
        for i, name in enumerate(names):
            if i == 0 or not name:
                continue
            try:
                arr = fx[i].read()
            except Exception as exc:
                raise InputError(f"cannot read data ({exc})", path=path, hdu=name) from exc
            if arr is None:
                continue
            arr = native(arr)
            m = _BAND_RE.match(name)
            if name in _TABLES:
                tables[name] = arr
            elif m is not None:
                band, kind = m.group(1).lower(), m.group(2)
                kind = "WAVELENGTH" if kind == "WAVE" else kind
                if band not in data:
                    data[band] = {}
                    order.append(band)
                data[band][kind] = arr
                if kind == "FLUX" and flux_unit is None:
                    bunit = fx[i].read_header().get("BUNIT")
                    flux_unit = str(bunit).strip() if bunit else None
            elif resample_layout and name in ("WAVE_OUT", "FLUX", "IVAR", "MASK", "RESOLUTION"):
                band = str(meta.get("BAND", "x")).strip().lower() or "x"
                if band not in data:
                    data[band] = {}
                    order.append(band)
                data[band]["WAVELENGTH" if name == "WAVE_OUT" else name] = arr
            else:
                extra[name] = arr
    if not order:
        raise InputError("no {BAND}_FLUX HDU found: not a spectra file", path=path)
    wave, flux, ivar, mask, res = _band_arrays(path, order, data)
    _check_rows(path, order, flux, tables)
    mask_d = mask if len(mask) == len(order) else None
    res_d = res if len(res) == len(order) else None
    return Spectra(bands=order, wave=wave, flux=flux, ivar=ivar, mask=mask_d,
                   resolution_data=res_d, fibermap=tables.get("FIBERMAP"),
                   exp_fibermap=tables.get("EXP_FIBERMAP"), meta=meta,
                   scores=tables.get("SCORES"), extra_hdus=extra, flux_unit=flux_unit)


def _check_rows(path, bands, flux, tables) -> None:
    """Every band, the FIBERMAP and the SCORES have one row per spectrum (both HDUs named)."""
    b0 = bands[0]
    n = flux[b0].shape[0]
    for b in bands[1:]:
        if flux[b].shape[0] != n:
            raise InputError(f"{b.upper()}_FLUX has {flux[b].shape[0]} rows but "
                             f"{b0.upper()}_FLUX has {n}: every band needs one row per "
                             "spectrum", path=path, hdu=f"{b.upper()}_FLUX")
    for name in ("FIBERMAP", "SCORES"):
        t = tables.get(name)
        if t is not None and len(t) != n:
            raise InputError(f"{name} has {len(t)} rows but {b0.upper()}_FLUX has {n} "
                             "spectra (one row per spectrum)", path=path, hdu=name)


def _as_table(a):
    """Structured ndarray from a structured array, astropy Table or dict of columns."""
    if a is None:
        return None
    if isinstance(a, np.ndarray) and a.dtype.names:
        return a
    if hasattr(a, "as_array"):
        return np.asarray(a.as_array())
    if isinstance(a, dict):
        cols = {k: np.asarray(to_host(v)) for k, v in a.items()}
        n = len(next(iter(cols.values())))
        out = np.zeros(n, dtype=[(k, v.dtype, v.shape[1:]) for k, v in cols.items()])
        for k, v in cols.items():
            out[k] = v
        return out
    return np.asarray(a)


def _fits_table(a):
    """Convert unicode columns to bytes so that every fitsio version writes them."""
    if a is None or a.dtype.names is None:
        return a
    if not any(a.dtype[n].kind == "U" for n in a.dtype.names):
        return a
    dt = []
    for n in a.dtype.names:
        t = a.dtype[n]
        if t.kind == "U":
            dt.append((n, f"S{max(1, t.itemsize // 4)}", t.shape))
        else:
            dt.append((n, t.base, t.shape))
    out = np.zeros(a.shape, dtype=dt)
    for n in a.dtype.names:
        out[n] = np.char.encode(a[n], "ascii") if a.dtype[n].kind == "U" else a[n]
    return out


def write_spectra(path, spectra: Spectra, overwrite: bool = True) -> str:
    """Write ``spectra`` to ``path`` in the desispec spectra/coadd layout, atomically.

    Flux, ivar and resolution are written as float32, wavelengths as float64 and
    masks as int32 (desispec's choices). Arrays may live on the GPU (they are
    copied to the host). Nothing is written when any step fails.

    Returns
    -------
    str
        ``path``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    funit = spectra.flux_unit or FLUX_UNIT
    iunit = ivar_unit(funit)
    fhdr = [{"name": "BUNIT", "value": funit}]
    ihdr = [{"name": "BUNIT", "value": iunit}] if iunit else None
    with atomic_output(path, overwrite=overwrite) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(None, header=header_records(add_dependencies(spectra.meta)))
            fm = _fits_table(_as_table(spectra.fibermap))
            if fm is not None:
                fx.write(fm, extname="FIBERMAP", units=table_units(fm.dtype.names))
            efm = _fits_table(_as_table(spectra.exp_fibermap))
            if efm is not None:
                fx.write(efm, extname="EXP_FIBERMAP", units=table_units(efm.dtype.names))
            for b in spectra.bands:
                B = b.upper()
                fx.write(np.asarray(to_host(spectra.wave[b]), dtype=np.float64),
                         extname=f"{B}_WAVELENGTH", header=[{"name": "BUNIT", "value": "Angstrom"}])
                fx.write(np.asarray(to_host(spectra.flux[b]), dtype=np.float32),
                         extname=f"{B}_FLUX", header=fhdr)
                fx.write(np.asarray(to_host(spectra.ivar[b]), dtype=np.float32),
                         extname=f"{B}_IVAR", header=ihdr)
                if spectra.mask is not None and spectra.mask.get(b) is not None:
                    fx.write(np.asarray(to_host(spectra.mask[b]), dtype=np.int32),
                             extname=f"{B}_MASK")
                if spectra.resolution_data is not None and \
                        spectra.resolution_data.get(b) is not None:
                    fx.write(np.asarray(to_host(spectra.resolution_data[b]), dtype=np.float32),
                             extname=f"{B}_RESOLUTION")
            sc = _fits_table(_as_table(spectra.scores))
            if sc is not None:
                fx.write(sc, extname="SCORES")
            for name, arr in (spectra.extra_hdus or {}).items():
                arr = to_host(arr)
                if isinstance(arr, np.ndarray) and arr.dtype.names:
                    arr = _fits_table(arr)
                fx.write(np.asarray(arr), extname=str(name).upper())
        write_checksums(tmp)
    return path
