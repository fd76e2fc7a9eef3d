"""The preprocessed CCD image (output of preproc, input of extraction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Image"]


@dataclass
class Image:
    """A preprocessed camera image.

    Attributes
    ----------
    pix : ndarray (ny, nx)
        Image in electrons per pixel (float32 on disk, float64 in memory).
    ivar : ndarray (ny, nx)
        Inverse variance, electrons⁻².
    mask : ndarray (ny, nx) of int
        ``gpuspec.maskbits.ccdmask`` bits; 0 is good.
    readnoise : ndarray (ny, nx)
        Per-pixel read noise in electrons.
    camera : str
        Camera name, lower case (``b0`` … ``z9``).
    meta : dict
        Header keywords (CAMERA, NIGHT, EXPID, EXPTIME, GAIN*, OVERSCN*, OBSRDN*, ...).
    fibermap : structured ndarray, optional
        Fibermap propagated to the frame.

    Arrays may be numpy or cupy; I/O functions convert to numpy.
    """

    pix: Any
    ivar: Any
    mask: Any
    readnoise: Any = None
    camera: str | None = None
    meta: dict = field(default_factory=dict)
    fibermap: np.ndarray | None = None

    @property
    def shape(self):
        """Shape ``(ny, nx)`` of the pixel array.

        Backends: numpy, cupy (reads only the shape).
        """
        return self.pix.shape
