"""Multi-band spectra (desispec ``Spectra``): the input and output of coadds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Spectra"]


@dataclass
class Spectra:
    """Spectra of many fibers/exposures in one or more bands.

    Attributes
    ----------
    bands : list of str
        Band names, lower case (``b``, ``r``, ``z``, ``brz``).
    wave, flux, ivar, mask, resolution_data : dict of band -> ndarray
        ``wave[b]`` is (nwave,); ``flux[b]``, ``ivar[b]``, ``mask[b]`` are
        (nspec, nwave); ``resolution_data[b]`` is (nspec, ndiag, nwave).
        ``mask`` and ``resolution_data`` may be None.
    fibermap : structured ndarray
        One row per spectrum (per target for a coadd).
    exp_fibermap : structured ndarray, optional
        Per-exposure rows of a coadd.
    meta : dict
        Primary header keywords.
    scores : structured ndarray, optional
    extra_hdus : dict of name -> ndarray, optional
        Any other HDU read from the file (e.g. ``TRUTH`` in test inputs).
    flux_unit : str, optional
        BUNIT of the FLUX HDUs (IVAR gets its inverse square); None means
        ``electron/Angstrom``, the unit of extracted (uncalibrated) frames.
    """

    bands: list
    wave: dict
    flux: dict
    ivar: dict
    mask: dict | None = None
    resolution_data: dict | None = None
    fibermap: np.ndarray | None = None
    exp_fibermap: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    scores: np.ndarray | None = None
    extra_hdus: dict = field(default_factory=dict)
    flux_unit: str | None = None

    @property
    def num_spectra(self) -> int:
        """Number of spectra (rows of the first band).

        Backends: numpy, cupy (reads only the shape).
        """
        return self.flux[self.bands[0]].shape[0]

    @property
    def target_ids(self):
        """TARGETID column of the fibermap, or None.

        Backends: host only (NumPy).
        """
        return None if self.fibermap is None else self.fibermap["TARGETID"]
