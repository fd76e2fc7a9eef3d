"""Simulator truth spectra: units, line integrals and broadband fluxes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from gpuspec.sim import spectra as sp
from gpuspec.sim.targets import make_targets


def test_bin_gauss_is_the_bin_integral():
    wave = np.arange(5000.0, 5010.0, 0.8)
    for c, s in ((5003.3, 0.05), (5004.0, 0.7), (5001.1, 2.0)):
        got = sp.bin_gauss(wave, 0.8, c, s)
        g = lambda x: np.exp(-0.5 * ((x - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))  # noqa
        ref = [quad(g, w - 0.4, w + 0.4, points=[c], epsabs=1e-13)[0] for w in wave]
        np.testing.assert_allclose(got, ref, atol=1e-10)


def test_calib_vector_units():
    """Photons per 0.8 Å bin for f_λ = 1e-17 erg/s/cm²/Å: E = hc/λ per photon."""
    h, c = 6.62607015e-27, 2.99792458e18  # erg s, Å/s
    lam = 6500.0
    n = 1e-17 * 0.8 * 900.0 * sp.AREA_CM2 * sp.throughput("r", lam) / (h * c / lam)
    assert sp.calib_vector("r", [lam], 0.8, 900.0)[0] == pytest.approx(n, rel=1e-8)
    # linear in exposure time and bin width
    assert sp.calib_vector("r", [lam], 0.4, 450.0)[0] == pytest.approx(n / 4, rel=1e-12)


def test_emission_lines_integrate_to_their_flux():
    t = make_targets(2, 0, 100)
    wave = np.arange(3000.0, 11000.0, 0.8)
    full = sp.object_flux(t, wave, 0.8)
    t.em_flux[:] = 0.0
    cont = sp.object_flux(t, wave, 0.8)
    t2 = make_targets(2, 0, 100)
    # part of each Gaussian line inside the grid [wave[0]-0.4, wave[-1]+0.4]
    from scipy.stats import norm

    lo, hi = wave[0] - 0.4, wave[-1] + 0.4
    inside = norm.cdf(hi, t2.em_wave, t2.em_sigma) - norm.cdf(lo, t2.em_wave, t2.em_sigma)
    expected = (t2.em_flux * inside).sum(axis=1)
    np.testing.assert_allclose(((full - cont) * 0.8).sum(axis=1), expected, rtol=1e-6, atol=1e-9)
    assert (expected > 0).sum() >= 50  # ELGs and QSOs have lines in range


def test_broadband_fluxes_match_the_continuum():
    """FLUX_R (nanomaggies, AB) of galaxies and QSOs is their continuum f_λ at 6400 Å."""
    t = make_targets(1, 2, 200)
    fnu = t.flux_r * 3631e-9 * 1e-23          # erg/s/cm²/Hz
    flam = fnu * 2.99792458e18 / 6400.0 ** 2 / 1e-17
    sky = t.kind == "SKY"
    sci = np.isin(t.kind, ["ELG", "LRG", "QSO"])
    t.em_flux[:] = 0.0
    t.ab_depth[:] = 0.0
    got = sp.object_flux(t, np.array([6400.0]), 0.8)[:, 0]
    np.testing.assert_allclose(got[sci], flam[sci], rtol=1e-9)
    assert np.all(got[sky] == 0) and np.all(t.flux_r[sky] == 0)
    mag = 22.5 - 2.5 * np.log10(t.flux_r[~sky])
    np.testing.assert_allclose(mag, t.mag_r[~sky], atol=1e-9)


@pytest.mark.slow
def test_standard_stars_are_library_templates_with_their_magnitudes():
    """A standard star is its load_templates() template, Doppler-shifted and scaled:
    FLUX_G/R/Z are the synthetic magnitudes (the ones fit_stdstars normalises with) of
    the truth spectrum, and the spectrum's shape is the template's."""
    from gpuspec.calibrate.templates import load_templates, synthetic_mag
    from gpuspec.sim.stars import C_KMS, STD_TEFF_RANGE, star_library

    lib = load_templates()
    ext = star_library()
    i0 = int(np.searchsorted(ext.wave, lib.wave[0]))
    assert np.array_equal(ext.flux[:, i0:i0 + lib.wave.size], lib.flux)   # same generator
    t = make_targets(3, 1, 500)
    std = np.flatnonzero(t.kind == "STD")
    assert std.size == 20 and np.all(t.template[std] >= 0) and np.all(t.template[t.kind != "STD"] == -1)
    assert np.all((t.teff[std] >= STD_TEFF_RANGE[0]) & (t.teff[std] <= STD_TEFF_RANGE[1]))
    wave = np.arange(3600.0, 9900.0, 0.8)
    f = sp.object_flux(t, wave, 0.8)[std]
    for b, col in (("G", t.flux_g), ("R", t.flux_r), ("Z", t.flux_z)):
        m = synthetic_mag(wave, f, b)
        np.testing.assert_allclose(m, 22.5 - 2.5 * np.log10(col[std]), atol=2e-3)
    # the shape: template resampled at the rest-frame wavelengths, up to the scale
    k = 3
    rest = wave / (1 + t.vrad[std[k]] / C_KMS)
    ref = np.interp(rest, lib.wave, lib.flux[t.template[std[k]]])
    ratio = f[k] / ref
    assert np.std(ratio[100:-100]) / np.mean(ratio[100:-100]) < 0.01


def test_sky_lines_and_continuum():
    sky = sp.make_sky(1)
    wave = np.arange(5500.0, 5700.0, 0.8)
    f = sky.flux(wave, 0.8)
    cont = np.interp(wave, sky.cont_x, sky.cont_y)
    sel = (sky.line_wave > 5510) & (sky.line_wave < 5690)
    assert sel.sum() >= 1
    assert ((f - cont) * 0.8).sum() == pytest.approx(sky.line_flux[sel].sum(), rel=1e-9)
    # unresolved: the 5578.89 Å line sits in one or two bins
    k = np.argmax(f)
    assert abs(wave[k] - 5578.89) <= 0.4 + 1e-9
    assert np.all(sky.flux(wave, 0.8, scale=2.0) == pytest.approx(2 * f))


def test_atmosphere_lamp_and_fiber_throughput():
    """The light path of gpuspec.sim.instrument: extinction falls to the red, the system
    throughput is atmosphere × instrument, the lamp's level does not depend on the grid
    it is evaluated on, and calibrate.synthetic's throughputs use the same formula."""
    from gpuspec.calibrate import synthetic
    from gpuspec.sim import instrument as ins

    w = np.array([3600.0, 5000.0, 7000.0, 9000.0])
    k = ins.atmosphere_extinction(w)
    assert np.all(np.diff(k) < 0) and 0.4 < k[0] < 0.7 and k[-1] < 0.05
    np.testing.assert_allclose(ins.throughput("b", w[:2], airmass=1.3),
                               ins.instrument_throughput("b", w[:2]) * 10 ** (-0.4 * 1.3 * k[:2]))
    full = np.arange(3600.0, 5800.0, 0.5)
    assert ins.flat_lamp("b", full).max() == pytest.approx(2e4, rel=1e-3)
    part = np.arange(5000.0, 5100.0, 0.8)
    np.testing.assert_allclose(ins.flat_lamp("b", part),
                               np.interp(part, full, ins.flat_lamp("b", full)), rtol=1e-4)
    g = np.random.default_rng([9, 7001]).normal(size=(3, 30))
    wave = np.arange(5000.0, 6000.0, 10.0)
    t = ins.fiber_throughput(1 + 0.03 * g[0], g[1], g[2], wave)
    np.testing.assert_allclose(synthetic.fiber_throughput(30, wave, seed=9),
                               t / np.median(t, axis=0), rtol=1e-12)
    x = (wave - 6700.0) / 3100.0
    np.testing.assert_allclose(t[4], (1 + 0.03 * g[0, 4]) * (1 + 0.02 * g[1, 4] * x
                                                            + 0.006 * g[2, 4] * x ** 2))
