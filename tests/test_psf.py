"""Gauss–Hermite PSF against specter's evaluations of the real r0 PSF (psf_eval.fits)."""

import os

import fitsio
import numpy as np
import pytest

from conftest import require_reference
from gpuspec import backend
from gpuspec.errors import InputError, MissingFileError, MissingHDUError
from gpuspec.psf import GaussHermitePSF, read_psf, write_psf

TRACE_TOL = 1e-6   # pixels (issue acceptance)
SPOT_TOL = 1e-10   # absolute, per pixel


@pytest.fixture(scope="module")
def psf_eval():
    path = require_reference("caseB_extract", "psf_eval.fits")
    wave = fitsio.read(require_reference("caseB_extract", "input.fits"), "WAVE")
    with fitsio.FITS(path) as fx:
        return {"wave": backend.native(wave),
                "XTRACE": fx["XTRACE"].read(), "YTRACE": fx["YTRACE"].read(),
                "WDISP": fx["WDISP"].read(), "SPOTS": fx["SPOTS"].read(),
                "SPOTINFO": fx["SPOTINFO"].read()}


@pytest.fixture(scope="module")
def psf():
    from conftest import REF_PSF
    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF} (set GPUSPEC_SHARED to the shared "
                    "folder, default ../shared)")
    return read_psf(REF_PSF)


def test_header_values(psf):
    assert psf.nspec == 500
    assert (psf.npix_y, psf.npix_x) == (4128, 4114)
    assert (psf.hsizey, psf.hsizex) == (5, 8)
    assert psf.psferr is None  # the file has PSFERROR, not PSFERR
    assert psf.wmin == 5543.0 and psf.wmax == 7826.0


def test_traces_match_specter(psf, psf_eval, xp):
    nspec = psf_eval["XTRACE"].shape[0]
    fib = np.arange(nspec)
    x = backend.to_host(psf.x(fib, psf_eval["wave"], xp=xp))
    y = backend.to_host(psf.y(fib, psf_eval["wave"], xp=xp))
    assert np.abs(x - psf_eval["XTRACE"]).max() < TRACE_TOL
    assert np.abs(y - psf_eval["YTRACE"]).max() < TRACE_TOL


def test_spots_match_specter(psf, psf_eval):
    for k, row in enumerate(psf_eval["SPOTINFO"]):
        xs, ys, pix = psf.xypix(int(row["FIBER"]), float(row["WAVE"]))
        assert (xs.start, xs.stop, ys.start, ys.stop) == (
            row["XMIN"], row["XMAX"], row["YMIN"], row["YMAX"])
        assert pix.shape == (row["NY"], row["NX"])
        ref = psf_eval["SPOTS"][k][: row["NY"], : row["NX"]]
        assert np.abs(pix - ref).max() < SPOT_TOL


def test_batched_spots_equal_single_and_backends(psf, psf_eval, xp):
    info = psf_eval["SPOTINFO"]
    fibers = np.unique(info["FIBER"])
    waves = np.unique(info["WAVE"])
    xc, yc, st = psf.spots(fibers, waves, xp=xp)
    xc, yc, st = backend.to_host(xc), backend.to_host(yc), backend.to_host(st)
    assert st.shape == (len(fibers), len(waves), 11, 17)
    np.testing.assert_allclose(st.sum(axis=(2, 3)), 1.0, rtol=1e-12)
    assert st.min() >= 0
    for row, k in zip(info, range(len(info))):
        i = int(np.searchsorted(fibers, row["FIBER"]))
        j = int(np.searchsorted(waves, row["WAVE"]))
        assert (xc[i, j], yc[i, j]) == (row["XMIN"], row["YMIN"])
        assert np.abs(st[i, j] - psf_eval["SPOTS"][k]).max() < SPOT_TOL


def test_per_fiber_wavelengths(psf):
    w = np.array([[6000.0, 6100.0], [6050.0, 6150.0]])
    xc, yc, st = psf.spots([3, 4], w)
    for i, f in enumerate([3, 4]):
        for j in range(2):
            _, _, one = psf.spots([f], [w[i, j]])
            np.testing.assert_array_equal(one[0, 0], st[i, j])


def test_wdisp(psf, psf_eval):
    wd = psf.wdisp(np.arange(psf_eval["WDISP"].shape[0]), psf_eval["wave"][::25])
    # specter differentiates numerically; ours is the analytic derivative
    np.testing.assert_allclose(wd, psf_eval["WDISP"], rtol=1e-5)


def test_xyrange_matches_reference_cutout(psf, psf_eval):
    hdr = fitsio.read_header(require_reference("caseB_extract", "input.fits"), 0)
    wave = psf_eval["wave"]
    got = psf.xyrange((hdr["SPECMIN"], hdr["SPECMIN"] + hdr["NSPEC"]), (wave[0] - 10, wave[-1] + 10))
    assert got == (hdr["XMIN"], hdr["XMAX"], hdr["YMIN"], hdr["YMAX"])


def test_wavelength_inverts_y(psf, xp):
    fib = np.array([0, 10, 499])
    wave = np.linspace(5600, 7800, 50)
    y = psf.y(fib, wave, xp=xp)
    w = backend.to_host(psf.wavelength(fib, y, xp=xp))
    assert np.abs(w - wave[None, :]).max() < 1e-6


def test_xypix_truncated_at_edge(psf):
    xs, ys, pix = psf.xypix(0, 6000.0, xmin=150)
    full = psf.xypix(0, 6000.0)
    assert xs.start == 0 and pix.shape[1] < full[2].shape[1]
    xs, ys, pix = psf.xypix(0, 6000.0, xmin=4000)
    assert pix.size == 0


def test_write_read_roundtrip(psf, tmp_path):
    out = tmp_path / "psf-r0.fits"
    write_psf(out, psf)
    back = read_psf(out)
    np.testing.assert_array_equal(back.xcoeff, psf.xcoeff)
    xc, yc, st = psf.spots([5, 6], [6000.0, 7000.0])
    xc2, yc2, st2 = back.spots([5, 6], [6000.0, 7000.0])
    np.testing.assert_array_equal(st, st2)
    from astropy.io import fits
    with fits.open(out) as hd:
        assert [h.name for h in hd] == ["XTRACE", "YTRACE", "PSF"]
        assert hd["PSF"].header["PSFVER"] == "3"


def test_remap_wavelength(psf, tmp_path):
    b = psf.remap_wavelength(3600.0, 5800.0)
    assert (b.wmin, b.wmax) == (3600.0, 5800.0)
    # the same pixel positions at the mapped wavelengths
    lam_r = np.array([5600.0, 6500.0, 7700.0])
    lam_b = 3600.0 + (lam_r - psf.wmin) * (2200.0 / (psf.wmax - psf.wmin))
    np.testing.assert_allclose(b.y([7], lam_b), psf.y([7], lam_r), atol=1e-9)
    np.testing.assert_allclose(b.spots([7], lam_b)[2], psf.spots([7], lam_r)[2], atol=1e-12)
    write_psf(tmp_path / "b.fits", b)
    assert read_psf(tmp_path / "b.fits").wmin == 3600.0


def test_psfver2_layout(psf, tmp_path):
    """PSFVER 2 keeps X and Y as rows of the PSF table."""
    names = ["X", "Y"] + list(psf.params)
    ndeg = max(7, max(v.shape[1] for v in psf.params.values()))
    coeff = np.zeros((len(names), psf.nspec, ndeg))
    coeff[0, :, :7] = psf.xcoeff
    coeff[1, :, :7] = psf.ycoeff
    for k, n in enumerate(names[2:], start=2):
        coeff[k, :, : psf.params[n].shape[1]] = psf.params[n]
    t = np.zeros(len(names), dtype=[("PARAM", "S8"), ("WAVEMIN", "f8"), ("WAVEMAX", "f8"),
                                    ("COEFF", "f8", (psf.nspec, ndeg))])
    t["PARAM"] = names
    t["COEFF"] = coeff
    t["WAVEMIN"][:2], t["WAVEMAX"][:2] = psf.trace_wmin, psf.trace_wmax
    hdr = {k: psf.meta[k] for k in ("NPIX_X", "NPIX_Y", "HSIZEX", "HSIZEY", "GHDEGX", "GHDEGY",
                                    "WAVEMIN", "WAVEMAX", "FIBERMIN", "FIBERMAX")}
    hdr.update(PSFTYPE="GAUSS-HERMITE", PSFVER="2")
    fn = str(tmp_path / "v2.fits")
    fitsio.write(fn, t, extname="PSF", header=hdr)
    v2 = read_psf(fn)
    np.testing.assert_allclose(v2.spots([3], [6200.0])[2], psf.spots([3], [6200.0])[2], atol=1e-13)


def test_bad_psf_files(tmp_path):
    with pytest.raises(MissingFileError, match="nope.fits"):
        read_psf(tmp_path / "nope.fits")
    fn = tmp_path / "notpsf.fits"
    fitsio.write(str(fn), np.zeros((3, 3)), extname="IMAGE")
    with pytest.raises(MissingHDUError, match="PSF"):
        read_psf(fn)
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    with pytest.raises(InputError, match="trunc.fits"):
        read_psf(trunc)


def _with_tail(psf):
    """The r0 PSF with a PSF tail (specex's TAIL* parameters, constant along λ)."""
    import copy

    new = copy.copy(psf)
    deg = psf.params["GHSIGX"].shape[1]
    vals = {"TAILAMP": 0.03, "TAILCORE": 2.0, "TAILXSCA": 1.1, "TAILYSCA": 0.9,
            "TAILINDE": 1.6}
    new.params = dict(psf.params)
    for k, v in vals.items():
        c = np.zeros((psf.nspec, deg))
        c[:, 0] = v
        c[:, 1] = 0.1 * v      # varies along λ
        new.params[k] = c
    new._has_tail = True
    new._dev_cache = {}
    return new


@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("clip", [True, False])
def test_numba_spots_match_array_form(psf, psf_eval, tail, clip):
    """The CPU extraction's Numba spots (gpuspec.psf.spots_cpu) against the array form,
    over more wavelengths than one kernel block, and against specter's spots."""
    pytest.importorskip("numba")
    from gpuspec.psf import spots_cpu

    p = _with_tail(psf) if tail else psf
    fibers = np.array([0, 7, 24, 250, 499])
    wave = np.linspace(p.wmin - 5.0, p.wmax + 5.0, spots_cpu.BLOCK + 37)
    xc, yc, st = spots_cpu.spots(p, fibers, wave, clip=clip)
    xr, yr, sr = p.spots(fibers, wave, xp=np, clip=clip)
    np.testing.assert_array_equal(xc, xr)
    np.testing.assert_array_equal(yc, yr)
    assert st.shape == sr.shape
    # libm's erf against SciPy's, and the order of the sums: rounding only
    assert np.abs(st - sr).max() < 1e-15
    if tail:
        assert np.abs(st - psf.spots(fibers, wave, xp=np, clip=clip)[2]).max() > 1e-4
    if not tail and clip:
        info = psf_eval["SPOTINFO"]
        f0, w0 = np.unique(info["FIBER"]), np.unique(info["WAVE"])
        xc, yc, st = spots_cpu.spots(psf, f0, w0)
        for k, row in enumerate(info):
            i = int(np.searchsorted(f0, row["FIBER"]))
            j = int(np.searchsorted(w0, row["WAVE"]))
            assert (xc[i, j], yc[i, j]) == (row["XMIN"], row["YMIN"])
            assert np.abs(st[i, j] - psf_eval["SPOTS"][k]).max() < SPOT_TOL


def test_tail_spots_on_every_backend(psf, xp):
    """The PSF tail (spot_terms' ``tail``, added in ``spots``) on each backend equals the
    host evaluation, and is the formula at a pixel centre."""
    p = _with_tail(psf)
    fibers = np.array([2, 300])
    wave = np.array([5700.0, 6500.0, 7700.0])
    xc, yc, st = p.spots(fibers, wave, xp=xp, clip=False)
    _, _, ref = p.spots(fibers, wave, xp=np, clip=False)
    assert np.abs(backend.to_host(st) - ref).max() < 1e-15
    # one pixel by hand: core (no tail) + TAILAMP·r²/(TAILCORE² + r²)^(1 + TAILINDE/2)
    t = p.spot_terms(fibers, wave, np)
    f, k, y, x = 1, 2, 3, 12
    amp, core, xs, ys, ind = t["tail"][f, k]
    dx = (t["xc"][f, k] + x - t["X"][f, k]) / xs
    dy = (t["yc"][f, k] + y - t["Y"][f, k]) / ys
    r2 = dx ** 2 + dy ** 2
    _, _, notail = psf.spots(fibers, wave, xp=np, clip=False)
    expect = notail[f, k, y, x] + amp * r2 / (core ** 2 + r2) ** (1 + ind / 2)
    assert abs(ref[f, k, y, x] - expect) < 1e-15
