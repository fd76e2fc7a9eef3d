"""CPU (Numba) twin of the array path's diagnostics: model, pixel χ², chi2pix, masked
fraction and the box model, computed from the spot stamps over each patch box.

The array path (:func:`gpuspec.extract.windows.diagnostics`) multiplies dense window
arrays ``A0`` (P, F, Q, NW) — ~7 MB per patch at DESI geometry, mostly zeros — four
times. Here each spot touches only its own stamp (11 × 17 pixels): the model of the
box is accumulated spot by spot, χ² is evaluated once per box pixel, and each
unknown's sums run over its stamp. The numbers are those of the array path (same
formulas; sums in another order, differences ~1e-16 relative);
``tests/test_extract_paths.py`` compares the two.

Used with :mod:`gpuspec.extract.normal_cpu` on the numpy backend when numba imports.
"""

from __future__ import annotations

import numpy as np

from . import normal_cpu

__all__ = ["diagnostics", "warm"]

_kernel = None


def _get_kernel():
    global _kernel
    if _kernel is None:
        from .pixels_numba import kernel

        _kernel = kernel
    return _kernel


def diagnostics(stamps, xc, yc, image, ivar, x0, y0, lay, x3, psferr, model):
    """chi2pix and masked fraction per unknown, and the box model (host only).

    Parameters
    ----------
    stamps, xc, yc
        Spots of the bundle and their CCD corners (see
        :func:`gpuspec.extract.normal_cpu.normal_matrices`).
    image, ivar : float64 (ny_img, nx_img)
        Pixels and weights; image pixel (0, 0) is CCD (x0, y0). Boxes lie inside it.
    lay : gpuspec.extract.layout.ChunkLayout
    x3 : float64 (P, F, NW)
        Deconvolved flux, fiber order.
    psferr : float
        Fractional PSF error of the χ² denominator ``1/W + (psferr·m)²``.
    model : bool
        Also return the box model.

    Returns
    -------
    chi2pix, pixmask : float64 (P, F, NW)
        ``Σ A_j χ² / Σ_{W>0} A_j`` and ``1 − Σ_{W>0} A_j`` (padding entries: 0 and 1).
    boxmodel : float64 (P, max box height, max box width) or None
        ``A·x`` over each box (rows/columns beyond a smaller box are 0).

    Backends: numpy (Numba).
    """
    P, F, NW = lay.P, lay.F, lay.NW
    b = np.asarray(lay.boxes, dtype=np.int64)
    _check_boxes(b, image.shape, x0, y0)
    BH = int((b[:, 3] - b[:, 2]).max())
    BW = int((b[:, 1] - b[:, 0]).max())
    chi2pix = np.zeros((P, F, NW))
    pixmask = np.ones((P, F, NW))
    boxm = np.zeros((P, BH, BW)) if model else np.zeros((0, 1, 1))
    bufs = [np.empty((BH, BW)) for _ in range(4)]
    bound = normal_cpu.CORNER_BOUND
    _get_kernel()(np.ascontiguousarray(stamps, dtype=np.float64),
                  np.ascontiguousarray(np.clip(xc, -bound, bound), dtype=np.int64),
                  np.ascontiguousarray(np.clip(yc, -bound, bound), dtype=np.int64),
                  np.ascontiguousarray(image, dtype=np.float64),
                  np.ascontiguousarray(ivar, dtype=np.float64), int(x0), int(y0),
                  np.asarray(lay.fb0, np.int64), np.asarray(lay.nf, np.int64),
                  np.asarray(lay.k0, np.int64), np.asarray(lay.nw, np.int64),
                  np.ascontiguousarray(b, dtype=np.int64),
                  np.ascontiguousarray(x3, dtype=np.float64), float(psferr),
                  chi2pix, pixmask, boxm, *bufs)
    return chi2pix, pixmask, (boxm if model else None)


def _check_boxes(b, shape, x0, y0):
    """Refuse boxes that are inverted or not inside the image (the kernel indexes the
    image from the box corners without checks). Host only."""
    if b.size and ((b[:, 1] < b[:, 0]) | (b[:, 3] < b[:, 2]) | (b[:, 0] < x0) | (b[:, 2] < y0)
                   | (b[:, 1] > x0 + shape[1]) | (b[:, 3] > y0 + shape[0])).any():
        raise ValueError(f"diagnostics: a patch box is inverted or outside the image "
                         f"(CCD x {x0}..{x0 + shape[1]}, y {y0}..{y0 + shape[0]})")


def warm() -> None:
    """Compile the kernel (or load it from Numba's cache) in this process, on an empty
    chunk, for both values of ``model`` (see :func:`gpuspec.extract.normal_cpu.warm`).

    Backends: host only.
    """
    from .layout import empty_layout

    lay = empty_layout()
    one = np.zeros((1, 1))
    corner = np.zeros((1, 1), dtype=np.int64)
    for model in (False, True):
        diagnostics(np.zeros((1, 1, 1, 1)), corner, corner, one, one, 0, 0, lay,
                    np.zeros((1, 1, 1)), 0.01, model)
