"""The Numba kernels of the CPU extraction against dense products over each box.

``tests/test_extract_paths.py`` compares whole extractions; here one chunk of patches
whose boxes cut stamps on every side (rows, columns, all of a stamp) and an image whose
origin is not the CCD's, so that every clipping branch of the kernels runs:
``normal_cpu.normal_matrices`` (M, b, Σ W·A) and ``pixels_cpu.diagnostics`` (model,
chi2pix, masked fraction).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gpuspec.extract import normal_cpu, pixels_cpu
from gpuspec.extract.layout import ChunkLayout

pytestmark = pytest.mark.skipif(not normal_cpu.available(), reason="numba not available")

NF, NWAVE, NY, NX = 3, 8, 5, 7


def _inputs(seed=3):
    rng = np.random.default_rng(seed)
    stamps = rng.uniform(0.1, 1.0, (NF, NWAVE, NY, NX))
    # traces 4 columns apart (neighbours overlap by 3 columns), rows rising by 1-2 per bin
    xc = (np.arange(NF)[:, None] * 4 + 20 + rng.integers(-1, 2, (NF, NWAVE))).astype(np.int64)
    yc = (30 + np.cumsum(rng.integers(1, 3, (NF, NWAVE)), axis=1)).astype(np.int64)
    x0, y0 = 15, 25                           # the image's pixel (0, 0) on the CCD
    ivar = rng.uniform(0.5, 2.0, (40, 30))
    ivar[rng.uniform(size=ivar.shape) < 0.1] = 0.0
    image = rng.normal(size=ivar.shape)
    # boxes [x0, x1, y0, y1]: inside; cutting columns of fiber 0 and rows at both ends;
    # past the image's left edge; one that cuts the whole of some stamps
    boxes = np.array([[10, 60, 10, 80], [22, 30, 35, 41], [0, 27, 0, 38], [21, 40, 44, 45]],
                     dtype=np.int64)
    P = len(boxes)
    fb0 = np.array([0, 0, 1, 0])
    nf = np.array([3, 3, 2, 2])
    k0 = np.array([0, 2, 1, 0])
    nw = np.array([8, 5, 6, 7])
    F, NW = 3, 8
    perm = np.tile(np.arange(F, dtype=np.int64), (P, 1))
    lay = ChunkLayout(P=P, F=F, NW=NW, NK=0, nf=nf, nw=nw, k0=k0, fb0=fb0, boxes=boxes,
                      valid=np.ones((P, F, NW), bool), perm=perm, pos=perm)
    return stamps, xc, yc, ivar, image, x0, y0, lay


def _projection(stamps, xc, yc, ivar, x0, y0, lay, p):
    """A (box pixels x unknowns) of patch ``p`` over its box cut to the image, and the
    box's corner and shape (numpy, pixel by pixel)."""
    bx0, bx1, by0, by1 = lay.boxes[p]
    bx0, by0 = max(bx0, x0), max(by0, y0)
    bx1, by1 = min(bx1, x0 + ivar.shape[1]), min(by1, y0 + ivar.shape[0])
    h, w = max(by1 - by0, 0), max(bx1 - bx0, 0)
    A = np.zeros((h * w, lay.F * lay.NW))
    for f in range(lay.nf[p]):
        for j in range(lay.nw[p]):
            fa, ka = lay.fb0[p] + f, lay.k0[p] + j
            img = np.zeros((h, w))
            for yy in range(NY):
                for xx in range(NX):
                    y, x = yc[fa, ka] + yy - by0, xc[fa, ka] + xx - bx0
                    if 0 <= y < h and 0 <= x < w:
                        img[y, x] = stamps[fa, ka, yy, xx]
            A[:, f * lay.NW + j] = img.ravel()
    return A, (bx0, by0), (h, w)


def _window(a, corner, shape, x0, y0):
    (bx0, by0), (h, w) = corner, shape
    return a[by0 - y0:by0 - y0 + h, bx0 - x0:bx0 - x0 + w].ravel()


def _dense(stamps, xc, yc, ivar, image, x0, y0, lay, p):
    """M, b, Σ W·A of patch ``p`` from the projection matrix A over its box."""
    A, corner, shape = _projection(stamps, xc, yc, ivar, x0, y0, lay, p)
    W, pix = _window(ivar, corner, shape, x0, y0), _window(image, corner, shape, x0, y0)
    M = A.T @ (W[:, None] * A)
    return M, (A.T @ (W * pix)).reshape(lay.F, lay.NW), (A.T @ W).reshape(lay.F, lay.NW)


def test_kernel_matches_the_dense_product_on_cut_boxes():
    args = _inputs()
    lay = args[-1]
    M, bvec, fw, coupled = normal_cpu.normal_matrices(*args)
    cut = 0
    for p in range(lay.P):
        Mr, br, fr = _dense(*args, p)
        scale = np.abs(Mr).max()
        np.testing.assert_allclose(M[p], Mr, rtol=0, atol=1e-13 * scale, err_msg=f"patch {p}")
        # the coupled pattern covers every nonzero fiber block (fiber order here)
        nz = np.abs(Mr.reshape(lay.F, lay.NW, lay.F, lay.NW)).max(axis=(1, 3)) > 0
        assert not (nz & ~coupled[p]).any(), f"patch {p}: a nonzero block is not in the pattern"
        np.testing.assert_allclose(bvec[p], br, rtol=0, atol=1e-13 * np.abs(br).max())
        np.testing.assert_allclose(fw[p], fr, rtol=0, atol=1e-13 * fr.max())
        cut += int(((fr > 0) & (fr < fr.max() * 0.999)).sum())
    # the boxes really cut stamps (partial sums), and whole stamps fall outside some
    assert cut > 10
    # fibers 0 and 2 (8 columns apart, stamps 7 wide, traces jittered by ±1) are coupled in
    # some patches and not in others
    assert coupled[:, 0, 2].any() and not coupled[:, 0, 2].all()
    assert (fw[3, :lay.nf[3], :lay.nw[3]] == 0).any()


def _diagnostics_inputs():
    """The chunk of :func:`_inputs` with its boxes cut to the image (as the extraction's
    plan does) and a deconvolved flux per unknown."""
    stamps, xc, yc, ivar, image, x0, y0, lay = _inputs()
    b = lay.boxes.copy()
    b[:, 0], b[:, 2] = np.maximum(b[:, 0], x0), np.maximum(b[:, 2], y0)
    b[:, 1], b[:, 3] = np.minimum(b[:, 1], x0 + ivar.shape[1]), np.minimum(b[:, 3], y0 + ivar.shape[0])
    lay = _with_boxes(lay, b)
    x3 = np.random.default_rng(5).uniform(0.5, 2.0, (lay.P, lay.F, lay.NW))
    return stamps, xc, yc, image, ivar, x0, y0, lay, x3


def _with_boxes(lay, boxes):
    return dataclasses.replace(lay, boxes=boxes)


@pytest.mark.parametrize("psferr", [0.0, 0.05])
def test_diagnostics_match_the_dense_formulas_on_cut_boxes(psferr):
    stamps, xc, yc, image, ivar, x0, y0, lay, x3 = _diagnostics_inputs()
    chi2pix, pixmask, boxm = pixels_cpu.diagnostics(stamps, xc, yc, image, ivar, x0, y0, lay,
                                                    x3, psferr, True)
    for p in range(lay.P):
        A, corner, shape = _projection(stamps, xc, yc, ivar, x0, y0, lay, p)
        W, pix = _window(ivar, corner, shape, x0, y0), _window(image, corner, shape, x0, y0)
        m = A @ x3[p].ravel()
        good = W > 0
        tot = np.where(good, 1.0 / ((m * psferr + 1e-32) ** 2 + 1.0 / np.where(good, W, 1.0)), 0.0)
        c2 = np.where(good, (pix - m) ** 2 * tot, 0.0)
        psfw = A.T @ good.astype(float)
        ref_chi2 = np.where(psfw == 0, 0.0, (A.T @ c2) / np.where(psfw == 0, 1.0, psfw))
        h, w = shape
        np.testing.assert_allclose(boxm[p, :h, :w], m.reshape(h, w), rtol=1e-13, atol=0)
        assert not boxm[p, h:].any() and not boxm[p, :, w:].any()
        np.testing.assert_allclose(chi2pix[p].ravel(), ref_chi2, rtol=1e-12, atol=0,
                                   err_msg=f"patch {p}")
        np.testing.assert_allclose(pixmask[p].ravel(), 1.0 - psfw, rtol=0, atol=1e-13)


def test_diagnostics_refuse_a_box_outside_the_image():
    stamps, xc, yc, image, ivar, x0, y0, lay, x3 = _diagnostics_inputs()
    b = lay.boxes.copy()
    b[1, 0] = x0 - 1
    with pytest.raises(ValueError, match="diagnostics: a patch box"):
        pixels_cpu.diagnostics(stamps, xc, yc, image, ivar, x0, y0, _with_boxes(lay, b), x3,
                               0.0, False)


@pytest.mark.parametrize("n,h", [(12, 3), (9, 8), (5, 0)])
def test_decorrelate_band_products_match_array_path(n, h):
    """``decorrelate_cpu.band_products`` (R's band, R·x and s from V and ws, without Q)
    against the array path's products of ``Q = sqrt_inverse(C)`` (``core._band_products``),
    on stacks (2, 3) of covariance blocks: well conditioned ones, one whose eigenvalue
    floor is active (rank 2) and one with a negative eigenvalue."""
    from gpuspec.extract import decorrelate_cpu
    from gpuspec.extract.core import _band_products
    from gpuspec.extract.solve import eig_inverse_sqrt, sqrt_inverse

    rng = np.random.default_rng(n + h)
    A = rng.normal(size=(2, 3, n, n))
    C = A @ np.swapaxes(A, -1, -2) / n + 0.1 * np.eye(n)
    C += 1e-3 * rng.normal(size=C.shape)           # not exactly symmetric: symmetrised
    low = rng.normal(size=(n, 2))
    C[1, 0] = low @ low.T                          # rank 2: the floor replaces n - 2 weights
    C[1, 2] -= 1.5 * np.linalg.eigvalsh(C[1, 2])[0] * np.eye(n)     # λ_min < 0
    x = rng.normal(size=(2, 3, n))
    V, ws = eig_inverse_sqrt(C)
    s, flux, rd = decorrelate_cpu.band_products(V, ws, x, h)
    flux0, rd0, s0 = _band_products(np, sqrt_inverse(C), x, h)
    assert rd.shape == rd0.shape == (2, 3, 2 * h + 1, n)
    # relative to each block's largest value: achieved <= 2.6e-14 here (5e-14 at n = 73)
    for got, want in ((s, s0), (flux, flux0), (rd, rd0)):
        scale = np.abs(want).max(axis=tuple(range(2, want.ndim)), keepdims=True)
        np.testing.assert_array_less(np.abs(got - want) / scale, 2e-13)
    # the band: R[j-h+d, j] where that row exists, exactly 0 outside
    R = sqrt_inverse(C)[0] / s0[..., :, None]
    j = np.arange(n)
    for d in range(2 * h + 1):
        i = j - h + d
        ok = (i >= 0) & (i < n)
        np.testing.assert_allclose(rd[..., d, ok], R[..., i[ok], j[ok]], rtol=1e-9, atol=1e-12)
        assert np.all(rd[..., d, ~ok] == 0.0)


def test_decorrelate_band_products_refuse_mismatched_shapes():
    from gpuspec.extract import decorrelate_cpu

    with pytest.raises(ValueError, match="band_products"):
        decorrelate_cpu.band_products(np.zeros((2, 4, 4)), np.zeros((2, 4)), np.zeros((2, 3)), 1)
