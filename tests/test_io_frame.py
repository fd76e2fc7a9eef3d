"""Frame, fibermap and calibration-image I/O."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from conftest import require_reference
from gpuspec import Frame, errors
from gpuspec.io import calib, fibermap as fmio, frame as frio


def make_frame(nspec=5, nwave=60, ndiag=11, seed=2, extras=True):
    rng = np.random.default_rng(seed)
    wave = 5760.0 + 0.8 * np.arange(nwave)
    meta = {"CAMERA": "r1", "NIGHT": 20250101, "EXPID": 77, "SPECMIN": 525, "EXPTIME": 900.0}
    fr = Frame(wave=wave, flux=rng.normal(100, 10, (nspec, nwave)),
               ivar=rng.uniform(0.01, 0.1, (nspec, nwave)),
               mask=(rng.random((nspec, nwave)) < 0.1) * 4,
               resolution_data=rng.random((nspec, ndiag, nwave)),
               chi2pix=rng.uniform(0.5, 2, (nspec, nwave)),
               fibermap=fmio.empty_fibermap(nspec, specmin=525), meta=meta)
    if extras:
        fr.pixmask_fraction = rng.random((nspec, nwave))
        fr.modelimage = rng.random((30, 20))
    return fr


# ------------------------------------------------------------------ frames

def test_frame_round_trip(tmp_path):
    fr = make_frame()
    meta0 = dict(fr.meta)
    path = frio.write_frame(str(tmp_path / "frame-r1-00000077.fits"), fr)
    assert os.listdir(tmp_path) == ["frame-r1-00000077.fits"]
    g = frio.read_frame(path)
    np.testing.assert_array_equal(g.wave, fr.wave)  # float64 on disk: exact
    for name in ("flux", "ivar", "resolution_data", "chi2pix", "pixmask_fraction",
                 "modelimage"):
        a, b = getattr(g, name), getattr(fr, name)
        assert a.dtype == np.float64 and a.dtype.isnative
        np.testing.assert_allclose(a, b, rtol=2 ** -23, atol=0, err_msg=name)
    np.testing.assert_array_equal(g.mask, fr.mask)
    assert g.mask.dtype == np.int32
    np.testing.assert_array_equal(g.fibermap["FIBER"], np.arange(525, 530))
    assert g.meta["NSPEC"] == 5 and g.meta["SPECMIN"] == 525
    assert g.meta["BUNIT"] == "electron/Angstrom"
    assert g.meta["CAMERA"] == "r1" and g.meta["EXPID"] == 77 and g.meta["NIGHT"] == 20250101
    assert g.specmin == 525 and g.nspec == 5
    assert fr.meta == meta0  # input not modified


def test_frame_layout_seen_by_astropy(tmp_path):
    fr = make_frame()
    path = frio.write_frame(str(tmp_path / "f.fits"), fr)
    with fits.open(path, checksum=True) as hl:
        assert [h.name for h in hl] == ["FLUX", "IVAR", "MASK", "WAVELENGTH", "RESOLUTION",
                                        "FIBERMAP", "CHI2PIX", "SCORES", "PIXMASK_FRACTION",
                                        "MODELIMAGE"]
        assert all("CHECKSUM" in h.header and "DATASUM" in h.header for h in hl)
        assert isinstance(hl[0], fits.PrimaryHDU)
        assert hl["FLUX"].header["EXTNAME"] == "FLUX"
        assert hl["FLUX"].header["BUNIT"] == "electron/Angstrom"
        assert hl["FLUX"].data.dtype == np.dtype(">f4")
        # desispec writes uint32 (BITPIX 32, BZERO 2**31)
        assert hl["MASK"].data.dtype.kind == "u" and hl["MASK"].data.dtype.itemsize == 4
        assert hl["MASK"].header["BZERO"] == 2 ** 31
        assert hl["WAVELENGTH"].data.dtype == np.dtype(">f8")
        assert hl["RESOLUTION"].data.shape == (5, 11, 60)
        assert hl["RESOLUTION"].data.dtype == np.dtype(">f4")
        assert hl["FIBERMAP"].data["FIBER"][0] == 525
        h = hl["FLUX"].header
        assert h["FIBERMIN"] == 525 and h["DEPNAM00"] == "python"
        assert "gpuspec" in [h[k] for k in h if k.startswith("DEPNAM")]
        # desispec's extraction scores (r band top hat 5800-7600 A), no TARGETID
        sc = hl["SCORES"].data
        assert sc.dtype.names == ("INTEG_RAW_FLUX_R", "MEDIAN_RAW_FLUX_R", "MEDIAN_RAW_SNR_R")
        sel = fr.wave >= 5800.0
        assert 0 < sel.sum() < sel.size
        np.testing.assert_allclose(sc["INTEG_RAW_FLUX_R"],
                                   np.sum(fr.flux[:, sel] * 0.8, axis=1), rtol=1e-5)
        np.testing.assert_allclose(sc["MEDIAN_RAW_SNR_R"],
                                   np.median((fr.flux * np.sqrt(fr.ivar / 0.8))[:, sel], axis=1),
                                   rtol=1e-5)
        # frame fibermaps leave NIGHT/EXPID/MJD/TILEID to desispec (it adds them itself)
        cols = hl["FIBERMAP"].columns
        assert not {"NIGHT", "EXPID", "MJD", "TILEID"} & set(cols.names)
        assert cols["TARGET_RA"].unit == "deg" and cols["DELTA_X"].format == "D"


def test_frame_fibermap_exposure_columns_dropped_and_scores_kept(tmp_path):
    fr = make_frame()
    fr.fibermap = fmio.empty_fibermap(5, specmin=525, exposure_columns=True)
    fr.scores = np.zeros(5, dtype=[("TSNR2_ELG_R", "f4")])
    fr.scores["TSNR2_ELG_R"] = np.arange(5)
    g = frio.read_frame(frio.write_frame(str(tmp_path / "f.fits"), fr))
    assert "NIGHT" in fr.fibermap.dtype.names  # input untouched
    assert "NIGHT" not in g.fibermap.dtype.names
    np.testing.assert_array_equal(g.scores["TSNR2_ELG_R"], np.arange(5))
    fr.scores = np.zeros(4, dtype=[("X", "f4")])
    with pytest.raises(errors.BadDataError, match="SCORES"):
        frio.write_frame(str(tmp_path / "g.fits"), fr)


def test_frame_minimal(tmp_path):
    fr = make_frame(extras=False)
    fr.mask = fr.chi2pix = fr.fibermap = fr.resolution_data = None
    fr.meta = {}
    g = frio.read_frame(frio.write_frame(str(tmp_path / "f.fits"), fr))
    assert g.resolution_data is None and g.chi2pix is None and g.fibermap is None
    np.testing.assert_array_equal(g.mask, 0)
    assert g.meta["SPECMIN"] == 0


@pytest.mark.parametrize("attr,bad", [
    ("ivar", np.ones((5, 59))),
    ("wave", np.ones(59)),
    ("resolution_data", np.ones((5, 10, 60))),   # even ndiag
    ("resolution_data", np.ones((4, 11, 60))),
    ("fibermap", fmio.empty_fibermap(4)),
])
def test_frame_bad_shapes_write_nothing(tmp_path, attr, bad):
    fr = make_frame()
    setattr(fr, attr, bad)
    with pytest.raises(errors.BadDataError):
        frio.write_frame(str(tmp_path / "f.fits"), fr)
    assert os.listdir(tmp_path) == []


def test_write_frame_failure_leaves_nothing(tmp_path, monkeypatch):
    fr = make_frame()
    real = fitsio.FITS.write

    def failing(self, *args, **kw):
        if kw.get("extname") == "FIBERMAP":
            raise OSError("simulated failure while writing FIBERMAP")
        return real(self, *args, **kw)

    monkeypatch.setattr(fitsio.FITS, "write", failing)
    with pytest.raises(OSError, match="simulated"):
        frio.write_frame(str(tmp_path / "f.fits"), fr)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("drop", ["IVAR", "WAVELENGTH"])
def test_frame_missing_hdu(tmp_path, drop):
    path = str(tmp_path / "f.fits")
    with fitsio.FITS(path, "rw") as fx:
        fx.write(np.ones((2, 3), "f4"), extname="FLUX")
        if drop != "IVAR":
            fx.write(np.ones((2, 3), "f4"), extname="IVAR")
        if drop != "WAVELENGTH":
            fx.write(np.arange(3.0), extname="WAVELENGTH")
    with pytest.raises(errors.MissingHDUError, match=drop):
        frio.read_frame(path)


def test_frame_truncated(tmp_path):
    path = frio.write_frame(str(tmp_path / "f.fits"), make_frame())
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-2880])
    with pytest.raises(errors.InputError, match="f.fits"):
        frio.read_frame(path)


# ------------------------------------------------------------------ fibermaps

def test_fibermap_dtype_and_empty():
    dt = fmio.fibermap_dtype()
    assert len(dt.names) == 71  # desispec's main fibermap
    for name, kind in [("TARGETID", "i8"), ("PETAL_LOC", "i2"), ("DEVICE_LOC", "i4"),
                       ("LOCATION", "i8"), ("FIBER", "i4"), ("FIBERSTATUS", "i4"),
                       ("TARGET_RA", "f8"), ("TARGET_DEC", "f8"), ("OBJTYPE", "S3"),
                       ("DESI_TARGET", "i8"), ("BGS_TARGET", "i8"), ("MWS_TARGET", "i8"),
                       ("FLUX_G", "f4"), ("FLUX_R", "f4"), ("FLUX_Z", "f4"),
                       ("FIBER_RA", "f8"), ("FIBER_DEC", "f8"), ("DELTA_X", "f8"),
                       ("DELTA_Y", "f8"), ("FIBER_X", "f8"), ("FIBER_Y", "f8"),
                       ("EXPTIME", "f8"), ("DESINAME", "S22"), ("GAIA_PHOT_G_MEAN_MAG", "f4"),
                       ("PHOTSYS", "S1"), ("MASKBITS", "i2"), ("PLATE_RA", "f8")]:
        assert dt[name] == np.dtype(kind), name
    assert not {"NIGHT", "EXPID", "MJD", "TILEID"} & set(dt.names)
    assert fmio.fibermap_dtype(exposure_columns=True).names[-4:] == ("NIGHT", "EXPID", "MJD",
                                                                       "TILEID")
    fm = fmio.empty_fibermap(10, specmin=995)
    np.testing.assert_array_equal(fm["FIBER"], np.arange(995, 1005))
    np.testing.assert_array_equal(fm["PETAL_LOC"], [1] * 5 + [2] * 5)
    np.testing.assert_array_equal(fm["DEVICE_LOC"], [495, 496, 497, 498, 499, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(fm["LOCATION"], 1000 * fm["PETAL_LOC"] + fm["DEVICE_LOC"])
    assert len(np.unique(fm["TARGETID"])) == 10 and (fm["TARGETID"] < 0).all()
    assert (fmio.empty_fibermap(3, petal=7)["PETAL_LOC"] == 7).all()


def test_fibermap_round_trip(tmp_path):
    fm = fmio.empty_fibermap(20, specmin=500)
    fm["TARGETID"] = np.arange(20) + 39627000000000000
    fm["TARGET_RA"] = np.linspace(150, 151, 20)
    fm["OBJTYPE"][::4] = "SKY"
    fm["FIBERSTATUS"][3] = 1 << 20
    meta = {"TILEID": 1000, "NIGHT": 20250101, "SURVEY": "main"}
    path = fmio.write_fibermap(str(tmp_path / "fibermap-00000042.fits"), fm, meta)
    got, hdr = fmio.read_fibermap(path, header=True)
    assert got.dtype.names == fm.dtype.names
    for name in fm.dtype.names:
        a, b = got[name], fm[name]
        if a.dtype.kind in "SU":
            np.testing.assert_array_equal(np.char.strip(a.astype(str)), b.astype(str))
        else:
            assert a.dtype.isnative
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert hdr["TILEID"] == 1000 and hdr["SURVEY"] == "main"
    with fits.open(path) as hl:
        assert [h.name for h in hl] == ["PRIMARY", "FIBERMAP"]
        assert hl["FIBERMAP"].data["TARGETID"][5] == 39627000000000005
        assert list(hl["FIBERMAP"].data["OBJTYPE"][:2]) == ["SKY", "NON"]


def test_fibermap_unicode_and_table(tmp_path):
    from astropy.table import Table

    t = Table({"TARGETID": np.arange(3, dtype="i8"), "OBJTYPE": np.array(["TGT", "SKY", "TGT"]),
               "FIBER": np.arange(3, dtype="i4")})
    path = fmio.write_fibermap(str(tmp_path / "fm.fits"), t)
    got = fmio.read_fibermap(path)
    assert list(np.char.strip(got["OBJTYPE"].astype(str))) == ["TGT", "SKY", "TGT"]


def test_fibermap_errors(tmp_path):
    with pytest.raises(errors.BadDataError):
        fmio.write_fibermap(str(tmp_path / "x.fits"), np.zeros(3))
    assert os.listdir(tmp_path) == []
    path = str(tmp_path / "nofm.fits")
    fitsio.write(path, np.zeros((2, 2)))
    with pytest.raises(errors.MissingHDUError, match="FIBERMAP"):
        fmio.read_fibermap(path)


def test_read_fibermap_from_reference_spectra():
    path = require_reference("caseC_coadd", "input_spectra.fits")
    fm = fmio.read_fibermap(path)
    with fitsio.FITS(path) as fx:
        ref = fx["FIBERMAP"].read()
    np.testing.assert_array_equal(fm["TARGETID"], ref["TARGETID"])
    assert fm["TARGETID"].dtype.isnative and len(fm) == 15


# ------------------------------------------------------------------ calibration images

@pytest.mark.parametrize("kind", ["bias", "dark", "pixflat", "mask"])
def test_calib_round_trip(tmp_path, kind):
    rng = np.random.default_rng(4)
    if kind == "mask":
        img = rng.integers(0, 4, (12, 10)).astype(np.int64)
    else:
        img = rng.normal(1, 0.1, (12, 10)).astype(np.float32).astype(np.float64)
    path = calib.write_calib_image(str(tmp_path / f"{kind}-b0.fits"), img,
                                   {"CAMERA": "b0"}, kind=kind)
    got, hdr = calib.read_calib_image(path, expected_shape=(12, 10), kind=kind)
    np.testing.assert_array_equal(got, img)  # float32-exact inputs: lossless
    assert got.dtype == (np.int32 if kind == "mask" else np.float64)
    assert hdr["CAMERA"] == "b0" and hdr["CALTYPE"] == kind.upper()
    with fits.open(path) as hl:
        assert len(hl) == 1
        np.testing.assert_array_equal(hl[0].data, img)


def test_calib_wrong_shape(tmp_path):
    path = calib.write_bias(str(tmp_path / "bias.fits"), np.zeros((4, 5)))
    with pytest.raises(errors.BadDataError) as ei:
        calib.read_bias(path, expected_shape=(5, 4))
    assert "bias.fits" in str(ei.value) and "(4, 5)" in str(ei.value)


def test_calib_errors(tmp_path):
    with pytest.raises(errors.MissingFileError, match="none.fits"):
        calib.read_dark(str(tmp_path / "none.fits"))
    bad = np.ones((3, 3))
    bad[1, 1] = np.nan
    with pytest.raises(errors.BadDataError, match="non-finite"):
        calib.write_pixflat(str(tmp_path / "pf.fits"), bad)
    with pytest.raises(errors.BadDataError):
        calib.write_mask(str(tmp_path / "m.fits"), np.full((3, 3), -1))
    with pytest.raises(errors.InputError, match="unknown calibration kind"):
        calib.read_calib_image(str(tmp_path / "x.fits"), kind="flat")
    assert os.listdir(tmp_path) == []
    # NaN in a file written by someone else
    fitsio.write(str(tmp_path / "pf.fits"), bad)
    with pytest.raises(errors.BadDataError, match="pf.fits"):
        calib.read_pixflat(str(tmp_path / "pf.fits"))


def test_write_calib_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(self, *a, **k):
        raise OSError("simulated")

    monkeypatch.setattr(fitsio.FITS, "write", boom)
    with pytest.raises(OSError):
        calib.write_dark(str(tmp_path / "dark.fits"), np.zeros((3, 3)))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name,kind,shape", [("calib_bias.fits", "bias", (272, 664)),
                                             ("calib_dark.fits", "dark", (240, 300)),
                                             ("calib_pixflat.fits", "pixflat", (240, 300)),
                                             ("calib_mask.fits", "mask", (240, 300))])
def test_reference_calib_images(name, kind, shape):
    path = require_reference("caseA_preproc", name)
    got, _ = calib.read_calib_image(path, expected_shape=shape, kind=kind)
    np.testing.assert_array_equal(got, fitsio.read(path))


def test_write_fibermap_failure_leaves_nothing(tmp_path, monkeypatch):
    real = fitsio.FITS.write

    def failing(self, *args, **kw):
        if kw.get("extname") == "FIBERMAP":
            raise OSError("simulated")
        return real(self, *args, **kw)

    monkeypatch.setattr(fitsio.FITS, "write", failing)
    with pytest.raises(OSError):
        fmio.write_fibermap(str(tmp_path / "fm.fits"), fmio.empty_fibermap(3))
    assert os.listdir(tmp_path) == []


@pytest.mark.gpu
def test_writers_accept_device_arrays(tmp_path):
    """Frames, images and calibrations held on the GPU are written like their host twins."""
    from gpuspec import Image, backend
    from gpuspec.io import image as imio

    cp = backend.get_xp("cupy")
    fr = make_frame()
    dev = Frame(wave=cp.asarray(fr.wave), flux=cp.asarray(fr.flux), ivar=cp.asarray(fr.ivar),
                mask=cp.asarray(fr.mask), resolution_data=cp.asarray(fr.resolution_data),
                chi2pix=cp.asarray(fr.chi2pix), fibermap=fr.fibermap, meta=fr.meta)
    a = frio.read_frame(frio.write_frame(str(tmp_path / "host.fits"), fr))
    b = frio.read_frame(frio.write_frame(str(tmp_path / "dev.fits"), dev))
    for name in ("wave", "flux", "ivar", "mask", "resolution_data", "chi2pix"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    im = Image(pix=cp.ones((4, 5)), ivar=cp.ones((4, 5)), mask=cp.zeros((4, 5), cp.int32),
               readnoise=cp.full((4, 5), 3.0), camera="b0")
    r = imio.read_image(imio.write_image(str(tmp_path / "p.fits"), im))
    np.testing.assert_array_equal(r.readnoise, 3.0)
    got, _ = calib.read_bias(calib.write_bias(str(tmp_path / "b.fits"), cp.ones((3, 3))))
    np.testing.assert_array_equal(got, 1.0)
