"""CPU (Numba) twin of the banded ``Cinv``/``Cinvf`` accumulation (:mod:`gpuspec.coadd.cinv`).

The array path forms the RR windows of a chunk of rows and scatter-adds them
(``bincount`` on numpy: one pass over an ``ngroup·nout`` array per diagonal and chunk).
This kernel walks the rows and input pixels once, builds each pixel's RR window in a
small buffer and adds its outer product straight into the band; pixels with ivar 0
are skipped (their terms are exactly 0).

Used for the numpy backend when numba is importable (``GPUSPEC_COADD_NUMBA=0`` turns it
off). ``tests/test_coadd_decorrelate.py`` checks it against the array path.
"""

from __future__ import annotations

import numpy as np

from .sqrtm_band_cpu import available

__all__ = ["available", "accumulate_band"]

_compiled = None
_FLAGS = dict(cache=True, nogil=True, error_model="numpy",
              fastmath={"contract", "reassoc", "nsz", "arcp"})


def _accumulate(flux, ivar, rdata, group, s0, kc, ch, ah, cl, al, j0, a0s, a1s, L, upper,
                cinvf):
    """Rows × input pixels: each pixel's RR window, its outer product into ``upper``."""
    nout = upper.shape[1]
    ndiag, m = kc.shape
    rr = np.empty(L)
    for r in range(flux.shape[0]):
        g = group[r]
        if g < 0:
            continue
        for i in range(m):
            iv = ivar[r, s0 + i]
            if iv == 0.0:
                continue
            for a in range(L):
                rr[a] = 0.0
            for d in range(ndiag):
                val = rdata[r, d, s0 + kc[d, i]]
                rr[ch[d, i]] += val * ah[d, i]
                rr[cl[d, i]] += val * al[d, i]
            w = iv * flux[r, s0 + i]
            jb = j0[i]
            a0 = a0s[i]
            a1 = min(a1s[i] + 1, nout - jb)           # window columns a0 .. a1-1
            for a in range(a0, a1):
                j = jb + a
                cinvf[g, j] += rr[a] * w
                ra = iv * rr[a]
                urow = upper[g, j]
                for dl in range(a1 - a):
                    urow[dl] += ra * rr[a + dl]


def _get_kernel():
    """The compiled :func:`_accumulate` (a module-level function, so numba's on-disk
    cache serves every new process)."""
    global _compiled
    if _compiled is None:
        from numba import njit

        _compiled = njit(**_FLAGS)(_accumulate)
    return _compiled


def accumulate_band(flux, ivar, rdata, group, terms, upper, cinvf):
    """Add one band's ``Cinv`` into the row-major upper band ``upper`` (``(ngroup, nout, L)``,
    ``upper[t, i, k] = Cinv_t[i, i+k]``, L at least the band's window) and ``Cinvf`` into
    ``cinvf`` (``(ngroup, nout)``), in place (host float64 arrays).

    Backends: numpy (Numba).
    """
    _get_kernel()(np.ascontiguousarray(flux, dtype=np.float64),
                  np.ascontiguousarray(ivar, dtype=np.float64),
                  np.ascontiguousarray(rdata, dtype=np.float64),
                  np.ascontiguousarray(group, dtype=np.int64), int(terms["sel"].start),
                  np.ascontiguousarray(terms["kc"], dtype=np.int64),
                  np.ascontiguousarray(terms["ch"], dtype=np.int64),
                  np.ascontiguousarray(terms["ah"], dtype=np.float64),
                  np.ascontiguousarray(terms["cl"], dtype=np.int64),
                  np.ascontiguousarray(terms["al"], dtype=np.float64),
                  np.ascontiguousarray(terms["j0"], dtype=np.int64),
                  np.ascontiguousarray(terms["a0"], dtype=np.int64),
                  np.ascontiguousarray(terms["a1"], dtype=np.int64), int(terms["L"]),
                  upper, cinvf)
