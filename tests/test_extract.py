"""Extraction: linear-algebra units, geometry, Case B masks/truth/settings, defaults and
progress. Parity with specter on every code path, and the paths against each other:
``tests/test_extract_paths.py``."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec import backend
from gpuspec.extract import extract_bundle, extract_frame, split_bundle
from gpuspec.extract import core as ex_core
from gpuspec.extract.solve import decorrelate, inv_cholesky, regularize_normal, sqrt_inverse
from gpuspec.resolution import apply as rapply

from conftest import REF_PSF, require_reference

# ----------------------------------------------------------------------------- units


def test_split_bundle_specter_examples():
    own, ext = split_bundle(10, 3)
    assert [list(a) for a in own] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [list(a) for a in ext] == [[0, 1, 2, 3], [2, 3, 4, 5, 6], [5, 6, 7, 8, 9]]
    own, ext = split_bundle(25, 5)
    assert [len(a) for a in own] == [5] * 5
    assert [len(a) for a in ext] == [6, 7, 7, 7, 6]
    own, ext = split_bundle(7, 3)  # smaller subbundle moved to the middle: 3,2,2 -> 2,3,2? no:
    # array_split gives 3,2,2; one pass of adjacent swaps gives 2,2,3
    assert [len(a) for a in own] == [2, 2, 3]
    assert np.array_equal(np.concatenate(own), np.arange(7))


@pytest.mark.slow
def test_trace_cache_matches_psf_xyrange(ref_psf_path):
    """geometry._Traces reproduces psf.xyrange / wavelength / spot heights, including
    boxes that leave the CCD."""
    from gpuspec.extract.geometry import _Traces
    from gpuspec.psf import read_psf

    psf = read_psf(ref_psf_path)
    tr = _Traces(psf, 0, psf.nspec)
    rng = np.random.default_rng(3)
    for _ in range(60):
        a = int(rng.integers(0, psf.nspec - 1))
        b = min(a + int(rng.integers(1, 8)), psf.nspec)
        w0 = float(rng.uniform(5500, 7800))
        w1 = w0 + float(rng.uniform(0, 60))
        assert tr.xyrange(a, b, w0, w1) == psf.xyrange((a, b), (w0, w1))
        assert tr.spot_height(a, w0) == (psf.xypix(a, w0)[2].shape[0] or 11)
        y = int(rng.integers(-20, psf.npix_y + 20))
        assert abs(tr.wavelength(a, y) - float(psf.wavelength([a], [float(y)])[0, 0])) < 1e-9


def _spd(rng, nb, n):
    a = rng.normal(size=(nb, n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def test_inv_cholesky(xp, rng):
    M = _spd(rng, 3, 20)
    Z = backend.to_host(inv_cholesky(xp.asarray(M)))
    assert np.allclose(np.triu(Z, 1), 0.0)
    np.testing.assert_allclose(np.swapaxes(Z, -1, -2) @ Z @ M,
                               np.broadcast_to(np.eye(20), M.shape), atol=1e-10)


def test_decorrelate_single_block(xp, rng):
    """For a one-fiber patch R C Rᵀ must be diagonal with entries 1/ivar (Bolton &
    Schlegel 2010); rows of R sum to 1."""
    M = _spd(rng, 3, 25)
    C = np.linalg.inv(M)
    R, ivar = decorrelate(xp.asarray(C))
    R, ivar = backend.to_host(R), backend.to_host(ivar)
    np.testing.assert_allclose(R.sum(axis=-1), 1.0, atol=1e-12)
    cov = R @ C @ np.swapaxes(R, -1, -2)
    for k in range(3):
        np.testing.assert_allclose(cov[k], np.diag(1.0 / ivar[k]), atol=1e-12 * cov[k].max())
    # independent construction through scipy's matrix square root
    import scipy.linalg

    Q = np.linalg.inv(scipy.linalg.sqrtm(C[0]).real)
    s = Q.sum(axis=1)
    np.testing.assert_allclose(R[0], Q / s[:, None], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ivar[0], s ** 2, rtol=1e-8)


def test_regularize_normal(xp):
    M = np.diag([4.0, 9.0, 1e-9, 0.0])
    fw = np.array([[2.0, 3.0, 1e-5, 0.0]])
    valid = np.array([[True, True, True, False]])
    out = backend.to_host(regularize_normal(xp.asarray(M[None].copy()), xp.asarray(fw),
                                            xp.asarray(valid), regularize=0.1))
    minw = 1e-4 * 3.0
    expect = [4.0 + 0.01, 9.0 + 0.01, 1e-9 + (minw - 1e-5) ** 2, (4.0 + 9.0 + 1e-9) / 3]
    np.testing.assert_allclose(np.diag(out[0]), expect, rtol=1e-12)


# ----------------------------------------------------------------------------- case B

def _load_caseB():
    import fitsio

    from gpuspec.psf import read_psf

    d = require_reference("caseB_extract")
    inp = f"{d}/input.fits"
    h = fitsio.read_header(inp, 0)
    data = {k: backend.native(fitsio.read(inp, k)) for k in
            ("IMAGE", "IVAR", "PIXMASK", "WAVE", "WAVE_TRUE", "PHOT_TRUE")}
    data["xyrange"] = [h["XMIN"], h["XMAX"], h["YMIN"], h["YMAX"]]
    data["psf"] = read_psf(REF_PSF)
    for run in ("clean", "masked"):
        data[run] = {k: backend.native(fitsio.read(f"{d}/ex2d_{run}.fits", k)) for k in
                     ("FLUX", "IVAR", "RESOLUTION", "CHI2PIX", "PIXMASK_FRACTION",
                      "MODELIMAGE")}
    return data


@pytest.fixture(scope="module")
def caseB():
    import os

    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF} (set GPUSPEC_SHARED to the shared "
                    "folder, default ../shared)")
    return _load_caseB()


def _ivar(caseB, run):
    return caseB["IVAR"] * (caseB["PIXMASK"] == 0) if run == "masked" else caseB["IVAR"]


def parity_failures(frame, ref, fibers=slice(None)):
    """The acceptance checks against specter; returns a list of failure strings."""
    fail = []
    f1, i1 = frame.flux, frame.ivar
    f2, i2 = ref["FLUX"][fibers], ref["IVAR"][fibers]
    ok = (i1 > 0) & (i2 > 0)
    if ok.sum() < 0.99 * ok.size:
        fail.append(f"only {ok.sum()} of {ok.size} bins have ivar > 0 in both")
    pull = np.abs(f1 - f2)[ok] / np.sqrt(1 / i1[ok] + 1 / i2[ok])
    if np.mean(pull < 0.01) < 0.99:
        fail.append(f"fraction |pull|<0.01 = {np.mean(pull < 0.01):.4f} < 0.99")
    if pull.max() >= 0.05:
        fail.append(f"max |pull| = {pull.max():.3g} >= 0.05")
    rel = np.abs(i1 - i2)[ok] / i2[ok]
    if np.median(rel) > 1e-3 or np.percentile(rel, 99) > 1e-2:
        fail.append(f"ivar rel. diff median {np.median(rel):.2g}, p99 "
                    f"{np.percentile(rel, 99):.2g}")
    dr = np.abs(frame.resolution_data - ref["RESOLUTION"][fibers]).max()
    if dr > 1e-3:
        fail.append(f"resolution max abs diff {dr:.3g} > 1e-3")
    c2 = ref["CHI2PIX"][fibers]
    sel = c2 > 0.1
    drel = (np.abs(frame.chi2pix - c2)[sel] / c2[sel]).max()
    if drel > 1e-2:
        fail.append(f"chi2pix max rel diff {drel:.3g} > 1e-2")
    return fail


@pytest.fixture(scope="module")
def extracted(caseB):
    out = {}
    for run in ("clean", "masked"):
        out[run] = extract_frame(caseB["IMAGE"], _ivar(caseB, run), caseB["psf"], caseB["WAVE"],
                                 0, 50, xyrange=caseB["xyrange"], model=True,
                                 backend="numpy")
    return out


@pytest.mark.slow
def test_caseB_masks(caseB, extracted):
    from gpuspec.maskbits import specmask

    for run in ("clean", "masked"):
        ref = caseB[run]
        fr = extracted[run]
        expect = np.where(ref["PIXMASK_FRACTION"] > 0.5, specmask.SOMEBADPIX, 0)
        expect |= np.where(ref["PIXMASK_FRACTION"] == 1.0, specmask.ALLBADPIX, 0)
        expect |= np.where(ref["CHI2PIX"] > 100, specmask.BAD2DFIT, 0)
        assert np.array_equal(fr.mask, expect)
    # the masked run has bins touching masked pixels; the clean run none above 0.5
    assert np.any(extracted["masked"].pixmask_fraction > 0.1)
    assert not np.any(extracted["clean"].mask & specmask.SOMEBADPIX)


@pytest.mark.slow
def test_nproc_identical(caseB, extracted):
    fr = extract_frame(caseB["IMAGE"], caseB["IVAR"], caseB["psf"], caseB["WAVE"], 0, 50,
                       xyrange=caseB["xyrange"], backend="numpy", nproc=2)
    ref = extracted["clean"]
    for name in ("flux", "ivar", "resolution_data", "chi2pix", "pixmask_fraction", "mask"):
        assert np.array_equal(getattr(fr, name), getattr(ref, name)), name


FORK_PROBE = r"""
import json, sys
import multiprocessing.context as mpc
sys.path.insert(0, sys.argv[1])
import test_extract as T
from gpuspec.extract import (extract_frame, normal_numba, pixels_numba, blocksolve_numba,
                              decorrelate_numba)
from gpuspec.psf import spots_numba
from threadpoolctl import threadpool_info
from gpuspec import heap
heap.configure_heap("keep")
seen = {}
real_release = heap.release_kept_memory
def release():
    seen["released"] = True
    real_release()
heap.release_kept_memory = release
real = mpc.ForkContext.Pool
def pool(self, *a, **k):
    seen["released_before_fork"] = seen.pop("released", False)
    seen["compiled"] = [len(normal_numba.kernel.signatures), len(pixels_numba.kernel.signatures),
                        len(blocksolve_numba.solve_chunk.signatures),
                        len(decorrelate_numba.kernel.signatures),
                        len(spots_numba.kernel.signatures)]
    seen["blas"] = sorted({d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"})
    return real(self, *a, **k)
mpc.ForkContext.Pool = pool
c = T._load_caseB()
extract_frame(c["IMAGE"], c["IVAR"], c["psf"], c["WAVE"], 0, 50, xyrange=c["xyrange"],
              backend="numpy", nproc=2)
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_nproc_workers_inherit_compiled_kernels_and_one_blas_thread(caseB):
    """A fresh process with nothing compiled: before forking its bundle workers,
    extract_frame compiles (or loads) the Numba kernels, so that the workers do not each
    load them in every call, and every BLAS library, SciPy's too, is at one thread (a
    late-loaded one kept one thread per core and its threads spun in the workers); and
    the freed memory the heap policy keeps is released, so that the workers do not copy
    the parent's free heap."""
    import json
    import os
    import subprocess
    import sys

    from gpuspec.threads import THREAD_VARIABLES

    here = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([os.path.dirname(here), here,
                                           env.get("PYTHONPATH", "")]),
               GPUSPEC_NO_GPU="1")
    r = subprocess.run([sys.executable, "-c", FORK_PROBE, here], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert min(seen["compiled"]) >= 1, seen
    assert seen["blas"] == [1], seen
    assert seen["released_before_fork"], seen


@pytest.mark.slow
@pytest.mark.parametrize("run", ["clean", "masked"])
def test_caseB_against_truth(caseB, extracted, run):
    """(flux − R·truth)·√ivar has unit scatter (10 edge bins dropped)."""
    fr = extracted[run]
    wt, pt, w = caseB["WAVE_TRUE"], caseB["PHOT_TRUE"], caseB["WAVE"]
    i0 = int(np.argmin(np.abs(wt - w[0])))
    assert np.allclose(wt[i0:i0 + w.size], w)
    truth = pt[:, i0:i0 + w.size] / 0.8
    model = rapply(fr.resolution_data, truth)
    chi = ((fr.flux - model) * np.sqrt(fr.ivar))[:, 10:-10]
    good = fr.ivar[:, 10:-10] > 0
    assert 0.95 < np.std(chi[good]) < 1.05
    assert abs(np.mean(chi[good])) < 0.05


def _broken_sqrt_inverse(kind):
    """A broken ``solve.sqrt_inverse`` (Q = C^-1/2 and its row sums s; R = Q / s): the
    array path's decorrelation."""
    def f(C, threshold=None):
        xp = backend.get_array_module(C)
        if kind == "no_inverse":  # Q = C^(+1/2) instead of C^(-1/2)
            w, V = xp.linalg.eigh(0.5 * (C + xp.swapaxes(C, -1, -2)))
            Q = xp.matmul(V * xp.sqrt(xp.maximum(w, 0))[..., None, :], xp.swapaxes(V, -1, -2))
            return Q, Q.sum(axis=-1)
        # "unnormalised": R = Q without dividing by the row sums (ivar = s² kept)
        Q, s = sqrt_inverse(C)
        return Q * s[..., :, None], s
    return f


def _broken_host_decorrelation(monkeypatch, kind):
    """Break the Numba twin's decorrelation: the eigenvalue weights (shared with the
    array path) or the normalisation of R's rows in ``decorrelate_cpu.band_products``."""
    from gpuspec.extract import decorrelate_cpu

    if kind == "no_inverse":  # ws = λ^(+1/2): Q = C^(+1/2)
        def eig(C, threshold=None):
            w, V = np.linalg.eigh(0.5 * (C + np.swapaxes(C, -1, -2)))
            return V, np.sqrt(np.maximum(w, 0))
        monkeypatch.setattr(ex_core, "eig_inverse_sqrt", eig)
        return
    good = decorrelate_cpu.band_products

    def band(V, ws, x, h):   # "unnormalised": R's band and R·x not divided by s
        s, flux, rd = good(V, ws, x, h)
        n = s.shape[-1]
        i = np.arange(n)[None, :] - h + np.arange(2 * h + 1)[:, None]
        si = np.where((i >= 0) & (i < n), s[..., np.clip(i, 0, n - 1)], 0.0)
        return s, flux * s, rd * si
    monkeypatch.setattr(decorrelate_cpu, "band_products", band)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["numba", "array"])
@pytest.mark.parametrize("kind", ["no_inverse", "unnormalised"])
def test_broken_decorrelation_fails_parity(caseB, monkeypatch, kind, path):
    """The parity checks can fail: a deliberately broken decorrelation is caught, on the
    Numba twin's path (the default on the host) and on the array path (what CuPy runs)."""
    if path == "numba":
        _broken_host_decorrelation(monkeypatch, kind)
    else:
        monkeypatch.setattr(ex_core, "USE_NUMBA", False)
        monkeypatch.setattr(ex_core, "sqrt_inverse", _broken_sqrt_inverse(kind))
    fr = extract_bundle(caseB["IMAGE"], caseB["IVAR"], caseB["psf"], caseB["WAVE"], 0,
                        xyrange=caseB["xyrange"], backend="numpy")
    fails = parity_failures(fr, caseB["clean"], fibers=slice(0, 25))
    assert fails, "parity checks passed with a broken decorrelation"


def test_bundle_equals_frame_rows(caseB):
    """extract_bundle(1) gives the frame's fibers 25-49, from a sub-image with origin."""
    x0, x1, y0, y1 = caseB["xyrange"]
    img, iv = caseB["IMAGE"][:, 40:], caseB["IVAR"][:, 40:]  # crop 40 columns on the left
    fr = extract_bundle(img, iv, caseB["psf"], caseB["WAVE"], 1, xyorigin=(x0 + 40, y0),
                        backend="numpy")
    assert fr.meta["SPECMIN"] == 25 and fr.nspec == 25
    assert parity_failures(fr, caseB["clean"], fibers=slice(25, 50)) == []


def test_no_data_gives_zero_ivar(caseB):
    """All pixels masked in a bundle's region: ivar 0, ALLBADPIX, finite outputs."""
    from gpuspec.maskbits import specmask

    iv = caseB["IVAR"].copy()
    iv[:, :200] = 0.0  # fibers 0-24 live in the first ~190 columns of the cut-out
    fr = extract_bundle(caseB["IMAGE"], iv, caseB["psf"], caseB["WAVE"], 0,
                        xyrange=caseB["xyrange"], backend="numpy")
    assert np.all(np.isfinite(fr.flux)) and np.all(np.isfinite(fr.ivar))
    assert np.all(fr.ivar[:20] == 0)
    assert np.all(fr.mask[:20] & specmask.ALLBADPIX)
    assert np.all(caseB["IVAR"] == _load_caseB()["IVAR"])  # input not modified


def test_blas_threads_context_restores():
    from threadpoolctl import threadpool_info

    from gpuspec.threads import blas_threads

    def blas_counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_counts()
    with blas_threads(1):
        assert all(n == 1 for n in blas_counts())
    assert blas_counts() == before
    with blas_threads(None):  # no-op
        assert blas_counts() == before


# ----------------------------------------------------------------------------- solve_tail

@pytest.mark.parametrize("nk", [2, 4])
def test_solve_tail(xp, rng, nk):
    """x = M⁻¹b and the trailing diagonal blocks of M⁻¹ (against numpy.linalg.inv), on
    every backend; nk = 4 = all blocks (no leading block)."""
    from gpuspec.extract.solve import solve_tail

    P, nw, nblk = 3, 6, 4
    n, m = nblk * nw, nk * nw
    M = _spd(rng, P, n)
    b = rng.normal(size=(P, n))
    x, Cb, bad = solve_tail(xp.asarray(M), xp.asarray(b), m, nw)
    C = np.linalg.inv(M)
    np.testing.assert_allclose(backend.to_host(x), np.linalg.solve(M, b[..., None])[..., 0],
                               rtol=1e-10, atol=1e-12)
    k = n - m
    want = np.stack([C[:, k + s * nw:k + (s + 1) * nw, k + s * nw:k + (s + 1) * nw]
                     for s in range(nk)], axis=1)
    np.testing.assert_allclose(backend.to_host(Cb), want, rtol=1e-10, atol=1e-14)
    assert bad is None or not backend.to_host(bad).any()


def test_solve_tail_not_positive_definite(xp, rng):
    """A matrix that is not positive definite is solved through eigh with specter's floor:
    at once on numpy, after one flag read on a device (the extraction's protocol)."""
    from gpuspec.extract.solve import solve_tail

    nw = 4
    M = _spd(rng, 3, 12)
    M[1, 3, 3] = -5.0
    b = rng.normal(size=(3, 12))
    x_np, C_np, _ = solve_tail(M.copy(), b, 8, nw)
    x, Cb, bad = solve_tail(xp.asarray(M), xp.asarray(b), 8, nw)
    if bad is not None:
        flags = backend.to_host(bad)
        assert flags.tolist() == [False, True, False]
        x, Cb, _ = solve_tail(xp.asarray(M), xp.asarray(b), 8, nw, fallback=flags)
    assert np.all(np.isfinite(backend.to_host(x)))
    np.testing.assert_allclose(backend.to_host(x), x_np, rtol=1e-9)
    np.testing.assert_allclose(backend.to_host(Cb), C_np, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(x_np[0], np.linalg.solve(M[0], b[0]), rtol=1e-10)


# ----------------------------------------------------------------------------- defaults, progress

def test_specter_defaults_have_one_home():
    """extract_frame, extract_file, plan_bundle, the CLI and the launcher take their
    defaults from gpuspec.extract.defaults.SPECTER."""
    import argparse
    import inspect

    from gpuspec.extract import cli, extract_file, plan_bundle
    from gpuspec.extract.defaults import SPECTER
    from gpuspec.launch import manifest

    want = SPECTER.as_dict()
    assert want == dict(bundlesize=25, nsubbundles=5, nwavestep=50, wavepad_frac=0.2,
                        pixpad_frac=0.8, regularize=0.0)
    for fn in (extract_frame, extract_file, plan_bundle, extract_bundle):
        sig = inspect.signature(fn).parameters
        for k, v in want.items():
            if k in sig:
                assert sig[k].default == v, (fn.__name__, k)
    p = cli.add_parser(argparse.ArgumentParser().add_subparsers())
    args = p.parse_args(["-o", "x"])
    for k, v in want.items():
        assert getattr(args, k) == v, k
    ext = manifest.SCHEMA["steps"].schema["extract"].schema
    assert ext["fibers_per_bundle"].default == SPECTER.bundlesize


def test_progress_line_per_bundle(caseB, caplog):
    """extract_frame logs one line per bundle with its time and the elapsed time."""
    import logging

    with caplog.at_level(logging.INFO, logger="gpuspec.extract.core"):
        extract_frame(caseB["IMAGE"], caseB["IVAR"], caseB["psf"], caseB["WAVE"], 20, 10,
                      bundlesize=5, nsubbundles=1, xyrange=caseB["xyrange"], backend="numpy")
    lines = [r.getMessage() for r in caplog.records if "extract: bundle" in r.getMessage()]
    assert [ln.split(" (")[0] for ln in lines] == ["extract: bundle 1/2", "extract: bundle 2/2"]
    assert "fibers 25-29" in lines[1] and "s elapsed" in lines[1]
