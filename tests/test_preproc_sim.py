"""End to end on a simulated night: gpuspec simulate → preproc_file → compare with the truth.

The simulator knows the photons of every pixel (truth spectra rendered through the
PSF file) and where it put the cosmic rays, so the preprocessed image can be checked
physically: chi = (IMAGE − truth)·sqrt(IVAR) has zero mean and unit variance on the
unmasked pixels, and the injected cosmic rays are flagged COSMIC.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpuspec.sim.psfs import default_template_path

REF_PSF = default_template_path()  # shipped with the package (same file as shared/)
from gpuspec.maskbits import ccdmask

pytestmark = pytest.mark.skipif(not os.path.exists(REF_PSF),
                                reason=f"template PSF not found: {REF_PSF}")

NIGHT, EXPID = 20250115, 100


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    try:
        from gpuspec.sim import read_truth, render_spectra, simulate_night
    except ImportError as exc:  # pragma: no cover - simulator not available
        pytest.skip(f"simulator not available: {exc}")
    from gpuspec.io import read_image
    from gpuspec.preproc import preproc_file
    from gpuspec.psf import read_psf

    d = str(tmp_path_factory.mktemp("sim") / "D")
    simulate_night(d, cameras="r0", nspec=25, seed=5, wave_ranges={"r": (6000.0, 6300.0)},
                   backend_name="numpy")
    e = f"{EXPID:08d}"
    raw = os.path.join(d, "raw", str(NIGHT), e, f"desi-{e}.fits.fz")
    out = os.path.join(d, "preproc", f"preproc-r0-{e}.fits")
    cal = {k: os.path.join(d, "calib", f"{k}-r0.fits") for k in ("bias", "dark", "pixflat",
                                                                  "mask")}
    preproc_file(raw, "r0", out, backend="numpy", **cal)
    img = read_image(out)
    pixflat = read_image_like(cal["pixflat"])
    dark = read_image_like(cal["dark"]) * float(img.meta["EXPTIME"])
    tr = read_truth(os.path.join(d, "truth", f"truth-{e}.fits"), "r0")
    psf = read_psf(os.path.join(d, "psf", "psf-r0.fits"))
    model = render_spectra(psf, np.arange(25), tr["wave"], tr["phot"], img.pix.shape)
    # variance of the truth: Poisson of the expected electrons + read noise, / pixflat²
    pf = np.where(pixflat > 0.001, pixflat, 1.0)
    var = np.maximum(model * pixflat + dark, 0) / pf ** 2 + img.readnoise ** 2
    return img, model, tr, var


def read_image_like(path):
    import fitsio

    return fitsio.read(path).astype(np.float64)


def test_chi_against_truth(reduced):
    img, model, tr, var = reduced
    good = (img.mask == 0) & (img.ivar > 0)
    assert good.mean() > 0.98
    chi = (img.pix - model) / np.sqrt(var)
    c = chi[good]
    assert abs(c.mean()) < 0.03, c.mean()
    assert 0.95 < c.std() < 1.05, c.std()
    # per amplifier too (overscan level and gain of each amp)
    for amp in "ABCD":
        from gpuspec.io.util import parse_sec

        cy, cx = parse_sec(img.meta["CCDSEC" + amp])
        ca = chi[cy, cx][good[cy, cx]]
        assert abs(ca.mean()) < 0.05, (amp, ca.mean())
        assert abs(img.meta["OBSRDN" + amp] - img.meta["RDNOISE" + amp]) < \
            0.15 * img.meta["RDNOISE" + amp], amp
    # preproc's ivar (from the data, biased like desispec's) agrees with the truth variance
    ratio = np.median((1 / img.ivar[good]) / var[good])
    assert abs(ratio - 1) < 0.05, ratio

def test_injected_cosmics_flagged(reduced):
    img, model, tr, var = reduced
    cos = tr["cosmics"]
    y, x = np.asarray(cos["Y"]), np.asarray(cos["X"])
    # bright enough to be seen: > 10 sigma above the truth
    dev = (img.pix[y, x] - model[y, x]) * np.sqrt(np.maximum(img.ivar[y, x], 1e-30))
    bright = dev > 10
    assert bright.sum() > 10
    flagged = (img.mask[y, x] & ccdmask.COSMIC) != 0
    assert flagged[bright].mean() > 0.95
    # few false detections: COSMIC pixels lie near an injected hit (dilation + repair)
    near = np.zeros(img.pix.shape, bool)
    for dy in range(-6, 7):
        for dx in range(-6, 7):
            yy = np.clip(y + dy, 0, near.shape[0] - 1)
            xx = np.clip(x + dx, 0, near.shape[1] - 1)
            near[yy, xx] = True
    cmask = (img.mask & ccdmask.COSMIC) != 0
    assert (cmask & ~near).sum() < 0.01 * cmask.sum() + 20
