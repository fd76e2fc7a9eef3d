"""Synthetic calibration data shared by the calibration tests (cached per session).

Not a test module: ``test_calibrate_*.py`` import it. Frames come from
:func:`gpuspec.calibrate.synthetic.make_exposure` (40 fibers: 10 sky, 6 standard stars;
b 5000–5800, r 5760–6600, z 6560–7400 Å at 0.8 Å).
"""

from __future__ import annotations

import copy
import functools
import logging

import numpy as np

from gpuspec.calibrate.synthetic import make_exposure

NFIBER = 40


@functools.lru_cache(maxsize=4)
def exposure(seed: int = 11, defects: bool = False):
    """A synthetic exposure; ``defects`` adds cosmic rays, a dead fiber and masked bins."""
    exp = make_exposure(nfiber=NFIBER, seed=seed)
    if defects:
        rng = np.random.default_rng(seed + 100)
        sky, std = exp.truth["sky_fibers"], exp.truth["std_fibers"]
        for cam in exp.frames:
            for fr, rows in ((exp.flats[cam], np.arange(NFIBER)),
                             (exp.frames[cam], np.concatenate([sky, std]))):
                n = fr.flux.shape[1]
                for _ in range(12):  # cosmic rays: +30 sigma spikes
                    f, k = rng.choice(rows), rng.integers(5, n - 5)
                    fr.flux[f, k] += 30 / np.sqrt(fr.ivar[f, k])
                fr.ivar[7] = 0.0                   # a dead (target) fiber
                fr.mask[3, 200:230] = 1            # masked bins
    return exp


def desi_frame(fr):
    """A desispec Frame with copies of a gpuspec Frame's arrays."""
    import desispec.frame
    from astropy.table import Table

    quiet()
    return desispec.frame.Frame(fr.wave.copy(), np.array(fr.flux, float), np.array(fr.ivar, float),
                                mask=np.array(fr.mask).astype(np.uint32),
                                resolution_data=np.array(fr.resolution_data, float),
                                fibermap=Table(np.asarray(fr.fibermap).copy()),
                                meta=dict(fr.meta))


def quiet():
    from desiutil.log import get_logger

    get_logger().setLevel(logging.WARNING)


def patch_fiber_acceptance(monkeypatch):
    """desispec's fiber-acceptance corrections need desimodel data: use 1 (exact here)."""
    import desispec.fiberfluxcorr as ffc

    monkeypatch.setattr(ffc, "flat_to_psf_flux_correction",
                        lambda fm, seeing=1.1: np.ones(len(fm)))
    monkeypatch.setattr(ffc, "psf_to_fiber_flux_correction",
                        lambda fm, seeing=1.1: np.ones(len(fm)))


def deepcopy(x):
    return copy.deepcopy(x)
