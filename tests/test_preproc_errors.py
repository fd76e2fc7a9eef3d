"""Bad inputs to preproc: a clear error naming the problem, and no output file."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from conftest import require_reference
from gpuspec.errors import BadDataError, GpuspecError, InputError, MissingKeywordError
from gpuspec.preproc import preproc, preproc_file


def _raw():
    d = require_reference("caseA_preproc")
    raw, hdr = fitsio.read(os.path.join(d, "raw.fits"), 1, header=True)
    prim = fitsio.read_header(os.path.join(d, "raw.fits"), 0)
    hdr = {r["name"]: r["value"] for r in hdr.records()}
    prim = {r["name"]: r["value"] for r in prim.records()}
    return d, raw, hdr, prim


def _write_raw(path, raw, hdr, prim):
    """A raw file written directly with fitsio (no validation), camera HDU B0."""
    with fitsio.FITS(path, "rw", clobber=True) as fx:
        fx.write(None, header=[{"name": k, "value": v} for k, v in prim.items()
                               if k not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "EXTNAME")])
        fx.write(raw, extname="B0", header=[{"name": k, "value": v} for k, v in hdr.items()
                                            if k not in ("XTENSION", "BITPIX", "NAXIS",
                                                         "NAXIS1", "NAXIS2", "PCOUNT",
                                                         "GCOUNT", "EXTNAME")])


def _no_files(folder, name):
    leftovers = [f for f in os.listdir(folder) if name in f]
    assert not leftovers, leftovers


# ------------------------------------------------------------------ API level
@pytest.mark.parametrize("which,shape,expect", [
    ("bias", (272, 660), "bias"), ("pixflat", (240, 299), "pixflat"),
    ("mask", (241, 300), "mask"), ("dark", (100, 100), "dark")])
def test_wrong_shape_calibration_array(which, shape, expect):
    d, raw, hdr, prim = _raw()
    cal = np.ones(shape, dtype=np.int32 if which == "mask" else np.float64)
    with pytest.raises(BadDataError, match=expect) as ei:
        preproc(raw, hdr, prim, backend="numpy", cosmics=False, **{which: cal})
    assert str(tuple(shape)) in str(ei.value)


def test_wrong_shape_calibration_file(tmp_path):
    d, raw, hdr, prim = _raw()
    fn = str(tmp_path / "pixflat-b0.fits")
    fitsio.write(fn, np.ones((10, 10), np.float32))
    with pytest.raises(BadDataError, match="pixflat") as ei:
        preproc(raw, hdr, prim, backend="numpy", pixflat=fn)
    assert fn in str(ei.value)


def test_missing_calibration_file(tmp_path):
    d, raw, hdr, prim = _raw()
    fn = str(tmp_path / "nope.fits")
    with pytest.raises(InputError, match="bias") as ei:
        preproc(raw, hdr, prim, backend="numpy", bias=fn)
    assert fn in str(ei.value)


@pytest.mark.parametrize("key", ["GAINB", "DATASECC", "CCDSECA", "BIASSECD", "CAMERA"])
def test_missing_keyword(key):
    d, raw, hdr, prim = _raw()
    bad = {k: v for k, v in hdr.items() if k != key}
    with pytest.raises(MissingKeywordError, match=key):
        preproc(raw, bad, prim, backend="numpy", cosmics=False)


def test_no_sections_at_all():
    d, raw, hdr, prim = _raw()
    bad = {k: v for k, v in hdr.items() if not k.startswith("BIASSEC")}
    with pytest.raises(MissingKeywordError, match="BIASSEC"):
        preproc(raw, bad, prim, backend="numpy")


def test_bad_section_and_gain():
    d, raw, hdr, prim = _raw()
    with pytest.raises(InputError, match="DATASECB"):
        preproc(raw, {**hdr, "DATASECB": "[365:514,1:999]"}, prim, backend="numpy")
    with pytest.raises(BadDataError, match="GAINA"):
        preproc(raw, {**hdr, "GAINA": -1.5}, prim, backend="numpy")
    with pytest.raises(BadDataError, match="GAINC"):
        preproc(raw, {**hdr, "GAINC": "abc"}, prim, backend="numpy")


def test_nan_pixels():
    d, raw, hdr, prim = _raw()
    r = raw.astype(np.float64)
    r[10, 400] = np.nan
    r[11, 400] = np.nan
    with pytest.raises(BadDataError, match="NaN") as ei:
        preproc(r, hdr, prim, backend="numpy")
    assert "2 NaN" in str(ei.value)


def test_nan_in_calibration(tmp_path):
    d, raw, hdr, prim = _raw()
    pf = fitsio.read(os.path.join(d, "calib_pixflat.fits")).astype(np.float64)
    pf[3, 3] = np.nan
    with pytest.raises(BadDataError, match="pixflat calibration has 1 NaN"):
        preproc(raw, hdr, prim, backend="numpy", pixflat=pf)
    fn = str(tmp_path / "dark.fits")
    dk = fitsio.read(os.path.join(d, "calib_dark.fits"))
    dk[0, 0] = np.inf
    fitsio.write(fn, dk)
    with pytest.raises(BadDataError, match="dark") as ei:
        preproc(raw, hdr, prim, backend="numpy", dark=fn)
    assert fn in str(ei.value)


def test_negative_exptime():
    d, raw, hdr, prim = _raw()
    with pytest.raises(BadDataError, match="EXPTIME"):
        preproc(raw, hdr, {**prim, "EXPTIME": -5.0}, backend="numpy",
                dark=os.path.join(d, "calib_dark.fits"))
    with pytest.raises(BadDataError, match="EXPTIME"):   # even without a dark
        preproc(raw, {**hdr, "EXPTIME": -5.0}, prim, backend="numpy")


def test_dark_without_exptime():
    d, raw, hdr, prim = _raw()
    h = {k: v for k, v in hdr.items() if k != "EXPTIME"}
    p = {k: v for k, v in prim.items() if k != "EXPTIME"}
    with pytest.raises(InputError, match="EXPTIME"):
        preproc(raw, h, p, backend="numpy", dark=os.path.join(d, "calib_dark.fits"))


def test_calibration_true_not_supported():
    d, raw, hdr, prim = _raw()
    with pytest.raises(InputError, match="not supported"):
        preproc(raw, hdr, prim, backend="numpy", bias=True)


# ------------------------------------------------------------------ file level: no output
@pytest.mark.parametrize("case", ["nogain", "nosections", "nan", "negexptime", "badshape"])
def test_preproc_file_errors_leave_no_output(tmp_path, case):
    d, raw, hdr, prim = _raw()
    kwargs = {}
    if case == "nogain":
        hdr = {k: v for k, v in hdr.items() if k != "GAINA"}
        expect, exc = "GAINA", MissingKeywordError
    elif case == "nosections":
        hdr = {k: v for k, v in hdr.items() if not k.startswith("DATASEC")}
        expect, exc = "DATASEC", MissingKeywordError
    elif case == "nan":
        raw = raw.astype(np.float32)
        raw[100, 200] = np.nan
        expect, exc = "NaN", BadDataError
    elif case == "negexptime":
        prim = {**prim, "EXPTIME": -1.0}
        hdr = {**hdr, "EXPTIME": -1.0}
        expect, exc = "EXPTIME", BadDataError
    else:
        kwargs["mask"] = np.zeros((240, 301), np.int32)
        expect, exc = "mask", BadDataError
    rawfn = str(tmp_path / "desi-00271828.fits")
    _write_raw(rawfn, raw, hdr, prim)
    out = str(tmp_path / "preproc-b0-00271828.fits")
    with pytest.raises(exc, match=expect):
        preproc_file(rawfn, "b0", out, backend="numpy", **kwargs)
    assert not os.path.exists(out)
    _no_files(str(tmp_path), "preproc-")


def test_cli_error_message_and_no_output(tmp_path, capsys):
    from gpuspec.cli import main

    d, raw, hdr, prim = _raw()
    bad = str(tmp_path / "bias.fits")
    fitsio.write(bad, np.zeros((5, 5), np.float32))
    out = str(tmp_path / "out.fits")
    rc = main(["preproc", "-i", os.path.join(d, "raw.fits"), "--camera", "b0", "-o", out,
               "--bias", bad, "--nodark", "--nopixflat", "--nomask", "--no-gpu"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bias" in err and bad in err
    assert not os.path.exists(out)
    _no_files(str(tmp_path), "out")
    # a camera the file does not have
    rc = main(["preproc", "-i", os.path.join(d, "raw.fits"), "--camera", "r3", "-o", out,
               "--nobias", "--nodark", "--nopixflat", "--nomask", "--no-gpu"])
    assert rc == 1 and "r3" in capsys.readouterr().err
    assert not os.path.exists(out)
    assert isinstance(BadDataError("x"), GpuspecError)


# ------------------------------------------------------------------ one calibration reader
@pytest.mark.parametrize("value", [-3.5, 2.5, -3])
def test_bad_mask_values_refused(tmp_path, value):
    """A negative or fractional mask is refused, whether a file (the message names the file
    and the HDU) or an array; never cast to int32 (−3 would set almost every ccdmask bit)."""
    d, raw, hdr, prim = _raw()
    m = np.zeros((240, 300), np.float32 if isinstance(value, float) else np.int32)
    m[5, 7] = value
    fn = str(tmp_path / "mask-b0.fits")
    fitsio.write(fn, m)
    with pytest.raises(BadDataError, match="mask") as ei:
        preproc(raw, hdr, prim, backend="numpy", cosmics=False, mask=fn)
    assert fn in str(ei.value) and "HDU 0" in str(ei.value)
    with pytest.raises(BadDataError, match="mask"):
        preproc(raw, hdr, prim, backend="numpy", cosmics=False, mask=m)


def test_calibration_in_named_hdu(tmp_path):
    """A file whose primary HDU is empty: the image of the HDU named after the kind."""
    d, raw, hdr, prim = _raw()
    pf = fitsio.read(os.path.join(d, "calib_pixflat.fits"))
    fn = str(tmp_path / "pixflat.fits")
    with fitsio.FITS(fn, "rw", clobber=True) as fx:
        fx.write(None)
        fx.write(np.ones((3, 3), np.float32), extname="OTHER")
        fx.write(pf, extname="PIXFLAT")
    a = preproc(raw, hdr, prim, backend="numpy", cosmics=False, pixflat=fn)
    b = preproc(raw, hdr, prim, backend="numpy", cosmics=False, pixflat=pf.astype(np.float64))
    assert np.array_equal(a.pix, b.pix)


def test_preproc_file_validates_the_header_once(tmp_path, monkeypatch):
    """read_raw + preproc on one camera: the raw header goes through raw_layout once."""
    import gpuspec.io.raw as rawio
    import gpuspec.preproc.core as core

    d, raw, hdr, prim = _raw()
    calls = []
    real = rawio.raw_layout

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(rawio, "raw_layout", counting)
    monkeypatch.setattr(core, "raw_layout", counting)
    preproc_file(os.path.join(d, "raw.fits"), "b0", str(tmp_path / "p.fits"), backend="numpy",
                 cosmics=False)
    assert len(calls) == 1
