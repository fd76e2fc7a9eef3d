"""CCD electronics of the simulator: gains, read noise, bias, cosmics, digitisation.

A raw camera image is made from the trimmed electron image (photo-electrons
after pixflat, plus dark current, cosmics, a hot column and a saturated blob):

1. electrons / GAINx (e⁻/ADU) are placed in the DATASEC of each amp;
2. every raw pixel (data, prescan, overscan columns, overscan rows) gets the amp's
   bias offset (with a small per-exposure drift), the fixed bias structure of the
   camera (edge glow near the prescan, a row ripple, fixed-pattern noise) and
   Gaussian read noise RDNOISEx/GAINx ADU;
3. values are rounded to integer ADU and clipped to the 16-bit ADC range
   0–65535 (pixels at 65535 are saturated; SATURLEVx = 65000 ADU).

Host-side NumPy: the random draws come from NumPy generators so that the pixels
are identical on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import AMPS, CCDGeometry
from .streams import stream

__all__ = ["Electronics", "make_electronics", "bias_structure", "make_cosmics",
           "digitize", "ADC_MAX", "SATURLEV"]

ADC_MAX = 65535
SATURLEV = 65000.0


@dataclass(frozen=True)
class Electronics:
    """Per-amp constants of one camera (night-fixed)."""

    gain: dict       # e-/ADU
    rdnoise: dict    # e- (true value used for the noise)
    offset: dict     # ADU bias level
    glow_amp: dict   # ADU, edge glow amplitude near the prescan
    glow_len: dict   # columns, e-folding length of the glow
    ripple: dict     # ADU, amplitude of the row ripple
    ripple_period: float
    ripple_phase: float

    def header(self) -> dict:
        """GAINx, RDNOISEx, SATURLEVx keywords.

        Backends: host only (plain values).
        """
        out = {}
        for a in AMPS:
            out[f"GAIN{a}"] = round(float(self.gain[a]), 4)
            out[f"RDNOISE{a}"] = round(float(self.rdnoise[a]), 3)
            out[f"SATURLEV{a}"] = SATURLEV
        return out


def make_electronics(seed: int, camera: str) -> Electronics:
    """Gains (1.4–1.8 e⁻/ADU), read noise (2.6–3.6 e⁻), bias levels (980–1120 ADU), ...

    Backends: host only (NumPy).
    """
    rng = stream(seed, "electronics", camera)
    g = rng.uniform(1.4, 1.8, 4)
    rn = rng.uniform(2.6, 3.6, 4)
    off = rng.uniform(980.0, 1120.0, 4)
    ga = rng.uniform(2.0, 6.0, 4)
    gl = rng.uniform(15.0, 50.0, 4)
    rp = rng.uniform(0.2, 0.8, 4)
    period = float(rng.uniform(300.0, 900.0))
    phase = float(rng.uniform(0, 2 * np.pi))

    def d(v):
        return {a: float(x) for a, x in zip(AMPS, v)}

    return Electronics(gain=d(g), rdnoise=d(rn), offset=d(off), glow_amp=d(ga),
                       glow_len=d(gl), ripple=d(rp), ripple_period=period, ripple_phase=phase)


def bias_structure(seed: int, camera: str, geom: CCDGeometry, elec: Electronics) -> np.ndarray:
    """Fixed bias structure of a camera (ADU, raw shape, float64, around 0).

    Edge glow decaying away from each amp's prescan edge, a row ripple and
    0.3 ADU fixed-pattern noise. The per-amp offset is not included.

    Backends: host only (NumPy).
    """
    rng = stream(seed, "bias_structure", camera)
    ny, nx = geom.raw_shape
    s = 0.3 * rng.standard_normal((ny, nx), dtype=np.float32).astype(np.float64)
    xcol = np.arange(nx, dtype=np.float64)
    yrow = np.arange(ny, dtype=np.float64)
    for a in AMPS:
        ys, xs = geom.amps[a].region
        xx = xcol[xs]
        dist = (xx - xs.start) if a in ("A", "C") else (xs.stop - 1 - xx)
        glow = elec.glow_amp[a] * np.exp(-dist / elec.glow_len[a])
        ripple = elec.ripple[a] * np.sin(2 * np.pi * yrow[ys] / elec.ripple_period
                                          + elec.ripple_phase)
        s[ys, xs] += glow[None, :] + ripple[:, None]
    return s


def make_cosmics(rng: np.random.Generator, shape: tuple[int, int], exptime: float,
                 rate: float = 2e-8):
    """Cosmic-ray hits and tracks on a trimmed image.

    Parameters
    ----------
    rng : numpy Generator
    shape : (ny, nx)
    exptime : float
        Seconds; the mean number of events is ``rate · ny · nx · exptime``.
    rate : float
        Events per pixel per second (2e-8 gives ~300 events on a full CCD in 900 s).

    Returns
    -------
    y, x : int arrays
        Unique affected pixels.
    electrons : float array
        Deposited electrons per pixel.

    Backends: host only (NumPy).
    """
    ny, nx = shape
    n = int(rng.poisson(rate * ny * nx * exptime))
    if n == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    y0 = rng.uniform(0, ny, n)
    x0 = rng.uniform(0, nx, n)
    # 30 % point-like hits, the rest tracks of exponential length (mean 10 px)
    length = np.where(rng.random(n) < 0.3, 0.0, rng.exponential(10.0, n) + 1.0)
    theta = rng.uniform(0, np.pi, n)
    dedx = rng.lognormal(np.log(600.0), 0.5, n)  # e- per pixel of track
    nstep = np.maximum(1, np.ceil(length / 0.25).astype(int))
    ev = np.repeat(np.arange(n), nstep)
    start = np.cumsum(nstep) - nstep
    t = (np.arange(ev.size) - start[ev] + 0.5) / nstep[ev]  # 0..1 along the track
    yy = y0[ev] + (t - 0.5) * length[ev] * np.sin(theta[ev])
    xx = x0[ev] + (t - 0.5) * length[ev] * np.cos(theta[ev])
    # energy per step: point hits deposit 2–8 × dE/dx in one pixel
    e_step = np.where(length[ev] > 0, dedx[ev] * length[ev] / nstep[ev],
                      dedx[ev] * rng.uniform(2.0, 8.0, n)[ev])
    iy = np.floor(yy + 0.5).astype(int)
    ix = np.floor(xx + 0.5).astype(int)
    ok = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    flat = iy[ok] * nx + ix[ok]
    uniq, inv = np.unique(flat, return_inverse=True)
    e = np.bincount(inv, weights=e_step[ok])
    return uniq // nx, uniq % nx, e


def digitize(electrons: np.ndarray, geom: CCDGeometry, elec: Electronics,
             structure: np.ndarray, offsets: dict, rng: np.random.Generator) -> np.ndarray:
    """Raw int32 ADU image from a trimmed electron image.

    Parameters
    ----------
    electrons : (ny, nx) float
        Trimmed image in electrons (all signal sources included).
    geom, elec : geometry and electronics of the camera.
    structure : raw-shape float
        Bias structure (ADU) from :func:`bias_structure`.
    offsets : dict amp -> ADU
        Bias level of each amp for this exposure.
    rng : numpy Generator
        Read-noise stream.

    Returns
    -------
    ndarray int32 (raw shape), values in 0..65535.

    Backends: host only (NumPy).
    """
    amp_raw = geom.amp_index_map()
    amp_trim = geom.trimmed_amp_map()
    gain = np.array([elec.gain[a] for a in AMPS])
    rdn_adu = np.array([elec.rdnoise[a] / elec.gain[a] for a in AMPS])
    off = np.array([offsets[a] for a in AMPS])
    raw = geom.to_raw(np.asarray(electrons, dtype=np.float64) / gain[amp_trim])
    raw += structure
    raw += off[amp_raw]
    raw += rng.standard_normal(raw.shape, dtype=np.float32) * rdn_adu[amp_raw].astype(np.float32)
    np.floor(raw + 0.5, out=raw)
    np.clip(raw, 0, ADC_MAX, out=raw)
    return raw.astype(np.int32)
