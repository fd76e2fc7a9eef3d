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


def _kth_of_two_sorted(a_at, na: int, b_at, nb: int, k: int, read4=None) -> float:
    """The ``k``-th smallest (0-based) value of the union of two ascending sequences.

    ``a_at(i)`` / ``b_at(i)`` return element ``i`` of each (a host float). Binary search
    on how many of the ``k + 1`` smallest come from the first sequence: about
    ``log2(n)`` steps of four element reads. ``read4(i, j)``, when given, returns
    ``(a[i-1], a[i], b[j-1], b[j])`` at once (one device read per step); out-of-range
    entries are ignored. Host only (the callers read device elements).
    """
    lo, hi = max(0, k + 1 - nb), min(k + 1, na)
    inf = float("inf")
    while True:
        i = (lo + hi) // 2          # elements taken from a
        j = k + 1 - i               # elements taken from b
        if read4 is not None:
            a_last, a_next, b_last, b_next = read4(i, j)
        else:
            a_last = a_at(i - 1) if i > 0 else None
            a_next = a_at(i) if i < na else None
            b_last = b_at(j - 1) if j > 0 else None
            b_next = b_at(j) if j < nb else None
        a_last = a_last if i > 0 else -inf
        b_last = b_last if j > 0 else -inf
        a_next = a_next if i < na else inf
        b_next = b_next if j < nb else inf
        if a_last > b_next:
            hi = i - 1
        elif b_last > a_next:
            lo = i + 1
        else:
            return max(a_last, b_last)


def _sorted_median(vals_at, n: int) -> float:
    """Median of an ascending sequence of ``n`` values (numpy's rule for even ``n``).

    ``vals_at(list_of_indices)`` returns those values as host floats.
    """
    if n % 2:
        return vals_at([n // 2])[0]
    a, b = vals_at([n // 2 - 1, n // 2])
    return (a + b) / 2.0


def _abs_dev_median(vals_at, med: float, j: int, n: int) -> float:
    """Median of ``|x - med|`` over an ascending set of ``n`` values read by ``vals_at``.

    The first ``j`` values are below ``med``; ``|x - med|`` is then the union of two
    ascending runs (``med - x[j-1], med - x[j-2], ...`` and ``x[j] - med, ...``), so
    its order statistics come from a two-sequence selection (one read of four values per
    step) instead of a partition of the whole set.
    """
    na, nb = j, n - j

    def read4(i, k):
        idx = [min(max(j - i, 0), n - 1), min(max(j - 1 - i, 0), n - 1),
               min(max(j + k - 1, 0), n - 1), min(max(j + k, 0), n - 1)]
        v = vals_at(idx)
        return -(v[0] - med), -(v[1] - med), v[2] - med, v[3] - med

    def kth(k):
        return _kth_of_two_sorted(None, na, None, nb, k, read4=read4)

    if n % 2:
        return kth(n // 2)
    return (kth(n // 2 - 1) + kth(n // 2)) / 2.0


def _value_threshold(pred, guess: float, dtype, max_steps: int = 64):
    """Smallest value ``u`` of ``dtype`` with ``pred(float(u))`` true, searched from ``guess``.

    ``pred`` is monotone (false below a threshold, true above). The threshold of the
    kept test lies within a few units in the last place of ``guess``, so this walks a
    few representable values up or down (host arithmetic, exact: IEEE doubles). Returns
    None when ``max_steps`` are not enough (the caller then searches by index).
    """
    ft = np.dtype(dtype).type
    u = ft(guess)
    if not np.isfinite(u):
        return u
    down, up = ft(-np.inf), ft(np.inf)
    if pred(float(u)):
        for _ in range(max_steps):
            v = np.nextafter(u, down)
            if not pred(float(v)):
                return u
            u = v
        return None
    for _ in range(max_steps):
        u = np.nextafter(u, up)
        if pred(float(u)):
            return u
    return None


def _first_index(pred, lo: int, hi: int) -> int:
    """Smallest ``i`` in ``[lo, hi]`` with ``pred(i)`` true, for ``pred`` false then true
    along ``lo .. hi - 1`` (``hi`` when never true). Host-side binary search."""
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _sorted_boundary(s, pred, guess: float, xp) -> int:
    """First index of the ascending ``s`` whose value satisfies the monotone ``pred``.

    The threshold value is found on the host (:func:`_value_threshold`) and located with
    one ``searchsorted`` in the array's own dtype: one device read. Falls back to a
    binary search over indices (one read per step) when the walk fails.
    """
    u = _value_threshold(pred, guess, s.dtype)
    if u is None:
        return _first_index(lambda i: pred(float(s[i])), 0, int(s.size))
    key = xp.asarray(np.asarray([u], dtype=s.dtype))
    return int(xp.searchsorted(s, key, side="left")[0])


class _SliceMoments:
    """Σ(x - c) and Σ(x - c)² over a slice ``[lo, hi)`` of a sorted set, kept up to date.

    Moving the slice adds or removes only the values at its ends, so the clipping
    rounds after the first cost in proportion to the values that change, not to the
    set. Sums are float64 (pairwise sums and BLAS dots over the slices).
    """

    def __init__(self, s, centre: float, xp):
        self.s, self.c, self.xp = s, centre, xp
        self.lo = self.hi = 0
        self.s1 = self.s2 = 0.0
        self._buf = None

    #: values per chunk of the sums (a 2 MB float64 buffer, reused; stays in cache)
    CHUNK = 2 ** 18

    def _sums(self, a: int, b: int):
        xp = self.xp
        if self._buf is None:
            self._buf = xp.empty(min(self.CHUNK, self.s.size), dtype=xp.float64)
        t1 = t2 = 0.0
        for c0 in range(a, b, self.CHUNK):
            c1 = min(c0 + self.CHUNK, b)
            d = self._buf[:c1 - c0]
            xp.subtract(self.s[c0:c1], self.c, out=d, dtype=xp.float64)
            t1 += float(xp.sum(d))
            t2 += float(xp.dot(d, d))
        return t1, t2

    def _add(self, a: int, b: int, sign: float):
        if b > a:
            t1, t2 = self._sums(a, b)
            self.s1 += sign * t1
            self.s2 += sign * t2

    def move(self, lo: int, hi: int):
        """Make the slice ``[lo, hi)``; returns ``(Σ(x - c), Σ(x - c)²)``."""
        if self.hi <= lo or hi <= self.lo or (hi - lo) < (self.hi - self.lo) // 2:
            self.s1 = self.s2 = 0.0                      # disjoint or much smaller: anew
            self._add(lo, hi, 1.0)
        else:
            self._add(lo, self.lo, 1.0)                 # grow on the left
            self._add(self.lo, lo, -1.0)                # shrink on the left
            self._add(self.hi, hi, 1.0)                 # grow on the right
            self._add(hi, self.hi, -1.0)                # shrink on the right
        self.lo, self.hi = lo, hi
        return self.s1, self.s2


def clipped_stats(pix, nsigma: float = 5.0, niter: int = 3, min_good: int = 5):
    """:func:`clipped_stats_rows` on all pixels of ``pix`` taken as one set.

    The set is sorted once (in its own float dtype; float32 calibrations are sorted as
    float32, their values are exact in float64): the median is read from the middle,
    the MAD is a selection from the two sorted runs of ``|pix - median|``, and each
    clipping round keeps a contiguous slice of the sorted values. The kept test is the
    row version's, ``|x - level| < nsigma·noise`` in float64; ``x - level`` is
    non-decreasing along the sorted values (rounding is monotone), so the two ends of
    the slice are found by binary searches that evaluate exactly that test on single
    elements. The mean is the float64 sum of the slice over its size; the standard
    deviation comes from float64 sums of ``x - median`` and its square, updated by the
    values entering or leaving the slice (:class:`_SliceMoments`). This costs one sort and about one pass over the set
    instead of several full-size masked passes per round, and gives the estimator of
    :func:`clipped_stats_rows` (to ~1e-15 relative: the order of summation differs).

    Returns
    -------
    level, noise : Python floats (host; on a GPU each round reads a few dozen scalars,
        so this is a per-amplifier operation, never one for a per-patch loop).

    Backends: numpy and cupy.
    """
    xp = get_array_module(pix)
    pix = xp.asarray(pix)
    dtype = pix.dtype if pix.dtype.kind == "f" else xp.float64
    # one C-ordered copy (the caller's array is never reordered)
    s = xp.array(pix, dtype=dtype, copy=True, order="C").reshape(-1)
    n = int(s.size)
    if n == 0:
        raise ValueError("clipped_stats of an empty set")
    s.sort()

    def vals_at(idx):
        return [float(v) for v in to_host(s[xp.asarray(np.asarray(idx, dtype=np.int64))])]

    med = _sorted_median(vals_at, n)
    j = _sorted_boundary(s, lambda u: u - med >= 0.0, med, xp)
    mad = MAD_TO_SIGMA * _abs_dev_median(vals_at, med, j, n)
    level, noise = med, mad
    mom = _SliceMoments(s, med, xp)
    for _ in range(niter):
        t = nsigma * noise
        lev = level
        lo = _sorted_boundary(s, lambda u: u - lev > -t, lev - t, xp)
        hi = _sorted_boundary(s, lambda u: u - lev >= t, lev + t, xp)
        ngood = max(hi - lo, 0)
        if ngood < min_good:
            return med, mad
        s1, s2 = mom.move(lo, hi)
        # the mean as a plain sum of the kept values (exact for integer ADU, like numpy's
        # mean); the variance about it from the moments about the median
        level = float(xp.sum(s[lo:hi], dtype=xp.float64)) / ngood
        delta = level - med
        var = (s2 - 2.0 * delta * s1) / ngood + delta * delta
        noise = math.sqrt(max(var, 0.0))
    return level, noise / clipped_std_bias(nsigma)
