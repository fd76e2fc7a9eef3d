"""Projection of photons through the PSF, used by the simulator.

The implementation lives in :mod:`gpuspec.psf.project` (extraction's model-based ivar
uses it too); this module keeps the simulator's name for it.
"""

from ..psf.project import render_spectra, spot_fraction_inside

__all__ = ["render_spectra", "spot_fraction_inside"]
