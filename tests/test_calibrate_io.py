"""Calibration files: round trips, desispec reads gpuspec's files (and vice versa),
bad input gives clear errors and no partial output."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from gpuspec.calibrate.cframe import process_exposure
from gpuspec.calibrate.fiberflat import apply_fiberflat, compute_fiberflat
from gpuspec.calibrate.fluxcalib import apply_flux_calibration, compute_flux_calibration
from gpuspec.calibrate.sky import compute_sky, subtract_sky
from gpuspec.calibrate.stdstars import fit_stdstars
from gpuspec.errors import BadDataError, InputError, MissingFileError
from gpuspec.io.cframe import read_cframe, write_cframe
from gpuspec.io.fiberflat import read_fiberflat, write_fiberflat
from gpuspec.io.fluxcalib import (read_flux_calibration, read_stdstar_models,
                                  write_flux_calibration, write_stdstar_models)
from gpuspec.io.frame import write_frame
from gpuspec.io.sky import read_sky, write_sky

import calib_data as C


@pytest.fixture(scope="module")
def products():
    exp = C.exposure(seed=11)
    cam = "r0"
    ff = compute_fiberflat(exp.flats[cam], backend="numpy")
    fr = apply_fiberflat(exp.frames[cam], ff, backend="numpy")
    sky = compute_sky(fr, backend="numpy")
    sub = subtract_sky(fr, sky, backend="numpy")
    fc = compute_flux_calibration(sub, exp.truth["template_wave"], exp.truth["template_flux"],
                                  exp.truth["std_fibers"], backend="numpy")
    cf = process_exposure(exp.frames[cam], ff, sky, fc, backend="numpy")
    return dict(exp=exp, cam=cam, ff=ff, sky=sky, sub=sub, fc=fc, cf=cf)


def test_fiberflat_round_trip(products, tmp_path):
    ff = products["ff"]
    path = write_fiberflat(tmp_path / "fiberflat-r0-00000099.fits", ff)
    back = read_fiberflat(path)
    np.testing.assert_allclose(back.fiberflat, ff.fiberflat, rtol=1e-6)
    np.testing.assert_allclose(back.ivar, ff.ivar, rtol=1e-6)
    np.testing.assert_allclose(back.wave, ff.wave, rtol=1e-7)
    assert np.array_equal(back.mask, ff.mask) and back.mask.dtype == np.uint32
    assert back.chi2pdf == pytest.approx(ff.chi2pdf)
    assert back.meta["CAMERA"] == "r0" and len(back.fibermap) == ff.nspec


def test_sky_round_trip(products, tmp_path):
    sky = products["sky"]
    back = read_sky(write_sky(tmp_path / "sky.fits", sky))
    np.testing.assert_allclose(back.flux, sky.flux, rtol=1e-6, atol=1e-6 * sky.flux.max())
    np.testing.assert_allclose(back.stat_ivar, sky.stat_ivar, rtol=1e-6)
    np.testing.assert_allclose(back.throughput_corrections, sky.throughput_corrections,
                               rtol=1e-6)
    assert np.array_equal(back.skytargetid, sky.skytargetid)


def test_fluxcalib_and_cframe_round_trip(products, tmp_path):
    fc, cf = products["fc"], products["cf"]
    back = read_flux_calibration(write_flux_calibration(tmp_path / "fc.fits", fc))
    np.testing.assert_allclose(back.calib, fc.calib, rtol=1e-6)
    assert back.fibercorr_comments["PSF_TO_FIBER_FLUX"]
    assert back.meta["BUNIT"] == "10**+17 cm2 count s / erg"
    c = read_cframe(write_cframe(tmp_path / "cframe-r0-00000100.fits", cf))
    assert c.meta["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"
    np.testing.assert_allclose(c.flux, cf.flux, rtol=1e-6, atol=1e-6 * np.abs(cf.flux).max())


@pytest.mark.slow
def test_stdstar_models_round_trip(tmp_path):
    exp = C.exposure(seed=11)
    ffs = {c: compute_fiberflat(exp.flats[c], backend="numpy") for c in exp.frames}
    skies = {c: compute_sky(apply_fiberflat(exp.frames[c], ffs[c], backend="numpy"),
                            backend="numpy") for c in exp.frames}
    m = fit_stdstars(exp.frames, skies, ffs, backend="numpy")
    back = read_stdstar_models(write_stdstar_models(tmp_path / "stdstars-0-00000100.fits", m))
    np.testing.assert_allclose(back.flux, m.flux, rtol=1e-6)
    assert np.array_equal(back.fibers, m.fibers)
    assert list(back.metadata.dtype.names)[:3] == ["TARGETID", "FIBER", "LOGG"]


@pytest.mark.interop
def test_desispec_reads_gpuspec_files(products, tmp_path):
    dio = pytest.importorskip("desispec.io")
    C.quiet()
    ff, sky, fc, cf = (products[k] for k in ("ff", "sky", "fc", "cf"))
    d = dio.read_fiberflat(write_fiberflat(tmp_path / "ff.fits", ff))
    np.testing.assert_allclose(d.fiberflat, ff.fiberflat, rtol=1e-6)
    assert d.header["CAMERA"] == "r0" and d.chi2pdf == pytest.approx(ff.chi2pdf)
    s = dio.read_sky(write_sky(tmp_path / "sky.fits", sky))
    np.testing.assert_allclose(s.flux, sky.flux, rtol=1e-6, atol=1e-6 * sky.flux.max())
    np.testing.assert_allclose(s.throughput_corrections, sky.throughput_corrections,
                               rtol=1e-6)
    c = dio.read_flux_calibration(write_flux_calibration(tmp_path / "fc.fits", fc))
    np.testing.assert_allclose(c.calib, fc.calib, rtol=1e-6)
    assert "PSF_TO_FIBER_FLUX" in c.fibercorr.dtype.names
    f = dio.read_frame(write_cframe(tmp_path / "cframe-r0-00000100.fits", cf))
    assert f.meta["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"
    np.testing.assert_allclose(f.flux, cf.flux, rtol=1e-6, atol=1e-6 * np.abs(cf.flux).max())
    # desispec applies gpuspec's files to a frame like gpuspec does
    import desispec.fiberflat
    import desispec.fluxcalibration
    import desispec.sky

    frame = dio.read_frame(write_frame(tmp_path / "frame-r0-00000100.fits",
                                       products["exp"].frames["r0"]))
    desispec.fiberflat.apply_fiberflat(frame, d)
    desispec.sky.subtract_sky(frame, s)
    desispec.fluxcalibration.apply_flux_calibration(frame, c)
    # gpuspec applying the same files (float32 WAVELENGTH in the sky file: the 2 Å
    # line/continuum split of subtract_sky sees the rounded grid, as desispec does)
    mine = process_exposure(products["exp"].frames["r0"], read_fiberflat(tmp_path / "ff.fits"),
                            read_sky(tmp_path / "sky.fits"),
                            read_flux_calibration(tmp_path / "fc.fits"), backend="numpy")
    np.testing.assert_allclose(frame.flux, mine.flux, rtol=1e-4,
                               atol=1e-4 * np.abs(cf.flux).max())


@pytest.mark.interop
def test_gpuspec_reads_desispec_files(products, tmp_path):
    dio = pytest.importorskip("desispec.io")
    import desispec.fiberflat
    import desispec.sky
    from desispec.io.fluxcalibration import write_flux_calibration as dwrite_fc

    C.quiet()
    ff = products["ff"]
    dff = desispec.fiberflat.FiberFlat(ff.wave, ff.fiberflat, ff.ivar, ff.mask, ff.meanspec,
                                       header=dict(ff.meta))
    back = read_fiberflat(dio.write_fiberflat(str(tmp_path / "ff.fits"), dff))
    np.testing.assert_allclose(back.fiberflat, ff.fiberflat, rtol=1e-6)
    sky = products["sky"]
    dsky = desispec.sky.SkyModel(sky.wave, sky.flux, sky.ivar, sky.mask, header=dict(sky.meta),
                                 stat_ivar=sky.stat_ivar,
                                 throughput_corrections=sky.throughput_corrections)
    sback = read_sky(dio.write_sky(str(tmp_path / "sky.fits"), dsky))
    np.testing.assert_allclose(sback.flux, sky.flux, rtol=1e-6, atol=1e-6 * sky.flux.max())
    fc = products["fc"]
    from desispec.fluxcalibration import FluxCalib

    dfc = FluxCalib(fc.wave, fc.calib, fc.ivar, fc.mask)
    cback = read_flux_calibration(dwrite_fc(str(tmp_path / "fc.fits"), dfc))
    np.testing.assert_allclose(cback.calib, fc.calib, rtol=1e-6)


# ---------------------------------------------------------------- bad input


def test_flat_without_lamp_signal(tmp_path):
    from gpuspec.calibrate.files import compute_fiberflat_file

    exp = C.exposure(seed=11)
    dark = C.deepcopy(exp.flats["b0"])
    rng = np.random.default_rng(0)
    dark.flux = rng.normal(0, 1, dark.flux.shape) / np.sqrt(dark.ivar)
    with pytest.raises(BadDataError, match="no lamp signal"):
        compute_fiberflat(dark, backend="numpy")
    src = write_frame(tmp_path / "flat.fits", dark)
    out = tmp_path / "fiberflat-b0-00000099.fits"
    with pytest.raises(BadDataError, match=f"{src}.*no lamp signal"):
        compute_fiberflat_file(src, out, backend="numpy")
    assert not out.exists() and os.listdir(tmp_path) == ["flat.fits"]


def test_frame_without_sky_fibers(tmp_path, products):
    from gpuspec.calibrate.files import compute_sky_file

    fr = C.deepcopy(products["exp"].frames["r0"])
    fr.fibermap["OBJTYPE"] = "TGT"
    with pytest.raises(BadDataError, match="no sky fibers"):
        compute_sky(fr, backend="numpy")
    src = write_frame(tmp_path / "frame.fits", fr)
    ffp = write_fiberflat(tmp_path / "ff.fits", products["ff"])
    out = tmp_path / "sky.fits"
    with pytest.raises(BadDataError, match="frame.fits.*OBJTYPE.*no sky fibers"):
        compute_sky_file(src, ffp, out, backend="numpy")
    assert not out.exists()


def test_no_standard_stars(products):
    exp = products["exp"]
    fm = exp.fibermap.copy()
    fm["DESI_TARGET"] &= ~(1 << 33)
    fm["FA_TYPE"] = 0
    sub = replace(products["sub"], fibermap=fm)
    with pytest.raises(BadDataError, match="no standard stars"):
        compute_flux_calibration(sub, exp.truth["template_wave"], exp.truth["template_flux"],
                                 exp.truth["std_fibers"], backend="numpy")
    frames = {c: replace(f, fibermap=fm) for c, f in exp.frames.items()}
    with pytest.raises(BadDataError, match="no standard star on spectrograph 0"):
        fit_stdstars(frames, {}, {}, backend="numpy")


def test_mismatched_wavelength_grids(products, tmp_path):
    from gpuspec.calibrate.files import process_exposure_file

    ff, sky, fc = products["ff"], products["sky"], products["fc"]
    fr = products["exp"].frames["r0"]
    shifted = replace(fr, wave=fr.wave + 0.4)
    for call in (lambda: apply_fiberflat(shifted, ff, backend="numpy"),
                 lambda: subtract_sky(shifted, sky, backend="numpy"),
                 lambda: apply_flux_calibration(shifted, fc, backend="numpy")):
        with pytest.raises(BadDataError, match="same wavelength"):
            call()
    src = write_frame(tmp_path / "frame-r0-00000100.fits", shifted)
    ffp = write_fiberflat(tmp_path / "ff.fits", ff)
    out = tmp_path / "cframe-r0-00000100.fits"
    with pytest.raises(BadDataError, match="frame-r0-00000100.fits.*same wavelength"):
        process_exposure_file(src, out, fiberflat=ffp)
    assert not out.exists()
    with pytest.raises(MissingFileError):
        process_exposure_file(src, out, fiberflat=tmp_path / "missing.fits")


def test_cli_reports_errors(tmp_path, capsys, products):
    from gpuspec.cli import main

    fr = C.deepcopy(products["exp"].frames["r0"])
    fr.fibermap["OBJTYPE"] = "TGT"
    src = write_frame(tmp_path / "frame.fits", fr)
    ffp = write_fiberflat(tmp_path / "ff.fits", products["ff"])
    rc = main(["compute-sky", "-i", src, "--fiberflat", ffp, "-o", str(tmp_path / "s.fits"),
               "--backend", "numpy"])
    assert rc == 1 and "no sky fibers" in capsys.readouterr().err
    assert not (tmp_path / "s.fits").exists()
    rc = main(["compute-sky", "-i", src, "--fiberflat", ffp, "-o", str(tmp_path / "s.fits"),
               "--adjust-wavelength"])
    assert rc == 1 and "not implemented" in capsys.readouterr().err


def test_options_not_implemented(products):
    with pytest.raises(NotImplementedError):
        compute_sky(products["sub"], adjust_wavelength=True, backend="numpy")
    with pytest.raises(InputError, match="nothing to do"):
        process_exposure(products["exp"].frames["r0"])
