"""Sync / transfer / memory budgets of the CuPy path, per stage, on the CuPy emulation.

The budgets are the table of docs/gpu-readiness.md ("Sync and transfer budgets"); the test
checks that the page states exactly :data:`BUDGETS` and that every stage stays within it.
A budget is a bound per unit of work ("at most 3 per bundle"), never the count measured;
the loops that must not synchronise (chunks of patches, chunks of targets, diagonals) are
exercised at two sizes and the sync count must not change.
"""

from __future__ import annotations

import os

import pytest

from conftest import REF_PSF, REPO

pytestmark = pytest.mark.emulated

MB = 2 ** 20
#: stage -> (scope, syncs, D->H bytes, peak device memory); the doc table renders these
BUDGETS = {
    "preproc": ("one camera (Case A, 4 amplifiers, cosmics on)",
                "at most 12 per amplifier + 24 per camera",
                "at most 4 KiB (scalars only; the image stays on the device)",
                "at most 24 × the image in float64"),
    "extract bundle": ("one bundle (Case B bundle 0, 25 fibers, model image)",
                       "at most 3 per bundle + 7 per frame, whatever the number of chunks",
                       "at most 1.2 × the output arrays",
                       "at most 1.5 × chunk_mb + 64 MB"),
    "extract frame": ("one frame (Case B, 2 bundles)",
                      "at most 3 per bundle + 7 per frame",
                      "at most 1.2 × the output arrays",
                      "at most 1.5 × chunk_mb + 64 MB"),
    "coadd plain": ("one HEALPix pixel (synthetic, brz, 2 exposures)",
                    "at most 6 per band, whatever the number of targets and chunks",
                    "at most 1.1 × the output arrays",
                    "at most 2 × the input arrays"),
    "coadd spectroperf": ("one HEALPix pixel (synthetic, brz, 2 exposures)",
                          "at most 2 per band + 3 per pixel, whatever the number of targets",
                          "at most 1.1 × the output arrays",
                          "at most 1 MB per decorrelation block (until the 4096-block "
                          "batch of decorrelate)"),
}


def doc_rows():
    return [f"| {k} | {v[0]} | {v[1]} | {v[2]} | {v[3]} |" for k, v in BUDGETS.items()]


def test_budget_table_in_docs():
    with open(os.path.join(REPO, "docs", "gpu-readiness.md")) as f:
        text = f.read()
    for row in doc_rows():
        assert row in text, f"docs/gpu-readiness.md does not state the budget row:\n{row}"


def _sites(rec):
    return "\n" + rec.sites()


def _counted(fn):
    from gpuspec.testing.fakecupy import counting

    with counting() as rec:
        out = fn()
    return rec, out


def _frame_bytes(fr):
    return sum(getattr(fr, k).nbytes for k in ("flux", "ivar", "mask", "resolution_data",
                                               "chi2pix", "pixmask_fraction")
               if getattr(fr, k) is not None) + (0 if fr.modelimage is None
                                                 else fr.modelimage.nbytes)


def test_preproc_camera(emulate_cupy):
    import test_preproc_parity as T

    d, raw, hdr, prim, params, cal = T._inputs()
    rec, img = _counted(lambda: T.preproc(raw, hdr, prim, backend="cupy",
                                          **T._kwargs("calib_cosmic")))
    namp = 4
    assert rec["syncs"] <= 12 * namp + 24, _sites(rec)
    assert rec["d2h_bytes"] <= 4096, _sites(rec)
    assert rec["peak_bytes"] <= 24 * raw.size * 8


def _caseB():
    if not os.path.exists(REF_PSF):
        pytest.skip(f"reference PSF not found: {REF_PSF}")
    import test_extract as T

    return T._load_caseB()


@pytest.mark.slow
def test_extract_bundle_no_sync_per_chunk(emulate_cupy, monkeypatch):
    from gpuspec.extract import core as ex_core
    from gpuspec.extract import extract_bundle

    c = _caseB()
    nchunk = []
    real = ex_core._solve_chunk

    def spy(*a, **k):
        nchunk[-1] += 1
        return real(*a, **k)

    monkeypatch.setattr(ex_core, "_solve_chunk", spy)
    counts = {}
    for mb in (16, 2048):
        nchunk.append(0)
        rec, fr = _counted(lambda: extract_bundle(c["IMAGE"], c["IVAR"], c["psf"], c["WAVE"], 0,
                                                  xyrange=c["xyrange"], backend="cupy",
                                                  model=True, chunk_mb=mb))
        counts[mb] = rec["syncs"]
        assert rec["syncs"] <= 3 + 7, _sites(rec)
        assert rec["d2h_bytes"] <= 1.2 * _frame_bytes(fr), _sites(rec)
        assert rec["peak_bytes"] <= 1.5 * mb * MB + 64 * MB
    assert nchunk[0] > 3 * nchunk[1] >= 3, nchunk     # many chunks vs few
    assert counts[16] == counts[2048], counts         # no sync inside the chunk loop


@pytest.mark.slow
def test_extract_frame(emulate_cupy):
    from gpuspec.extract import extract_frame

    c = _caseB()
    rec, fr = _counted(lambda: extract_frame(c["IMAGE"], c["IVAR"], c["psf"], c["WAVE"], 0, 50,
                                             xyrange=c["xyrange"], backend="cupy"))
    nbundle = 2
    assert rec["syncs"] <= 3 * nbundle + 7, _sites(rec)
    assert rec["d2h_bytes"] <= 1.2 * _frame_bytes(fr), _sites(rec)
    assert rec["peak_bytes"] <= 1.5 * 2048 * MB + 64 * MB


def _spectra_bytes(s):
    return sum(s.flux[b].nbytes + s.ivar[b].nbytes + s.mask[b].nbytes
               + s.resolution_data[b].nbytes for b in s.bands)


def test_coadd_plain_no_sync_per_target_or_chunk(emulate_cupy):
    from gpuspec.coadd import coadd
    from gpuspec.coadd.synth import make_spectra

    seen = set()
    for nt, chunk in ((6, 2), (20, 256)):
        sp, _ = make_spectra(ntarget=nt, nexp=2, seed=3)
        rec, out = _counted(lambda: coadd(sp, backend="cupy", chunk=chunk))
        nband = len(sp.bands)
        assert rec["syncs"] <= 6 * nband, _sites(rec)
        assert rec["d2h_bytes"] <= 1.1 * _spectra_bytes(out), _sites(rec)
        assert rec["peak_bytes"] <= 2 * _spectra_bytes(sp)
        seen.add(rec["syncs"])
    assert len(seen) == 1, seen   # independent of the number of targets and of chunks


@pytest.mark.slow
def test_coadd_spectroperf_no_sync_per_target(emulate_cupy):
    from gpuspec.coadd import coadd_spectroperf
    from gpuspec.coadd.decorrelate import block_layout
    from gpuspec.coadd.spectroperf import combined_wave, min_wavebin
    from gpuspec.coadd.synth import SHORT_RANGES, make_spectra

    seen = set()
    for nt in (3, 8):
        sp, _ = make_spectra(ntarget=nt, nexp=2, ranges=SHORT_RANGES, seed=3)
        rec, out = _counted(lambda: coadd_spectroperf(sp, backend="cupy"))
        nband = len(sp.bands)
        wave = combined_wave(sp)
        nblock = nt * block_layout(wave.size, min_wavebin(wave))[1].size
        assert rec["syncs"] <= 2 * nband + 3, _sites(rec)
        assert rec["d2h_bytes"] <= 1.1 * _spectra_bytes(out), _sites(rec)
        assert rec["peak_bytes"] <= 1.0 * MB * nblock, rec["peak_bytes"] / nblock
        seen.add(rec["syncs"])
    assert len(seen) == 1, seen


def measured_table():  # pragma: no cover - used to refresh the "measured" column by hand
    """Print the figures of each stage (run: python tests/test_gpu_budgets.py)."""
    from gpuspec.coadd import coadd, coadd_spectroperf
    from gpuspec.coadd.synth import make_spectra
    from gpuspec.extract import extract_bundle, extract_frame
    import test_preproc_parity as T

    d, raw, hdr, prim, params, cal = T._inputs()
    c = _caseB()
    sp, _ = make_spectra(ntarget=20, nexp=2, seed=3)
    runs = {
        "preproc": lambda: T.preproc(raw, hdr, prim, backend="cupy", **T._kwargs("calib_cosmic")),
        "extract bundle": lambda: extract_bundle(c["IMAGE"], c["IVAR"], c["psf"], c["WAVE"], 0,
                                                 xyrange=c["xyrange"], backend="cupy",
                                                 model=True),
        "extract frame": lambda: extract_frame(c["IMAGE"], c["IVAR"], c["psf"], c["WAVE"], 0, 50,
                                               xyrange=c["xyrange"], backend="cupy"),
        "coadd plain": lambda: coadd(sp, backend="cupy"),
        "coadd spectroperf": lambda: coadd_spectroperf(sp, backend="cupy"),
    }
    for k, fn in runs.items():
        rec, _ = _counted(fn)
        print(f"| {k} | {rec['syncs']} | {rec['d2h_bytes'] / MB:.2f} MB | {rec['uploads']} "
              f"({rec['h2d_bytes'] / MB:.1f} MB) | {rec['peak_bytes'] / MB:.0f} MB |")


if __name__ == "__main__":  # pragma: no cover
    os.environ["GPUSPEC_EMULATE_CUPY"] = "1"
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    measured_table()
