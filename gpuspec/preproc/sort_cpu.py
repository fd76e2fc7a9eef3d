"""CPU (Numba) twin of the float sort of :func:`gpuspec.preproc.stats.clipped_stats`.

``clipped_stats`` sorts each pixel set once (the whole CCD's pixels, per amplifier
and per calibration image: ~20 sorts of up to 4M values per camera). numpy sorts with
x86-simd-sort, whose AVX-512 version is slow on AMD Zen 4: measured 2026-12-03 on an
AMD EPYC VM (Zen 4, numpy 2.4.6), 4M float32 values in 0.17–0.19 s, against 0.037 s
with numpy's AVX-512 dispatch disabled (``NPY_DISABLE_CPU_FEATURES``; the AVX2 sort);
the sorts were 1.7 s of the camera's 2.9 s of preproc there. This twin sorts by
least-significant-digit radix on the floats' order-preserving integer keys (3 passes of
11 bits for float32, 6 for float64, one counting pass for all), which does not depend on
the CPU's vector extensions. The result is numpy's: the values in ascending order; NaNs
last (as a canonical quiet NaN); −0.0 before +0.0 (numpy leaves equal values in any
order).

Used for host arrays of float32/float64 when numba is importable
(``GPUSPEC_PREPROC_NUMBA=0`` turns it off); CuPy sorts on the device.
``tests/test_preproc_sort.py`` compares it with ``np.sort``.
"""

from __future__ import annotations


import numpy as np

from ..backend import numba_twins_enabled

__all__ = ["available", "sort_inplace", "MIN_SIZE"]

#: smaller sets go to ``ndarray.sort`` (the radix passes' fixed cost: 3–6 × 2048 buckets)
MIN_SIZE = 1 << 14

_compiled = None
_FLAGS = dict(cache=True, nogil=True)


def available() -> bool:
    """True when numba imports and ``GPUSPEC_PREPROC_NUMBA`` is not 0/false.

    Backends: host.
    """
    return numba_twins_enabled("GPUSPEC_PREPROC_NUMBA")


def _radix(keys, tmp, npass):
    """LSD radix sort of unsigned ``keys`` by 11-bit digits; returns the sorted buffer
    (``keys`` or ``tmp``). A pass whose digit is the same for every key is skipped."""
    n = keys.size
    nb = 1 << 11
    mask = keys.dtype.type(nb - 1)
    hist = np.zeros((npass, nb), np.int64)
    for i in range(n):
        k = keys[i]
        for p in range(npass):
            hist[p, (k >> keys.dtype.type(11 * p)) & mask] += 1
    off = np.empty(nb, np.int64)
    src, dst = keys, tmp
    for p in range(npass):
        sh = keys.dtype.type(11 * p)
        s = 0
        single = False
        for b in range(nb):
            c = hist[p, b]
            off[b] = s
            s += c
            if c == n:
                single = True
        if single:
            continue
        for i in range(n):
            k = src[i]
            b = (k >> sh) & mask
            dst[off[b]] = k
            off[b] += 1
        src, dst = dst, src
    return src


def _sort_keys(u, top, absmask, inf, nan, npass):
    """Sort the float bits ``u`` (unsigned view) in place: order-preserving keys (sign
    flipped; NaN the largest key), radix sort, back to floats (NaN as ``nan``)."""
    allset = ~u.dtype.type(0)
    for i in range(u.size):
        x = u[i]
        if (x & absmask) > inf:
            u[i] = allset                               # NaN: after +inf
        elif x & top:
            u[i] = ~x
        else:
            u[i] = x | top
    r = _radix(u, np.empty_like(u), npass)
    for i in range(u.size):
        k = r[i]
        if k == allset:
            u[i] = nan
        elif k & top:
            u[i] = k ^ top
        else:
            u[i] = ~k


#: per float dtype: unsigned view, sign bit, |x| mask, +inf bits, canonical NaN, passes
_LAYOUT = {np.dtype(np.float32): (np.uint32, 0x80000000, 0x7FFFFFFF, 0x7F800000,
                                  0x7FC00000, 3),
           np.dtype(np.float64): (np.uint64, 0x8000000000000000, 0x7FFFFFFFFFFFFFFF,
                                  0x7FF0000000000000, 0x7FF8000000000000, 6)}


def _get():
    global _compiled
    if _compiled is None:
        from numba import njit

        g = globals()
        for name in ("_radix", "_sort_keys"):
            g[name] = njit(**_FLAGS)(g[name])
        _compiled = g["_sort_keys"]
    return _compiled


def sort_inplace(a) -> None:
    """Sort the 1-D host array ``a`` in place (as ``a.sort()``).

    float32/float64 arrays of at least :data:`MIN_SIZE` contiguous values take the radix
    kernel when :func:`available`; anything else ``ndarray.sort``.

    Backends: numpy (Numba).
    """
    if (a.ndim == 1 and a.size >= MIN_SIZE and a.flags.c_contiguous
            and a.dtype in (np.float32, np.float64) and available()):
        ut, *bits, npass = _LAYOUT[a.dtype]
        _get()(a.view(ut), *(ut(b) for b in bits), npass)
    else:
        a.sort()
