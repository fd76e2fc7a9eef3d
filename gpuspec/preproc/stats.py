"""Robust (sigma-clipped) level and noise of overscan-like pixel sets.

desispec estimates the overscan level and read noise of a set of pixels with a
median, a normalised median absolute deviation, then ``niter`` rounds of
``nsigma`` clipping about the current level, and finally divides the read noise
by the bias of a clipped standard deviation. Here the same estimator runs on a
whole batch of rows at once (one row = one pixel set), through ``xp``, so the
per-row overscan of an amplifier is a handful of array operations on the device
instead of a Python loop over rows.

Backends: numpy and cupy (arrays stay on their device).
"""

from __future__ import annotations

import math

from ..backend import get_array_module

__all__ = ["clipped_std_bias", "clipped_stats_rows", "clipped_stats", "MAD_TO_SIGMA"]

#: Normalisation of the median absolute deviation to a Gaussian sigma.
MAD_TO_SIGMA = 1.4826


def clipped_std_bias(nsigma: float) -> float:
    """Ratio of the std of a Gaussian clipped at ±nsigma to its true sigma.

    ``sqrt(1 - 2a·exp(-a²/2) / (sqrt(2π)·erf(a/sqrt(2))))`` with ``a = nsigma``.
    Divide a clipped std by this value to correct it. Host scalar (any backend).

    Host only (a Python float, valid for any backend).
    """
    a = float(nsigma)
    return math.sqrt(1.0 - 2.0 * a * math.exp(-a * a / 2.0)
                     / (math.sqrt(2.0 * math.pi) * math.erf(a / math.sqrt(2.0))))


def clipped_stats_rows(pix, nsigma: float = 5.0, niter: int = 3, min_good: int = 5):
    """Clipped mean and corrected std of every row of a 2-D array.

    For each row: level = median, noise = 1.4826·MAD; then ``niter`` times keep
    ``|pix - level| < nsigma·noise`` and set level = mean(kept), noise = std(kept);
    finally noise /= :func:`clipped_std_bias`. A row where an iteration keeps fewer
    than ``min_good`` pixels falls back to the plain median and 1.4826·MAD (not
    bias-corrected), like desispec's ``calc_overscan``.

    Parameters
    ----------
    pix : array (nrow, npix)
        Pixel values, float (numpy or cupy).
    nsigma : float
        Clipping threshold in units of the current noise estimate.
    niter : int
        Number of clipping iterations.
    min_good : int
        Minimum number of kept pixels for an iteration to be accepted.

    Returns
    -------
    level, noise : arrays (nrow,)
        On the same device as ``pix``.

    Backends: numpy and cupy.
    """
    xp = get_array_module(pix)
    pix = xp.asarray(pix, dtype=xp.float64)
    if pix.ndim != 2:
        raise ValueError("clipped_stats_rows expects a 2-D array (rows of pixel sets)")
    med = xp.median(pix, axis=1)
    mad = MAD_TO_SIGMA * xp.median(xp.abs(pix - med[:, None]), axis=1)
    level, noise = med, mad
    failed = xp.zeros(pix.shape[0], dtype=bool)
    for _ in range(niter):
        good = xp.abs(pix - level[:, None]) < nsigma * noise[:, None]
        ngood = xp.sum(good, axis=1)
        failed = failed | (ngood < min_good)
        n = xp.maximum(ngood, 1).astype(xp.float64)
        mean = xp.sum(xp.where(good, pix, 0.0), axis=1) / n
        dev = xp.where(good, pix - mean[:, None], 0.0)
        std = xp.sqrt(xp.sum(dev * dev, axis=1) / n)
        # once a row has failed, keep it on its fallback values
        level = xp.where(failed, med, mean)
        noise = xp.where(failed, mad, std)
    noise = xp.where(failed, mad, noise / clipped_std_bias(nsigma))
    return level, noise


def clipped_stats(pix, nsigma: float = 5.0, niter: int = 3, min_good: int = 5):
    """:func:`clipped_stats_rows` on all pixels of ``pix`` taken as one set.

    Returns
    -------
    level, noise : 0-d arrays on the device of ``pix`` (use ``float()`` to get
        Python numbers; that synchronises a GPU).

    Backends: numpy and cupy.
    """
    xp = get_array_module(pix)
    flat = xp.asarray(pix, dtype=xp.float64).reshape(1, -1)
    level, noise = clipped_stats_rows(flat, nsigma=nsigma, niter=niter, min_good=min_good)
    return level[0], noise[0]
