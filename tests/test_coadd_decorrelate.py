"""The decorrelation of the spectroperfectionism coadd: Zolotarev's rational approximation
against desispec's eigendecomposition, the Numba twins against the array path, the eigh
fallback, zero rows, and the Cinv accumulation twin.

The exact reference is a dense ``eigh`` of every block (desispec's method, ``method="eigh"``);
the default method agrees with it to ~1e-11 relative (the scalar approximation error is
9e-12 on its interval); bounds below are set a few times above what is achieved.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_reference

from gpuspec.coadd import decorrelate
from gpuspec.coadd import cinv, cinv_cpu, sqrtm_band, sqrtm_band_cpu
from gpuspec.coadd.synth import SHORT_RANGES, make_spectra

needs_numba = pytest.mark.skipif(not sqrtm_band_cpu.available(), reason="needs numba")


def _gauss_blocks(nblock, n, seed, hw=5, decouple=()):
    """Lower bands of ``C = Rᵀ N R`` (Gaussian resolution, half-width ``hw``), like the coadd's
    blocks; rows in ``decouple`` made decoupled diagonal entries."""
    rng = np.random.default_rng(seed)
    b = 2 * hw
    W0 = np.zeros((nblock, n, b + 1))
    C = np.zeros((nblock, n, n))
    for k in range(nblock):
        sig = rng.uniform(0.8, 1.4)
        i = np.arange(n)
        R = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sig) ** 2)
        R[np.abs(i[:, None] - i[None, :]) > hw] = 0
        R /= R.sum(axis=0, keepdims=True)
        C[k] = R.T @ (rng.uniform(0.5, 2.0, n)[:, None] * R)
        for r in decouple:
            d = C[k, r, r]
            C[k, r, :] = C[k, :, r] = 0
            C[k, r, r] = d
        for d in range(b + 1):
            W0[k, : n - d, d] = np.diagonal(C[k], d)
    rhs = rng.normal(size=(nblock, n))
    return W0, rhs, C


def _exact(C, rhs, h):
    L, V = np.linalg.eigh(C)
    Q = (V * np.sqrt(L)[:, None, :]) @ np.swapaxes(V, 1, 2)
    n = C.shape[1]
    qb = np.stack([np.concatenate([np.diagonal(Q, d, 1, 2), np.zeros((len(C), d))], 1)
                   for d in range(h + 1)], axis=2)
    y = np.einsum("bik,bk->bi", V / np.sqrt(L)[:, None, :], np.einsum("bki,bk->bi", V, rhs))
    return qb, Q.sum(axis=2), y, n


def _rel(a, r):
    return float(np.max(np.abs(a - r)) / np.max(np.abs(r)))


@pytest.mark.parametrize("npoles,kappa", [(16, 1e4), (32, 1e9)])
def test_zolotarev_coefficients(npoles, kappa):
    """The rational approximation of x^{-1/2} on [1, κ]: relative error at most ~1e-11 at
    random points, equioscillating (its reported error is reached).

    At 32 poles on [1, 1e9] the error is the float64 rounding floor of the partial-fraction
    sum, not the approximation's (36 poles give 1.2e-11 too): 9e-12 in earlier runs,
    1.03e-11 with numpy 2.4.6 / scipy 1.17.1. The bound leaves that floor room; 28 poles
    (1.7e-10) would fail it."""
    d0, a, c, delta = sqrtm_band.zolotarev_invsqrt(npoles, kappa)
    assert delta < 1.5e-11 and np.all(c > 0)
    x = np.exp(np.random.default_rng(1).uniform(0, np.log(kappa), 5000))
    r = d0 * (1 + np.sum(a[:, None] / (x[None] + c[:, None]), axis=0))
    err = np.abs(1 - np.sqrt(x) * r)
    assert err.max() < 1.5e-11
    assert err.max() > 0.3 * delta
    # outside the interval the error grows: the qualification check is needed
    xo = np.array([0.01 * 1.0])
    assert np.abs(1 - np.sqrt(xo) * d0 * (1 + np.sum(a / (xo + c)))) > 1e-6


def test_band_sqrt_array_path_vs_eigh(xp):
    """``Q = C^{1/2}`` pieces by banded factorisations equal the dense eigendecomposition
    (achieved ~2e-12; bound 5e-11), on numpy and on the CuPy path."""
    from gpuspec.backend import to_host

    W0, rhs, C = _gauss_blocks(5, 60, seed=2)
    qb, s, y, ok = sqrtm_band.band_sqrt(xp.asarray(W0), xp.asarray(rhs), 5, xp)
    rq, rs, ry, _ = _exact(C, rhs, 5)
    assert np.all(to_host(ok))
    assert _rel(to_host(qb), rq) < 5e-11
    assert _rel(to_host(s), rs) < 5e-11
    assert _rel(to_host(y), ry) < 5e-11


@needs_numba
def test_numba_twin_matches_array_path():
    """With the array path's single approximation the twin gives its numbers up to the
    summation order of the 32 pole terms, whose cancellation amplifies rounding (achieved
    3e-15 on Case C blocks, 9e-12 here with a random right-hand side); with its default
    tiers it stays within 5e-11 of the exact result, except for ``y = C^{-1/2}·rhs`` on the
    ill-conditioned blocks: there the rounding of the shifted solves, ~ε·κ, dominates the
    approximation's 9e-12 (achieved per block: 2.6e-11 at κ = 8.8e5, 4.4e-11 at 1.8e6 and
    1.0e-10 at 3.3e6 on an AMD EPYC, below 5e-11 on an Intel Xeon), so its bound per block
    scales with κ above 1e6."""
    W0, rhs, C = _gauss_blocks(7, 80, seed=3, decouple=(0, 41))
    a = sqrtm_band.band_sqrt(W0, rhs, 5, np)
    t = sqrtm_band_cpu.band_sqrt(W0, rhs, 5, tiers=((sqrtm_band.NPOLES, sqrtm_band.KAPPA),))
    for x, z in zip(a[:3], t[:3]):
        assert _rel(z, x) < 5e-11
    assert np.array_equal(a[3], t[3])
    qb, s, y, ok, tier = sqrtm_band_cpu.band_sqrt(W0, rhs, 5, return_tier=True)
    rq, rs, ry, _ = _exact(C, rhs, 5)
    assert np.all(ok) and set(tier.tolist()) <= set(range(len(sqrtm_band_cpu.TIERS)))
    assert len(set(tier.tolist())) > 1                 # several tiers exercised
    assert _rel(qb, rq) < 5e-11 and _rel(s, rs) < 5e-11
    kappa = np.linalg.cond(C)
    for k in range(len(C)):
        assert _rel(y[k], ry[k]) < 5e-11 * max(1.0, kappa[k] / 1e6), (k, kappa[k])
    # other lane widths pack the blocks differently: same numbers up to the summation order
    # of the poles (amplified by their cancellation: achieved 9e-12)
    q2 = sqrtm_band_cpu.band_sqrt(W0, rhs, 5, lanes=32)[0]
    assert _rel(q2, qb) < 1e-10


@pytest.mark.parametrize("path", ["array", pytest.param("numba", marks=needs_numba)])
def test_band_sqrt_flags_blocks_outside_its_interval(path):
    """A numerically singular block (not a decoupled zero row) is flagged, not silently wrong."""
    W0, rhs, C = _gauss_blocks(3, 50, seed=4)
    v = np.linspace(-1, 1, 50)                         # remove one direction from block 1
    v /= np.linalg.norm(v)
    Cs = C[1] - (v @ C[1] @ v) * np.outer(v, v)
    for d in range(W0.shape[2]):
        W0[1, : 50 - d, d] = np.diagonal(Cs, d)
    if path == "array":
        ok = sqrtm_band.band_sqrt(W0, rhs, 5, np)[3]
    else:
        ok = sqrtm_band_cpu.band_sqrt(W0, rhs, 5)[3]
    assert ok.tolist() == [True, False, True]


def _decorrelate_ref():
    import fitsio

    with fitsio.FITS(require_reference("caseC_coadd", "decorrelate.fits")) as fx:
        return fx[0].read_header()["WAVEBIN"], fx["CINV_BAND"].read(), fx["CINVF"].read()


def test_default_method_vs_eigh_reference_path():
    """Case C: the default decorrelation against desispec's method, in σ units for the flux
    (achieved 6e-10 σ, 3e-11 relative ivar, 1e-11 resolution)."""
    wavebin, cb, cf = _decorrelate_ref()
    fz, iz, rz = decorrelate(cb, cf, wavebin, backend="numpy")
    fe, ie, re = decorrelate(cb, cf, wavebin, method="eigh", backend="numpy")
    assert np.max(np.abs(fz - fe) * np.sqrt(ie)) < 1e-8
    assert _rel(iz, ie) < 2e-10
    assert np.max(np.abs(rz - re)) < 1e-10
    with pytest.raises(ValueError, match="method"):
        decorrelate(cb, cf, wavebin, method="cholesky", backend="numpy")


def _resample_case():
    from gpuspec.coadd.spectroperf import _bands_data, min_wavebin
    from gpuspec.io.spectra import read_spectra

    s = read_spectra(require_reference("caseC_coadd", "input_spectra.fits"))
    w = read_spectra(require_reference("caseC_coadd", "resample_single.fits")).wave["r"]
    nrow = s.flux["r"].shape[0]
    U, cf = cinv.accumulate_upper(_bands_data(s, np, False), w, np.arange(nrow), nrow, np)
    return cinv.upper_to_band(U, np), cf, min_wavebin(w)


@pytest.mark.parametrize("path", ["array", pytest.param("numba", marks=needs_numba)])
def test_singular_block_goes_through_eigh(monkeypatch, path):
    """Case C's single-exposure resample has one singular block (an eigenvalue −8e-17 of its
    largest): it is recomputed by the eigh reference, so the output equals the eigh path's."""
    from gpuspec.coadd import decorrelate as D

    mod = __import__("gpuspec.coadd.decorrelate", fromlist=["_pieces_eigh"])
    if path == "array":
        monkeypatch.setenv("GPUSPEC_COADD_NUMBA", "0")
    cb, cf, wb = _resample_case()
    calls = []
    real = mod._pieces_eigh

    def spy(W0, *a, **k):
        calls.append(W0.shape[0])
        return real(W0, *a, **k)

    monkeypatch.setattr(mod, "_pieces_eigh", spy)
    fz, iz, rz = D(cb, cf, wb, backend="numpy")
    assert calls == [1]                                  # one block, one fallback call
    monkeypatch.setattr(mod, "_pieces_eigh", real)
    fe, ie, re = D(cb, cf, wb, method="eigh", backend="numpy")
    assert _rel(iz, ie) < 2e-10
    assert np.max(np.abs(fz - fe) * np.sqrt(ie)) < 1e-8
    assert np.max(np.abs(rz - re)) < 1e-10


def test_zero_rows_as_desispec_floor():
    """Output pixels without data (a grid wider than the input): ivar = 1e-15/mean(diag),
    flux 0 and a unit resolution diagonal, as the floored eigenvalue gives."""
    from gpuspec.coadd import spectroperf_resample

    sp, _ = make_spectra(ntarget=2, nexp=1, bands=("r",), ranges=SHORT_RANGES, seed=5)
    w = np.arange(5700.0, 6700.0, 0.8)                   # 60 Å below, 100 Å above the data
    a = spectroperf_resample(sp, w, backend="numpy")
    e = spectroperf_resample(sp, w, backend="numpy", method="eigh")
    out = (w < sp.wave["r"][0] - 10) | (w > sp.wave["r"][-1] + 10)
    for r in (a, e):
        iv, fl, rd = r.ivar["r"], r.flux["r"], r.resolution_data["r"]
        # the floor 1e-15/mean(diag Cinv), the same in every empty pixel of a spectrum
        assert np.all(iv[:, out] < 1e-9 * iv.max()) and np.all(iv[:, out] > 0)
        assert np.all(iv[:, out] == iv[:, out][:, :1])
        assert np.all(fl[:, out] == 0)
        np.testing.assert_allclose(rd[:, 5, out], 1.0, rtol=1e-12)
    assert _rel(a.ivar["r"], e.ivar["r"]) < 2e-10
    assert np.max(np.abs(a.flux["r"] - e.flux["r"]) * np.sqrt(e.ivar["r"])) < 1e-8


@needs_numba
def test_cinv_twin_matches_array_path(monkeypatch):
    """The Numba accumulation of Cinv/Cinvf equals the array path's scatter-adds, on a grid
    that interpolates (1.1 Å output steps) with masked pixels and a bad fiber."""
    from gpuspec.coadd.spectroperf import _bands_data

    sp, _ = make_spectra(ntarget=3, nexp=2, ranges=SHORT_RANGES, seed=6)
    sp.mask["r"][1, 100:130] = 1
    w = np.arange(5010.0, 7390.0, 1.1)
    group = np.array([0, 1, 2, 0, -1, 2])
    bd = _bands_data(sp, np, True)
    U1, f1 = cinv.accumulate_upper(bd, w, group, 3, np)
    monkeypatch.setenv("GPUSPEC_COADD_NUMBA", "0")
    assert not cinv_cpu.available()
    U2, f2 = cinv.accumulate_upper(bd, w, group, 3, np)
    assert U1.shape == U2.shape
    assert _rel(U1, U2) < 1e-13 and _rel(f1, f2) < 1e-13
    band = cinv.upper_to_band(U1, np)
    assert np.array_equal(cinv.band_to_upper(band, np), U1)


def test_flop_counts():
    """The cost-model counts (for perf/costmodel.py) scale with the blocks."""
    from gpuspec.coadd.decorrelate import decorrelate_flops

    a = decorrelate_flops(10, 7781, 0.8, 11)
    b = decorrelate_flops(20, 7781, 0.8, 11)
    e = decorrelate_flops(10, 7781, 0.8, 11, method="eigh")
    assert a["nblock"] == 630 and b["flops"] == 2 * a["flops"]
    assert 1e6 < a["flops"] / a["nblock"] < 1e7 < e["flops"] / e["nblock"]
