"""Extraction follows desispec's rules: the preproc MASK bits that zero ivar (``MASK & 767``,
BADREADNOISE kept) and BAD2DFIT (chi2pix above 5× its median along fibers and wavelengths).

Runs gpuspec on a small simulated r0 exposure (25 fibers, 6000–6200 Å).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec import io as gio
from gpuspec.extract import extract_file
from gpuspec.extract.files import BAD2DFIT_FACTOR, EXTRACT_MASK, bad2dfit, merge_frames
from gpuspec.frame import Frame
from gpuspec.maskbits import ccdmask, specmask

WAVE = (6000.0, 6200.0, 0.8)


@pytest.fixture(scope="module")
def r0(tmp_path_factory):
    from gpuspec.preproc import preproc_file
    from gpuspec.sim import simulate_night

    root = tmp_path_factory.mktemp("rules")
    info = simulate_night(str(root / "sim"), cameras="r0", nspec=25, nexp=1, seed=5,
                          wave_ranges={"r": WAVE[:2]}, backend_name="numpy")
    sim = info["outdir"]
    e = info["expids"][0]
    raw = f"{sim}/raw/{info['night']}/{e:08d}/desi-{e:08d}.fits.fz"
    cal = {k: f"{sim}/calib/{k}-r0.fits" for k in ("bias", "dark", "pixflat", "mask")}
    pre = str(root / "preproc-r0.fits")
    preproc_file(raw, "r0", pre, fibermap=f"{sim}/raw/{info['night']}/{e:08d}/"
                 f"fibermap-{e:08d}.fits", backend="numpy", **cal)
    psf = f"{sim}/psf/psf-r0.fits"
    base = extract_file(pre, psf, str(root / "frame.fits"), WAVE, backend="numpy")
    return dict(root=root, pre=pre, psf=psf, base=base)


def _variant(r0, name, edit):
    img = gio.read_image(r0["pre"])
    edit(img)
    path = str(r0["root"] / f"preproc-{name}.fits")
    gio.write_image(path, img)
    return gio.read_frame(extract_file(path, r0["psf"], str(r0["root"] / f"frame-{name}.fits"),
                                       WAVE, backend="numpy"))


def _amp_of_traces(img, psffile):
    """CCDSEC slices of the amplifier under fiber 5 at 6100 A (it holds extracted bins)."""
    from gpuspec.io.util import parse_sec
    from gpuspec.psf import read_psf

    psf = read_psf(psffile)
    x = float(psf.x(fibers=[5], wave=np.array([6100.0]))[0, 0])
    y = float(psf.y(fibers=[5], wave=np.array([6100.0]))[0, 0])
    for amp in "ABCD":
        ys, xs = parse_sec(img.meta["CCDSEC" + amp])
        if ys.start <= y < ys.stop and xs.start <= x < xs.stop:
            return ys, xs
    raise AssertionError("no amplifier under the traces")


def test_extract_mask_is_desispec_extractmaskval():
    names = ["BAD", "HOT", "DEAD", "SATURATED", "COSMIC", "PIXFLATZERO", "PIXFLATLOW", "HIGHVAR",
             "BADAMP"]
    assert EXTRACT_MASK == sum(ccdmask.mask(n) for n in names) == 767
    assert not EXTRACT_MASK & ccdmask.BADREADNOISE


@pytest.mark.slow
def test_badreadnoise_amplifier_is_still_extracted(r0):
    """desispec's preproc flags a whole amp BADREADNOISE when its overscan jumps; desispec's
    extraction (MASK & 767) keeps those pixels, and so does gpuspec: the frame is unchanged."""
    def flag(img, bit):
        ys, xs = _amp_of_traces(img, r0["psf"])
        img.mask = img.mask.copy()
        img.mask[ys, xs] |= bit

    base = gio.read_frame(r0["base"])
    noisy = _variant(r0, "badreadnoise", lambda img: flag(img, ccdmask.BADREADNOISE))
    assert np.array_equal(noisy.flux, base.flux) and np.array_equal(noisy.ivar, base.ivar)
    assert np.array_equal(noisy.mask, base.mask)
    # a BADAMP amp (in the mask value) is dropped: its fibers lose their bins there
    bad = _variant(r0, "badamp", lambda img: flag(img, ccdmask.BADAMP))
    dropped = ((bad.mask & specmask.ALLBADPIX) != 0) & ((base.mask & specmask.ALLBADPIX) == 0)
    assert dropped.sum() > 0.05 * base.ivar.size
    assert np.max(bad.ivar[dropped] / base.ivar[dropped]) < 1e-6


def test_bad2dfit_on_a_frame_with_a_bad_fit(r0):
    """A compact blob that the PSF cannot fit gives a few bins with a huge chi2pix: BAD2DFIT
    is set there and nowhere else (the old chi2pix > 100 rule is not what decides)."""
    base = gio.read_frame(r0["base"])
    assert not np.any(base.mask & specmask.BAD2DFIT)
    psf = __import__("gpuspec.psf", fromlist=["read_psf"]).read_psf(r0["psf"])
    x = float(psf.x(fibers=[12], wave=np.array([6100.0]))[0, 0])
    y = float(psf.y(fibers=[12], wave=np.array([6100.0]))[0, 0])

    def blob(img):
        img.pix = img.pix.copy()
        yy, xx = int(round(y)), int(round(x)) + 1
        img.pix[yy - 1:yy + 2, xx] += 4000.0       # a one-column spike beside the trace
    fr = _variant(r0, "blob", blob)
    flagged = (fr.mask & specmask.BAD2DFIT) != 0
    assert flagged.any()
    fib, wav = np.nonzero(flagged)
    assert set(fib) <= {11, 12, 13}
    assert np.all(np.abs(fr.wave[wav] - 6100.0) < 10.0)
    assert flagged.sum() < 0.01 * flagged.size
    np.testing.assert_array_equal(flagged, bad2dfit(fr.chi2pix))


def test_bad2dfit_rule_on_synthetic_chi2pix():
    rng = np.random.default_rng(1)
    c = rng.uniform(0.8, 1.2, (20, 300))
    c[5, 100] = 50.0                       # a single bad bin: flagged
    c[9] *= 20.0                           # a whole fiber fits badly: not 5x its own median
    c[:, 200] *= 20.0                      # a wavelength bad for all fibers (bright sky line)
    got = bad2dfit(c)
    # flagged: the single bad bin, and where the bad fiber meets the bad wavelength (400x)
    assert set(zip(*np.nonzero(got))) == {(5, 100), (9, 200)}
    assert BAD2DFIT_FACTOR == 5.0
    assert not bad2dfit(np.full((10, 50), 150.0)).any()   # chi2pix > 100 everywhere: no flag


def test_merge_recomputes_bad2dfit_over_the_whole_frame(tmp_path):
    """Bundle-by-bundle frames are merged with the frame-wide rule (same as one extraction)."""
    rng = np.random.default_rng(2)
    nw = 40
    chi2 = rng.uniform(0.9, 1.1, (50, nw))
    chi2[:13, 7] = 8.0                      # high for most of the first part at one wavelength
    chi2[30, 20] = 30.0
    parts = []
    for s in (0, 25):
        rows = slice(s, s + 25)
        m = np.where(bad2dfit(chi2[rows]), specmask.BAD2DFIT, 0).astype(np.int32)
        fr = Frame(wave=6000 + 0.8 * np.arange(nw), flux=np.ones((25, nw)),
                   ivar=np.ones((25, nw)), mask=m, chi2pix=chi2[rows],
                   meta={"CAMERA": "r0", "SPECMIN": s, "NSPEC": 25})
        parts.append(gio.write_frame(str(tmp_path / f"part{s}.fits"), fr))
    # within the first part, 8 is the median of column 7: not flagged; frame-wide it is
    part0 = gio.read_frame(parts[0])
    assert not np.any(part0.mask[:, 7] & specmask.BAD2DFIT)
    assert bad2dfit(chi2)[:13, 7].all()
    merged = gio.read_frame(merge_frames(parts, str(tmp_path / "frame.fits")))
    flagged = (merged.mask & specmask.BAD2DFIT) != 0
    np.testing.assert_array_equal(flagged, bad2dfit(chi2))
    assert flagged[30, 20] and flagged[:13, 7].all()
