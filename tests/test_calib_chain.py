"""The calibration chain on simulated raw data, through the CLIs, against the truth.

One flat-lamp exposure and two science exposures of petal 0 (b0, r0, z0; 25 fibers:
8 sky fibers, 5 standard stars, 12 science targets; b 4800-5800, r 5760-6700,
z 7520-8300 Å) go through

    gpuspec simulate --flats 1 -> preproc -> extract --model-ivar -> compute-fiberflat
    -> autocalib-fiberflat -> compute-sky -> fit-stdstars -> compute-fluxcalib
    -> process-exposure (cframes) -> group (cframes) -> coadd

and every product is compared with the simulator's truth (truth/truth-{EXPID}.fits).
Two sky fibers are held out of the sky fit (``--exclude-sky-targetids``) to measure
the sky residuals. The bounds (docs/calibrate.md, "On simulated raw data") are close to
what is achieved; the extraction's five bins at each end of a grid, which absorb the
light from beyond the grid, are left out of the comparisons.
"""

from __future__ import annotations

import copy
import glob
import os

import numpy as np
import pytest

from gpuspec import resolution
from gpuspec.calibrate.files import calib_filename
from gpuspec.cli import main

pytestmark = pytest.mark.slow

NIGHT, FLAT, SCIENCE = 20250115, 99, (100, 101)
CAMS = ("b0", "r0", "z0")
WAVE = {"b": (4800.0, 5800.0), "r": (5760.0, 6700.0), "z": (7520.0, 8300.0)}
EDGE = 5       # extraction edge bins left out of every comparison
NHELD = 2      # sky fibers held out of the sky fit


def _run(args):
    assert main(args) == 0, args


def _reduce_exposure(sim, red, expid):
    raw = os.path.join(sim, "raw", str(NIGHT), f"{expid:08d}", f"desi-{expid:08d}.fits.fz")
    fm = os.path.join(os.path.dirname(raw), f"fibermap-{expid:08d}.fits")
    for cam in CAMS:
        pre = os.path.join(red, f"preproc-{cam}-{expid:08d}.fits")
        _run(["preproc", "-i", raw, "--camera", cam, "--calib-dir", os.path.join(sim, "calib"),
              "--fibermap", fm, "-o", pre, "--no-gpu"])
        lo, hi = WAVE[cam[0]]
        _run(["extract", "-i", pre, "-p", os.path.join(sim, "psf", f"psf-{cam}.fits"), "-o",
              os.path.join(red, calib_filename("frame", cam, expid)), "-w", f"{lo},{hi},0.8",
              "--model-ivar", "--no-gpu"])


def _calibrate_exposure(red, expid, held, path):
    ffn = {c: path("fiberflatnight", c) for c in CAMS}
    for cam in CAMS:
        _run(["compute-sky", "-i", path("frame", cam, expid), "--fiberflat", ffn[cam], "-o",
              path("sky", cam, expid), "--exclude-sky-targetids",
              ",".join(str(t) for t in held)])
    std = os.path.join(red, calib_filename("stdstars", expid=expid, spectrograph=0))
    _run(["fit-stdstars", "--frames", *[path("frame", c, expid) for c in CAMS],
          "--skymodels", *[path("sky", c, expid) for c in CAMS],
          "--fiberflats", *[ffn[c] for c in CAMS], "-o", std])
    for cam in CAMS:
        _run(["compute-fluxcalib", "-i", path("frame", cam, expid), "--fiberflat", ffn[cam],
              "--sky", path("sky", cam, expid), "--models", std, "-o",
              path("fluxcalib", cam, expid)])
        _run(["process-exposure", "-i", path("frame", cam, expid), "--fiberflat", ffn[cam],
              "--sky", path("sky", cam, expid), "--calib", path("fluxcalib", cam, expid),
              "-o", path("cframe", cam, expid)])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from gpuspec.sim import read_truth

    root = tmp_path_factory.mktemp("chain")
    sim, red = str(root / "sim"), str(root / "red")
    os.makedirs(red, exist_ok=True)
    _run(["simulate", "--out", sim, "--cameras", ",".join(CAMS), "--nspec", "25", "--nexp", "2",
          "--flats", "1", "--nsky", "8", "--nstd", "5", "--seed", "11", "--backend", "numpy",
          *[a for b, (lo, hi) in WAVE.items() for a in ("--wave-range", f"{b}:{lo}:{hi}")]])

    def path(kind, cam=None, expid=None):
        return os.path.join(red, calib_filename(kind, cam, expid, night=NIGHT))

    for e in (FLAT,) + SCIENCE:
        _reduce_exposure(sim, red, e)
    for cam in CAMS:
        _run(["compute-fiberflat", "-i", path("frame", cam, FLAT), "-o",
              path("fiberflat", cam, FLAT)])
        _run(["autocalib-fiberflat", "-i", path("fiberflat", cam, FLAT), "--night", str(NIGHT),
              "--arm", cam[0], "--outdir", red])
    truth = {(e, c): read_truth(os.path.join(sim, "truth", f"truth-{e:08d}.fits"), c)
             for e in (FLAT,) + SCIENCE for c in CAMS}
    t = truth[(SCIENCE[0], "b0")]["targets"]
    kind = np.char.strip(t["TRUETYPE"].astype(str))
    held = t["TARGETID"][kind == "SKY"][:NHELD]
    for e in SCIENCE:
        _calibrate_exposure(red, e, held, path)
    hp = os.path.join(red, "healpix")
    cframes = [path("cframe", c, e) for e in SCIENCE for c in CAMS]
    _run(["group", "-i", *cframes, "-o", hp])
    coadds = []
    for sf in sorted(glob.glob(os.path.join(hp, "spectra-*.fits"))):
        out = sf.replace("spectra-", "coadd-")
        _run(["coadd", "-i", sf, "-o", out, "--no-normalize", "--no-gpu"])
        coadds.append((sf, out))
    return dict(sim=sim, red=red, path=path, truth=truth, kind=kind, held=held,
                held_rows=np.flatnonzero(np.isin(t["TARGETID"], held)), coadds=coadds)


def _truth_on(tr, wave, key):
    """A truth array on the frame grid (a subset of the truth grid)."""
    i0 = int(np.argmin(np.abs(tr["wave"] - wave[0])))
    assert np.allclose(tr["wave"][i0:i0 + wave.size], wave, atol=1e-6)
    return tr[key][..., i0:i0 + wave.size]


def _inner(n):
    s = np.ones(n, bool)
    s[:EDGE] = s[-EDGE:] = False
    return s


def test_fiberflat_matches_true_throughput(chain):
    """fiberflat = T_f / median_f T_f, up to a common function of wavelength (the
    normalisation over 25 fibers, which the flux calibration absorbs).

    The nightly (autocalib) flat of one exposure and one petal has the values of the
    exposure's fiberflat and desispec's ivar for it, 5-9 % below the input ivar, hence
    its lower chi2 bound."""
    from gpuspec.io.fiberflat import read_fiberflat

    report = {}
    for cam in CAMS:
        T = _truth_on(chain["truth"][(FLAT, cam)], read_fiberflat(
            chain["path"]("fiberflat", cam, FLAT)).wave, "thru")
        T = T / np.median(T, axis=0)
        for kind, args in (("fiberflat", (cam, FLAT)), ("fiberflatnight", (cam,))):
            ff = read_fiberflat(chain["path"](kind, *args))
            good = (ff.ivar > 0) & _inner(ff.wave.size)[None, :]
            # statistical ivar (desispec adds 0.0035 in quadrature to the error)
            var = np.where(ff.ivar > 0, 1 / np.where(ff.ivar > 0, ff.ivar, 1) - 0.0035 ** 2, 0)
            ivs = np.where(var > 0, 1 / np.where(var > 0, var, 1), 0)
            common = np.median(ff.fiberflat / T, axis=0)
            chi2 = np.mean(((ff.fiberflat / common - T) ** 2 * ivs)[good])
            per_fiber = np.median(ff.fiberflat / T - 1, axis=1)
            report[(cam, kind)] = (chi2, np.abs(per_fiber).max(),
                                   np.std(common[_inner(ff.wave.size)] - 1))
            assert good.mean() > 0.95
            assert (0.9 if kind == "fiberflat" else 0.8) < chi2 < 1.1, (cam, kind, chi2)
            assert np.abs(per_fiber).max() < 0.004, (cam, kind, per_fiber)
            assert np.std(common[_inner(ff.wave.size)] - 1) < 0.006, (cam, kind, report)
    print("fiberflat vs truth (chi2/bin, max |median ratio - 1|, rms common mode):",
          {k: tuple(round(float(x), 4) for x in v) for k, v in report.items()})


def test_sky_residuals_in_held_out_sky_fibers(chain):
    """chi2/bin of the sky-subtracted, calibrated held-out sky fibers (true flux 0)."""
    from gpuspec.io import read_frame
    from gpuspec.io.sky import read_sky

    report = {}
    for cam in CAMS:
        c2 = {"off": [], "on": []}
        for e in SCIENCE:
            cf = read_frame(chain["path"]("cframe", cam, e))
            sky = read_sky(chain["path"]("sky", cam, e)).flux.mean(axis=0)
            line = sky > 3 * np.median(sky)
            rows = chain["held_rows"]
            ok = (cf.ivar[rows] > 0) & _inner(cf.wave.size)[None, :]
            x = cf.flux[rows] ** 2 * cf.ivar[rows]
            c2["off"].append(x[ok & ~line[None, :]])
            c2["on"].append(x[ok & line[None, :]])
        off, on = np.concatenate(c2["off"]), np.concatenate(c2["on"])
        report[cam] = (float(off.mean()), float(on.mean()), on.size)
        assert 0.9 < off.mean() < 1.12, (cam, off.mean())
        assert on.size > 0 and on.mean() < 1.5, (cam, on.mean())
    print("sky residual chi2/bin (off lines, at lines > 3x median, n at lines):", report)


def test_calibrated_fluxes_match_truth(chain):
    """Standard stars and science targets: cframe / (R . true f_lambda), ratio of sums
    over the good bins of each fiber, median over the fibers, per camera and exposure."""
    from gpuspec.io import read_frame
    from gpuspec.io.cframe import CFRAME_UNIT

    kind = chain["kind"]
    groups = {"std": np.flatnonzero(kind == "STD"),
              "science": np.flatnonzero(np.isin(kind, ["ELG", "LRG", "QSO"]))}
    report = {}
    for e in SCIENCE:
        for cam in CAMS:
            cf = read_frame(chain["path"]("cframe", cam, e))
            assert cf.meta["BUNIT"] == CFRAME_UNIT
            model = resolution.apply(cf.resolution_data,
                                     _truth_on(chain["truth"][(e, cam)], cf.wave, "objflux"))
            ok = (cf.ivar > 0) & _inner(cf.wave.size)[None, :]
            for g, rows in groups.items():
                ratio = [np.sum(cf.flux[i][ok[i]]) / np.sum(model[i][ok[i]]) for i in rows]
                report[(e, cam, g)] = float(np.median(ratio) - 1)
    print("calibrated / true flux - 1 (median over fibers):",
          {k: round(v, 4) for k, v in report.items()})
    for (e, cam, g), v in report.items():
        assert abs(v) < (0.005 if g == "std" else 0.02), (e, cam, g, v)


def coadd_chi_vs_truth(pairs, truth_of) -> dict:
    """χ of coadds of science targets against the coadd of R · true f_lambda made with the
    same weights (test_sim_to_coadd's method).

    ``pairs``: (spectra, coadd) objects; ``truth_of(expid, camera)``: the truth of a
    camera of an exposure (:func:`gpuspec.sim.read_truth`). Returns
    ``{band: (chi2/bin, mean chi, number of bins)}``.
    """
    from gpuspec.coadd import coadd

    chis = {b: [] for b in "brz"}
    for sp, co in pairs:
        model = copy.deepcopy(sp)
        for b in sp.bands:
            for i in range(sp.num_spectra):
                tr = truth_of(int(sp.fibermap["EXPID"][i]), f"{b}0")
                f = _truth_on(tr, sp.wave[b], "objflux")[int(sp.fibermap["FIBER"][i]) % 500
                                                         - tr["fibermin"]]
                model.flux[b][i] = resolution.apply(sp.resolution_data[b][i], f)
        expect = coadd(model, no_normalize=True, cosmics_nsig=0, backend="numpy")
        order = [int(np.flatnonzero(expect.fibermap["TARGETID"] == t)[0])
                 for t in co.fibermap["TARGETID"]]
        sci = (np.char.strip(co.fibermap["OBJTYPE"].astype(str)) == "TGT") & \
            ((co.fibermap["DESI_TARGET"] & (1 << 33)) == 0)
        for b in co.bands:
            chi = (co.flux[b] - expect.flux[b][order]) * np.sqrt(co.ivar[b])
            good = (co.ivar[b] > 0) & (co.mask[b] == 0) & sci[:, None] & \
                _inner(co.wave[b].size)[None, :]
            chis[b].append(chi[good])
    report = {}
    for b, c in chis.items():
        c = np.concatenate(c)
        report[b] = (float(np.mean(c ** 2)), float(np.mean(c)), c.size)
    return report


def test_coadd_of_cframes_matches_truth(chain):
    """Coadds of the calibrated spectra of science targets: chi2/bin against the coadd of
    R . true f_lambda made with the same weights (test_sim_to_coadd's method)."""
    from gpuspec.io import read_spectra
    from gpuspec.io.cframe import CFRAME_UNIT

    pairs = []
    for sf, out in chain["coadds"]:
        sp, co = read_spectra(sf), read_spectra(out)
        assert sp.flux_unit == CFRAME_UNIT and co.flux_unit == CFRAME_UNIT
        pairs.append((sp, co))
    report = coadd_chi_vs_truth(pairs, lambda e, cam: chain["truth"][(e, cam)])
    for b, (chi2, mean, n) in report.items():
        assert n > 5000
        assert 0.95 < chi2 < 1.10, (b, report[b])
        assert abs(mean) < 0.05, (b, report[b])
    print("coadd vs truth, science targets (chi2/bin, mean chi, n):", report)


def test_group_keeps_cframe_units_and_fiberstatus(chain):
    """The spectra made from cframes carry the calibrated unit and desispec's fibermap
    (exposure columns from the headers, FIBERSTATUS OR-ed over the cameras)."""
    from gpuspec.io import read_spectra

    sf = chain["coadds"][0][0]
    sp = read_spectra(sf)
    for c in ("NIGHT", "EXPID", "TILEID", "MJD"):
        assert c in sp.fibermap.dtype.names
    assert set(np.unique(sp.fibermap["EXPID"])) <= set(SCIENCE)
    assert np.all(sp.fibermap["TILEID"] == 1000)
    for b in sp.bands:
        assert np.isfinite(sp.flux[b]).all() and sp.ivar[b].min() >= 0


@pytest.mark.interop
def test_desispec_reads_the_chain_products(chain):
    """desispec's readers on the files of this chain give gpuspec's arrays."""
    dio = pytest.importorskip("desispec.io")
    from gpuspec.io import read_frame, read_spectra
    from gpuspec.io.fiberflat import read_fiberflat
    from gpuspec.io.fluxcalib import read_flux_calibration, read_stdstar_models
    from gpuspec.io.sky import read_sky

    p, e = chain["path"], SCIENCE[0]
    for cam in CAMS:
        for f in (p("fiberflat", cam, FLAT), p("fiberflatnight", cam)):
            a, b = dio.read_fiberflat(f), read_fiberflat(f)
            np.testing.assert_array_equal(a.fiberflat, b.fiberflat)
            np.testing.assert_array_equal(a.ivar, b.ivar)
        a, b = dio.read_sky(p("sky", cam, e)), read_sky(p("sky", cam, e))
        np.testing.assert_array_equal(a.flux, b.flux)
        np.testing.assert_array_equal(a.ivar, b.ivar)
        a, b = dio.read_flux_calibration(p("fluxcalib", cam, e)), \
            read_flux_calibration(p("fluxcalib", cam, e))
        np.testing.assert_array_equal(a.calib, b.calib)
        np.testing.assert_array_equal(a.ivar, b.ivar)
        a, b = dio.read_frame(p("cframe", cam, e)), read_frame(p("cframe", cam, e))
        np.testing.assert_array_equal(a.flux, b.flux)
        np.testing.assert_array_equal(a.ivar, b.ivar)
        np.testing.assert_array_equal(a.wave, b.wave)
        assert "erg" in str(a.meta["BUNIT"]) and a.fibermap is not None
    std = os.path.join(chain["red"], calib_filename("stdstars", expid=e, spectrograph=0))
    flux, wave, fibers, meta = dio.read_stdstar_models(std)
    m = read_stdstar_models(std)
    np.testing.assert_array_equal(flux, m.flux)
    np.testing.assert_array_equal(fibers, m.fibers)
    sp = dio.read_spectra(chain["coadds"][0][0])
    mine = read_spectra(chain["coadds"][0][0])
    for b in mine.bands:
        np.testing.assert_array_equal(sp.flux[b], mine.flux[b])
        np.testing.assert_array_equal(sp.ivar[b], mine.ivar[b])
