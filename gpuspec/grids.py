"""Wavelength grids: DESI's production extraction grids and the one linear-grid rule.

Every linear wavelength grid of gpuspec is built here:

* :data:`DESI_WAVE` — the extraction grids of DESI production per arm (``desi_proc``'s
  defaults): b 3600–5800 Å, r 5760–7620 Å, z 7520–9824 Å, all in steps of
  :data:`WAVE_STEP` = 0.8 Å, so that neighbouring arms share the wavelengths of their
  overlap (5760–5800 Å and 7520–7620 Å).
* :func:`linear_grid` — ``(wmin, wmax, dw)`` to a grid, desispec's rule
  ``np.arange(wmin, wmax + dw/2, dw)``: the grid starts at ``wmin`` and ends at the last
  ``wmin + k·dw`` not beyond ``wmax + dw/2`` (``wmax`` is included when it lies on the
  lattice, the usual case).
* :func:`lattice_grid` — the points of the lattice ``anchor + k·dw`` inside a range (a
  PSF's wavelength domain, say), then :func:`linear_grid` between the first and the last.
* :func:`desi_grid` — :func:`linear_grid` of one arm of :data:`DESI_WAVE`.

Host only (NumPy): grids are small and built once.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["WAVE_STEP", "DESI_WAVE", "desi_wavelength", "desi_grid", "linear_grid",
           "lattice_grid"]

#: Wavelength step of DESI's extraction and coadd grids (Å).
WAVE_STEP = 0.8

#: DESI production extraction grids per arm: (wmin, wmax) in Å, step :data:`WAVE_STEP`.
DESI_WAVE = {"b": (3600.0, 5800.0), "r": (5760.0, 7620.0), "z": (7520.0, 9824.0)}


def desi_wavelength(arm: str) -> tuple[float, float, float]:
    """``(wmin, wmax, dw)`` of DESI's production grid of ``arm`` (``"b"``, ``"r"``, ``"z"``;
    a camera name such as ``"r3"`` is accepted).

    Backends: host only (NumPy).
    """
    wmin, wmax = DESI_WAVE[str(arm)[0]]
    return (wmin, wmax, WAVE_STEP)


def linear_grid(wmin: float, wmax: float, dw: float, *, decimals: int | None = None) -> np.ndarray:
    """The linear grid ``wmin, wmin + dw, …`` up to ``wmax`` (desispec's rule).

    Parameters
    ----------
    wmin, wmax, dw : float
        First wavelength, last wavelength and step (Å); ``dw > 0``.
    decimals : int, optional
        Round the values to this many decimals, so that grids built from different
        starting points of one lattice (the b, r and z arms) hold identical values where
        they overlap.

    Returns
    -------
    float64 array
        ``np.arange(wmin, wmax + dw/2, dw)``: ``wmax`` is included when it is within
        ``dw/2`` of a grid point.

    Backends: host only (NumPy).
    """
    if not dw > 0:
        raise ValueError(f"wavelength step must be > 0, got {dw!r}")
    w = np.arange(float(wmin), float(wmax) + float(dw) / 2.0, float(dw))
    return w if decimals is None else np.round(w, decimals)


def lattice_grid(lo: float, hi: float, dw: float, anchor: float = 0.0, *,
                 decimals: int | None = None) -> np.ndarray:
    """The points ``anchor + k·dw`` inside ``[lo, hi]`` (1e-9 step of slack at each end),
    built with :func:`linear_grid` from the first to the last of them.

    Backends: host only (NumPy).
    """
    k0 = math.ceil((float(lo) - anchor) / dw - 1e-9)
    k1 = math.floor((float(hi) - anchor) / dw + 1e-9)
    if k1 < k0:
        return np.zeros(0)
    return linear_grid(anchor + k0 * dw, anchor + k1 * dw, dw, decimals=decimals)


def desi_grid(arm: str) -> np.ndarray:
    """DESI's production extraction grid of ``arm`` (:func:`linear_grid` of
    :func:`desi_wavelength`).

    Backends: host only (NumPy).
    """
    return linear_grid(*desi_wavelength(arm))
