"""read_spectra / write_spectra: reference files, round trip, atomic writes, errors."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from conftest import require_reference

from gpuspec.errors import InputError, MissingFileError
from gpuspec.io.spectra import read_spectra, write_spectra

CASE = "caseC_coadd"


def test_read_input_spectra_with_extra_hdus():
    path = require_reference(CASE, "input_spectra.fits")
    s = read_spectra(path)
    assert s.bands == ["r"]
    assert s.flux["r"].shape == (15, 375)
    assert s.resolution_data["r"].shape == (15, 11, 375)
    assert s.mask["r"].dtype == np.int32
    assert s.flux["r"].dtype.isnative and s.resolution_data["r"].dtype.isnative
    assert set(s.extra_hdus) == {"TRUTH", "INJECTED_NORM", "SRC_FIBER_REL"}
    assert s.extra_hdus["TRUTH"].shape == (5, 375)
    with fitsio.FITS(path) as fx:
        np.testing.assert_array_equal(s.flux["r"], fx["R_FLUX"].read())
        np.testing.assert_array_equal(s.fibermap["TARGETID"], fx["FIBERMAP"]["TARGETID"].read())
    assert s.meta["NEXP"] == 3
    assert "SIMPLE" not in s.meta


def test_read_coadd_and_resample_outputs():
    c = read_spectra(require_reference(CASE, "coadd_default.fits"))
    assert c.exp_fibermap is not None and "COADD_NORM" in c.exp_fibermap.dtype.names
    assert c.scores is not None and "MEDIAN_COADD_SNR_R" in c.scores.dtype.names
    assert len(c.fibermap) == 5
    r = read_spectra(require_reference(CASE, "resample_twoband.fits"))
    assert r.bands == ["br"]
    assert r.flux["br"].shape == (5, 374) and r.wave["br"].shape == (374,)
    assert r.mask is None
    t = read_spectra(require_reference(CASE, "resample_twoband_input.fits"))
    assert t.bands == ["b", "r"]


def test_roundtrip(tmp_path):
    s = read_spectra(require_reference(CASE, "coadd_default.fits"))
    out = write_spectra(tmp_path / "c.fits", s)
    s2 = read_spectra(out)
    assert s2.bands == s.bands
    for b in s.bands:
        np.testing.assert_array_equal(s2.wave[b], s.wave[b])
        np.testing.assert_allclose(s2.flux[b], s.flux[b].astype(np.float32), rtol=0)
        np.testing.assert_array_equal(s2.mask[b], s.mask[b])
        np.testing.assert_allclose(s2.resolution_data[b], s.resolution_data[b], rtol=1e-6)
    with fitsio.FITS(out) as fx:
        names = [h.get_extname() for h in fx]
        assert names[:3] == ["", "FIBERMAP", "EXP_FIBERMAP"]
        assert fx["R_FLUX"].read().dtype.newbyteorder("=") == np.float32
        assert fx["R_WAVELENGTH"].read().dtype.newbyteorder("=") == np.float64
    for k in s.fibermap.dtype.names:
        assert np.array_equal(s2.fibermap[k], s.fibermap[k]), k
    assert s2.exp_fibermap.dtype.names == s.exp_fibermap.dtype.names


def test_write_is_atomic(tmp_path):
    s = read_spectra(require_reference(CASE, "input_spectra.fits"))
    target = tmp_path / "x.fits"
    s.extra_hdus = {"BAD": object()}  # cannot be written -> fails after the first HDUs
    with pytest.raises(Exception):
        write_spectra(target, s)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_spectra(tmp_path / "nope.fits")
    p = tmp_path / "notspectra.fits"
    fitsio.write(str(p), np.zeros(3), extname="FOO")
    with pytest.raises(InputError, match="notspectra.fits"):
        read_spectra(p)
    p2 = tmp_path / "badshape.fits"
    with fitsio.FITS(str(p2), "rw") as fx:
        fx.write(None)
        fx.write(np.arange(5.0), extname="R_WAVELENGTH")
        fx.write(np.zeros((2, 4)), extname="R_FLUX")
        fx.write(np.zeros((2, 4)), extname="R_IVAR")
    with pytest.raises(InputError, match="R_FLUX"):
        read_spectra(p2)
