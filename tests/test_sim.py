"""Simulator: layout, read-back through gpuspec.io, determinism, electronics, truth."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpuspec import cli
from gpuspec.errors import InputError
from gpuspec.maskbits import ccdmask

from conftest import PUBLIC, REF_PSF
from gpuspec.sim.psfs import default_template_path

REF_PSF = default_template_path()  # shipped with the package (same file as shared/)

pytestmark = pytest.mark.skipif(not os.path.exists(REF_PSF),
                                reason=f"template PSF not found: {REF_PSF}")

NIGHT, EXPID = 20250115, 100
SECTION_KEYS = ("PRESEC", "DATASEC", "BIASSEC", "ORSEC", "CCDSEC", "GAIN", "RDNOISE", "SATURLEV")


def _small(outdir, **kw):
    """A fast simulation: 25 fibers of r0 over 6000-6300 Å (1370 x 320 CCD)."""
    from gpuspec.sim import simulate_night

    args = dict(cameras="r0", nspec=25, seed=3, wave_ranges={"r": (6000.0, 6300.0)},
                backend_name="numpy")
    args.update(kw)
    return simulate_night(str(outdir), **args)


def _raw(outdir, camera, expid=EXPID):
    import gpuspec.io as gio

    e = f"{expid:08d}"
    return gio.read_raw(os.path.join(outdir, "raw", str(NIGHT), e, f"desi-{e}.fits.fz"), camera)


@pytest.fixture(scope="module")
def acceptance(tmp_path_factory):
    """`gpuspec simulate --out D --cameras b0,r0,z0 --nspec 50 --seed 1` (the acceptance run)."""
    d = tmp_path_factory.mktemp("sim") / "D"
    rc = cli.main(["simulate", "--out", str(d), "--cameras", "b0,r0,z0", "--nspec", "50",
                   "--seed", "1", "--backend", "numpy"])
    assert rc == 0
    return str(d)


@pytest.mark.slow
def test_acceptance_layout_and_readback(acceptance):
    import gpuspec.io as gio
    from astropy.io import fits
    from gpuspec.io.calib import read_bias, read_dark, read_mask, read_pixflat
    from gpuspec.io.raw import trimmed_shape
    from gpuspec.psf import read_psf

    d = acceptance
    e = f"{EXPID:08d}"
    expected = [f"raw/{NIGHT}/{e}/desi-{e}.fits.fz", f"raw/{NIGHT}/{e}/fibermap-{e}.fits",
                f"truth/truth-{e}.fits", "simulation.json"]
    for cam in ("b0", "r0", "z0"):
        expected += [f"calib/{k}-{cam}.fits" for k in ("bias", "dark", "pixflat", "mask")]
        expected.append(f"psf/psf-{cam}.fits")
    for rel in expected:
        assert os.path.isfile(os.path.join(d, rel)), rel
    # nothing else (no temporary files left behind)
    found = {os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs}
    assert found == set(expected)
    with open(os.path.join(d, "simulation.json")) as fh:
        info = json.load(fh)
    assert set(info["files"]) | {"simulation.json"} == set(expected)
    assert info["cameras"] == ["b0", "r0", "z0"] and info["nspec"] == 50 and info["seed"] == 1

    for cam in ("b0", "r0", "z0"):
        img, hdr, prim = _raw(d, cam)
        assert img.dtype.kind == "i" and img.ndim == 2
        assert 0 <= img.min() and img.max() <= 65535
        for k in SECTION_KEYS:
            for a in "ABCD":
                assert f"{k}{a}" in hdr, f"{k}{a}"
        for k in ("CAMERA", "DETECTOR", "NIGHT", "EXPID", "EXPTIME", "DATE-OBS", "OBSTYPE",
                  "TILEID", "TILERA", "TILEDEC"):
            assert k in hdr, k
        for k in ("NIGHT", "EXPID", "EXPTIME", "DATE-OBS", "OBSTYPE", "TILEID", "TILERA",
                  "TILEDEC", "MJD-OBS"):
            assert k in prim, k
        assert hdr["CAMERA"] == cam and int(hdr["NIGHT"]) == NIGHT and int(prim["EXPID"]) == EXPID
        ny, nx = trimmed_shape(hdr)
        # prescan + data of amps A and C span >= 300 columns (desispec's trail finder)
        assert nx // 2 + info["camera_info"][cam]["npre"] >= 300
        bias, _ = read_bias(os.path.join(d, "calib", f"bias-{cam}.fits"), img.shape)
        dark, _ = read_dark(os.path.join(d, "calib", f"dark-{cam}.fits"), (ny, nx))
        pixflat, _ = read_pixflat(os.path.join(d, "calib", f"pixflat-{cam}.fits"), (ny, nx))
        mask, _ = read_mask(os.path.join(d, "calib", f"mask-{cam}.fits"), (ny, nx))
        assert abs(np.median(bias)) < 1.0           # overscan-subtracted master bias
        assert 0 < np.median(dark) < 0.01           # a rate in e-/s
        assert abs(np.median(pixflat) - 1) < 0.02 and (pixflat == 0).any()
        assert (mask & ccdmask.HOT).any() and (mask & ccdmask.DEAD).any() \
            and (mask & ccdmask.BAD).any()
        psf = read_psf(os.path.join(d, "psf", f"psf-{cam}.fits"))
        assert psf.nspec == 500 and psf.npix_y == 4128
        assert (ny, nx) == tuple(info["camera_info"][cam]["ccd_shape"])
    # every file opens with astropy
    for rel in expected:
        if rel.endswith(".json"):
            continue
        with fits.open(os.path.join(d, rel)) as hdus:
            for h in hdus:
                _ = h.data
    fm = gio.read_fibermap(os.path.join(d, "raw", str(NIGHT), e, f"fibermap-{e}.fits"))
    assert len(fm) == 50 and np.array_equal(fm["FIBER"], np.arange(50))
    assert np.all(fm["FIBERSTATUS"] == 0) and np.all(fm["PETAL_LOC"] == 0)
    assert len(np.unique(fm["TARGETID"])) == 50


@pytest.mark.slow
def test_acceptance_psf_wavelengths(acceptance):
    """r is the template; b and z put their production grids on the rows of r's."""
    from gpuspec.psf import read_psf

    d = acceptance
    ref = read_psf(REF_PSF)
    r = read_psf(os.path.join(d, "psf", "psf-r0.fits"))
    np.testing.assert_allclose(r.y(np.arange(0, 500, 50), [5760.0, 7620.0]),
                               ref.y(np.arange(0, 500, 50), [5760.0, 7620.0]), atol=1e-9)
    for band, (w0, w1) in (("b", (3600.0, 5800.0)), ("z", (7520.0, 9824.0))):
        p = read_psf(os.path.join(d, "psf", f"psf-{band}0.fits"))
        np.testing.assert_allclose(p.y(np.arange(0, 500, 50), [w0, w1]),
                                   ref.y(np.arange(0, 500, 50), [5760.0, 7620.0]), atol=1e-6)
        # spot shapes follow the same map
        _, _, s1 = p.spots([10], [w0 + 100.0])
        _, _, s2 = ref.spots([10], [5760.0 + 100.0 * 1860.0 / (w1 - w0)])
        np.testing.assert_allclose(s1, s2, atol=1e-8)


@pytest.mark.slow
def test_acceptance_fibermap_targets(acceptance):
    import healpy as hp
    import gpuspec.io as gio

    e = f"{EXPID:08d}"
    fm = gio.read_fibermap(os.path.join(acceptance, "raw", str(NIGHT), e, f"fibermap-{e}.fits"))
    objtype = np.char.strip(fm["OBJTYPE"].astype(str))
    sky = objtype == "SKY"
    std = (fm["DESI_TARGET"] & (1 << 33)) != 0
    sci = (fm["DESI_TARGET"] & 0b111) != 0
    assert sky.sum() == 4 and std.sum() == 2 and sci.sum() == 44  # 2 sky + 1 std per bundle
    assert np.all((fm["DESI_TARGET"][sky] & (1 << 32)) != 0)
    assert np.all(objtype[~sky] == "TGT")
    assert np.all(fm["FLUX_R"][std] > fm["FLUX_R"][sci].max())
    pix = hp.ang2pix(64, fm["TARGET_RA"], fm["TARGET_DEC"], lonlat=True, nest=True)
    assert len(np.unique(pix)) >= 3
    sep = np.hypot((fm["TARGET_RA"] - 150.1) * np.cos(np.deg2rad(2.2)), fm["TARGET_DEC"] - 2.2)
    assert sep.max() < 1.6


@pytest.mark.slow
def test_acceptance_truth(acceptance):
    from gpuspec.sim import read_truth

    tr = read_truth(os.path.join(acceptance, "truth", f"truth-{EXPID:08d}.fits"), "z0")
    t = tr["targets"]
    assert len(t) == 50 and tr["phot"].shape == (50, tr["wave"].size)
    assert np.allclose(np.diff(tr["wave"]), 0.8)
    # the grid is aligned with the production grid and covers it
    assert abs(((tr["wave"][0] - 7520.0) / 0.8) - round((tr["wave"][0] - 7520.0) / 0.8)) < 1e-6
    assert tr["wave"][0] < 7520.0 and tr["wave"][-1] > 9824.0 - 100
    sky = np.char.strip(t["TRUETYPE"].astype(str)) == "SKY"
    np.testing.assert_allclose(tr["phot"][sky], tr["skyphot"][sky], rtol=1e-6)
    assert np.all(tr["phot"][~sky].sum(axis=1) > tr["skyphot"][~sky].sum(axis=1))
    assert np.all(tr["phot"] >= 0)


@pytest.mark.slow
def test_determinism_and_seed(tmp_path):
    a = _small(tmp_path / "a")
    b = _small(tmp_path / "b")
    c = _small(tmp_path / "c", seed=4)
    ra, _, _ = _raw(a["outdir"], "r0")
    rb, _, _ = _raw(b["outdir"], "r0")
    rc, _, _ = _raw(c["outdir"], "r0")
    assert np.array_equal(ra, rb)
    assert not np.array_equal(ra, rc)
    assert np.mean(ra != rc) > 0.5
    # every output file is byte-identical (simulation.json differs only in timings)
    for rel in a["files"]:
        with open(os.path.join(a["outdir"], rel), "rb") as f1, \
                open(os.path.join(b["outdir"], rel), "rb") as f2:
            assert f1.read() == f2.read(), rel


@pytest.mark.slow
def test_adding_cameras_and_exposures_changes_nothing_else(tmp_path):
    a = _small(tmp_path / "a")
    b = _small(tmp_path / "b", cameras="r0,z0,b1", nexp=2,
               wave_ranges={"r": (6000.0, 6300.0), "z": (8000.0, 8200.0),
                            "b": (4000.0, 4200.0)})
    ra, ha, _ = _raw(a["outdir"], "r0")
    rb, hb, _ = _raw(b["outdir"], "r0")
    assert np.array_equal(ra, rb)
    assert ha == hb
    r1, _, _ = _raw(b["outdir"], "r0", EXPID + 1)
    assert not np.array_equal(rb, r1)
    import gpuspec.io as gio

    e0, e1 = f"{EXPID:08d}", f"{EXPID + 1:08d}"
    fm0 = gio.read_fibermap(os.path.join(b["outdir"], "raw", str(NIGHT), e0,
                                         f"fibermap-{e0}.fits"))
    fm1, h1 = gio.read_fibermap(os.path.join(b["outdir"], "raw", str(NIGHT), e1,
                                             f"fibermap-{e1}.fits"), header=True)
    # same targets in every exposure; petal 1 fibers are 500..524
    assert np.array_equal(fm0["TARGETID"], fm1["TARGETID"])
    assert np.array_equal(fm0["TARGET_RA"], fm1["TARGET_RA"])
    assert sorted(set(fm0["PETAL_LOC"])) == [0, 1]
    assert np.array_equal(fm0["FIBER"][fm0["PETAL_LOC"] == 1], np.arange(500, 525))
    # like desispec's fibermaps: the exposure is in the header, not in NIGHT/EXPID columns
    assert h1["EXPID"] == EXPID + 1 and "EXPID" not in fm1.dtype.names
    assert len(fm1.dtype.names) == 71


def _reduce(raw, hdr, bias, dark, pixflat, exptime):
    """Independent minimal reduction: per-amp median overscan, master bias, gain, dark, pixflat."""
    from gpuspec.io.raw import trimmed_shape
    from gpuspec.io.util import parse_sec

    out = np.zeros(trimmed_shape(hdr))
    rn = np.zeros_like(out)
    r = raw.astype(np.float64) - bias
    for a in "ABCD":
        d = parse_sec(hdr[f"DATASEC{a}"])
        o = parse_sec(hdr[f"BIASSEC{a}"])
        c = parse_sec(hdr[f"CCDSEC{a}"])
        out[c] = (r[d] - np.median(r[o])) * hdr[f"GAIN{a}"]
        rn[c] = hdr[f"RDNOISE{a}"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (out - dark * exptime) / pixflat, rn


def test_raw_matches_truth_and_calibrations(tmp_path):
    """Reduce the raw file with the calibration files and compare with the truth photons
    rendered through the PSF file: chi has unit variance away from defects and cosmics."""
    import gpuspec.io as gio
    from gpuspec.io.calib import read_bias, read_dark, read_pixflat, read_mask
    from gpuspec.psf import read_psf
    from gpuspec.sim import read_truth, render_spectra

    info = _small(tmp_path / "D")
    d = info["outdir"]
    raw, hdr, prim = _raw(d, "r0")
    cal = {k: f(os.path.join(d, "calib", f"{k}-r0.fits"))[0] for k, f in
           (("bias", read_bias), ("dark", read_dark), ("pixflat", read_pixflat),
            ("mask", read_mask))}
    img, rn = _reduce(raw, hdr, cal["bias"], cal["dark"], cal["pixflat"], prim["EXPTIME"])
    tr = read_truth(os.path.join(d, "truth", f"truth-{EXPID:08d}.fits"), "r0")
    psf = read_psf(os.path.join(d, "psf", "psf-r0.fits"))
    model = render_spectra(psf, np.arange(25), tr["wave"], tr["phot"], img.shape)
    expected_e = model * cal["pixflat"] + cal["dark"] * prim["EXPTIME"]
    var = (expected_e + rn ** 2) / np.maximum(cal["pixflat"], 1e-3) ** 2
    chi = (img - model) / np.sqrt(var)
    good = (cal["mask"] == 0) & (cal["pixflat"] > 0.5)
    cos = tr["cosmics"]
    good[cos["Y"], cos["X"]] = False
    sat = tr["saturated"]
    good[sat["Y"], sat["X"]] = False
    assert good.mean() > 0.99
    assert abs(chi[good].mean()) < 0.02
    assert 0.97 < chi[good].std() < 1.05
    # the light is where the truth says: the model holds most of the flux
    assert model.sum() > 0.5 * tr["phot"].sum()
    # cosmics are bright in the reduced image, saturated pixels are at the ADC limit
    assert np.median(img[cos["Y"], cos["X"]] - model[cos["Y"], cos["X"]]) > 100
    from gpuspec.io.util import parse_sec

    dy, dx = parse_sec(hdr["DATASECD"])
    cy, cx = parse_sec(hdr["CCDSECD"])
    assert np.all(raw[dy.start + sat["Y"] - cy.start, dx.start + sat["X"] - cx.start] == 65535)
    assert float(hdr["SATURLEVD"]) <= 65535


def test_bad_inputs_leave_nothing(tmp_path):
    from gpuspec.sim import simulate_night

    out = tmp_path / "bad"
    with pytest.raises(InputError, match="nspec"):
        simulate_night(str(out), "r0", nspec=30)
    with pytest.raises(InputError, match="camera"):
        simulate_night(str(out), "x0", nspec=25)
    with pytest.raises(InputError, match="wavelength range"):
        simulate_night(str(out), "r0", nspec=25, wave_ranges={"r": (3000.0, 6000.0)})
    with pytest.raises(InputError, match="night"):
        simulate_night(str(out), "r0", nspec=25, night=2025)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    assert cli.main(["simulate", "--out", str(out), "--cameras", "r0", "--nspec", "7"]) == 1


def test_geometry_matches_case_a_reference():
    """The amp layout reproduces the section keywords of shared/reference Case A."""
    from gpuspec.sim.geometry import CCDGeometry

    path = os.path.join(PUBLIC, "caseA_preproc", "raw.fits")
    if not os.path.exists(path):
        pytest.skip(f"reference data not found: {path} (set GPUSPEC_SHARED to the shared "
                    "folder, default ../shared)")
    import fitsio

    ref = fitsio.read_header(path, 1)
    g = CCDGeometry(240, 300, npre=150, nover=32, norow=16)
    assert g.raw_shape == (ref["NAXIS2"], ref["NAXIS1"])
    for k, v in g.header().items():
        assert ref[k].strip() == v, k


@pytest.mark.slow
def test_geometry_full_size():
    from gpuspec.io.util import parse_sec
    from gpuspec.sim.geometry import CCDGeometry

    g = CCDGeometry.for_trimmed(4128, 4114, full_size=True)
    h = g.header()
    assert h["DATASECA"] == "[8:2064,1:2064]" and h["CCDSECD"] == "[2058:4114,2065:4128]"
    cover = np.zeros(g.raw_shape, int)
    for a in "ABCD":
        for k in ("PRESEC", "DATASEC", "BIASSEC", "ORSEC"):
            cover[parse_sec(h[k + a])] += 1
    assert cover.max() == 1  # sections never overlap
    trimmed = np.arange(4128 * 4114, dtype=np.int64).reshape(4128, 4114)
    assert np.array_equal(g.to_trimmed(g.to_raw(trimmed)), trimmed)
    small = CCDGeometry.for_trimmed(400, 200, full_size=False)
    assert small.npre + 100 >= 300


def test_streams_are_keyed():
    from gpuspec.sim.streams import stream

    a = stream(1, "noise", "b0", 5).random(4)
    assert np.array_equal(a, stream(1, "noise", "b0", 5).random(4))
    for other in (stream(2, "noise", "b0", 5), stream(1, "noise", "r0", 5),
                  stream(1, "noise", "b0", 6), stream(1, "cosmics", "b0", 5)):
        assert not np.array_equal(a, other.random(4))


def test_targets_do_not_depend_on_nspec():
    from gpuspec.sim.targets import make_targets

    a = make_targets(1, 3, 50)
    b = make_targets(1, 3, 500)
    assert np.array_equal(a.z, b.z[:50]) and np.array_equal(a.kind, b.kind[:50])
    assert np.array_equal(a.fiber, np.arange(1500, 1550))
    for k in range(0, 500, 25):
        kinds = list(b.kind[k:k + 25])
        assert kinds.count("SKY") == 2 and kinds.count("STD") == 1


@pytest.mark.slow
def test_rendered_image_conserves_truth_photons(tmp_path):
    """The simulator's noiseless image holds the truth photons of every fiber, up to the
    parts of spots that fall outside the (cropped) CCD."""
    from gpuspec.psf import read_psf
    from gpuspec.sim import read_truth, render_spectra
    from gpuspec.sim.camera import setup_camera
    from gpuspec.sim.render import spot_fraction_inside
    from gpuspec.sim.spectra import make_sky
    from gpuspec.sim.targets import make_targets

    info = _small(tmp_path / "D")
    d = info["outdir"]
    tr = read_truth(os.path.join(d, "truth", f"truth-{EXPID:08d}.fits"), "r0")
    psf = read_psf(os.path.join(d, "psf", "psf-r0.fits"))
    shape = tuple(info["camera_info"]["r0"]["ccd_shape"])
    frac = spot_fraction_inside(psf, np.arange(25), tr["wave"], shape)
    # most spots are inside; the crop's top edge cuts some
    assert np.isclose(frac, 1, rtol=0, atol=1e-12).mean() > 0.5 and frac.min() < 1e-3
    # the simulator's own noiseless images, combined as for this exposure
    setup = setup_camera(3, "r0", psf, make_targets(3, 0, 25), make_sky(3), (6000.0, 6300.0),
                         False, 900.0)
    cond = info["conditions"][str(EXPID)]
    model = setup.images["obj"] * cond["transparency"] + setup.images["sky"] * cond["sky_scale"]
    assert model.shape == shape
    assert model.sum() == pytest.approx((tr["phot"] * frac).sum(), rel=1e-10)
    # per fiber: the image of each fiber alone holds its photons
    for f in (0, 7, 24):
        one = render_spectra(psf, [f], tr["wave"], tr["phot"][f:f + 1], shape)
        assert one.sum() == pytest.approx((tr["phot"][f] * frac[f]).sum(), rel=1e-10)
        inside = np.isclose(frac[f], 1, rtol=0, atol=1e-12)
        assert tr["phot"][f, inside].sum() > 0.5 * tr["phot"][f].sum()


def test_cli_options_and_camwords(tmp_path):
    import argparse

    from gpuspec.sim.cameras import parse_cameras
    from gpuspec.sim.cli import _wave_range

    assert parse_cameras("a0") == ["b0", "r0", "z0"]
    assert parse_cameras("z1,b0,r1") == ["b0", "r1", "z1"]
    assert parse_cameras(["r2", "b2"]) == ["b2", "r2"]
    with pytest.raises(InputError):
        parse_cameras("q0")
    assert _wave_range("r:6000:6300") == ("r", (6000.0, 6300.0))
    assert _wave_range("6000:6300") == ("*", (6000.0, 6300.0))
    with pytest.raises(argparse.ArgumentTypeError):
        _wave_range("r:abc:6300")
    d = tmp_path / "D"
    assert cli.main(["simulate", "--out", str(d), "--cameras", "r0", "--nspec", "25",
                     "--seed", "5", "--wave-range", "r:6000:6200", "--night", "20240101",
                     "--expid", "42", "--exptime", "300", "--backend", "numpy"]) == 0
    with open(d / "simulation.json") as fh:
        info = json.load(fh)
    assert info["expids"] == [42] and info["night"] == 20240101 and info["exptime"] == 300.0
    assert info["wave_ranges"] == {"r0": [6000.0, 6200.0, 0.8]}
    raw = d / "raw" / "20240101" / "00000042" / "desi-00000042.fits.fz"
    import gpuspec.io as gio

    img, hdr, prim = gio.read_raw(str(raw), "r0")
    assert prim["EXPTIME"] == 300.0 and hdr["EXPID"] == 42
    assert img.shape == tuple(info["camera_info"]["r0"]["raw_shape"])
