"""The extracted frame: one camera's spectra with resolution matrices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Frame"]


@dataclass
class Frame:
    """Extracted spectra of one camera and exposure (desispec ``Frame`` semantics).

    Attributes
    ----------
    wave : ndarray (nwave,)
        Wavelength grid, Å (vacuum).
    flux, ivar : ndarray (nspec, nwave)
        Flux in electron/Å and its inverse variance.
    mask : ndarray (nspec, nwave) int32
        ``specmask`` bits.
    resolution_data : ndarray (nspec, ndiag, nwave)
        Resolution band in scipy ``dia_matrix.data`` order (offsets +h … −h);
        see :mod:`gpuspec.resolution`.
    chi2pix : ndarray (nspec, nwave), optional
    fibermap : structured ndarray, optional
    meta : dict
        CAMERA, NIGHT, EXPID, SPECMIN, NSPEC, BUNIT, ...
    pixmask_fraction : ndarray (nspec, nwave), optional
    modelimage : ndarray, optional
    scores : structured ndarray (nspec,), optional
        SCORES table (desispec frame scores); computed on writing when None.
    """

    wave: Any
    flux: Any
    ivar: Any
    mask: Any = None
    resolution_data: Any = None
    chi2pix: Any = None
    fibermap: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    pixmask_fraction: Any = None
    modelimage: Any = None
    scores: np.ndarray | None = None

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

    @property
    def specmin(self) -> int:
        """First fiber (header SPECMIN, 0 when absent).

        Backends: host only (plain values).
        """
        return int(self.meta.get("SPECMIN", 0))
