"""`group` on calibrated frames (cframes), as desispec's desi_group_spectra reads them.

Small synthetic frames (gpuspec.calibrate.synthetic), no simulation: the calibrated unit
reaches the spectra and the coadds, frames and cframes are not mixed, and a fiber's
FIBERSTATUS is OR-ed over the cameras of an exposure (desispec ``frames2spectra``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import replace

import numpy as np
import pytest

from gpuspec.calibrate.synthetic import make_exposure, short_waves
from gpuspec.coadd.group import coadd_file, group_frames
from gpuspec.errors import InputError
from gpuspec.io import read_spectra
from gpuspec.io.cframe import CFRAME_IVAR_UNIT, CFRAME_UNIT, write_cframe
from gpuspec.io.frame import write_frame


@pytest.fixture(scope="module")
def exposure():
    waves = short_waves(("b", "r"), ranges={"b": (5000.0, 5200.0), "r": (5800.0, 6000.0)})
    return make_exposure(nfiber=12, bands=("b", "r"), waves=waves, nsky=3, nstd=2, seed=3)


def _write(tmp_path, exposure, calibrated=True, status=None):
    os.makedirs(tmp_path, exist_ok=True)
    out = []
    for cam, fr in exposure.frames.items():
        fm = fr.fibermap.copy()
        if status and cam in status:
            fm["FIBERSTATUS"][status[cam][0]] |= status[cam][1]
        fr = replace(fr, fibermap=fm, meta=dict(fr.meta, TILEID=1000, **{"MJD-OBS": 60000.2}))
        name = ("cframe" if calibrated else "frame") + f"-{cam}-00000100.fits"
        path = str(tmp_path / name)
        (write_cframe if calibrated else write_frame)(path, fr)
        out.append(path)
    return out


def test_cframes_keep_the_calibrated_unit(tmp_path, exposure):
    files = _write(tmp_path, exposure)
    spectra = group_frames(files, str(tmp_path / "hp"))
    assert spectra
    sp = read_spectra(spectra[0])
    assert sp.flux_unit == CFRAME_UNIT
    import fitsio

    assert fitsio.read_header(spectra[0], "B_IVAR")["BUNIT"] == CFRAME_IVAR_UNIT
    out = coadd_file(spectra[0], str(tmp_path / "coadd.fits"), backend="numpy")
    assert read_spectra(out).flux_unit == CFRAME_UNIT
    # frames keep theirs
    frames = _write(tmp_path / "frames", exposure, calibrated=False)
    sp2 = read_spectra(group_frames(frames, str(tmp_path / "hp2"))[0])
    assert sp2.flux_unit == "electron/Angstrom"


def test_frames_and_cframes_are_not_mixed(tmp_path, exposure):
    files = _write(tmp_path, exposure, calibrated=True)[:1] + \
        _write(tmp_path, exposure, calibrated=False)[1:]
    with pytest.raises(InputError, match="flux units"):
        group_frames(files, str(tmp_path / "hp"))
    assert not glob.glob(str(tmp_path / "hp" / "*"))


def test_fiberstatus_is_ored_over_the_cameras(tmp_path, exposure):
    files = _write(tmp_path, exposure, status={"b0": (4, 1 << 3), "r0": (4, 1 << 9)})
    sp = read_spectra(group_frames(files, str(tmp_path / "hp"))[0])
    row = np.flatnonzero(sp.fibermap["FIBER"] == 4)
    assert row.size == 1
    assert int(sp.fibermap["FIBERSTATUS"][row[0]]) == (1 << 3) | (1 << 9)
    assert np.all(sp.fibermap["FIBERSTATUS"][sp.fibermap["FIBER"] != 4] == 0)
    assert set(sp.fibermap["EXPID"]) == {100} and set(sp.fibermap["TILEID"]) == {1000}
    assert os.path.basename(files[0]).startswith("cframe-")
