"""``gpuspec info FILE [FILE...]``: recognise and summarise gpuspec / DESI FITS files.

Recognised kinds: raw exposure, preproc image, PSF, frame, spectra, coadd,
fibermap and calibration image (anything else is listed as ``unknown``). For
each file the command prints the kind, every HDU (name, type, shape, dtype,
compression) and the key keywords of that kind. ``--headers`` also prints every
header card.

Exit status: 0 when every file was summarised, 1 when a file is missing,
unreadable or (for raw files) fails the header validation; the error names the
file, HDU and keyword.

Examples
--------
::

    gpuspec info raw/20250101/00000042/desi-00000042.fits.fz
    gpuspec info preproc-b0-00000042.fits frame-b0-00000042.fits psf-b0.fits
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np

from ..errors import GpuspecError, InputError
from .util import hdu_names, header_dict, open_fits

__all__ = ["add_parser", "main", "describe", "detect_kind"]

_CAMERA_RE = re.compile(r"^[BRZ][0-9]$")
_BITPIX = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32",
           -64: "float64", 20: "uint16", 40: "uint32", 80: "uint64", 10: "int8"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``info`` subcommand to ``subparsers``.

    Backends: host only (argument parsing; the step chooses its own backend).
    """
    p = subparsers.add_parser(
        "info", help="summarise gpuspec/DESI FITS files (raw, preproc, psf, frame, spectra, "
                     "coadd, fibermap, calibration)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="FITS file(s)")
    p.add_argument("--headers", action="store_true", help="also print every header card")
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    """Run ``gpuspec info`` for parsed ``args``; returns the exit status.

    Backends: host only (argument parsing; the step chooses its own backend).
    """
    status = 0
    for i, path in enumerate(args.files):
        if i:
            print()
        try:
            print(describe(path, headers=getattr(args, "headers", False)))
        except GpuspecError as exc:
            print(f"gpuspec info: error: {exc}", file=sys.stderr)
            status = 1
    return status


# --------------------------------------------------------------------------- helpers

def _hdu_line(i: int, hdu, name: str) -> str:
    info = hdu.get_info()
    kind = hdu.get_exttype()
    label = name or "(primary)" if i == 0 else name or "(no name)"
    if kind == "IMAGE_HDU":
        dims = list(hdu.get_dims() or [])
        if not dims:
            return f"  [{i}] {label:<18s} image   (no data)"
        dtype = _BITPIX.get(info.get("img_equiv_type"), str(info.get("img_equiv_type")))
        comp = f"  compressed {info.get('comptype')}" if info.get("is_compressed_image") \
            else ""
        return f"  [{i}] {label:<18s} image   {tuple(dims)} {dtype}{comp}"
    nrows = hdu.get_nrows()
    ncols = len(hdu.get_colnames())
    return f"  [{i}] {label:<18s} table   {nrows} rows x {ncols} columns"


def _fmt(v) -> str:
    if isinstance(v, str):
        return repr(v.strip().strip("'").strip())
    return str(v)


def _kv(d: dict, keys) -> str:
    parts = [f"{k}={_fmt(d[k])}" for k in keys if k in d and d[k] is not None]
    return " ".join(parts) if parts else "(none)"


def detect_kind(names: list[str], headers: list[dict]) -> str:
    """Kind of a FITS file from its HDU names and headers.

    Returns one of ``raw``, ``preproc``, ``psf``, ``frame``, ``spectra``,
    ``coadd``, ``fibermap``, ``calib``, ``unknown``.

    Backends: host only (NumPy).
    """
    s = set(names)
    if "PSF" in s and ("XTRACE" in s or any("PSFTYPE" in h for h in headers)):
        return "psf"
    if any(_CAMERA_RE.match(n) for n in names):
        return "raw"
    if {"IMAGE", "IVAR", "MASK"} <= s:
        return "preproc"
    if "FLUX" in s and "WAVELENGTH" in s:
        return "frame"
    bands = [n[:-5] for n in names if n.endswith("_FLUX") and f"{n[:-5]}_WAVELENGTH" in s]
    if bands:
        return "coadd" if "EXP_FIBERMAP" in s else "spectra"
    if "FIBERMAP" in s:
        return "fibermap"
    if headers and ("CALTYPE" in headers[0] or (len(names) == 1 and names[0] in ("", "PRIMARY"))):
        return "calib"
    return "unknown"


def _summary_raw(fx, path, names, headers) -> list[str]:
    from .raw import validate_raw_header

    # the exposure header: the first HDU with EXPTIME (SPEC in DESI raw files), as desispec
    prim = next((h for h in headers if "EXPTIME" in h), headers[0])
    out = [f"  exposure: {_kv(prim, ('EXPID', 'NIGHT', 'EXPTIME', 'OBSTYPE', 'DATE-OBS'))}"]
    cams = [(i, n) for i, n in enumerate(names) if _CAMERA_RE.match(n)]
    out.append(f"  cameras ({len(cams)}): {' '.join(n.lower() for _, n in cams)}")
    problems = []
    for i, n in cams:
        h = headers[i]
        dims = tuple(fx[i].get_dims())
        try:
            amps = validate_raw_header(h, dims, path=path, hdu=n, primary_header=prim)
            check = f"amps {''.join(amps)}"
        except GpuspecError as exc:
            check = "INVALID"
            problems.append(exc)
        gains = " ".join(f"{h[k]:g}" for k in h if re.match(r"^GAIN[A-D1-4]$", k)
                         and isinstance(h[k], (int, float)))
        out.append(f"    {n.lower()}: {dims} {check}; gains {gains or '-'}; "
                   f"{_kv(h, ('EXPTIME', 'NIGHT'))}")
    if problems:
        raise problems[0]
    return out


def _summary_preproc(fx, path, names, headers) -> list[str]:
    h = headers[names.index("IMAGE")]
    out = [f"  {_kv(h, ('CAMERA', 'EXPID', 'NIGHT', 'EXPTIME', 'OBSTYPE'))}"]
    mask = fx["MASK"].read()
    n = int(np.count_nonzero(mask))
    out.append(f"  image {tuple(fx['IMAGE'].get_dims())}; masked pixels {n} "
               f"({100.0 * n / max(mask.size, 1):.2f}%)")
    amps = [k[6:] for k in h if re.match(r"^OBSRDN[A-D1-4]$", k)]
    if amps:
        out.append("  readnoise " + " ".join(f"{a}={h['OBSRDN' + a]:.3g}" for a in amps
                                            if isinstance(h['OBSRDN' + a], (int, float))))
    out.append(f"  fibermap: {'yes' if 'FIBERMAP' in names else 'no'}")
    return out


def _summary_psf(fx, path, names, headers) -> list[str]:
    merged = {}
    for h in headers:
        for k, v in h.items():
            merged.setdefault(k, v)
    out = [f"  {_kv(merged, ('PSFTYPE', 'PSFVER', 'CAMERA'))}"]
    if "XTRACE" in names:
        nspec = fx["XTRACE"].get_dims()[0]
    elif "FIBERMIN" in merged and "FIBERMAX" in merged:
        nspec = int(merged["FIBERMAX"]) - int(merged["FIBERMIN"]) + 1
    else:
        nspec = "?"
    out.append(f"  nspec {nspec}; wavelength {merged.get('WAVEMIN', '?')} - "
               f"{merged.get('WAVEMAX', '?')} A")
    geom = ("NPIX_X", "NPIX_Y", "HSIZEX", "HSIZEY", "GHDEGX", "GHDEGY", "LEGDEG")
    out.append(f"  {_kv(merged, geom)}")
    out.append(f"  parameters: {fx['PSF'].get_nrows()}")
    return out


def _summary_frame(fx, path, names, headers) -> list[str]:
    h = headers[names.index("FLUX")]
    nspec, nwave = fx["FLUX"].get_dims()
    wave = fx["WAVELENGTH"].read()
    out = [f"  {_kv(h, ('CAMERA', 'EXPID', 'NIGHT', 'SPECMIN', 'NSPEC', 'BUNIT'))}",
           f"  nspec {nspec}; nwave {nwave}; wavelength {wave.min():.2f} - {wave.max():.2f} A"]
    if "RESOLUTION" in names:
        out.append(f"  resolution: ndiag {fx['RESOLUTION'].get_dims()[1]}")
    extra = [n for n in ("FIBERMAP", "CHI2PIX", "PIXMASK_FRACTION", "MODELIMAGE") if n in names]
    out.append(f"  also: {' '.join(extra) or '-'}")
    return out


def _summary_spectra(fx, path, names, headers, coadd) -> list[str]:
    s = set(names)
    bands = [n[:-5] for n in names if n.endswith("_FLUX") and f"{n[:-5]}_WAVELENGTH" in s]
    out = [f"  bands: {' '.join(b.lower() for b in bands)}"]
    if "FIBERMAP" in s:
        cols = fx["FIBERMAP"].get_colnames()
        nrow = fx["FIBERMAP"].get_nrows()
        ntarget = "?"
        if "TARGETID" in cols:
            ntarget = len(np.unique(fx["FIBERMAP"].read(columns=["TARGETID"])["TARGETID"]))
        label = "ntarget" if coadd else "nspec"
        out.append(f"  {label} {nrow} (unique TARGETID {ntarget})")
    if "EXP_FIBERMAP" in s:
        out.append(f"  exposures (EXP_FIBERMAP rows): {fx['EXP_FIBERMAP'].get_nrows()}")
    for b in bands:
        w = fx[f"{b}_WAVELENGTH"].read()
        dims = tuple(fx[f"{b}_FLUX"].get_dims())
        res = f"; ndiag {fx[f'{b}_RESOLUTION'].get_dims()[1]}" if f"{b}_RESOLUTION" in s else ""
        out.append(f"    {b.lower()}: flux {dims}; nwave {w.size}; "
                   f"{w.min():.2f} - {w.max():.2f} A{res}")
    return out


def _summary_fibermap(fx, path, names, headers) -> list[str]:
    fm = fx["FIBERMAP"].read()
    cols = fm.dtype.names
    out = [f"  rows {len(fm)}; columns {len(cols)}"]
    if "FIBER" in cols and len(fm):
        out.append(f"  FIBER {fm['FIBER'].min()} - {fm['FIBER'].max()}")
    if "PETAL_LOC" in cols and len(fm):
        out.append(f"  PETAL_LOC {sorted(set(int(p) for p in fm['PETAL_LOC']))}")
    if "OBJTYPE" in cols and len(fm):
        vals, counts = np.unique(np.char.strip(fm["OBJTYPE"].astype(str)), return_counts=True)
        out.append("  OBJTYPE " + " ".join(f"{v}:{c}" for v, c in zip(vals, counts)))
    h = headers[names.index("FIBERMAP")]
    keys = _kv(h, ("TILEID", "NIGHT", "EXPID", "SURVEY", "PROGRAM"))
    if keys != "(none)":
        out.append(f"  {keys}")
    return out


def _summary_calib(fx, path, names, headers) -> list[str]:
    h = headers[0]
    data = fx[0].read()
    if data is None:
        raise InputError("calibration file has no image in the primary HDU", path=path,
                         hdu=0)
    kind = h.get("CALTYPE", "kind unknown (no CALTYPE)")
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    stats = (f"min {finite.min():.4g} median {np.median(finite):.4g} max {finite.max():.4g}"
             if finite.size else "no finite pixels")
    return [f"  calibration: {str(kind).lower()} {_kv(h, ('CAMERA', 'BUNIT'))}",
            f"  image {data.shape} {data.dtype}; {stats}"]


def describe(path: str, headers: bool = False) -> str:
    """Text summary of one FITS file (what ``gpuspec info`` prints).

    Raises
    ------
    MissingFileError, InputError
        Missing, unreadable or truncated file; raw headers that fail validation.

    Backends: host only (NumPy).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        try:
            raw_headers = [fx[i].read_header() for i in range(len(fx))]
        except Exception as exc:
            raise InputError(f"cannot read headers ({str(exc).splitlines()[0]})",
                             path=path) from exc
        hdrs = [header_dict(h) for h in raw_headers]
        kind = detect_kind(names, hdrs)
        lines = [f"{path}: {kind}", "  HDUs:"]
        lines += [_hdu_line(i, fx[i], names[i]) for i in range(len(fx))]
        try:
            if kind == "raw":
                lines += _summary_raw(fx, path, names, hdrs)
            elif kind == "preproc":
                lines += _summary_preproc(fx, path, names, hdrs)
            elif kind == "psf":
                lines += _summary_psf(fx, path, names, hdrs)
            elif kind == "frame":
                lines += _summary_frame(fx, path, names, hdrs)
            elif kind in ("spectra", "coadd"):
                lines += _summary_spectra(fx, path, names, hdrs, kind == "coadd")
            elif kind == "fibermap":
                lines += _summary_fibermap(fx, path, names, hdrs)
            elif kind == "calib":
                lines += _summary_calib(fx, path, names, hdrs)
        except GpuspecError:
            raise
        except Exception as exc:
            raise InputError(f"cannot summarise {kind} file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})",
                             path=path) from exc
        if headers:
            for i, h in enumerate(raw_headers):
                lines.append(f"  --- header [{i}] {names[i]}")
                lines += ["    " + r.get("card_string", f"{r['name']} = {r['value']}")
                          for r in h.records()]
    return "\n".join(lines)
