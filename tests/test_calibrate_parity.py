"""Parity of the calibration steps with the real desispec (0.70) on synthetic frames.

Tolerances (docs/calibrate.md): both codes solve the same float64 equations; the
differences come from summation order, banded vs dense Cholesky and normal equations vs
FITPACK's Givens rotations in the splines, observed <= 3e-11 relative. The bounds below
are ~100x that and far below the data noise (1e-3 per bin at best); any algorithmic
divergence (one rejected pixel more or less, another knot, another iteration count)
moves results by >= 1e-6 and masks must be identical, so a failure is a real difference.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec.calibrate.fiberflat import (apply_fiberflat, autocalib_fiberflat,
                                         average_fiberflat, compute_fiberflat)
from gpuspec.calibrate.fluxcalib import apply_flux_calibration, compute_flux_calibration
from gpuspec.calibrate.sky import compute_sky, subtract_sky

import calib_data as C

pytestmark = pytest.mark.interop
desispec = pytest.importorskip("desispec")

RTOL = 1e-9        # values (fiberflat, sky, calibration, calibrated flux), relative to the max
RTOL_IVAR = 1e-8   # inverse variances, relative


def close(a, b, rtol, what):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, what
    scale = max(np.abs(b).max(), 1e-300)
    err = np.abs(a - b).max() / scale
    assert err <= rtol, f"{what}: max |diff| / max = {err:.3g} > {rtol}"


def close_rel(a, b, rtol, what):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert ((a == 0) == (b == 0)).all(), f"{what}: zeros differ"
    m = b != 0
    err = np.abs(a[m] / b[m] - 1).max() if m.any() else 0.0
    assert err <= rtol, f"{what}: max relative diff {err:.3g} > {rtol}"


def _desi_chain(exp, cam):
    import desispec.fiberflat
    import desispec.sky

    C.quiet()
    dff = desispec.fiberflat.compute_fiberflat(C.desi_frame(exp.flats[cam]))
    dfr = C.desi_frame(exp.frames[cam])
    desispec.fiberflat.apply_fiberflat(dfr, dff)
    dsky = desispec.sky.compute_sky(C.deepcopy(dfr))
    dsub = C.deepcopy(dfr)
    desispec.sky.subtract_sky(dsub, dsky)
    return dff, dfr, dsky, dsub


def _ours(exp, cam):
    ff = compute_fiberflat(exp.flats[cam], backend="numpy")
    fr = apply_fiberflat(exp.frames[cam], ff, backend="numpy")
    sky = compute_sky(fr, backend="numpy")
    return ff, fr, sky, subtract_sky(fr, sky, backend="numpy")


@pytest.fixture(scope="module", params=[False, True], ids=["clean", "defects"])
def chains(request):
    exp = C.exposure(defects=request.param)
    return exp, {cam: (_ours(exp, cam), _desi_chain(exp, cam)) for cam in exp.frames}


@pytest.mark.slow
def test_compute_fiberflat(chains):
    exp, ch = chains
    for cam, ((ff, _, _, _), (dff, _, _, _)) in ch.items():
        close(ff.fiberflat, dff.fiberflat, RTOL, f"{cam} fiberflat")
        close_rel(ff.ivar, dff.ivar, RTOL_IVAR, f"{cam} fiberflat ivar")
        close_rel(ff.meanspec, dff.meanspec, RTOL, f"{cam} meanspec")
        assert np.array_equal(ff.mask, dff.mask), cam
        assert ff.chi2pdf == pytest.approx(dff.chi2pdf, rel=RTOL)


def test_apply_fiberflat(chains):
    exp, ch = chains
    for cam, ((_, fr, _, _), (_, dfr, _, _)) in ch.items():
        close(fr.flux, dfr.flux, RTOL, f"{cam} flat-fielded flux")
        close_rel(fr.ivar, dfr.ivar, RTOL_IVAR, f"{cam} flat-fielded ivar")
        assert np.array_equal(fr.mask, dfr.mask), cam


def test_compute_sky(chains):
    exp, ch = chains
    for cam, ((_, _, sky, _), (_, _, dsky, _)) in ch.items():
        close(sky.flux, dsky.flux, RTOL, f"{cam} sky")
        close_rel(sky.ivar, dsky.ivar, RTOL_IVAR, f"{cam} sky ivar")
        close_rel(sky.stat_ivar, dsky.stat_ivar, RTOL_IVAR, f"{cam} sky stat ivar")
        assert np.array_equal(sky.mask, dsky.mask), cam
        assert sky.nrej == dsky.nrej, cam
        close(sky.throughput_corrections, dsky.throughput_corrections, RTOL,
              f"{cam} THRPUTCORR")
        assert np.array_equal(sky.skytargetid, dsky.skytargetid)


def test_subtract_sky(chains):
    exp, ch = chains
    for cam, ((_, _, _, sub), (_, _, _, dsub)) in ch.items():
        close(sub.flux, dsub.flux, RTOL, f"{cam} sky-subtracted flux")
        close_rel(sub.ivar, dsub.ivar, RTOL_IVAR, f"{cam} sky-subtracted ivar")
        assert np.array_equal(sub.mask, dsub.mask), cam


@pytest.mark.slow
def test_flux_calibration(chains, monkeypatch):
    import desispec.fluxcalibration as dfc_mod

    C.patch_fiber_acceptance(monkeypatch)
    exp, ch = chains
    std = exp.truth["std_fibers"]
    mw, mf = exp.truth["template_wave"], exp.truth["template_flux"]
    for cam, ((_, _, _, sub), (_, _, _, dsub)) in ch.items():
        fc = compute_flux_calibration(sub, mw, mf, std, backend="numpy")
        dfc = dfc_mod.compute_flux_calibration(C.deepcopy(dsub), mw, mf, std)
        close_rel(fc.calib, dfc.calib, RTOL, f"{cam} calibration")
        close_rel(fc.ivar, dfc.ivar, RTOL_IVAR, f"{cam} calibration ivar")
        close_rel(fc.meancalib, dfc.meancalib, RTOL, f"{cam} mean calibration")
        assert np.array_equal(fc.mask, dfc.mask), cam
        assert np.array_equal(fc.stdstar_fibermap["FIBER"], dfc.stdstar_fibermap["FIBER"])
        cf = apply_flux_calibration(sub, fc, backend="numpy")
        dcf = C.deepcopy(dsub)
        dfc.fibercorr = None  # desispec's apply expects the table read back from a file
        dfc_mod.apply_flux_calibration(dcf, dfc)
        close(cf.flux, dcf.flux, RTOL, f"{cam} calibrated flux")
        close_rel(cf.ivar, dcf.ivar, RTOL_IVAR, f"{cam} calibrated ivar")


def test_a_changed_option_is_detected(chains):
    """The comparison can fail: desispec's defaults vs a sky fit clipped at 3.5 sigma."""
    exp, ch = chains
    cam = "r0"
    (_, fr, _, _), (_, _, dsky, _) = ch[cam]
    other = compute_sky(fr, nsig_clipping=3.0, backend="numpy")
    with pytest.raises(AssertionError):
        close(other.flux, dsky.flux, RTOL, "sky")
        close_rel(other.ivar, dsky.ivar, RTOL_IVAR, "sky ivar")
        assert other.nrej == dsky.nrej


def _flats_for_average():
    exp1, exp2, exp3 = (C.exposure(seed=s) for s in (21, 22, 23))
    return [compute_fiberflat(e.flats["b0"], backend="numpy") for e in (exp1, exp2, exp3)]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.slow
def test_average_fiberflat(n):
    import desispec.fiberflat as dff_mod

    flats = _flats_for_average()[:n]
    flats[0].mask[2, 100:110] = 16
    avg = average_fiberflat(flats, backend="numpy")
    dflats = [dff_mod.FiberFlat(f.wave, f.fiberflat.copy(), f.ivar.copy(), f.mask.copy(),
                                f.meanspec.copy(), header=dict(f.meta)) for f in flats]
    davg = dff_mod.average_fiberflat(dflats)
    close(avg.fiberflat, davg.fiberflat, RTOL, "average fiberflat")
    close_rel(avg.ivar, davg.ivar, RTOL_IVAR, "average ivar")
    close_rel(avg.meanspec, davg.meanspec, RTOL, "average meanspec")
    assert np.array_equal(avg.mask, davg.mask)


@pytest.mark.slow
def test_autocalib_fiberflat():
    import desispec.fiberflat as dff_mod
    from astropy.table import Table

    flats = []
    for seed, expid in ((31, 98), (32, 99)):
        exp = C.exposure(seed=seed)
        for sp in (0, 1):
            fr = exp.flats["b0"]
            fr = C.deepcopy(fr)
            fr.meta = dict(fr.meta, CAMERA=f"b{sp}", EXPID=expid)
            fr.fibermap["FIBERASSIGN_X"] += 50.0 * sp
            ff = compute_fiberflat(fr, backend="numpy")
            flats.append(ff)
    ours = autocalib_fiberflat(flats, backend="numpy")
    dflats = [dff_mod.FiberFlat(f.wave, f.fiberflat.copy(), f.ivar.copy(), f.mask.copy(),
                                f.meanspec.copy(), header=dict(f.meta),
                                fibermap=Table(f.fibermap.copy())) for f in flats]
    theirs = dff_mod.autocalib_fiberflat(dflats)
    assert sorted(ours) == sorted(theirs) == [0, 1]
    for sp in ours:
        close(ours[sp].fiberflat, theirs[sp].fiberflat, RTOL, f"autocal {sp}")
        close_rel(ours[sp].ivar, theirs[sp].ivar, RTOL_IVAR, f"autocal ivar {sp}")
        assert np.array_equal(ours[sp].mask, theirs[sp].mask)
        assert np.array_equal(ours[sp].fibermap["FIBERSTATUS"],
                              np.asarray(theirs[sp].fibermap["FIBERSTATUS"]))
