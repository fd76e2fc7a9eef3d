"""Manifest validation: every malformed manifest gets an error naming the key and the line."""

from __future__ import annotations

import os

import pytest

from gpuspec.camword import cameras_to_camword, parse_camword, parse_cameras
from gpuspec.launch.manifest import ManifestError, load_manifest, parse_manifest
from gpuspec.launch.toy import make_toy_inputs

GOOD = """\
production: prod
registry: toy
inputs:
  rawdir: in/raw
  cameras: a0
  exposures:
    - night: 20250101
      expid: 1
    - {night: 20250101, expid: 2}
  psf: in/psf/psf-{camera}.fits
  calib:
    bias: in/calib/bias-{camera}.fits
steps:
  preproc:
  extract:
    bundles: [0, 1]
    bundles_per_task: 1
  frame:
  group: {nside: 16}
  coadd:
"""


@pytest.fixture
def workdir(tmp_path):
    make_toy_inputs(str(tmp_path / "in"), petals=(0,))
    return tmp_path


def _write(workdir, text):
    p = workdir / "m.yaml"
    p.write_text(text)
    return str(p)


def _error(workdir, text) -> ManifestError:
    with pytest.raises(ManifestError) as ei:
        load_manifest(_write(workdir, text))
    return ei.value


def _line_of(text, needle):
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise AssertionError(needle)


def test_good_manifest_defaults_and_paths(workdir):
    m = load_manifest(_write(workdir, GOOD))
    assert m.production == str(workdir / "prod")
    assert m.steps == ["preproc", "extract", "frame", "group", "coadd"]
    assert m.data["inputs"]["cameras"] == ["b0", "r0", "z0"]
    ex = m.step("extract")
    assert ex["bundles"] == [0, 1] and ex["nbundles"] == 20 and ex["fibers_per_bundle"] == 25
    assert m.data["backend"] == "auto" and m.data["run"]["fail_tasks"] == []
    exps = m.exposures()
    assert exps[1]["raw"] == str(workdir / "in/raw/20250101/00000002/desi-00000002.fits.fz")
    assert m.camera_file("psf", "r0") == str(workdir / "in/psf/psf-r0.fits")
    assert m.line("inputs.exposures[1].expid") == _line_of(GOOD, "expid: 2")


def test_unknown_key_names_key_and_line(workdir):
    text = GOOD.replace("    bundles_per_task: 1", "    bundles_per_task: 1\n    bundels: [3]")
    err = _error(workdir, text)
    assert err.key == "steps.extract.bundels"
    assert err.line == _line_of(text, "bundels")
    assert f"line {err.line}" in str(err) and "steps.extract.bundels" in str(err)
    assert "unknown key" in str(err)


def test_unknown_top_level_key(workdir):
    text = GOOD + "extra_stuff: 1\n"
    err = _error(workdir, text)
    assert err.key == "extra_stuff" and err.line == _line_of(text, "extra_stuff")


def test_missing_input_file_names_key_and_line(workdir):
    os.remove(workdir / "in/psf/psf-r0.fits")
    err = _error(workdir, GOOD)
    assert err.key == "inputs.psf"
    assert err.line == _line_of(GOOD, "psf: in/psf")
    assert "psf-r0.fits" in str(err) and "not found" in str(err)


def test_missing_raw_file_of_one_exposure(workdir):
    text = GOOD.replace("    - {night: 20250101, expid: 2}",
                        "    - {night: 20250101, expid: 2, raw: in/nothere.fits.fz}")
    err = _error(workdir, text)
    assert err.key == "inputs.exposures[1].raw"
    assert err.line == _line_of(text, "nothere")
    assert "nothere.fits.fz" in str(err)


def test_bad_camword_names_key_and_line(workdir):
    text = GOOD.replace("cameras: a0", "cameras: a0x7")
    err = _error(workdir, text)
    assert err.key == "inputs.cameras" and err.line == _line_of(text, "cameras: a0x7")
    assert "camword" in str(err)


def test_bad_camera_in_list(workdir):
    text = GOOD.replace("cameras: a0", "cameras: [b0, q3]")
    err = _error(workdir, text)
    assert err.key == "inputs.cameras" and "q3" in str(err)


def test_cycle_names_key_and_line(workdir):
    text = GOOD.replace("  preproc:\n", "  preproc:\n    after: [coadd]\n")
    err = _error(workdir, text)
    assert err.key == "steps.preproc.after[0]"
    assert err.line == _line_of(text, "after: [coadd]")
    assert "cycle" in str(err)
    for s in ("preproc", "extract", "frame", "group", "coadd"):
        assert s in str(err)


def test_after_unknown_step(workdir):
    text = GOOD.replace("  frame:\n", "  frame:\n    after: [calibrate]\n")
    err = _error(workdir, text)
    assert err.key == "steps.frame.after[0]" and "calibrate" in str(err)


def test_wrong_type_names_key_and_line(workdir):
    text = GOOD.replace("expid: 1", "expid: one")
    err = _error(workdir, text)
    assert err.key == "inputs.exposures[0].expid"
    assert err.line == _line_of(text, "expid: one")
    assert "integer" in str(err)


def test_wrong_type_mapping_vs_list(workdir):
    text = GOOD.replace("    bundles: [0, 1]", "    bundles: {a: 1}")
    err = _error(workdir, text)
    assert err.key == "steps.extract.bundles" and "expected a list" in str(err)


def test_wrong_type_bool_is_not_int(workdir):
    text = GOOD.replace("bundles_per_task: 1", "bundles_per_task: true")
    err = _error(workdir, text)
    assert err.key == "steps.extract.bundles_per_task" and "integer" in str(err)


def test_missing_required_key(workdir):
    text = GOOD.replace("production: prod\n", "")
    err = _error(workdir, text)
    assert err.key == "production" and "missing required key" in str(err)


def test_bad_choice_and_minimum(workdir):
    err = _error(workdir, GOOD + "backend: tpu\n")
    assert err.key == "backend" and "tpu" in str(err)
    err = _error(workdir, GOOD.replace("bundles_per_task: 1", "bundles_per_task: 0"))
    assert err.key == "steps.extract.bundles_per_task"


def test_bundle_out_of_range(workdir):
    text = GOOD.replace("bundles: [0, 1]", "bundles: [0, 25]")
    err = _error(workdir, text)
    assert err.key == "steps.extract.bundles[1]" and err.line == _line_of(text, "bundles: [0, 25]")


def test_invalid_yaml_gives_line(workdir):
    text = GOOD.replace("  cameras: a0", "  cameras: [a0")
    err = _error(workdir, text)
    assert err.line is not None and "YAML" in str(err)


def test_steps_as_list(workdir):
    text = GOOD.split("steps:")[0] + "steps: [preproc, extract]\n"
    m = parse_manifest(text, str(workdir / "m.yaml"))
    assert m.steps == ["preproc", "extract"]
    assert m.step("extract")["bundles_per_task"] == 1
    with pytest.raises(ManifestError) as ei:
        parse_manifest(GOOD.split("steps:")[0] + "steps: [preproc, redshift]\n",
                       str(workdir / "m.yaml"))
    assert ei.value.key == "steps[1]"


def test_wavelength_forms(workdir):
    text = GOOD.replace("bundles_per_task: 1", "bundles_per_task: 1\n    wavelength: "
                        "{b: [3600, 5800, 0.8]}")
    m = load_manifest(_write(workdir, text))
    assert m.step("extract")["wavelength"] == {"b": (3600.0, 5800.0, 0.8)}
    bad = GOOD.replace("bundles_per_task: 1", "bundles_per_task: 1\n    wavelength: "
                       "{b: [5800, 3600, 0.8]}")
    err = _error(workdir, bad)
    assert err.key == "steps.extract.wavelength.b"


def test_camword_api():
    assert parse_camword("a0b1") == ["b0", "b1", "r0", "z0"]
    assert parse_camword("A01") == ["b0", "b1", "r0", "r1", "z0", "z1"]
    assert cameras_to_camword(["z3", "b0", "r0", "z0", "b3"]) == "a0b3z3"
    assert cameras_to_camword(parse_camword("a0123b5r6z789")) == "a0123b5r6z789"
    assert parse_cameras("b0,r1") == ["b0", "r1"]
    for bad in ("", "a", "x0", "a0q", "b0r"):
        with pytest.raises(ValueError):
            parse_camword(bad)
    with pytest.raises(ValueError):
        cameras_to_camword(["b0", "bb"])


def test_parse_cameras_is_the_one_camera_parser():
    from gpuspec.errors import InputError
    from gpuspec.sim import cameras as sim_cameras

    assert sim_cameras.parse_cameras is parse_cameras  # one home, re-exported by the simulator
    assert parse_cameras("a01") == ["b0", "b1", "r0", "r1", "z0", "z1"]
    assert parse_cameras("z1,a0", order="petal") == ["b0", "r0", "z0", "z1"]
    assert parse_cameras(["r2", "b2", "z1"], order="petal") == ["z1", "b2", "r2"]
    with pytest.raises(InputError, match="invalid cameras 'q0'"):
        parse_cameras("q0")
    with pytest.raises(ValueError, match="order"):
        parse_cameras("a0", order="fiber")


@pytest.mark.parametrize("name", ["demo-sim.yaml", "desi-night.yaml", "toy.yaml"])
def test_launch_examples_are_valid(name):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from gpuspec.launch.manifest import STEPS

    m = load_manifest(os.path.join(repo, "launch", name), check_files=False)
    # the examples of real nights are calibrated (DESI's default); the toy one is not
    assert m.steps == (["preproc", "extract", "frame", "group", "coadd"] if name == "toy.yaml"
                       else list(STEPS))
    assert m.data["inputs"]["cameras"]


def test_env_vars_expanded(workdir, monkeypatch):
    monkeypatch.setenv("GPUSPEC_TEST_IN", str(workdir / "in"))
    text = GOOD.replace("rawdir: in/raw", "rawdir: $GPUSPEC_TEST_IN/raw")
    m = load_manifest(_write(workdir, text))
    assert m.data["inputs"]["rawdir"] == str(workdir / "in" / "raw")
