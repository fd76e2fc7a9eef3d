"""The standard-star fit recovers the simulator's templates at demo-like S/N (fast).

The stars are templates of gpuspec's library seen through the simulator's instrument
(:func:`gpuspec.sim.instrument.calib_vector`: a piecewise-linear b throughput with kinks at
3600, 4000, 4600 and 5200 Å, plus the atmosphere), on the README demo's wavelength grids
(b 3600–5800, r 5760–7620, z 7520–9824 Å, 0.8 Å) and at its magnitudes (r 16–18: blue
S/N 25–65 per √Å). The sky and fiberflat given to the fit are the truth, so only the fit
is tested. Without desispec's second pass (templates times the smoothed data/best-model
ratio, refitted) the throughput's imprint on the running-median continuum made the fit
pick templates 250 K too cool (issue 10: the demo's b-band coadds 3–7 % low).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec.calibrate.containers import FiberFlat, SkyModel
from gpuspec.calibrate.stdstars import fit_stdstars
from gpuspec.calibrate.synthetic import convolve, make_exposure
from gpuspec.calibrate.templates import synthetic_mag
from gpuspec.calibrate.util import resample_flux

DEMO_WAVES = {"b": np.arange(3600.0, 5800.0 - 0.4, 0.8),
              "r": np.arange(5760.0, 7620.0 - 0.4, 0.8),
              "z": np.arange(7520.0, 9824.0 - 0.4, 0.8)}
NSTD = 12


@pytest.fixture(scope="module")
def fitted():
    exp = make_exposure(nfiber=24, nsky=4, nstd=NSTD, seed=3, waves=DEMO_WAVES,
                        star_mag_r=(16.2, 18.0))
    tr = exp.truth
    ffs, skies = {}, {}
    for cam, fr in exp.frames.items():
        b = cam[0]
        thru, n = tr["throughput"][b], fr.flux.shape
        ffs[cam] = FiberFlat(wave=fr.wave, fiberflat=thru, ivar=np.full(n, 1e8),
                             mask=np.zeros(n, np.int32), meanspec=np.ones(n[1]))
        sky = convolve(tr["resolution"][b], thru * (tr["calib"][b] * tr["sky"][b])[None]) / thru
        skies[cam] = SkyModel(wave=fr.wave, flux=sky, ivar=np.full(n, 1e8),
                              mask=np.zeros(n, np.int32))
    models = fit_stdstars(exp.frames, skies, ffs, backend="numpy")
    return exp, models


def test_fit_recovers_the_true_temperatures_at_demo_snr(fitted):
    exp, models = fitted
    tr = exp.truth
    std = list(tr["std_fibers"])
    meta = models.metadata
    assert len(meta) == NSTD
    k = [std.index(f) for f in meta["FIBER"]]
    dteff = meta["TEFF"] - tr["std_teff"][k]
    # without the second pass: 8 of 12 stars at -250 K; with it 11 of 12 exact
    assert (dteff == 0).sum() >= NSTD - 2, dteff
    assert np.abs(dteff).max() <= 250, dteff
    assert abs(dteff.mean()) < 50, dteff


def test_fitted_models_have_the_true_b_and_z_flux(fitted):
    """The calibration's b/z levels: model g and z synthetic magnitudes vs the truth."""
    exp, models = fitted
    tr = exp.truth
    std = list(tr["std_fibers"])
    k = [std.index(f) for f in models.metadata["FIBER"]]
    out = {}
    for band in ("G", "Z"):
        mm = synthetic_mag(models.wave, models.flux, band)
        tm = synthetic_mag(tr["template_wave"], tr["template_flux"][k], band)
        out[band] = 10 ** (-0.4 * (mm - tm))          # model / true flux in the band
    # without the second pass g read 0.93-0.96 of the truth for 8 stars; with it 11 of 12
    # are within 0.9 % (the twelfth, 250 K off, 4.5 %; one Teff step is ~4 % in g)
    for band, ratio in out.items():
        assert (np.abs(ratio - 1) < 0.015).sum() >= NSTD - 1, (band, ratio)
        assert abs(np.median(ratio) - 1) < 0.005, (band, ratio)
        assert abs(ratio.mean() - 1) < 0.01, (band, ratio)
