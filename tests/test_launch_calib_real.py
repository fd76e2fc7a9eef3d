"""gpuspec-run with the real calibration steps on a simulated night (short grids).

One flat-lamp exposure (EXPID 99) and two science exposures (100, 101) of petal 0
(b0, r0, z0; 25 fibers: 8 sky fibers, 5 standard stars; 200 Å per camera):
preproc → extract → frame → fiberflat → fiberflatnight → sky → stdstars → fluxcalib →
cframe → group → coadd. Checked: the one-process production (calibrated units, the
flat never grouped), the same production under ``mpiexec -n 3`` (every product equal),
under backend cupy on the CuPy emulation (equal within float tolerances), and a
two-night manifest with a PSF and a fiberflat per night (cframes identical to those
made from the nights' own flats).
"""

from __future__ import annotations

import os
import subprocess
import sys

import fitsio
import pytest
import yaml

import test_launch_real as L
from gpuspec.io.cframe import CFRAME_UNIT
from gpuspec.launch.steps import DESI

pytestmark = [pytest.mark.slow]

NIGHT, NIGHT2 = 20250115, 20250116
CALIB = ["fiberflat", "fiberflatnight", "sky", "stdstars", "fluxcalib", "cframe"]
RANGES = {"b": (5000, 5200), "r": (6400, 6600), "z": (7600, 7800)}


def _simulate(d, night=NIGHT, expid=100, nexp=2, seed=1):
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "simulate", "--out", d,
                        "--cameras", "b0,r0,z0", "--nspec", "25", "--nexp", str(nexp),
                        "--flats", "1", "--nsky", "8", "--nstd", "5", "--seed", str(seed),
                        "--night", str(night), "--expid", str(expid), "--backend", "numpy",
                        *[a for b, (lo, hi) in RANGES.items()
                          for a in ("--wave-range", f"{b}:{lo}:{hi}")]],
                       env=L._env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    missing = DESI.unavailable(L.STEPS + CALIB)
    if missing:
        pytest.skip(f"steps not available: {missing}")
    return _simulate(str(tmp_path_factory.mktemp("sim") / "sim"))


def _manifest(simdir, prod, backend="numpy"):
    from gpuspec.launch.demo import make_demo_manifest

    return make_demo_manifest(simdir, prod, backend=backend, bundles=[0], progress_interval=0)


def _run(args, env=None, timeout=900):
    r = subprocess.run(args, env=env or L._env(), capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def serial(sim, tmp_path_factory):
    prod = str(tmp_path_factory.mktemp("serial") / "prod")
    rc, out = _run([sys.executable, "-m", "gpuspec.launch.cli", _manifest(sim, prod)])
    assert rc == 0, out[-4000:]
    return prod


def test_one_flat_two_science_exposures_through_gpuspec_run(sim, serial):
    prod = serial
    files = L._products(prod)
    ex = f"exposures/{NIGHT}"
    for c in ("b0", "r0", "z0"):
        assert f"{ex}/00000099/fiberflat-{c}-00000099.fits" in files
        assert f"calibnight/{NIGHT}/fiberflatnight-{c}-{NIGHT}.fits" in files
        for e in (100, 101):
            for kind in ("sky", "fluxcalib", "cframe"):
                assert f"{ex}/{e:08d}/{kind}-{c}-{e:08d}.fits" in files
        assert f"{ex}/00000099/cframe-{c}-00000099.fits" not in files  # a flat has none
    for e in (100, 101):
        assert f"{ex}/{e:08d}/stdstars-0-{e:08d}.fits" in files
    for f in files:
        if "/cframe-" in f:
            assert fitsio.read_header(os.path.join(prod, f), "FLUX")["BUNIT"] == CFRAME_UNIT
    spectra = [f for f in files if "/spectra-" in f]
    coadds = [f for f in files if "/coadd-" in f]
    assert spectra and len(coadds) == len(spectra)
    for f in spectra:  # grouped from cframes of the science exposures only
        assert fitsio.read_header(os.path.join(prod, f), "B_FLUX")["BUNIT"] == CFRAME_UNIT
        fm = fitsio.read(os.path.join(prod, f), "FIBERMAP")
        assert set(fm["EXPID"].tolist()) == {100, 101}
    for f in coadds:
        assert fitsio.read_header(os.path.join(prod, f), "B_FLUX")["BUNIT"] == CFRAME_UNIT
    # a dry run of the finished production lists the calibration tasks, all done
    rc, out = _run([sys.executable, "-m", "gpuspec.launch.cli",
                    os.path.join(prod, "manifest.yaml"), "--dry-run"])
    assert rc == 0, out
    lines = [ln for ln in out.splitlines() if ln.split()[:1] and "-" in ln.split()[0]]
    for name in ("fiberflat-z0-00000099", f"fiberflatnight-b-{NIGHT}", "sky-r0-00000100",
                 "stdstars-0-00000101", "fluxcalib-b0-00000100", "cframe-z0-00000101"):
        assert any(ln.split()[0] == name and ln.split()[1] == "done" for ln in lines), name
    assert "note: calibrated production" in out
    assert "note: flat exposures (OBSTYPE FLAT, never grouped): 99" in out


@pytest.mark.mpi
def test_mpi_production_with_calibration_equals_one_process(sim, serial, tmp_path):
    prod = str(tmp_path / "mpi")
    rc, out = _run(["mpiexec", "-n", "3", sys.executable, "-m", "gpuspec.launch.cli",
                    _manifest(sim, prod)])
    assert rc == 0, out[-4000:]
    ref = L._products(serial)
    assert L._products(prod) == ref
    assert any("/cframe-" in f for f in ref)
    for rel in ref:
        L._same_fits(os.path.join(serial, rel), os.path.join(prod, rel))


@pytest.mark.emulated
def test_calibration_steps_under_emulated_cupy(sim, serial, tmp_path):
    """backend cupy on the CuPy emulation (GPUSPEC_EMULATE_CUPY=1) vs the numpy production."""
    prod = str(tmp_path / "cupy")
    env = L._env()
    env.pop("GPUSPEC_NO_GPU", None)
    env["GPUSPEC_EMULATE_CUPY"] = "1"
    rc, out = _run([sys.executable, "-m", "gpuspec.launch.cli", _manifest(sim, prod, "cupy")],
                   env=env)
    assert rc == 0, out[-4000:]
    ref = L._products(serial)
    assert L._products(prod) == ref
    L.assert_images_close(serial, prod, ref)


def test_two_nights_with_a_psf_and_a_fiberflat_per_night(sim, serial, tmp_path):
    """Issue 13: "once the calibration steps exist, a fiberflat per night"."""
    sim2 = _simulate(str(tmp_path / "sim2"), night=NIGHT2, expid=200, nexp=1, seed=2)
    prod2 = str(tmp_path / "prod2")  # night 2's own flat -> its fiberflatnight
    rc, out = _run([sys.executable, "-m", "gpuspec.launch.cli", _manifest(sim2, prod2)])
    assert rc == 0, out[-4000:]
    doc = {"production": str(tmp_path / "both"), "backend": "numpy",
           "inputs": {"cameras": "a0", "exposures": [], "nights": {}},
           "steps": {s: {} for s in L.STEPS[:3] + CALIB[2:] + L.STEPS[3:]},
           "run": {"progress_interval": 0.0}}
    doc["steps"]["extract"] = {"bundles": [0], "wavelength": {
        b: [float(lo), float(hi), 0.8] for b, (lo, hi) in RANGES.items()}}
    for night, d, expid, made in ((NIGHT, sim, 100, serial), (NIGHT2, sim2, 200, prod2)):
        raw = os.path.join(d, "raw", str(night), f"{expid:08d}")
        doc["inputs"]["exposures"].append({"night": night, "expid": expid, "raw": os.path.join(
            raw, f"desi-{expid:08d}.fits.fz"), "fibermap": os.path.join(
            raw, f"fibermap-{expid:08d}.fits")})
        doc["inputs"]["nights"][night] = {
            "psf": os.path.join(d, "psf", "psf-{camera}.fits"),
            "fiberflat": os.path.join(made, "calibnight", "{night}",
                                      "fiberflatnight-{camera}-{night}.fits"),
            "calib": {k: os.path.join(d, "calib", f"{k}-{{camera}}.fits")
                      for k in ("bias", "dark", "pixflat", "mask")}}
    path = str(tmp_path / "both.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    rc, out = _run([sys.executable, "-m", "gpuspec.launch.cli", path, "--check"])
    assert rc == 0 and "note: calibrated production" in out, out
    rc, out = _run([sys.executable, "-m", "gpuspec.launch.cli", path])
    assert rc == 0, out[-4000:]
    both = str(tmp_path / "both")
    nights = set()
    for night, expid, made in ((NIGHT, 100, serial), (NIGHT2, 200, prod2)):
        for c in ("b0", "r0", "z0"):
            rel = f"exposures/{night}/{expid:08d}/cframe-{c}-{expid:08d}.fits"
            L._same_fits(os.path.join(made, rel), os.path.join(both, rel))
            assert fitsio.read_header(os.path.join(both, rel), "FLUX")["NIGHT"] == night
    for f in L._products(both):
        if "/coadd-" in f:
            nights |= set(fitsio.read(os.path.join(both, f), "EXP_FIBERMAP")["NIGHT"].tolist())
    assert nights == {NIGHT, NIGHT2}
