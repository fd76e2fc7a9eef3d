"""Calibration products in memory: fiber flat, sky model, flux calibration, star models.

Same attributes and meaning as desispec's ``FiberFlat``, ``SkyModel`` and
``FluxCalib``; arrays may be NumPy or CuPy (the writers copy them to the host).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FiberFlat", "SkyModel", "FluxCalib", "StdStarModels"]


@dataclass
class FiberFlat:
    """Fiber flat of one camera (desispec ``FiberFlat``).

    Attributes
    ----------
    wave : (nwave,) Å
    fiberflat, ivar : (nspec, nwave)
        Flat to divide a frame by, and its inverse variance.
    mask : (nspec, nwave) uint32 ``specmask`` bits (BADFIBERFLAT)
    meanspec : (nwave,)
        Deconvolved mean lamp spectrum, electron/Å.
    chi2pdf : float, optional
    meta : dict
        Header (CAMERA, NIGHT, EXPID, ...).
    fibermap : structured ndarray, optional
    """

    wave: Any
    fiberflat: Any
    ivar: Any
    mask: Any
    meanspec: Any
    chi2pdf: float | None = None
    meta: dict = field(default_factory=dict)
    fibermap: np.ndarray | None = None

    @property
    def nspec(self) -> int:
        """Number of fibers.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.fiberflat.shape[0]

    @property
    def nwave(self) -> int:
        """Number of wavelength bins.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.fiberflat.shape[1]


@dataclass
class SkyModel:
    """Sky model of one frame (desispec ``SkyModel``).

    Attributes
    ----------
    wave : (nwave,)
    flux, ivar : (nspec, nwave)
        Sky to subtract from each fiber (convolved with its resolution), and ivar.
    mask : (nspec, nwave) uint32
    stat_ivar : (nspec, nwave), optional
        Statistical ivar (before the extra model variance).
    throughput_corrections : (nspec,), optional
        Per-fiber multiplicative corrections fitted on the sky lines (THRPUTCORR).
    throughput_corrections_model : (nspec,), optional (THRPUTCORR_MOD)
    skytargetid : (nsky,), optional
        TARGETIDs of the sky fibers used.
    nrej : int
    meta : dict
    """

    wave: Any
    flux: Any
    ivar: Any
    mask: Any
    stat_ivar: Any = None
    throughput_corrections: Any = None
    throughput_corrections_model: Any = None
    skytargetid: Any = None
    nrej: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def nspec(self) -> int:
        """Number of fibers.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.flux.shape[0]

    @property
    def nwave(self) -> int:
        """Number of wavelength bins.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.flux.shape[1]


@dataclass
class FluxCalib:
    """Flux calibration of one frame (desispec ``FluxCalib``).

    ``calib`` converts a flat-fielded, sky-subtracted frame (electron/Å) to
    10⁻¹⁷ erg/s/cm²/Å: ``cframe = frame / calib``.

    Attributes
    ----------
    wave : (nwave,)
    calib, ivar : (nspec, nwave)
        Calibration per fiber (convolved with each fiber's resolution) and ivar.
    mask : (nspec, nwave) uint32
    meancalib : (nwave,), optional
        Calibration convolved with the mean resolution.
    fibercorr : structured ndarray (nspec,), optional
        FLAT_TO_PSF_FLUX and PSF_TO_FIBER_FLUX columns.
    fibercorr_comments : dict, optional
    stdstar_fibermap : structured ndarray, optional
        Fibermap rows of the standard stars used.
    meta : dict
    """

    wave: Any
    calib: Any
    ivar: Any
    mask: Any
    meancalib: Any = None
    fibercorr: np.ndarray | None = None
    fibercorr_comments: dict | None = None
    stdstar_fibermap: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nspec(self) -> int:
        """Number of fibers.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.calib.shape[0]

    @property
    def nwave(self) -> int:
        """Number of wavelength bins.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.calib.shape[1]


@dataclass
class StdStarModels:
    """Best-fit, normalised standard-star models of one spectrograph and exposure.

    desispec ``stdstars-{SPECTROGRAPH}-{EXPID}.fits`` content.

    Attributes
    ----------
    wave : (nwave,) Å, the template grid
    flux : (nstar, nwave) 10⁻¹⁷ erg/s/cm²/Å
    fibers : (nstar,) int FIBER
    metadata : structured ndarray (nstar,)
        TARGETID, FIBER, LOGG, TEFF, FEH, CHI2DOF, REDSHIFT, DATA_G-R, MODEL_G-R,
        BLUE_SNR, RED_SNR, NIR_SNR.
    coeff : (nstar, ntemplate), optional
        Template weights (one-hot for the best template).
    fibermap : structured ndarray, optional
    input_frames : structured ndarray, optional
        NIGHT, EXPID, CAMERA of the frames used.
    meta : dict
    """

    wave: Any
    flux: Any
    fibers: Any
    metadata: np.ndarray
    coeff: Any = None
    fibermap: np.ndarray | None = None
    input_frames: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
