"""Per-amplifier overscan level and read noise (desispec behaviour), through ``xp``.

For one amplifier, from the (bias-subtracted) raw image:

- the clipped level and noise of every overscan row (BIASSEC row by row), in one
  batched call of :func:`.stats.clipped_stats_rows`;
- rows next to a large charge deposit in the active area are replaced by an
  interpolation of the good rows (desispec's ``find_overscan_cosmic_trails``);
- OSTEP = max - min of the row-to-row difference of the median-filtered row
  levels, ignoring ``edge_margin`` rows at each end;
- the level subtracted is either one clipped mean over the whole BIASSEC
  (``AVERAGE``) or the per-row levels (``PER_ROW``), see :func:`amp_overscan`.

Backends: numpy and cupy. Only a few scalars per amplifier reach the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import get_array_module, scipy_module
from .stats import clipped_stats, clipped_stats_rows

__all__ = ["OverscanResult", "overscan_step", "overscan_right_of_data", "cosmic_trail_rows",
           "amp_overscan",
           "OSTEP_PER_ROW", "OSTEP_BADREADNOISE"]

#: OSTEP (ADU) from which the per-row overscan is used (when allowed).
OSTEP_PER_ROW = 2.0
#: OSTEP (ADU) above which a per-row amplifier is flagged BADREADNOISE.
OSTEP_BADREADNOISE = 5.0


@dataclass
class OverscanResult:
    """Overscan of one amplifier.

    Attributes
    ----------
    level : array (nrows,)
        Overscan level subtracted from each data row (ADU).
    rdnoise : float
        Read noise of the amplifier in ADU (before gain, before bias-noise terms).
    ostep : float
        OSTEP score (ADU).
    method : str
        ``"AVERAGE"`` or ``"PER_ROW"``.
    badrows : int
        Number of overscan rows replaced because of a charge trail.
    """

    level: Any
    rdnoise: float
    ostep: float
    method: str
    badrows: int = 0


def overscan_step(row_levels, median_size: int = 7, edge_margin: int = 50) -> float:
    """OSTEP: range of the row-to-row difference of the median-filtered row levels.

    Returns 0.0 when the amplifier has no more than ``2·edge_margin + 1`` rows.

    Backends: numpy and cupy (returns a host float).
    """
    xp = get_array_module(row_levels)
    ndi = scipy_module(xp, "ndimage")
    med = ndi.median_filter(row_levels, size=median_size)
    diff = xp.zeros_like(med)
    diff[:-1] = med[1:] - med[:-1]
    diff = diff[edge_margin:len(diff) - edge_margin]
    if diff.size == 0:
        return 0.0
    return float(xp.max(diff) - xp.min(diff))


def overscan_right_of_data(data_sec, ov_sec) -> bool:
    """Whether an amp's overscan columns lie to the right of its active columns.

    The rule of desispec (``reading_to_the_left``): the overscan always comes after the
    active pixels in readout order, so the amp reads towards lower column indices
    (its overscan on the right) when DATASEC ends at or before BIASSEC starts.
    ``data_sec`` and ``ov_sec`` are ``(yslice, xslice)``.

    Backends: host only.
    """
    return data_sec[1].stop <= ov_sec[1].start


def cosmic_trail_rows(raw, ov_sec, data_sec, row_levels, col_width: int = 300,
                      threshold: float = 25000.0, smooth: int = 100):
    """Overscan rows that may hold the charge trail of a large deposit in the active area.

    A band of ``col_width`` columns of the active area next to the overscan (on the
    side given by :func:`overscan_right_of_data`) is scanned row by row (maximum over
    the band, minus its running median over ``smooth`` rows). A row is bad when that
    exceeds ``threshold`` ADU and its overscan level departs by more than 2 ADU from
    the running median (20 rows) of the row levels. Bad rows are widened by 2 rows on
    each side.

    Parameters
    ----------
    raw : float array
        Raw image (ADU).
    ov_sec, data_sec : (slice, slice)
        BIASSEC and DATASEC of the amplifier.
    row_levels : array (nrows,)
        Clipped overscan level of every BIASSEC row.

    Returns
    -------
    bool array (nrows,) on the device of ``raw``.

    Backends: numpy and cupy.
    """
    ys, xs = ov_sec
    nx = raw.shape[1]
    if overscan_right_of_data(data_sec, ov_sec):
        cols = slice(max(xs.start - col_width, 0), xs.start)
    else:
        cols = slice(xs.stop, min(xs.stop + col_width, nx))
    band = raw[ys, cols]
    xp = get_array_module(band)
    ndi = scipy_module(xp, "ndimage")
    if band.shape[1] == 0:
        return xp.zeros(row_levels.shape, dtype=bool)
    val = xp.max(band, axis=1).astype(xp.float64)
    val = val - ndi.median_filter(val, size=smooth)
    bad = val > threshold
    bad &= xp.abs(row_levels - ndi.median_filter(row_levels, size=20)) > 2.0
    for _ in range(2):
        grown = bad.copy()
        grown[1:] |= bad[:-1]
        bad = grown
        grown = bad.copy()
        grown[:-1] |= bad[1:]
        bad = grown
    return bad


def amp_overscan(raw, ov_sec, data_sec, per_row_allowed: bool, nsigma: float = 5.0,
                 niter: int = 3) -> OverscanResult:
    """Overscan level (per data row) and read noise of one amplifier.

    Parameters
    ----------
    raw : float array, or anything whose ``[section]`` is one
        Raw image (bias already subtracted when a bias is used), ADU.
    ov_sec, data_sec : (slice, slice)
        BIASSEC and DATASEC of the amplifier (DATASEC tells on which side of the
        overscan the charge-trail search looks, see :func:`cosmic_trail_rows`).
    per_row_allowed : bool
        Whether the per-row level may be used. When True and OSTEP ≥ 2 ADU the
        method is ``PER_ROW`` (the read noise then comes from the row-subtracted
        overscan); otherwise ``AVERAGE``.
    nsigma, niter : clipping parameters.

    Backends: numpy and cupy (the level stays on the device; scalars on the host).
    """
    block = raw[ov_sec]
    xp = get_array_module(block)
    nrows = block.shape[0]
    levels, _ = clipped_stats_rows(block, nsigma=nsigma, niter=niter)
    bad = cosmic_trail_rows(raw, ov_sec, data_sec, levels)
    nbad = int(xp.sum(bad))
    if nbad:
        good = ~bad
        if bool(good.any()):
            rr = xp.arange(nrows, dtype=xp.float64)
            interp = xp.interp(rr, rr[good], levels[good])
            levels = xp.where(bad, interp, levels)
    ostep = overscan_step(levels)
    if per_row_allowed and ostep >= OSTEP_PER_ROW:
        _, rd = clipped_stats(block - levels[:, None], nsigma=nsigma, niter=niter)
        return OverscanResult(levels, float(rd), ostep, "PER_ROW", nbad)
    level, rd = clipped_stats(block, nsigma=nsigma, niter=niter)
    return OverscanResult(xp.zeros(nrows, dtype=xp.float64) + level, float(rd), ostep,
                          "AVERAGE", nbad)
