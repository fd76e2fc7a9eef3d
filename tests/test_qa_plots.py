"""QA pictures of every product kind, drawn from the simulator's products (issue 14).

One module-scoped simulated night (3 cameras, 25 fibers, 2 exposures, 104-Å
ranges aligned with the simulator's truth grid) goes through the real preproc,
extraction, grouping and coadd functions; each picture is drawn from it and
checked for its panels (data axes, colour bars excluded), for not being blank,
and, where the simulator knows the answer, for showing it (truth χ, throughput).
The calibration products (fiberflat, sky, fluxcalib) are written with
desispec's own writers (tests marked ``interop``), built from the simulator's
truth, so that the pictures work on desispec's layouts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from gpuspec.cli import main as gpuspec_main  # noqa: E402
from gpuspec.qa.mpl import data_axes, save_figure  # noqa: E402

NIGHT = 20250115
RANGES = {"b": (3648.0, 3752.0), "r": (5800.0, 5904.0), "z": (7600.0, 7704.0)}


def _png_ok(path, min_ink=0.03):
    """The PNG exists, is not blank (enough non-white pixels) and not uniform."""
    import matplotlib.image as mpimg

    assert os.path.getsize(path) > 5000, path
    im = mpimg.imread(path)[..., :3]
    ink = np.mean(np.any(im < 0.9, axis=-1))
    assert ink > min_ink, f"{path}: only {ink:.3f} of the pixels are not white"
    assert im.std() > 0.05, f"{path}: nearly uniform image"
    return im


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """Simulate, preproc, extract (model ivar), group and coadd a tiny night."""
    from gpuspec.coadd import coadd_file, group_frames
    from gpuspec.extract import extract_file
    from gpuspec.preproc import preproc_file
    from gpuspec.sim import simulate_night

    d = tmp_path_factory.mktemp("qa")
    sim = str(d / "sim")
    info = simulate_night(sim, cameras="b0,r0,z0", nspec=25, nexp=2, seed=5,
                          wave_ranges=RANGES)
    out = {"sim": sim, "dir": str(d), "preproc": {}, "frame": {}}
    for e in info["expids"]:
        raw = f"{sim}/raw/{NIGHT}/{e:08d}/desi-{e:08d}.fits.fz"
        fm = f"{sim}/raw/{NIGHT}/{e:08d}/fibermap-{e:08d}.fits"
        for cam in info["cameras"]:
            pre = str(d / "prod" / f"preproc-{cam}-{e:08d}.fits")
            calib = {k: f"{sim}/calib/{k}-{cam}.fits" for k in ("bias", "dark", "pixflat",
                                                                  "mask")}
            preproc_file(raw, cam, pre, fibermap=fm, backend="numpy", **calib)
            fr = str(d / "prod" / f"frame-{cam}-{e:08d}.fits")
            extract_file(pre, f"{sim}/psf/psf-{cam}.fits", fr, tuple(info["wave_ranges"][cam]),
                         backend="numpy", model_ivar=True)
            out["preproc"][(cam, e)] = pre
            out["frame"][(cam, e)] = fr
    spectra = group_frames(sorted(out["frame"].values()), str(d / "prod" / "healpix"))
    out["spectra"] = spectra[0]
    out["coadd"] = spectra[0].replace("spectra-", "coadd-")
    coadd_file(out["spectra"], out["coadd"], backend="numpy")
    return out


# --------------------------------------------------------------------------- preproc

@pytest.mark.slow
def test_preproc_picture(products, tmp_path):
    from gpuspec.qa.preproc import plot_preproc

    fig = plot_preproc(products["preproc"][("r0", 100)])
    axes = data_axes(fig)
    assert len(axes) == 4  # image, mask overlay, overscan per amp, read noise per amp
    titles = " | ".join(a.get_title() for a in axes)
    assert "ccdmask" in titles and "overscan" in titles and "read noise" in titles
    # the mask legend counts the cosmics that preproc flagged
    legend = axes[1].get_legend()
    assert legend is not None and any("COSMIC" in t.get_text() for t in legend.get_texts())
    # four amps with their measured read noise
    assert len(axes[3].patches) == 4
    _png_ok(save_figure(fig, str(tmp_path / "pre.png")))


# --------------------------------------------------------------------------- frames

def test_frame_picture_with_truth(products, tmp_path):
    from gpuspec.qa.frame import plot_frame
    from gpuspec.qa.truth import TruthCache

    fig = plot_frame(products["frame"][("b0", 100)], truth=TruthCache(products["sim"]))
    axes = data_axes(fig)
    assert len(axes) == 6  # flux image, 3 fibers, chi2pix per fiber, masked fraction
    labels = [ln.get_label() for a in axes for ln in a.get_lines()]
    assert labels.count("truth (R·PHOT/DW)") == 3
    # one of the chosen fibers is a sky fiber
    assert any("sky fiber" in a.get_title(loc="left") for a in axes)
    _png_ok(save_figure(fig, str(tmp_path / "frame.png")))


def test_frame_picture_chosen_fibers_and_bad_fiber(products):
    from gpuspec.errors import InputError
    from gpuspec.qa.frame import plot_frame

    fig = plot_frame(products["frame"][("r0", 101)], fibers=[3, 7])
    assert len(data_axes(fig)) == 5
    assert [a.get_title(loc="left").split()[1] for a in data_axes(fig)[1:3]] == ["3", "7"]
    with pytest.raises(InputError, match="fiber"):
        plot_frame(products["frame"][("r0", 101)], fibers=[400])


@pytest.mark.interop
def test_cframe_detected_and_drawn(products, tmp_path):
    """A cframe written by desispec (flux in 1e-17 erg/s/cm²/Å, no CHI2PIX)."""
    dio = pytest.importorskip("desispec.io")
    from astropy.table import Table
    from desispec.frame import Frame as DFrame

    from gpuspec.io import read_frame
    from gpuspec.qa.draw import figure_for
    from gpuspec.qa.kinds import detect_product

    fr = read_frame(products["frame"][("z0", 100)])
    meta = {k: fr.meta[k] for k in ("CAMERA", "EXPID", "NIGHT", "EXPTIME", "FLAVOR")}
    df = DFrame(fr.wave, fr.flux / 50.0, fr.ivar * 2500.0, fr.mask.astype(np.uint32),
                fr.resolution_data, meta=meta, fibermap=Table(fr.fibermap),
                spectrograph=0)
    path = str(tmp_path / "cframe-z0-00000100.fits")
    dio.write_frame(path, df, units="10**-17 erg/(s cm2 Angstrom)")
    info = detect_product(path)
    assert info["kind"] == "cframe"
    fig = figure_for(info)
    axes = data_axes(fig)
    assert len(axes) == 6
    assert "erg" in axes[1].get_ylabel()
    assert any(t.get_text() == "no CHI2PIX in this file" for t in axes[4].texts)
    _png_ok(save_figure(fig, str(tmp_path / "cframe.png")))


# --------------------------------------------------------------------------- spectra, coadds

def _chi2_of(fig):
    """The χ values drawn in the last panel."""
    ys = [ln.get_ydata() for ln in data_axes(fig)[-1].get_lines()
          if np.size(ln.get_ydata()) > 2]
    c = np.concatenate([np.asarray(y, float) for y in ys])
    return c[np.isfinite(c)]


@pytest.mark.parametrize("kind", ["spectra", "coadd"])
def test_spectra_and_coadd_pictures_with_truth(products, tmp_path, kind):
    from gpuspec.qa.spectra import plot_spectra
    from gpuspec.qa.truth import TruthCache, find_simdir

    path = products[kind]
    # the simulation folder is found above the product (prod/healpix/... -> qa/sim)
    assert find_simdir(path) == os.path.abspath(products["sim"])
    fig = plot_spectra(path, truth=TruthCache(products["sim"]))
    axes = data_axes(fig)
    assert len(axes) == 3  # flux with truth, ivar, chi
    assert axes[1].get_yscale() == "log"
    chi = _chi2_of(fig)
    # the truth is right: chi^2 per bin near 1 (model-ivar extraction is unbiased)
    assert chi.size > 200 and 0.6 < np.mean(chi ** 2) < 1.6, np.mean(chi ** 2)
    assert "approximate" not in axes[2].get_title(loc="left")
    _png_ok(save_figure(fig, str(tmp_path / f"{kind}.png")))


def test_coadd_without_its_spectra_file_uses_the_approximate_truth(products, tmp_path):
    from gpuspec.qa.spectra import plot_spectra
    from gpuspec.qa.truth import TruthCache

    alone = tmp_path / os.path.basename(products["coadd"])
    shutil.copy(products["coadd"], alone)
    fig = plot_spectra(str(alone), truth=TruthCache(products["sim"]))
    assert len(data_axes(fig)) == 3
    assert "approximate" in data_axes(fig)[2].get_title(loc="left")


def test_spectra_picture_without_truth_and_bad_target(products):
    from gpuspec.errors import InputError
    from gpuspec.qa.spectra import plot_spectra

    fig = plot_spectra(products["coadd"])
    assert len(data_axes(fig)) == 2  # flux, ivar
    with pytest.raises(InputError, match="TARGETID 12345"):
        plot_spectra(products["coadd"], targetid=12345)


# --------------------------------------------------------------------------- calibration products

def _desispec_calibs(products, d):
    """fiberflat, sky and fluxcalib of r0/100 in desispec's layouts, from the truth."""
    dio = pytest.importorskip("desispec.io")
    from desispec.fiberflat import FiberFlat
    from desispec.fluxcalibration import FluxCalib
    from desispec.sky import SkyModel

    from gpuspec import resolution
    from gpuspec.io import read_frame
    from gpuspec.sim import read_truth

    frame_path = products["frame"][("r0", 100)]
    fr = read_frame(frame_path)
    tr = read_truth(os.path.join(products["sim"], "truth", "truth-00000100.fits"), "r0")
    wave, n = fr.wave, fr.nspec
    i0 = int(round((wave[0] - tr["wave"][0]) / tr["dw"]))
    sl = slice(i0, i0 + wave.size)
    thru = np.asarray(tr["targets"]["FIBER_THRU"][:n], float)
    hdr = {"CAMERA": "r0", "EXPID": 100, "NIGHT": NIGHT, "EXPTIME": 900.0}
    rng = np.random.default_rng(3)
    flat = np.outer(thru / thru.mean(), np.ones(wave.size)) * (
        1 + 0.002 * rng.standard_normal((n, wave.size)))
    shape = flat.shape
    ff = FiberFlat(wave, flat, np.full(shape, 1e5), np.zeros(shape, np.uint32),
                   meanspec=np.full(wave.size, 1000.0), header=dict(hdr))
    out = {"fiberflat": str(d / "fiberflat-r0-00000100.fits"),
           "sky": str(d / "sky-r0-00000100.fits"),
           "fluxcalib": str(d / "fluxcalib-r0-00000100.fits"), "frame": frame_path,
           "thru": thru}
    dio.write_fiberflat(out["fiberflat"], ff)
    # the true sky through each fiber's resolution: what a perfect sky model would be
    sky = np.array([resolution.apply(fr.resolution_data[i].astype(float),
                                     tr["skyphot"][i, sl] / tr["dw"]) for i in range(n)])
    dio.write_sky(out["sky"], SkyModel(wave, sky, np.full(shape, 1e6),
                                       np.zeros(shape, np.uint32), header=dict(hdr)))
    cal = np.outer(thru, tr["calib"][sl] / tr["dw"] * tr["meta"]["TRANSP"])
    dio.write_flux_calibration(out["fluxcalib"], FluxCalib(wave, cal, np.full(shape, 1e3),
                                                          np.zeros(shape, np.uint32)),
                               header=dict(hdr))
    return out


@pytest.fixture(scope="module")
def calibs(products, tmp_path_factory):
    return _desispec_calibs(products, tmp_path_factory.mktemp("calibs"))


@pytest.mark.interop
def test_kinds_of_desispec_calibration_files(calibs):
    from gpuspec.qa.kinds import detect_product

    for kind in ("fiberflat", "sky", "fluxcalib"):
        assert detect_product(calibs[kind])["kind"] == kind


@pytest.mark.interop
def test_fiberflat_picture(calibs, tmp_path):
    from gpuspec.qa.calib import plot_fiberflat

    fig = plot_fiberflat(calibs["fiberflat"])
    axes = data_axes(fig)
    assert len(axes) == 3  # flat image, flat per fiber, mean spectrum
    # the per-fiber medians are the simulated relative fiber throughputs
    pts = axes[1].get_lines()[0].get_ydata()
    thru = calibs["thru"]
    np.testing.assert_allclose(pts, thru / thru.mean(), rtol=2e-3)
    _png_ok(save_figure(fig, str(tmp_path / "ff.png")))


@pytest.mark.interop
@pytest.mark.slow
def test_sky_picture_residuals_of_sky_fibers(calibs, tmp_path):
    from gpuspec.io import read_fibermap
    from gpuspec.qa.calib import plot_sky

    fig = plot_sky(calibs["sky"], frame=calibs["frame"])
    axes = data_axes(fig)
    assert len(axes) == 5  # sky, residual, chi image, chi histogram, chi rms per sky fiber
    nsky = int(np.sum(np.char.strip(read_fibermap(calibs["frame"])["OBJTYPE"].astype(str))
                      == "SKY"))
    assert len(axes[4].patches) == nsky >= 2  # one bar per sky fiber
    # with the true sky, the residuals of the sky fibers are noise: chi rms near 1
    rms = np.array([p.get_height() for p in axes[4].patches])
    assert np.all((rms > 0.7) & (rms < 1.4)), rms
    _png_ok(save_figure(fig, str(tmp_path / "sky.png")))
    # without the frame: the model alone, the other panels say what to give
    fig0 = plot_sky(calibs["sky"])
    assert len(data_axes(fig0)) == 5
    assert any("give the frame" in t.get_text() for t in data_axes(fig0)[2].texts)


@pytest.mark.interop
def test_fluxcalib_picture_throughput(calibs, products, tmp_path):
    from gpuspec.qa.calib import plot_fluxcalib
    from gpuspec.qa.truth import TruthCache
    from gpuspec.sim.spectra import throughput

    fig = plot_fluxcalib(calibs["fluxcalib"], truth=TruthCache(products["sim"]))
    axes = data_axes(fig)
    assert len(axes) == 3  # calibration, throughput, relative per fiber
    line = next(ln for ln in axes[1].get_lines() if ln.get_label() == "median throughput")
    w, t = line.get_xdata(), line.get_ydata()
    # independent: the simulator's system throughput x median fiber throughput x transparency
    from gpuspec.sim import read_truth

    transp = read_truth(os.path.join(products["sim"], "truth", "truth-00000100.fits"))[
        "meta"]["TRANSP"]
    expect = throughput("r", w) * np.median(calibs["thru"]) * transp
    np.testing.assert_allclose(t, expect, rtol=2e-3)
    _png_ok(save_figure(fig, str(tmp_path / "fc.png")))


# --------------------------------------------------------------------------- gpuspec qa

@pytest.mark.slow
def test_cli_draws_every_kind(products, calibs, tmp_path, capsys):
    files = [products["preproc"][("b0", 100)], products["frame"][("b0", 100)],
             products["spectra"], products["coadd"], calibs["fiberflat"], calibs["sky"],
             calibs["fluxcalib"]]
    out = tmp_path / "qa" / "night.png"
    assert gpuspec_main(["qa", *files, "-o", str(out)]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == len(files)
    for p in written:
        assert os.path.basename(p).startswith("night-")
        _png_ok(p)


@pytest.mark.slow
def test_cli_one_file_and_folder_output(products, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert gpuspec_main(["qa", products["frame"][("r0", 100)], "-o", str(out), "--fibers",
                         "1,2", "--no-truth"]) == 0
    _png_ok(str(out))
    d = tmp_path / "dir"
    d.mkdir()
    assert gpuspec_main(["qa", products["coadd"], "-o", str(d) + os.sep]) == 0
    assert os.path.exists(d / (os.path.basename(products["coadd"])[:-5] + ".png"))


@pytest.mark.slow
def test_cli_bad_files_one_line_error_no_traceback(products, tmp_path):
    bad = tmp_path / "garbage.fits"
    bad.write_bytes(b"this is not FITS" * 300)
    missing = tmp_path / "nosuch.fits"
    psf = os.path.join(products["sim"], "psf", "psf-r0.fits")
    out = tmp_path / "x.png"
    for path, what in ((bad, "not a readable FITS file"), (missing, "no such file"),
                       (psf, "no QA picture for a psf file")):
        r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "qa", str(path), "-o",
                            str(out)], capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith("gpuspec qa: error: file ") and str(path) in lines[0]
        assert what in lines[0], lines[0]
        assert not out.exists()
        assert not [f for f in os.listdir(tmp_path) if f.startswith(".x.png")]


@pytest.mark.slow
def test_cli_good_and_bad_files_together(products, tmp_path, capsys):
    bad = tmp_path / "trunc.fits"
    with open(products["frame"][("r0", 100)], "rb") as f:
        bad.write_bytes(f.read()[:20000])
    rc = gpuspec_main(["qa", products["frame"][("r0", 100)], str(bad), "-o",
                       str(tmp_path / "q.png")])
    cap = capsys.readouterr()
    assert rc == 1
    assert "trunc.fits" in cap.err and "truncated" in cap.err
    assert os.path.exists(tmp_path / "q-frame-r0-00000100.png")
    assert not os.path.exists(tmp_path / "q-trunc.png")


def test_missing_matplotlib_gives_the_install_hint(monkeypatch, products, tmp_path):
    import gpuspec.qa.mpl as mpl
    from gpuspec.qa.mpl import MissingDependencyError

    monkeypatch.setattr(mpl, "_PLT", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"install gpuspec\[qa\]"):
        mpl.pyplot()
    rc = gpuspec_main(["qa", products["frame"][("r0", 100)], "-o", str(tmp_path / "n.png")])
    assert rc == 1 and not os.path.exists(tmp_path / "n.png")


def test_core_does_not_import_matplotlib():
    code = ("import sys, gpuspec.cli, gpuspec.qa, gpuspec.qa.cli; gpuspec.cli.build_parser(); "
            "import gpuspec.io, gpuspec.preproc, gpuspec.extract; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
