"""Building blocks of the calibration: banded normal equations, splines, masked helpers."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec import backend
from gpuspec.calibrate import banded
from gpuspec.calibrate.spline import spline_fit
from gpuspec.calibrate.synthetic import gaussian_resolution
from gpuspec.calibrate.util import (masked_interp, masked_median, max_run_length,
                                    resample_flux, top_k_mask)
from gpuspec.resolution import to_dense


def _h(a):
    return backend.to_host(a)


@pytest.fixture
def system(rng):
    nf, nw = 6, 120
    rd = gaussian_resolution(nf, nw, seed=3)
    w = rng.uniform(0.5, 2.0, (nf, nw))
    w[2, 40:50] = 0
    c = rng.uniform(0.8, 1.2, (nf, nw))
    R = to_dense(rd)
    A = sum(np.diag(c[f]) @ R[f].T @ np.diag(w[f]) @ R[f] @ np.diag(c[f]) for f in range(nf))
    return rd, w, c, R, A


def test_normal_band_and_rhs(xp, system, rng):
    rd, w, c, R, A = system
    dev = lambda a: backend.to_device(a, xp)  # noqa: E731
    ab = _h(banded.normal_band(dev(rd), dev(w), dev(c)))
    np.testing.assert_allclose(_h(banded.band_to_dense(xp.asarray(ab))), A, atol=1e-12)
    y = rng.normal(size=w.shape)
    b = sum(c[f] * (R[f].T @ (w[f] * y[f])) for f in range(w.shape[0]))
    np.testing.assert_allclose(_h(banded.rt_dot(dev(rd), dev(w * y), dev(c))), b, atol=1e-12)
    x = rng.normal(size=A.shape[0])
    np.testing.assert_allclose(_h(banded.band_apply(xp.asarray(ab), dev(x))), A @ x, atol=1e-11)


def test_solve_and_inverse_band(xp, system, rng):
    rd, w, c, R, A = system
    A = A.copy()
    A[7, :] = A[:, 7] = 0.0  # an unconstrained parameter: left at 0, as desispec does
    ab = backend.to_device(np.array([np.concatenate([np.diagonal(A, -m), np.zeros(m)])
                                     for m in range(rd.shape[1])]), xp)
    b = rng.normal(size=A.shape[0])
    keep = np.arange(A.shape[0]) != 7
    x = _h(banded.solve_band(ab, backend.to_device(b, xp)))
    ref = np.zeros_like(b)
    ref[keep] = np.linalg.solve(A[np.ix_(keep, keep)], b[keep])
    np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-12)
    inv = np.linalg.pinv(A)
    band = _h(banded.inverse_band(ab, chunk=37))
    for m in range(band.shape[0]):
        np.testing.assert_allclose(band[m, :A.shape[0] - m], np.diagonal(inv, -m), rtol=1e-8,
                                   atol=1e-10)
    rmean = rd.mean(axis=0)
    Rm = to_dense(rmean)
    var = _h(banded.convolved_variance(xp.asarray(band), backend.to_device(rmean, xp)))
    np.testing.assert_allclose(var, np.diag(Rm @ inv @ Rm.T), rtol=1e-8, atol=1e-12)


def test_spline_recovers_a_cubic_and_is_batched(xp, rng):
    x = np.arange(0, 800, 0.8)
    y = 1 + 1e-3 * x - 2e-6 * x ** 2 + 1e-9 * x ** 3
    Y = np.tile(y, (4, 1))
    W = np.ones_like(Y)
    W[1, 100:400] = 0      # a gap longer than the knot spacing
    W[2, :30] = 0          # first valid point moves: other knots
    W[3, ::2] = 0
    out, failed = spline_fit(*(backend.to_device(a, xp) for a in (x, x, Y, W)), 5.0)
    assert not _h(failed).any()
    np.testing.assert_allclose(_h(out), Y, atol=1e-9)


def test_spline_reports_failures(xp):
    x = np.arange(50.0)
    Y = np.ones((2, 50))
    W = np.zeros_like(Y)
    W[0] = 1
    W[1, :3] = 1           # 3 points: FITPACK needs at least 4 for a cubic
    _, failed = spline_fit(*(backend.to_device(a, xp) for a in (x, x, Y, W)), 5.0)
    assert list(_h(failed)) == [False, True]


@pytest.mark.interop
def test_spline_matches_desispec_spline_fit(rng):
    linalg = pytest.importorskip("desispec.linalg")
    wave = np.arange(3600, 5800, 0.8)
    nf = 8
    y = 1 + 0.1 * np.sin(wave / 100.)[None, :] + 0.01 * rng.normal(size=(nf, wave.size))
    ivar = 1e4 * rng.uniform(0.5, 2, size=y.shape)
    ivar[3, :50] = 0
    ivar[4, 1000:1100] = 0
    ivar[5, -7:] = 0
    ivar[6, ::3] = 0
    res = np.array([5.0, 5.0, 7.0, 5.0, 5.0, 6.0, 5.0, 9.0])
    out, failed = spline_fit(wave, wave, y, ivar, res, res_min=5.0)
    assert not failed.any()
    for f in range(nf):
        w = ivar[f] > 0
        ref = linalg.spline_fit(wave, wave[w], y[f, w], res[f], ivar[f, w])
        np.testing.assert_allclose(out[f], ref, rtol=0, atol=1e-9)


def test_masked_median_and_interp(xp, rng):
    a = rng.normal(size=(30, 20))
    v = rng.random((30, 20)) > 0.4
    v[:, 3] = False
    m = _h(masked_median(backend.to_device(a, xp), backend.to_device(v, xp), 0, default=-1.0))
    ref = [np.median(a[v[:, i], i]) if v[:, i].any() else -1.0 for i in range(20)]
    np.testing.assert_allclose(m, ref)
    x = np.arange(100.0) * 1.5
    y = rng.normal(size=(4, 100))
    g = rng.random((4, 100)) > 0.5
    xq = np.linspace(-5, 160, 300)
    mi = _h(masked_interp(*(backend.to_device(t, xp) for t in (xq, x, y, g))))
    ref = np.array([np.interp(xq, x[g[k]], y[k, g[k]]) for k in range(4)])
    np.testing.assert_allclose(mi, ref, atol=1e-12)


def test_run_length_and_top_k(xp):
    b = np.zeros((3, 20), bool)
    b[0, 2:5] = b[0, 8:15] = True
    b[1, -3:] = True
    assert list(_h(max_run_length(backend.to_device(b, xp)))) == [7, 3, 0]
    s = np.array([[5.0, 1.0, 7.0, 3.0, 9.0]])
    got = _h(top_k_mask(backend.to_device(s, xp), backend.to_device(s > 2, xp), 2))
    assert got.tolist() == [[False, False, True, False, True]]


def test_resample_flux_conserves_flux(xp, rng):
    x = np.sort(rng.uniform(3000, 10000, 4000))
    f = rng.normal(size=(2, 4000)) + 5
    xo = np.arange(3600, 5800, 0.8)
    out = _h(resample_flux(*(backend.to_device(t, xp) for t in (xo, x, f))))
    # exact integral over the output range of the piecewise-linear input: trapezoids on
    # its own nodes plus the two range ends
    lo, hi = xo[0] - 0.4, xo[-1] + 0.4
    pts = np.concatenate([[lo], x[(x > lo) & (x < hi)], [hi]])
    integ = np.array([np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(pts))
                      for v in (np.interp(pts, x, r) for r in f)])
    np.testing.assert_allclose((out * 0.8).sum(axis=1), integ, rtol=1e-10)


@pytest.mark.interop
def test_resample_flux_matches_desispec(rng):
    interp = pytest.importorskip("desispec.interpolation")
    x = np.sort(rng.uniform(3000, 10000, 4000))
    f = rng.normal(size=(3, 4000)) + 5
    for xo in (np.arange(3600, 5800, 0.8), np.arange(2900, 3100, 0.8)):
        ref = np.array([interp.resample_flux(xo, x, r) for r in f])
        np.testing.assert_allclose(resample_flux(xo, x, f), ref, rtol=1e-10, atol=1e-10)
