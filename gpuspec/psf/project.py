"""Project photons through the PSF onto the CCD (noiseless image).

Each (fiber, wavelength bin) carries ``phot`` photo-electrons that land on the
CCD with the normalised, pixel-integrated spot of the PSF at that wavelength
(``psf.spots``), exactly the model that extraction inverts. Spots are evaluated
in chunks of fibers × wavelengths to bound memory; each chunk is scattered into
its bounding box with one ``bincount`` over flattened pixel indices. Parts of
spots outside the image are dropped (edge losses).

Backends: numpy and cupy (one code path through ``xp``).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..profiling import nvtx_range

__all__ = ["render_spectra", "spot_fraction_inside"]


@nvtx_range("psf_project")
def render_spectra(psf, fibers, wave, phot, shape, xp=np, fiber_chunk: int | None = None,
                   wave_chunk: int | None = None):
    """Noiseless image(s) of spectra projected through ``psf``.

    Parameters
    ----------
    psf : GaussHermitePSF
    fibers : int array (nfib,)
        PSF fiber indices (0–499 within the petal).
    wave : array (nwave,)
        Wavelengths (Å) of the photon bins (shared by all fibers).
    phot : array (nfib, nwave) or (ncomp, nfib, nwave)
        Photo-electrons per bin (≥ 0). With a leading component axis, one image
        per component is rendered from the same spots (e.g. object and sky).
    shape : (ny, nx)
        Image shape; image pixel (y, x) is CCD pixel (y, x) (crop anchored at 0, 0).
    xp : module
        numpy or cupy.
    fiber_chunk, wave_chunk : int, optional
        Chunk sizes (spots per chunk = their product). Defaults: 10 × 1024 on
        numpy (cache-friendly), 25 × 8192 on cupy (fewer, larger kernels).

    Returns
    -------
    array (ny, nx) or (ncomp, ny, nx)
        float64 electrons on ``xp``.

    Backends: numpy and cupy (arrays on ``xp``).
    """
    ny, nx = int(shape[0]), int(shape[1])
    on_gpu = xp is not np
    fiber_chunk = int(fiber_chunk or (25 if on_gpu else 10))
    wave_chunk = int(wave_chunk or (8192 if on_gpu else 1024))
    fibers = np.asarray(backend.to_host(fibers)).astype(int)
    wave_h = np.asarray(backend.to_host(wave), dtype=np.float64)
    phot_d = backend.to_device(phot, xp, dtype=np.float64)
    single = phot_d.ndim == 2
    if single:
        phot_d = phot_d[None]
    if phot_d.ndim != 3 or phot_d.shape[1:] != (len(fibers), len(wave_h)):
        raise ValueError(f"phot has shape {tuple(phot.shape)}, expected ([ncomp,] "
                         f"{len(fibers)}, {len(wave_h)})")
    ncomp = phot_d.shape[0]
    img = xp.zeros((ncomp, ny, nx), dtype=xp.float64)
    sy, sx = 2 * psf.hsizey + 1, 2 * psf.hsizex + 1
    ay = xp.arange(sy)[:, None]
    ax = xp.arange(sx)[None, :]
    for f0 in range(0, len(fibers), fiber_chunk):
        fsel = fibers[f0:f0 + fiber_chunk]
        for w0 in range(0, len(wave_h), wave_chunk):
            xc, yc, st = psf.spots(fsel, wave_h[w0:w0 + wave_chunk], xp=xp)
            # bounding box of the chunk, clipped to the image (one host sync per chunk)
            x0, x1 = int(xc.min()), int(xc.max()) + sx
            y0, y1 = int(yc.min()), int(yc.max()) + sy
            bx0, bx1 = max(x0, 0), min(x1, nx)
            by0, by1 = max(y0, 0), min(y1, ny)
            if bx0 >= bx1 or by0 >= by1:
                continue
            bw, bh = bx1 - bx0, by1 - by0
            # flattened index of each stamp pixel inside the box
            corner = (yc - by0) * bw + (xc - bx0)                     # (nf, nw)
            idx = corner[:, :, None, None] + (ay * bw + ax)           # (nf, nw, sy, sx)
            if x0 < 0 or y0 < 0 or x1 > nx or y1 > ny:                # some spots cross the edge
                iy = yc[:, :, None, None] + ay - by0
                ix = xc[:, :, None, None] + ax - bx0
                ok = (iy >= 0) & (iy < bh) & (ix >= 0) & (ix < bw)
                idx = xp.where(ok, idx, 0)
                st = xp.where(ok, st, 0.0)
            idx = idx.ravel()
            for c in range(ncomp):
                ph = phot_d[c, f0:f0 + fiber_chunk, w0:w0 + wave_chunk]
                wt = (st * ph[:, :, None, None]).ravel()
                img[c, by0:by1, bx0:bx1] += xp.bincount(idx, weights=wt,
                                                        minlength=bw * bh).reshape(bh, bw)
    return img[0] if single else img


def spot_fraction_inside(psf, fibers, wave, shape, xp=np):
    """Fraction of each spot's light that lands inside an image of ``shape``.

    Returns an array (nfib, nwave) on ``xp``: 1 for spots fully inside, 0 for
    spots fully outside. Used to account for edge losses.

    Backends: numpy and cupy (arrays on ``xp``).
    """
    ny, nx = int(shape[0]), int(shape[1])
    xc, yc, st = psf.spots(np.asarray(fibers), np.asarray(wave, dtype=np.float64), xp=xp)
    sy, sx = st.shape[-2:]
    iy = yc[:, :, None, None] + xp.arange(sy)[:, None]
    ix = xc[:, :, None, None] + xp.arange(sx)[None, :]
    ok = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    return (st * ok).sum(axis=(-2, -1))
