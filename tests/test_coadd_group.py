"""HEALPix grouping, file-level coadds, the CLI and cross-camera coadds on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec.cli import main as cli_main
from gpuspec.coadd import coadd, coadd_cameras, coadd_spectroperf, group_frames
from gpuspec.coadd.group import healpix_pixels
from gpuspec.coadd.synth import SHORT_RANGES, make_spectra, write_frames
from gpuspec.io.spectra import read_spectra
from gpuspec.maskbits import fibermask
from gpuspec.resolution import apply as rapply

TID0 = 39630000000000


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    files, sp, truth = write_frames(str(d), ntarget=12, nexp=3, ranges=SHORT_RANGES, seed=3)
    return files, sp, truth, d


def test_group_healpix(frames, tmp_path):
    files, sp, truth, _ = frames
    out = group_frames(files, tmp_path / "hpx", nside=64)
    pix = np.unique(healpix_pixels(sp.fibermap["TARGET_RA"], sp.fibermap["TARGET_DEC"], 64))
    assert sorted(out) == sorted(str(tmp_path / "hpx" / f"spectra-main-dark-{p}.fits")
                                 for p in pix)
    ntot = 0
    for f in out:
        s = read_spectra(f)
        assert s.bands == ["b", "r", "z"]
        p = int(s.meta["HPXPIXEL"])
        assert np.all(healpix_pixels(s.fibermap["TARGET_RA"], s.fibermap["TARGET_DEC"], 64) == p)
        assert s.meta["HPXNSIDE"] == 64
        ntot += len(s.fibermap)
        # rows carry the frame data of their (exposure, fiber)
        for b in s.bands:
            for i in range(len(s.fibermap)):
                row = np.nonzero((sp.fibermap["EXPID"] == s.fibermap["EXPID"][i]) &
                                 (sp.fibermap["FIBER"] == s.fibermap["FIBER"][i]))[0][0]
                np.testing.assert_allclose(s.flux[b][i], sp.flux[b][row].astype(np.float32))
    assert ntot == len(sp.fibermap)
    one = group_frames(files, tmp_path / "one", nside=64, healpix=[int(pix[0])])
    assert one == [str(tmp_path / "one" / f"spectra-main-dark-{pix[0]}.fits")]


@pytest.mark.slow
def test_cli_group_then_coadd_consistent_with_truth(frames, tmp_path):
    files, sp, truth, _ = frames
    hpx = tmp_path / "hpx"
    assert cli_main(["group", "-i", *files, "-o", str(hpx)]) == 0
    specfiles = sorted(hpx.glob("spectra-*.fits"))
    assert specfiles
    chi2 = {"plain": [], "spectroperf": []}
    for f in specfiles:
        out = tmp_path / f.name.replace("spectra-", "coadd-")
        assert cli_main(["coadd", "-i", str(f), "-o", str(out), "--no-gpu"]) == 0
        c = read_spectra(out)
        t = c.fibermap["TARGETID"] - TID0
        for b in c.bands:
            m = rapply(c.resolution_data[b].astype(float), truth[b][t])
            chi2["plain"].append(((c.flux[b] - m) ** 2 * c.ivar[b]).ravel())
        out2 = tmp_path / f.name.replace("spectra-", "coaddsp-")
        assert cli_main(["coadd", "-i", str(f), "-o", str(out2), "--spectroperf",
                         "--no-gpu"]) == 0
        c2 = read_spectra(out2)
        assert c2.bands == ["brz"]
        t2 = c2.fibermap["TARGETID"] - TID0
        tw = truth["all"][:, np.searchsorted(truth["wave"], c2.wave["brz"])]
        m2 = rapply(c2.resolution_data["brz"].astype(float), tw[t2])
        chi2["spectroperf"].append(((c2.flux["brz"] - m2) ** 2 * c2.ivar["brz"])[:, 10:-10].ravel())
    for k, v in chi2.items():
        x = np.mean(np.concatenate(v))
        assert 0.9 < x < 1.1, (k, x)


def test_cli_lin_step_grid(frames, tmp_path):
    files, sp, truth, _ = frames
    out = group_frames(files[:3], tmp_path / "hpx")   # one exposure, all cameras
    f = out[0]
    o = tmp_path / "lin.fits"
    assert cli_main(["coadd", "-i", f, "-o", str(o), "--spectroperf", "--lin-step", "1.0",
                     "--wave-min", "5100", "--wave-max", "7300", "--no-gpu"]) == 0
    c = read_spectra(o)
    w = c.wave[c.bands[0]]
    np.testing.assert_allclose(w, 5100 + np.arange(w.size) * 1.0)
    assert w[-1] == pytest.approx(7300)
    # bad argument combination
    assert cli_main(["coadd", "-i", f, "-o", str(tmp_path / "x.fits"), "--wave-min", "5100",
                     "--no-gpu"]) == 2  # a bad command line
    assert not (tmp_path / "x.fits").exists()


def _cameras_naive(s):
    """Independent loop implementation of the cross-camera rule for one-row-per-target spectra."""
    waves = np.unique(np.concatenate([s.wave[b] for b in s.bands]))
    nt = s.flux[s.bands[0]].shape[0]
    num = np.zeros((nt, waves.size))
    den = np.zeros((nt, waves.size))
    cnt = np.zeros(waves.size, int)
    only = {}
    for b in s.bands:
        j = np.searchsorted(waves, s.wave[b])
        cnt[j] += 1
        num[:, j] += s.ivar[b] * s.flux[b]
        den[:, j] += s.ivar[b]
        only[b] = j
    flux = np.zeros_like(num)
    for b in s.bands:
        j = only[b]
        single = cnt[j] == 1
        flux[:, j[single]] = s.flux[b][:, single]
    multi = cnt > 1
    flux[:, multi] = num[:, multi] / np.where(den[:, multi] == 0, 1, den[:, multi])
    return waves, flux, den


def test_coadd_cameras_vs_naive():
    sp, truth = make_spectra(ntarget=6, nexp=2, ranges=SHORT_RANGES, seed=5)
    c = coadd(sp, onetile=True, backend="numpy")
    cc = coadd_cameras(c, backend="numpy")
    assert cc.bands == ["brz"]
    w, f, iv = _cameras_naive(c)
    np.testing.assert_allclose(cc.wave["brz"], w)
    np.testing.assert_allclose(cc.flux["brz"], f, rtol=1e-12)
    np.testing.assert_allclose(cc.ivar["brz"], iv, rtol=1e-12)
    # the combined resolution applied to the truth still describes the combined flux
    m = rapply(cc.resolution_data["brz"], truth["all"][:, np.searchsorted(truth["wave"], w)])
    chi2 = np.mean((cc.flux["brz"] - m) ** 2 * cc.ivar["brz"])
    assert 0.8 < chi2 < 1.3
    with pytest.raises(ValueError, match="not aligned"):
        bad = make_spectra(ntarget=2, nexp=1, ranges=SHORT_RANGES)[0]
        bad.wave["r"] = bad.wave["r"] + 0.3
        coadd_cameras(bad, backend="numpy")


def test_spectroperf_coadd_multicamera_vs_truth():
    sp, truth = make_spectra(ntarget=5, nexp=3, ranges=SHORT_RANGES, seed=7)
    c = coadd_spectroperf(sp, backend="numpy")
    w = c.wave["brz"]
    m = rapply(c.resolution_data["brz"], truth["all"][:, np.searchsorted(truth["wave"], w)])
    chi2 = np.mean(((c.flux["brz"] - m) ** 2 * c.ivar["brz"])[:, 10:-10])
    assert 0.9 < chi2 < 1.1
    # rows of R = Q / (Q·1) sum to 1; the stored band keeps 11 diagonals (desispec)
    from gpuspec.resolution import to_dense
    R = to_dense(c.resolution_data["brz"][0])
    np.testing.assert_allclose(R.sum(axis=1)[20:-20], 1.0, atol=2e-3)  # 11 diagonals kept


def test_spectroperf_coadd_masks_and_fiberstatus():
    """Masked pixels and bad-FIBERSTATUS exposures do not enter the spectroperf coadd."""
    sp, truth = make_spectra(ntarget=3, nexp=3, bands=("r",), ranges=SHORT_RANGES, seed=9)
    ref = coadd_spectroperf(sp, backend="numpy")
    sp.flux["r"][0, 100:105] += 1e5
    sp.mask["r"][0, 100:105] = 1
    sp.flux["r"][4] *= 50.0
    sp.fibermap["FIBERSTATUS"][4] = fibermask.BADFIBER
    got = coadd_spectroperf(sp, backend="numpy")
    # target 1 lost an exposure: only its ivar drops; target 0 changed only near the mask
    assert np.all(got.ivar["r"][1] <= ref.ivar["r"][1] * (1 + 1e-9))
    assert np.max(np.abs(got.flux["r"][0] - ref.flux["r"][0]) * np.sqrt(ref.ivar["r"][0])) < 20
    np.testing.assert_allclose(got.flux["r"][2], ref.flux["r"][2], rtol=1e-10)


def test_coadd_file_plain_options(frames, tmp_path):
    files, sp, truth, _ = frames
    f = group_frames(files, tmp_path / "hpx")[0]
    s = read_spectra(f)
    o1 = tmp_path / "cam.fits"
    assert cli_main(["coadd", "-i", f, "-o", str(o1), "--coadd-cameras", "--no-gpu"]) == 0
    c1 = read_spectra(o1)
    assert c1.bands == ["brz"] and c1.exp_fibermap is not None
    assert c1.meta["COADDTYP"] == "plain"
    o2 = tmp_path / "lin.fits"
    assert cli_main(["coadd", "-i", f, "-o", str(o2), "--lin-step", "2.0", "--no-gpu"]) == 0
    c2 = read_spectra(o2)
    assert c2.bands == ["brz"]
    np.testing.assert_allclose(np.diff(c2.wave["brz"]), 2.0)
    assert len(c2.fibermap) == len(np.unique(s.fibermap["TARGETID"]))


def test_group_errors(frames, tmp_path):
    from gpuspec.errors import InputError, MissingFileError
    from gpuspec.io import read_frame, write_frame
    files, sp, truth, _ = frames
    with pytest.raises(MissingFileError):
        group_frames([str(tmp_path / "missing.fits")], tmp_path / "o")
    fr = read_frame(files[0])
    fr.meta.pop("CAMERA")
    bad = write_frame(str(tmp_path / "frame-nocam.fits"), fr)
    with pytest.raises(InputError, match="CAMERA"):
        group_frames([bad], tmp_path / "o")
    fr = read_frame(files[0])
    fr.wave = fr.wave + 0.3
    fr.meta["EXPID"] = 999               # another exposure: the overlap check must not fire
    if "EXPID" in fr.fibermap.dtype.names:
        fr.fibermap["EXPID"] = 999
    shifted = write_frame(str(tmp_path / "frame-shift.fits"), fr)
    with pytest.raises(InputError, match="wavelength grid"):
        group_frames([files[0], shifted], tmp_path / "o2")
    assert not (tmp_path / "o2").exists() or not list((tmp_path / "o2").iterdir())


def test_spectroperf_coadd_target_without_good_exposure():
    sp, truth = make_spectra(ntarget=3, nexp=2, bands=("r",), ranges=SHORT_RANGES, seed=10)
    sp.fibermap["FIBERSTATUS"][[1, 4]] = fibermask.BADFIBER  # both exposures of target 1
    c = coadd_spectroperf(sp, backend="numpy")
    assert np.all(np.isfinite(c.flux["r"])) and np.all(np.isfinite(c.ivar["r"]))
    assert np.all(c.ivar["r"][1] == 0) and np.all(c.flux["r"][1] == 0)
    assert np.all(c.ivar["r"][[0, 2]] > 0)
    assert c.fibermap["COADD_NUMEXP"][1] == 0
