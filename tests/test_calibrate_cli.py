"""The calibration CLIs end to end on synthetic files (desispec's option names)."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec.calibrate.cframe import process_exposure
from gpuspec.cli import main
from gpuspec.io.cframe import read_cframe
from gpuspec.io.fiberflat import read_fiberflat
from gpuspec.io.fluxcalib import read_flux_calibration, read_stdstar_models
from gpuspec.io.frame import write_frame
from gpuspec.io.sky import read_sky

import calib_data as C


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    exp = C.exposure(seed=11)
    p = {}
    for cam in exp.frames:
        flat = write_frame(d / f"frame-{cam}-00000099.fits", exp.flats[cam])
        frame = write_frame(d / f"frame-{cam}-00000100.fits", exp.frames[cam])
        ff, sky = d / f"fiberflat-{cam}-00000099.fits", d / f"sky-{cam}-00000100.fits"
        assert main(["compute-fiberflat", "-i", flat, "-o", str(ff), "--nsig", "10",
                     "--acc", "5e-4", "--smoothing-resolution", "5", "--backend",
                     "numpy"]) == 0
        assert main(["compute-sky", "-i", frame, "--fiberflat", str(ff), "-o", str(sky),
                     "--backend", "numpy"]) == 0
        p[cam] = dict(frame=frame, ff=str(ff), sky=str(sky))
    std = d / "stdstars-0-00000100.fits"
    cams = sorted(p)
    assert main(["fit-stdstars", "--frames", *[p[c]["frame"] for c in cams], "--skymodels",
                 *[p[c]["sky"] for c in cams], "--fiberflats", *[p[c]["ff"] for c in cams],
                 "-o", str(std), "--delta-color", "0.2", "--z-max", "0.008", "--backend",
                 "numpy"]) == 0
    for cam in cams:
        fc, cf = d / f"fluxcalib-{cam}-00000100.fits", d / f"cframe-{cam}-00000100.fits"
        assert main(["compute-fluxcalib", "-i", p[cam]["frame"], "--fiberflat", p[cam]["ff"],
                     "--sky", p[cam]["sky"], "--models", str(std), "-o", str(fc),
                     "--backend", "numpy"]) == 0
        assert main(["process-exposure", "-i", p[cam]["frame"], "--fiberflat", p[cam]["ff"],
                     "--sky", p[cam]["sky"], "--calib", str(fc), "-o", str(cf),
                     "--backend", "numpy"]) == 0
        p[cam].update(fc=str(fc), cf=str(cf))
    return exp, p, str(std), d


@pytest.mark.slow
def test_cli_chain_outputs(chain):
    exp, p, std, d = chain
    m = read_stdstar_models(std)
    assert set(m.fibers) <= set(exp.truth["std_fibers"]) and len(m.fibers) >= 4
    for cam, files in p.items():
        ff, sky, fc = (read_fiberflat(files["ff"]), read_sky(files["sky"]),
                       read_flux_calibration(files["fc"]))
        assert sky.meta["IN_FRAME"] == f"frame-{cam}-00000100.fits"
        assert fc.meta["STDMODEL"] == "stdstars-0-00000100.fits"
        cf = read_cframe(files["cf"])
        assert cf.meta["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"
        assert cf.meta["IN_CALIB"] == f"fluxcalib-{cam}-00000100.fits"
        ref = process_exposure(exp.frames[cam], ff, sky, fc, backend="numpy")
        np.testing.assert_allclose(cf.flux, ref.flux, rtol=1e-5,
                                   atol=1e-6 * np.abs(ref.flux).max())
        assert np.array_equal(cf.mask, ref.mask)


@pytest.mark.interop
def test_desispec_reads_cli_outputs(chain):
    dio = pytest.importorskip("desispec.io")
    from desispec.io.fluxcalibration import read_stdstar_models as dread

    C.quiet()
    exp, p, std, d = chain
    flux, wave, fibers, meta = dread(std)
    assert flux.shape == (len(fibers), wave.size) and "TEFF" in meta.columns.names
    for files in p.values():
        dio.read_fiberflat(files["ff"])
        dio.read_sky(files["sky"])
        dio.read_flux_calibration(files["fc"])
        assert dio.read_frame(files["cf"]).meta["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"


def test_average_and_autocalib_cli(chain, tmp_path):
    exp, p, std, d = chain
    ffb = p["b0"]["ff"]
    out = tmp_path / "avg.fits"
    assert main(["average-fiberflat", "-i", ffb, ffb, ffb, "-o", str(out)]) == 0
    np.testing.assert_allclose(read_fiberflat(out).fiberflat, read_fiberflat(ffb).fiberflat,
                               rtol=1e-6)
    assert main(["autocalib-fiberflat", "-i", ffb, "--night", "20250115", "--arm", "b",
                 "--outdir", str(tmp_path)]) == 0
    assert (tmp_path / "fiberflatnight-b0-20250115.fits").exists()


def test_templates_cli(tmp_path):
    from gpuspec.calibrate.templates import load_templates, read_templates

    out = tmp_path / "stdstar_templates.fits"
    assert main(["stdstar-templates", "-o", str(out)]) == 0
    lib = read_templates(out)
    ref = load_templates()
    assert lib.flux.shape == ref.flux.shape
    np.testing.assert_allclose(lib.teff, ref.teff)
    try:
        from desispec.io import read_stdstar_templates
    except ImportError:
        return
    C.quiet()
    wave, flux, tid, teff, logg, feh = read_stdstar_templates(str(out))
    assert flux.shape == ref.flux.shape and np.allclose(teff, ref.teff)
    np.testing.assert_allclose(wave, ref.wave)
