"""Truth files of a simulated exposure: ``truth/truth-{EXPID:08d}.fits``.

HDUs
----
``PRIMARY``
    Empty; header NIGHT, EXPID, EXPTIME, OBSTYPE (SCIENCE or FLAT), SEED, DW; science:
    TILEID, SKYSCALE, TRANSP, AIRMASS; flat: LAMPSCAL (lamp brightness of the exposure).
``TARGETS``
    Table, one row per simulated fiber: FIBER, PETAL_LOC, TARGETID, TRUETYPE
    (ELG, LRG, QSO, STD, SKY), OBJTYPE, TRUEZ, MAG_R, FLUX_G/R/Z (nanomaggies),
    FIBER_THRU (achromatic part of the fiber throughput), TEMPLATEID, TEFF, LOGG, FEH,
    VRAD (km/s) of the standard stars' templates (−1 / 0 for other fibers).
For each camera ``C`` (upper case, e.g. ``B0``):

``WAVE_C``
    float64 (nwave,): bin centres in vacuum Å, linear with step DW (header;
    0.8 Å, aligned with the production grid of the band). Covers every
    wavelength whose spots can touch the simulated image rows.
``PHOT_C``
    float64 (nspec, nwave): photo-electrons per bin for fibers FIBERMIN … (header
    FIBERMIN, NSPEC), i.e. what the rendering projected through the PSF before
    pixflat. Each bin is rendered as the PSF spot at the bin centre, so an
    extraction on the same grid measures ``flux [e⁻/Å] ≈ R·PHOT / DW``.
``THRU_C``
    float32 (nspec, nwave): relative throughput ``T_f(λ)`` of each fiber (the same in
    every exposure of the night; a fiber flat measures ``T_f`` divided by its median
    over fibers).
Science exposures only:

``SKYPHOT_C``
    float32 (nspec, nwave): the sky part of PHOT_C.
``CALIB_C``
    float64 (nwave,): photons per bin per 1e-17 erg/s/cm²/Å (atmosphere at AIRMASS ×
    instrument, for a fiber of throughput 1 and transparency 1), so that
    ``PHOT = (TRANSP·OBJFLUX + SKYFLUX)·CALIB·THRU``.
``OBJFLUX_C``
    float32 (nspec, nwave): true f_λ of each fiber's object (1e-17 erg/s/cm²/Å, bin
    averages; standard stars: their templates; 0 for sky fibers).
``SKYFLUX_C``
    float64 (nwave,): the sky f_λ of this exposure per fiber (SKYSCALE included).
Flat-lamp exposures only:

``LAMP_C``
    float64 (nwave,): the lamp in electron/Å through a fiber of throughput 1, so that
    ``PHOT = LAMP·DW·THRU``.
Both:

``COSMICS_C``
    Table Y, X (trimmed CCD pixel), ELECTRONS: cosmic-ray deposits.
``SATURATED_C``
    Table Y, X: pixels of the deliberately saturated blob.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..io.util import atomic_output, header_records, open_fits, read_image_hdu, read_table_hdu, \
    write_checksums

__all__ = ["write_truth", "read_truth"]


#: optional per-camera image HDUs: key -> (EXTNAME prefix, dtype, BUNIT, per fiber)
_IMAGES = (("thru", "THRU", np.float32, "", True),
           ("skyphot", "SKYPHOT", np.float32, "electron", True),
           ("calib", "CALIB", np.float64, "electron / (1e-17 erg/cm2)", False),
           ("objflux", "OBJFLUX", np.float32, "1e-17 erg/(s cm2 Angstrom)", True),
           ("skyflux", "SKYFLUX", np.float64, "1e-17 erg/(s cm2 Angstrom)", False),
           ("lamp", "LAMP", np.float64, "electron/Angstrom", False))


def write_truth(path: str, meta: dict, targets_table: np.ndarray, cameras: dict) -> str:
    """Write a truth file atomically.

    Parameters
    ----------
    path : str
    meta : dict
        Primary header keywords.
    targets_table : structured ndarray
        The TARGETS table.
    cameras : dict
        ``{camera: {"wave", "dw", "fibermin", "phot", "cosmics", "saturated"}}`` plus
        any of ``"thru", "skyphot", "calib", "objflux", "skyflux", "lamp"``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(None, header=header_records(meta))
            fx.write(targets_table, extname="TARGETS")
            for cam, d in cameras.items():
                C = cam.upper()
                fx.write(np.asarray(d["wave"], dtype=np.float64), extname=f"WAVE_{C}",
                         header=header_records({"BUNIT": "Angstrom", "DW": d["dw"],
                                                "CAMERA": cam}))
                h = {"BUNIT": "electron", "DW": d["dw"], "FIBERMIN": d["fibermin"],
                     "NSPEC": d["phot"].shape[0], "CAMERA": cam}
                fx.write(np.asarray(d["phot"], dtype=np.float64), extname=f"PHOT_{C}",
                         header=header_records(h))
                for key, ext, dt, unit, per_fiber in _IMAGES:
                    if d.get(key) is None:
                        continue
                    hh = dict(h, BUNIT=unit) if per_fiber else \
                        {"BUNIT": unit, "DW": d["dw"], "CAMERA": cam}
                    fx.write(np.asarray(d[key], dtype=dt), extname=f"{ext}_{C}",
                             header=header_records(hh))
                cy, cx, ce = d["cosmics"]
                cos = np.zeros(len(cy), dtype=[("Y", "i4"), ("X", "i4"), ("ELECTRONS", "f4")])
                cos["Y"], cos["X"], cos["ELECTRONS"] = cy, cx, ce
                fx.write(cos, extname=f"COSMICS_{C}")
                sat = np.zeros(len(d["saturated"]), dtype=[("Y", "i4"), ("X", "i4")])
                sat["Y"], sat["X"] = d["saturated"][:, 0], d["saturated"][:, 1]
                fx.write(sat, extname=f"SATURATED_{C}")
        write_checksums(tmp)
    return path


def read_truth(path: str, camera: str | None = None) -> dict:
    """Read a truth file.

    Returns
    -------
    dict
        ``meta`` (primary header dict), ``targets`` (table) and, when ``camera``
        is given, ``wave``, ``phot``, ``cosmics``, ``saturated``, ``dw``, ``fibermin``
        and those of ``thru``, ``skyphot``, ``calib``, ``objflux``, ``skyflux``, ``lamp``
        that the file has (float64; the others are absent from the dict).

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        meta = {r["name"]: r["value"] for r in fx[0].read_header().records() if r.get("name")}
        out = {"meta": meta, "targets": read_table_hdu(fx, "TARGETS", path)}
        if camera is not None:
            C = camera.upper()
            names = {h.get_extname() for h in fx}
            wave, hw = read_image_hdu(fx, f"WAVE_{C}", path, header=True)
            phot, hp = read_image_hdu(fx, f"PHOT_{C}", path, header=True)
            out.update(wave=wave, phot=phot, dw=float(hw["DW"]), fibermin=int(hp["FIBERMIN"]),
                       cosmics=read_table_hdu(fx, f"COSMICS_{C}", path),
                       saturated=read_table_hdu(fx, f"SATURATED_{C}", path))
            for key, ext, *_ in _IMAGES:
                if f"{ext}_{C}" in names:
                    out[key] = read_image_hdu(fx, f"{ext}_{C}", path).astype(np.float64)
    return out
