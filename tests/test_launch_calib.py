"""The calibration steps in the launcher's graph (toy steps; fast).

Flat-lamp exposures are told from science exposures by the OBSTYPE of their raw
header: here the toy raw files are tiny FITS files carrying OBSTYPE (the toy steps
only digest their bytes). Checked: the tasks and their dependencies (fiberflat per
flat × camera → fiberflatnight per arm or camera and night; sky, fluxcalib, cframe
per science camera; stdstars per science exposure × spectrograph; group on cframes;
flats never grouped), the notes of --check / --dry-run, a nightly fiberflat given per
night (with a PSF per night), errors naming exposure and key, option checks against
the step functions, and that a failing fiberflat fails only its dependents.
"""

from __future__ import annotations

import os
import sqlite3

import fitsio
import numpy as np
import pytest
import yaml

from gpuspec.launch import cli as run_cli
from gpuspec.launch.db import db_path
from gpuspec.launch.graph import build_graph
from gpuspec.launch.manifest import ManifestError, load_manifest
from gpuspec.launch.plan import UnknownOption, load_plan
from gpuspec.launch.runner import run_serial
from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

N1, N2 = 20250101, 20250102
CALIB = ["fiberflat", "fiberflatnight", "sky", "stdstars", "fluxcalib", "cframe"]
ALL = ["preproc", "extract", "frame"] + CALIB + ["group", "coadd"]


def _fits_raw(path, obstype):
    """Replace a toy raw file by a small FITS file whose exposure header has OBSTYPE."""
    os.remove(path)
    fitsio.write(path, np.zeros((2, 2), np.int16), header=[
        {"name": "EXPTIME", "value": 120.0 if obstype == "FLAT" else 900.0},
        {"name": "OBSTYPE", "value": obstype}], clobber=True)


def _inputs(root, nights=((N1, 99, "FLAT"), (N1, 100, "SCIENCE"), (N1, 101, "SCIENCE")),
            petals=(0,)):
    inp = make_toy_inputs(str(root), nights_expids=tuple((n, e) for n, e, _ in nights),
                          petals=petals, nfibers=50)
    for n, e, kind in nights:
        _fits_raw(os.path.join(inp["rawdir"], str(n), f"{e:08d}", f"desi-{e:08d}.fits.fz"), kind)
    return inp


def _doc(inp, tmp_path, steps=ALL, **kw):
    doc = yaml.safe_load(toy_manifest_text(inp, str(tmp_path / "prod"), bundles=(0, 1),
                                           bundles_per_task=1, nbundles=2, **kw))
    doc["steps"] = {s: doc["steps"].get(s, {}) for s in steps}
    return doc


def _write(tmp_path, doc, name="m.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


@pytest.fixture
def inp(tmp_path):
    return _inputs(tmp_path / "in")


def test_graph_of_a_calibrated_night(inp, tmp_path):
    m = load_manifest(_write(tmp_path, _doc(inp, tmp_path)))
    tasks = {t.name: t for t in build_graph(m, "json")}
    prod = m.production
    steps = [t.step for t in tasks.values()]
    assert {s: steps.count(s) for s in CALIB} == {
        "fiberflat": 3, "fiberflatnight": 3, "sky": 6, "stdstars": 2, "fluxcalib": 6,
        "cframe": 6}
    # flat: frame -> fiberflat -> fiberflatnight (one task per arm, DESI's autocalib)
    assert tasks["fiberflat-b0-00000099"].deps == ["frame-b0-00000099"]
    assert tasks["fiberflat-b0-00000099"].outputs == [
        f"{prod}/exposures/{N1}/00000099/fiberflat-b0-00000099.json"]
    ffn = tasks[f"fiberflatnight-b-{N1}"]
    assert ffn.deps == ["fiberflat-b0-00000099"]
    assert ffn.outputs == [f"{prod}/calibnight/{N1}/fiberflatnight-b0-{N1}.json"]
    # science: sky, stdstars (b, r, z of the spectrograph), fluxcalib, cframe
    assert tasks["sky-r0-00000100"].deps == ["fiberflatnight-r-20250101", "frame-r0-00000100"]
    assert tasks["stdstars-0-00000100"].deps == sorted(
        [f"frame-{a}0-00000100" for a in "brz"] + [f"sky-{a}0-00000100" for a in "brz"]
        + [f"fiberflatnight-{a}-{N1}" for a in "brz"])
    assert tasks["stdstars-0-00000100"].outputs == [
        f"{prod}/exposures/{N1}/00000100/stdstars-0-00000100.json"]
    assert tasks["fluxcalib-z0-00000101"].deps == sorted(
        ["fiberflatnight-z-20250101", "frame-z0-00000101", "sky-z0-00000101",
         "stdstars-0-00000101"])
    assert tasks["cframe-z0-00000101"].deps == sorted(
        ["fiberflatnight-z-20250101", "fluxcalib-z0-00000101", "frame-z0-00000101",
         "sky-z0-00000101"])
    # group reads cframes of the science exposures only; the flat is never grouped
    groups = [t for t in tasks.values() if t.step == "group"]
    assert groups
    for g in groups:
        assert all(os.path.basename(f).startswith("cframe-") for f in g.inputs)
        assert all(d.startswith("cframe-") for d in g.deps)
        assert not any("00000099" in f for f in g.inputs)
    assert not any(t.step in ("sky", "stdstars", "fluxcalib", "cframe") and
                   t.params["expid"] == 99 for t in tasks.values())


def test_flats_are_never_grouped_in_an_uncalibrated_production(inp, tmp_path, capsys):
    path = _write(tmp_path, _doc(inp, tmp_path, steps=["preproc", "extract", "frame", "group",
                                                       "coadd"]))
    tasks = build_graph(load_manifest(path), "json")
    assert any(t.name == "frame-b0-00000099" for t in tasks)  # the flat is extracted
    for t in tasks:
        if t.step == "group":
            assert t.inputs and all(os.path.basename(f).startswith("frame-") for f in t.inputs)
            assert not any("00000099" in f for f in t.inputs)
    assert run_cli.main([path, "--check"]) == 0
    out = capsys.readouterr().out
    assert "note: UNCALIBRATED production: group and coadd read frames" in out
    assert "note: flat exposures (OBSTYPE FLAT, never grouped): 99" in out


def test_check_and_dry_run_list_the_calibration_tasks(inp, tmp_path, capsys):
    path = _write(tmp_path, _doc(inp, tmp_path))
    assert run_cli.main([path, "--check"]) == 0
    out = capsys.readouterr().out
    assert "note: calibrated production: group and coadd read cframes" in out
    assert "UNCALIBRATED" not in out
    assert run_cli.main([path, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {ln.split()[0] for ln in lines if ln and not ln.startswith("note:")}
    for name in ("fiberflat-b0-00000099", f"fiberflatnight-z-{N1}", "sky-r0-00000100",
                 "stdstars-0-00000101", "fluxcalib-b0-00000101", "cframe-z0-00000100"):
        assert name in names, name
    assert f"--task fiberflatnight-b-{N1}" in "\n".join(lines)
    assert not os.path.exists(tmp_path / "prod" / "run")  # a dry run writes nothing


@pytest.mark.slow
def test_a_calibrated_toy_production_runs_and_resumes(inp, tmp_path):
    path = _write(tmp_path, _doc(inp, tmp_path))
    assert run_serial(load_plan(path), verbose=False) == 0
    p = load_plan(path, write_db=False)
    assert set(p.states.values()) == {"done"}
    cf = [t.outputs[0] for t in p.tasks if t.step == "cframe"]
    assert len(cf) == 6 and all(os.path.exists(f) for f in cf)


def test_average_method_makes_one_fiberflatnight_per_camera(tmp_path):
    inp = _inputs(tmp_path / "in", petals=(0, 1))
    doc = _doc(inp, tmp_path)
    doc["steps"]["fiberflatnight"] = {"method": "average"}
    tasks = {t.name: t for t in build_graph(load_manifest(_write(tmp_path, doc)), "json")}
    assert sorted(n for n in tasks if n.startswith("fiberflatnight-")) == sorted(
        f"fiberflatnight-{a}{p}-{N1}" for a in "brz" for p in (0, 1))
    assert tasks[f"fiberflatnight-b1-{N1}"].deps == ["fiberflat-b1-00000099"]
    doc["steps"]["fiberflatnight"] = {}
    tasks = {t.name: t for t in build_graph(load_manifest(_write(tmp_path, doc)), "json")}
    assert tasks[f"fiberflatnight-b-{N1}"].deps == ["fiberflat-b0-00000099",
                                                    "fiberflat-b1-00000099"]
    assert len(tasks[f"fiberflatnight-b-{N1}"].outputs) == 2


def _states(prod):
    con = sqlite3.connect(db_path(prod))
    try:
        return dict(con.execute("SELECT name, state FROM tasks"))
    finally:
        con.close()


@pytest.mark.parametrize("method", ["autocalib", "average"])
@pytest.mark.slow
def test_a_failing_fiberflat_fails_only_its_dependents(tmp_path, method):
    """Two nights, two spectrographs; fiberflat-b0 of night 1 fails."""
    inp = _inputs(tmp_path / "in", petals=(0, 1), nights=(
        (N1, 99, "FLAT"), (N1, 100, "SCIENCE"), (N2, 199, "FLAT"), (N2, 200, "SCIENCE")))
    bad = "fiberflat-b0-00000099"
    doc = _doc(inp, tmp_path, fail_tasks=[bad], nside=256)  # some pixels hold night 2 only
    doc["steps"]["fiberflatnight"] = {"method": method}
    path = _write(tmp_path, doc)
    assert run_serial(load_plan(path), verbose=False) == 1
    states = _states(str(tmp_path / "prod"))
    tasks = {t.name: t for t in load_plan(path, write_db=False).tasks}
    cams = [f"{a}{p}" for p in (0, 1) for a in "brz"]
    if method == "autocalib":  # the nightly b flat of every spectrograph
        night = {f"fiberflatnight-b-{N1}"}
        skies = {"sky-b0-00000100", "sky-b1-00000100"}
        sps = (0, 1)
    else:  # only camera b0's nightly flat
        night = {f"fiberflatnight-b0-{N1}"}
        skies = {"sky-b0-00000100"}
        sps = (0,)
    cal = ({f"stdstars-{sp}-00000100" for sp in sps}
           | {f"{s}-{a}{sp}-00000100" for s in ("fluxcalib", "cframe") for a in "brz"
              for sp in sps})
    cframes_failed = {tasks[n].outputs[0] for n in cal if n.startswith("cframe-")}
    groups = {n for n, t in tasks.items() if t.step == "group" and set(t.inputs) & cframes_failed}
    coadds = {"coadd-" + n.split("-")[1] for n in groups}
    expect = {bad} | night | skies | cal | groups | coadds
    assert {n for n, s in states.items() if s == "failed"} == expect
    assert all(s == "done" for n, s in states.items() if n not in expect)
    # what is left: night 2 entirely, the flats' r/z products, exposure 100's frames
    assert states[f"fiberflatnight-{'r' if method == 'autocalib' else 'r0'}-{N1}"] == "done"
    assert states["cframe-b0-00000200"] == "done" and states["frame-b0-00000100"] == "done"
    assert any(t.step == "group" and n not in groups for n, t in tasks.items())
    if method == "average":
        assert states["cframe-b1-00000100"] == "done"


def _two_night_doc(inp, tmp_path, template=True):
    """Science exposures only, with a PSF and a fiberflat given per night."""
    root = tmp_path / "in" / "calibnight"
    for night in (N1, N2):
        d = root / str(night)
        d.mkdir(parents=True, exist_ok=True)
        for c in inp["cameras"]:
            (d / f"psfnight-{c}-{night}.fits").write_text(f"psf {c} {night}")
            (d / f"fiberflatnight-{c}-{night}.fits").write_text(f"flat {c} {night}")
    doc = _doc(inp, tmp_path)
    doc["inputs"].pop("psf")
    if template:
        doc["inputs"]["psf"] = str(root / "{night}" / "psfnight-{camera}-{night}.fits")
        doc["inputs"]["fiberflat"] = str(root / "{night}" / "fiberflatnight-{camera}-{night}.fits")
    else:
        doc["inputs"]["nights"] = {n: {"psf": str(root / str(n) / f"psfnight-{{camera}}-{n}.fits"),
                                       "fiberflat": str(root / str(n) /
                                                        f"fiberflatnight-{{camera}}-{n}.fits")}
                                   for n in (N1, N2)}
    return doc, root


@pytest.mark.parametrize("template", [True, False])
@pytest.mark.slow
def test_two_nights_with_a_psf_and_a_fiberflat_per_night(tmp_path, template, capsys):
    inp = _inputs(tmp_path / "in", nights=((N1, 100, "SCIENCE"), (N2, 200, "SCIENCE")))
    doc, root = _two_night_doc(inp, tmp_path, template)
    path = _write(tmp_path, doc)
    assert run_cli.main([path, "--check"]) == 0
    assert "calibrated production" in capsys.readouterr().out
    p = load_plan(path, write_db=False)
    assert not any(t.step in ("fiberflat", "fiberflatnight") for t in p.tasks)  # no flats
    for t in p.tasks:
        if t.step in ("sky", "fluxcalib", "cframe"):
            night, cam = t.params["night"], t.params["camera"]
            assert t.params["fiberflat"] == str(root / str(night) /
                                                f"fiberflatnight-{cam}-{night}.fits")
            assert t.params["fiberflat"] in t.inputs  # a new nightly flat re-runs it
        if t.step == "extract":
            assert t.params["psf"] == str(root / str(t.params["night"]) /
                                          f"psfnight-{t.params['camera']}-{t.params['night']}.fits")
    assert run_serial(load_plan(path), verbose=False) == 0


def test_a_missing_fiberflat_of_one_night_names_the_key_and_line(tmp_path):
    inp = _inputs(tmp_path / "in", nights=((N1, 100, "SCIENCE"), (N2, 200, "SCIENCE")))
    doc, root = _two_night_doc(inp, tmp_path, template=False)
    os.remove(root / str(N2) / f"fiberflatnight-z0-{N2}.fits")
    path = _write(tmp_path, doc)
    with pytest.raises(ManifestError) as ei:
        load_plan(path, write_db=False)
    assert ei.value.key == f"inputs.nights.{N2}.fiberflat"
    assert f"fiberflatnight-z0-{N2}.fits, which does not exist" in str(ei.value)
    line = next(i for i, ln in enumerate(open(path).read().splitlines(), 1)
                if f"fiberflatnight-{{camera}}-{N2}" in ln)
    assert ei.value.line == line


def test_no_fiber_flat_for_a_night_is_an_error_naming_the_exposure(tmp_path):
    inp = _inputs(tmp_path / "in", nights=((N1, 99, "FLAT"), (N1, 100, "SCIENCE"),
                                            (N2, 200, "SCIENCE")))
    path = _write(tmp_path, _doc(inp, tmp_path))
    with pytest.raises(ManifestError, match=r"inputs\.exposures\[2\]: exposure 200 \(night "
                                            r"20250102\), camera b0: no fiber flat"):
        load_plan(path, write_db=False)


def test_a_fiberflatnight_already_in_the_production_is_used(tmp_path):
    inp = _inputs(tmp_path / "in", nights=((N1, 100, "SCIENCE"),))
    d = tmp_path / "prod" / "calibnight" / str(N1)
    d.mkdir(parents=True)
    for c in inp["cameras"]:
        (d / f"fiberflatnight-{c}-{N1}.json").write_text("{}")
    tasks = build_graph(load_manifest(_write(tmp_path, _doc(inp, tmp_path))), "json")
    sky = next(t for t in tasks if t.name == "sky-b0-00000100")
    assert sky.params["fiberflat"] == str(d / f"fiberflatnight-b0-{N1}.json")


def test_obstype_from_the_header_wins_over_a_contradicting_manifest(inp, tmp_path):
    doc = _doc(inp, tmp_path)
    doc["inputs"]["exposures"][0]["obstype"] = "SCIENCE"  # exposure 99 is a flat
    with pytest.raises(ManifestError, match=r"inputs\.exposures\[0\]\.obstype: exposure 99: "
                                            r"obstype SCIENCE but its raw header says OBSTYPE=FLAT"):
        load_plan(_write(tmp_path, doc), write_db=False)


def test_other_obstypes_are_an_error(inp, tmp_path):
    _fits_raw(os.path.join(inp["rawdir"], str(N1), "00000101", "desi-00000101.fits.fz"), "ARC")
    with pytest.raises(ManifestError, match=r"inputs\.exposures\[2\]: exposure 101 has "
                                            r"OBSTYPE=ARC"):
        load_plan(_write(tmp_path, _doc(inp, tmp_path)), write_db=False)


def test_obstype_key_for_raw_files_without_a_header(tmp_path):
    """Toy raw files are not FITS: the manifest's obstype says which is the flat."""
    inp = make_toy_inputs(str(tmp_path / "in"), nights_expids=((N1, 99), (N1, 100)),
                          petals=(0,), nfibers=50)
    doc = _doc(inp, tmp_path)
    tasks = lambda: {t.step for t in build_graph(load_manifest(_write(tmp_path, doc)), "json")}
    with pytest.raises(ManifestError, match="no fiber flat"):  # both taken for science
        tasks()
    doc["inputs"]["exposures"][0]["obstype"] = "FLAT"
    assert {"fiberflat", "fiberflatnight", "cframe"} <= tasks()


def test_flat_extraction_options(inp, tmp_path):
    doc = _doc(inp, tmp_path)
    doc["steps"]["extract"]["options"] = {"model_ivar": True}
    doc["steps"]["extract"]["flat_options"] = {}
    tasks = build_graph(load_manifest(_write(tmp_path, doc)), "json")
    opts = {t.params["expid"]: t.params["options"] for t in tasks if t.step == "extract"}
    assert opts == {99: {}, 100: {"model_ivar": True}, 101: {"model_ivar": True}}


def test_calibration_step_options_are_checked_against_the_step_functions(inp, tmp_path, capsys):
    from gpuspec.launch.steps import DESI

    if DESI.unavailable(CALIB):
        pytest.skip(f"calibration steps not available: {DESI.unavailable(CALIB)}")
    doc = _doc(inp, tmp_path)
    doc["registry"] = "desi"
    doc["steps"]["sky"] = {"options": {"no_extra_variance": True, "adjust_wavelength": False}}
    doc["steps"]["fluxcalib"] = {"options": {"delta_color_cut": 0.3}}
    path = _write(tmp_path, doc)
    assert run_cli.main([path, "--check"]) == 0
    capsys.readouterr()
    for step, opt in (("sky", "no_extra_varance"), ("stdstars", "deltacolor"),
                      ("cframe", "tsnr"), ("fiberflat", "nsigma"), ("extract", "modelivar")):
        d = yaml.safe_load(yaml.safe_dump(doc))
        d["steps"][step] = dict(d["steps"][step], options={opt: 1})
        if step == "extract":
            d["steps"][step] = dict(doc["steps"][step], flat_options={opt: 1})
        p = _write(tmp_path, d, name=f"m-{step}.yaml")
        with pytest.raises(UnknownOption) as ei:
            load_plan(p, write_db=False)
        key = "flat_options" if step == "extract" else "options"
        assert ei.value.key == f"steps.{step}.{key}.{opt}"
        assert ei.value.line is not None


def test_group_input_cframe_without_the_cframe_step_needs_existing_cframes(inp, tmp_path):
    doc = _doc(inp, tmp_path, steps=["preproc", "extract", "frame", "group", "coadd"])
    doc["steps"]["group"]["input"] = "cframe"
    with pytest.raises(ManifestError, match=r"needs .*cframe-b0-00000100\.json, which does not "
                                            r"exist and which no task of this manifest makes "
                                            r"\(step cframe is not run\)"):
        load_plan(_write(tmp_path, doc), write_db=False)
    doc["steps"]["group"]["input"] = "frame"
    doc["steps"] = {s: doc["steps"].get(s, {}) for s in ALL}
    doc["steps"]["group"]["input"] = "frame"
    tasks = build_graph(load_manifest(_write(tmp_path, doc)), "json")
    assert all(os.path.basename(f).startswith("frame-") for t in tasks if t.step == "group"
               for f in t.inputs)


def test_a_cycle_through_the_calibration_steps_is_reported(inp, tmp_path):
    doc = _doc(inp, tmp_path)
    doc["steps"]["fiberflat"] = {"after": ["cframe"]}
    with pytest.raises(ManifestError, match="dependency cycle between steps"):
        load_manifest(_write(tmp_path, doc))
