"""The simulator's truth seen through a product's resolution: what a QA plot overlays.

A product of simulated data is recognised by the simulation folder it came from
(``gpuspec simulate --out D`` writes ``D/simulation.json`` and
``D/truth/truth-{EXPID:08d}.fits``, see docs/simulator.md). :func:`find_simdir`
takes it from the user (``--truth D``) or looks for it in the folders above the
product (``D`` itself or ``D/sim``, the demo's layout).

The truth of one fiber of one exposure and camera is ``PHOT / DW`` on the truth
grid (photo-electrons per Å, object and sky, before pixflat); an extraction on
an aligned grid measures ``R · PHOT / DW`` (docs/simulator.md), so the model of
a frame or spectra row is that row's resolution matrix applied to it.
Host (NumPy) arrays.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["find_simdir", "TruthCache"]


def _is_simdir(d: str) -> bool:
    return os.path.isfile(os.path.join(d, "simulation.json")) and \
        os.path.isdir(os.path.join(d, "truth"))


def find_simdir(product: str, hint: str | None = None, levels: int = 8) -> str | None:
    """The simulation folder of ``product``, or None for data that is not simulated.

    Parameters
    ----------
    product : str
        Path of the product file.
    hint : str, optional
        A simulation folder (or its ``truth`` folder, or a truth file) given by
        the user; used when it is one.
    levels : int
        How many parent folders to search (``P`` and ``P/sim`` at each level).

    Backends: host only (file I/O).
    """
    if hint:
        h = os.path.abspath(hint)
        for d in (h, os.path.dirname(h), os.path.dirname(os.path.dirname(h))):
            if _is_simdir(d):
                return d
        return None
    d = os.path.dirname(os.path.abspath(product))
    for _ in range(levels):
        for cand in (d, os.path.join(d, "sim")):
            if _is_simdir(cand):
                return cand
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return None


class TruthCache:
    """Truth spectra of a simulation folder, read once per (exposure, camera).

    Parameters
    ----------
    simdir : str
        Folder written by ``gpuspec simulate``.
    """

    def __init__(self, simdir: str):
        self.simdir = simdir
        with open(os.path.join(simdir, "simulation.json"), encoding="utf-8") as f:
            self.info = json.load(f)
        self._cache: dict = {}

    def truth(self, expid: int, camera: str) -> dict | None:
        """:func:`gpuspec.sim.read_truth` of one exposure and camera, or None if absent.

        Backends: host only (NumPy; file I/O).
        """
        key = (int(expid), camera.lower())
        if key not in self._cache:
            from ..sim.truth import read_truth

            path = os.path.join(self.simdir, "truth", f"truth-{int(expid):08d}.fits")
            try:
                self._cache[key] = read_truth(path, camera) if os.path.exists(path) else None
            except Exception:  # camera not simulated in this exposure
                self._cache[key] = None
        return self._cache[key]

    def photons_per_angstrom(self, expid: int, camera: str, fiber: int, wave):
        """True photo-electrons per Å of ``fiber`` on the grid ``wave``, or None.

        ``wave`` must be a run of the truth's bin centres (the extraction grids of
        the simulated data are); any other grid gives None.

        Backends: host only (NumPy).
        """
        t = self.truth(expid, camera)
        if t is None:
            return None
        row = int(fiber) % 500 - t["fibermin"]
        if not 0 <= row < t["phot"].shape[0]:
            return None
        wave = np.asarray(wave, dtype=np.float64)
        tw, dw = t["wave"], t["dw"]
        i0 = int(round((wave[0] - tw[0]) / dw))
        n = wave.size
        if i0 < 0 or i0 + n > tw.size or not np.allclose(tw[i0:i0 + n], wave, atol=1e-3 * dw):
            return None
        return t["phot"][row, i0:i0 + n] / dw

    def model(self, expid: int, camera: str, fiber: int, wave, rdata):
        """``R · PHOT / DW`` of one fiber (the expected extracted flux, e⁻/Å), or None.

        The ``ndiag // 2`` bins at each end are NaN: their resolution rows reach
        outside the grid, where the product holds no truth.

        Backends: host only (NumPy).
        """
        from .. import resolution

        tr = self.photons_per_angstrom(expid, camera, fiber, wave)
        if tr is None:
            return None
        if rdata is None:
            return tr
        rdata = np.asarray(rdata, dtype=np.float64)
        out = np.asarray(resolution.apply(rdata, tr), dtype=np.float64)
        h = rdata.shape[0] // 2
        if h:
            out[:h] = out[-h:] = np.nan
        return out

    def calib_per_angstrom(self, expid: int, camera: str, wave):
        """The simulated calibration (e⁻/Å per 1e-17 erg/s/cm²/Å, throughput of fiber 1,
        transparency applied) interpolated on ``wave``, or None.

        Backends: host only (NumPy).
        """
        t = self.truth(expid, camera)
        if t is None:
            return None
        transp = float(t["meta"].get("TRANSP", 1.0))
        return np.interp(np.asarray(wave, dtype=np.float64), t["wave"],
                         t["calib"] / t["dw"] * transp)
