"""Every calibration step on CuPy gives NumPy's answer (skipped without a GPU).

Run on a GPU with ``pytest -m gpu tests/test_calibrate_gpu.py``. Tolerances: 1e-8
relative (values and ivar), identical masks: the GPU sums in another order and solves
the (same) normal equations densely with cuSOLVER; on clean data no rejection sits on a
threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec import backend
from gpuspec.calibrate.cframe import process_exposure
from gpuspec.calibrate.fiberflat import (apply_fiberflat, autocalib_fiberflat,
                                         average_fiberflat, compute_fiberflat)
from gpuspec.calibrate.fluxcalib import apply_flux_calibration, compute_flux_calibration
from gpuspec.calibrate.sky import compute_sky, subtract_sky
from gpuspec.calibrate.stdstars import fit_stdstars

import calib_data as C

RTOL = 1e-8


def _cmp(a, b, what, rtol=RTOL):
    a, b = backend.to_host(a), backend.to_host(b)
    if a.dtype.kind in "iub":
        assert np.array_equal(a, b), what
        return
    scale = max(float(np.abs(b).max()), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, what


@pytest.fixture
def gpu(xp):
    if xp is np:
        pytest.skip("compares the cupy backend with numpy")
    return "cupy"


@pytest.fixture(scope="module")
def cpu():
    exp = C.exposure(seed=11)
    out = {"exp": exp, "ff": {}, "fr": {}, "sky": {}, "sub": {}}
    for cam in exp.frames:
        out["ff"][cam] = compute_fiberflat(exp.flats[cam], backend="numpy")
        out["fr"][cam] = apply_fiberflat(exp.frames[cam], out["ff"][cam], backend="numpy")
        out["sky"][cam] = compute_sky(out["fr"][cam], backend="numpy")
        out["sub"][cam] = subtract_sky(out["fr"][cam], out["sky"][cam], backend="numpy")
    return out


@pytest.mark.gpu
@pytest.mark.slow
def test_fiberflat_gpu(gpu, cpu):
    for cam, ref in cpu["ff"].items():
        ff = compute_fiberflat(cpu["exp"].flats[cam], backend=gpu)
        for k in ("fiberflat", "ivar", "mask", "meanspec"):
            _cmp(getattr(ff, k), getattr(ref, k), f"{cam} {k}")
        fr = apply_fiberflat(cpu["exp"].frames[cam], ref, backend=gpu)
        _cmp(fr.flux, cpu["fr"][cam].flux, cam)
        _cmp(fr.ivar, cpu["fr"][cam].ivar, cam)


@pytest.mark.gpu
def test_average_and_autocalib_gpu(gpu, cpu):
    flats = list(cpu["ff"].values())[:1] * 3
    a = average_fiberflat(flats, backend=gpu)
    b = average_fiberflat(flats, backend="numpy")
    _cmp(a.fiberflat, b.fiberflat, "average")
    fl = [C.deepcopy(cpu["ff"]["b0"]) for _ in range(2)]
    fl[1].meta = dict(fl[1].meta, EXPID=98)
    ga, na = autocalib_fiberflat(fl, backend=gpu), autocalib_fiberflat(fl, backend="numpy")
    _cmp(ga[0].fiberflat, na[0].fiberflat, "autocalib")


@pytest.mark.gpu
@pytest.mark.slow
def test_sky_gpu(gpu, cpu):
    for cam, ref in cpu["sky"].items():
        sky = compute_sky(cpu["fr"][cam], backend=gpu)
        for k in ("flux", "ivar", "stat_ivar", "mask", "throughput_corrections"):
            _cmp(getattr(sky, k), getattr(ref, k), f"{cam} {k}")
        assert sky.nrej == ref.nrej
        sub = subtract_sky(cpu["fr"][cam], ref, backend=gpu)
        _cmp(sub.flux, cpu["sub"][cam].flux, cam)
        _cmp(sub.ivar, cpu["sub"][cam].ivar, cam)


@pytest.mark.gpu
@pytest.mark.slow
def test_fluxcalib_and_cframe_gpu(gpu, cpu):
    tr = cpu["exp"].truth
    for cam, sub in cpu["sub"].items():
        args = (sub, tr["template_wave"], tr["template_flux"], tr["std_fibers"])
        fc, ref = (compute_flux_calibration(*args, backend=b) for b in (gpu, "numpy"))
        for k in ("calib", "ivar", "mask", "meancalib"):
            _cmp(getattr(fc, k), getattr(ref, k), f"{cam} {k}")
        a = apply_flux_calibration(sub, ref, backend=gpu)
        b = apply_flux_calibration(sub, ref, backend="numpy")
        _cmp(a.flux, b.flux, cam)
        _cmp(a.ivar, b.ivar, cam)
        frame = cpu["exp"].frames[cam]
        x = process_exposure(frame, cpu["ff"][cam], cpu["sky"][cam], ref, backend=gpu)
        y = process_exposure(frame, cpu["ff"][cam], cpu["sky"][cam], ref, backend="numpy")
        _cmp(x.flux, y.flux, cam)
        _cmp(x.mask, y.mask, cam)


@pytest.mark.gpu
@pytest.mark.slow
def test_fit_stdstars_gpu(gpu, cpu):
    exp = cpu["exp"]
    a = fit_stdstars(exp.frames, cpu["sky"], cpu["ff"], backend=gpu)
    b = fit_stdstars(exp.frames, cpu["sky"], cpu["ff"], backend="numpy")
    assert np.array_equal(a.fibers, b.fibers)
    assert np.array_equal(a.metadata["TEFF"], b.metadata["TEFF"])
    _cmp(a.flux, b.flux, "stdstar models", rtol=1e-6)
