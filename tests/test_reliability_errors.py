"""Class 4 of docs/reliability.md: errors, never tracebacks.

Every failure of every command is one line ``PROG: error: ...`` naming the file
or the option, with the documented exit status (1 input or output, 2 command
line or a production that cannot start, 130 Ctrl-C, 143 SIGTERM) and nothing
partial left behind: output folders that cannot be written, outputs that are
folders, bad option values, unreadable inputs of every kind, hostile manifests,
interruptions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

import reliability_world as W
from reliability_world import Case

R = "6500,6540,0.8"
CAMS = ("b0", "r0", "z0")


@pytest.fixture(scope="module")
def w():
    return W.world()


def _file(t, name="afile"):
    p = t / name
    p.write_text("I am a file\n")
    return p


def _dir(t, name="adir"):
    p = t / name
    p.mkdir(exist_ok=True)
    return p


def _ex(out, *more):
    return lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p", w["psf"]["r0"], "-o",
                         out(t), "-w", R, *more]


def _co(out, *more):
    return lambda w, t: ["coadd", "-i", w["spectra"][0], "-o", out(t), "--no-gpu", *more]


def _pre(out, *more):
    return lambda w, t: ["preproc", "-i", w["raw"], "--camera", "r0", "-o", out(t),
                         "--calib-dir", os.path.join(w["sim"], "calib"), "--no-gpu", *more]


def _cal(w):
    return w["calibration"]


OUTPUT_CASES = [
    Case("extract-o-is-a-directory", _ex(_dir), 1, lambda w, t: ["adir", "directory"]),
    Case("extract-o-under-a-file", _ex(lambda t: _file(t) / "f.fits"), 1,
         lambda w, t: ["afile", "not a folder"]),
    Case("extract-model-under-a-file",
         lambda w, t: _ex(lambda t: t / "frame.fits", "-m", _file(t) / "model.fits")(w, t), 1,
         lambda w, t: ["afile"], lambda w, t: [t / "frame.fits"]),
    Case("coadd-o-is-a-directory", _co(_dir), 1, lambda w, t: ["adir", "directory"]),
    Case("coadd-o-under-a-file", _co(lambda t: _file(t) / "c.fits"), 1, lambda w, t: ["afile"]),
    Case("preproc-o-is-a-directory-name-clash",
         _pre(lambda t: _file(t, "preproc-r0-00000100.fits") / "x.fits"), 1,
         lambda w, t: ["preproc-r0-00000100.fits"]),
    Case("preproc-o-under-a-file", _pre(lambda t: _file(t) / "p.fits"), 1,
         lambda w, t: ["afile"]),
    Case("group-outdir-is-a-file", lambda w, t: ["group", "-i", w["frame"]["b0"], "-o",
                                                 _file(t)], 1, lambda w, t: ["afile"]),
    Case("merge-o-is-a-directory", lambda w, t: ["extract", "--merge", w["part"]["r0"], "-o",
                                                 _dir(t)], 1, lambda w, t: ["adir"]),
    Case("fiberflat-o-is-a-directory",
         lambda w, t: ["compute-fiberflat", "-i", _cal(w)["b0"]["flat"], "-o", _dir(t),
                       "--backend", "numpy"], 1, lambda w, t: ["adir"]),
    Case("sky-o-under-a-file",
         lambda w, t: ["compute-sky", "-i", _cal(w)["b0"]["frame"], "--fiberflat",
                       _cal(w)["b0"]["fiberflat"], "-o", _file(t) / "s.fits", "--backend",
                       "numpy"], 1, lambda w, t: ["afile"]),
    Case("cframe-o-is-a-directory",
         lambda w, t: ["process-exposure", "-i", _cal(w)["b0"]["frame"], "--fiberflat",
                       _cal(w)["b0"]["fiberflat"], "-o", _dir(t), "--backend", "numpy"], 1,
         lambda w, t: ["adir"]),
    Case("stdstars-o-is-a-directory",
         lambda w, t: ["fit-stdstars", "--frames", *[_cal(w)[c]["frame"] for c in CAMS],
                       "--skymodels", *[_cal(w)[c]["sky"] for c in CAMS],
                       "--fiberflats", *[_cal(w)[c]["fiberflat"] for c in CAMS],
                       "-o", _dir(t), "--backend", "numpy"], 1, lambda w, t: ["adir"]),
    Case("fluxcalib-o-under-a-file",
         lambda w, t: ["compute-fluxcalib", "-i", _cal(w)["r0"]["frame"], "--fiberflat",
                       _cal(w)["r0"]["fiberflat"], "--sky", _cal(w)["r0"]["sky"], "--models",
                       _cal(w)["stdstars"], "-o", _file(t) / "fc.fits", "--backend", "numpy"],
         1, lambda w, t: ["afile"]),
    Case("average-fiberflat-o-is-a-directory",
         lambda w, t: ["average-fiberflat", "-i", _cal(w)["b0"]["fiberflat"], "-o", _dir(t)],
         1, lambda w, t: ["adir"]),
    Case("templates-o-under-a-file",
         lambda w, t: ["stdstar-templates", "-o", _file(t) / "tpl.fits"], 1,
         lambda w, t: ["afile"]),
    Case("qa-o-under-a-file", lambda w, t: ["qa", w["frame"]["r0"], "-o",
                                            _file(t) / "q.png"], 1, lambda w, t: ["afile"]),
    Case("report-o-under-a-file", lambda w, t: ["report", w["prod"], "-o",
                                                _file(t) / "r.html"], 1,
         lambda w, t: ["afile"]),
    Case("simulate-out-is-a-file", lambda w, t: ["simulate", "--out", _file(t), "--nspec",
                                                 "25", "--cameras", "r0"], 1, None,
         lambda w, t: []),
]


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=repr)
def test_output_side_errors(case, w, tmp_path):
    W.run_case(case, w, tmp_path)


def test_readonly_folder(w, tmp_path):
    """A read-only output folder (a read-only mount when running as root)."""
    ro = W.readonly_dir(tmp_path / "ro")
    if ro is None:
        pytest.skip("cannot make a read-only folder here (root without mount)")
    try:
        for argv in (_ex(lambda t: t / "ro" / "f.fits")(w, tmp_path),
                     _co(lambda t: t / "ro" / "c.fits")(w, tmp_path),
                     _ex(lambda t: t / "f.fits", "-m", str(tmp_path / "ro" / "m.fits"))(w, tmp_path)):
            rc, _, err = W.run_gpuspec(argv)
            W.check_error(rc, err, 1, ["ro"])
        assert not os.path.exists(tmp_path / "f.fits")  # -m unwritable: no frame either
        prod = yaml.safe_load(open(w["manifest"]))
        prod["production"] = str(tmp_path / "ro" / "prod")
        m = tmp_path / "ro.yaml"
        m.write_text(yaml.safe_dump(prod))
        rc, _, err = W.run_gpuspec([m, "--check"], prog="gpuspec-run")
        W.check_error(rc, err, 2, ["production", "not writable"])
    finally:
        W.release(tmp_path / "ro")


# --------------------------------------------------------------------------- option values

def _opt(*argv):
    def make(w, t):
        out = []
        for a in argv:
            out.append(a(w, t) if callable(a) else a)
        return out
    return make


_PRE = lambda w, t: w["preproc"]["r0"]  # noqa: E731
_PSF = lambda w, t: w["psf"]["r0"]  # noqa: E731
_SP = lambda w, t: w["spectra"][0]  # noqa: E731
_OUT = lambda w, t: t / "out.fits"  # noqa: E731


def _x(*more):
    return _opt("extract", "-i", _PRE, "-p", _PSF, "-o", _OUT, "-w", R, *more)


def _c(*more):
    return _opt("coadd", "-i", _SP, "-o", _OUT, "--no-gpu", *more)


OPTION_CASES = [
    Case("bundlesize-0", _x("--bundlesize", "0"), 2, lambda w, t: ["--bundlesize"]),
    Case("bundlesize-negative", _x("--bundlesize", "-3"), 2, lambda w, t: ["--bundlesize"]),
    Case("bundlesize-text", _x("--bundlesize", "ten"), 2, lambda w, t: ["--bundlesize"]),
    Case("nwavestep-0", _x("--nwavestep", "0"), 2, lambda w, t: ["--nwavestep"]),
    Case("nsubbundles-0", _x("--nsubbundles", "0"), 2, lambda w, t: ["--nsubbundles"]),
    Case("nspec-0", _x("--nspec", "0"), 2, lambda w, t: ["--nspec"]),
    Case("specmin-negative", _x("--specmin", "-1"), 2, lambda w, t: ["--specmin"]),
    Case("psferr-negative", _x("--psferr", "-0.1"), 2, lambda w, t: ["--psferr"]),
    Case("regularize-nan", _x("--regularize", "nan"), 2, lambda w, t: ["--regularize"]),
    Case("wavepad-negative", _x("--wavepad-frac", "-1"), 2, lambda w, t: ["--wavepad-frac"]),
    Case("nproc-0", _x("--nproc", "0"), 2, lambda w, t: ["--nproc"]),
    Case("bundles-text", _x("--bundles", "a,b"), 2, lambda w, t: ["--bundles"]),
    Case("bundles-negative", _x("--bundles", "-1"), 2, lambda w, t: ["--bundles"]),
    Case("bundles-not-contiguous", _x("--bundles", "3,1"), 1, lambda w, t: ["contiguous"]),
    Case("bundles-outside-psf", _x("--bundles", "99"), 1, lambda w, t: ["bundles", "PSF"]),
    Case("wavelength-reversed", _opt("extract", "-i", _PRE, "-p", _PSF, "-o", _OUT, "-w",
                                     "7000,6000,0.8"), 2, lambda w, t: ["--wavelength"]),
    Case("wavelength-two-numbers", _opt("extract", "-i", _PRE, "-p", _PSF, "-o", _OUT, "-w",
                                        "6000,7000"), 2, lambda w, t: ["--wavelength"]),
    Case("extract-without-input", _opt("extract", "-o", _OUT), 2,
         lambda w, t: ["-i/--input", "-p/--psf"]),
    Case("lin-step-0", _c("--lin-step", "0"), 2, lambda w, t: ["--lin-step"]),
    Case("lin-step-negative", _c("--lin-step", "-1"), 2, lambda w, t: ["--lin-step"]),
    Case("lin-step-nan", _c("--lin-step", "nan"), 2, lambda w, t: ["--lin-step"]),
    Case("lin-step-inf", _c("--lin-step", "inf"), 2, lambda w, t: ["--lin-step"]),
    Case("wave-min-above-max", _c("--lin-step", "1", "--wave-min", "7000", "--wave-max",
                                  "6000"), 2, lambda w, t: ["--wave-min", "--wave-max"]),
    Case("wave-min-without-lin-step", _c("--wave-min", "5000"), 2,
         lambda w, t: ["--lin-step"]),
    Case("wave-range-outside-data", _c("--lin-step", "1", "--wave-min", "20000"), 1,
         lambda w, t: ["empty"]),
    Case("coadd-nsig-0", _c("--nsig", "0"), 2, lambda w, t: ["--nsig"]),
    Case("nside-3", _opt("group", "-i", lambda w, t: w["frame"]["b0"], "-o",
                         lambda w, t: t / "hp", "--nside", "3"), 2,
         lambda w, t: ["--nside", "power of 2"], lambda w, t: [t / "hp"]),
    Case("nside-0", _opt("group", "-i", lambda w, t: w["frame"]["b0"], "-o",
                         lambda w, t: t / "hp", "--nside", "0"), 2, lambda w, t: ["--nside"]),
    Case("threads-0", _opt("--threads", "0", "info", lambda w, t: w["raw"]), 2,
         lambda w, t: ["--threads"]),
    Case("status-interval-0", _opt("status", lambda w, t: w["prod"], "--interval", "0"), 2,
         lambda w, t: ["--interval"]),
    Case("fiberflat-nsig-0", _opt("compute-fiberflat", "-i", lambda w, t: _cal(w)["b0"]["flat"],
                                  "-o", _OUT, "--nsig", "0"), 2, lambda w, t: ["--nsig"]),
    Case("fiberflat-acc-negative", _opt("compute-fiberflat", "-i",
                                        lambda w, t: _cal(w)["b0"]["flat"], "-o", _OUT,
                                        "--acc", "-1"), 2, lambda w, t: ["--acc"]),
    Case("sky-targetids-text", _opt("compute-sky", "-i", lambda w, t: _cal(w)["b0"]["frame"],
                                    "--fiberflat", lambda w, t: _cal(w)["b0"]["fiberflat"],
                                    "-o", _OUT, "--exclude-sky-targetids", "a,b"), 2,
         lambda w, t: ["TARGETID"]),
    Case("stdstars-maxstdstars-0", _opt("fit-stdstars", "--frames", "x", "--skymodels", "y",
                                        "--fiberflats", "z", "-o", _OUT, "--maxstdstars",
                                        "0"), 2, lambda w, t: ["--maxstdstars"]),
    Case("stdstars-z-res-0", _opt("fit-stdstars", "--frames", "x", "--skymodels", "y",
                                  "--fiberflats", "z", "-o", _OUT, "--z-res", "0"), 2,
         lambda w, t: ["--z-res"]),
    Case("fluxcalib-seeing-negative", _opt("compute-fluxcalib", "-i", "f", "--fiberflat", "g",
                                           "--sky", "h", "--models", "m", "-o", _OUT,
                                           "--seeing-fwhm", "-1"), 2,
         lambda w, t: ["--seeing-fwhm"]),
    Case("fiberflat-smoothing-0", _opt("compute-fiberflat", "-i", "f", "-o", _OUT,
                                       "--smoothing-resolution", "0"), 2,
         lambda w, t: ["--smoothing-resolution"]),
    Case("sky-cosmics-nsig-negative", _opt("compute-sky", "-i", "f", "--fiberflat", "g", "-o",
                                           _OUT, "--cosmics-nsig", "-2"), 2,
         lambda w, t: ["--cosmics-nsig"]),
    Case("stdstars-z-max-huge", _opt("fit-stdstars", "--frames", "x", "--skymodels", "y",
                                     "--fiberflats", "z", "-o", _OUT, "--z-max", "5"), 2,
         lambda w, t: ["--z-max"]),
    Case("stdstars-delta-color-nan", _opt("fit-stdstars", "--frames", "x", "--skymodels", "y",
                                          "--fiberflats", "z", "-o", _OUT, "--delta-color",
                                          "nan"), 2, lambda w, t: ["--delta-color"]),
    Case("fluxcalib-highest-throughput-negative",
         _opt("compute-fluxcalib", "-i", "f", "--fiberflat", "g", "--sky", "h", "--models",
              "m", "-o", _OUT, "--highest-throughput", "-1"), 2,
         lambda w, t: ["--highest-throughput"]),
    Case("cframe-cosmics-nsig-text", _opt("process-exposure", "-i", "f", "-o", _OUT,
                                          "--cosmics-nsig", "lots"), 2,
         lambda w, t: ["--cosmics-nsig"]),
    Case("preproc-camera-bogus", _opt("preproc", "-i", lambda w, t: w["raw"], "--camera", "q7",
                                      "-o", _OUT), 2, lambda w, t: ["--camera", "q7"]),
    Case("preproc-cameras-bogus", _opt("preproc", "-i", lambda w, t: w["raw"], "--cameras",
                                       "a0x7", "-o", lambda w, t: t), 2,
         lambda w, t: ["--cameras"]),
    Case("preproc-pattern-bogus", _opt("preproc", "-i", lambda w, t: w["raw"], "--cameras", "a0",
                                       "-o", lambda w, t: str(t) + "/p-{nope}.fits",
                                       "--calib-dir", lambda w, t: os.path.join(w["sim"],
                                                                                "calib")), 2,
         lambda w, t: ["-o", "{nope}"]),
    Case("preproc-cosmics-nsig-text", _opt("preproc", "-i", lambda w, t: w["raw"], "--camera",
                                           "r0", "-o", _OUT, "--cosmics-nsig", "many"), 2,
         lambda w, t: ["--cosmics-nsig"]),
    Case("proc-bundles-per-task-0", _opt("proc", "-n", "20250115", "--bundles-per-task", "0"),
         2, lambda w, t: ["--bundles-per-task"]),
    Case("proc-wavelength-bogus", _opt("proc", "-n", "20250115", "--rawdir",
                                       lambda w, t: os.path.join(w["sim"], "raw"),
                                       "--wavelength", "r:1:2", "--no-run", "--prod",
                                       lambda w, t: t / "p"), 2,
         lambda w, t: ["--wavelength"]),
    Case("qa-fibers-text", _opt("qa", lambda w, t: w["frame"]["r0"], "-o",
                                lambda w, t: t / "q.png", "--fibers", "x"), 2,
         lambda w, t: ["--fibers"]),
    Case("unknown-subcommand", _opt("extrakt"), 2, None),
    Case("unknown-option", _opt("coadd", "--frobnicate"), 2, None),
]


@pytest.mark.parametrize("case", OPTION_CASES, ids=repr)
def test_bad_option_values(case, w, tmp_path):
    argv = [str(a) for a in case.argv(w, tmp_path)]
    rc, _, err = W.run_gpuspec(argv)
    assert "Traceback" not in err
    assert rc == case.status, err
    line = [ln for ln in err.splitlines() if "error:" in ln][-1]
    for n in (case.names(w, tmp_path) if case.names else ()):
        assert n in line, line
    assert not os.path.exists(tmp_path / "out.fits")


# --------------------------------------------------------------------------- unreadable inputs

def _broken_inputs(kind):
    """(id, maker) of broken copies of an input file, as a user produces them."""
    return [
        (f"{kind}-missing", lambda src, t: t / "missing.fits"),
        (f"{kind}-directory", lambda src, t: _dir(t, "dir.fits")),
        (f"{kind}-text", lambda src, t: _file(t, "text.fits")),
        (f"{kind}-empty", lambda src, t: (t / "empty.fits").write_bytes(b"") or t / "empty.fits"),
        (f"{kind}-truncated", lambda src, t: W.truncate(src, t)),
        (f"{kind}-one-block", lambda src, t: W.truncate(src, t, 2880)),
        (f"{kind}-garbage", lambda src, t: (t / "garb.fits").write_bytes(os.urandom(2880 * 3))
         or t / "garb.fits"),
    ]


def _input_cases():
    cases = []
    commands = {
        "preproc-image": (lambda w: w["preproc"]["r0"],
                          lambda w, t, f: ["extract", "-i", f, "-p", w["psf"]["r0"], "-o",
                                           t / "o.fits", "-w", R]),
        "raw": (lambda w: w["raw"],
                lambda w, t, f: ["preproc", "-i", f, "--camera", "r0", "-o", t / "o.fits",
                                 "--nobias", "--nodark", "--nopixflat", "--nomask",
                                 "--no-gpu", "--no-fibermap"]),
        "spectra": (lambda w: w["spectra"][0],
                    lambda w, t, f: ["coadd", "-i", f, "-o", t / "o.fits", "--no-gpu"]),
        "frame": (lambda w: w["frame"]["b0"],
                  lambda w, t, f: ["group", "-i", f, "-o", t / "o"]),
        "fibermap": (lambda w: w["fibermap"],
                     lambda w, t, f: ["preproc", "-i", w["raw"], "--camera", "r0", "-o",
                                      t / "o.fits", "--fibermap", f, "--nobias", "--nodark",
                                      "--nopixflat", "--nomask", "--no-gpu"]),
        "mask": (lambda w: w["calib"]["mask"]["r0"],
                 lambda w, t, f: ["preproc", "-i", w["raw"], "--camera", "r0", "-o",
                                  t / "o.fits", "--mask", f, "--nobias", "--nodark",
                                  "--nopixflat", "--no-gpu"]),
        "fiberflat": (lambda w: w["calibration"]["b0"]["fiberflat"],
                      lambda w, t, f: ["compute-sky", "-i", w["calibration"]["b0"]["frame"],
                                       "--fiberflat", f, "-o", t / "o.fits", "--backend",
                                       "numpy"]),
        "flat-frame": (lambda w: w["calibration"]["b0"]["flat"],
                       lambda w, t, f: ["compute-fiberflat", "-i", f, "-o", t / "o.fits",
                                        "--backend", "numpy"]),
        "sky": (lambda w: w["calibration"]["b0"]["sky"],
                lambda w, t, f: ["process-exposure", "-i", w["calibration"]["b0"]["frame"],
                                 "--fiberflat", w["calibration"]["b0"]["fiberflat"], "--sky",
                                 f, "-o", t / "o.fits", "--backend", "numpy"]),
        "stdstars-frame": (lambda w: w["calibration"]["r0"]["frame"],
                           lambda w, t, f: ["fit-stdstars", "--frames",
                                            w["calibration"]["b0"]["frame"], f,
                                            w["calibration"]["z0"]["frame"], "--skymodels",
                                            *[w["calibration"][c]["sky"] for c in CAMS],
                                            "--fiberflats",
                                            *[w["calibration"][c]["fiberflat"] for c in CAMS],
                                            "-o", t / "o.fits", "--backend", "numpy"]),
        "stdstars": (lambda w: w["calibration"]["stdstars"],
                     lambda w, t, f: ["compute-fluxcalib", "-i", w["calibration"]["r0"]["frame"],
                                      "--fiberflat", w["calibration"]["r0"]["fiberflat"],
                                      "--sky", w["calibration"]["r0"]["sky"], "--models", f,
                                      "-o", t / "o.fits", "--backend", "numpy"]),
        "fluxcalib": (lambda w: w["calibration"]["b0"]["fluxcalib"],
                      lambda w, t, f: ["process-exposure", "-i", w["calibration"]["b0"]["frame"],
                                       "--calib", f, "-o", t / "o.fits", "--backend",
                                       "numpy"]),
        "info": (lambda w: w["frame"]["z0"], lambda w, t, f: ["info", f]),
        "qa": (lambda w: w["frame"]["z0"], lambda w, t, f: ["qa", f, "-o", t / "o.png"]),
    }
    for kind, (src, argv) in commands.items():
        for cid, make in _broken_inputs(kind):
            cases.append(pytest.param(src, argv, make, id=cid))
    return cases


@pytest.mark.parametrize("src,argv,make", _input_cases())
def test_unreadable_inputs(src, argv, make, w, tmp_path):
    f = make(src(w), tmp_path)
    args = [str(a) for a in argv(w, tmp_path, f)]
    rc, _, err = W.run_gpuspec(args)
    W.check_error(rc, err, 1, [os.path.basename(str(f))])
    assert not os.path.exists(tmp_path / "o.fits") and not os.path.exists(tmp_path / "o.png")
    assert not W.leftovers(tmp_path)


def test_wrong_kind_of_file(w, tmp_path):
    """A frame given where a spectra file is expected, a spectra file as a PSF, a PSF as a
    preproc image, a manifest as a FITS file."""
    for argv, name in (
            (["coadd", "-i", w["frame"]["r0"], "-o", tmp_path / "c.fits", "--no-gpu"], "frame-r0"),
            (["extract", "-i", w["preproc"]["r0"], "-p", w["spectra"][0], "-o",
              tmp_path / "f.fits", "-w", R], "spectra-"),
            (["extract", "-i", w["psf"]["r0"], "-p", w["psf"]["r0"], "-o", tmp_path / "f.fits",
              "-w", R], "psf-r0"),
            (["info", w["manifest"]], "manifest.yaml"),
            (["group", "-i", w["spectra"][0], "-o", tmp_path / "hp"], "spectra-")):
        rc, _, err = W.run_gpuspec([str(a) for a in argv])
        W.check_error(rc, err, 1, [name])


# --------------------------------------------------------------------------- manifests

def _night(w, t, edit=None, text=None):
    if text is None:
        doc = yaml.safe_load(open(w["manifest"]))
        doc["production"] = str(t / "prod")
        out = edit(doc) if edit else doc
        text = out if isinstance(out, (str, bytes)) else yaml.safe_dump(out, sort_keys=False)
    p = t / "m.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def _fibermap_truncated(doc, t, w):
    raw = os.path.join(t, "raw", "20250115", "00000100")
    os.makedirs(raw, exist_ok=True)
    os.symlink(w["raw"], os.path.join(raw, "desi-00000100.fits.fz"))
    W.truncate(w["fibermap"], raw, 5000, name="fibermap-00000100.fits")
    doc["inputs"]["rawdir"] = os.path.join(t, "raw")
    return doc


MANIFESTS = [
    ("not-utf8", lambda w, t: _night(w, t, text=b"production: x\n\xff\xfe\x00bad\n"),
     ["UTF-8", "line 2"]),
    ("latin1-path", lambda w, t: _night(w, t, text=open(w["manifest"]).read().replace(
        "production:", "# caf\xe9\nproduction:").encode("latin-1")), ["UTF-8"]),
    ("nul-bytes", lambda w, t: _night(w, t, text=b"production: a\x00b\n"), ["YAML"]),
    ("python-object-tag", lambda w, t: _night(
        w, t, lambda d: yaml.safe_dump(d).replace("preproc: {}", "preproc: {options: {cosmics: "
                                                  "!!python/object/apply:os.system [echo]}}")),
     ["tag", "python/object"]),
    ("custom-tag", lambda w, t: _night(w, t, lambda d: yaml.safe_dump(d).replace(
        "preproc: {}", "preproc: !mine {}")), ["tag", "!mine"]),
    ("nested-10000", lambda w, t: _night(w, t, text="production: " + "[" * 10000 + "]" * 10000),
     ["nested"]),
    ("recursive-alias", lambda w, t: _night(w, t, text="a: &a [*a]\n"), ["recursive"]),
    ("empty", lambda w, t: _night(w, t, text=""), ["empty"]),
    ("comments-only", lambda w, t: _night(w, t, text="# nothing\n# here\n"), ["empty"]),
    ("binary-garbage", lambda w, t: _night(w, t, text=os.urandom(3000)), []),
    ("top-level-list", lambda w, t: _night(w, t, text="- a\n- b\n"), ["mapping"]),
    ("duplicate-key", lambda w, t: _night(w, t, lambda d: yaml.safe_dump(d) + "backend: numpy\n"),
     ["duplicate"]),
    ("production-missing", lambda w, t: _night(w, t, lambda d: d.pop("production") and d),
     ["production"]),
    ("production-is-a-file", lambda w, t: _night(w, t, lambda d: dict(
        d, production=str(_file(t, "prodfile")))), ["production", "a file"]),
    ("production-under-a-file", lambda w, t: _night(w, t, lambda d: dict(
        d, production=str(_file(t, "pf") / "prod"))), ["production", "a file"]),
    ("state-db-is-a-directory", lambda w, t: _night(w, t, lambda d: (
        os.makedirs(os.path.join(d["production"], "run", "state.sqlite3")), d)[1]),
     ["state.sqlite3", "directory"]),
    ("camword-bogus", lambda w, t: _night(w, t, lambda d: dict(
        d, inputs=dict(d["inputs"], cameras="a0x7"))), ["inputs.cameras"]),
    ("exposures-not-a-list", lambda w, t: _night(w, t, lambda d: dict(
        d, inputs=dict(d["inputs"], exposures="all"))), ["inputs.exposures"]),
    ("psf-is-a-directory", lambda w, t: _night(w, t, lambda d: dict(
        d, inputs=dict(d["inputs"], psf=str(_dir(t, "psfdir"))))), ["inputs.psf", "directory"]),
    ("fibermap-truncated", lambda w, t: _night(w, t, lambda d: _fibermap_truncated(d, t, w)),
     ["fibermap-00000100.fits", "truncated"]),
]


@pytest.mark.parametrize("name,make,names", MANIFESTS, ids=[m[0] for m in MANIFESTS])
@pytest.mark.slow
def test_hostile_manifests(name, make, names, w, tmp_path):
    path = make(w, tmp_path)
    for argv in ([path, "--check"], [path], [path, "--dry-run"]):
        rc, out, err = W.run_gpuspec(argv, prog="gpuspec-run")
        W.check_error(rc, err, 2, names, prog="gpuspec-run")
    rc, _, err = W.run_gpuspec(["status", path, "--once"])
    assert "Traceback" not in err and rc in (1, 2), err


def test_manifest_not_a_file(w, tmp_path):
    for p in (tmp_path / "missing.yaml", _dir(tmp_path, "m.yaml")):
        rc, _, err = W.run_gpuspec([p, "--check"], prog="gpuspec-run")
        W.check_error(rc, err, 2, [os.path.basename(str(p))], prog="gpuspec-run")


# --------------------------------------------------------------------------- interruptions

def _slow_extract(w, t):
    return ["extract", "-i", w["preproc"]["r0"], "-p", w["psf"]["r0"], "-o", t / "f.fits",
            "-w", "6300,6560,0.1", "--model-ivar"]


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
@pytest.mark.slow
def test_interrupted_command(sig, status, w, tmp_path):
    """Ctrl-C or SIGTERM during an extraction: one line, 130/143, nothing partial."""
    p = subprocess.Popen([sys.executable, "-m", "gpuspec.cli",
                          *map(str, _slow_extract(w, tmp_path))], env=W.env(),
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(6.0)
    assert p.poll() is None, p.communicate()[1]
    os.killpg(p.pid, sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == status, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("gpuspec extract: "), err
    assert not os.path.exists(tmp_path / "f.fits") and not W.leftovers(tmp_path)
