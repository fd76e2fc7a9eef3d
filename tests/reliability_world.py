"""A small reduced night and the tools of the hostile-input campaign (tests/test_reliability_*).

Not a test module. :func:`world` builds, once per test process, a simulated night
(cameras b0, r0, z0; 25 fibers; short wavelength grids), reduces it with
``gpuspec-run`` (preproc, extract, frame, group, coadd) and computes its
calibration products with the calibration CLIs on synthetic frames. The test
modules break copies of these files the way a user would (truncate them, edit a
header, put NaN in them, mix cameras, ...) and check the promises of
docs/reliability.md with :func:`check_error`: the documented exit status, one
line ``PROG: error: ...`` naming the file or option, no traceback, no partial
output, the inputs untouched.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import glob
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile

import fitsio
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WAVE = {"b": [5000.0, 5040.0, 0.8], "r": [6500.0, 6540.0, 0.8], "z": [8500.0, 8540.0, 0.8]}


def env(**extra) -> dict:
    """Environment of a subprocess: this checkout first on the path, numpy, one thread."""
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + HERE + os.pathsep
             + os.environ.get("PYTHONPATH", ""), GPUSPEC_NO_GPU="1", OMP_NUM_THREADS="1")
    e.update(extra)
    return e


@functools.lru_cache(maxsize=1)
def world() -> dict:
    """Build (once per process) and return the paths of the reduced night."""
    from gpuspec.cli import main as gmain
    from gpuspec.launch.demo import make_demo_manifest
    from gpuspec.launch.plan import load_plan
    from gpuspec.launch.runner import run_serial

    root = tempfile.mkdtemp(prefix="gpuspec-reliability-")
    atexit.register(shutil.rmtree, root, True)
    sim = os.path.join(root, "sim")
    with _quiet():
        assert gmain(["simulate", "--out", sim, "--cameras", "b0,r0,z0", "--nspec", "25",
                      "--seed", "3", "--wave-range", "b:4990:5050", "--wave-range",
                      "r:6490:6550", "--wave-range", "z:8490:8550"]) == 0
    prod = os.path.join(root, "prod")
    manifest = make_demo_manifest(sim, prod, bundles=[0], backend="numpy", wavelength=WAVE,
                                  progress_interval=0)
    with _quiet():
        assert run_serial(load_plan(manifest), verbose=False) == 0
    night, expid = 20250115, 100
    d = os.path.join(prod, "exposures", str(night), f"{expid:08d}")
    w = dict(root=root, sim=sim, prod=prod, manifest=manifest, night=night, expid=expid,
             raw=os.path.join(sim, "raw", str(night), f"{expid:08d}", f"desi-{expid:08d}.fits.fz"),
             fibermap=os.path.join(sim, "raw", str(night), f"{expid:08d}",
                                   f"fibermap-{expid:08d}.fits"),
             psf={c: os.path.join(sim, "psf", f"psf-{c}.fits") for c in ("b0", "r0", "z0")},
             calib={k: {c: os.path.join(sim, "calib", f"{k}-{c}.fits") for c in ("b0", "r0", "z0")}
                    for k in ("bias", "dark", "pixflat", "mask")},
             preproc={c: os.path.join(prod, "preproc", str(night), f"{expid:08d}",
                                      f"preproc-{c}-{expid:08d}.fits") for c in ("b0", "r0", "z0")},
             frame={c: os.path.join(d, f"frame-{c}-{expid:08d}.fits") for c in ("b0", "r0", "z0")},
             part={c: os.path.join(d, "bundles", f"frame-{c}-{expid:08d}-b00-00.fits")
                   for c in ("b0", "r0", "z0")},
             spectra=sorted(glob.glob(os.path.join(prod, "healpix", "**", "spectra-*.fits"),
                                      recursive=True)),
             coadd=sorted(glob.glob(os.path.join(prod, "healpix", "**", "coadd-*.fits"),
                                    recursive=True)))
    w["calibration"] = _calibration_chain(os.path.join(root, "calibration"))
    w["digest"] = digest_tree(*INPUT_TREES(w))
    return w


def INPUT_TREES(w) -> list:  # noqa: N802 - a constant-like accessor
    """The folders of the night that no command may ever modify."""
    return [w["sim"], os.path.join(w["prod"], "preproc"), os.path.join(w["prod"], "exposures"),
            os.path.join(w["prod"], "healpix"), os.path.join(w["root"], "calibration")]


def _calibration_chain(d: str) -> dict:
    """Fiberflat, sky, stdstars, fluxcalib, cframe of a synthetic exposure (calibration CLIs)."""
    import calib_data as C
    from gpuspec.cli import main as gmain
    from gpuspec.io.frame import write_frame

    os.makedirs(d, exist_ok=True)
    exp = C.exposure(seed=11)
    out = {}
    with _quiet():
        for cam in exp.frames:
            flat = write_frame(os.path.join(d, f"frame-{cam}-00000099.fits"), exp.flats[cam])
            frame = write_frame(os.path.join(d, f"frame-{cam}-00000100.fits"), exp.frames[cam])
            ff = os.path.join(d, f"fiberflat-{cam}-00000099.fits")
            sky = os.path.join(d, f"sky-{cam}-00000100.fits")
            assert gmain(["compute-fiberflat", "-i", flat, "-o", ff, "--backend", "numpy"]) == 0
            assert gmain(["compute-sky", "-i", frame, "--fiberflat", ff, "-o", sky,
                          "--backend", "numpy"]) == 0
            out[cam] = dict(flat=flat, frame=frame, fiberflat=ff, sky=sky)
        cams = sorted(out)
        std = os.path.join(d, "stdstars-0-00000100.fits")
        assert gmain(["fit-stdstars", "--frames", *[out[c]["frame"] for c in cams],
                      "--skymodels", *[out[c]["sky"] for c in cams], "--fiberflats",
                      *[out[c]["fiberflat"] for c in cams], "-o", std, "--backend",
                      "numpy"]) == 0
        for cam in cams:
            fc = os.path.join(d, f"fluxcalib-{cam}-00000100.fits")
            assert gmain(["compute-fluxcalib", "-i", out[cam]["frame"], "--fiberflat",
                          out[cam]["fiberflat"], "--sky", out[cam]["sky"], "--models", std,
                          "-o", fc, "--backend", "numpy"]) == 0
            out[cam]["fluxcalib"] = fc
    out["stdstars"] = std
    return out


@contextlib.contextmanager
def _quiet():
    import logging

    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


# --------------------------------------------------------------------------- running commands

def run_gpuspec(args, *, prog: str = "gpuspec") -> tuple[int, str, str]:
    """Run ``gpuspec ARGS`` (or ``gpuspec-run``) in this process: (status, stdout, stderr).

    argparse's SystemExit becomes the status; nothing else may escape.
    """
    from gpuspec import cli as gcli
    from gpuspec.launch import cli as rcli

    out, err = io.StringIO(), io.StringIO()
    main = gcli.main if prog == "gpuspec" else rcli.main
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def run_sub(args, *, prog: str = "gpuspec", timeout: float = 300, **kw):
    """Run a command in a subprocess (a crash cannot take the test process down)."""
    mod = "gpuspec.cli" if prog == "gpuspec" else "gpuspec.launch.cli"
    return subprocess.run([sys.executable, "-m", mod, *[str(a) for a in args]],
                          capture_output=True, text=True, timeout=timeout, env=env(), **kw)


def check_error(rc: int, err: str, status: int, names=(), prog: str | None = None) -> str:
    """Assert the promises of an error: status, one ``error:`` line naming ``names``.

    Returns the error line.
    """
    assert "Traceback" not in err, err
    assert rc == status, f"exit status {rc}, expected {status}:\n{err}"
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert lines, f"no error line in:\n{err}"
    assert len(lines) == 1, f"more than one error line:\n{err}"
    line = lines[0]
    assert "internal error" not in line, line
    if prog is not None:
        assert line.startswith(f"{prog}: error: "), line
    for n in names:
        assert str(n) in line, f"{n!r} not named in: {line}"
    return line


@dataclasses.dataclass
class Case:
    """One hostile input: the command a user would type, what must come out.

    ``argv(w, tmp)`` builds the arguments (making the broken files in ``tmp``);
    ``status`` is the documented exit status; ``names(w, tmp)`` the strings the error
    line must contain (file, HDU, keyword or option); ``absent(w, tmp)`` the outputs
    that must not exist afterwards (default: the ``-o`` argument). ``sub`` runs it in a
    subprocess; ``prog`` is ``gpuspec`` or ``gpuspec-run``.
    """

    id: str
    argv: object
    status: int
    names: object = None
    absent: object = None
    prog: str = "gpuspec"
    sub: bool = False

    def __repr__(self):  # pytest ids
        return self.id


def _output_arg(argv):
    for flag in ("-o", "--output", "--outfile", "--outdir"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 < len(argv):
                return str(argv[i + 1])
    return None


def run_case(case: Case, w: dict, tmp) -> str:
    """Run one case and check every promise; returns the error line ('' on success)."""
    argv = [str(a) for a in case.argv(w, tmp)]
    inputs = [a for a in argv if os.path.isfile(a) and a != _output_arg(argv)]
    before = digest_tree(*inputs)
    out = _output_arg(argv)
    existed = out is not None and os.path.exists(out)
    if case.sub:
        r = run_sub(argv, prog=case.prog)
        rc, err = r.returncode, r.stderr
    else:
        rc, _, err = run_gpuspec(argv, prog=case.prog)
    line = ""
    if case.status == 0:
        assert "Traceback" not in err and rc == 0, err
    else:
        names = case.names(w, tmp) if case.names else ()
        line = check_error(rc, err, case.status, names,
                           prog=None if case.prog == "gpuspec" else "gpuspec-run")
        absent = case.absent(w, tmp) if case.absent else ([out] if out and not existed else [])
        for p in absent:
            assert not os.path.exists(str(p)), f"partial output {p} left behind"
        if out and os.path.isdir(os.path.dirname(os.path.abspath(out))):
            assert not leftovers(os.path.dirname(os.path.abspath(out)))
    assert digest_tree(*inputs) == before, "an input file was modified"
    return line


def calibrated_toy(tmp_path, name, crash_tasks=None, registry=None):
    """A toy night with a flat (99) and two science exposures, every calibration step;
    returns (manifest path, production). ``registry="desi"`` for ``--check`` of the
    real steps' options."""
    import fitsio
    import yaml

    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    nights = ((20250101, 99, "FLAT"), (20250101, 100, "SCIENCE"), (20250101, 101, "SCIENCE"))
    root = tmp_path / "in"
    inputs = make_toy_inputs(str(root), nights_expids=tuple((n, e) for n, e, _ in nights),
                             petals=(0,), nfibers=50)
    for n, e, kind in nights:  # the launcher reads OBSTYPE from the raw header
        raw = os.path.join(inputs["rawdir"], str(n), f"{e:08d}", f"desi-{e:08d}.fits.fz")
        fitsio.write(raw, np.zeros((2, 2), np.int16), clobber=True,
                     header=[{"name": "OBSTYPE", "value": kind},
                             {"name": "EXPTIME", "value": 120.0 if kind == "FLAT" else 900.0}])
    doc = yaml.safe_load(toy_manifest_text(inputs, str(tmp_path / name), bundles=(0, 1),
                                           bundles_per_task=1, nbundles=2,
                                           crash_tasks=crash_tasks))
    order = ["preproc", "extract", "frame", "fiberflat", "fiberflatnight", "sky", "stdstars",
             "fluxcalib", "cframe", "group", "coadd"]
    doc["steps"] = {s: doc["steps"].get(s, {}) for s in order}
    if registry:
        doc["registry"] = registry
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path), str(tmp_path / name)


# --------------------------------------------------------------------------- files

def digest_tree(*paths) -> dict:
    """sha256 of every file under the given files/folders (inputs must never change)."""
    out = {}
    for p in paths:
        files = [p] if os.path.isfile(p) else glob.glob(os.path.join(p, "**", "*"),
                                                          recursive=True)
        for f in files:
            if os.path.isfile(f):
                with open(f, "rb") as fh:
                    out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def leftovers(folder) -> list:
    """Temporary files of interrupted writes (``.NAME.*.tmp*``) under ``folder``."""
    return [p for p in glob.glob(os.path.join(str(folder), "**", ".*"), recursive=True)
            if ".tmp" in os.path.basename(p)]


def copy(src, dst_dir, name=None) -> str:
    dst = os.path.join(str(dst_dir), name or os.path.basename(src))
    shutil.copyfile(src, dst)
    return dst


def truncate(src, dst_dir, nbytes=None, name=None) -> str:
    """A copy cut to ``nbytes`` (default: half)."""
    with open(src, "rb") as f:
        data = f.read()
    dst = os.path.join(str(dst_dir), name or "trunc-" + os.path.basename(src))
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2 if nbytes is None else nbytes])
    return dst


def edit_card(src, dst_dir, hdu_name, key, value_text, name=None) -> str:
    """A copy whose header card ``key`` of HDU ``hdu_name`` holds ``value_text`` (raw FITS
    bytes, e.g. ``"'BOGUS'"`` or ``"99"``), edited in place in the bytes (no library
    rewriting: compressed and broken headers stay as they are)."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    at = data.find(f"EXTNAME = '{hdu_name}".encode()) if hdu_name else 0
    assert at >= 0, hdu_name
    start = data.rfind(b"XTENSION", 0, at) if hdu_name else 0
    start = 0 if start < 0 else start
    k = data.find(key.encode().ljust(8) + b"=", start)
    assert k >= 0, key
    card = (key.ljust(8) + "= " + value_text.rjust(20)).ljust(80).encode()[:80]
    data[k:k + 80] = card
    dst = os.path.join(str(dst_dir), name or "edit-" + os.path.basename(src))
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst


def rewrite(src, dst_dir, change, name=None) -> str:
    """A copy rewritten HDU by HDU with fitsio; ``change(extname, data, header) -> (data,
    header)`` (return None to drop the HDU)."""
    dst = os.path.join(str(dst_dir), name or "rw-" + os.path.basename(src))
    with fitsio.FITS(src) as fin, fitsio.FITS(dst, "rw", clobber=True, ignore_empty=True) as fout:
        for i, h in enumerate(fin):
            ext = (h.get_extname() or "").strip()
            data = h.read()
            hdr = h.read_header()
            got = change(ext, data, hdr)
            if got is None:
                continue
            data, hdr = got
            recs = [r for r in hdr.records() if r["name"] not in
                    ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3",
                     "EXTEND", "PCOUNT", "GCOUNT", "TFIELDS", "EXTNAME", "CHECKSUM", "DATASUM")
                    and not r["name"].startswith(("TTYPE", "TFORM", "TDIM", "TUNIT", "ZIMAGE",
                                                  "ZBITPIX", "ZNAXIS", "ZTILE", "ZCMPTYPE",
                                                  "ZNAME", "ZVAL", "ZQUANTIZ", "ZDITHER",
                                                  "ZSIMPLE", "ZEXTEND", "ZTENSION", "ZPCOUNT",
                                                  "ZGCOUNT", "ZHECKSUM", "ZDATASUM"))]
            if data is None:
                fout.write(None, header=recs, extname=ext or None) if i else \
                    fout.write(None, header=recs)
            else:
                fout.write(data, header=recs, extname=ext or None)
    return dst


def readonly_dir(path) -> str | None:
    """A folder this process cannot write to, or None when it cannot be made here.

    Not root: mode 0555. Root ignores modes, so a read-only tmpfs is mounted when
    that is allowed (the caller unmounts it with :func:`release`).
    """
    path = str(path)
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        return path
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", path],
                       capture_output=True)
    return path if r.returncode == 0 else None


def small_disk(path, size="2m") -> str | None:
    """A small tmpfs at ``path`` (a full disk), or None when mounting is not allowed."""
    path = str(path)
    os.makedirs(path, exist_ok=True)
    if shutil.which("mount") is None:
        return None
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True)
    return path if r.returncode == 0 else None


def release(path) -> None:
    """Undo :func:`readonly_dir` / :func:`small_disk`."""
    path = str(path)
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", path], capture_output=True)
    elif os.path.isdir(path):
        os.chmod(path, 0o755)


def fill(path) -> None:
    """Fill the file system of ``path`` (a small tmpfs) to the last byte."""
    for name, chunk in (("filler", 65536), ("filler2", 1)):
        fd = os.open(os.path.join(str(path), name), os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
        finally:
            os.close(fd)


def nan_psf(src, dst_dir, hdu="XTRACE", where=(3, 1), value=np.nan, name=None) -> str:
    """A PSF copy with ``value`` put into an image HDU's coefficients."""
    dst = copy(src, dst_dir, name or f"psf-{hdu.lower()}-{value}.fits")
    with fitsio.FITS(dst, "rw") as fx:
        a = fx[hdu].read()
        a[where] = value
        fx[hdu].write(a)
    return dst
