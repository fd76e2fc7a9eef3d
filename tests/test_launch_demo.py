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
