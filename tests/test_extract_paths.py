"""The GPU algorithm checked on the CPU: Case B parity with specter over the Numba twin,
the xp array path (what CuPy runs) and the emulated CuPy backend; and a cross-path test
over several bundles, several patches per chunk and patches at the CCD edge."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import REF_PSF
from gpuspec.extract import core as ex_core
from gpuspec.extract import extract_frame
from gpuspec.extract.geometry import plan_bundle, resolution_halfwidth

import test_extract as T


@pytest.fixture(scope="module")
def caseB():
    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF}")
    return T._load_caseB()


def _frame(c, run, path, chunk_mb=None):
    return extract_frame(c["IMAGE"], T._ivar(c, run), c["psf"], c["WAVE"], 0, 50,
                         xyrange=c["xyrange"], model=True, chunk_mb=chunk_mb,
                         backend="cupy" if path == "emulated-cupy" else "numpy")


@pytest.mark.slow
@pytest.mark.parametrize("run", ["clean", "masked"])
@pytest.mark.parametrize("path", ["numba", "array", pytest.param("emulated-cupy",
                                                                 marks=pytest.mark.emulated)])
def test_caseB_parity_each_path(caseB, run, path, monkeypatch, request):
    from gpuspec.extract import normal_cpu

    if path == "numba" and not normal_cpu.available():
        pytest.skip("numba not available")
    if path == "array":
        monkeypatch.setattr(ex_core, "USE_NUMBA", False)
    if path == "emulated-cupy":
        request.getfixturevalue("emulate_cupy")
    fr = _frame(caseB, run, path)
    ref = caseB[run]
    assert T.parity_failures(fr, ref) == []
    np.testing.assert_allclose(fr.pixmask_fraction, ref["PIXMASK_FRACTION"], atol=1e-8)
    np.testing.assert_allclose(fr.modelimage, ref["MODELIMAGE"],
                               atol=1e-6 * np.abs(ref["MODELIMAGE"]).max())


def _edge_patches(c):
    psf, w = c["psf"], c["WAVE"]
    x0, x1, y0, y1 = c["xyrange"]
    nd = resolution_halfwidth(psf, float(w[1] - w[0]))
    n = 0
    for b0 in (0, 25):
        for p in plan_bundle(psf, w, b0, b0 + 25, nsubbundles=5, nwavestep=50,
                             pixpad_frac=0.8, wavepad_frac=0.2, ndiag=nd,
                             image_box=(x0, x1, y0, y1)):
            bx0, bx1, by0, by1 = p.box
            n += bx0 <= x0 or bx1 >= x1 or by0 <= y0 or by1 >= y1
    return n


@pytest.mark.parametrize("path", ["array", pytest.param("emulated-cupy",
                                                        marks=pytest.mark.emulated)])
def test_cross_path_bundles_chunks_edges(caseB, path, monkeypatch, request):
    """Numba twin (numpy's default) vs the tiled array path, two bundles, all patches of a
    bundle in one chunk (cupy's 2 GB default), patches clipped by the image edge."""
    from gpuspec.extract import normal_cpu

    if not normal_cpu.available():
        pytest.skip("numba not available")
    assert _edge_patches(caseB) >= 4          # the test covers patches at the CCD edge
    ref = extract_frame(caseB["IMAGE"], caseB["IVAR"], caseB["psf"], caseB["WAVE"], 0, 50,
                        xyrange=caseB["xyrange"], model=True, backend="numpy")
    nchunk = []
    real = ex_core._solve_chunk

    def spy(ctx, patches, *a, **k):
        nchunk.append(len(patches))
        return real(ctx, patches, *a, **k)

    monkeypatch.setattr(ex_core, "_solve_chunk", spy)
    monkeypatch.setattr(ex_core, "USE_NUMBA", False)
    if path == "emulated-cupy":
        request.getfixturevalue("emulate_cupy")
    got = _frame(caseB, "clean", path, chunk_mb=2048)
    assert len(nchunk) >= 2 and max(nchunk) > 1   # several bundles, several patches per chunk
    pull = np.abs(ref.flux - got.flux) / np.sqrt(1 / ref.ivar + 1 / got.ivar)
    assert pull.max() < 1e-6
    # the emulated solve is numpy's batched cholesky + LU inverse, not LAPACK potrf/trtri
    np.testing.assert_allclose(got.ivar, ref.ivar, rtol=1e-8 if path == "array" else 1e-6)
    np.testing.assert_allclose(got.resolution_data, ref.resolution_data, atol=1e-9)
    np.testing.assert_allclose(got.chi2pix, ref.chi2pix, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(got.modelimage, ref.modelimage,
                               atol=1e-9 * np.abs(ref.modelimage).max())
