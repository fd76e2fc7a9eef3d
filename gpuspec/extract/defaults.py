"""The extraction settings of specter's ``ex2d`` / desispec's ``desi_extract_spectra``.

One home for the defaults used by :func:`gpuspec.extract.extract_frame`,
:func:`~gpuspec.extract.extract_file`, :func:`~gpuspec.extract.plan_bundle`, the
``gpuspec extract`` command and the launcher's extraction step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ExtractionSettings", "SPECTER", "DEFAULT_PSFERR"]

#: Fractional PSF model error of the chi2pix denominator when the PSF file has none
#: (specter's default).
DEFAULT_PSFERR = 0.01


@dataclass(frozen=True)
class ExtractionSettings:
    """Patch layout and regularisation of a spectroperfectionism extraction.

    Attributes
    ----------
    bundlesize : int
        Fibers per bundle, counted from ``specmin`` (25 for DESI).
    nsubbundles : int
        Subbundles per bundle; each is solved with one neighbouring fiber on each side.
    nwavestep : int
        Core wavelength bins per patch (specter's ``wavesize``).
    wavepad_frac : float
        Extra wavelength padding beyond the pixel box, as a fraction of the spot height.
    pixpad_frac : float
        Extra pixel rows above and below the core's box, as a fraction of the spot height.
    regularize : float
        Tikhonov term: ``regularize²`` on every diagonal of the normal matrix.

    Backends: host only (plain values).
    """

    bundlesize: int = 25
    nsubbundles: int = 5
    nwavestep: int = 50
    wavepad_frac: float = 0.2
    pixpad_frac: float = 0.8
    regularize: float = 0.0

    def as_dict(self) -> dict:
        """The settings as a plain dict (for records and headers).

        Backends: host only (plain values).
        """
        return asdict(self)


#: specter ``ex2d`` / desispec ``desi_extract_spectra`` defaults.
SPECTER = ExtractionSettings()
