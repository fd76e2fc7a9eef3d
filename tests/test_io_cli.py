"""``gpuspec info`` on every file kind, and the lazy ``gpuspec.io`` namespace."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from conftest import require_reference
from gpuspec import Frame, Image, cli
from gpuspec.io import calib, fibermap as fmio, frame as frio, image as imio, raw as rawio
from gpuspec.io.cli import detect_kind
from test_io_raw import make_header


def run_info(capsys, *files):
    rc = cli.main(["info", *map(str, files)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_raw(tmp_path, capsys):
    h, shape = make_header(amps="AD")
    img = np.full(shape, 1000, np.int32)
    path = rawio.write_raw(str(tmp_path / "desi-00000042.fits.fz"),
                           {"b0": (img, h), "r0": (img, h), "z0": (img, h)},
                           {"EXPID": 42, "NIGHT": 20250101, "EXPTIME": 300.0})
    rc, out, err = run_info(capsys, path)
    assert rc == 0, err
    assert f"{path}: raw" in out
    assert "cameras (3): b0 r0 z0" in out
    assert f"b0: {shape}" in out and "amps AD" in out
    assert "EXPID=42" in out and "NIGHT=20250101" in out and "EXPTIME=300.0" in out
    assert "RICE_1" in out and "int32" in out


def test_info_raw_invalid_header_exit_1(tmp_path, capsys):
    h, shape = make_header()
    h["BIASSECB"] = "garbage"
    path = rawio.write_raw(str(tmp_path / "desi.fits"), {"b0": (np.zeros(shape, np.int32), h)},
                           {"EXPTIME": 1.0}, validate=False)
    rc, out, err = run_info(capsys, path)
    assert rc == 1
    assert "BIASSECB" in err and "desi.fits" in err


def test_info_preproc(tmp_path, capsys):
    mask = np.zeros((8, 10), np.int32)
    mask[0, :4] = 16
    im = Image(pix=np.ones((8, 10)), ivar=np.ones((8, 10)), mask=mask,
               readnoise=np.full((8, 10), 3.0), camera="z5",
               meta={"EXPID": 9, "NIGHT": 20250102, "OBSRDNA": 3.0})
    path = imio.write_image(str(tmp_path / "preproc-z5-00000009.fits"), im)
    rc, out, err = run_info(capsys, path)
    assert rc == 0, err
    assert ": preproc" in out
    for s in ("IMAGE", "IVAR", "MASK", "READNOISE", "CAMERA='z5'", "EXPID=9",
              "masked pixels 4 (5.00%)", "(8, 10) float32", "int16"):
        assert s in out, s


def test_info_psf(ref_psf_path, capsys):
    rc, out, err = run_info(capsys, ref_psf_path)
    assert rc == 0, err
    assert ": psf" in out
    assert "PSFTYPE='GAUSS-HERMITE'" in out and "PSFVER=3" in out
    assert "nspec 500" in out and "5543.0 - 7826.0" in out
    assert "XTRACE" in out and "(500, 7) float64" in out


def test_info_frame(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fr = Frame(wave=np.linspace(3600, 3700, 40), flux=rng.random((3, 40)),
               ivar=np.ones((3, 40)), resolution_data=rng.random((3, 11, 40)),
               meta={"CAMERA": "b2", "EXPID": 5, "NIGHT": 20250101, "SPECMIN": 1000})
    path = frio.write_frame(str(tmp_path / "frame-b2-00000005.fits"), fr)
    rc, out, err = run_info(capsys, path)
    assert rc == 0, err
    assert ": frame" in out
    assert "nspec 3; nwave 40; wavelength 3600.00 - 3700.00 A" in out
    assert "ndiag 11" in out and "SPECMIN=1000" in out and "CAMERA='b2'" in out


def test_info_spectra_and_coadd(capsys):
    spec = require_reference("caseC_coadd", "input_spectra.fits")
    coadd = require_reference("caseC_coadd", "coadd_default.fits")
    rc, out, err = run_info(capsys, spec, coadd)
    assert rc == 0, err
    assert f"{spec}: spectra" in out and f"{coadd}: coadd" in out
    assert "bands: r" in out
    assert "nspec 15 (unique TARGETID 5)" in out
    assert "ntarget 5 (unique TARGETID 5)" in out
    assert "EXP_FIBERMAP rows): 15" in out
    assert "nwave 375; 6000.00 - 6299.20 A; ndiag 11" in out


def test_info_spectra_written_by_gpuspec(tmp_path, capsys):
    spectra_io = pytest.importorskip("gpuspec.io.spectra")
    from gpuspec import Spectra

    rng = np.random.default_rng(0)
    fm = fmio.empty_fibermap(4)
    fm["TARGETID"] = [1, 2, 2, 3]
    sp = Spectra(bands=["b", "r"], wave={"b": np.arange(10.0), "r": np.arange(5.0, 20)},
                 flux={"b": rng.random((4, 10)), "r": rng.random((4, 15))},
                 ivar={"b": np.ones((4, 10)), "r": np.ones((4, 15))}, fibermap=fm)
    path = spectra_io.write_spectra(str(tmp_path / "spectra-main-dark-1234.fits"), sp)
    rc, out, err = run_info(capsys, path)
    assert rc == 0, err
    assert ": spectra" in out and "bands: b r" in out and "unique TARGETID 3" in out


def test_info_fibermap_and_calib(tmp_path, capsys):
    fm = fmio.empty_fibermap(30, specmin=4980)
    fm["OBJTYPE"][:10] = "SKY"
    p1 = fmio.write_fibermap(str(tmp_path / "fibermap-00000001.fits"), fm, {"TILEID": 77})
    p2 = calib.write_dark(str(tmp_path / "dark-b0.fits"), np.full((6, 7), 0.002),
                          {"CAMERA": "b0"})
    rc, out, err = run_info(capsys, p1, p2)
    assert rc == 0, err
    assert ": fibermap" in out and "rows 30" in out and "FIBER 4980 - 5009" in out
    assert "NON:20 SKY:10" in out and "TILEID=77" in out
    assert ": calib" in out and "calibration: dark" in out and "(6, 7) float32" in out
    assert "median 0.002" in out


def test_info_reference_calib(capsys):
    path = require_reference("caseA_preproc", "calib_mask.fits")
    rc, out, err = run_info(capsys, path)
    assert rc == 0 and ": calib" in out and "(240, 300) int32" in out


def test_info_errors_exit_1(tmp_path, capsys):
    good = fmio.write_fibermap(str(tmp_path / "fm.fits"), fmio.empty_fibermap(2))
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(data[:-100])
    rc, out, err = run_info(capsys, tmp_path / "missing.fits", trunc, good)
    assert rc == 1
    assert "missing.fits" in err and "no such file" in err
    assert "trunc.fits" in err and "truncated" in err
    assert ": fibermap" in out  # the good file is still summarised


def test_info_headers_flag(tmp_path, capsys):
    p = calib.write_bias(str(tmp_path / "b.fits"), np.zeros((2, 2)), {"CAMERA": "b0"})
    rc = cli.main(["info", "--headers", p])
    out = capsys.readouterr().out
    assert rc == 0 and "CALTYPE = 'BIAS" in out and "--- header [0]" in out


def test_detect_kind_unknown():
    assert detect_kind(["", "FOO"], [{}, {}]) == "unknown"
    assert detect_kind(["", "FLUX", "IVAR"], [{}, {}, {}]) == "unknown"


# ------------------------------------------------------------------ gpuspec.io namespace

def test_io_namespace_lazy_exports():
    import gpuspec.io as io

    assert io.read_raw is rawio.read_raw
    assert io.write_image is imio.write_image
    assert io.read_frame is frio.read_frame
    assert io.empty_fibermap is fmio.empty_fibermap
    assert io.read_calib_image is calib.read_calib_image
    assert "read_psf" in dir(io) and "read_spectra" in io.__all__
    with pytest.raises(AttributeError):
        io.no_such_function  # noqa: B018


def test_io_namespace_every_name_resolves_and_missing_module_is_an_error(monkeypatch):
    """Every lazy name resolves to its module's object; a missing module is an import
    error (a packaging error shows), not a hidden AttributeError."""
    import gpuspec.io as io

    for name, mod in io._LAZY.items():
        assert getattr(io, name) is getattr(importlib.import_module(f"gpuspec.io.{mod}"), name)
    monkeypatch.setitem(io._LAZY, "read_future", "future_module_that_does_not_exist")
    with pytest.raises(ModuleNotFoundError, match="future_module_that_does_not_exist"):
        io.read_future  # noqa: B018


def test_io_import_is_cheap():
    """Importing gpuspec.io alone must not import the submodules."""
    code = ("import sys, gpuspec.io; "
            "print([m for m in ('gpuspec.io.raw', 'gpuspec.io.frame', 'gpuspec.io.psf', "
            "'gpuspec.io.spectra') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
