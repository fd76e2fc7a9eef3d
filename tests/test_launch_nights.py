"""Several nights in one manifest: {night}/{expid}/{camera} paths, per-night and per-exposure inputs.

Issue 13: "a two-night manifest with a PSF per night validates and runs".
"""

from __future__ import annotations

import os
import subprocess
import sys

import fitsio
import pytest
import yaml

from gpuspec.launch import cli as run_cli
from gpuspec.launch.manifest import ManifestError, load_manifest
from gpuspec.launch.plan import load_plan
from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N1, N2 = 20250101, 20250102


@pytest.fixture
def inputs(tmp_path):
    inp = make_toy_inputs(str(tmp_path / "in"), nights_expids=((N1, 1), (N2, 2)), petals=(0,),
                          nfibers=50)
    for night in (N1, N2):  # a psfnight per night
        d = tmp_path / "in" / "calibnight" / str(night)
        d.mkdir(parents=True)
        for c in inp["cameras"]:
            (d / f"psfnight-{c}-{night}.fits").write_text(f"psf {c} {night}")
    return inp


def _doc(inputs, tmp_path):
    doc = yaml.safe_load(toy_manifest_text(inputs, str(tmp_path / "prod"), bundles=(0, 1),
                                           nbundles=2))
    return doc


def _write(tmp_path, doc):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def _psf_of(tasks, expid):
    return {t.params["psf"] for t in tasks if t.step == "extract" and t.params["expid"] == expid}


@pytest.mark.slow
def test_psf_template_with_night(inputs, tmp_path, capsys):
    doc = _doc(inputs, tmp_path)
    doc["inputs"]["psf"] = str(tmp_path / "in" / "calibnight" / "{night}" /
                               "psfnight-{camera}-{night}.fits")
    path = _write(tmp_path, doc)
    assert run_cli.main([path, "--check"]) == 0
    p = load_plan(path, write_db=False)
    for expid, night in ((1, N1), (2, N2)):
        assert _psf_of(p.tasks, expid) == {str(tmp_path / "in" / "calibnight" / str(night) /
                                               f"psfnight-{c}-{night}.fits")
                                           for c in ("b0", "r0", "z0")}
        for t in p.tasks:  # the PSF is an input of the task (a new psfnight re-runs it)
            if t.step == "extract" and t.params["expid"] == expid:
                assert t.params["psf"] in t.inputs
    assert run_cli.main([path, "-q"]) == 0


@pytest.mark.slow
def test_nights_mapping_and_exposure_override(inputs, tmp_path):
    doc = _doc(inputs, tmp_path)
    cal = tmp_path / "in" / "calibnight"
    doc["inputs"].pop("psf")
    doc["inputs"]["nights"] = {N1: {"psf": str(cal / str(N1) / f"psfnight-{{camera}}-{N1}.fits")},
                               N2: {"psf": str(cal / str(N2) / f"psfnight-{{camera}}-{N2}.fits"),
                                    "calib": {"bias": inputs["bias"]}}}
    doc["inputs"]["calib"] = {}
    # exposure 2 overrides its night's PSF for r0 only (a mapping camera -> path)
    special = tmp_path / "in" / "psf-r0-special.fits"
    special.write_text("special")
    doc["inputs"]["exposures"][1]["psf"] = {"r0": str(special), "b0": str(cal / str(N2) /
                                            f"psfnight-b0-{N2}.fits"),
                                            "z0": str(cal / str(N2) / f"psfnight-z0-{N2}.fits")}
    path = _write(tmp_path, doc)
    p = load_plan(path, write_db=False)
    assert _psf_of(p.tasks, 1) == {str(cal / str(N1) / f"psfnight-{c}-{N1}.fits")
                                   for c in ("b0", "r0", "z0")}
    assert str(special) in _psf_of(p.tasks, 2)
    pre = {t.params["expid"]: t for t in p.tasks if t.name.startswith("preproc-b0")}
    assert pre[1].params["bias"] is None and pre[2].params["bias"] == inputs["bias"].format(
        camera="b0")
    assert run_cli.main([path, "-q"]) == 0


def test_a_missing_psf_of_one_night_names_night_camera_and_key(inputs, tmp_path):
    doc = _doc(inputs, tmp_path)
    doc["inputs"]["psf"] = str(tmp_path / "in" / "calibnight" / "{night}" /
                               "psfnight-{camera}-{night}.fits")
    os.remove(tmp_path / "in" / "calibnight" / str(N2) / f"psfnight-z0-{N2}.fits")
    path = _write(tmp_path, doc)
    with pytest.raises(ManifestError, match=r"inputs\.psf: PSF not found for camera z0 of "
                                            r"exposure 2"):
        load_manifest(path)


def test_unknown_template_field_is_an_error(inputs, tmp_path):
    doc = _doc(inputs, tmp_path)
    doc["inputs"]["psf"] = str(tmp_path / "psf-{cam}.fits")
    path = _write(tmp_path, doc)
    with pytest.raises(ManifestError, match=r"inputs\.psf: unknown field \{cam\}"):
        load_manifest(path)


@pytest.mark.slow
def test_two_simulated_nights_with_a_psf_per_night_run_with_the_real_steps(tmp_path):
    from gpuspec.launch.steps import DESI

    if DESI.unavailable(["preproc", "extract", "frame", "group", "coadd"]):
        pytest.skip("real steps not available")
    env = dict(os.environ, GPUSPEC_NO_GPU="1",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sims = {}
    for night, expid, seed in ((20250115, 100, 1), (20250116, 200, 2)):
        d = str(tmp_path / f"sim{night}")
        r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "simulate", "--out", d,
                            "--cameras", "r0", "--nspec", "25", "--night", str(night),
                            "--expid", str(expid), "--seed", str(seed), "--wave-range",
                            "r:6400:6700", "--backend", "numpy"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        sims[night] = (d, expid)
    doc = {"production": str(tmp_path / "prod"), "backend": "numpy",
           "inputs": {"cameras": "r0", "exposures": [], "nights": {}},
           "steps": {"preproc": {}, "extract": {"bundles": [0], "wavelength":
                                                {"r": [6500.0, 6540.0, 0.8]}},
                     "frame": {}, "group": {}, "coadd": {}},
           "run": {"progress_interval": 0.0}}
    for night, (d, expid) in sims.items():
        raw = os.path.join(d, "raw", str(night), f"{expid:08d}")
        doc["inputs"]["exposures"].append(
            {"night": night, "expid": expid, "raw": os.path.join(raw, f"desi-{expid:08d}.fits.fz"),
             "fibermap": os.path.join(raw, f"fibermap-{expid:08d}.fits")})
        doc["inputs"]["nights"][night] = {
            "psf": os.path.join(d, "psf", "psf-{camera}.fits"),
            "calib": {k: os.path.join(d, "calib", f"{k}-{{camera}}.fits")
                      for k in ("bias", "dark", "pixflat", "mask")}}
    path = _write(tmp_path, doc)
    assert run_cli.main([path, "--check"]) == 0
    assert run_cli.main([path, "-q"]) == 0
    p = load_plan(path, write_db=False)
    assert set(p.states.values()) == {"done"}
    for t in p.tasks:
        if t.step == "extract":
            night = t.params["night"]
            assert t.params["psf"] == os.path.join(sims[night][0], "psf", "psf-r0.fits")
            assert fitsio.read_header(t.outputs[0], "FLUX")["NIGHT"] == night
    nights = set()
    for t in p.tasks:
        if t.step == "coadd":
            fm = fitsio.read(t.outputs[0], "EXP_FIBERMAP")
            nights |= set(fm["NIGHT"].tolist())
    assert nights == set(sims)
