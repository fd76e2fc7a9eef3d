"""extract_file / merge_frames / ``gpuspec extract`` on a preproc file built from Case B."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpuspec import backend
from gpuspec.image import Image

from conftest import REF_PSF, require_reference


@pytest.fixture(scope="module")
def preproc_caseB(tmp_path_factory):
    """A preproc file covering CCD rows/cols [0, YMAX) x [0, XMAX) with the Case B cut-out
    in place (ivar 0 elsewhere), the masked pixels flagged in MASK, and a fibermap."""
    import fitsio

    from gpuspec import io as gio

    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF} (set GPUSPEC_SHARED to the shared "
                    "folder, default ../shared)")
    d = require_reference("caseB_extract")
    inp = f"{d}/input.fits"
    h = fitsio.read_header(inp, 0)
    x0, x1, y0, y1 = h["XMIN"], h["XMAX"], h["YMIN"], h["YMAX"]
    img = backend.native(fitsio.read(inp, "IMAGE"))
    iv = backend.native(fitsio.read(inp, "IVAR"))
    pm = backend.native(fitsio.read(inp, "PIXMASK"))
    pix = np.zeros((y1, x1))
    ivar = np.zeros((y1, x1))
    mask = np.zeros((y1, x1), np.int32)
    pix[y0:, x0:] = img
    ivar[y0:, x0:] = iv
    mask[y0:, x0:] = np.where(pm != 0, 1, 0)  # ccdmask BAD
    fm = gio.empty_fibermap(500)
    fm["TARGETID"] = np.arange(500) + 1000
    meta = {"CAMERA": "r0", "NIGHT": 20201214, "EXPID": 51060, "EXPTIME": 900.0}
    image = Image(pix=pix, ivar=ivar, mask=mask, readnoise=np.full(pix.shape, 3.0),
                  camera="r0", meta=meta, fibermap=fm)
    tmp = tmp_path_factory.mktemp("extract")
    path = str(tmp / "preproc-r0-00051060.fits")
    gio.write_image(path, image)
    ref = {k: backend.native(fitsio.read(f"{d}/ex2d_masked.fits", k)) for k in
           ("FLUX", "IVAR", "RESOLUTION", "CHI2PIX")}
    wave = backend.native(fitsio.read(inp, "WAVE"))
    return dict(path=path, tmp=tmp, ref=ref, wave=wave)


def _pull(fr, ref, rows):
    ok = (fr.ivar > 0) & (ref["IVAR"][rows] > 0)
    return np.abs(fr.flux - ref["FLUX"][rows])[ok] / np.sqrt(
        1 / fr.ivar[ok] + 1 / ref["IVAR"][rows][ok])


@pytest.mark.slow
def test_extract_file_and_merge(preproc_caseB):
    from gpuspec import io as gio
    from gpuspec.extract import extract_file, merge_frames
    from gpuspec.maskbits import specmask

    p = preproc_caseB
    w = p["wave"]
    out0 = str(p["tmp"] / "frame-b0.fits")
    out1 = str(p["tmp"] / "frame-b1.fits")
    # float32 on disk: compare loosely with specter's float64 run (masked: MASK != 0 -> ivar 0)
    extract_file(p["path"], REF_PSF, out0, (w[0], w[-1], 0.8), bundles=[0], backend="numpy")
    extract_file(p["path"], REF_PSF, out1, (w[0], w[-1], 0.8), specmin=25, nspec=25,
                 backend="numpy")
    f0 = gio.read_frame(out0)
    assert np.allclose(f0.wave, w)
    assert f0.meta["SPECMIN"] == 0 and f0.meta["NSPEC"] == 25
    assert f0.meta["CAMERA"] == "r0" and f0.meta["EXPID"] == 51060
    assert f0.meta["NIGHT"] == 20201214
    assert list(f0.fibermap["TARGETID"]) == list(range(1000, 1025))
    assert np.percentile(_pull(f0, p["ref"], slice(0, 25)), 99) < 0.01
    merged = str(p["tmp"] / "frame.fits")
    merge_frames([out1, out0], merged)
    fr = gio.read_frame(merged)
    assert fr.meta["SPECMIN"] == 0 and fr.meta["NSPEC"] == 50
    assert list(fr.fibermap["TARGETID"]) == list(range(1000, 1050))
    pull = _pull(fr, p["ref"], slice(0, 50))
    assert np.mean(pull < 0.01) > 0.99 and pull.max() < 0.05
    assert np.abs(fr.resolution_data - p["ref"]["RESOLUTION"]).max() < 1e-3
    assert fr.mask.dtype == np.int32
    assert not np.any(fr.mask & specmask.ALLBADPIX)


def test_merge_frames_rejects_gaps(preproc_caseB, tmp_path):
    from gpuspec import io as gio
    from gpuspec.errors import InputError
    from gpuspec.extract import merge_frames
    from gpuspec.frame import Frame

    w = np.linspace(6000, 6010, 11)
    parts = []
    for s in (0, 10):  # fibers 0-4 and 10-14: gap
        f = Frame(wave=w, flux=np.zeros((5, 11)), ivar=np.ones((5, 11)),
                  meta={"SPECMIN": s, "NSPEC": 5})
        path = str(tmp_path / f"p{s}.fits")
        gio.write_frame(path, f)
        parts.append(path)
    with pytest.raises(InputError, match="SPECMIN"):
        merge_frames(parts, str(tmp_path / "out.fits"))
    assert not os.path.exists(tmp_path / "out.fits")


@pytest.mark.slow
def test_cli_extract(preproc_caseB):
    from gpuspec import io as gio
    from gpuspec.cli import main

    p = preproc_caseB
    w = p["wave"]
    out = str(p["tmp"] / "frame-cli.fits")
    model = str(p["tmp"] / "model-cli.fits")
    rc = main(["extract", "-i", p["path"], "-p", REF_PSF, "-o", out,
               "-w", f"{w[0]},{w[-1]},0.8", "--specmin", "25", "--nspec", "25",
               "--model", model, "--no-gpu"])
    assert rc == 0
    fr = gio.read_frame(out)
    assert fr.meta["SPECMIN"] == 25 and fr.nspec == 25
    assert np.percentile(_pull(fr, p["ref"], slice(25, 50)), 99) < 0.01
    import fitsio

    m = fitsio.read(model, "MODEL")
    assert m.shape == (1370, 499) and m.max() > 100


def test_cli_bad_arguments(tmp_path, capsys):
    from gpuspec.cli import main

    with pytest.raises(SystemExit):
        main(["extract", "-o", str(tmp_path / "x.fits"), "-w", "7000,6000,0.8"])
    assert main(["extract", "-o", str(tmp_path / "x.fits")]) == 2  # a bad command line (docs/reliability.md)
    assert "missing required option" in capsys.readouterr().err
    assert main(["extract", "-i", str(tmp_path / "nope.fits"), "-p", REF_PSF,
                 "-o", str(tmp_path / "x.fits"), "-w", "6000,6100,0.8"]) == 1
    assert not os.path.exists(tmp_path / "x.fits")


@pytest.mark.slow
@pytest.mark.parametrize("bundle", [0, 1])
def test_bundle_task_reads_only_its_columns(preproc_caseB, monkeypatch, bundle):
    """A bundle's extract_file reads only the columns its patches reach
    (files.CROP_COLUMNS) and writes the same frame, bit for bit, as from the whole image."""
    import fitsio

    from gpuspec import io as gio
    from gpuspec.extract import extract_file, files

    p = preproc_caseB
    w = p["wave"]
    widths, rn = [], []
    real = gio.read_image

    def spy(path, columns=None, **kw):
        img = real(path, columns=columns, **kw)
        widths.append(img.pix.shape[1])
        rn.append(img.readnoise)
        return img

    monkeypatch.setattr(gio, "read_image", spy)
    out = {}
    for crop in (True, False):
        monkeypatch.setattr(files, "CROP_COLUMNS", crop)
        out[crop] = str(p["tmp"] / f"frame-b{bundle}-crop{crop}.fits")
        extract_file(p["path"], REF_PSF, out[crop], (w[0], w[-1], 0.8), bundles=[bundle],
                     backend="numpy")
    full = fitsio.read_header(p["path"], "IMAGE")["NAXIS1"]
    assert widths[1] == full and widths[0] < 0.75 * full, widths
    assert rn == [None, None]                 # READNOISE is read only for model_ivar
    for ext in ("FLUX", "IVAR", "MASK", "RESOLUTION", "CHI2PIX"):
        a, b = fitsio.read(out[True], ext), fitsio.read(out[False], ext)
        assert np.array_equal(a, b), ext
