"""Simulator products for the calibration chain: flat-lamp exposures, fiber throughputs,
sky fibers and standard stars, and their truth (docs/simulator.md)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpuspec import cli
from gpuspec.errors import InputError
from gpuspec.sim.psfs import default_template_path

from test_sim import _reduce

pytestmark = pytest.mark.skipif(not os.path.exists(default_template_path()),
                                reason="template PSF not found")

NIGHT, FLAT, EXPID = 20250115, 99, 100


def _sim(outdir, **kw):
    from gpuspec.sim import simulate_night

    args = dict(cameras="r0", nspec=25, seed=3, wave_ranges={"r": (6000.0, 6300.0)},
                backend_name="numpy", nflat=1, nsky=6, nstd=3)
    args.update(kw)
    return simulate_night(str(outdir), **args)


def _paths(d, e):
    raw = os.path.join(d, "raw", str(NIGHT), f"{e:08d}")
    return (os.path.join(raw, f"desi-{e:08d}.fits.fz"), os.path.join(raw, f"fibermap-{e:08d}.fits"),
            os.path.join(d, "truth", f"truth-{e:08d}.fits"))


@pytest.fixture(scope="module")
def flatsim(tmp_path_factory):
    return _sim(tmp_path_factory.mktemp("flatsim") / "D")


def test_flat_exposure_files_and_headers(flatsim):
    import gpuspec.io as gio

    d = flatsim["outdir"]
    assert flatsim["flat_expids"] == [FLAT] and flatsim["expids"] == [EXPID]
    raw, fmf, truth = _paths(d, FLAT)
    for p in (raw, fmf, truth):
        assert os.path.relpath(p, d) in flatsim["files"]
    img, hdr, prim = gio.read_raw(raw, "r0")
    assert prim["OBSTYPE"] == "FLAT" and prim["FLAVOR"] == "flat" and prim["EXPTIME"] == 120.0
    assert hdr["OBSTYPE"] == "FLAT" and hdr["EXPID"] == FLAT and "TILEID" not in prim
    _, _, sprim = gio.read_raw(_paths(d, EXPID)[0], "r0")
    assert sprim["OBSTYPE"] == "SCIENCE" and sprim["DATE-OBS"] > prim["DATE-OBS"]
    with open(os.path.join(d, "simulation.json")) as fh:
        info = json.load(fh)
    assert info["flat_conditions"][str(FLAT)]["lamp_scale"] == pytest.approx(1, abs=0.011)
    assert info["nflat"] == 1 and info["nsky"] == 6 and info["nstd"] == 3
    # calibration fibermap: no targets, the fibers' focal-plane positions of the night
    fm = gio.read_fibermap(fmf)
    sfm = gio.read_fibermap(_paths(d, EXPID)[1])
    assert np.all(fm["TARGETID"] < 0) and set(np.char.strip(fm["OBJTYPE"].astype(str))) == {"NON"}
    assert np.array_equal(fm["FIBER"], sfm["FIBER"])
    np.testing.assert_array_equal(fm["FIBERASSIGN_X"], sfm["FIBERASSIGN_X"])
    assert np.all(fm["FIBERSTATUS"] == 0)


def test_flat_raw_matches_its_truth(flatsim):
    """The reduced flat-lamp raw image is the truth photons (LAMP·DW·THRU) through the PSF,
    with unit-variance noise."""
    import gpuspec.io as gio
    from gpuspec.io.calib import read_bias, read_dark, read_mask, read_pixflat
    from gpuspec.psf import read_psf
    from gpuspec.sim import read_truth, render_spectra

    d = flatsim["outdir"]
    raw, hdr, prim = gio.read_raw(_paths(d, FLAT)[0], "r0")
    cal = {k: f(os.path.join(d, "calib", f"{k}-r0.fits"))[0] for k, f in
           (("bias", read_bias), ("dark", read_dark), ("pixflat", read_pixflat),
            ("mask", read_mask))}
    img, rn = _reduce(raw, hdr, cal["bias"], cal["dark"], cal["pixflat"], prim["EXPTIME"])
    tr = read_truth(_paths(d, FLAT)[2], "r0")
    assert tr["meta"]["OBSTYPE"] == "FLAT" and "calib" not in tr and "skyphot" not in tr
    np.testing.assert_allclose(tr["phot"], tr["lamp"][None, :] * tr["dw"] * tr["thru"],
                               rtol=1e-6)
    assert 1e4 < tr["lamp"].max() < 2.1e4      # electron/Å per fiber of throughput 1
    model = render_spectra(read_psf(os.path.join(d, "psf", "psf-r0.fits")), np.arange(25),
                           tr["wave"], tr["phot"], img.shape)
    var = (model * cal["pixflat"] + cal["dark"] * prim["EXPTIME"] + rn ** 2) / \
        np.maximum(cal["pixflat"], 1e-3) ** 2
    chi = (img - model) / np.sqrt(var)
    good = (cal["mask"] == 0) & (cal["pixflat"] > 0.5)
    good[tr["cosmics"]["Y"], tr["cosmics"]["X"]] = False
    good[tr["saturated"]["Y"], tr["saturated"]["X"]] = False
    lit = good & (model > 100)
    assert lit.sum() > 20000
    assert abs(chi[lit].mean()) < 0.02 and 0.97 < chi[lit].std() < 1.04


def test_science_truth_is_consistent(flatsim):
    """PHOT = (TRANSP·OBJFLUX + SKYFLUX)·CALIB·THRU, the same THRU as the flat's, and
    the fiber throughputs vary by a few % with fiber and wavelength."""
    from gpuspec.sim import read_truth

    d = flatsim["outdir"]
    tr = read_truth(_paths(d, EXPID)[2], "r0")
    fl = read_truth(_paths(d, FLAT)[2], "r0")
    m = tr["meta"]
    expect = (m["TRANSP"] * tr["objflux"] + tr["skyflux"][None, :]) * tr["calib"][None, :] \
        * tr["thru"]
    np.testing.assert_allclose(tr["phot"], expect, rtol=2e-6)
    np.testing.assert_allclose(tr["skyphot"], tr["skyflux"] * tr["calib"] * tr["thru"],
                               rtol=2e-6)
    np.testing.assert_array_equal(tr["thru"], fl["thru"])
    T = tr["thru"]
    assert 0.01 < np.std(T.mean(axis=1)) < 0.06            # fiber to fiber
    assert np.all(np.ptp(T / T.mean(axis=1, keepdims=True), axis=1) < 0.05)  # along λ
    assert np.std(np.ptp(T / T.mean(axis=1, keepdims=True), axis=1)) > 0
    t = tr["targets"]
    kind = np.char.strip(t["TRUETYPE"].astype(str))
    assert np.all(tr["objflux"][kind == "SKY"] == 0)
    assert np.all(tr["objflux"][kind == "STD"] > 0)
    assert np.all(t["TEMPLATEID"][kind == "STD"] >= 0) and np.all(t["TEFF"][kind == "STD"] >= 5750)
    # the sky has [OI] 6300.3 (vacuum 6302.05) and OH lines, the same in every fiber
    k = int(np.argmin(np.abs(tr["wave"] - 6302.05)))
    assert tr["skyflux"][k] > 20 * np.median(tr["skyflux"])


def test_sky_fibers_and_standard_stars_in_the_fibermap(flatsim):
    import gpuspec.io as gio
    from gpuspec.calibrate.fibers import FA_TYPE_STD, is_std_star, sky_fibers
    from gpuspec.sim import read_truth

    d = flatsim["outdir"]
    fm = gio.read_fibermap(_paths(d, EXPID)[1])
    t = read_truth(_paths(d, EXPID)[2])["targets"]
    kind = np.char.strip(t["TRUETYPE"].astype(str))
    assert np.array_equal(sky_fibers(fm), np.flatnonzero(kind == "SKY")) and (kind == "SKY").sum() == 6
    std = is_std_star(fm)
    assert np.array_equal(np.flatnonzero(std), np.flatnonzero(kind == "STD")) and std.sum() == 3
    assert np.all((fm["DESI_TARGET"][std] & (1 << 33)) != 0)
    assert np.all((fm["FA_TYPE"][std] & FA_TYPE_STD) != 0)
    np.testing.assert_allclose(fm["FLUX_R"][std], t["FLUX_R"][std])
    np.testing.assert_allclose(22.5 - 2.5 * np.log10(fm["FLUX_R"][std]), t["MAG_R"][std],
                               atol=1e-5)


def test_flats_leave_the_science_products_unchanged(tmp_path, flatsim):
    """Same arguments without flats: every science file is byte-identical; a second run
    with flats reproduces every file."""
    a = flatsim
    b = _sim(tmp_path / "noflat", nflat=0)
    c = _sim(tmp_path / "again")
    assert b["flat_expids"] == [] and not os.path.exists(_paths(b["outdir"], FLAT)[0])
    for rel in b["files"]:
        with open(os.path.join(a["outdir"], rel), "rb") as f1, \
                open(os.path.join(b["outdir"], rel), "rb") as f2:
            assert f1.read() == f2.read(), rel
    assert set(b["files"]) < set(a["files"]) == set(c["files"])
    for rel in a["files"]:
        with open(os.path.join(a["outdir"], rel), "rb") as f1, \
                open(os.path.join(c["outdir"], rel), "rb") as f2:
            assert f1.read() == f2.read(), rel


def test_default_fiber_classes_and_counts():
    """Default: 2 sky fibers and 1 standard per bundle; asking for those counts gives the
    same classes; other counts are spread over the bundles, other fibers keep their
    targets."""
    from gpuspec.sim.targets import make_targets

    d = make_targets(5, 2, 100)
    assert np.array_equal(d.kind, make_targets(5, 2, 100, nsky=8, nstd=4).kind)
    m = make_targets(5, 2, 100, nsky=30, nstd=9)
    assert (m.kind == "SKY").sum() == 30 and (m.kind == "STD").sum() == 9
    for b in range(4):
        k = list(m.kind[25 * b:25 * (b + 1)])
        assert k.count("SKY") in (7, 8) and k.count("STD") in (2, 3)
    same = (m.kind == d.kind) & np.isin(d.kind, ["ELG", "LRG", "QSO"])
    assert np.array_equal(m.z[same], d.z[same]) and np.array_equal(m.mag_r[same], d.mag_r[same])
    z = make_targets(5, 2, 50, nsky=0, nstd=0)
    assert not np.isin(z.kind, ["SKY", "STD"]).any()
    full = make_targets(5, 2, 25, nsky=20, nstd=5)
    assert (full.kind == "SKY").sum() == 20 and (full.kind == "STD").sum() == 5


def test_bad_calibration_options_leave_nothing(tmp_path):
    from gpuspec.sim import simulate_night

    out = tmp_path / "bad"
    for kw, msg in ((dict(nsky=30), "nsky"), (dict(nstd=-1), "nstd"),
                    (dict(nsky=20, nstd=10), "nsky \\+ nstd"), (dict(nflat=-1), "flat"),
                    (dict(nflat=3, expid0=2), "EXPID")):
        with pytest.raises(InputError, match=msg):
            simulate_night(str(out), "r0", nspec=25, **kw)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    assert cli.main(["simulate", "--out", str(out), "--cameras", "r0", "--nspec", "25",
                     "--nsky", "26"]) == 1


def test_cli_calibration_options(tmp_path):
    d = tmp_path / "D"
    assert cli.main(["simulate", "--out", str(d), "--cameras", "r0", "--nspec", "25",
                     "--seed", "4", "--wave-range", "r:6000:6100", "--flats", "2", "--nsky",
                     "5", "--nstd", "2", "--backend", "numpy"]) == 0
    with open(d / "simulation.json") as fh:
        info = json.load(fh)
    assert info["flat_expids"] == [98, 99] and info["expids"] == [100]
    assert (info["nsky"], info["nstd"], info["flat_exptime"]) == (5, 2, 120.0)
    assert os.path.exists(_paths(str(d), 98)[0]) and os.path.exists(_paths(str(d), 99)[2])


@pytest.mark.interop
def test_desi_preproc_reads_the_flat_raw_like_gpuspec(flatsim, tmp_path):
    """desispec's desi_preproc runs unchanged on the simulated flat-lamp raw file and
    agrees with gpuspec preproc (the tolerances of test_interop_desispec)."""
    pytest.importorskip("desispec", reason="needs the real desispec")
    os.environ.setdefault("DESI_LOGLEVEL", "WARNING")
    import fitsio
    from desispec.scripts import preproc as desi_preproc
    from gpuspec.preproc import preproc_file

    d = flatsim["outdir"]
    raw, fmf, _ = _paths(d, FLAT)
    cal = {k: os.path.join(d, "calib", f"{k}-r0.fits") for k in ("bias", "dark", "pixflat",
                                                                 "mask")}
    ref = str(tmp_path / "desi-preproc-r0.fits")
    desi_preproc.main(desi_preproc.parse(
        ["-i", raw, "--cameras", "r0", "--fibermap", fmf, "--no-ccd-calib-filename",
         "--noregionmask", "--no-cte-correction", "-o", ref]
        + [a for k, v in cal.items() for a in (f"--{k}", v)]))
    got = str(tmp_path / "preproc-r0.fits")
    preproc_file(raw, "r0", got, fibermap=fmf, backend="numpy", **cal)
    assert fitsio.read_header(ref, "IMAGE")["OBSTYPE"] == "FLAT"
    for name in ("IMAGE", "IVAR"):
        a = fitsio.read(got, name).astype(np.float64)
        r = fitsio.read(ref, name).astype(np.float64)
        diff = np.abs(a - r)
        assert not ((diff > 1e-4) & (diff > 1e-6 * np.abs(r))).any(), name
    assert np.array_equal(fitsio.read(got, "MASK").astype(np.int32),
                          fitsio.read(ref, "MASK").astype(np.int32))
