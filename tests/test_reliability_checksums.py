"""Every FITS file gpuspec writes carries a valid CHECKSUM/DATASUM on every HDU.

desispec writes them on every HDU (astropy ``checksum=True``); a reader can then tell a
file damaged on disk from a good one (docs/reliability.md). Checked on the files of a
reduced night (simulator: raw, fibermap, PSFs, calibration images, truth; reduction:
preproc, frames, spectra, coadds; calibration CLIs: fiberflat, sky, stdstars,
fluxcalib) and on the outputs of the commands that are not part of it (cframe,
model image, template library).
"""

from __future__ import annotations

import glob
import os

import fitsio
import pytest

import reliability_world as W

R = "6520,6540,0.8"


@pytest.fixture(scope="module")
def w():
    return W.world()


def _bad_hdus(path):
    """(HDU index, reason) of each HDU whose CHECKSUM/DATASUM is missing or wrong
    (fitsio's ``verify_checksum`` raises ValueError then)."""
    bad = []
    with fitsio.FITS(path) as fx:
        for k, hdu in enumerate(fx):
            try:
                hdu.verify_checksum()
            except ValueError as exc:
                bad.append((k, str(exc)))
    return bad


def _fits_under(*folders):
    out = []
    for d in folders:
        for p in glob.glob(os.path.join(d, "**", "*.fits*"), recursive=True):
            if os.path.isfile(p) and not p.endswith((".json", ".yaml")):
                out.append(p)
    return sorted(out)


def test_every_file_of_a_reduced_night_has_valid_checksums(w):
    files = _fits_under(w["sim"], os.path.join(w["prod"], "preproc"),
                        os.path.join(w["prod"], "exposures"), os.path.join(w["prod"], "healpix"),
                        os.path.join(w["root"], "calibration"))
    kinds = {os.path.basename(p).split("-")[0].split(".")[0] for p in files}
    # the simulator's PSFs, calibration images and truth, the calibration products
    for k in ("psf", "bias", "dark", "pixflat", "mask", "fiberflat", "sky", "stdstars",
              "fluxcalib", "preproc", "frame", "spectra", "coadd", "desi", "fibermap"):
        assert k in kinds, (k, sorted(kinds))
    assert any("truth" in os.path.basename(p) for p in files), files
    bad = {os.path.relpath(p, w["root"]): b for p in files if (b := _bad_hdus(p))}
    assert not bad, bad


def test_outputs_outside_the_night_have_valid_checksums(w, tmp_path):
    c = w["calibration"]["b0"]
    cframe, model, frame = tmp_path / "cframe.fits", tmp_path / "model.fits", tmp_path / "f.fits"
    tpl = tmp_path / "tpl.fits"
    for argv in (["process-exposure", "-i", c["frame"], "--fiberflat", c["fiberflat"], "--sky",
                  c["sky"], "--calib", c["fluxcalib"], "-o", cframe, "--backend", "numpy"],
                 ["extract", "-i", w["preproc"]["r0"], "-p", w["psf"]["r0"], "-o", frame,
                  "-w", R, "-m", model, "--nspec", "5"],
                 ["stdstar-templates", "-o", tpl]):
        rc, _, err = W.run_gpuspec([str(a) for a in argv])
        assert rc == 0, err
    for p in (cframe, model, frame, tpl):
        assert not _bad_hdus(str(p)), p


def test_a_damaged_file_fails_its_checksum(w, tmp_path):
    """The check can fail: one changed data byte of a fiberflat is seen."""
    src = w["calibration"]["b0"]["fiberflat"]
    dst = tmp_path / "ff.fits"
    data = bytearray(open(src, "rb").read())
    with fitsio.FITS(src) as fx:
        start = fx[0].get_offsets()["data_start"]
    data[start + 100] ^= 0x01
    dst.write_bytes(bytes(data))
    assert _bad_hdus(str(dst))
