"""Raw exposure I/O: validation errors, round trips, the Case A reference raw file."""

from __future__ import annotations

import glob
import os

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from conftest import require_reference
from gpuspec import errors
from gpuspec.io import raw as rawio


def make_header(ndy=20, ndx=16, npre=4, nover=6, norow=3, amps="ABCD", exptime=300.0,
                night=20250101):
    """A raw camera header in the DESI layout for a small synthetic CCD.

    x: [pre A][data A][over A][over B][data B][pre B]
    y: [data A/B][ORSEC A/B][ORSEC C/D][data C/D]
    """
    nx = 2 * (npre + ndx + nover)
    ny = 2 * (ndy + norow)
    h = {"CAMERA": "b0", "NIGHT": night, "EXPID": 42, "EXPTIME": exptime}
    xa = (npre + 1, npre + ndx)
    xb = (nx - npre - ndx + 1, nx - npre)
    bias_a = (npre + ndx + 1, npre + ndx + nover)
    bias_b = (bias_a[1] + 1, bias_a[1] + nover)
    y_lo, y_hi = (1, ndy), (ny - ndy + 1, ny)
    geom = {
        "A": (xa, bias_a, y_lo, (1, ndx), (1, ndy), (ndy + 1, ndy + norow)),
        "B": (xb, bias_b, y_lo, (ndx + 1, 2 * ndx), (1, ndy), (ndy + 1, ndy + norow)),
        "C": (xa, bias_a, y_hi, (1, ndx), (ndy + 1, 2 * ndy),
              (ndy + norow + 1, ndy + 2 * norow)),
        "D": (xb, bias_b, y_hi, (ndx + 1, 2 * ndx), (ndy + 1, 2 * ndy),
              (ndy + norow + 1, ndy + 2 * norow)),
    }
    for amp in amps:
        (x1, x2), (b1, b2), (y1, y2), (c1, c2), (d1, d2), (o1, o2) = geom[amp]
        h[f"DATASEC{amp}"] = f"[{x1}:{x2},{y1}:{y2}]"
        h[f"BIASSEC{amp}"] = f"[{b1}:{b2},{y1}:{y2}]"
        h[f"ORSEC{amp}"] = f"[{x1}:{x2},{o1}:{o2}]"
        h[f"CCDSEC{amp}"] = f"[{c1}:{c2},{d1}:{d2}]"
        h[f"GAIN{amp}"] = 1.5
        h[f"SATURLEV{amp}"] = 65000.0
    return h, (ny, nx)


def make_raw(tmp_path, name="desi-00000042.fits", header=None, cameras=("b0",), seed=1,
             primary=None):
    h, shape = make_header() if header is None else (header, None)
    if shape is None:
        shape = make_header()[1]
    rng = np.random.default_rng(seed)
    cams = {}
    for i, cam in enumerate(cameras):
        img = rng.integers(900, 1100, size=shape).astype(np.int32) + i
        cams[cam] = (img, dict(h, CAMERA=cam))
    primary = {"EXPID": 42, "NIGHT": 20250101, "EXPTIME": 300.0, "OBSTYPE": "SCIENCE"} \
        if primary is None else primary
    path = str(tmp_path / name)
    rawio.write_raw(path, cams, primary, validate=False)
    return path, cams, primary


def no_temp_files(d):
    return [f for f in os.listdir(d) if f.startswith(".")] == []


# ---------------------------------------------------------------- acceptance (a)-(d)

def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.fits")
    with pytest.raises(errors.MissingFileError, match="nope.fits"):
        rawio.read_raw(p, "b0")


@pytest.mark.parametrize("name", ["desi.fits", "desi.fits.fz"])
@pytest.mark.parametrize("cut", [100, 4000, -3000, -1])
def test_truncated_file_is_input_error(tmp_path, cut, name):
    path, _, _ = make_raw(tmp_path, name=name)
    data = open(path, "rb").read()
    bad = str(tmp_path / "trunc.fits")
    with open(bad, "wb") as f:
        f.write(data[:cut])
    with pytest.raises(errors.InputError) as ei:
        rawio.read_raw(bad, "b0")
    assert "trunc.fits" in str(ei.value)
    assert not isinstance(ei.value, errors.MissingHDUError)


def test_not_fits_is_input_error(tmp_path):
    bad = tmp_path / "text.fits"
    bad.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(errors.InputError, match="text.fits"):
        rawio.read_raw(str(bad), "b0")


def test_missing_camera_hdu_lists_cameras(tmp_path):
    path, _, _ = make_raw(tmp_path, cameras=("b0", "r0"))
    with pytest.raises(errors.MissingHDUError) as ei:
        rawio.read_raw(path, "z3")
    msg = str(ei.value)
    assert "z3" in msg and path in msg and "Z3" in msg
    assert "b0" in msg and "r0" in msg  # the cameras present


def test_camera_any_case(tmp_path):
    path, cams, _ = make_raw(tmp_path, cameras=("b0", "r0"))
    for cam in ("R0", "r0"):
        img, hdr, _ = rawio.read_raw(path, cam)
        np.testing.assert_array_equal(img, cams["r0"][0])
        assert hdr["CAMERA"] == "r0"
    with pytest.raises(errors.InputError, match="invalid camera"):
        rawio.read_raw(path, "x0")


def _raw_with(tmp_path, **changes):
    h, _ = make_header()
    for k, v in changes.items():
        if v is None:
            h.pop(k)
        else:
            h[k] = v
    path, _, _ = make_raw(tmp_path, header=h)
    return path


def test_missing_biassec(tmp_path):
    path = _raw_with(tmp_path, BIASSECC=None)
    with pytest.raises(errors.MissingKeywordError) as ei:
        rawio.read_raw(path, "b0")
    msg = str(ei.value)
    assert "BIASSECC" in msg and path in msg and "B0" in msg
    assert ei.value.keyword == "BIASSECC"


@pytest.mark.parametrize("key", ["DATASECB", "CCDSECA", "GAIND"])
def test_missing_required_keywords(tmp_path, key):
    path = _raw_with(tmp_path, **{key: None})
    with pytest.raises(errors.MissingKeywordError, match=key):
        rawio.read_raw(path, "b0")


@pytest.mark.parametrize("key,value", [
    ("BIASSECA", "[10:5,1:20]"),      # reversed
    ("DATASECB", "garbage"),          # unparsable
    ("BIASSECD", "[0:5,1:20]"),       # zero-based
    ("ORSECA", "[5:20,1:999]"),       # outside the raw image
    ("DATASECC", "[5:20,1:9999]"),
])
def test_bad_sections(tmp_path, key, value):
    path = _raw_with(tmp_path, **{key: value})
    with pytest.raises(errors.BadSectionError) as ei:
        rawio.read_raw(path, "b0")
    assert key in str(ei.value) and ei.value.keyword == key and path in str(ei.value)


def test_ccdsec_size_mismatch(tmp_path):
    path = _raw_with(tmp_path, CCDSECB="[17:33,1:20]")
    with pytest.raises(errors.BadSectionError, match="CCDSECB"):
        rawio.read_raw(path, "b0")


def test_ccdsec_overlap(tmp_path):
    path = _raw_with(tmp_path, CCDSECB="[1:16,1:20]")
    with pytest.raises(errors.BadSectionError, match="overlap"):
        rawio.read_raw(path, "b0")


def test_ccdsec_outside_trimmed_shape():
    h, shape = make_header()
    rawio.validate_raw_header(h, shape, trimmed=(40, 32))
    with pytest.raises(errors.BadSectionError, match="CCDSEC"):
        rawio.validate_raw_header(h, shape, trimmed=(39, 32))


@pytest.mark.parametrize("gain", [0.0, -1.0, "abc"])
def test_bad_gain(tmp_path, gain):
    path = _raw_with(tmp_path, GAINB=gain)
    with pytest.raises(errors.BadDataError, match="GAINB"):
        rawio.read_raw(path, "b0")


def test_negative_exptime(tmp_path):
    path = _raw_with(tmp_path, EXPTIME=-1.0)
    with pytest.raises(errors.BadDataError, match="EXPTIME"):
        rawio.read_raw(path, "b0")


def test_exptime_missing_everywhere(tmp_path):
    h, _ = make_header()
    del h["EXPTIME"]
    path, _, _ = make_raw(tmp_path, header=h, primary={"NIGHT": 20250101})
    with pytest.raises(errors.MissingKeywordError, match="EXPTIME"):
        rawio.read_raw(path, "b0")


def test_exptime_from_primary(tmp_path):
    h, _ = make_header()
    del h["EXPTIME"]
    path, _, _ = make_raw(tmp_path, header=h, primary={"NIGHT": 20250101, "EXPTIME": 12.0})
    _, hdr, prim = rawio.read_raw(path, "b0")
    assert "EXPTIME" not in hdr and prim["EXPTIME"] == 12.0


def test_night_mismatch(tmp_path):
    path = _raw_with(tmp_path, NIGHT=20250102)
    with pytest.raises(errors.BadDataError) as ei:
        rawio.read_raw(path, "b0")
    assert "NIGHT" in str(ei.value) and "20250102" in str(ei.value)


def test_night_as_string_agrees(tmp_path):
    path = _raw_with(tmp_path, NIGHT="20250101")
    rawio.read_raw(path, "b0")


def test_validate_on_plain_dict_and_amps():
    h, shape = make_header()
    assert rawio.validate_raw_header(h, shape) == ["A", "B", "C", "D"]
    assert rawio.amp_ids(h) == ["A", "B", "C", "D"]
    assert rawio.trimmed_shape(h) == (40, 32)
    # two-amp readout
    h2, shape2 = make_header(amps="AD")
    assert rawio.validate_raw_header(h2, shape2) == ["A", "D"]
    # old numeric amp names
    h3 = {}
    for k, v in h.items():
        for a, n in zip("ABCD", "1234"):
            if k.endswith(a) and k[:-1] in ("DATASEC", "BIASSEC", "CCDSEC", "ORSEC", "GAIN",
                                             "SATURLEV"):
                k = k[:-1] + n
        h3[k] = v
    assert rawio.validate_raw_header(h3, shape) == ["1", "2", "3", "4"]
    with pytest.raises(errors.MissingKeywordError):
        rawio.amp_ids({"EXPTIME": 1.0})


def test_validate_primary_night_and_exptime():
    h, shape = make_header()
    del h["EXPTIME"]
    rawio.validate_raw_header(h, shape, primary_header={"EXPTIME": 5.0, "NIGHT": 20250101})
    with pytest.raises(errors.BadDataError, match="NIGHT"):
        rawio.validate_raw_header(h, shape, primary_header={"EXPTIME": 5.0,
                                                            "NIGHT": 20250103})
    with pytest.raises(errors.BadDataError, match="EXPTIME"):
        rawio.validate_raw_header(h, shape, primary_header={"EXPTIME": -5.0})


# ---------------------------------------------------------------- (e) atomic writes

def test_write_raw_failure_leaves_nothing(tmp_path, monkeypatch):
    h, shape = make_header()
    img = np.ones(shape, np.int32)
    out = tmp_path / "desi-00000001.fits.fz"
    calls = {"n": 0}
    real_write = fitsio.FITS.write

    def failing_write(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # primary and b0 written, fail on r0
            raise OSError("disk full (simulated)")
        return real_write(self, *args, **kw)

    monkeypatch.setattr(fitsio.FITS, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        rawio.write_raw(str(out), {"b0": (img, h), "r0": (img, h)},
                        {"EXPTIME": 1.0, "NIGHT": 20250101})
    assert calls["n"] == 3
    assert os.listdir(tmp_path) == []


def test_write_raw_failure_keeps_existing_target(tmp_path, monkeypatch):
    path, cams, prim = make_raw(tmp_path, name="desi.fits")
    before = open(path, "rb").read()

    def boom(self, *args, **kw):
        raise OSError("simulated")

    monkeypatch.setattr(fitsio.FITS, "write", boom)
    with pytest.raises(OSError):
        rawio.write_raw(path, cams, prim)
    assert open(path, "rb").read() == before
    assert no_temp_files(tmp_path)


def test_write_raw_rejects_invalid_header_before_writing(tmp_path):
    h, shape = make_header()
    del h["GAINA"]
    out = tmp_path / "x.fits"
    with pytest.raises(errors.MissingKeywordError, match="GAINA"):
        rawio.write_raw(str(out), {"b0": (np.zeros(shape, np.int32), h)}, {})
    assert os.listdir(tmp_path) == []


def test_write_raw_rejects_noninteger(tmp_path):
    h, shape = make_header()
    with pytest.raises(errors.BadDataError, match="non-integer"):
        rawio.write_raw(str(tmp_path / "x.fits"), {"b0": (np.full(shape, 0.5), h)}, {})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- (f) round trips

@pytest.mark.parametrize("name", ["desi-00000042.fits", "desi-00000042.fits.fz"])
def test_raw_round_trip(tmp_path, name):
    h, shape = make_header()
    h["SATURLEVA"] = 60000.0  # 9-character name -> HIERARCH
    h["DATE-OBS"] = "2025-01-02T03:04:05"
    rng = np.random.default_rng(5)
    imgs = {c: rng.integers(-5, 70000, size=shape).astype(np.int32) for c in ("b0", "z9")}
    prim = {"EXPID": 42, "NIGHT": 20250101, "EXPTIME": 300.0, "OBSTYPE": "SCIENCE"}
    path = rawio.write_raw(str(tmp_path / name), {c: (imgs[c], h) for c in imgs}, prim)
    assert no_temp_files(tmp_path)
    assert rawio.find_cameras(path) == ["b0", "z9"]
    for cam in imgs:
        img, hdr, p = rawio.read_raw(path, cam)
        assert img.dtype == np.int32 and img.dtype.isnative
        np.testing.assert_array_equal(img, imgs[cam])
        assert hdr["CAMERA"] == cam
        assert hdr["SATURLEVA"] == 60000.0
        expected = dict(h, CAMERA=cam)
        assert list(hdr) == list(expected)  # keyword order kept, nothing structural added
        assert hdr == expected
        assert p == prim
    # astropy sees the same: DESI layout, empty HDU 0, exposure keywords in SPEC, checksums
    with fits.open(path, checksum=True) as hl:
        names = [x.name for x in hl]
        assert names == ["PRIMARY", "SPEC", "B0", "Z9"]
        assert "EXPTIME" not in hl[0].header and hl["SPEC"].data is None
        if name.endswith(".fz"):
            assert isinstance(hl["B0"], fits.CompImageHDU)
            with fitsio.FITS(path) as fx:
                assert fx["B0"].is_compressed() and fx["B0"].get_info()["comptype"] == "RICE_1"
        np.testing.assert_array_equal(hl["Z9"].data, imgs["z9"])
        assert hl["B0"].header["SATURLEVA"] == 60000.0
        assert hl["SPEC"].header["EXPID"] == 42
    with fitsio.FITS(path) as fx:
        for hdu in fx:
            assert "CHECKSUM" in hdu.read_header() and "DATASUM" in hdu.read_header()
            assert hdu.verify_checksum() is None  # raises on a bad checksum


def test_raw_primary_layout_still_read(tmp_path):
    """Older files keep the exposure keywords in HDU 0; read_raw takes them from there."""
    h, shape = make_header()
    img = np.zeros(shape, np.int32)
    prim = {"EXPID": 7, "NIGHT": 20250101, "EXPTIME": 30.0}
    path = rawio.write_raw(str(tmp_path / "old.fits"), {"b0": (img, h)}, prim, layout="primary")
    with fitsio.FITS(path) as fx:
        assert [x.get_extname() for x in fx] == ["", "B0"]
        assert fx[0].read_header()["EXPID"] == 7
    assert rawio.read_raw(path, "b0")[2] == prim
    with pytest.raises(errors.InputError, match="layout"):
        rawio.write_raw(str(tmp_path / "x.fits"), {"b0": (img, h)}, prim, layout="other")


def test_write_raw_does_not_modify_inputs(tmp_path):
    h, shape = make_header()
    h0 = dict(h)
    img = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    img0 = img.copy()
    rawio.write_raw(str(tmp_path / "x.fits"), {"B0": (img, h)}, {"NIGHT": 20250101})
    assert h == h0
    np.testing.assert_array_equal(img, img0)


# ---------------------------------------------------------------- (g) reference raw

def test_reference_raw_matches_fitsio():
    path = require_reference("caseA_preproc", "raw.fits")
    img, hdr, prim = rawio.read_raw(path, "b0")
    with fitsio.FITS(path) as fx:
        expected = fx["B0"].read()
        h = fx["B0"].read_header()
    np.testing.assert_array_equal(img, expected)
    assert img.dtype.isnative and img.dtype == np.int32 and img.shape == (272, 664)
    assert rawio.amp_ids(hdr) == ["A", "B", "C", "D"]
    for amp in "ABCD":
        for base in ("BIASSEC", "DATASEC", "CCDSEC", "ORSEC", "PRESEC", "GAIN", "RDNOISE",
                     "SATURLEV"):
            assert hdr[base + amp] == h[base + amp]
    assert hdr["SATURLEVD"] == 65000.0
    assert rawio.trimmed_shape(hdr) == (240, 300)
    assert prim["EXPTIME"] == 900.0 and prim["NIGHT"] == 20250115
    assert "NAXIS1" not in hdr and "BITPIX" not in hdr and "EXTNAME" not in hdr


def test_reference_raw_rewritten_as_fz(tmp_path):
    path = require_reference("caseA_preproc", "raw.fits")
    img, hdr, prim = rawio.read_raw(path, "B0")
    out = rawio.write_raw(str(tmp_path / "desi-00271828.fits.fz"), {"b0": (img, hdr)}, prim)
    img2, hdr2, prim2 = rawio.read_raw(out, "b0")
    np.testing.assert_array_equal(img2, img)
    assert hdr2 == hdr and prim2 == prim
    assert os.path.getsize(out) < os.path.getsize(path)
    assert glob.glob(str(tmp_path / ".*")) == []
