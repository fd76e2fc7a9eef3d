"""Class 6 of docs/reliability.md: messages that tell the real cause.

A full disk or a file-size limit is reported as such (not CFITSIO's later
``1st key not SIMPLE or XTENSION``); a corrupt compressed HDU is named as
corrupt (not "camera not in file"); an option value is named as an option (not
"fibers 0..-1 are outside the PSF"); NaN pixels come with their HDU; and
``gpuspec-run --check`` never passes a manifest that cannot run.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import fitsio
import numpy as np
import pytest
import yaml

import reliability_world as W

R = "6500,6540,0.8"


@pytest.fixture(scope="module")
def w():
    return W.world()


def _extract_into(w, out):
    return ["extract", "-i", w["preproc"]["r0"], "-p", w["psf"]["r0"], "-o", out, "-w", R]


@pytest.mark.slow
def test_file_size_limit_is_named(w, tmp_path):
    """``ulimit -f`` below the size of a frame: 'file too large ... ulimit -f', exit 1."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    # once without the limit first: Numba writes its kernel cache (__pycache__) on the
    # first compile, and that write, not the frame's, would hit the limit on a fresh clone
    warm = subprocess.run([sys.executable, "-m", "gpuspec.cli",
                           *map(str, _extract_into(w, tmp_path / "warm" / "f.fits"))],
                          env=W.env(), capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli",
                        *map(str, _extract_into(w, tmp_path / "f.fits"))], env=W.env(),
                       capture_output=True, text=True, timeout=300, preexec_fn=limit)
    print("STDERR", r.stderr)
    line = W.check_error(r.returncode, r.stderr, 1, ["f.fits", "ulimit -f"])
    assert "SIMPLE" not in line
    assert not os.path.exists(tmp_path / "f.fits") and not W.leftovers(tmp_path)


def test_disk_full_is_named(w, tmp_path):
    """Writing into a full file system: 'no space left on device', exit 1, nothing left."""
    disk = W.small_disk(tmp_path / "disk", "1m")
    if disk is None:
        pytest.skip("cannot mount a small tmpfs here (the ulimit -f test covers the path)")
    try:
        W.fill(disk)
        rc, _, err = W.run_gpuspec(_extract_into(w, os.path.join(disk, "f.fits")))
        line = W.check_error(rc, err, 1, ["f.fits"])
        assert "space" in line or "disk full" in line, line
        assert "SIMPLE" not in line
        assert not os.path.exists(os.path.join(disk, "f.fits")) and not W.leftovers(disk)
    finally:
        W.release(disk)


def test_corrupt_compression_is_named_as_corrupt(w, tmp_path):
    for key, value, word in (("ZCMPTYPE", "'BOGUS_1 '", "corrupt"),
                             ("ZNAXIS1", "999999999", "corrupt"),
                             ("ZBITPIX", "7", "cannot read")):
        raw = W.edit_card(w["raw"], tmp_path, "R0", key, value, name=f"raw-{key}.fits.fz")
        rc, _, err = W.run_gpuspec(["preproc", "-i", raw, "--camera", "r0", "-o",
                                    tmp_path / "p.fits", "--nobias", "--nodark", "--nopixflat",
                                    "--nomask", "--no-gpu"])
        line = W.check_error(rc, err, 1, [os.path.basename(raw), "R0", word])
        assert "not in file" not in line, line
        rc, _, err = W.run_gpuspec(["info", raw])  # a summary of the headers, or the error
        assert "Traceback" not in err and rc in (0, 1), err


def test_absent_camera_lists_the_cameras_present(w, tmp_path):
    rc, _, err = W.run_gpuspec(["preproc", "-i", w["raw"], "--camera", "z3", "-o",
                                tmp_path / "p.fits", "--nobias", "--nodark", "--nopixflat",
                                "--nomask", "--no-gpu"])
    W.check_error(rc, err, 1, ["z3", "not in file", "b0, r0, z0"])


def test_option_values_are_named_as_options(w, tmp_path):
    rc, _, err = W.run_gpuspec(_extract_into(w, tmp_path / "f.fits") + ["--nspec", "0"])
    line = W.check_error(rc, err, 2, ["--nspec"])
    assert "0..-1" not in line
    from gpuspec.errors import InputError
    from gpuspec.extract import extract_file

    with pytest.raises(InputError, match="nspec") as e:
        extract_file(w["preproc"]["r0"], w["psf"]["r0"], str(tmp_path / "g.fits"),
                     (6500, 6540, 0.8), nspec=0)
    assert "0..-1" not in str(e.value)


def test_nan_raw_pixels_name_the_hdu(w, tmp_path):
    def change(ext, data, hdr):
        if ext == "R0":
            data = data.astype("f4")
            data[100:110, 200:210] = np.nan
        return data, hdr

    raw = W.rewrite(w["raw"], tmp_path, change, name="raw-nan.fits")
    rc, _, err = W.run_gpuspec(["preproc", "-i", raw, "--camera", "r0", "-o",
                                tmp_path / "p.fits", "--nobias", "--nodark", "--nopixflat",
                                "--nomask", "--no-gpu"])
    W.check_error(rc, err, 1, ["raw-nan.fits", "HDU R0", "NaN"])


def test_task_errors_name_the_file(w, tmp_path):
    """A production whose PSF is broken: the task's error (in the database, in
    ``gpuspec tasks``) names the PSF file and HDU, not just 'see the log'."""
    psf = W.nan_psf(w["psf"]["r0"], tmp_path, name="psf-r0.fits")
    for c in ("b0", "z0"):
        W.copy(w["psf"][c], tmp_path)
    doc = yaml.safe_load(open(w["manifest"]))
    doc["production"] = str(tmp_path / "prod")
    doc["inputs"]["psf"] = str(tmp_path / "psf-{camera}.fits")
    doc["steps"] = {"extract": doc["steps"]["extract"]}
    # the preproc products of the night are the inputs of this extraction-only production
    for c, p in w["preproc"].items():
        dst = tmp_path / "prod" / os.path.relpath(p, w["prod"])
        os.makedirs(dst.parent, exist_ok=True)
        os.symlink(p, dst)
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(doc))
    rc, out, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")
    assert rc == 1, err
    rc, out, err = W.run_gpuspec(["tasks", tmp_path / "prod", "--state", "failed"])
    assert rc == 0 and "psf-r0.fits" in out and "XTRACE" in out, out


# --------------------------------------------------------------------------- --check

def _toy(tmp_path):
    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    inputs = make_toy_inputs(str(tmp_path / "in"))
    return yaml.safe_load(toy_manifest_text(inputs, str(tmp_path / "prod")))


def _night(w, tmp_path):
    doc = yaml.safe_load(open(w["manifest"]))
    doc["production"] = str(tmp_path / "prod")
    return doc


def _opts(step, **o):
    def edit(doc):
        doc["steps"][step] = dict(doc["steps"].get(step) or {}, options=o)
        return doc
    return edit


def _put(path, value):
    def edit(doc):
        d = doc
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value
        return doc
    return edit


UNRUNNABLE = [  # (id, which manifest, edit, what the error names)
    ("preproc-option-typo", "night", _opts("preproc", cosmic=False), ["options.cosmic"]),
    ("extract-option-typo", "night", _opts("extract", nwavesteps=40), ["options.nwavesteps"]),
    ("coadd-option-typo", "night", _opts("coadd", lin_stp=1.0), ["options.lin_stp"]),
    ("option-nested-dict", "night", _opts("preproc", cosmics={"nsig": 5}),
     ["options.cosmics", "mapping"]),
    ("option-wrong-type", "night", _opts("preproc", cosmics_nsig="six"),
     ["options.cosmics_nsig"]),
    ("option-list-for-number", "night", _opts("extract", psferr=[0.01]), ["options.psferr"]),
    ("option-set-by-launcher", "night", _opts("extract", outfile="x.fits"),
     ["options.outfile", "launcher"]),
    ("option-backend", "night", _opts("coadd", backend="numpy"), ["options.backend"]),
    ("option-out-of-range", "night", _opts("extract", nwavestep=0), ["options.nwavestep"]),
    ("option-negative", "night", _opts("extract", regularize=-1.0), ["options.regularize"]),
    ("option-coadd-grid", "night", _opts("coadd", lin_step=0.0), ["options.lin_step"]),
    ("option-coadd-range", "night", _opts("coadd", wave_min=7000.0, wave_max=6000.0,
                                          lin_step=1.0), ["options.wave_m"]),
    ("nside-3", "night", _put(["steps", "group", "nside"], 3), ["nside"]),
    ("arm-without-grid", "night", _put(["steps", "extract", "wavelength"],
                                       {"b": [5000, 5040, 0.8]}), ["wavelength"]),
    ("bundle-out-of-range", "night", _put(["steps", "extract", "bundles"], [25]), ["bundles"]),
    ("psf-is-a-directory", "night", lambda d: _put(["inputs", "psf"], os.path.dirname(
        d["inputs"]["psf"]))(d), ["inputs.psf", "directory"]),
    ("backend-cupy-without-gpu", "night", _put(["backend"], "cupy"), ["backend"]),
    ("registry-missing", "toy", _put(["registry"], "no_such_pkg.steps:REG"), ["no_such_pkg"]),
    ("crash-signal-bogus", "toy", _put(["run", "crash_tasks"], {"x": "SIGFOO"}),
     ["crash_tasks"]),
    ("threads-too-many", "toy", _put(["run", "threads"], 10 ** 6), ["run.threads"]),
]


@pytest.mark.parametrize("name,which,edit,names", UNRUNNABLE, ids=[u[0] for u in UNRUNNABLE])
def test_check_never_passes_a_manifest_that_cannot_run(name, which, edit, names, w, tmp_path):
    doc = edit(_night(w, tmp_path) if which == "night" else _toy(tmp_path))
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(doc, sort_keys=False))
    rc, _, err = W.run_gpuspec([m, "--check"], prog="gpuspec-run")
    W.check_error(rc, err, 2, names, prog="gpuspec-run")
    rc, _, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")  # and the run does not start
    W.check_error(rc, err, 2, names, prog="gpuspec-run")
    assert not os.path.exists(tmp_path / "prod" / "run" / "state.sqlite3")


@pytest.mark.slow
def test_check_passes_what_runs(w, tmp_path):
    """The control: options that are right pass --check, and the production runs."""
    doc = _night(w, tmp_path)
    doc["steps"]["preproc"] = {"options": {"cosmics": False, "cosmics_nsig": 5.0}}
    doc["steps"]["extract"]["options"] = {"nsubbundles": 5, "psferr": 0.01}
    doc["steps"]["coadd"] = {"options": {"cosmics_nsig": 4}}
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(doc, sort_keys=False))
    rc, out, err = W.run_gpuspec([m, "--check"], prog="gpuspec-run")
    assert rc == 0 and "valid" in out, err
    rc, out, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")
    assert rc == 0, err


CALIB_UNRUNNABLE = [  # (step, options, what the error names): the CLI's ranges, at --check
    ("fiberflat", {"nsig": 0}, ["steps.fiberflat.options.nsig", "> 0"]),
    ("fiberflat", {"smoothing_resolution": "fine"}, ["smoothing_resolution"]),
    ("sky", {"adjust_wavelength": True}, ["adjust_wavelength", "not implemented"]),
    ("sky", {"cosmics_nsig": 4.0}, ["cosmics_nsig"]),
    ("stdstars", {"z_res": 1e-300}, ["z_res", "limit"]),
    ("stdstars", {"maxstdstars": 0}, ["maxstdstars"]),
    ("stdstars", {"color": "B-V"}, ["color"]),
    ("fluxcalib", {"seeing_fwhm": -1.0}, ["seeing_fwhm"]),
    ("fluxcalib", {"delta_color_cut": float("nan")}, ["delta_color_cut"]),
    ("cframe", {"cosmics_nsig": 3.0}, ["cosmics_nsig"]),
]


@pytest.mark.parametrize("step,options,names", CALIB_UNRUNNABLE,
                         ids=[f"{s}-{next(iter(o))}" for s, o, _ in CALIB_UNRUNNABLE])
def test_check_refuses_calibration_option_values(step, options, names, tmp_path):
    """An option value the calibration CLI would refuse is refused by --check (exit 2,
    naming the key and its line), not by every task at run time."""
    from gpuspec.launch.steps import DESI

    if DESI.unavailable([step]):
        pytest.skip(f"step {step} not available: {DESI.unavailable([step])}")
    path, prod = W.calibrated_toy(tmp_path, "prod", registry="desi")
    doc = yaml.safe_load(open(path))
    doc["steps"][step] = dict(doc["steps"][step] or {}, options=options)
    open(path, "w").write(yaml.safe_dump(doc, sort_keys=False))
    rc, _, err = W.run_gpuspec([path, "--check"], prog="gpuspec-run")
    W.check_error(rc, err, 2, names, prog="gpuspec-run")


def test_check_passes_good_calibration_options(tmp_path):
    from gpuspec.launch.steps import DESI

    if DESI.unavailable(["fiberflat", "stdstars"]):
        pytest.skip("calibration steps not available")
    path, prod = W.calibrated_toy(tmp_path, "prod", registry="desi")
    doc = yaml.safe_load(open(path))
    doc["steps"]["fiberflat"] = {"options": {"nsig": 5, "smoothing_resolution": 4.0}}
    doc["steps"]["sky"] = {"options": {"no_extra_variance": True, "adjust_wavelength": False}}
    doc["steps"]["stdstars"] = {"options": {"z_res": 4e-5, "color": "G-R"}}
    doc["steps"]["cframe"] = {"options": {"cosmics_nsig": 0}}
    open(path, "w").write(yaml.safe_dump(doc, sort_keys=False))
    rc, out, err = W.run_gpuspec([path, "--check"], prog="gpuspec-run")
    assert rc == 0, err
