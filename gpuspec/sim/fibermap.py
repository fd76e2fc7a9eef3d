"""Fibermap of a simulated exposure (desispec FIBERMAP columns).

One row per simulated fiber of each petal (FIBER 500·petal + 0 … nspec−1), the
same targets in every exposure of the night. Sky fibers have ``OBJTYPE='SKY'``
and the SKY bit of DESI_TARGET; standard stars ``OBJTYPE='TGT'`` and the
STD_FAINT bit; science targets the LRG, ELG or QSO bit. FIBER_RA/DEC and
DELTA_X/Y carry a small per-exposure positioning error (σ = 5 µm).
"""

from __future__ import annotations

import numpy as np

from ..io.fibermap import empty_fibermap
from .streams import stream
from .targets import Targets, Tile

__all__ = ["make_fibermap", "PLATE_SCALE_MM_PER_DEG"]

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
        fm["TILEID"] = tile.tileid
        fm["NIGHT"] = night
        fm["EXPID"] = expid
        fm["MJD"] = mjd
        fm["EXPTIME"] = exptime
        parts.append(fm)
    return np.concatenate(parts)
