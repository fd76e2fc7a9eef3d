"""``gpuspec preproc`` finds its calibrations as desi_preproc does, or says why not (issue 13, bug 6).

Before: a ``--calib-dir`` without files, or no calibration option at all, gave
an uncalibrated preproc image with exit status 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from gpuspec.cli import main
from gpuspec.preproc.calibfinder import find_calibration, find_calibrations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIGHT, EXPID = 20250115, 100
KINDS = ("bias", "dark", "pixflat", "mask")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("sim") / "sim")
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "simulate", "--out", d,
                        "--cameras", "r0", "--nspec", "25", "--backend", "numpy"],
                       env=dict(os.environ, GPUSPEC_NO_GPU="1",
                                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def _raw(sim):
    return os.path.join(sim, "raw", str(NIGHT), f"{EXPID:08d}", f"desi-{EXPID:08d}.fits.fz")


def _deps(path):
    from gpuspec.io import read_image

    meta = read_image(path).meta
    return {meta[k]: meta["DEPVER" + k[6:]] for k in meta if k.startswith("DEPNAM")}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("DESI_SPECTRO_CALIB", raising=False)


@pytest.mark.slow
def test_empty_calib_dir_is_an_error_not_silently_uncalibrated(sim, tmp_path, capsys, no_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "p.fits")
    rc = main(["preproc", "-i", _raw(sim), "--camera", "r0", "-o", out, "--calib-dir",
               str(empty), "--no-gpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "no bias calibration for camera r0" in err and "--nobias" in err
    assert str(empty) in err and not os.path.exists(out)


def test_no_calibration_option_at_all_is_an_error(sim, tmp_path, capsys, no_env):
    out = str(tmp_path / "p.fits")
    rc = main(["preproc", "-i", _raw(sim), "--camera", "r0", "-o", out, "--no-gpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "DESI_SPECTRO_CALIB" in err and "--nobias" in err
    assert not os.path.exists(out)


def test_desi_spectro_calib_folder_is_used_and_recorded(sim, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DESI_SPECTRO_CALIB", os.path.join(sim, "calib"))
    out = str(tmp_path / "p.fits")
    with caplog.at_level("INFO"):
        assert main(["preproc", "-i", _raw(sim), "--camera", "r0", "-o", out, "--no-gpu",
                     "--nocosmic"]) == 0
    deps = _deps(out)
    for k in KINDS:
        assert deps[f"CCD_CALIB_{k.upper()}"] == f"{k}-r0.fits"
    assert "bias bias-r0.fits" in caplog.text


def test_skipping_needs_the_no_options_and_is_recorded(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("DESI_SPECTRO_CALIB", os.path.join(sim, "calib"))
    out = str(tmp_path / "p.fits")
    assert main(["preproc", "-i", _raw(sim), "--camera", "r0", "-o", out, "--no-gpu",
                 "--nocosmic", "--nobias", "--nopixflat", "--nomask"]) == 0
    deps = _deps(out)
    assert deps["CCD_CALIB_BIAS"] == deps["CCD_CALIB_PIXFLAT"] == deps["CCD_CALIB_MASK"] == "None"
    assert deps["CCD_CALIB_DARK"] == "dark-r0.fits"  # the one not skipped is applied


def test_skipped_dark_is_recorded_as_none(sim, tmp_path, monkeypatch):
    """--nodark writes CCD_CALIB_DARK = None, like the other skipped calibrations."""
    monkeypatch.setenv("DESI_SPECTRO_CALIB", os.path.join(sim, "calib"))
    out = str(tmp_path / "p.fits")
    assert main(["preproc", "-i", _raw(sim), "--camera", "r0", "-o", out, "--no-gpu",
                 "--nocosmic", "--nodark"]) == 0
    deps = _deps(out)
    assert deps["CCD_CALIB_DARK"] == "None"
    assert deps["CCD_CALIB_BIAS"] == "bias-r0.fits"  # the others are applied


def test_per_kind_folders_and_manifest_calibrations(sim, tmp_path, no_env):
    cal = tmp_path / "calib"
    for k in KINDS:
        (cal / k).mkdir(parents=True)
        shutil.copy(os.path.join(sim, "calib", f"{k}-r0.fits"), cal / k / f"{k}-r0.fits")
    assert find_calibrations("r0", str(cal)) == {k: str(cal / k / f"{k}-r0.fits") for k in KINDS}
    # a manifest: global bias, a per-night dark; the rest from the folder
    night_dark = tmp_path / "darknight-r0.fits"
    shutil.copy(os.path.join(sim, "calib", "dark-r0.fits"), night_dark)
    m = tmp_path / "m.yaml"
    m.write_text(f"""production: prod
inputs:
  cameras: r0
  exposures: [{{night: {NIGHT}, expid: {EXPID}, raw: {_raw(sim)}}}]
  calib:
    bias: {sim}/calib/bias-{{camera}}.fits
  nights:
    {NIGHT}:
      calib:
        dark: {tmp_path}/darknight-{{camera}}.fits
steps: [preproc]
""")
    out = str(tmp_path / "p.fits")
    assert main(["preproc", "-i", _raw(sim), "--camera", "r0", "-o", out, "--no-gpu",
                 "--nocosmic", "--manifest", str(m), "--calib-dir", str(cal)]) == 0
    deps = _deps(out)
    assert deps["CCD_CALIB_DARK"] == "darknight-r0.fits"
    assert deps["CCD_CALIB_BIAS"] == "bias-r0.fits" and deps["CCD_CALIB_MASK"] == "mask-r0.fits"


def _yaml_folder(root, sim):
    """A desispec-style calibration folder: spec/sp0/r0.yaml with two versions by date."""
    (root / "spec" / "sp0").mkdir(parents=True)
    (root / "ccd").mkdir()
    for k in KINDS:
        for v in ("old", "new"):
            shutil.copy(os.path.join(sim, "calib", f"{k}-r0.fits"), root / "ccd" / f"{k}-r0-{v}.fits")
    text = "r0:\n"
    for v, begin, end in (("V1", 20200101, 20241231), ("V2", 20250101, None)):
        text += f"  {v}:\n    DATE-OBS-BEGIN: {begin}\n"
        if end:
            text += f"    DATE-OBS-END: {end}\n"
        text += "    DETECTOR: SIM\n"
        tag = "old" if v == "V1" else "new"
        for k in KINDS:
            text += f"    {k.upper()}: ccd/{k}-r0-{tag}.fits\n"
    (root / "spec" / "sp0" / "r0.yaml").write_text(text)


def test_desispec_yaml_layout_by_night(sim, tmp_path):
    root = tmp_path / "DESI_SPECTRO_CALIB"
    _yaml_folder(root, sim)
    hdr = {"DETECTOR": "SIM"}
    assert find_calibration("bias", "r0", str(root), 20240601, hdr)[0] == \
        str(root / "ccd" / "bias-r0-old.fits")
    assert find_calibration("mask", "r0", str(root), 20250115, hdr)[0] == \
        str(root / "ccd" / "mask-r0-new.fits")


@pytest.mark.interop
def test_yaml_selection_agrees_with_desispec_calibfinder(sim, tmp_path, monkeypatch):
    cf = pytest.importorskip("desispec.calibfinder")
    root = tmp_path / "DESI_SPECTRO_CALIB"
    _yaml_folder(root, sim)
    monkeypatch.setenv("DESI_SPECTRO_CALIB", str(root))
    for night in (20240601, 20250115):
        hdr = {"CAMERA": "r0", "DETECTOR": "SIM", "NIGHT": night,
               "DATE-OBS": f"{str(night)[:4]}-{str(night)[4:6]}-{str(night)[6:]}T12:00:00"}
        want = cf.CalibFinder([hdr])
        for k in KINDS:
            assert find_calibration(k, "r0", str(root), night, hdr)[0] == \
                want.findfile(k.upper())
