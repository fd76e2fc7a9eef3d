"""Preproc image I/O (desispec preproc layout)."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from conftest import require_reference
from gpuspec import Image, errors
from gpuspec.io import image as imio
from gpuspec.io.fibermap import empty_fibermap
from gpuspec.maskbits import ccdmask


def make_image(ny=24, nx=30, seed=3, mask_max=1023, readnoise="array"):
    rng = np.random.default_rng(seed)
    pix = rng.normal(10, 3, (ny, nx))
    ivar = 1 / rng.uniform(1, 4, (ny, nx))
    mask = rng.integers(0, mask_max + 1, (ny, nx)) * (rng.random((ny, nx)) < 0.2)
    rdn = rng.uniform(2, 4, (ny, nx)) if readnoise == "array" else readnoise
    meta = {"CAMERA": "r3", "NIGHT": 20250101, "EXPID": 42, "EXPTIME": 900.0, "GAINA": 1.5,
            "OBSRDNA": 3.1, "OVERSCNA": 1000.2, "SATULEVA": 65000.0, "OMETHA": "AVERAGE"}
    return Image(pix=pix, ivar=ivar, mask=mask, readnoise=rdn, camera="r3", meta=meta)


def test_image_round_trip(tmp_path):
    im = make_image()
    im.fibermap = empty_fibermap(7, specmin=1500)
    meta0 = dict(im.meta)
    pix0 = im.pix.copy()
    path = imio.write_image(str(tmp_path / "preproc-r3-00000042.fits"), im)
    assert sorted(os.listdir(tmp_path)) == ["preproc-r3-00000042.fits"]
    r = imio.read_image(path)
    # float32 on disk: relative precision 2**-24
    np.testing.assert_allclose(r.pix, im.pix, rtol=2 ** -23, atol=0)
    np.testing.assert_allclose(r.ivar, im.ivar, rtol=2 ** -23, atol=0)
    np.testing.assert_allclose(r.readnoise, im.readnoise, rtol=2 ** -23, atol=0)
    np.testing.assert_array_equal(r.mask, im.mask)
    for a in (r.pix, r.ivar, r.readnoise):
        assert a.dtype == np.float64 and a.dtype.isnative
    assert r.mask.dtype == np.int32
    assert r.camera == "r3"
    for k, v in meta0.items():
        assert r.meta[k] == v
    assert list(r.meta)[: len(meta0)] == list(meta0)
    assert r.meta["SATULEVA"] == 65000.0
    np.testing.assert_array_equal(r.fibermap["FIBER"], np.arange(1500, 1507))
    # inputs untouched
    assert im.meta == meta0
    np.testing.assert_array_equal(im.pix, pix0)


def test_image_layout_seen_by_astropy(tmp_path):
    im = make_image()
    im.fibermap = empty_fibermap(3)
    path = imio.write_image(str(tmp_path / "p.fits"), im)
    with fits.open(path, checksum=True) as hl:
        # IMAGE is the primary HDU, as desispec writes it
        assert [h.name for h in hl] == ["IMAGE", "IVAR", "MASK", "READNOISE", "FIBERMAP"]
        assert isinstance(hl[0], fits.PrimaryHDU)
        # (astropy hides a tile-compressed HDU's checksum cards; fitsio sees them, below)
        assert all("CHECKSUM" in h.header for h in hl if not isinstance(h, fits.CompImageHDU))
        assert "python" in [hl[0].header[k] for k in hl[0].header if k.startswith("DEPNAM")]
        assert hl["IMAGE"].data.dtype == np.dtype(">f4")
        assert hl["IVAR"].data.dtype == np.dtype(">f4")
        assert isinstance(hl["MASK"], fits.CompImageHDU)
        assert hl["MASK"].data.dtype.kind == "i" and hl["MASK"].data.dtype.itemsize == 2
        # what desispec.io.read_image does: mask.astype(uint16)
        np.testing.assert_array_equal(hl["MASK"].data.astype(np.uint16), im.mask)
        assert hl["IMAGE"].header["CAMERA"] == "r3"
        assert hl["IMAGE"].header["NIGHT"] == 20250101
        assert hl["READNOISE"].data.shape == im.pix.shape
    with fitsio.FITS(path) as fx:
        for hdu in fx:
            assert "CHECKSUM" in hdu.read_header()
            hdu.verify_checksum()


def test_mask_bits_beyond_int16_kept(tmp_path):
    im = make_image()
    im.mask = im.mask.copy()
    im.mask[0, 0] = 1 << 20
    im.mask[1, 1] = ccdmask.COSMIC | (1 << 15)
    path = imio.write_image(str(tmp_path / "p.fits"), im)
    r = imio.read_image(path)
    np.testing.assert_array_equal(r.mask, im.mask)
    with fitsio.FITS(path) as fx:
        assert fx["MASK"].read().dtype.itemsize == 4


def test_scalar_readnoise_goes_to_header(tmp_path):
    im = make_image(readnoise=3.25)
    path = imio.write_image(str(tmp_path / "p.fits"), im)
    with fitsio.FITS(path) as fx:
        assert "READNOISE" not in fx
        assert fx["IMAGE"].read_header()["RDNOISE"] == 3.25
    r = imio.read_image(path)
    assert r.readnoise == 3.25
    assert imio.read_image(path, readnoise=False).readnoise is None


def test_read_image_can_skip_the_readnoise_hdu(tmp_path, monkeypatch):
    """readnoise=False reads every other plane the same and never touches READNOISE."""
    im = make_image()
    path = imio.write_image(str(tmp_path / "p.fits"), im)
    full = imio.read_image(path)
    assert isinstance(full.readnoise, np.ndarray)
    seen = []
    real = imio.read_optional_hdu

    def spy(fx, names, name, *a, **k):
        seen.append(name)
        return real(fx, names, name, *a, **k)

    monkeypatch.setattr(imio, "read_optional_hdu", spy)
    r = imio.read_image(path, readnoise=False)
    assert r.readnoise is None and "READNOISE" not in seen
    for k in ("pix", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(r, k), getattr(full, k))


def test_camera_from_meta_and_required(tmp_path):
    im = make_image()
    im.camera = None
    r = imio.read_image(imio.write_image(str(tmp_path / "a.fits"), im))
    assert r.camera == "r3"
    im.meta = {k: v for k, v in im.meta.items() if k != "CAMERA"}
    with pytest.raises(errors.BadDataError, match="camera"):
        imio.write_image(str(tmp_path / "b.fits"), im)
    assert not os.path.exists(tmp_path / "b.fits")


def test_shape_mismatch_rejected(tmp_path):
    im = make_image()
    im.ivar = im.ivar[:-1]
    with pytest.raises(errors.BadDataError, match="IVAR"):
        imio.write_image(str(tmp_path / "p.fits"), im)
    assert os.listdir(tmp_path) == []


def test_write_image_failure_leaves_nothing(tmp_path, monkeypatch):
    im = make_image()
    real = fitsio.FITS.write
    n = {"calls": 0}

    def failing(self, *args, **kw):
        n["calls"] += 1
        if kw.get("extname") == "MASK":
            raise OSError("simulated failure while writing MASK")
        return real(self, *args, **kw)

    monkeypatch.setattr(fitsio.FITS, "write", failing)
    with pytest.raises(OSError, match="simulated"):
        imio.write_image(str(tmp_path / "p.fits"), im)
    assert n["calls"] >= 3
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("drop", ["IMAGE", "IVAR", "MASK"])
def test_missing_hdu(tmp_path, drop):
    im = make_image()
    path = str(tmp_path / "p.fits")
    with fitsio.FITS(path, "rw") as fx:
        fx.write(None)
        for name, data in (("IMAGE", im.pix.astype("f4")), ("IVAR", im.ivar.astype("f4")),
                           ("MASK", im.mask.astype("i2"))):
            if name != drop:
                fx.write(data, extname=name, header={"CAMERA": "r3"})
    with pytest.raises(errors.MissingHDUError) as ei:
        imio.read_image(path)
    assert drop in str(ei.value) and path in str(ei.value)


def test_truncated_preproc(tmp_path):
    path = imio.write_image(str(tmp_path / "p.fits"), make_image())
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(errors.InputError, match="p.fits"):
        imio.read_image(path)


def test_read_reference_desispec_preproc():
    """desispec's own preproc output (float64 IMAGE, int32 MASK) reads back exactly."""
    path = require_reference("caseA_preproc", "preproc_calib_cosmic.fits")
    r = imio.read_image(path)
    with fitsio.FITS(path) as fx:
        np.testing.assert_array_equal(r.pix, fx["IMAGE"].read())
        np.testing.assert_array_equal(r.ivar, fx["IVAR"].read())
        np.testing.assert_array_equal(r.mask, fx["MASK"].read())
        np.testing.assert_array_equal(r.readnoise, fx["READNOISE"].read())
    assert r.camera == "b0" and r.pix.shape == (240, 300)
    assert r.meta["OMETHA"] in ("AVERAGE", "PER_ROW")
    assert "OBSRDNA" in r.meta


def test_header_value_types_round_trip(tmp_path):
    im = make_image()
    im.meta = {"CAMERA": "r3", "LONGSTR": "x" * 150, "FLAG": True, "UNDEF": None,
               "I64": np.int64(5), "F32": np.float32(1.5), "DEP-VER10": "1.2.3",
               "HIERARCH LONG_NAME_KEY": 7, "SATURLEVA": 65000.0}
    r = imio.read_image(imio.write_image(str(tmp_path / "p.fits"), im))
    assert r.meta["LONGSTR"] == "x" * 150
    assert r.meta["FLAG"] is True and r.meta["UNDEF"] is None
    assert r.meta["I64"] == 5 and r.meta["F32"] == 1.5 and r.meta["DEP-VER10"] == "1.2.3"
    assert r.meta["LONG_NAME_KEY"] == 7 and r.meta["SATURLEVA"] == 65000.0
    with fits.open(str(tmp_path / "p.fits")) as hl:
        assert hl["IMAGE"].header["LONG_NAME_KEY"] == 7


def test_unwritable_keyword_leaves_nothing(tmp_path):
    im = make_image()
    im.meta = {"CAMERA": "r3", "HIERARCHX": 1}
    with pytest.raises(errors.InputError, match="HIERARCHX"):
        imio.write_image(str(tmp_path / "p.fits"), im)
    assert os.listdir(tmp_path) == []
