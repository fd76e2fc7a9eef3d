"""make_demo_manifest on a simulator-like folder (tiny stand-in files, toy steps)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from gpuspec.launch import cli as run_cli
from gpuspec.launch.demo import find_cameras, find_exposures, make_demo_manifest
from gpuspec.launch.graph import build_graph
from gpuspec.launch.manifest import load_manifest
from gpuspec.launch.toy import make_toy_inputs


@pytest.fixture
def simdir(tmp_path):
    """The simulator layout (docs/design.md) with toy contents: 1 exposure, cameras b0 r0 z0."""
    d = tmp_path / "sim"
    make_toy_inputs(str(d), nights_expids=((20250115, 100),), petals=(0,))
    for kind in ("dark", "pixflat", "mask"):
        for c in ("b0", "r0", "z0"):
            (d / "calib" / f"{kind}-{c}.fits").write_text(kind)
    info = {"nspec": 50, "wave_step": 0.8, "camera_info": {
        "b0": {"wave_range": [3600.0, 5800.0]}, "r0": {"wave_range": [5760.0, 7620.0]},
        "z0": {"wave_range": [7520.0, 9824.0]}}}
    (d / "simulation.json").write_text(json.dumps(info))
    return str(d)


def test_find_layout(simdir):
    assert find_exposures(simdir) == [(20250115, 100)]
    assert find_cameras(simdir) == ["b0", "r0", "z0"]


def test_demo_manifest_content(simdir, tmp_path):
    path = make_demo_manifest(simdir, str(tmp_path / "prod"), steps=["preproc", "extract",
                                                                     "frame", "group", "coadd"])
    assert path == str(tmp_path / "prod" / "manifest.yaml")
    doc = yaml.safe_load(open(path))
    assert doc["inputs"]["cameras"] == "a0"
    assert doc["inputs"]["exposures"] == [{"night": 20250115, "expid": 100}]
    assert set(doc["inputs"]["calib"]) == {"bias", "dark", "pixflat", "mask"}
    ex = doc["steps"]["extract"]
    assert ex["bundles"] == [0, 1]  # bundle 2 holds no simulated fiber (nspec=50)
    assert ex["wavelength"]["r"] == [5760.0, 7620.0, 0.8]
    m = load_manifest(path)
    tasks = build_graph(m)
    steps = [t.step for t in tasks]
    assert steps.count("preproc") == 3 and steps.count("extract") == 6
    assert steps.count("frame") == 3 and steps.count("group") == steps.count("coadd") >= 1
    assert m.production == str(tmp_path / "prod")


@pytest.mark.slow
def test_demo_manifest_runs_with_toy_steps(simdir, tmp_path, capsys):
    path = make_demo_manifest(simdir, str(tmp_path / "prod"), registry="toy", backend="numpy",
                              steps=["preproc", "extract", "frame", "group", "coadd"],
                              bundles=[0], progress_interval=0)
    assert run_cli.main([path]) == 0
    out = capsys.readouterr().out
    assert "outputs in" in out and "gpuspec status" in out
    assert os.path.exists(tmp_path / "prod" / "exposures" / "20250115" / "00000100" /
                          "frame-z0-00000100.json")


def test_demo_default_steps_are_available(simdir, tmp_path):
    from gpuspec.launch.steps import DESI

    path = make_demo_manifest(simdir, str(tmp_path / "prod"))
    steps = list(yaml.safe_load(open(path))["steps"])
    assert steps and not DESI.unavailable(steps)


def test_demo_manifest_is_calibrated_when_the_night_has_a_flat(simdir, tmp_path):
    """A raw exposure whose header says OBSTYPE=FLAT switches the calibration steps on."""
    import fitsio
    import numpy as np

    from gpuspec.launch.manifest import CALIB_STEPS, STEPS

    path = make_demo_manifest(simdir, str(tmp_path / "p0"))
    assert not set(yaml.safe_load(open(path))["steps"]) & set(CALIB_STEPS)  # no flat
    d = os.path.join(simdir, "raw", "20250115", "00000099")
    os.makedirs(d)
    fitsio.write(os.path.join(d, "desi-00000099.fits.fz"), np.zeros((2, 2), np.int16),
                 header=[{"name": "EXPTIME", "value": 120.0}, {"name": "OBSTYPE",
                                                               "value": "FLAT"}])
    import shutil

    shutil.copy(os.path.join(simdir, "raw", "20250115", "00000100", "fibermap-00000100.fits"),
                os.path.join(d, "fibermap-00000099.fits"))
    path = make_demo_manifest(simdir, str(tmp_path / "p1"), flat_extract_options={},
                              step_options={"extract": {"model_ivar": True}})
    doc = yaml.safe_load(open(path))
    assert list(doc["steps"]) == list(STEPS)
    assert doc["steps"]["extract"]["flat_options"] == {}
    assert [e["expid"] for e in doc["inputs"]["exposures"]] == [99, 100]
    path = make_demo_manifest(simdir, str(tmp_path / "p2"), calibrate=False)
    assert not set(yaml.safe_load(open(path))["steps"]) & set(CALIB_STEPS)


def test_unknown_step_option_names_key_and_line(simdir, tmp_path, capsys):
    from gpuspec.launch.steps import DESI

    path = make_demo_manifest(simdir, str(tmp_path / "prod"),
                              steps=["preproc", "extract", "frame", "group", "coadd"])
    text = open(path).read().replace("  coadd: {}", "  coadd:\n    options: {spectroperff: true}")
    with open(path, "w") as f:
        f.write(text)
    if DESI.unavailable(["coadd"]):
        pytest.skip("gpuspec.coadd.coadd_file not available")
    assert run_cli.main([path, "--check"]) == 2
    err = capsys.readouterr().err
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "spectroperff" in ln)
    assert f"line {line}: steps.coadd.options.spectroperff: unknown option" in err


def test_demo_command_line(simdir, tmp_path, capsys):
    from gpuspec.launch.demo import main

    assert main([simdir, str(tmp_path / "p"), "--bundles", "1", "--steps", "preproc,extract"]) == 0
    path = capsys.readouterr().out.splitlines()[0]
    doc = yaml.safe_load(open(path))
    assert list(doc["steps"]) == ["preproc", "extract"]
    assert doc["steps"]["extract"]["bundles"] == [1]


def test_run_manifest_python_api(simdir, tmp_path, capsys):
    from gpuspec.launch.runner import run_manifest

    path = make_demo_manifest(simdir, str(tmp_path / "prod"), registry="toy", backend="numpy",
                              steps=["preproc", "extract"], bundles=[0], progress_interval=0)
    assert run_manifest(path, dry_run=True) == 0
    assert run_manifest(path, quiet=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(ln.startswith("extract-") for ln in lines) == 3  # dry-run lines; -q: no others
    assert not any(ln.startswith("gpuspec-run [") for ln in lines)
    assert run_manifest(str(tmp_path / "nothere.yaml")) == 2


@pytest.mark.slow
def test_the_readme_demo_coadds_calibrated_spectra_that_match_the_truth(tmp_path):
    """``gpuspec demo``: flat + 2 science exposures -> ... -> cframes -> coadds in erg units,
    chi2/bin against the coadd of R . true f_lambda (tests/test_calib_chain.py's method)."""
    import glob
    import subprocess
    import sys

    from gpuspec.io import read_spectra
    from gpuspec.io.cframe import CFRAME_UNIT
    from gpuspec.launch.steps import DESI
    from gpuspec.sim import read_truth
    from test_calib_chain import coadd_chi_vs_truth
    from test_launch_real import _env

    if DESI.unavailable(list(DESI.steps)):
        pytest.skip(f"steps not available: {DESI.unavailable(list(DESI.steps))}")
    out = str(tmp_path / "demo")
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "demo", "--out", out, "--no-gpu"],
                       env=_env(), capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = [ln.split("report: ")[1] for ln in r.stdout.splitlines() if "] report: " in ln]
    assert report and os.path.exists(report[0])
    sim, prod = os.path.join(out, "sim"), os.path.join(out, "prod")
    truth = {}

    def tr(expid, cam):
        if (expid, cam) not in truth:
            truth[(expid, cam)] = read_truth(os.path.join(sim, "truth", f"truth-{expid:08d}.fits"),
                                             cam)
        return truth[(expid, cam)]

    coadds = sorted(glob.glob(os.path.join(prod, "healpix", "**", "coadd-*.fits"), recursive=True))
    assert coadds
    pairs = []
    for cofile in coadds:
        sp = read_spectra(cofile.replace("coadd-", "spectra-"))
        co = read_spectra(cofile)
        assert sp.flux_unit == CFRAME_UNIT and co.flux_unit == CFRAME_UNIT
        assert set(sp.fibermap["EXPID"].tolist()) == {100, 101}  # the flat (99) is not grouped
        pairs.append((sp, co))
    report = coadd_chi_vs_truth(pairs, tr)
    print("demo coadds vs truth, science targets (chi2/bin, mean chi, n):", report)
    for b, (chi2, mean, n) in report.items():
        assert n > 20000, (b, report)
        assert 0.95 < chi2 < 1.10, (b, report)
        assert abs(mean) < 0.05, (b, report)
