"""gpuspec-run with the real gpuspec steps on a simulated night (short wavelength grids).

One process vs ``mpiexec -n 3`` with one extraction made to fail on purpose: the
failed task and exactly its dependents fail, and every product of the MPI run
equals the one-process product (all HDUs, data compared exactly).
"""

from __future__ import annotations

import glob
import os
import sqlite3
import subprocess
import sys

import fitsio
import numpy as np
import pytest

from gpuspec.launch.db import db_path
from gpuspec.launch.steps import DESI

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["preproc", "extract", "frame", "group", "coadd"]
WAVE = {"b": [5000.0, 5040.0, 0.8], "r": [6500.0, 6540.0, 0.8], "z": [8500.0, 8540.0, 0.8]}

pytestmark = [pytest.mark.slow]


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                GPUSPEC_NO_GPU="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")


@pytest.fixture(scope="module")
def simdir(tmp_path_factory):
    missing = DESI.unavailable(STEPS)
    if missing:
        pytest.skip(f"steps not available: {missing}")
    d = str(tmp_path_factory.mktemp("sim") / "sim")
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "simulate", "--out", d,
                        "--backend", "numpy"], env=_env(), capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        pytest.skip(f"gpuspec simulate failed: {r.stderr[-500:]}")
    return d


def _manifest(simdir, prod, fail=()):
    from gpuspec.launch.demo import make_demo_manifest

    path = make_demo_manifest(simdir, prod, backend="numpy", bundles=[0, 1], steps=STEPS,
                              wavelength=WAVE, progress_interval=0)
    if fail:
        text = open(path).read().replace("run: {progress_interval: 0.0}",
                                         f"run: {{progress_interval: 0.0, fail_tasks: {list(fail)}}}")
        assert "fail_tasks" in text
        with open(path, "w") as f:
            f.write(text)
    return path


def _products(prod):
    return sorted(os.path.relpath(p, prod) for p in glob.glob(os.path.join(prod, "**", "*.fits"),
                                                               recursive=True))


def assert_images_close(ref, other, rels):
    """The image HDUs of products ``rels`` of two productions agree: floats to rtol 1e-5
    (atol 1e-6 of the image's scale), integer images on 99.99 % of the pixels (a GPU and
    a CPU production, where reductions sum in another order)."""
    for rel in rels:
        with fitsio.FITS(os.path.join(ref, rel)) as fa, \
                fitsio.FITS(os.path.join(other, rel)) as fb:
            for ha, hb in zip(fa, fb):
                if not ha.has_data() or ha.get_exttype() != "IMAGE_HDU":
                    continue
                da, db = ha.read(), hb.read()
                if da.dtype.kind == "f":
                    scale = np.nanmax(np.abs(da)) or 1.0
                    np.testing.assert_allclose(db, da, rtol=1e-5, atol=max(1e-6 * scale, 1e-12),
                                               err_msg=f"{rel} {ha.get_extname()}")
                else:
                    assert np.mean(da == db) >= 0.9999, (rel, ha.get_extname())


def _same_fits(a, b):
    with fitsio.FITS(a) as fa, fitsio.FITS(b) as fb:
        assert len(fa) == len(fb)
        for ha, hb in zip(fa, fb):
            assert ha.get_extname() == hb.get_extname()
            if ha.has_data():
                da, db_ = ha.read(), hb.read()
                if da.dtype.names:
                    for c in da.dtype.names:
                        assert np.array_equal(da[c], db_[c]), (a, ha.get_extname(), c)
                else:
                    assert np.array_equal(da, db_, equal_nan=True), (a, ha.get_extname())


@pytest.mark.mpi
def test_real_steps_mpi_failure_equals_serial(simdir, tmp_path):
    ref = str(tmp_path / "serial")
    r = subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", _manifest(simdir, ref)],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ref_files = _products(ref)
    assert any(f.startswith("healpix") and "/coadd-" in f for f in ref_files), ref_files

    fail = "extract-r0-00000100-b01-01"
    prod = str(tmp_path / "mpi")
    r = subprocess.run(["mpiexec", "-n", "3", sys.executable, "-m", "gpuspec.launch.cli",
                        _manifest(simdir, prod, fail=[fail])],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    con = sqlite3.connect(db_path(prod))
    states = dict(con.execute("SELECT name, state FROM tasks"))
    con.close()
    failed = {n for n, s in states.items() if s == "failed"}
    # r0 feeds every pixel of this one-petal night: its frame, all groups and coadds fail
    groups = {n for n in states if n.startswith(("group-", "coadd-"))}
    assert failed == {fail, "frame-r0-00000100"} | groups
    assert all(s == "done" for n, s in states.items() if n not in failed)
    got = _products(prod)
    assert set(got) < set(ref_files)
    for rel in got:
        _same_fits(os.path.join(ref, rel), os.path.join(prod, rel))


def test_real_steps_allow_missing_records_the_missing_frame(simdir, tmp_path):
    """Coadd what is available: r0 fails, the pixels are grouped from b0 and z0."""
    from gpuspec.io.spectra import read_spectra

    fail = "extract-r0-00000100-b01-01"
    prod = str(tmp_path / "partial")
    path = _manifest(simdir, prod, fail=[fail])
    text = open(path).read().replace(
        "  group: {nside: 64}", "  group: {nside: 64, allow_missing: true, survey: sv1, program: bright}")
    assert "allow_missing: true" in text
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", path], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr  # the failed extraction and r0's frame
    assert "with warnings" in r.stdout
    con = sqlite3.connect(db_path(prod))
    rows = con.execute("SELECT name, state, warning FROM tasks").fetchall()
    con.close()
    failed = {n for n, s, _ in rows if s == "failed"}
    assert failed == {fail, "frame-r0-00000100"}
    groups = [(n, w) for n, s, w in rows if n.startswith("group-")]
    assert groups and all(w and "frame-r0-00000100" in w for _, w in groups)
    for spec in glob.glob(os.path.join(prod, "healpix", "**", "spectra-*.fits"), recursive=True):
        h = fitsio.read_header(spec, 0)
        assert h["NMISSING"] == 1 and h["MISSFRMS"] == "frame-r0-00000100"
        # names and headers agree (desispec findfile layout)
        sv, pg, px = h["SURVEY"], h["PROGRAM"], h["HPXPIXEL"]
        assert (sv, pg) == ("sv1", "bright")
        assert spec == os.path.join(prod, "healpix", sv, pg, str(px // 100), str(px),
                                    f"spectra-{sv}-{pg}-{px}.fits")
        assert read_spectra(spec).bands == ["b", "z"]
        co = spec.replace("spectra-", "coadd-")
        assert fitsio.read_header(co, 0)["NMISSING"] == 1  # carried into the coadd
