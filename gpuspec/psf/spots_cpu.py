"""CPU (Numba) twin of :meth:`gpuspec.psf.gausshermite.GaussHermitePSF.spots`.

The array form evaluates a block of spots as a chain of batched NumPy operations:
pixel edges, erf and exp, Hermite recursions, stacks and two batched products of
7 × 7 by 7 × 17 matrices, each a temporary of the whole block. On a GPU that is one
launch per operation over every spot of a bundle; on a CPU it is memory traffic and
tiny per-matrix product calls. This twin takes the same per-spot terms
(:meth:`~gpuspec.psf.gausshermite.GaussHermitePSF.spot_terms`, the one home of the
PSF's parameters) and integrates each spot in one pass of a Numba kernel
(:mod:`gpuspec.psf.spots_numba`), straight into the output array.

The CPU extraction uses it with its other Numba twins (``GPUSPEC_EXTRACT_NUMBA=0`` or
``gpuspec.extract.core.USE_NUMBA = False`` select the array form);
``tests/test_psf.py::test_numba_spots_match_array_form`` checks it against the array
form, with and without a PSF tail.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spots", "warm", "BLOCK"]

#: Wavelengths per call of the kernel: bounds the per-spot terms (GH coefficients,
#: 49 values per spot) to a few MB per bundle.
BLOCK = 256


def spots(psf, fibers, wave, clip=True):
    """Corners and stamps of fibers × wavelengths, as ``psf.spots(fibers, wave, np)``.

    Parameters
    ----------
    psf : gpuspec.psf.GaussHermitePSF
    fibers : int array (nfib,)
        Fiber indices (0-based within the PSF).
    wave : array (nwave,)
        Wavelengths in Å, shared by all fibers.
    clip : bool
        Clip at 0 and renormalise to sum 1.

    Returns
    -------
    xc, yc : int64 (nfib, nwave)
    stamps : float64 (nfib, nwave, 2*HSIZEY+1, 2*HSIZEX+1)

    Backends: host only (Numba).
    """
    from .spots_numba import kernel

    f = np.atleast_1d(np.asarray(fibers))
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"spots_cpu.spots: wave must be 1-D, got shape {w.shape}")
    nf, nw = f.size, w.size
    ny, nx = 2 * psf.hsizey + 1, 2 * psf.hsizex + 1
    xc = np.empty((nf, nw), dtype=np.int64)
    yc = np.empty((nf, nw), dtype=np.int64)
    stamps = np.empty((nf, nw, ny, nx))
    no_tail = np.zeros((0, 0, 5))
    for i in range(0, nw, BLOCK):
        t = psf.spot_terms(f, w[i:i + BLOCK], np)
        s = slice(i, i + BLOCK)
        args = [np.ascontiguousarray(t[k]) for k in ("X", "Y", "sigx", "sigy", "xc", "yc",
                                                      "coef")]
        tail = no_tail if t["tail"] is None else np.ascontiguousarray(t["tail"])
        kernel(*args, tail, bool(clip), stamps, i)
        xc[:, s] = t["xc"]
        yc[:, s] = t["yc"]
    return xc, yc, stamps


def warm() -> None:
    """Compile the kernel (or load it from Numba's cache) in this process, on no spots,
    before forked workers would each load it.

    Backends: host only.
    """
    from .spots_numba import kernel

    z = np.zeros((0, 0))
    kernel(z, z, z, z, z, z, np.zeros((0, 0, 7, 7)), np.zeros((0, 0, 5)), True,
           np.zeros((0, 0, 11, 17)), 0)
