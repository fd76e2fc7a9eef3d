"""Second extraction pass with model-based pixel ivar, on a simulated exposure with truth.

preproc's data-based IVAR biases extracted fluxes low; ``model_ivar=True`` must remove
that bias. Both halves are checked against the simulator's truth (not against gpuspec
output), so the test fails if either the bias or its correction changes.
"""

import os

import numpy as np
import pytest

from gpuspec import resolution

NIGHT, EXPID = 20250115, 100
WAVE = (6000.0, 6300.0, 0.8)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from gpuspec.preproc import preproc_file
    from gpuspec.sim import read_truth, simulate_night

    d = str(tmp_path_factory.mktemp("simvar") / "D")
    simulate_night(d, cameras="r0", nspec=25, seed=11, wave_ranges={"r": (5980.0, 6320.0)},
                   backend_name="numpy")
    e = f"{EXPID:08d}"
    raw = os.path.join(d, "raw", str(NIGHT), e, f"desi-{e}.fits.fz")
    pre = os.path.join(d, f"preproc-r0-{e}.fits")
    cal = {k: os.path.join(d, "calib", f"{k}-r0.fits") for k in ("bias", "dark", "pixflat", "mask")}
    preproc_file(raw, "r0", pre, fibermap=os.path.join(os.path.dirname(raw), f"fibermap-{e}.fits"),
                 backend="numpy", **cal)
    truth = read_truth(os.path.join(d, "truth", f"truth-{e}.fits"), "r0")
    return d, pre, os.path.join(d, "psf", "psf-r0.fits"), truth


def _chi(framefile, truth):
    from gpuspec.io import read_frame

    fr = read_frame(framefile)
    w = truth["wave"]
    i0 = int(np.argmin(np.abs(w - fr.wave[0])))
    n = fr.nwave
    assert np.allclose(w[i0:i0 + n], fr.wave)
    model = resolution.apply(fr.resolution_data.astype(np.float64),
                             truth["phot"][: fr.nspec, i0:i0 + n] / truth["dw"])
    chi = (fr.flux - model) * np.sqrt(fr.ivar)
    good = (fr.ivar > 0) & (fr.mask == 0)
    good[:, :10] = good[:, -10:] = False
    return chi[good], fr


@pytest.mark.slow
def test_model_ivar_removes_data_weighting_bias(simulated, tmp_path, monkeypatch):
    from gpuspec.extract import extract_file, variance

    d, pre, psf, truth = simulated
    one = extract_file(pre, psf, str(tmp_path / "one.fits"), WAVE, backend="numpy")
    seen = []
    real = variance.model_ivar

    def spy(*a, **k):
        seen.append(k.get("readnoise"))
        return real(*a, **k)

    monkeypatch.setattr(variance, "model_ivar", spy)
    two = extract_file(pre, psf, str(tmp_path / "two.fits"), WAVE, backend="numpy",
                       model_ivar=True)
    # the preproc file's READNOISE plane reaches the model (the only reader of it)
    assert len(seen) == 1 and np.ndim(seen[0]) == 2
    chi1, _ = _chi(one, truth)
    chi2, fr2 = _chi(two, truth)
    # data-based ivar: a clear low bias (about -0.4 sigma on these sky-level spectra)
    print(f"chi data-ivar mean {chi1.mean():.3f} std {chi1.std():.3f}; model-ivar mean {chi2.mean():.3f} std {chi2.std():.3f}")
    assert chi1.mean() < -0.15
    # model-based ivar: unbiased and correctly scaled
    assert abs(chi2.mean()) < 0.08, chi2.mean()
    assert 0.95 < chi2.std() < 1.08, chi2.std()
    assert fr2.meta.get("IVARMODL") is True


# ----------------------------------------------------------------------------- smoothed model

def test_smooth_spectra(xp):
    """Constant spectrum + noise + one sky line + masked bins, on every backend: the
    smooth spectrum is the constant (ends not pulled to 0, masked bins filled), the line
    keeps its unsmoothed flux (desispec's nsig rejection)."""
    from gpuspec import backend
    from gpuspec.extract.variance import smooth_spectra

    rng = np.random.default_rng(5)
    nw, dw = 400, 0.8
    flux = 50.0 + rng.normal(0.0, 5.0, (3, nw))
    ivar = np.full((3, nw), 1 / 25.0)
    flux[:, 200:203] += 400.0                   # a sky line, 80 sigma
    ivar[1, 100:120] = 0.0                      # masked bins
    flux[1, 100:120] = 0.0
    got = backend.to_host(smooth_spectra(xp.asarray(flux), xp.asarray(ivar), dw, xp=xp))
    assert np.array_equal(got[:, 200:203], flux[:, 200:203])
    rest = np.ones(nw, bool)
    rest[200:203] = False
    # a 10 A Gaussian averages ~44 bins: residual noise ~5/sqrt(44/2) ~ 1; no edge roll-off
    assert np.abs(got[:, rest] - 50.0).max() < 4.0
    assert np.abs(got[:, :5] - 50.0).max() < 4.0 and np.abs(got[1, 100:120] - 50.0).max() < 4.0
    assert np.std(got[:, rest] - 50.0) < 0.5 * 5.0


def _flat_exposure(c, level, nspec, rn, seed):
    """Pixels of ``nspec`` fibers of a constant spectrum (``level`` e/Å) through the
    Case B PSF, with Poisson and read noise; preproc's data-based ivar and the true one."""
    from gpuspec.psf.project import render_spectra

    x0, x1, y0, y1 = c["xyrange"]
    w = c["WAVE"]
    fine = np.arange(w[0] - 10.0, w[-1] + 10.05, 0.1)      # smooth in the photon grid
    truth = render_spectra(c["psf"], np.arange(nspec), fine,
                           np.full((nspec, fine.size), level * 0.1), (y1, x1))[y0:y1, x0:x1]
    rng = np.random.default_rng(seed)
    pix = rng.poisson(truth) + rng.normal(0.0, rn, truth.shape)
    return pix, 1.0 / (np.maximum(pix, 0.0) + rn ** 2), 1.0 / (truth + rn ** 2)


@pytest.mark.parametrize("smooth", [True, pytest.param(False, marks=pytest.mark.xfail(
    strict=True, reason="projecting the raw first-pass spectra biases the flux ~1 % low"))])
def test_model_ivar_unbiased_on_flat_spectrum(smooth):
    """A flat, sky-like spectrum (5 e/Å, read noise 3 e): the mean flux extracted with the
    model ivar equals the mean flux extracted with the true pixel variance (same pixels;
    a fixed-weight linear estimate, hence unbiased) within 0.15 %.

    Pairing with the true-variance extraction cancels the pixel noise: the difference
    has a scatter of ~0.02 % here. Achieved: smoothed model −0.02 %; raw first-pass
    model −1.4 % (the bug: sky models biased low). With ``smooth=False``
    the test runs the old model and must fail (strict xfail)."""
    import test_extract as T

    from gpuspec.extract import extract_frame
    from gpuspec.extract.variance import model_ivar

    c = T._load_caseB()
    nspec, level, rn = 10, 5.0, 3.0
    pix, data_ivar, true_ivar = _flat_exposure(c, level, nspec, rn, seed=3)
    x0, x1, y0, y1 = c["xyrange"]
    kw = dict(xyrange=c["xyrange"], backend="numpy", bundlesize=10, nsubbundles=2)
    first = extract_frame(pix, data_ivar, c["psf"], c["WAVE"], 0, nspec, **kw)
    full = np.zeros((y1, x1))
    full[y0:y1, x0:x1] = data_ivar
    mi = model_ivar(c["psf"], np.arange(nspec), c["WAVE"], first.flux, full,
                    readnoise=np.full((y1, x1), rn), flux_ivar=first.ivar if smooth else None)
    two = extract_frame(pix, mi[y0:y1, x0:x1], c["psf"], c["WAVE"], 0, nspec, **kw)
    ref = extract_frame(pix, true_ivar, c["psf"], c["WAVE"], 0, nspec, **kw)
    e = slice(5, -5)                        # edge bins absorb light from beyond the grid
    bias = (two.flux[:, e] - ref.flux[:, e]).mean() / level
    assert abs(bias) < 1.5e-3, bias
    chi = (two.flux[:, e] - level) * np.sqrt(two.ivar[:, e])
    assert 0.95 < chi.std() < 1.08, chi.std()


def test_signal_model_smooths_sky_lines(xp):
    """Sky lines shared by the fibers (each with its throughput): the signal model puts
    them in the common spectrum, so the model at the line bins has little of the fiber's
    own noise; smoothing alone keeps the raw (noisy) flux there (desispec's 4σ rule)."""
    from gpuspec import backend
    from gpuspec.extract.variance import signal_model, smooth_spectra

    rng = np.random.default_rng(9)
    nspec, nw, dw = 25, 400, 0.8
    sky = np.full(nw, 30.0)
    for c0 in (80, 150, 151, 260, 330):
        sky += 800.0 * np.exp(-0.5 * ((np.arange(nw) - c0) / 1.2) ** 2)
    thru = rng.uniform(0.9, 1.1, (nspec, 1))
    truth = thru * sky
    sig = np.sqrt(truth + 9.0)
    flux = truth + rng.normal(0.0, 1.0, truth.shape) * sig
    ivar = 1.0 / sig ** 2
    line = sky > 300.0
    got = backend.to_host(signal_model(xp.asarray(flux), xp.asarray(ivar), dw, xp=xp))
    raw = backend.to_host(smooth_spectra(xp.asarray(flux), xp.asarray(ivar), dw, xp=xp))
    noise = lambda m: np.std((m - truth)[:, line] / sig[:, line])  # noqa: E731
    assert noise(raw) > 0.8                 # kept raw at the lines: the fiber's own noise
    assert noise(got) < 0.45, noise(got)    # achieved 0.37 (1/sqrt(0.64·25) = 0.25 + residual)
    off = (got - truth)[:, ~line] / sig[:, ~line]          # achieved: std 0.20, max 1.1
    assert np.std(off) < 0.4 and np.abs(off).max() < 2.0, (np.std(off), np.abs(off).max())
