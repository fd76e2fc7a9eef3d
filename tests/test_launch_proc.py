"""``gpuspec proc -n NIGHT [-e EXPID] --cameras ...``: a production without writing YAML.

The simulated night has a flat-lamp exposure (99) and two science exposures (100, 101).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from gpuspec.cli import main
from gpuspec.launch.manifest import STEPS, load_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIGHT = 20250115


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("sim") / "sim")
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "simulate", "--out", d,
                        "--cameras", "b0,r0", "--nspec", "25", "--nexp", "2", "--flats", "1",
                        "--nsky", "8", "--nstd", "5", "--wave-range",
                        "b:5000:5200", "--wave-range", "r:6400:6600", "--backend", "numpy"],
                       env=dict(os.environ, GPUSPEC_NO_GPU="1",
                                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def _args(sim, prod, *extra):
    return ["proc", "-n", str(NIGHT), "--rawdir", os.path.join(sim, "raw"), "--calib-dir",
            os.path.join(sim, "calib"), "--prod", prod, *extra]


@pytest.mark.slow
def test_proc_writes_a_valid_manifest_for_the_night(sim, tmp_path, capsys):
    prod = str(tmp_path / "prod")
    assert main(_args(sim, prod, "--psf", os.path.join(sim, "psf", "psf-{camera}.fits"),
                      "--no-run")) == 0
    path = capsys.readouterr().out.splitlines()[0]
    assert path == os.path.join(prod, "manifests", f"proc-{NIGHT}-00000099-00000101.yaml")
    m = load_manifest(path)
    doc = yaml.safe_load(open(path))
    # all of the night, the flat as the science exposures
    assert [e["expid"] for e in doc["inputs"]["exposures"]] == [99, 100, 101]
    assert list(doc["steps"]) == list(STEPS)  # a flat: the calibrated chain
    e = doc["inputs"]["exposures"][0]
    assert e["cameras"] == ["b0", "r0"]  # the cameras of the raw file
    assert e["calib"]["dark"]["r0"] == os.path.join(sim, "calib", "dark-r0.fits")
    assert doc["steps"]["extract"]["bundles"] == [0]  # 25 fibers: one bundle
    assert m.camera_file("psf", "b0", m.exposures()[1]) == os.path.join(sim, "psf", "psf-b0.fits")


def test_proc_missing_calibration_is_an_error_unless_skipped(sim, tmp_path, capsys):
    cal = tmp_path / "calib"
    shutil.copytree(os.path.join(sim, "calib"), cal)
    os.remove(cal / "dark-b0.fits")
    prod = str(tmp_path / "prod")
    base = ["proc", "-n", str(NIGHT), "-e", "100", "--rawdir", os.path.join(sim, "raw"),
            "--calib-dir", str(cal), "--prod", prod, "--psf",
            os.path.join(sim, "psf", "psf-{camera}.fits"), "--no-run"]
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "no dark calibration for camera b0" in err and "--nodark" in err
    assert main(base + ["--nodark"]) == 0
    doc = yaml.safe_load(open(capsys.readouterr().out.splitlines()[0]))
    assert "dark" not in doc["inputs"]["exposures"][0]["calib"]


@pytest.mark.slow
def test_proc_finds_the_nightly_psf_and_runs(sim, tmp_path, capsys):
    prod = tmp_path / "prod"
    night = prod / "calibnight" / str(NIGHT)
    night.mkdir(parents=True)
    for c in ("b0", "r0"):
        shutil.copy(os.path.join(sim, "psf", f"psf-{c}.fits"), night / f"psfnight-{c}-{NIGHT}.fits")
    assert main(_args(sim, str(prod), "-e", "101", "--cameras", "r0", "--steps",
                      "preproc,extract,frame", "--backend", "numpy",
                      "--wavelength", "r:6500:6540:0.8")) == 0
    frame = prod / "exposures" / str(NIGHT) / "00000101" / "frame-r0-00000101.fits"
    assert frame.exists()
    import fitsio

    assert fitsio.read_header(str(frame), "FLUX")["PSFFILE"] == f"psfnight-r0-{NIGHT}.fits"
    pre = prod / "preproc" / str(NIGHT) / "00000101" / "preproc-r0-00000101.fits"
    from gpuspec.io import read_image

    h = read_image(str(pre)).meta
    deps = {h[k]: h["DEPVER" + k[6:]] for k in h if k.startswith("DEPNAM")}
    assert deps["CCD_CALIB_BIAS"] == "bias-r0.fits"


def test_proc_without_a_fiber_flat_is_uncalibrated_and_says_so(sim, tmp_path, capsys):
    prod = str(tmp_path / "prod")
    psf = os.path.join(sim, "psf", "psf-{camera}.fits")
    assert main(_args(sim, prod, "-e", "100,101", "--psf", psf, "--no-run")) == 0
    out = capsys.readouterr().out
    doc = yaml.safe_load(open(out.splitlines()[0]))
    assert list(doc["steps"]) == ["preproc", "extract", "frame", "group", "coadd"]
    assert "gpuspec proc: UNCALIBRATED production" in out
    # a nightly fiberflat given: calibrated
    ff = os.path.join(sim, "ff", "fiberflatnight-{camera}-{night}.fits")
    assert main(_args(sim, prod, "-e", "100", "--psf", psf, "--fiberflat", ff, "--no-run")) == 0
    out = capsys.readouterr().out
    doc = yaml.safe_load(open(out.splitlines()[0]))
    assert list(doc["steps"]) == list(STEPS) and doc["inputs"]["fiberflat"] == ff
    assert "gpuspec proc: calibrated production" in out
    # the production's calibnight fiberflatnight of every camera: calibrated
    night = os.path.join(prod, "calibnight", str(NIGHT))
    os.makedirs(night)
    for c in ("b0", "r0"):
        open(os.path.join(night, f"fiberflatnight-{c}-{NIGHT}.fits"), "w").close()
    assert main(_args(sim, prod, "-e", "101", "--psf", psf, "--no-run")) == 0
    doc = yaml.safe_load(open(capsys.readouterr().out.splitlines()[0]))
    assert list(doc["steps"]) == list(STEPS)


@pytest.mark.slow
def test_proc_reduces_the_flat_and_the_science_exposures_of_a_night(sim, tmp_path, capsys):
    """Flat and science exposures the same way: all of the night, calibrated by default."""
    import fitsio

    from gpuspec.io.cframe import CFRAME_UNIT

    prod = tmp_path / "prod"
    assert main(_args(sim, str(prod), "--psf", os.path.join(sim, "psf", "psf-{camera}.fits"),
                      "--backend", "numpy", "--wavelength", "b:5000:5200:0.8",
                      "--wavelength", "r:6400:6600:0.8")) == 0
    out = capsys.readouterr().out
    assert "gpuspec proc: flat exposures (OBSTYPE FLAT, never grouped): 99" in out
    ex = prod / "exposures" / str(NIGHT)
    assert (prod / "calibnight" / str(NIGHT) / f"fiberflatnight-r0-{NIGHT}.fits").exists()
    for e in (100, 101):
        for c in ("b0", "r0"):
            cf = ex / f"{e:08d}" / f"cframe-{c}-{e:08d}.fits"
            assert fitsio.read_header(str(cf), "FLUX")["BUNIT"] == CFRAME_UNIT
    assert not (ex / "00000099" / "cframe-b0-00000099.fits").exists()
    coadds = list((prod / "healpix").rglob("coadd-*.fits"))
    assert coadds
    for c in coadds:
        assert fitsio.read_header(str(c), "B_FLUX")["BUNIT"] == CFRAME_UNIT
