"""``gpuspec preproc`` end to end: one camera against the reference, several cameras per call."""

from __future__ import annotations

import os
import shutil

import fitsio
import numpy as np
import pytest

from conftest import require_reference
from gpuspec.cli import main


#: preproc without calibrations, on purpose (the CLI requires it to be said, as desi_preproc)
NOCALIB = ("--nobias", "--nodark", "--nopixflat", "--nomask")


def _ref():
    return require_reference("caseA_preproc")


def test_cli_one_camera_matches_reference(tmp_path):
    from gpuspec.io import read_image

    d = _ref()
    out = str(tmp_path / "preproc-b0.fits")
    rc = main(["preproc", "-i", os.path.join(d, "raw.fits"), "--camera", "B0", "-o", out,
               "--bias", os.path.join(d, "calib_bias.fits"),
               "--dark", os.path.join(d, "calib_dark.fits"),
               "--pixflat", os.path.join(d, "calib_pixflat.fits"),
               "--mask", os.path.join(d, "calib_mask.fits"), "--no-gpu"])
    assert rc == 0
    img = read_image(out)
    ref = os.path.join(d, "preproc_calib_cosmic.fits")
    for name, got in (("IMAGE", img.pix), ("IVAR", img.ivar), ("READNOISE", img.readnoise)):
        r = fitsio.read(ref, name)
        # the file stores float32 (desispec layout)
        np.testing.assert_allclose(got, r, rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.array_equal(img.mask, fitsio.read(ref, "MASK"))
    assert img.camera == "b0"
    assert abs(img.meta["OVERSCNC"] - 1105.7690104166884) < 1e-4
    assert img.meta["DEPVER02"] == "calib_dark.fits" or "calib_dark.fits" in img.meta.values()


def _two_camera_raw(tmp_path):
    from gpuspec.io import write_raw

    d = _ref()
    raw, hdr = fitsio.read(os.path.join(d, "raw.fits"), 1, header=True)
    prim = fitsio.read_header(os.path.join(d, "raw.fits"), 0)
    hdr = {r["name"]: r["value"] for r in hdr.records()
           if r["name"] not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT",
                                "GCOUNT", "EXTNAME")}
    prim = {r["name"]: r["value"] for r in prim.records()
            if r["name"] not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "EXTNAME")}
    fn = str(tmp_path / "desi-00271828.fits")
    write_raw(fn, {"b0": (raw, dict(hdr)), "r0": (raw, dict(hdr, CAMERA="r0"))}, prim)
    return fn


def test_cli_several_cameras_directory_and_calib_dir(tmp_path):
    from gpuspec.io import read_image

    d = _ref()
    rawfn = _two_camera_raw(tmp_path)
    cal = tmp_path / "calib"
    cal.mkdir()
    for cam in ("b0", "r0"):
        for name in ("bias", "dark", "pixflat", "mask"):
            shutil.copy(os.path.join(d, f"calib_{name}.fits"), cal / f"{name}-{cam}.fits")
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc = main(["preproc", "-i", rawfn, "--cameras", "b0,r0", "-o", str(outdir),
               "--calib-dir", str(cal), "--no-gpu"])
    assert rc == 0
    files = sorted(os.listdir(outdir))
    assert files == ["preproc-b0-00271828.fits", "preproc-r0-00271828.fits"]
    b0 = read_image(str(outdir / files[0]))
    r0 = read_image(str(outdir / files[1]))
    assert r0.camera == "r0"
    np.testing.assert_array_equal(b0.pix, r0.pix)   # same pixels, other band gradients
    ref = fitsio.read(os.path.join(d, "preproc_calib_cosmic.fits"), "MASK")
    assert np.array_equal(b0.mask, ref)


def test_cli_camword_and_pattern(tmp_path):
    rawfn = _two_camera_raw(tmp_path)
    pattern = str(tmp_path / "pp" / "{camera}-{expid:08d}.fits")
    # a0 asks for b0, r0 and z0: z0 is not in the file -> exit code 1, the others written
    rc = main(["preproc", "-i", rawfn, "--cameras", "a0", "-o", pattern, "--no-gpu",
               "--nocosmic", *NOCALIB])
    assert rc == 1
    got = sorted(os.listdir(tmp_path / "pp"))
    assert got == ["b0-00271828.fits", "r0-00271828.fits"]
    rc = main(["preproc", "-i", rawfn, "--cameras", "b0r0", "-o", pattern, "--no-gpu",
               "--nocosmic", *NOCALIB])
    assert rc == 0


def test_cli_bad_camera_word(tmp_path, capsys):
    rawfn = _two_camera_raw(tmp_path)
    rc = main(["preproc", "-i", rawfn, "--cameras", "q7", "-o", str(tmp_path), "--no-gpu"])
    assert rc == 2  # a bad option value (docs/reliability.md)
    assert "q7" in capsys.readouterr().err


def test_preproc_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["preproc", "--help"])
    out = capsys.readouterr().out
    for opt in ("--camera", "--cameras", "--bias", "--dark", "--pixflat", "--mask",
                "--nocosmic", "--use-overscan-row", "--no-gpu"):
        assert opt in out


def test_cli_fibermap_petal_rows(tmp_path):
    from gpuspec.io import empty_fibermap, read_image, write_fibermap

    rawfn = _two_camera_raw(tmp_path)
    fm = np.concatenate([empty_fibermap(500, specmin=0, petal=0),
                         empty_fibermap(500, specmin=500, petal=1)])
    fmfn = str(tmp_path / "fibermap-00271828.fits")
    write_fibermap(fmfn, fm)
    out = str(tmp_path / "p.fits")
    rc = main(["preproc", "-i", rawfn, "--camera", "r0", "-o", out, "--fibermap", fmfn,
               "--no-gpu", "--nocosmic", *NOCALIB])
    assert rc == 0
    img = read_image(out)
    assert img.fibermap is not None and len(img.fibermap) == 500
    assert np.all(img.fibermap["PETAL_LOC"] == 0)


@pytest.mark.gpu
def test_cli_cupy_backend_same_file_as_numpy(tmp_path):
    from gpuspec.io import read_image

    d = _ref()
    outs = {}
    for be in ("numpy", "cupy"):
        outs[be] = str(tmp_path / f"{be}.fits")
        rc = main(["preproc", "-i", os.path.join(d, "raw.fits"), "--camera", "b0",
                   "-o", outs[be], "--bias", os.path.join(d, "calib_bias.fits"),
                   "--dark", os.path.join(d, "calib_dark.fits"),
                   "--pixflat", os.path.join(d, "calib_pixflat.fits"),
                   "--mask", os.path.join(d, "calib_mask.fits"), "--backend", be])
        assert rc == 0
    a, b = read_image(outs["numpy"]), read_image(outs["cupy"])
    np.testing.assert_allclose(b.pix, a.pix, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.ivar, a.ivar, rtol=1e-6, atol=1e-12)
    assert np.array_equal(b.mask, a.mask)
