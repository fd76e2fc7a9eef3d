"""Which fibers a camera's bundles hold, and their HEALPix pixels, from the fibermap itself.

The launcher never computes fiber numbers from a formula. A camera's spectra are
the rows of the exposure's fibermap whose ``PETAL_LOC`` is the camera's
spectrograph (rows without ``PETAL_LOC``: ``FIBER // 500``), in file order; this
is what preproc attaches to the preproc image and what extraction propagates
(spectrum ``i`` of a frame is that row ``i``). Bundle ``b`` is then rows
``b*fibers_per_bundle ... (b+1)*fibers_per_bundle - 1``. In DESI (and in the
simulator) fibers are numbered ``500*petal + i``, so a spectrograph-1 frame
with any ``nbundles`` holds fibers 500, 501, ...

Pixels come from :func:`gpuspec.coadd.group.healpix_pixels` (the one used to
write the spectra files). Host only.
"""

from __future__ import annotations

import os

import numpy as np

from .manifest import ManifestError

__all__ = ["petal_rows", "bundle_rows", "fiber_pixels"]

_CACHE: dict = {}


def petal_rows(fibermap: str, camera: str) -> np.ndarray:
    """Rows of ``fibermap`` for the spectrograph of ``camera`` (FIBER, TARGET_RA, TARGET_DEC).

    Raises
    ------
    ManifestError
        No FIBER/TARGET_RA/TARGET_DEC column, or no row of that spectrograph.

    Backends: host only.
    """
    from ..io.fibermap import FIBERS_PER_PETAL, read_fibermap

    key = (os.path.abspath(fibermap), os.stat(fibermap).st_mtime_ns)
    if key not in _CACHE:
        fm = read_fibermap(fibermap)
        for col in ("FIBER", "TARGET_RA", "TARGET_DEC"):
            if col not in fm.dtype.names:
                raise ManifestError(f"fibermap {fibermap} HDU FIBERMAP has no column {col}")
        petal = (np.asarray(fm["PETAL_LOC"]) if "PETAL_LOC" in fm.dtype.names
                 else np.asarray(fm["FIBER"]) // FIBERS_PER_PETAL)
        _CACHE.clear()  # one fibermap at a time: exposures come in order
        _CACHE[key] = (fm[["FIBER", "TARGET_RA", "TARGET_DEC"]], petal.astype(np.int64))
    fm, petal = _CACHE[key]
    spectro = int(camera[1])
    rows = fm[petal == spectro]
    if rows.size == 0:
        raise ManifestError(f"fibermap {fibermap} has no fiber of spectrograph {spectro} "
                            f"(camera {camera}; PETAL_LOC or FIBER//500)")
    return rows


def bundle_rows(fibermap: str, camera: str, bundles, fibers_per_bundle: int) -> np.ndarray:
    """The fibermap rows extracted by ``bundles`` of ``camera`` (see the module docstring).

    Backends: host only.
    """
    rows = petal_rows(fibermap, camera)
    fpb = int(fibers_per_bundle)
    idx = [i for b in sorted(set(int(b) for b in bundles))
           for i in range(b * fpb, min((b + 1) * fpb, rows.size))]
    return rows[np.asarray(idx, dtype=np.int64)]


def fiber_pixels(rows: np.ndarray, nside: int) -> dict[int, list[int]]:
    """``{pixel: [FIBER, ...]}`` (NESTED) of rows with finite TARGET_RA/TARGET_DEC.

    Backends: host only.
    """
    from ..coadd.group import healpix_pixels

    ra = np.asarray(rows["TARGET_RA"], dtype=np.float64)
    dec = np.asarray(rows["TARGET_DEC"], dtype=np.float64)
    ok = np.isfinite(ra) & np.isfinite(dec)
    out: dict[int, list[int]] = {}
    if not ok.any():
        return out
    pix = healpix_pixels(ra[ok], dec[ok], nside)
    for p, f in zip(pix.tolist(), np.asarray(rows["FIBER"])[ok].tolist()):
        out.setdefault(int(p), []).append(int(f))
    return out
