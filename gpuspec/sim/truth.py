"""Truth files of a simulated exposure: ``truth/truth-{EXPID:08d}.fits``.

HDUs
----
``PRIMARY``
    Empty; header NIGHT, EXPID, EXPTIME, TILEID, SEED, SKYSCALE, TRANSP.
``TARGETS``
    Table, one row per simulated fiber: FIBER, PETAL_LOC, TARGETID, TRUETYPE
    (ELG, LRG, QSO, STD, SKY), OBJTYPE, TRUEZ, MAG_R, FLUX_G/R/Z (nanomaggies),
    FIBER_THRU (relative fiber throughput).
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
``SKYPHOT_C``
    float32 (nspec, nwave): the sky part of PHOT_C.
``CALIB_C``
    float64 (nwave,): photons per bin per 1e-17 erg/s/cm²/Å (for a fiber of
    throughput 1 and transparency 1), so that
    ``PHOT = (TRANSP·f_obj + f_sky)·CALIB·FIBER_THRU``.
``COSMICS_C``
    Table Y, X (trimmed CCD pixel), ELECTRONS: cosmic-ray deposits.
``SATURATED_C``
    Table Y, X: pixels of the deliberately saturated blob.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..io.util import atomic_output, header_records, open_fits, read_image_hdu, read_table_hdu

__all__ = ["write_truth", "read_truth"]


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
        ``{camera: {"wave", "dw", "fibermin", "phot", "skyphot", "calib", "cosmics",
        "saturated"}}``.

    Host only (file I/O); device (CuPy) arrays are copied to the host first.
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
                fx.write(np.asarray(d["skyphot"], dtype=np.float32), extname=f"SKYPHOT_{C}",
                         header=header_records(h))
                fx.write(np.asarray(d["calib"], dtype=np.float64), extname=f"CALIB_{C}",
                         header=header_records({"BUNIT": "electron / (1e-17 erg/cm2)",
                                                "DW": d["dw"], "CAMERA": cam}))
                cy, cx, ce = d["cosmics"]
                cos = np.zeros(len(cy), dtype=[("Y", "i4"), ("X", "i4"), ("ELECTRONS", "f4")])
                cos["Y"], cos["X"], cos["ELECTRONS"] = cy, cx, ce
                fx.write(cos, extname=f"COSMICS_{C}")
                sat = np.zeros(len(d["saturated"]), dtype=[("Y", "i4"), ("X", "i4")])
                sat["Y"], sat["X"] = d["saturated"][:, 0], d["saturated"][:, 1]
                fx.write(sat, extname=f"SATURATED_{C}")
    return path


def read_truth(path: str, camera: str | None = None) -> dict:
    """Read a truth file.

    Returns
    -------
    dict
        ``meta`` (primary header dict), ``targets`` (table) and, when ``camera``
        is given, ``wave``, ``phot``, ``skyphot``, ``calib``, ``cosmics``,
        ``saturated``, ``dw``, ``fibermin``.

    Host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        meta = {r["name"]: r["value"] for r in fx[0].read_header().records() if r.get("name")}
        out = {"meta": meta, "targets": read_table_hdu(fx, "TARGETS", path)}
        if camera is not None:
            C = camera.upper()
            wave, hw = read_image_hdu(fx, f"WAVE_{C}", path, header=True)
            phot, hp = read_image_hdu(fx, f"PHOT_{C}", path, header=True)
            out.update(wave=wave, phot=phot, dw=float(hw["DW"]), fibermin=int(hp["FIBERMIN"]),
                       skyphot=read_image_hdu(fx, f"SKYPHOT_{C}", path),
                       calib=read_image_hdu(fx, f"CALIB_{C}", path),
                       cosmics=read_table_hdu(fx, f"COSMICS_{C}", path),
                       saturated=read_table_hdu(fx, f"SATURATED_{C}", path))
    return out
