"""Fibermap of a simulated exposure (the 71 columns of desispec's ``main`` fibermap).

One row per simulated fiber of each petal (FIBER 500·petal + 0 … nspec−1), the
same targets in every exposure of the night. Sky fibers have ``OBJTYPE='SKY'``
and the SKY bit of DESI_TARGET; standard stars ``OBJTYPE='TGT'`` and the
STD_FAINT bit; science targets the LRG, ELG or QSO bit. FIBER_RA/DEC and
DELTA_X/Y carry a small per-exposure positioning error (σ = 5 µm).

The imaging columns are plausible placeholders, drawn from their own random
stream (so the targets and the pixels do not depend on them): FIBERFLUX = 0.6 ×
FLUX (0.8 for point sources), FLUX_IVAR from a 3 % error, W1/W2 from the z flux,
MORPHTYPE PSF for stars and QSOs and EXP/DEV/REX for galaxies, Gaia G/BP/RP and
REF_CAT 'G2' for the standard stars, SHAPE_R for galaxies, EBV 0.02, PHOTSYS 'S',
PLATE_RA/DEC = TARGET_RA/DEC, NUM_ITER 2, DESINAME from the position. Like
desispec's assembled fibermaps, there are no NIGHT/EXPID/TILEID/MJD columns
(desispec adds them when it builds spectra).
"""

from __future__ import annotations

import numpy as np

from ..io.fibermap import empty_fibermap
from .streams import stream
from .targets import Targets, Tile

__all__ = ["make_fibermap", "make_flat_fibermap", "desiname", "PLATE_SCALE_MM_PER_DEG"]

PLATE_SCALE_MM_PER_DEG = 256.0
_PRIORITY = {"ELG": 3000, "LRG": 3200, "QSO": 3400, "STD": 3300, "SKY": 0}
_FA_TYPE = {"ELG": 1, "LRG": 1, "QSO": 1, "STD": 2, "SKY": 4}


def make_fibermap(targets_by_petal: dict[int, Targets], tile: Tile, seed: int, night: int,
                  expid: int, mjd: float, exptime: float) -> np.ndarray:
    """Fibermap rows for all simulated petals of one exposure.

    Parameters
    ----------
    targets_by_petal : {petal: Targets}
    tile : Tile
    seed, night, expid : int
    mjd, exptime : float

    Returns
    -------
    numpy structured array (gpuspec.io.fibermap dtype), ordered by FIBER.

    Backends: host only (NumPy).
    """
    parts = []
    for petal in sorted(targets_by_petal):
        t = targets_by_petal[petal]
        fm = empty_fibermap(t.nspec, specmin=500 * petal, petal=petal)
        rng = stream(seed, "positioning", petal, expid)
        kind = t.kind
        fm["TARGETID"] = t.targetid(tile.tileid)
        fm["FIBERSTATUS"] = 0
        fm["TARGET_RA"] = t.ra
        fm["TARGET_DEC"] = t.dec
        fm["REF_EPOCH"] = 2015.5
        fm["LAMBDA_REF"] = 5400.0
        dt = t.desi_target()
        fm["FA_TARGET"] = dt
        fm["DESI_TARGET"] = dt
        fm["FA_TYPE"] = [_FA_TYPE[k] for k in kind]
        fm["OBJTYPE"] = np.where(kind == "SKY", "SKY", "TGT")
        fm["PRIORITY"] = [_PRIORITY[k] for k in kind]
        fm["SUBPRIORITY"] = stream(seed, "subpriority", petal).random(500)[:t.nspec]
        fm["FLUX_G"] = t.flux_g
        fm["FLUX_R"] = t.flux_r
        fm["FLUX_Z"] = t.flux_z
        fm["FIBERASSIGN_X"] = t.fx
        fm["FIBERASSIGN_Y"] = t.fy
        dx = rng.normal(0.0, 0.005, t.nspec)  # mm
        dy = rng.normal(0.0, 0.005, t.nspec)
        fm["DELTA_X"] = dx
        fm["DELTA_Y"] = dy
        fm["FIBER_X"] = t.fx + dx
        fm["FIBER_Y"] = t.fy + dy
        fm["FIBER_DEC"] = t.dec + dy / PLATE_SCALE_MM_PER_DEG
        fm["FIBER_RA"] = (t.ra + dx / PLATE_SCALE_MM_PER_DEG / np.cos(np.deg2rad(t.dec))) % 360
        fm["EXPTIME"] = exptime
        fm["PLATE_RA"], fm["PLATE_DEC"] = t.ra, t.dec
        fm["NUM_ITER"] = 2
        fm["OBSCONDITIONS"] = 1  # DARK
        fm["PRIORITY_INIT"] = fm["PRIORITY"]
        fm["NUMOBS_INIT"] = np.where(kind == "QSO", 4, 1)
        _imaging(fm, t, stream(seed, "imaging", petal))
        parts.append(fm)
    return np.concatenate(parts)


def make_flat_fibermap(targets_by_petal: dict[int, Targets], exptime: float) -> np.ndarray:
    """Fibermap of a flat-lamp exposure: no targets, only where the fibers are.

    What desispec's ``empty_fibermap`` gives a calibration exposure (FIBER, PETAL_LOC,
    DEVICE_LOC, LOCATION, negative TARGETIDs, OBJTYPE ``'NON'``, FIBERSTATUS 0), with the
    fibers' focal-plane positions (FIBERASSIGN_X/Y, FIBER_X/Y) where desispec takes them
    from desimodel's focal plane: here the positions the night's tile puts them at
    (the positioners do not move for the flats). ``autocalib_fiberflat`` fits the lamp
    illumination in these coordinates.

    Backends: host only (NumPy).
    """
    parts = []
    for petal in sorted(targets_by_petal):
        t = targets_by_petal[petal]
        fm = empty_fibermap(t.nspec, specmin=500 * petal, petal=petal)
        fm["FIBERSTATUS"] = 0
        fm["FIBERASSIGN_X"], fm["FIBERASSIGN_Y"] = t.fx, t.fy
        fm["FIBER_X"], fm["FIBER_Y"] = t.fx, t.fy
        fm["EXPTIME"] = exptime
        parts.append(fm)
    return np.concatenate(parts)


def desiname(ra, dec) -> np.ndarray:
    """DESINAME-like identifiers ``DESI JRRR.RRRR+DD.DDDD`` from the position (deg).

    Backends: host only (NumPy).
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    return np.array([f"DESI J{r:08.4f}{d:+08.4f}" for r, d in zip(ra, dec)], dtype="S22")


def _imaging(fm, t: Targets, rng) -> None:
    """Fill the imaging/targeting columns with plausible values (see the module doc)."""
    n = t.nspec
    kind = t.kind
    point = (kind == "STD") | (kind == "QSO")
    sky = kind == "SKY"
    frac = np.where(point, 0.8, 0.6)
    for b, f in (("G", t.flux_g), ("R", t.flux_r), ("Z", t.flux_z)):
        f = np.where(sky, 0.0, f)
        fm[f"FLUX_{b}"] = f
        fm[f"FLUX_IVAR_{b}"] = np.where(sky, 0.0, 1.0 / (0.03 * np.abs(f) + 0.05) ** 2)
        fm[f"FIBERFLUX_{b}"] = frac * f
        fm[f"FIBERTOTFLUX_{b}"] = frac * f * rng.uniform(1.0, 1.1, n)
    for b, k in (("W1", 0.7), ("W2", 0.5)):
        f = np.where(sky, 0.0, k * t.flux_z)
        fm[f"FLUX_{b}"] = f
        fm[f"FLUX_IVAR_{b}"] = np.where(sky, 0.0, 1.0 / (0.1 * np.abs(f) + 0.5) ** 2)
    gal = rng.choice(np.array([b"EXP", b"DEV", b"REX"]), n)
    fm["MORPHTYPE"] = np.where(point, b"PSF", np.where(sky, b"", gal))
    fm["SHAPE_R"] = np.where(point | sky, 0.0, rng.uniform(0.3, 2.0, n))
    fm["SERSIC"] = np.where(fm["MORPHTYPE"] == b"DEV", 4.0,
                            np.where(point | sky, 0.0, 1.0))
    fm["SHAPE_E1"] = np.where(point | sky, 0.0, rng.normal(0, 0.1, n))
    fm["SHAPE_E2"] = np.where(point | sky, 0.0, rng.normal(0, 0.1, n))
    star = kind == "STD"
    rmag = np.where(np.isfinite(t.mag_r), t.mag_r, 0.0)
    fm["GAIA_PHOT_G_MEAN_MAG"] = np.where(star, rmag + 0.1, 0.0)
    fm["GAIA_PHOT_BP_MEAN_MAG"] = np.where(star, rmag + 0.45, 0.0)
    fm["GAIA_PHOT_RP_MEAN_MAG"] = np.where(star, rmag - 0.35, 0.0)
    fm["PARALLAX"] = np.where(star, rng.uniform(0.1, 1.0, n), 0.0)
    fm["REF_CAT"] = np.where(star, b"G2", b"")
    fm["REF_ID"] = np.where(star, rng.integers(10 ** 17, 10 ** 18, n), -1)
    fm["PMRA"] = np.where(star, rng.normal(0, 5, n), 0.0)
    fm["PMDEC"] = np.where(star, rng.normal(0, 5, n), 0.0)
    fm["EBV"] = 0.02
    fm["PHOTSYS"] = "S"
    fm["RELEASE"] = np.where(sky, 0, 9010)
    brick = np.floor(t.ra * 4).astype(int) * 1000 + np.floor((t.dec + 90) * 4).astype(int)
    fm["BRICKID"] = brick
    fm["BRICKNAME"] = [f"{r * 10:04.0f}p{abs(d) * 10:03.0f}".encode() for r, d in
                       zip(np.floor(t.ra * 4) / 4, np.floor(t.dec * 4) / 4)]
    fm["BRICK_OBJID"] = np.arange(n) + 1
    fm["MASKBITS"] = 0
    fm["DESINAME"] = desiname(t.ra, t.dec)
