"""Calibration images of a simulated camera: master bias, dark rate, pixel flat, mask.

Conventions (desispec, see shared/reference README "Case A"):

- ``bias``: overscan-subtracted master bias in ADU, raw shape. It is the
  camera's fixed bias structure minus the mean of each amp's BIASSEC, plus a
  0.2 ADU measurement noise (a master bias is an average of many zeros).
- ``dark``: dark current **rate** in e⁻/s, trimmed shape (preproc multiplies
  by EXPTIME): 5e-4 e⁻/s with a gentle gradient, hot pixels (0.02–0.5 e⁻/s)
  and a warm column segment.
- ``pixflat``: relative pixel response, trimmed shape: 1 + 1 % pixel noise + a
  2–3 % smooth pattern; dead pixels at 0 and a few low pixels at 0.02–0.09.
- ``mask``: int32 ``ccdmask`` bits for the known defects: HOT for hot pixels
  above 0.05 e⁻/s, DEAD for dead pixels, BAD for a bad column segment (which
  collects spurious charge in every exposure).

All images are float32-exact: the simulation uses exactly the values that are
written. Host-side NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..maskbits import ccdmask
from .geometry import AMPS, CCDGeometry
from .raw import Electronics
from .streams import stream

__all__ = ["CameraCalib", "make_calib"]

DARK_BASE = 5e-4      # e-/s
HOT_DENSITY = 2e-5    # per pixel
DEAD_DENSITY = 3e-6
LOW_DENSITY = 3e-6


@dataclass
class CameraCalib:
    """Calibration images and the defects behind them."""

    bias: np.ndarray      # float32, raw shape, ADU (master bias written to disk)
    dark: np.ndarray      # float32, trimmed, e-/s
    pixflat: np.ndarray   # float32, trimmed
    mask: np.ndarray      # int32, trimmed, ccdmask bits
    structure: np.ndarray  # float64 raw shape, true bias structure (ADU) used in the raws
    defects: dict = field(default_factory=dict)


def _normal32(rng, shape):
    """Standard normal draws in float32 (twice as fast as float64 for big images)."""
    return rng.standard_normal(shape, dtype=np.float32)


def _count(rng, density, npix, minimum=3):
    return max(minimum, int(rng.poisson(density * npix)))


def make_calib(seed: int, camera: str, geom: CCDGeometry, elec: Electronics,
               structure: np.ndarray) -> CameraCalib:
    """Calibration images of ``camera`` (deterministic in ``seed`` and ``camera``).

    Backends: host only (NumPy).
    """
    rng = stream(seed, "calib", camera)
    ny, nx = geom.trimmed_shape
    npix = ny * nx
    yy = (np.arange(ny) / max(ny - 1, 1))[:, None]
    xx = (np.arange(nx) / max(nx - 1, 1))[None, :]

    # --- dark rate
    dark = DARK_BASE * (1.0 + 0.3 * yy + 0.2 * xx) + 5e-5 * _normal32(rng, (ny, nx))
    dark = np.maximum(dark, 0.0)
    nhot = _count(rng, HOT_DENSITY, npix)
    hot_y = rng.integers(0, ny, nhot)
    hot_x = rng.integers(0, nx, nhot)
    hot_rate = np.exp(rng.uniform(np.log(0.02), np.log(0.5), nhot))
    dark[hot_y, hot_x] = hot_rate
    wx = int(rng.integers(0, nx))
    wy0 = int(rng.integers(0, ny // 2))
    wy1 = min(ny, wy0 + int(rng.integers(100, 600)))
    dark[wy0:wy1, wx] += 0.01
    dark = dark.astype(np.float32)

    # --- pixel flat
    p1, p2, p3 = rng.uniform(0, 2 * np.pi, 3)
    a1, a2 = rng.uniform(0.01, 0.015, 2)
    smooth = (a1 * np.sin(2 * np.pi * 1.3 * yy + p1) * np.cos(2 * np.pi * 0.9 * xx + p2)
              + a2 * np.sin(2 * np.pi * 2.1 * (xx + 0.5 * yy) + p3))
    pixflat = 1.0 + smooth + 0.01 * _normal32(rng, (ny, nx))
    ndead = _count(rng, DEAD_DENSITY, npix)
    dead_y = rng.integers(0, ny, ndead)
    dead_x = rng.integers(0, nx, ndead)
    nlow = _count(rng, LOW_DENSITY, npix)
    low_y = rng.integers(0, ny, nlow)
    low_x = rng.integers(0, nx, nlow)
    pixflat[low_y, low_x] = rng.uniform(0.02, 0.09, nlow)
    pixflat[dead_y, dead_x] = 0.0
    pixflat = pixflat.astype(np.float32)

    # --- bad column segment (spurious charge in every exposure), masked BAD
    bx = int(rng.integers(0, nx))
    by0 = int(rng.integers(0, ny // 2))
    by1 = min(ny, by0 + int(rng.integers(50, 400)))

    mask = np.zeros((ny, nx), dtype=np.int32)
    mask[by0:by1, bx] |= ccdmask.BAD
    strong = hot_rate > 0.05
    mask[hot_y[strong], hot_x[strong]] |= ccdmask.HOT
    mask[dead_y, dead_x] |= ccdmask.DEAD

    # --- master bias: structure minus each amp's BIASSEC mean, + measurement noise
    bias = structure.copy()
    for a in AMPS:
        g = geom.amps[a]
        bias[g.region] -= structure[g.bias].mean()
    bias += 0.2 * _normal32(rng, bias.shape)
    bias = bias.astype(np.float32)

    defects = {
        "hot_pixels": np.stack([hot_y, hot_x], axis=1),
        "hot_rate": hot_rate,
        "dead_pixels": np.stack([dead_y, dead_x], axis=1),
        "low_pixels": np.stack([low_y, low_x], axis=1),
        "bad_column": (bx, by0, by1),
        "warm_column": (wx, wy0, wy1),
    }
    return CameraCalib(bias=bias, dark=dark, pixflat=pixflat, mask=mask, structure=structure,
                       defects=defects)
