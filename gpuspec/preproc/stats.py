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

import numpy as np

from ..backend import get_array_module, to_host
from . import sort_cpu

__all__ = ["clipped_std_bias", "clipped_stats_rows", "clipped_stats", "MAD_TO_SIGMA"]

#: Normalisation of the median absolute deviation to a Gaussian sigma.
MAD_TO_SIGMA = 1.4826


def clipped_std_bias(nsigma: float) -> float:
    """Ratio of the std of a Gaussian clipped at ±nsigma to its true sigma.

    ``sqrt(1 - 2a·exp(-a²/2) / (sqrt(2π)·erf(a/sqrt(2))))`` with ``a = nsigma``.
    Divide a clipped std by this value to correct it. Host scalar (any backend).

    Backends: host only (a Python float, valid for any backend).
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


#: probes per step of the device searches: one batched gather per step, so a search
#: over ``n`` values takes ``log(n) / log(PROBES + 1)`` steps (4 for a full amplifier)
PROBES = 64


def _search_strides(n_max: int, probes: int = PROBES) -> list:
    """Host strides of the steps of :func:`_first_true` over offsets ``0 .. n_max``.

    Each step divides the width of the interval that holds the answer by ``probes + 1``
    (rounded up) until it is 1. Host only (depends on sizes, never on values).
    """
    width, out = int(n_max) + 1, []
    while width > 1:
        width = -(-width // (probes + 1))
        out.append(width)
    return out


def _first_true(pred, width, n_max: int, xp, shape=(), probes: int = PROBES):
    """Smallest offset ``e`` in ``[0, width]`` with ``pred(e)`` true, per key, on the device.

    ``pred`` is monotone along the offsets (false, then true) and is taken as true at
    ``width``. It receives an int64 array of offsets of shape ``shape + (probes,)``, all
    in ``[0, max(width - 1, 0)]``, and returns booleans of that shape. A k-ary search:
    each step evaluates ``probes`` equally spaced offsets at once and keeps the interval
    after the last false one; the number of steps depends only on the host bound
    ``n_max >= width``, so nothing is read back (the answer stays a device array of
    ``shape``).

    Backends: numpy and cupy (no synchronisation).
    """
    lo = xp.zeros(shape, dtype=xp.int64)
    width = (lo + width)[..., None]            # a host int stays a kernel argument
    m = xp.arange(1, probes + 1, dtype=xp.int64)
    for st in _search_strides(n_max, probes):
        q = lo[..., None] + m * st - 1
        inside = q < width
        t = pred(xp.minimum(q, xp.maximum(width - 1, 0))) | ~inside
        lo = lo + st * xp.sum(~t, axis=-1)
    return lo


def _kept_slice(s, level, t, xp):
    """Ends ``[lo, hi)`` of the kept values ``|x - level| < t`` of the ascending ``s``.

    The test is the row version's, in float64; ``x - level`` is non-decreasing along
    ``s`` (rounding is monotone), so ``lo`` is the first index with ``x - level > -t``
    and ``hi`` the first with ``x - level >= t``: both found by one two-key
    :func:`_first_true` that evaluates exactly that test on gathered elements.

    Returns a device int64 array ``[lo, hi]``. Backends: numpy and cupy (no sync).
    """
    def pred(q):
        d = xp.take(s, q).astype(xp.float64) - level
        return xp.stack([d[0] > -t, d[1] >= t])

    return _first_true(pred, s.size, s.size, xp, shape=(2,))


def _kth_of_two_sorted(a_at, na, b_at, nb, k0: int, k1: int, n_max: int, xp):
    """The ``k0``-th and ``k1``-th smallest (0-based) of the union of two ascending runs.

    ``a_at(i)`` / ``b_at(i)`` gather elements of each at a device index array (the
    accessors clip indices out of range; those results are never used). For both
    ``k``, the number ``i`` of the ``k + 1`` smallest taken from
    the first sequence is the first with ``a[i] > b[k - i]`` (or its upper end): one
    :func:`_first_true` for all keys at once. ``na``, ``nb`` may be device scalars;
    ``n_max`` is a host bound on ``na + nb``.

    Returns a device float64 array ``[v(k0), v(k1)]``. Backends: numpy and cupy.
    """
    k = xp.arange(2, dtype=xp.int64) * (k1 - k0) + k0      # made on the device
    lo0 = xp.maximum(k + 1 - nb, 0)
    hi0 = xp.minimum(k + 1, na)

    def pred(e):
        i = lo0[:, None] + e
        return a_at(i) > b_at(k[:, None] - i)

    i = lo0 + _first_true(pred, hi0 - lo0, n_max, xp, shape=(2,))
    a_last = xp.where(i > 0, a_at(i - 1), -xp.inf)
    b_last = xp.where(k - i >= 0, b_at(k - i), -xp.inf)
    return xp.maximum(a_last, b_last)


def _abs_dev_median(s, med, xp):
    """Median of ``|x - med|`` over the ascending ``s`` (numpy's rule for an even size).

    The first ``j`` values are below ``med``; ``|x - med|`` is then the union of two
    ascending runs (``med - x[j-1], med - x[j-2], ...`` and ``x[j] - med, ...``), so its
    middle order statistics come from :func:`_kth_of_two_sorted` instead of a partition
    of the whole set. Everything stays on the device (a 0-d float64 array).

    Backends: numpy and cupy (no synchronisation).
    """
    n = int(s.size)
    j = _first_true(lambda q: xp.take(s, q).astype(xp.float64) - med >= 0.0, n, n, xp)

    def at(i):
        return xp.take(s, xp.clip(i, 0, n - 1)).astype(xp.float64)

    v = _kth_of_two_sorted(lambda i: med - at(j - 1 - i), j, lambda i: at(j + i) - med,
                           n - j, (n - 1) // 2, n // 2, n, xp)
    return (v[0] + v[1]) / 2.0


def _sorted_copy(pix, xp):
    """Sorted float copy of all pixels, in a buffer padded to whole blocks.

    The block size is a power of two near ``sqrt(n)`` (at least 64), so the block sums
    of :func:`_block_sums` and the two partial blocks of a slice are both small. Float
    input keeps its dtype (float32 values are exact in float64); others become float64.
    The caller's array is never reordered.

    Returns ``(s, buf, block)``: ``s = buf[:n]`` ascending. Backends: numpy and cupy.
    """
    pix = xp.asarray(pix)
    dtype = pix.dtype if pix.dtype.kind == "f" else xp.float64
    n = int(pix.size)
    if n == 0:
        raise ValueError("clipped_stats of an empty set")
    block = max(64, 1 << math.ceil(math.log2(math.sqrt(n))))
    buf = xp.empty(-(-n // block) * block, dtype=dtype)
    buf[n:] = 0
    s = buf[:n]
    s.reshape(pix.shape)[...] = pix
    if xp is np:
        sort_cpu.sort_inplace(s)          # radix: numpy's AVX-512 sort is slow on Zen 4
    else:
        s.sort()
    return s, buf, block


#: values per chunk of the block sums (a 512 KiB float64 temporary; stays in cache)
CHUNK = 2 ** 16


def _block_sums(buf, block: int, centre, xp):
    """Float64 sums of ``x - c`` and ``(x - c)²`` over every block of ``buf``.

    One pass over the set, in chunks of whole blocks through one reused float64
    buffer (the chunk loop runs over host sizes and never synchronises). The padding of
    the last block enters its sums; that block is never used whole (:func:`_slice_sums`).

    Returns a device (2, nblocks) float64 array. Backends: numpy and cupy.
    """
    blocks = buf.reshape(-1, block)
    nblk = blocks.shape[0]
    out = xp.empty((2, nblk), dtype=xp.float64)
    rows = max(1, CHUNK // block)
    tmp = xp.empty((min(rows, nblk), block), dtype=xp.float64)
    for b0 in range(0, nblk, rows):
        b1 = min(b0 + rows, nblk)
        d = tmp[:b1 - b0]
        xp.subtract(blocks[b0:b1], centre, out=d, dtype=xp.float64)
        out[0, b0:b1] = xp.sum(d, axis=1)
        out[1, b0:b1] = (d[:, None, :] @ d[:, :, None])[:, 0, 0]
    return out


def _slice_sums(buf, bsums, block: int, lo, hi, centre, xp):
    """Σ(x - c) and Σ(x - c)² over ``buf[lo:hi]`` for device scalars ``lo``, ``hi``.

    The whole blocks strictly inside the slice come from ``bsums`` (a masked sum over
    the blocks), the first and last partial blocks from one gather of ``2 × block``
    values: all additions (no cancellation between terms), nothing read back.

    Returns a device (2,) float64 array. Backends: numpy and cupy.
    """
    blo, bhi = lo // block, hi // block
    b = xp.arange(bsums.shape[1], dtype=xp.int64)
    total = xp.sum(xp.where((b > blo) & (b < bhi), bsums, 0.0), axis=1)
    r = xp.arange(block, dtype=xp.int64)
    idx = xp.stack([blo * block + r, bhi * block + r])
    keep = (idx >= lo) & (idx < hi)
    keep[1] &= bhi > blo
    d = xp.where(keep, xp.take(buf, xp.minimum(idx, buf.size - 1)) - centre, 0.0)
    return total + xp.stack([xp.sum(d), xp.sum(d * d)])


def clipped_stats(pix, nsigma: float = 5.0, niter: int = 3, min_good: int = 5):
    """:func:`clipped_stats_rows` on all pixels of ``pix`` taken as one set.

    The set is sorted once (:func:`_sorted_copy`): the median is read from the middle,
    the MAD is a selection from the two sorted runs of ``|pix - median|``
    (:func:`_abs_dev_median`), and each clipping round keeps a contiguous slice of the
    sorted values, whose ends are found by evaluating exactly the row version's kept
    test ``|x - level| < nsigma·noise`` (float64) on gathered elements
    (:func:`_kept_slice`). The mean and the standard deviation come from float64 sums of
    ``x - median`` and its square over the slice (the mean as the median plus the mean
    offset), which add precomputed block sums and two partial blocks
    (:func:`_slice_sums`).
    This costs one sort and about one pass over the set instead of several full-size
    masked passes per round, and gives the estimator of :func:`clipped_stats_rows` (to
    ~1e-15 relative: the order of summation differs). A round keeping fewer than
    ``min_good`` values makes the result the median and the uncorrected MAD.

    Every search has a number of steps fixed by the size, so all of it runs on the
    device and the two results are read back once, at the end: one synchronisation per
    call, whatever the data.

    Returns
    -------
    level, noise : Python floats (host).

    Backends: numpy and cupy.
    """
    xp = get_array_module(pix)
    s, buf, block = _sorted_copy(pix, xp)
    n = int(s.size)
    mid = xp.take(s, xp.arange(2, dtype=xp.int64) * (n // 2 - (n - 1) // 2)
                  + (n - 1) // 2).astype(xp.float64)
    med = (mid[0] + mid[1]) / 2.0
    mad = MAD_TO_SIGMA * _abs_dev_median(s, med, xp)
    bsums = _block_sums(buf, block, med, xp)
    level, noise, failed = med, mad, xp.zeros((), dtype=bool)
    for _ in range(niter):
        lohi = _kept_slice(s, level, nsigma * noise, xp)
        ngood = xp.maximum(lohi[1] - lohi[0], 0)
        failed = failed | (ngood < min_good)
        m = xp.maximum(ngood, 1).astype(xp.float64)
        s1, s2 = _slice_sums(buf, bsums, block, lohi[0], lohi[1], med, xp)
        delta = s1 / m                          # mean - median
        mean = med + delta
        var = s2 / m - delta * delta
        # once the set has failed, stay on the fallback values (as the row version)
        level = xp.where(failed, med, mean)
        noise = xp.where(failed, mad, xp.sqrt(xp.maximum(var, 0.0)))
    noise = xp.where(failed, mad, noise / clipped_std_bias(nsigma))
    out = to_host(xp.stack([level, noise]))
    return float(out[0]), float(out[1])
