"""Task graph facts come from their owners: fibers from the fibermap, pixels from coadd.group.

Issue 13 bug 1: the graph numbered fibers ``petal*nbundles*fibers_per_bundle + ...``
while DESI and the simulator number them ``500*petal + i``; a spectrograph-1
production with ``nbundles`` != 20 then planned no group/coadd task. The
expected pixels here are computed independently with healpy from the fibermap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fitsio
import healpy
import numpy as np
import pytest

from gpuspec.launch.graph import build_graph
from gpuspec.launch.manifest import ManifestError, load_manifest
from gpuspec.launch.plan import load_plan
from gpuspec.launch.runner import run_serial
from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, inputs, name="m", **kw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(toy_manifest_text(inputs, str(tmp_path / "prod"), **kw))
    return str(path)


def _fibermap(inputs, expid=1, night=20250101):
    return os.path.join(inputs["rawdir"], str(night), f"{expid:08d}", f"fibermap-{expid:08d}.fits")


@pytest.mark.slow
def test_spectrograph_1_with_2_bundles_plans_the_right_group_tasks(tmp_path):
    inputs = make_toy_inputs(str(tmp_path / "in"), nights_expids=((20250101, 1),), petals=(1,),
                             nfibers=50)
    path = _write(tmp_path, inputs, bundles=(0, 1), bundles_per_task=1, nbundles=2, nside=16)
    tasks = {t.name: t for t in build_graph(load_manifest(path), "json")}
    fm = fitsio.read(_fibermap(inputs), ext="FIBERMAP")
    assert fm["FIBER"].min() == 500  # DESI numbering: 500*petal + i
    pix = healpy.ang2pix(16, fm["TARGET_RA"], fm["TARGET_DEC"], nest=True, lonlat=True)
    expect = sorted(set(pix.tolist()))
    groups = sorted(int(n.split("-")[1]) for n in tasks if n.startswith("group-"))
    assert groups == expect and len(groups) > 1
    assert sorted(int(n.split("-")[1]) for n in tasks if n.startswith("coadd-")) == expect
    for p in expect:
        assert tasks[f"group-{p}"].deps == sorted(f"frame-{a}1-00000001" for a in "brz")
    # the extraction of bundle 1 holds fibers 525..549 (the fibermap's rows 25..49)
    assert run_serial(load_plan(path), verbose=False) == 0
    part = tasks["extract-r1-00000001-b01-01"].outputs[0]
    with open(part) as f:
        assert json.load(f)["fibers"] == list(range(525, 550))
    # every fiber of the frames lands in exactly one group file
    got = []
    for p in expect:
        with open(tasks[f"group-{p}"].outputs[0]) as f:
            got += [r[0] for r in json.load(f)["rows"] if r[2] == "r1"]
    assert sorted(got) == list(range(500, 550))


def test_a_frame_that_maps_to_no_pixel_is_an_error(tmp_path):
    inputs = make_toy_inputs(str(tmp_path / "in"), nights_expids=((20250101, 1),), petals=(1,),
                             nfibers=50)
    fm = fitsio.read(_fibermap(inputs), ext="FIBERMAP")
    fm["TARGET_RA"][:] = np.nan
    fitsio.write(_fibermap(inputs), fm, extname="FIBERMAP", clobber=True)
    path = _write(tmp_path, inputs, bundles=(0, 1), nbundles=2)
    with pytest.raises(ManifestError, match="maps to no HEALPix pixel") as exc:
        build_graph(load_manifest(path), "json")
    assert "inputs.exposures[0]" in str(exc.value) and "b1" in str(exc.value)


def test_a_fibermap_without_the_cameras_spectrograph_is_an_error(tmp_path):
    inputs = make_toy_inputs(str(tmp_path / "in"), nights_expids=((20250101, 1),), petals=(0,),
                             nfibers=50)
    path = _write(tmp_path, inputs, bundles=(0,), nbundles=2)
    text = open(path).read().replace("- b0\n  - r0\n  - z0", "- r1")
    assert "- r1" in text
    open(path, "w").write(text)
    os.makedirs(os.path.dirname(inputs["psf"]), exist_ok=True)
    open(inputs["psf"].format(camera="r1"), "w").write("psf")
    open(inputs["bias"].format(camera="r1"), "w").write("bias")
    with pytest.raises(ManifestError, match="no fiber of spectrograph 1"):
        build_graph(load_manifest(path), "json")


@pytest.mark.slow
def test_simulated_r1_with_one_bundle_plans_group_and_coadd(tmp_path):
    """The issue's reproduction: simulate camera r1, manifest with nbundles: 1."""
    from gpuspec.launch.demo import make_demo_manifest

    sim = str(tmp_path / "sim")
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "simulate", "--out", sim,
                        "--cameras", "r1", "--nspec", "25", "--backend", "numpy"],
                       env=dict(os.environ, GPUSPEC_NO_GPU="1",
                                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    path = make_demo_manifest(sim, str(tmp_path / "prod"), bundles=[0], nbundles=1,
                              steps=["preproc", "extract", "frame", "group", "coadd"])
    steps = [t.step for t in load_plan(path, write_db=False, check_backend=False).tasks]
    fm = fitsio.read(os.path.join(sim, "raw", "20250115", "00000100", "fibermap-00000100.fits"),
                     ext="FIBERMAP")
    npix = len(set(healpy.ang2pix(64, fm["TARGET_RA"], fm["TARGET_DEC"], nest=True,
                                  lonlat=True).tolist()))
    assert steps.count("group") == steps.count("coadd") == npix >= 1
